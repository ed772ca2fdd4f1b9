"""End-to-end 3D CLI on a generated MSD-style phantom: train -> predict (original geometry) -> evaluate (HD95 in mm),
plus bad inputs (wrong modality count, 2D into 3D model, NaN voxels, truncated .nii.gz, missing BraTS modality)."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest

from mambaseg.cli import main
from mambaseg.data.synthetic import write_phantom_msd
from tests.conftest import tiny_3d_yaml


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli3d")
    data = write_phantom_msd(root / "task", n_cases=4, shape=(20, 24, 18))
    test = write_phantom_msd(root / "test", n_cases=2, shape=(22, 19, 17), seed=3)
    cfg = root / "cfg.yaml"
    cfg.write_text(tiny_3d_yaml(data))
    run = root / "run"
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0
    return root, test, run


def _err(capsys, *args):
    code = main(list(args))
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_predict_keeps_geometry_and_evaluate(trained, tmp_path, capsys):
    root, test, run = trained
    out = tmp_path / "pred"
    assert main(["predict", "-m", str(run), "-i", str(test / "imagesTr"), "-o", str(out), "--no-progress"]) == 0
    for f in sorted((test / "imagesTr").glob("*.nii.gz")):
        ref, pred = nib.load(f), nib.load(out / f.name)
        assert pred.shape == ref.shape
        assert np.allclose(pred.affine, ref.affine)
        assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2}
    ev = tmp_path / "eval"
    assert main(["evaluate", "--pred", str(out), "--gt", str(test / "labelsTr"), "-o", str(ev),
                 "--empty-policy", "segmamba"]) == 0
    summary = json.loads((ev / "summary.json").read_text())
    assert summary["empty_policy"] == "segmamba" and summary["units"]["HD95"] == "mm"
    assert set(summary["mean"]) == {"1", "2"}  # keyed by label value, as nnU-Net v2's summary.json
    assert summary["class_names"] == {"1": "Anterior", "2": "Posterior"}  # names from dataset.json
    assert len(summary["metric_per_case"]) == 2
    err = _err(capsys, "predict", "-m", str(run), "-i", str(test / "imagesTr"), "-o", str(out))
    assert "already exists" in err


def test_bad_volumes(trained, tmp_path, capsys):
    root, test, run = trained
    src = sorted((test / "imagesTr").glob("*.nii.gz"))[0]
    img = nib.load(src)
    arr = np.asarray(img.dataobj)
    two = tmp_path / "two"
    two.mkdir()
    nib.save(nib.Nifti1Image(np.stack([arr, arr], -1), img.affine), two / "case.nii.gz")  # 2 modalities
    assert "modalit" in _err(capsys, "predict", "-m", str(run), "-i", str(two), "-o", str(tmp_path / "o1"))
    flat = tmp_path / "flat"
    flat.mkdir()
    nib.save(nib.Nifti1Image(arr[:, :, 0], img.affine), flat / "slice.nii.gz")  # 2D into a 3D model
    assert "slice.nii.gz" in _err(capsys, "predict", "-m", str(run), "-i", str(flat), "-o", str(tmp_path / "o2"))
    nan = tmp_path / "nan"
    nan.mkdir()
    bad = arr.astype(np.float32).copy()
    bad[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(bad, img.affine), nan / "nan.nii.gz")
    assert "nan.nii.gz" in _err(capsys, "predict", "-m", str(run), "-i", str(nan), "-o", str(tmp_path / "o3"))
    trunc = tmp_path / "trunc"
    trunc.mkdir()
    raw = gzip.compress(gzip.decompress(src.read_bytes()))
    (trunc / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    assert "cut.nii.gz" in _err(capsys, "predict", "-m", str(run), "-i", str(trunc), "-o", str(tmp_path / "o4"))
    for d in ("o1", "o2", "o3", "o4"):
        assert not (tmp_path / d).exists() or not any((tmp_path / d).iterdir())


def test_label_image_mismatch_in_training(tmp_path, capsys):
    data = write_phantom_msd(tmp_path / "task", n_cases=3, shape=(20, 24, 18))
    lab = sorted((data / "labelsTr").glob("*.nii.gz"))[0]
    nib.save(nib.Nifti1Image(np.zeros((20, 24, 10), np.uint8), np.eye(4)), lab)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(tiny_3d_yaml(data))
    err = _err(capsys, "train", str(cfg), "--out", str(tmp_path / "r"))
    assert lab.name in err


def test_missing_brats_modality(trained, tmp_path, capsys):
    _, _, run = trained
    case = tmp_path / "brats" / "BraTS-GLI-00002-000"
    case.mkdir(parents=True)
    for m in ("t1n", "t1c", "t2w"):  # t2f missing
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), case / f"{case.name}-{m}.nii.gz")
    err = _err(capsys, "predict", "-m", str(run), "-i", str(tmp_path / "brats"), "-o", str(tmp_path / "o"))
    assert "t2f" in err


def test_real_brats_sample_loads(shared_data):
    from mambaseg.data.layouts.brats import brats_cases
    from mambaseg.data.load3d import load_case3d

    cases = brats_cases(shared_data("BraTS2023_GLI_sample"))
    assert len(cases) == 1
    case = load_case3d(cases[0], check_labels=False)
    assert case["image"].shape == (4, 240, 240, 155) and case["label"] is None
    assert np.allclose(case["meta"]["spacing"], 1.0)
