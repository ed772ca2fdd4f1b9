"""The shipped models load safely and segment inputs of other sizes (skipped until the weight files exist)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mambaseg.cli import main
from mambaseg.data.synthetic import make_vessel_image
from mambaseg.engine.checkpoint import load_checkpoint

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
DRIVE_W = WEIGHTS / "akmamba_net_drive.pt"
HIPPO_W = WEIGHTS / "dm_segnet_hippocampus.pt"
BRATS_W = WEIGHTS / "dm_segnet_brats_wt.pt"


@pytest.mark.skipif(not DRIVE_W.is_file(), reason="weights/akmamba_net_drive.pt not shipped yet")
def test_drive_weights_on_other_sizes(tmp_path):
    assert DRIVE_W.stat().st_size <= 20 * 1024 * 1024
    ck = load_checkpoint(DRIVE_W)
    assert ck["model_name"].startswith("akmamba_net") and "optimizer" not in ck
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, size in enumerate([(300, 340), (256, 256)]):  # other sizes than DRIVE's 584x565
        image, _, _ = make_vessel_image(size, rng=i)
        Image.fromarray(image).save(photos / f"p{i}.jpg", quality=95)
    out = tmp_path / "out"
    assert main(["predict", "--model", str(DRIVE_W), "-i", str(photos), "-o", str(out), "--no-progress"]) == 0
    for i, size in enumerate([(300, 340), (256, 256)]):
        mask = np.array(Image.open(out / f"p{i}.png"))
        assert mask.shape == size and set(np.unique(mask)) <= {0, 255}
        assert mask[0, 0] == 0 and mask[-1, -1] == 0  # outside the estimated field of view


@pytest.mark.skipif(not HIPPO_W.is_file(), reason="weights/dm_segnet_hippocampus.pt not shipped yet")
def test_hippocampus_weights_keep_geometry(tmp_path):
    assert HIPPO_W.stat().st_size <= 20 * 1024 * 1024
    rng = np.random.default_rng(0)
    vols = tmp_path / "vols"
    vols.mkdir()
    affine = np.diag([-1.0, 1.0, 1.2, 1.0])
    nib.save(nib.Nifti1Image(rng.normal(100, 20, (33, 47, 35)).astype(np.float32), affine), vols / "h.nii.gz")
    out = tmp_path / "out"
    assert main(["predict", "--model", str(HIPPO_W), "-i", str(vols), "-o", str(out), "--no-progress"]) == 0
    pred = nib.load(out / "h.nii.gz")
    assert pred.shape == (33, 47, 35) and np.allclose(pred.affine, affine)
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2}


def _brain_volume(shape=(240, 240, 155), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A BraTS-sized skull-stripped FLAIR-like volume (zero outside an ellipsoid brain) with a bright blob."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float32)
    centre = (np.asarray(shape, np.float32) - 1) / 2
    r = np.sqrt(sum(((grid[i] - centre[i]) / (0.38 * shape[i])) ** 2 for i in range(3)))
    blob = np.sqrt(sum((grid[i] - centre[i] - (20, -15, 5)[i]) ** 2 for i in range(3))) < 18
    vol = np.where(r < 1, 300 + 30 * rng.standard_normal(shape) + 250 * blob, 0).astype(np.float32)
    return vol, blob


@pytest.mark.skipif(not BRATS_W.is_file(), reason="weights/dm_segnet_brats_wt.pt not shipped yet")
def test_brats_weights_full_size_case_folders_and_flair_files(tmp_path):
    """At the size users run it: a 240x240x155 FLAIR (1 mm, BraTS' grid) as a 2018 case folder (FLAIR + T1: only
    FLAIR is read), as a BraTS 2023 case folder (``-t2f``) and as a plain FLAIR file on another grid; every mask is
    written in its input's geometry."""
    assert BRATS_W.stat().st_size <= 20 * 1024 * 1024
    ck = load_checkpoint(BRATS_W)
    assert ck["model_name"] == "dm_segnet_cpu" and ck["data"]["channel_names"] == ["FLAIR"]
    flair, _ = _brain_volume()
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    cases = tmp_path / "cases"
    for folder, name in (("Brats18_X_1", "FLAIR.nii.gz"), ("BraTS-GLI-00000-000", "BraTS-GLI-00000-000-t2f.nii.gz")):
        (cases / folder).mkdir(parents=True)
        nib.save(nib.Nifti1Image(flair, affine), cases / folder / name)
    nib.save(nib.Nifti1Image(np.zeros_like(flair), affine), cases / "Brats18_X_1" / "T1.nii.gz")
    out = tmp_path / "out"
    assert main(["predict", "--model", "dm_segnet_brats_wt", "-i", str(cases), "-o", str(out), "--no-progress"]) == 0
    for cid in ("Brats18_X_1", "BraTS-GLI-00000-000"):
        pred = nib.load(out / f"{cid}.nii.gz")
        assert pred.shape == (240, 240, 155) and np.allclose(pred.affine, affine)
        mask = np.asarray(pred.dataobj)
        assert set(np.unique(mask)) <= {0, 1} and not mask[flair == 0].any()  # nothing outside the brain
    files = tmp_path / "files"
    files.mkdir()
    small, _ = _brain_volume((200, 210, 120), seed=1)
    aff2 = np.diag([1.1, 1.1, 1.3, 1.0])
    nib.save(nib.Nifti1Image(small, aff2), files / "patient7_flair.nii.gz")
    assert main(["predict", "--model", "dm_segnet_brats_wt", "-i", str(files / "patient7_flair.nii.gz"), "-o",
                 str(tmp_path / "out2"), "--no-progress"]) == 0
    pred = nib.load(tmp_path / "out2" / "patient7_flair.nii.gz")
    assert pred.shape == (200, 210, 120) and np.allclose(pred.affine, aff2)


@pytest.mark.skipif(not DRIVE_W.is_file(), reason="weights/akmamba_net_drive.pt not shipped yet")
def test_drive_weights_same_logits_with_akconv_kernel():
    """The compiled AKConv kernel changes speed, not results: the shipped model's logits on a vessel image agree
    with the pure-PyTorch path to fp32 summation-order noise (~1e-5 relative); masks may differ only where a
    logit sits within that noise of 0."""
    import torch

    from mambaseg.engine.checkpoint import model_from_checkpoint
    from mambaseg.nn import akconv, akconv_kernel

    if not akconv_kernel.available():
        pytest.skip("AKConv CPU kernel could not be built")
    model = model_from_checkpoint(load_checkpoint(DRIVE_W), DRIVE_W).eval()
    image, _, _ = make_vessel_image((160, 176), rng=3)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    logits = {}
    with torch.no_grad():
        for enabled in (False, True):
            previous = akconv.set_kernel_enabled(enabled)
            try:
                logits[enabled] = model(x)
            finally:
                akconv.set_kernel_enabled(previous)
    scale = float(logits[False].abs().max())
    torch.testing.assert_close(logits[True], logits[False], rtol=0, atol=1e-3 * scale)
    differing = ((logits[True] > 0) != (logits[False] > 0)) & (logits[False].abs() > 1e-3 * scale)
    assert not differing.any()
