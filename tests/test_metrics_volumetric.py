"""Volumetric metrics: known Dice/IoU/HD95 (mm, anisotropic), brute-force and MONAI oracles, every empty policy,
nnU-Net-shaped summary and CSV."""

from __future__ import annotations

import csv
import json
import math

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from mambaseg.metrics.volumetric import (
    BRATS_HD95_PENALTY,
    case_metrics,
    evaluate_cases,
    hausdorff_distance,
    mask_metrics,
)

SPACING = (0.5, 0.7, 2.5)


def cube(shape=(20, 20, 20), lo=(5, 5, 5), size=10) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[lo[0]:lo[0] + size, lo[1]:lo[1] + size, lo[2]:lo[2] + size] = True
    return m


def test_shifted_cubes_dice_iou():
    ref = cube()
    pred = cube(lo=(5, 5, 7))  # shifted by 2 voxels along z: overlap 10*10*8
    m = mask_metrics(pred, ref, SPACING)
    assert m["TP"] == 800 and m["FP"] == 200 and m["FN"] == 200 and m["TN"] == 8000 - 1200
    assert m["Dice"] == pytest.approx(0.8) and m["IoU"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("method", ["medpy", "max_directed"])
@pytest.mark.parametrize("axis, gap, expected", [(2, 2, 5.0), (0, 3, 1.5), (1, 4, 2.8)])
def test_hd95_between_parallel_planes_in_mm(method, axis, gap, expected):
    """Two one-voxel-thick planes ``gap`` voxels apart along ``axis``: every surface distance is gap * spacing."""
    shape = (12, 12, 12)
    pred, ref = np.zeros(shape, bool), np.zeros(shape, bool)
    idx = [slice(None)] * 3
    idx[axis] = 3
    pred[tuple(idx)] = True
    idx[axis] = 3 + gap
    ref[tuple(idx)] = True
    assert hausdorff_distance(pred, ref, SPACING, method=method) == pytest.approx(expected)
    assert mask_metrics(pred, ref, SPACING)["HD95"] == pytest.approx(expected)


def _brute_force_surface_distances(a, b, spacing):
    def surface(m):
        p = np.pad(m, 1)
        inner = np.ones_like(m)
        for ax in range(3):
            for d in (-1, 1):
                inner &= np.roll(p, d, axis=ax)[1:-1, 1:-1, 1:-1]
        return np.argwhere(m & ~inner) * np.asarray(spacing)

    sa, sb = surface(a), surface(b)
    d = np.sqrt(((sa[:, None, :] - sb[None, :, :]) ** 2).sum(-1))
    return d.min(1), d.min(0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    a = ndimage.gaussian_filter(rng.normal(size=(14, 13, 11)), 1.5) > 0.1
    b = ndimage.gaussian_filter(rng.normal(size=(14, 13, 11)), 1.5) > 0.1
    d_ab, d_ba = _brute_force_surface_distances(a, b, SPACING)
    assert hausdorff_distance(a, b, SPACING, method="medpy") == pytest.approx(np.percentile(np.r_[d_ab, d_ba], 95))
    assert hausdorff_distance(a, b, SPACING, method="max_directed") == pytest.approx(
        max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)))
    assert hausdorff_distance(a, b, SPACING, percentile=100) == pytest.approx(max(d_ab.max(), d_ba.max()))


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_max_directed_matches_monai():
    torch = pytest.importorskip("torch")
    from monai.metrics import compute_hausdorff_distance

    rng = np.random.default_rng(3)
    a = ndimage.gaussian_filter(rng.normal(size=(24, 22, 16)), 2) > 0.05
    b = ndimage.gaussian_filter(rng.normal(size=(24, 22, 16)), 2) > 0.05
    ref = compute_hausdorff_distance(torch.tensor(a)[None, None], torch.tensor(b)[None, None], percentile=95,
                                     spacing=SPACING)
    assert hausdorff_distance(a, b, SPACING, method="max_directed") == pytest.approx(float(ref), rel=1e-5)


NAN = float("nan")
EMPTY_CASES = {  # policy: {(pred non-empty, ref non-empty): (Dice, IoU, HD95)}
    "nan": {(True, False): (0, 0, NAN), (False, True): (0, 0, NAN), (False, False): (NAN, NAN, NAN)},
    "transunet": {(True, False): (1, 1, 0), (False, True): (0, 0, 0), (False, False): (0, 0, 0)},
    "segmamba": {(True, False): (0, 0, 50), (False, True): (0, 0, 50), (False, False): (0, 0, 50)},
    "brats": {(True, False): (0, 0, BRATS_HD95_PENALTY), (False, True): (0, 0, BRATS_HD95_PENALTY),
              (False, False): (1, 1, 0)},
}


@pytest.mark.parametrize("policy, pred_on, ref_on", [(p, *k) for p, v in EMPTY_CASES.items() for k in v])
def test_empty_policies(policy, pred_on, ref_on):
    pred = cube() if pred_on else np.zeros((20, 20, 20), bool)
    ref = cube(lo=(2, 2, 2)) if ref_on else np.zeros((20, 20, 20), bool)
    m = mask_metrics(pred, ref, SPACING, empty_policy=policy)
    got = (m["Dice"], m["IoU"], m["HD95"])
    for g, e in zip(got, EMPTY_CASES[policy][(pred_on, ref_on)]):
        assert (math.isnan(g) and math.isnan(e)) or g == pytest.approx(e), (policy, got)
    assert m["n_pred"] == (1000 if pred_on else 0) and m["n_ref"] == (1000 if ref_on else 0)


@pytest.mark.parametrize("policy", list(EMPTY_CASES))
def test_policies_agree_when_both_present(policy):
    m = mask_metrics(cube(lo=(5, 5, 7)), cube(), SPACING, empty_policy=policy)
    assert m["Dice"] == pytest.approx(0.8) and m["HD95"] == pytest.approx(hausdorff_distance(cube(lo=(5, 5, 7)),
                                                                                              cube(), SPACING))


def test_bad_arguments():
    with pytest.raises(ValueError, match="empty_policy"):
        mask_metrics(cube(), cube(), empty_policy="zero")
    with pytest.raises(ValueError, match="shape"):
        mask_metrics(cube(), cube(shape=(20, 20, 21)))
    with pytest.raises(ValueError, match="spacing"):
        hausdorff_distance(cube(), cube(), spacing=(1, 1))


def test_brats_regions():
    ref = np.zeros((10, 10, 10), np.int64)
    ref[2:8, 2:8, 2:8] = 2  # edema
    ref[3:6, 3:6, 3:6] = 1  # necrosis
    ref[6:7, 3:6, 3:6] = 3  # enhancing
    pred = ref.copy()
    pred[pred == 1] = 3  # necrosis predicted as enhancing: WT and TC perfect, ET wrong
    m = case_metrics(pred, ref, "brats", spacing=(1, 1, 1))
    assert m["WT"]["Dice"] == 1.0 and m["TC"]["Dice"] == 1.0
    assert m["ET"]["TP"] == 9 and m["ET"]["FP"] == 27 and m["ET"]["Dice"] == pytest.approx(18 / 45)


def _save(path, data, spacing):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.uint8), np.diag([*spacing, 1.0])), str(path))
    return path


def _two_cases():
    ref1 = cube().astype(np.int64)
    ref1[5:15, 5:15, 14] = 2  # top layer of the cube is class 2
    pred1 = ref1.copy()
    pred1[pred1 == 2] = 0  # class 2 missed entirely
    ref2 = np.zeros((20, 20, 20), np.int64)  # no class 2 anywhere in case 2 -> NaN under "nan"
    ref2[3, :, :] = 1
    pred2 = np.zeros_like(ref2)
    pred2[5, :, :] = 1  # plane 2 voxels away along x (0.5 mm) -> HD95 1.0 mm
    return [(pred1, ref1), (pred2, ref2)]


D1 = 2 * 900 / (900 + 900)  # case 1, organ: the cube without its top layer, predicted exactly


def test_evaluate_cases_summary_on_arrays():
    cases = _two_cases()
    summary = evaluate_cases([p for p, _ in cases], [r for _, r in cases], classes={"organ": 1, "top": 2},
                             spacing=SPACING, case_ids=["a", "b"], reference_files=["ra.nii.gz", "rb.nii.gz"])
    c1, c2 = summary["metric_per_case"]
    assert c1["case_id"] == "a" and c1["reference_file"] == "ra.nii.gz" and c1["prediction_file"] == "<array>"
    assert c1["spacing"] == pytest.approx(list(SPACING))
    assert c1["metrics"]["top"]["Dice"] == 0.0 and math.isnan(c1["metrics"]["top"]["HD95"])
    assert math.isnan(c2["metrics"]["top"]["Dice"])
    assert c2["metrics"]["organ"]["HD95"] == pytest.approx(1.0) and c2["metrics"]["organ"]["Dice"] == 0.0
    assert c1["metrics"]["organ"]["Dice"] == pytest.approx(D1)
    assert summary["mean"]["organ"]["Dice"] == pytest.approx((D1 + 0.0) / 2)
    assert summary["mean"]["top"]["Dice"] == 0.0  # nanmean ignores case 2's NaN
    assert summary["foreground_mean"]["Dice"] == pytest.approx((D1 / 2 + 0.0) / 2)
    assert summary["empty_policy"] == "nan" and "HD95" in summary["metric_definitions"]
    per_case = evaluate_cases([p for p, _ in cases], [r for _, r in cases], {"organ": 1}, spacing=[SPACING, SPACING])
    assert per_case["mean"]["organ"] == pytest.approx(summary["mean"]["organ"], nan_ok=True)


def test_cli_writers_of_a_3d_evaluation(tmp_path):
    """The files ``mambaseg evaluate`` writes (summary.json, metrics.csv) for the same two cases, read from NIfTI
    with their spacing."""
    from mambaseg.engine.evaluate import evaluate

    for i, (p, r) in enumerate(_two_cases()):
        _save(tmp_path / "pred" / f"c{i}.nii.gz", p, SPACING)
        _save(tmp_path / "gt" / "labelsTr" / f"c{i}.nii.gz", r, SPACING)
    (tmp_path / "gt" / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "organ": 1, "top": 2}}))
    evaluate(tmp_path / "pred", tmp_path / "gt", tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_cases"] == 2 and summary["class_names"] == {"1": "organ", "2": "top"}
    assert summary["metric_per_case"][0]["reference_file"] == str(tmp_path / "gt" / "labelsTr" / "c0.nii.gz")
    assert summary["mean"]["1"]["Dice"] == pytest.approx((D1 + 0.0) / 2)
    assert summary["metric_per_case"][1]["metrics"]["1"]["HD95"] == pytest.approx(1.0)  # spacing read from file
    with open(tmp_path / "out" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 and [r["class"] for r in rows] == ["organ", "top"] * 2
    assert float(rows[0]["Dice"]) == pytest.approx(D1) and rows[3]["Dice"] == "nan"


def test_evaluate_cases_policy_and_default_classes_on_arrays():
    ref = np.zeros((8, 8, 8), np.int64)
    pred = np.zeros_like(ref)
    pred[1:3, 1:3, 1:3] = 4  # class 4 predicted, absent from the reference
    s = evaluate_cases([pred], [ref], empty_policy="transunet", spacing=(1, 1, 1))
    assert list(s["mean"]) == ["4"]
    assert s["metric_per_case"][0]["metrics"]["4"]["Dice"] == 1.0
    with pytest.raises(ValueError, match="predictions"):
        evaluate_cases([pred], [])
