"""HTML report: one row per case (per case and class in 3D), embedded PNG figures that decode, nothing external,
graceful degradation (run without evaluation, evaluation folder alone), clear errors; rendered in headless Chromium
when available (the inline sort script runs)."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from mambaseg.apps.report import write_report
from mambaseg.cli import main
from mambaseg.data.synthetic import write_phantom_msd, write_synthetic_drive
from tests.conftest import tiny_3d_yaml

CHROMIUM = Path("/usr/bin/chromium")
CFG_2D = """
seed: 0
model: {name: unet_tiny}
data: {layout: drive, root: "%s", val_fraction: 0.25, patch_size: [48, 48], fov: true, augment: none}
train: {epochs: 2, iters_per_epoch: 1, batch_size: 2, val_every: 1}
infer: {patch_size: [48, 48], overlap: 0.25}
"""
CFG_3D = tiny_3d_yaml("%s", "model.name=unet3d_tiny")


class Page(HTMLParser):
    """Tables (id -> rows of cell data-v values), <img> sources, every src/href attribute, <body> attributes."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.headers: dict[str, list[dict]] = {}
        self.imgs: list[str] = []
        self.refs: list[str] = []
        self.body: dict = {}
        self.html_table = None
        self._in_head = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v is not None]
        if tag == "body":
            self.body = a
        elif tag == "table":
            self.html_table = a.get("id", f"t{len(self.tables)}")
            self.tables[self.html_table], self.headers[self.html_table] = [], []
        elif tag == "thead":
            self._in_head = True
        elif tag == "tbody":
            self._in_head = False
        elif tag == "th" and self.html_table:
            self.headers[self.html_table].append(a)
        elif tag == "tr" and self.html_table and not self._in_head:
            self.tables[self.html_table].append([])
        elif tag == "td" and self.html_table:
            self.tables[self.html_table][-1].append(a.get("data-v", ""))
        elif tag == "img":
            self.imgs.append(a.get("src", ""))

    def handle_endtag(self, tag):
        if tag == "table":
            self.html_table = None


def _run(root: Path, cfg_text: str, data: Path, pred_in: Path, gt: Path) -> Path:
    cfg = root / "cfg.yaml"
    cfg.write_text(cfg_text % data)
    run = root / "run"
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0
    assert main(["predict", "-m", str(run), "-i", str(pred_in), "-o", str(run / "test_pred"), "--no-progress"]) == 0
    assert main(["evaluate", "--pred", str(run / "test_pred"), "--gt", str(gt), "-o", str(run / "test_eval")]) == 0
    return run


@pytest.fixture(scope="module")
def run2d(tmp_path_factory):
    root = tmp_path_factory.mktemp("rep2d")
    data = write_synthetic_drive(root / "data", n_train=3, n_test=3, size=(50, 56), seed=2)
    return _run(root, CFG_2D, data, data / "test" / "images", data / "test")


@pytest.fixture(scope="module")
def run3d(tmp_path_factory):
    root = tmp_path_factory.mktemp("rep3d")
    data = write_phantom_msd(root / "task", n_cases=3, shape=(18, 20, 17))
    test = write_phantom_msd(root / "test", n_cases=2, shape=(19, 18, 17), seed=6)
    return _run(root, CFG_3D, data, test / "imagesTr", test / "labelsTr")


def _check_self_contained(text: str, page: Page, min_images: int) -> None:
    assert "http://" not in text and "https://" not in text and "<link" not in text
    assert page.refs and all(r.startswith("data:image/png;base64,") for r in page.refs)
    assert len(page.imgs) >= min_images
    for src in page.imgs:
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(io.BytesIO(raw)) as im:
            im.verify()


def test_report_2d_run(run2d, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(run2d), "-o", str(out)]) == 0
    text = out.read_text()
    page = Page(text)
    summary = json.loads((run2d / "test_eval" / "summary.json").read_text())
    rows = page.tables["cases"]
    assert [r[0] for r in rows] == [c["case"] for c in summary["metric_per_case"]]  # one row per case
    assert len(page.headers["cases"]) == len(rows[0])  # a header for every column
    assert float(rows[0][1]) == pytest.approx(summary["metric_per_case"][0]["dice"])
    # distribution + best + worst overlays + learning curves
    _check_self_contained(text, page, min_images=4)
    assert "Akmamba-Net" in text and "82.57" in text  # DRIVE layout -> the paper's Table 1 beside ours
    assert "ours (this evaluation)" in text and "Learning curves" in text and "Provenance" in text


def test_report_3d_run_and_eval_folder(run3d, tmp_path):
    out = write_report(run3d, tmp_path / "r3.html")
    text = out.read_text()
    page = Page(text)
    summary = json.loads((run3d / "test_eval" / "summary.json").read_text())
    n_classes = len(summary["classes"])
    assert n_classes == 2 and len(page.tables["cases"]) == summary["n_cases"] * n_classes
    assert {r[1] for r in page.tables["cases"]} == set(summary["classes"])
    _check_self_contained(text, page, min_images=4)  # distribution, best, worst, curves
    assert "Published numbers" not in text  # a phantom matches no paper
    # the evaluation folder alone: table and overlays, no learning curves
    ev = Page(write_report(run3d / "test_eval", tmp_path / "ev.html").read_text())
    assert len(ev.tables["cases"]) == len(page.tables["cases"]) and len(ev.imgs) == len(page.imgs) - 1


def test_run_without_evaluation_and_errors(run2d, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.yaml", "metrics.jsonl"):
        shutil.copy(run2d / name, bare / name)
    text = write_report(bare).read_text()  # default output <run>/report.html
    page = Page(text)
    assert "cases" not in page.tables and len(page.imgs) == 1 and "No evaluation" in text
    with pytest.raises(ValueError, match="missing_run"):
        write_report(tmp_path / "missing_run")
    (tmp_path / "other").mkdir()
    with pytest.raises(ValueError, match="other: not a run folder"):
        write_report(tmp_path / "other")
    code = main(["report", str(tmp_path / "other")])
    err = capsys.readouterr().err
    assert code == 2 and "other" in err and len(err.strip().splitlines()) == 1


def test_evaluate_points_to_report(run2d, tmp_path, capsys):
    data = Path(str(run2d.parent / "data"))
    assert main(["evaluate", "--pred", str(run2d / "test_pred"), "--gt", str(data / "test"), "-o",
                 str(tmp_path / "ev")]) == 0
    assert f"mambaseg report {tmp_path / 'ev'}" in capsys.readouterr().out


@pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium not installed")
def test_report_renders_in_chromium(run2d, tmp_path):
    out = write_report(run2d, tmp_path / "page.html")
    static = Page(out.read_text())
    dice = [float(r[1]) for r in static.tables["cases"]]
    assert len(set(dice)) > 1, "need differing Dice values to see the sort"
    desc = dice == sorted(dice)  # ask for the order the page does not have yet
    url = out.as_uri() + f"#sort=cases:1{':desc' if desc else ''}"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = Page(proc.stdout)
    assert dom.body.get("data-ready") == "1"  # the inline script ran to the end
    assert all(h.get("data-sortable") == "1" for h in dom.headers["cases"])
    got = [float(r[1]) for r in dom.tables["cases"]]
    assert got == sorted(dice, reverse=desc) and got != dice
    assert len(dom.imgs) == len(static.imgs) >= 4
