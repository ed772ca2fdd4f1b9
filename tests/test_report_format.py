"""Report numbers and figures as a clinician-researcher reads them: percentages with two decimals, SD / median /
bootstrap 95 % CI beside every mean, HD95 with its unit, 3D volumes in mL, the user's results before the paper's
table, full-resolution 2D overlays one click away, 3D slices labelled axial / coronal / sagittal with orientation
letters (checked on a known affine), and the demo's 3D overlay panels at least 256 px."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mambaseg.apps.report import summary_stats, write_report
from mambaseg.apps.report.page import _unit_header
from mambaseg.data.io.png import OVERLAY_COLOURS
from mambaseg.engine.predict.overlay import overlay_figure, overlay_panels
from tests.test_report import CFG_2D, CFG_3D, _run


class Tables(HTMLParser):
    """Per table id: header texts, and rows of (shown text, data-v); <details> blocks with their images."""

    def __init__(self, text: str):
        super().__init__()
        self.headers: dict[str, list[str]] = {}
        self.rows: dict[str, list[list[tuple[str, str]]]] = {}
        self.details: list[dict] = []
        self._t = self._cell = None
        self._th = None
        self._summary = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._t = a.get("id", f"t{len(self.rows)}")
            self.headers[self._t], self.rows[self._t] = [], []
        elif tag == "th" and self._t:
            self._th = ""
        elif tag == "tr" and self._t and self._th is None and self.headers[self._t]:
            self.rows[self._t].append([])
        elif tag == "td" and self._t:
            self._cell = ["", a.get("data-v", "")]
        elif tag == "details":
            self.details.append({"summary": "", "imgs": []})
        elif tag == "summary":
            self._summary = True
        elif tag == "img" and self.details and "full resolution" in a.get("alt", ""):
            self.details[-1]["imgs"].append(a["src"])

    def handle_data(self, data):
        if self._th is not None:
            self._th += data
        elif self._cell is not None:
            self._cell[0] += data
        elif self._summary:
            self.details[-1]["summary"] += data

    def handle_endtag(self, tag):
        if tag == "th" and self._th is not None:
            self.headers[self._t].append(self._th)
            self._th = None
        elif tag == "td" and self._cell is not None:
            self.rows[self._t][-1].append(tuple(self._cell))
            self._cell = None
        elif tag == "table":
            self._t = None
        elif tag == "summary":
            self._summary = False


@pytest.fixture(scope="module")
def run2d(tmp_path_factory):
    from mambaseg.data.synthetic import write_synthetic_drive

    root = tmp_path_factory.mktemp("fmt2d")
    data = write_synthetic_drive(root / "data", n_train=3, n_test=3, size=(50, 56), seed=2)
    return _run(root, CFG_2D, data, data / "test" / "images", data / "test")


@pytest.fixture(scope="module")
def run3d(tmp_path_factory):
    from mambaseg.data.synthetic import write_phantom_msd

    root = tmp_path_factory.mktemp("fmt3d")
    data = write_phantom_msd(root / "task", n_cases=3, shape=(18, 20, 17))
    test = write_phantom_msd(root / "test", n_cases=2, shape=(19, 18, 17), seed=6)
    return _run(root, CFG_3D, data, test / "imagesTr", test / "labelsTr")


# ------------------------------------------------------------------------------------------------ statistics
def test_summary_stats_values_and_bootstrap_ci():
    v = [0.8, 0.7, float("nan"), 0.9, 0.6, 0.75]
    st = summary_stats(v)
    clean = np.array([0.8, 0.7, 0.9, 0.6, 0.75])
    assert st["n"] == 5  # NaN left out, as in the evaluation's means
    assert st["mean"] == pytest.approx(clean.mean()) and st["median"] == pytest.approx(0.75)
    assert st["sd"] == pytest.approx(clean.std(ddof=1))
    assert st["ci_low"] < st["mean"] < st["ci_high"]
    assert summary_stats(v) == st  # fixed seed: the same report every time
    rng = np.random.default_rng(1)
    big = rng.normal(0.8, 0.05, 200)
    st = summary_stats(big)
    half = 1.96 * big.std(ddof=1) / np.sqrt(big.size)  # the normal-theory CI for comparison
    assert st["ci_high"] - st["ci_low"] == pytest.approx(2 * half, rel=0.15)
    one = summary_stats([0.5])
    assert one["mean"] == 0.5 and np.isnan(one["sd"]) and np.isnan(one["ci_low"]) and one["n"] == 1
    assert summary_stats([])["n"] == 0


def test_unit_headers():
    assert _unit_header("HD95", 3) == "HD95 (mm)" and _unit_header("hd95", 2) == "HD95 (px)"
    assert _unit_header("dice", 2) == "dice %" and _unit_header("Dice", 3) == "Dice %"


# --------------------------------------------------------------------------------------------------- 2D page
def test_report_2d_numbers_order_and_full_resolution(run2d, tmp_path):
    text = write_report(run2d, tmp_path / "r.html").read_text()
    page = Tables(text)
    summary = json.loads((run2d / "test_eval" / "summary.json").read_text())
    # no number shown with 3+ decimals anywhere in the tables (e.g. the paper's 95.61 as 95.6100)
    shown = [c[0] for rows in page.rows.values() for r in rows for c in r]
    assert shown and not [t for t in shown if re.fullmatch(r"-?\d+\.\d{3,}", t)]
    paper = {r[0][0]: [c[0] for c in r[1:]] for r in page.rows["paper"]}
    assert paper["U-Net"][:3] == ["95.61", "82.22", "71.23"]
    # per-case Dice in % with two decimals; data-v keeps the raw value for sorting
    case0 = summary["metric_per_case"][0]
    cell = page.rows["cases"][0][page.headers["cases"].index("dice %")]
    assert cell[0] == f"{100 * case0['dice']:.2f}" and float(cell[1]) == pytest.approx(case0["dice"])
    # mean, SD, median, 95 % CI and n beside every mean
    assert page.headers["means"] == ["metric", "mean", "SD", "median", "95% CI of the mean", "n"]
    means = {r[0][0]: r for r in page.rows["means"]}
    assert set(means) == {f"{k} %" for k in summary["mean_2d"]}
    dice = np.array([c["dice"] for c in summary["metric_per_case"]])
    row = means["dice %"]
    assert float(row[1][1]) == pytest.approx(summary["mean_2d"]["dice"])  # the evaluation's mean
    assert row[1][0] == f"{100 * dice.mean():.2f}" and row[2][0] == f"{100 * dice.std(ddof=1):.2f}"
    assert row[3][0] == f"{100 * np.median(dice):.2f}" and row[5][0] == str(len(dice))
    lo, hi = (float(x) for x in row[4][0].split(" – "))
    assert lo <= 100 * dice.mean() <= hi and re.fullmatch(r"\d+\.\d\d – \d+\.\d\d", row[4][0])
    # the user's results first, the paper's table after
    assert text.index("Summary over cases") < text.index("Per case") < text.index("Published numbers")
    # best and worst cases: the image and the errors at full resolution behind a click
    assert len(page.details) == 2
    for d in page.details:
        assert "full resolution (56 × 50 px)" in d["summary"] and len(d["imgs"]) == 2
        with Image.open(io.BytesIO(base64.b64decode(d["imgs"][0].split(",", 1)[1]))) as im:
            assert im.size == (56, 50)  # width x height of the test images, not a thumbnail
            image = np.asarray(im.convert("RGB"))
        with Image.open(io.BytesIO(base64.b64decode(d["imgs"][1].split(",", 1)[1]))) as im:
            errors = np.asarray(im.convert("RGB"))
        assert errors.shape == image.shape and (errors != image).any(-1).sum() > 20  # vessels coloured


# --------------------------------------------------------------------------------------------------- 3D page
def test_report_3d_units_volumes_stats_and_views(run3d, tmp_path):
    text = write_report(run3d, tmp_path / "r3.html").read_text()
    page = Tables(text)
    summary = json.loads((run3d / "test_eval" / "summary.json").read_text())
    heads = page.headers["cases"]
    assert "HD95 (mm)" in heads and "Dice %" in heads and "HD95" not in heads
    assert {"reference volume mL", "predicted volume mL"} <= set(heads)
    # volumes: voxel counts times the reference's voxel volume
    case = summary["metric_per_case"][0]
    zooms = nib.load(case["reference_file"]).header.get_zooms()[:3]
    key = next(iter(case["metrics"]))
    row = page.rows["cases"][0]
    want = case["metrics"][key]["n_ref"] * float(np.prod(zooms)) / 1000
    assert float(row[heads.index("reference volume mL")][1]) == pytest.approx(want)
    assert row[heads.index("reference volume mL")][0] == f"{want:.2f}"
    # statistics per class and metric, units in the metric column
    stats = page.rows["means"]
    assert page.headers["means"] == ["class", "metric", "mean", "SD", "median", "95% CI of the mean", "n"]
    names = summary["class_names"]
    for k, name in names.items():
        got = {r[1][0]: r for r in stats if r[0][0] == name}
        assert set(got) == {"Dice %", "IoU %", "HD95 (mm)"}
        vals = [c["metrics"][k]["HD95"] for c in summary["metric_per_case"]]
        assert float(got["HD95 (mm)"][2][1]) == pytest.approx(np.nanmean(vals))
        assert float(got["Dice %"][2][1]) == pytest.approx(summary["mean"][k]["Dice"])
    assert any(r[0][0] == "mean over classes (per case)" for r in stats)
    assert "HD95 in mm" in text
    # slice views named in the page (the figures carry them as titles)
    for view in ("axial", "coronal", "sagittal"):
        assert view in text
    assert "axis 0 =" not in text


# ----------------------------------------------------------------------------------------- 3D slice geometry
def test_ras_panels_orientation_of_a_known_affine():
    # LPS file (as DICOM-derived NIfTI often are): i grows to the patient's left, j to posterior, k superior
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    shape = (10, 12, 8)
    image = np.zeros(shape, np.float32)
    marker = np.zeros(shape, np.uint8)
    marker[0, 0, 4] = 1  # the most right, most anterior voxel of slice k = 4
    panels = {p["name"]: p for p in overlay_panels(image, marker, affine, marker, [0, 0, 4])}
    assert list(panels) == ["axial", "coronal", "sagittal"]
    assert {p["orientation"] for p in panels.values()} == {"LPS"}  # nibabel.aff2axcodes
    ax = panels["axial"]
    assert ax["letters"] == ("A", "P", "R", "L") and ax["label"] == "axial: k = 4 of 8"
    tp = int(np.argmax(OVERLAY_COLOURS["tp"]))  # the true-positive colour's main channel (green)

    def hits(rgb):  # the marker: the only coloured pixel on the black image, in the TP colour
        where = np.argwhere(rgb.any(-1))
        assert all(int(np.argmax(rgb[tuple(w)])) == tp for w in where)
        return where.tolist()

    # radiological: the patient's right on the image's left, anterior up -> the top-left pixel
    assert hits(ax["rgb"]) == [[0, 0]]
    assert ax["rgb"].shape[:2] == (12, 10) and ax["aspect"] == pytest.approx(1.0)
    co, sa = panels["coronal"], panels["sagittal"]
    assert co["letters"] == ("S", "I", "R", "L") and sa["letters"] == ("S", "I", "A", "P")
    assert co["label"] == "coronal: j = 0 of 12" and sa["label"] == "sagittal: i = 0 of 10"
    assert co["aspect"] == pytest.approx(2.5 / 0.8)  # superior-inferior voxels 2.5 mm, left-right 0.8 mm
    # coronal: superior up, so k = 4 of 8 (from the bottom) is row 8 - 1 - 4 = 3, right on the left
    assert hits(co["rgb"]) == [[3, 0]]
    # sagittal: anterior on the left
    assert hits(sa["rgb"]) == [[3, 0]]


def test_one_drawer_dimension_is_a_parameter():
    """The overlay drawer of predict, report and demo: a 2D image is one panel coloured like ``overlay_rgb``; a 3D
    volume three panels; the ``labels`` colouring paints each class in its palette colour."""
    from mambaseg.data.io.png import overlay_rgb
    from mambaseg.engine.predict.overlay import PALETTE

    rng = np.random.default_rng(1)
    image, pred, ref = rng.random((12, 10)), rng.random((12, 10)) > 0.5, rng.random((12, 10)) > 0.5
    (panel,) = overlay_panels(image, pred, ref=ref)
    assert panel["name"] == "image" and np.array_equal(panel["rgb"], overlay_rgb(image, pred, ref))
    fig = overlay_figure([panel], "t", panel_px=60)
    assert fig.shape == (34 + 60 + 8, 60 // 12 * 10 + 2 * 8, 3)  # header, panel 60 px high (12 rows -> 60), padding
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[1, 1, 3], labels[4, 4, 3] = 1, 2
    panels = overlay_panels(np.zeros((6, 6, 6), np.float32), labels, np.eye(4), centre=[1, 1, 3], colouring="labels",
                            alpha=1.0)
    assert [p["name"] for p in panels] == ["axial", "coronal", "sagittal"]
    colours = {tuple(int(c) for c in px) for px in panels[0]["rgb"].reshape(-1, 3)} - {(0, 0, 0)}
    assert colours == {tuple(int(c) for c in PALETTE[0]), tuple(int(c) for c in PALETTE[1])}  # both classes, slice k=3
    with pytest.raises(ValueError, match="colouring"):
        overlay_panels(image, pred, colouring="heat")


def test_demo_3d_overlay_is_not_a_strip(tmp_path):
    from mambaseg.apps.demo import _overlay_slices

    rng = np.random.default_rng(0)
    ref = np.zeros((40, 48, 36), np.uint8)
    ref[12:25, 15:30, 10:20] = 1
    pred = np.roll(ref, 2, axis=0)
    path = tmp_path / "o.png"
    affine = np.diag([1.0, 1.0, 1.5, 1.0])
    _overlay_slices(rng.normal(0, 1, ref.shape).astype(np.float32), pred, ref, path, affine, "case")
    with Image.open(path) as im:
        w, h = im.size
    assert h >= 256 + 40 and w >= 3 * 256 * 0.6  # three panels of 256 px on their longer side, plus the titles
    fig = overlay_figure(overlay_panels(np.zeros((8, 6, 4), np.float32), np.ones((8, 6, 4)), np.eye(4)), "t")
    assert fig.shape[1] >= 3 * 256  # a tiny volume is enlarged (nearest neighbour): each panel 256 px wide here


def test_report_cli_tables_without_traceback(run2d, tmp_path, capsys):
    from mambaseg.cli import main

    assert main(["report", str(run2d / "test_eval"), "-o", str(tmp_path / "ev.html")]) == 0
    page = Tables((tmp_path / "ev.html").read_text())
    assert "means" in page.rows and "cases" in page.rows
    assert Path(tmp_path / "ev.html").stat().st_size > 0
