"""``predict_provenance.json`` next to 2D and 3D predictions: model + checkpoint SHA-256, training config,
preprocessing, inference settings, versions, command line; atomic 0644; a user's file of that name is never
overwritten; ``--continue`` rewrites it consistently (and refuses other models' settings)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import mambaseg.engine.predict.images as images_mod
from mambaseg.cli import main
from mambaseg.data.synthetic import write_synthetic_drive
from mambaseg.engine.predict import predict
from mambaseg.engine.predict_provenance import FORMAT, PROVENANCE_NAME
from tests.conftest import tiny_3d_yaml

CFG2D = """
seed: 0
model: {name: unet_tiny}
data: {layout: drive, root: "%s", val_fraction: 0.25, patch_size: [32, 32], fov: true, augment: none}
train: {epochs: 1, iters_per_epoch: 1, batch_size: 2, val_every: 1}
infer: {patch_size: [48, 48]}
"""

KEYS = {"format", "format_version", "model", "training_config", "preprocessing", "inference", "versions", "command",
        "runs", "outputs", "complete", "created_utc", "updated_utc"}


@pytest.fixture(scope="module")
def world2d(tmp_path_factory):
    root = tmp_path_factory.mktemp("prov2d")
    data = write_synthetic_drive(root / "drive", n_train=3, n_test=2, size=(48, 52), seed=4)
    cfg = root / "c.yaml"
    cfg.write_text(CFG2D % data)
    run = root / "run"
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0
    return data, run


@pytest.fixture(scope="module")
def world3d(tmp_path_factory):
    root = tmp_path_factory.mktemp("prov3d")
    ds = root / "Dataset002_Blob"
    for d in ("imagesTr", "labelsTr", "imagesTs"):
        (ds / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    aff = np.diag([1.0, 1.0, 1.5, 1.0])
    for i in range(3):
        lab = np.zeros((18, 16, 12), np.uint8)
        lab[5:12, 4:10, 3:8] = 1
        img = (rng.normal(0, 1, lab.shape) + 3 * lab).astype(np.float32)
        nib.save(nib.Nifti1Image(img, aff), str(ds / "imagesTr" / f"blob_{i}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(lab, aff), str(ds / "labelsTr" / f"blob_{i}.nii.gz"))
    for i in (8, 9):
        img = rng.normal(0, 1, (17, 15, 11)).astype(np.float32)
        nib.save(nib.Nifti1Image(img, aff), str(ds / "imagesTs" / f"blob_{i}_0000.nii.gz"))
    (ds / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": {"background": 0, "blob": 1},
                                                 "numTraining": 3, "file_ending": ".nii.gz"}))
    cfg = root / "c.yaml"
    cfg.write_text(tiny_3d_yaml(ds, "model.name=unet3d_tiny", "data.layout=nnunet", "data.num_classes=2",
                                "data.val_fraction=0.34"))
    run = root / "run"
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0
    return ds, run


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read(out: Path) -> dict:
    return json.loads((out / PROVENANCE_NAME).read_text())


def _one_line_error(capsys, *args) -> str:
    code = main(list(args))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_2d_provenance_holds_model_config_plan_settings_versions_command(world2d, tmp_path):
    data, run = world2d
    out = tmp_path / "pred"
    old = os.umask(0o022)
    try:
        written = predict(run, data / "test" / "images", out, tta=True, progress=False,
                          command=["mambaseg", "predict", "-m", str(run)])
    finally:
        os.umask(old)
    doc = _read(out)
    assert KEYS <= set(doc) and doc["format"] == FORMAT and doc["complete"] is True
    ck_path = run / "checkpoint_best.pt"
    ck = torch.load(ck_path, weights_only=False, map_location="cpu")
    assert doc["model"]["name"] == "unet_tiny" == ck["model_name"]
    assert doc["model"]["checkpoint"] == str(ck_path.resolve()) and doc["model"]["checkpoint_sha256"] == _sha(ck_path)
    assert doc["training_config"]["model"]["name"] == "unet_tiny"
    assert doc["training_config"]["data"]["patch_size"] == [32, 32] and doc["training_config"]["seed"] == 0
    pre = doc["preprocessing"]
    assert pre["spatial_dims"] == 2 and pre["fov"] is True and "z-score" in pre["normalization"]
    inf = doc["inference"]
    assert inf["tile"] == [48, 48] and inf["tta"] is True and inf["overlap"] == 0.5 and inf["probs"] is False
    assert 0 <= inf["threshold"] <= 1 and inf["device"] == "cpu"
    assert doc["versions"]["torch"] == torch.__version__ and doc["versions"]["numpy"] == np.__version__
    assert doc["versions"]["mambaseg"]
    assert doc["command"] == ["mambaseg", "predict", "-m", str(run)]
    assert doc["outputs"] == sorted(p.name for p in written) == ["01_test.png", "02_test.png"]
    assert len(doc["runs"]) == 1 and doc["runs"][0]["predicted"] == doc["outputs"]
    assert stat.S_IMODE((out / PROVENANCE_NAME).stat().st_mode) == 0o644
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # written atomically: no temporary left


def test_3d_provenance_holds_the_plan(world3d, tmp_path, capsys):
    ds, run = world3d
    out = tmp_path / "pred3d"
    assert main(["predict", "-m", str(run), "-i", str(ds / "imagesTs"), "-o", str(out), "--no-progress"]) == 0
    doc = _read(out)
    assert KEYS <= set(doc) and doc["complete"] is True
    ck_path = run / "checkpoint_best.pt"
    ck = torch.load(ck_path, weights_only=False, map_location="cpu")
    assert doc["model"]["name"] == "unet3d_tiny" and doc["model"]["checkpoint_sha256"] == _sha(ck_path)
    assert doc["model"]["spatial_dims"] == 3 and doc["model"]["labels"] == {"background": 0, "blob": 1}
    plan = doc["preprocessing"]["plan"]
    assert plan == json.loads(json.dumps(ck["data"]["plan"])) and plan["normalization"][0]["scheme"]
    assert doc["preprocessing"]["channel_names"] == ["MRI"]
    assert doc["inference"]["tile"] == plan["patch_size"] and doc["inference"]["overlap"] == 0.0
    assert doc["training_config"]["data"]["layout"] == "nnunet"
    assert doc["outputs"] == ["blob_8.nii.gz", "blob_9.nii.gz"]
    assert doc["command"]  # sys.argv of this process (the CLI's own command line when run as mambaseg)
    assert {"mambaseg", "torch", "numpy", "python"} <= set(doc["versions"])


def test_a_users_file_of_that_name_is_never_overwritten(world2d, world3d, tmp_path, capsys):
    data, run = world2d
    for i, content in enumerate(('{"my": "notes"}', "not json at all", json.dumps({"format": "something-else"}))):
        out = tmp_path / f"o{i}"
        out.mkdir()
        (out / PROVENANCE_NAME).write_text(content)
        err = _one_line_error(capsys, "predict", "-m", str(run), "-i", str(data / "test" / "images"), "-o", str(out),
                              "--no-progress")
        assert PROVENANCE_NAME in err and "not a mambaseg predict provenance file" in err
        assert (out / PROVENANCE_NAME).read_text() == content
        assert sorted(p.name for p in out.iterdir()) == [PROVENANCE_NAME]  # nothing predicted
    ds, run3 = world3d
    out = tmp_path / "o3"
    out.mkdir()
    (out / PROVENANCE_NAME).write_text("[1, 2]")
    err = _one_line_error(capsys, "predict", "-m", str(run3), "-i", str(ds / "imagesTs"), "-o", str(out), "--overwrite",
                          "--no-progress")
    assert "not a mambaseg predict provenance file" in err and (out / PROVENANCE_NAME).read_text() == "[1, 2]"
    assert sorted(p.name for p in out.iterdir()) == [PROVENANCE_NAME]


def test_continue_rewrites_it_consistently(world2d, tmp_path, capsys):
    data, run = world2d
    inp = tmp_path / "in"
    inp.mkdir()
    first, second = sorted((data / "test" / "images").iterdir())
    shutil.copy(first, inp / first.name)
    out = tmp_path / "pred"
    assert main(["predict", "-m", str(run), "-i", str(inp), "-o", str(out), "--no-progress"]) == 0
    doc1 = _read(out)
    assert doc1["outputs"] == ["01_test.png"] and len(doc1["runs"]) == 1
    shutil.copy(second, inp / second.name)
    # other settings than the predictions in the folder: refused, file and outputs untouched
    before = (out / PROVENANCE_NAME).read_bytes()
    err = _one_line_error(capsys, "predict", "-m", str(run), "-i", str(inp), "-o", str(out), "--continue",
                          "--overlap", "0.25", "--no-progress")
    assert "another model or settings" in err and "inference.overlap" in err
    assert (out / PROVENANCE_NAME).read_bytes() == before and not (out / "02_test.png").exists()
    # same model and settings: both runs in one description
    assert main(["predict", "-m", str(run), "-i", str(inp), "-o", str(out), "--continue", "--no-progress"]) == 0
    doc2 = _read(out)
    assert doc2["outputs"] == ["01_test.png", "02_test.png"] and doc2["complete"] is True
    assert doc2["created_utc"] == doc1["created_utc"] and len(doc2["runs"]) == 2
    assert doc2["runs"][1]["continue"] is True and doc2["runs"][1]["skipped_existing"] == ["01_test.png"]
    assert doc2["runs"][1]["predicted"] == ["02_test.png"] and doc2["runs"][0] == doc1["runs"][0]
    assert doc2["model"] == doc1["model"] and doc2["inference"] == doc1["inference"]
    # --overwrite with other settings: a new description of the new predictions only
    assert main(["predict", "-m", str(run), "-i", str(inp), "-o", str(out), "--overwrite", "--overlap", "0.25",
                 "--no-progress"]) == 0
    doc3 = _read(out)
    assert len(doc3["runs"]) == 1 and doc3["inference"]["overlap"] == 0.25 and doc3["runs"][0]["overwrite"] is True


def test_interrupted_run_leaves_an_incomplete_description(world2d, tmp_path, monkeypatch, capsys):
    data, run = world2d
    out = tmp_path / "pred"
    real, calls = images_mod.write_png, {"n": 0}

    def dying_write_png(path, array):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real(path, array)

    monkeypatch.setattr(images_mod, "write_png", dying_write_png)
    assert main(["predict", "-m", str(run), "-i", str(data / "test" / "images"), "-o", str(out), "--no-progress"]) == 2
    doc = _read(out)
    assert doc["complete"] is False and doc["runs"][0]["finished_utc"] is None
    monkeypatch.setattr(images_mod, "write_png", real)
    assert main(["predict", "-m", str(run), "-i", str(data / "test" / "images"), "-o", str(out), "--continue",
                 "--no-progress"]) == 0
    doc = _read(out)
    assert doc["complete"] is True and doc["outputs"] == ["01_test.png", "02_test.png"] and len(doc["runs"]) == 2


def test_3d_case_named_like_the_provenance_file_is_refused_with_probs(world3d, tmp_path, capsys):
    ds, run = world3d
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(ds / "imagesTs" / "blob_9_0000.nii.gz", inp / "predict_provenance_0000.nii.gz")
    err = _one_line_error(capsys, "predict", "-m", str(run), "-i", str(inp), "-o", str(tmp_path / "o"), "--probs",
                          "--no-progress")
    assert "predict_provenance" in err and "rename that input" in err and not (tmp_path / "o").exists()
