"""3D predict outputs: ``--probs`` (nnU-Net-style ``<case>.npz`` + JSON metadata in the input geometry),
``--overlay`` (axial/coronal/sagittal PNG), ``--mask`` refused for 3D models; trained end to end on a tiny nnU-Net
v2 dataset (``data.layout: nnunet``)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mambaseg.cli import main
from tests.conftest import tiny_3d_yaml

# a non-diagonal (LPS-like, permuted) affine so the original geometry is really restored
AFFINE = np.array([[0.0, -1.2, 0.0, 10.0], [-1.0, 0.0, 0.0, 5.0], [0.0, 0.0, 2.0, -3.0], [0.0, 0.0, 0.0, 1.0]])


def _vol(path: Path, arr: np.ndarray, dtype=np.float32) -> None:
    nib.save(nib.Nifti1Image(arr.astype(dtype), AFFINE), str(path))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("p3d")
    ds = root / "Dataset001_Blob"
    for d in ("imagesTr", "labelsTr", "imagesTs"):
        (ds / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        lab = np.zeros((18, 16, 12), np.uint8)
        lab[5:12, 4:10, 3:8] = 1
        _vol(ds / "imagesTr" / f"blob_{i}_0000.nii.gz", rng.normal(0, 1, lab.shape) + 3 * lab)
        _vol(ds / "labelsTr" / f"blob_{i}.nii.gz", lab, np.uint8)
    _vol(ds / "imagesTs" / "blob_9_0000.nii.gz", rng.normal(0, 1, (17, 15, 11)))
    (ds / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": {"background": 0, "blob": 1},
                                                 "numTraining": 3, "file_ending": ".nii.gz"}))
    cfg = root / "cfg.yaml"
    cfg.write_text(tiny_3d_yaml(ds, "model.name=unet3d_tiny", "data.layout=nnunet", "data.num_classes=2",
                                "data.val_fraction=0.34"))
    run = root / "run"
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0
    return ds, run


def _err(capsys, *args) -> str:
    code = main(list(args))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_probs_and_overlay(trained, tmp_path):
    ds, run = trained
    out = tmp_path / "pred"
    assert main(["predict", "-m", str(run), "-i", str(ds / "imagesTs"), "-o", str(out), "--probs", "--overlay",
                 "--no-progress"]) == 0
    src = nib.load(ds / "imagesTs" / "blob_9_0000.nii.gz")
    lab = nib.load(out / "blob_9.nii.gz")
    assert lab.shape == src.shape and np.allclose(lab.affine, src.affine)
    with np.load(out / "blob_9.npz") as z:
        p = z["probabilities"]
    assert p.dtype == np.float32 and p.shape == (2, *src.shape)  # (K, X, Y, Z) on the input's voxel grid
    assert np.allclose(p.sum(0), 1.0, atol=1e-4) and p.min() >= 0 and p.max() <= 1
    labels = np.asarray(lab.dataobj)
    confident = np.abs(p[1] - 0.5) > 0.2  # away from the boundary, the label map is the argmax
    assert np.array_equal(labels[confident], p.argmax(0)[confident])
    meta = json.loads((out / "blob_9.json").read_text())
    assert meta["shape"] == [2, *src.shape] and meta["axes"] == ["class", "i", "j", "k"]
    assert np.allclose(meta["affine"], src.affine) and meta["classes"] == {"0": "background", "1": "blob"}
    # a binary model has one sigmoid output: stored as the two maps [1 - p, p], as nnU-Net stores classes
    assert meta["activation"].startswith("sigmoid") and Path(meta["source_files"][0]).is_absolute()
    png = Image.open(out / "overlays" / "blob_9.png")
    assert png.mode == "RGB" and png.height >= 200 and png.width >= 3 * 100  # three panels, not a thin strip
    # --continue counts the probabilities and the overlay as outputs of a case
    (out / "blob_9.npz").unlink()
    assert main(["predict", "-m", str(run), "-i", str(ds / "imagesTs"), "-o", str(out), "--probs", "--continue",
                 "--no-progress"]) == 0
    assert (out / "blob_9.npz").is_file()


def test_mask_with_3d_model_and_missing_mask(trained, tmp_path, capsys):
    ds, run = trained
    masks = tmp_path / "masks"
    masks.mkdir()
    err = _err(capsys, "predict", "-m", str(run), "-i", str(ds / "imagesTs"), "-o", str(tmp_path / "o1"),
               "--mask", str(masks))
    assert "--mask applies to 2D fundus models" in err
    assert not (tmp_path / "o1").exists()
    err = _err(capsys, "predict", "-m", str(run), "-i", str(ds / "imagesTs"), "-o", str(tmp_path / "o2"),
               "--mask", str(tmp_path / "nope"))
    assert str(tmp_path / "nope") in err and "not found" in err


def test_overlay_orientation():
    """A marker at the patient's right/anterior/superior lands where the radiological layout puts it."""
    from mambaseg.engine.predict import orthogonal_overlay

    img = np.zeros((20, 20, 20), np.float32)
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[8:12, 8:12, 8:12] = 1  # centre: the slices go through it
    lab[17:19, 9:11, 9:11] = 1  # x high = patient's right in RAS
    fig = orthogonal_overlay(img, lab, np.eye(4), panel_px=100)
    axial = fig[34:134, 8:108]  # first panel (header 34 px, padding 8 px)
    coloured = np.argwhere(axial.sum(-1) > 0)
    assert coloured[:, 1].min() < 20  # the right-hand marker is drawn on the image's left (radiological)
    assert fig.shape[0] >= 134 and fig.shape[1] == 3 * 100 + 4 * 8
