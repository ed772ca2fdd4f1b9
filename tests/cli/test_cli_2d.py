"""End-to-end 2D CLI on generated data: train -> predict -> evaluate, and the bad-input contract
(exit code != 0, one-line message naming the file, no traceback, nothing overwritten)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mambaseg.cli import main
from mambaseg.data.synthetic import write_synthetic_drive

CONFIG = """
seed: 0
model: {name: unet_tiny}
data: {layout: drive, root: "%s", val_fraction: 0.25, patch_size: [48, 48], fov: true, augment: light}
optim: {lr: 3.0e-3}
train: {epochs: 2, iters_per_epoch: 2, batch_size: 2, val_every: 1}
infer: {patch_size: [64, 64]}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli2d")
    data = write_synthetic_drive(root / "data dir é", n_train=4, n_test=2, size=(72, 80), seed=1)  # space, non-ASCII
    cfg = root / "cfg.yaml"
    cfg.write_text(CONFIG % data)
    run = root / "run"
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0
    return root, data, run


def snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(capsys, *args) -> tuple[int, str]:
    code = main(list(args))
    err = capsys.readouterr().err
    return code, err


def test_train_writes_run_folder(trained):
    _, _, run = trained
    for name in ("checkpoint_best.pt", "checkpoint_last.pt", "config.yaml", "train.log", "metrics.jsonl",
                 "progress.png", "provenance.json"):
        assert (run / name).is_file(), name
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2] and all("val_dice" in x for x in lines)
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["seed"] == 0 and prov["scan_backend"] in ("chunked", "cpu") and "torch" in prov["versions"]


def test_predict_and_evaluate(trained, tmp_path, capsys):
    _, data, run = trained
    before = snapshot(data)
    out = tmp_path / "pred"
    assert main(["predict", "-m", str(run), "-i", str(data / "test" / "images"), "-o", str(out),
                 "--overlay", "--probs", "--no-progress"]) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["01_test.png", "02_test.png"]
    mask = np.array(Image.open(out / "01_test.png"))
    assert mask.shape == (72, 80) and set(np.unique(mask)) <= {0, 255}
    assert (out / "probs" / "01_test.png").is_file() and (out / "overlays" / "01_test.png").is_file()
    ev = tmp_path / "eval"
    assert main(["evaluate", "--pred", str(out), "--gt", str(data / "test"), "-o", str(ev)]) == 0
    summary = json.loads((ev / "summary.json").read_text())
    assert summary["n_cases"] == 2 and summary["region"] == "inside the FOV mask"
    assert {"dice", "iou", "precision", "recall", "specificity", "accuracy", "auc"} <= set(summary["mean_2d"])
    assert "Precision" in summary["definitions"]["precision"]
    assert (ev / "metrics.csv").read_text().count("\n") == 3
    assert snapshot(data) == before  # inputs untouched
    # outputs are never overwritten without --overwrite
    stamp = (out / "01_test.png").read_bytes()
    code, err = run_cli(capsys, "predict", "-m", str(run), "-i", str(data / "test" / "images"), "-o", str(out))
    assert code == 2 and "01_test.png" in err and "already exists" in err
    assert (out / "01_test.png").read_bytes() == stamp
    code, err = run_cli(capsys, "evaluate", "--pred", str(out), "--gt", str(data / "test"), "-o", str(ev))
    assert code == 2 and "summary.json" in err or "metrics.csv" in err


def _one_line_error(code: int, err: str, needle: str) -> None:
    assert code != 0
    assert "Traceback" not in err
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert needle in lines[0], lines[0]


def test_bad_inputs(trained, tmp_path, capsys):
    _, data, run = trained
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "truncated.png").write_bytes((data / "test" / "images" / "01_test.tif").read_bytes()[:200])
    rgba = bad / "grey.png"
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(rgba)
    empty = tmp_path / "empty"
    empty.mkdir()
    zero = tmp_path / "zero"
    zero.mkdir()
    (zero / "z.png").write_bytes(b"")
    text = tmp_path / "text"
    text.mkdir()
    (text / "notes.png").write_text("this is not an image")
    before = snapshot(data)
    cases = [
        (["predict", "-m", str(run), "-i", str(bad / "truncated.png"), "-o", str(tmp_path / "o1")], "truncated.png"),
        (["predict", "-m", str(run), "-i", str(rgba), "-o", str(tmp_path / "o2")], "channel"),
        (["predict", "-m", str(run), "-i", str(empty), "-o", str(tmp_path / "o3")], "no input files"),
        (["predict", "-m", str(run), "-i", str(zero), "-o", str(tmp_path / "o4")], "z.png"),
        (["predict", "-m", str(run), "-i", str(text), "-o", str(tmp_path / "o5")], "notes.png"),
        (["predict", "-m", str(run), "-i", str(data / "test" / "images"), "-o", str(data / "test" / "images")],
         "input folder"),
        (["predict", "-m", str(tmp_path / "nope.pt"), "-i", str(data / "test" / "images"), "-o", str(tmp_path / "o6")],
         "nope.pt"),
        (["evaluate", "--pred", str(empty), "--gt", str(data / "test"), "-o", str(tmp_path / "e1")], "no files"),
        (["train", str(tmp_path / "missing.yaml")], "missing.yaml"),
    ]
    for args, needle in cases:
        code, err = run_cli(capsys, *args)
        _one_line_error(code, err, needle)
    assert snapshot(data) == before
    assert not (tmp_path / "o1").exists() or not any((tmp_path / "o1").iterdir())


def test_label_values_and_size_mismatch(tmp_path, capsys):
    data = write_synthetic_drive(tmp_path / "d", n_train=2, n_test=1, size=(40, 44), seed=2)
    (data / "training" / "1st_manual" / "21_manual1.gif").unlink()
    lab = data / "training" / "1st_manual" / "21_manual1.png"
    Image.fromarray(np.full((40, 44), 7, np.uint8)).save(lab)  # value 7 is not a class
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG % data)
    code, err = run_cli(capsys, "train", str(cfg), "--out", str(tmp_path / "r1"))
    _one_line_error(code, err, "21_manual1.png")
    Image.fromarray(np.zeros((20, 44), np.uint8)).save(lab)  # wrong size
    code, err = run_cli(capsys, "train", str(cfg), "--out", str(tmp_path / "r2"))
    _one_line_error(code, err, "21_manual1.png")


def test_existing_run_is_not_overwritten(trained, capsys):
    root, _, run = trained
    stamp = (run / "checkpoint_last.pt").read_bytes()
    code, err = run_cli(capsys, "train", str(root / "cfg.yaml"), "--out", str(run))
    _one_line_error(code, err, "--resume")
    assert (run / "checkpoint_last.pt").read_bytes() == stamp


def test_debug_shows_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "mambaseg", "predict", "-m", str(tmp_path / "x.pt"), "-i", str(tmp_path),
                        "-o", str(tmp_path / "o"), "--debug"], capture_output=True, text=True)
    assert p.returncode != 0 and "Traceback" in p.stderr


def test_unknown_model_lists_known(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    data = write_synthetic_drive(tmp_path / "d", n_train=2, n_test=1, size=(40, 44), seed=2)
    cfg.write_text((CONFIG % data).replace("unet_tiny", "unet_tinyy"))
    code, err = run_cli(capsys, "train", str(cfg), "--out", str(tmp_path / "r"))
    _one_line_error(code, err, "unet_tiny")
    assert "Known models" in err


def test_bad_model_kwargs_are_one_line(tmp_path, capsys):
    data = write_synthetic_drive(tmp_path / "d", n_train=2, n_test=1, size=(40, 44), seed=2)
    cfg = tmp_path / "c.yaml"
    cfg.write_text((CONFIG % data).replace("model: {name: unet_tiny}", "model: {name: unet_tiny, kwargs: {widthz: 3}}"))
    code, err = run_cli(capsys, "train", str(cfg), "--out", str(tmp_path / "r"))
    _one_line_error(code, err, "widthz")
