"""2D layouts (DRIVE, folder2d), case loading/normalisation and FOV estimation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mambaseg.data.cases import detect_layout, list_cases
from mambaseg.data.errors import DataError
from mambaseg.data.io.raster import read_image, read_mask
from mambaseg.data.layouts.drive import drive_cases
from mambaseg.data.layouts.folder2d import folder2d_cases
from mambaseg.data.layouts.load2d import load_case2d
from mambaseg.data.plans.fundus import estimate_fov
from mambaseg.data.plans.normalize import normalize_image
from mambaseg.data.records import Case2D
from mambaseg.data.synthetic import write_synthetic_drive


@pytest.fixture(scope="module")
def drive_root(tmp_path_factory) -> Path:
    return write_synthetic_drive(tmp_path_factory.mktemp("drive"), n_train=2, n_test=2, size=(64, 72), seed=3)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_drive_cases_and_load(drive_root):
    assert detect_layout(drive_root) == "drive"
    train = drive_cases(drive_root)
    assert [c.id for c in train] == ["21", "22"]
    assert train[0].image == drive_root / "training/images/21_training.tif"
    assert train[0].label == drive_root / "training/1st_manual/21_manual1.gif"
    assert train[0].mask == drive_root / "training/mask/21_training_mask.gif"
    assert [c.id for c in drive_cases(drive_root, "test")] == ["01", "02"]
    assert list_cases(drive_root, split="test") == drive_cases(drive_root, "test")
    sample = load_case2d(train[0], num_classes=2)
    image, label, mask = sample["image"], sample["label"], sample["mask"]
    assert image.shape == (3, 64, 72) and image.dtype == np.float32
    assert label.shape == (64, 72) and label.dtype == np.int64 and set(np.unique(label)) == {0, 1}
    assert mask.dtype == bool and 0.5 < mask.mean() < 0.9
    # z-score per channel inside the mask, zero outside
    np.testing.assert_allclose(image[:, mask].mean(axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(image[:, mask].std(axis=1), 1.0, atol=1e-3)
    assert np.all(image[:, ~mask] == 0.0)
    raw, _ = read_image(train[0].image)
    expect = (raw[1] - raw[1][mask].mean()) / raw[1][mask].std()
    np.testing.assert_allclose(image[1][mask], expect[mask], rtol=1e-4, atol=1e-4)
    assert sample["meta"]["id"] == "21" and len(sample["meta"]["mean"]) == 3


def test_drive_split_errors(drive_root, tmp_path):
    with pytest.raises(ValueError, match="split"):
        drive_cases(drive_root, "validation")
    root = tmp_path / "d"
    shutil.copytree(drive_root, root)
    shutil.rmtree(root / "test/1st_manual")
    shutil.rmtree(root / "test/mask")
    case = drive_cases(root, "test")[0]
    assert case.label is None and case.mask is None  # the official test download has no manual labels
    (root / "training/1st_manual/22_manual1.gif").unlink()
    with pytest.raises(DataError, match="22_training.tif"):
        drive_cases(root, "training")


def _write_folder(root: Path, stems, size=(10, 12), masks=True) -> None:
    rng = np.random.default_rng(0)
    for sub in ("images", "labels") + (("masks",) if masks else ()):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for stem in stems:
        Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(root / "images" / f"{stem}.png")
        Image.fromarray((rng.random(size) > 0.5).astype(np.uint8) * 255).save(root / "labels" / f"{stem}.png")
        if masks:
            Image.fromarray(np.full(size, 255, np.uint8)).save(root / "masks" / f"{stem}.png")


def test_folder2d(tmp_path):
    _write_folder(tmp_path, ["b", "a"])
    assert detect_layout(tmp_path) == "folder2d"
    cases = folder2d_cases(tmp_path)
    assert [c.id for c in cases] == ["a", "b"]
    assert cases[0] == Case2D("a", tmp_path / "images/a.png", tmp_path / "labels/a.png", tmp_path / "masks/a.png")
    sample = load_case2d(cases[1])
    assert sample["image"].shape == (3, 10, 12) and sample["label"].max() == 1
    (tmp_path / "labels/b.png").unlink()
    with pytest.raises(DataError, match=r"images/b\.png"):
        folder2d_cases(tmp_path)
    assert folder2d_cases(tmp_path, require_labels=False)[1].label is None


def test_folder2d_empty_and_unknown(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="no images"):
        folder2d_cases(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(DataError, match="unknown layout, expected training/images"):
        detect_layout(other)
    with pytest.raises(DataError, match="not found"):
        detect_layout(tmp_path / "missing")


def test_size_mismatch_names_both_files(tmp_path):
    _write_folder(tmp_path, ["a"], masks=False)
    Image.fromarray(np.zeros((11, 12), np.uint8)).save(tmp_path / "labels/a.png")
    with pytest.raises(DataError) as err:
        load_case2d(folder2d_cases(tmp_path)[0])
    msg = str(err.value)
    assert "labels/a.png" in msg and "images/a.png" in msg and "(11, 12)" in msg and "(10, 12)" in msg


def test_normalize_without_mask_and_constant_channel():
    image = np.stack([np.arange(12.0).reshape(3, 4), np.full((3, 4), 5.0)]).astype(np.float32)
    out, stats = normalize_image(image)
    np.testing.assert_allclose(out[0].mean(), 0, atol=1e-6)
    np.testing.assert_allclose(out[0].std(), 1, atol=1e-5)
    np.testing.assert_array_equal(out[1], 0.0)  # constant channel: std replaced by 1, no division by zero
    assert stats["std"][1] == 1.0


def test_estimate_fov_synthetic_disc():
    h, w = 120, 110
    yy, xx = np.mgrid[0:h, 0:w]
    disc = (yy - 60) ** 2 + (xx - 55) ** 2 <= 50**2
    rng = np.random.default_rng(0)
    red = np.where(disc, 150 + 30 * np.sin(xx / 7.0), 5) + rng.normal(0, 3, (h, w))
    red[55:65, 50:60] = np.where(disc[55:65, 50:60], 20, 5)  # a dark lesion inside must not make a hole
    image = np.stack([red, red * 0.5, red * 0.2]).astype(np.float32)
    fov = estimate_fov(image)
    assert fov.dtype == bool and _iou(fov, disc) > 0.97
    assert fov[60, 55]


def test_estimate_fov_synthetic_fundus(drive_root):
    case = drive_cases(drive_root)[0]
    raw, _ = read_image(case.image)
    gt, _ = read_mask(case.mask)
    assert _iou(estimate_fov(raw), gt) > 0.95
    sample = load_case2d(Case2D(case.id, case.image, case.label, None), estimate_mask=True)
    assert sample["meta"]["mask_estimated"] and _iou(sample["mask"], gt) > 0.95


def test_real_drive_layout_and_fov(shared_data):
    DRIVE = shared_data("DRIVE")
    train, test = drive_cases(DRIVE, "training"), drive_cases(DRIVE, "test")
    assert len(train) == 20 and len(test) == 20
    assert all(c.label is not None and c.mask is not None for c in train + test)
    for case in (train[0], train[7], test[0], test[11]):
        raw, _ = read_image(case.image)
        gt, _ = read_mask(case.mask)
        assert raw.shape == (3, 584, 565)
        assert _iou(estimate_fov(raw), gt) > 0.95, case.id
    sample = load_case2d(train[0], num_classes=2)
    assert 0.10 < sample["label"][sample["mask"]].mean() < 0.16
