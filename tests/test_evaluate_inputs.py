"""Evaluate cannot mislead (#14): missing predictions are an error (or, with --allow-missing, listed and not scored),
2D label masks {0, k} are foreground where non-zero, and --threshold cuts probability maps whatever their bit depth."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mambaseg.cli import main
from mambaseg.data.errors import DataError
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
    assert res["mean_2d"]["dice"] == pytest.approx(1.0)
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
    assert res["mean_2d"]["dice"] == pytest.approx(2 * 16 / (16 + 32))  # only B
    assert res["metric_per_case"][0]["read_as"] == "probabilities > 0.5"
    res = evaluate(pred, gt, tmp_path / "ev02", threshold=0.2)
    assert res["mean_2d"]["dice"] == pytest.approx(1.0)  # A and B
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(tmp_path / "ev08"),
                 "--threshold", "0.8"]) == 0
    assert json.loads((tmp_path / "ev08" / "summary.json").read_text())["mean_2d"]["dice"] == 0.0


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


# ------------------------------------------------------------------------ labels outside the class set (#14 item 4)
def test_2d_labels_outside_the_class_set_are_an_error(tmp_path, capsys):
    """2D evaluation is binary: a reference holding 0/1/2 or a prediction holding the labels 0/1/2 is an error naming
    the file and the values (not silently background, not read as a faint probability map)."""
    gt, ref = _ref(tmp_path, ("a", "b"))
    pred = tmp_path / "pred"
    pred.mkdir()
    lab = ref.astype(np.uint8)
    Image.fromarray(lab * 255).save(pred / "a.png")
    three = lab.copy()
    three[0, :4] = 2
    Image.fromarray(three).save(pred / "b.png")  # labels 0, 1, 2
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(tmp_path / "ev")]) == 2
    _one_line(capsys, str(pred / "b.png"), "labels 1, 2", "outside the class set")
    assert not (tmp_path / "ev").exists()
    Image.fromarray(lab * 255).save(pred / "b.png")
    Image.fromarray(three).save(gt / "b.png")  # reference 0, 1, 2
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(tmp_path / "ev"), "--workers",
                 "2"]) == 2
    _one_line(capsys, str(gt / "b.png"), "label values 2 outside")
    Image.fromarray(lab * 255).save(gt / "b.png")
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(tmp_path / "ev")]) == 0


def _labels_3d(tmp_path, declared):
    root = tmp_path / "Dataset002_Toy"
    gt, pred = root / "labelsTr", tmp_path / "pred3d"
    gt.mkdir(parents=True)
    pred.mkdir()
    if declared is not None:
        (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": declared}))
    lab = np.zeros((8, 8, 8), np.uint8)
    lab[1:4, 1:4, 1:4] = 1
    lab[5:7, 5:7, 5:7] = 2
    for i in range(3):
        nib.save(nib.Nifti1Image(lab, np.eye(4)), gt / f"case_{i}.nii.gz")
        nib.save(nib.Nifti1Image(lab, np.eye(4)), pred / f"case_{i}.nii.gz")
    return gt, pred, lab


@pytest.mark.parametrize("workers", ["1", "2"])
def test_3d_labels_outside_dataset_json_are_an_error(tmp_path, capsys, workers):
    gt, pred, lab = _labels_3d(tmp_path, {"background": 0, "A": 1, "B": 2})
    bad = lab.copy()
    bad[0, 0, :2] = (5, 7)
    nib.save(nib.Nifti1Image(bad, np.eye(4)), pred / "case_1.nii.gz")  # prediction with labels 5 and 7
    args = ["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(tmp_path / "ev"), "--workers", workers]
    assert main(args) == 2
    _one_line(capsys, str(pred / "case_1.nii.gz"), "label values 5, 7", "outside the class set [0, 1, 2]",
              "dataset.json")
    assert not (tmp_path / "ev").exists()
    nib.save(nib.Nifti1Image(lab, np.eye(4)), pred / "case_1.nii.gz")
    nib.save(nib.Nifti1Image(bad, np.eye(4)), gt / "case_2.nii.gz")  # reference with labels 5 and 7
    assert main(args) == 2
    _one_line(capsys, str(gt / "case_2.nii.gz"), "label values 5, 7")
    nib.save(nib.Nifti1Image(lab, np.eye(4)), gt / "case_2.nii.gz")
    assert main(args) == 0
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["foreground_mean"]["Dice"] == 1.0


def test_3d_labels_outside_brats_regions_and_without_class_set(tmp_path, capsys):
    gt, pred, lab = _labels_3d(tmp_path, None)
    bad = lab.copy()
    bad[0, 0, 0] = 5  # no BraTS label
    nib.save(nib.Nifti1Image(bad, np.eye(4)), gt / "case_0.nii.gz")
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(tmp_path / "ev"), "--regions",
                 "brats"]) == 2
    _one_line(capsys, str(gt / "case_0.nii.gz"), "label values 5", "[0, 1, 2, 3, 4]", "--regions brats")
    # BraTS 2021's raw enhancing-tumour label 4 is read as 3 (ET), not missed
    bad[0, 0, 0] = 4
    nib.save(nib.Nifti1Image(bad, np.eye(4)), gt / "case_0.nii.gz")
    res = evaluate(pred, gt, tmp_path / "ev1", regions="brats")
    assert res["metric_per_case"][0]["metrics"]["(3,)"]["n_ref"] == 1
    # no dataset.json and no regions: no class set, every label found is scored (label 4 included)
    res = evaluate(pred, gt, tmp_path / "ev2")
    assert set(res["mean"]) == {"1", "2", "4"}
