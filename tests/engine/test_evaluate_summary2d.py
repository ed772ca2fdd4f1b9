"""2D ``summary.json`` in nnU-Net v2's shape (#13 item 4): read back the way nnU-Net's own ``load_summary_json``
does (string keys of ``mean`` and of each case's ``metrics`` turned back into label values), with the numbers of a
constructed example of known TP/FP/FN/TN; our own readers (report, benchmark, the table) still get the 2D metrics."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mambaseg.cli import main
from mambaseg.engine.evaluate import evaluate, format_table

NNUNET_KEYS = {"Dice", "IoU", "FP", "TP", "FN", "TN", "n_pred", "n_ref"}


@pytest.fixture()
def known(tmp_path):
    """Three 10x10 cases of known counts.

    a: reference rows 2-5 x cols 2-5 (16 px), prediction cols 3-6: TP 12, FP 4, FN 4, TN 80 -> Dice 0.75, IoU 0.6.
    b: both empty: TP = FP = FN = 0, TN 100 -> Dice and IoU NaN (nnU-Net).
    c: reference rows 0-1 x cols 0-4 (10 px, saved 0/1), prediction rows 0-2 (15 px, saved 0/255):
       TP 10, FP 5, FN 0, TN 85 -> Dice 0.8, IoU 2/3.
    """
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()

    def save(folder, name, arr):
        Image.fromarray(arr.astype(np.uint8)).save(folder / f"{name}.png")

    z = np.zeros((10, 10), np.uint8)
    r, p = z.copy(), z.copy()
    r[2:6, 2:6] = 255
    p[2:6, 3:7] = 255
    save(gt, "a", r)
    save(pred, "a", p)
    save(gt, "b", z)
    save(pred, "b", z)
    r, p = z.copy(), z.copy()
    r[0:2, 0:5] = 1
    p[0:3, 0:5] = 255
    save(gt, "c", r)
    save(pred, "c", p)
    return pred, gt


EXPECTED = {"a": dict(TP=12, FP=4, FN=4, TN=80, Dice=0.75, IoU=0.6),
            "b": dict(TP=0, FP=0, FN=0, TN=100, Dice=math.nan, IoU=math.nan),
            "c": dict(TP=10, FP=5, FN=0, TN=85, Dice=0.8, IoU=2 / 3)}


def _close(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


def test_2d_summary_read_by_nnunets_loader(known, tmp_path, monkeypatch, capsys, load_summary_json):
    monkeypatch.chdir(tmp_path)  # relative paths on the command line; the summary holds absolute ones
    assert main(["evaluate", "--pred", "pred", "--gt", "gt", "-o", "ev"]) == 0
    raw = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert set(raw["mean"]) == {"1"} and raw["class_names"] == {"1": "foreground"}
    s = load_summary_json(str(tmp_path / "ev" / "summary.json"))
    assert set(s["mean"]) == {1}
    by_case = {c["case"]: c for c in s["metric_per_case"]}
    assert set(by_case) == {"a", "b", "c"}
    for case, exp in EXPECTED.items():
        c = by_case[case]
        assert set(c["metrics"]) == {1}
        m = c["metrics"][1]
        assert set(m) == NNUNET_KEYS
        for k, v in exp.items():
            assert _close(m[k], v), (case, k, m[k], v)
        assert m["n_pred"] == exp["TP"] + exp["FP"] and m["n_ref"] == exp["TP"] + exp["FN"]
        assert isinstance(m["TP"], int) and isinstance(m["n_ref"], int)
        assert Path(c["prediction_file"]).is_absolute() and Path(c["prediction_file"]) == tmp_path / "pred" / \
            f"{case}.png"
        assert Path(c["reference_file"]).is_absolute() and Path(c["reference_file"]).is_file()
    # mean over cases per label as nnU-Net (nanmean), foreground_mean over the foreground labels
    mean = s["mean"][1]
    assert mean["Dice"] == pytest.approx((0.75 + 0.8) / 2)  # b's NaN left out
    assert mean["IoU"] == pytest.approx((0.6 + 2 / 3) / 2)
    assert mean["TP"] == pytest.approx(22 / 3) and mean["FP"] == pytest.approx(3.0)
    assert mean["FN"] == pytest.approx(4 / 3) and mean["TN"] == pytest.approx(265 / 3)
    assert mean["n_pred"] == pytest.approx(31 / 3) and mean["n_ref"] == pytest.approx(26 / 3)
    assert s["foreground_mean"] == pytest.approx(mean)
    # our own per-image metrics are still there, and their means in mean_2d
    assert s["mean_2d"]["dice"] == pytest.approx((0.75 + 0.8) / 2)
    assert s["mean_2d"]["precision"] == pytest.approx((12 / 16 + 10 / 15) / 2)
    assert by_case["a"]["dice"] == pytest.approx(0.75) and by_case["c"]["recall"] == pytest.approx(1.0)
    out = capsys.readouterr().out
    assert "0.7750" in out  # the printed table shows the 2D mean


def test_2d_label_name_from_dataset_json(known, tmp_path, load_summary_json):
    """An nnU-Net 2D dataset (labelsTr/ beside dataset.json) names the label."""
    pred, gt = known
    root = tmp_path / "Dataset120_Roads"
    root.mkdir()
    gt.rename(root / "labelsTr")
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "R", "1": "G", "2": "B"},
                                                   "labels": {"background": 0, "road": 1}, "file_ending": ".png"}))
    res = evaluate(pred, root / "labelsTr", tmp_path / "ev")
    assert res["class_names"] == {"1": "road"} and res["classes"] == {"road": [1]}
    assert load_summary_json(str(tmp_path / "ev" / "summary.json"))["mean"][1]["Dice"] == pytest.approx(0.775)


def test_2d_readers_unchanged(known, tmp_path):
    """metrics.csv keeps its columns; report, benchmark and the table read the 2D metrics as before."""
    pred, gt = known
    res = evaluate(pred, gt, tmp_path / "ev")
    header = next(csv.reader((tmp_path / "ev" / "metrics.csv").open()))
    assert header == ["case", "prediction", "reference", "read_as", "dice", "iou", "precision", "recall",
                      "sensitivity", "specificity", "accuracy", "tp", "fp", "fn", "tn"]
    mean_line = next(line for line in format_table(res).splitlines() if line.startswith("mean"))
    assert mean_line.split()[1:3] == ["0.7750", "0.6333"]  # dice, iou
    from mambaseg.apps.benchmark import case_metrics
    from mambaseg.apps.report import collect_report
    from mambaseg.apps.report.page import _case_rows

    rows = case_metrics(res)
    assert ("a", "dice", pytest.approx(0.75)) in rows and ("c", "iou", pytest.approx(2 / 3)) in rows
    info = collect_report(tmp_path / "ev")
    assert info["evaluation"]["mean"]["dice"] == pytest.approx(0.775)
    headers, rows, dice = _case_rows(info["evaluation"])
    assert headers[0] == "case" and "class" not in headers and "dice" in headers
    assert dice["a"] == pytest.approx(0.75) and math.isnan(dice["b"])
