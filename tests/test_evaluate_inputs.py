"""Evaluate cannot mislead (#14): missing predictions are an error (or, with --allow-missing, listed and not scored),
2D label masks {0, k} are foreground where non-zero, and --threshold cuts probability maps whatever their bit depth."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mambaseg.cli import main
from mambaseg.data.io import DataError
from mambaseg.engine.evaluate import evaluate, read_prediction_2d

A = (slice(2, 6), slice(2, 6))  # 16 pixels
B = (slice(8, 12), slice(8, 12))  # 16 pixels


def _ref(tmp_path, names=("a", "b", "c")):
    gt = tmp_path / "gt"
    gt.mkdir()
    lab = np.zeros((16, 16), np.uint8)
    lab[A] = lab[B] = 255
    for n in names:
        Image.fromarray(lab).save(gt / f"{n}.png")
    return gt, lab > 0


def _one_line(capsys, *needles):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err


def test_missing_2d_predictions_are_an_error_naming_count_and_example(tmp_path, capsys, caplog):
    gt, ref = _ref(tmp_path)
    pred = tmp_path / "pred"
    pred.mkdir()
    for n in ("a", "b"):
        Image.fromarray(ref.astype(np.uint8) * 255).save(pred / f"{n}.png")
    out = tmp_path / "ev"
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(out)]) == 2
    _one_line(capsys, "1 of 3 references have no prediction", str(gt / "c.png"), "--allow-missing")
    assert not (out / "summary.json").exists()
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(out), "--allow-missing"]) == 0
    captured = capsys.readouterr()
    assert any("1 of 3 references have no prediction" in r.getMessage() for r in caplog.records)  # the warning
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == 2 and summary["n_references"] == 3
    assert summary["missing_predictions"] == [str(gt / "c.png")]
    assert "not scored" in summary["averaging"] and "not scored" in captured.out


def test_missing_3d_predictions_are_an_error_unless_allowed(tmp_path):
    gt, pred = tmp_path / "labelsTr", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    lab = np.zeros((8, 8, 8), np.uint8)
    lab[2:5, 2:5, 2:5] = 1
    for i in range(4):
        nib.save(nib.Nifti1Image(lab, np.eye(4)), gt / f"case_{i}.nii.gz")
    nib.save(nib.Nifti1Image(lab, np.eye(4)), pred / "case_0.nii.gz")
    with pytest.raises(DataError, match=r"3 of 4 references have no prediction \(e\.g\. .*case_1\.nii\.gz\)"):
        evaluate(pred, gt, tmp_path / "ev")
    assert not (tmp_path / "ev" / "summary.json").exists()
    res = evaluate(pred, gt, tmp_path / "ev", allow_missing=True)
    assert res["n_cases"] == 1 and len(res["missing_predictions"]) == 3 and "not scored" in res["table"]


@pytest.mark.parametrize("k", [1, 7, 255])
def test_2d_label_mask_0_k_is_foreground_where_non_zero(tmp_path, k):
    gt, ref = _ref(tmp_path, ("a",))
    pred = tmp_path / "pred"
    pred.mkdir()
    Image.fromarray(ref.astype(np.uint8) * k).save(pred / "a.png")
    res = evaluate(pred, gt, tmp_path / "ev")
    assert res["mean"]["dice"] == pytest.approx(1.0)
    assert res["metric_per_case"][0]["read_as"] == "label mask"


def _prob_map(ref_shape, kind):
    p = np.zeros(ref_shape)
    p[A], p[B] = 0.3, 0.7
    if kind == "16bit":
        return Image.fromarray(np.round(p * 65535).astype(np.uint16)), ".png"
    if kind == "8bit":
        return Image.fromarray(np.round(p * 255).astype(np.uint8)), ".png"
    return Image.fromarray(p.astype(np.float32)), ".tif"


@pytest.mark.parametrize("kind", ["16bit", "8bit", "float"])
def test_threshold_cuts_probability_maps(tmp_path, capsys, kind):
    gt, ref = _ref(tmp_path, ("a",))
    pred = tmp_path / "pred"
    pred.mkdir()
    img, suffix = _prob_map(ref.shape, kind)
    img.save(pred / f"a{suffix}")
    # p = 0.7 on B, 0.3 on A, 0 elsewhere; the reference is A and B
    res = evaluate(pred, gt, tmp_path / "ev05", threshold=0.5)
    assert res["mean"]["dice"] == pytest.approx(2 * 16 / (16 + 32))  # only B
    assert res["metric_per_case"][0]["read_as"] == "probabilities > 0.5"
    res = evaluate(pred, gt, tmp_path / "ev02", threshold=0.2)
    assert res["mean"]["dice"] == pytest.approx(1.0)  # A and B
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(tmp_path / "ev08"),
                 "--threshold", "0.8"]) == 0
    assert json.loads((tmp_path / "ev08" / "summary.json").read_text())["mean"]["dice"] == 0.0


def test_bad_prediction_values_and_threshold_one_line(tmp_path, capsys):
    gt, _ = _ref(tmp_path, ("a",))
    pred = tmp_path / "pred"
    pred.mkdir()
    Image.fromarray(np.linspace(0, 3.5, 256, dtype=np.float32).reshape(16, 16)).save(pred / "a.tif")
    with pytest.raises(DataError, match=r"a\.tif: values 0\.\.3\.5 are neither a label mask"):
        read_prediction_2d(pred / "a.tif")
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(tmp_path / "ev")]) == 2
    _one_line(capsys, "a.tif")
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(tmp_path / "ev"),
                 "--threshold", "1.5"]) == 2
    _one_line(capsys, "--threshold must be in [0, 1)")
