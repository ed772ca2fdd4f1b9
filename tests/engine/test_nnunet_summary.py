"""``evaluate``'s summary.json in nnU-Net v2's shape: per-class results keyed by the label value as a string, read
back the way nnU-Net's own ``load_summary_json`` does; names alongside; absolute file paths; our report still
shows class names."""

from __future__ import annotations

import json
from copy import deepcopy
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mambaseg.cli import main
from mambaseg.engine.evaluate import evaluate

NNUNET_KEYS = ("Dice", "IoU", "FN", "FP", "TP", "TN", "n_pred", "n_ref")


def _save(path: Path, arr: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(arr.astype(np.uint8), np.diag([1.5, 1.0, 2.0, 1.0])), str(path))


@pytest.fixture()
def hippo(tmp_path):
    """An nnU-Net v2 raw dataset (labels name -> int) with 2 reference cases and their predictions."""
    root = tmp_path / "Dataset004_Hippo"
    (root / "labelsTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
        "numTraining": 2, "file_ending": ".nii.gz"}))
    pred = tmp_path / "pred"
    pred.mkdir()
    ref1 = np.zeros((8, 8, 8), np.uint8)
    ref1[1:4, 1:4, 1:4] = 1  # 27 voxels
    ref1[5:7, 5:7, 5:7] = 2  # 8 voxels
    p1 = ref1.copy()
    p1[1, 1:4, 1:4] = 0  # 9 anterior voxels missed: TP 18, FN 9
    ref2 = np.zeros((8, 8, 8), np.uint8)
    ref2[2:5, 2:5, 2:5] = 1
    p2 = ref2.copy()  # perfect anterior, no posterior anywhere: Dice NaN (both empty)
    for name, r, p in (("hip_001", ref1, p1), ("hip_002", ref2, p2)):
        _save(root / "labelsTr" / f"{name}.nii.gz", r)
        _save(pred / f"{name}.nii.gz", p)
    return root, pred


def test_summary_is_read_by_nnunets_loader(hippo, tmp_path, monkeypatch, load_summary_json):
    root, _pred = hippo
    monkeypatch.chdir(tmp_path)  # relative paths on the command line
    assert main(["evaluate", "--pred", "pred", "--gt", root.name, "-o", "ev"]) == 0
    raw = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert set(raw["mean"]) == {"1", "2"}
    assert raw["class_names"] == {"1": "Anterior", "2": "Posterior"}
    s = load_summary_json(str(tmp_path / "ev" / "summary.json"))
    assert set(s["mean"]) == {1, 2}
    c1 = next(c for c in s["metric_per_case"] if c["case_id"] == "hip_001")
    m = c1["metrics"][1]
    assert set(NNUNET_KEYS) <= set(m)
    assert (m["TP"], m["FN"], m["FP"]) == (18, 9, 0)
    assert m["Dice"] == pytest.approx(2 * 18 / (2 * 18 + 9))
    assert c1["metrics"][2]["Dice"] == pytest.approx(1.0)
    c2 = next(c for c in s["metric_per_case"] if c["case_id"] == "hip_002")
    assert np.isnan(c2["metrics"][2]["Dice"])  # both empty: NaN, as nnU-Net
    assert s["mean"][1]["Dice"] == pytest.approx((2 * 18 / 45 + 1.0) / 2)
    assert s["mean"][2]["Dice"] == pytest.approx(1.0)  # nanmean
    assert s["foreground_mean"]["Dice"] == pytest.approx((s["mean"][1]["Dice"] + 1.0) / 2)
    for c in s["metric_per_case"]:  # absolute, so a report made elsewhere finds the volumes
        assert Path(c["prediction_file"]).is_absolute() and Path(c["prediction_file"]).is_file()
        assert Path(c["reference_file"]).is_absolute() and Path(c["reference_file"]).is_file()
    csv = (tmp_path / "ev" / "metrics.csv").read_text()
    assert "Anterior" in csv and "Posterior" in csv


def test_v1_labels_and_report_reads_names(hippo, tmp_path):
    root, pred = hippo
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "MRI"},
                                                   "labels": {"0": "background", "1": "Anterior", "2": "Posterior"}}))
    res = evaluate(pred, root / "labelsTr", tmp_path / "ev")
    assert set(res["mean"]) == {"1", "2"} and res["class_names"]["2"] == "Posterior"
    from mambaseg.apps.benchmark import case_metrics
    from mambaseg.apps.report import collect_report
    from mambaseg.apps.report.page import _case_rows

    info = collect_report(tmp_path / "ev")
    assert set(info["evaluation"]["mean"]) == {"Anterior", "Posterior"}
    _headers, rows, dice = _case_rows(info["evaluation"])
    assert {r[1] for r in rows} == {"Anterior", "Posterior"}
    assert dice["hip_001"] == pytest.approx((2 * 18 / 45 + 1.0) / 2)
    assert ("hip_001", "dice:Anterior", pytest.approx(0.8)) in case_metrics(res)


def test_brats_regions_keyed_like_nnunet(tmp_path, load_summary_json):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    ref = np.zeros((10, 10, 10), np.uint8)
    ref[2:6, 2:6, 2:6] = 2
    ref[3:5, 3:5, 3:5] = 3
    _save(gt / "c1.nii.gz", ref)
    _save(pred / "c1.nii.gz", ref)
    res = evaluate(pred, gt, tmp_path / "ev", regions="brats")
    assert set(res["mean"]) == {"(1, 2, 3)", "(1, 3)", "(3,)"}
    assert res["class_names"] == {"(1, 2, 3)": "WT", "(1, 3)": "TC", "(3,)": "ET"}
    s = load_summary_json(str(tmp_path / "ev" / "summary.json"))
    assert set(s["mean"]) == {(1, 2, 3), (1, 3), (3,)}
    assert s["mean"][(1, 2, 3)]["Dice"] == 1.0 and s["mean"][(3,)]["Dice"] == 1.0
    from mambaseg.apps.report import collect_report

    assert set(collect_report(tmp_path / "ev")["evaluation"]["mean"]) == {"WT", "TC", "ET"}


def test_old_name_keyed_summary_still_reported(hippo, tmp_path):
    """A summary written before this change (keyed by name, no class_names) is shown as it is."""
    root, pred = hippo
    res = evaluate(pred, root / "labelsTr", tmp_path / "ev")
    old = deepcopy(res)
    names = old.pop("class_names")
    old.pop("csv_rows")
    old["mean"] = {names[k]: v for k, v in old["mean"].items()}
    for c in old["metric_per_case"]:
        c["metrics"] = {names[k]: v for k, v in c["metrics"].items()}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "summary.json").write_text(json.dumps(old))
    from mambaseg.apps.report import collect_report

    assert set(collect_report(tmp_path / "old")["evaluation"]["mean"]) == {"Anterior", "Posterior"}


def test_2d_paths_absolute(tmp_path, monkeypatch):
    from PIL import Image

    for d in ("p", "g"):
        (tmp_path / d).mkdir()
    lab = np.zeros((16, 16), np.uint8)
    lab[4:10, 4:10] = 255
    Image.fromarray(lab).save(tmp_path / "g" / "a.png")
    Image.fromarray(lab).save(tmp_path / "p" / "a.png")
    monkeypatch.chdir(tmp_path)
    res = evaluate("p", "g", "ev")
    row = res["metric_per_case"][0]
    assert Path(row["prediction"]).is_absolute() and Path(row["prediction"]) == tmp_path / "p" / "a.png"
    assert Path(row["reference"]).is_absolute() and Path(res["reference_folder"]).is_absolute()
    assert res["mean_2d"]["dice"] == pytest.approx(1.0)


def test_2d_nnunet_names_pair(tmp_path):
    """Predictions named after nnU-Net images (CASE_0000.png) pair with labels CASE.png, even with '_' in CASE."""
    from PIL import Image

    for d in ("p", "g"):
        (tmp_path / d).mkdir()
    lab = np.zeros((16, 16), np.uint8)
    lab[4:10, 4:10] = 1
    for case in ("road_1", "road_2"):
        Image.fromarray(lab).save(tmp_path / "g" / f"{case}.png")
        Image.fromarray(lab * 255).save(tmp_path / "p" / f"{case}_0000.png")
    res = evaluate(tmp_path / "p", tmp_path / "g", tmp_path / "ev")
    assert {Path(r["reference"]).name for r in res["metric_per_case"]} == {"road_1.png", "road_2.png"}
    assert res["mean_2d"]["dice"] == pytest.approx(1.0)
