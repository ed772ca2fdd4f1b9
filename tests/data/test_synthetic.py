"""Synthetic fundus vessel images and the synthetic DRIVE folder."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from mambaseg.data.cases import detect_layout
from mambaseg.data.io.raster import read_label, read_mask
from mambaseg.data.layouts.drive import drive_cases
from mambaseg.data.layouts.load2d import load_case2d
from mambaseg.data.synthetic import make_vessel_image, write_synthetic_drive


def test_shapes_dtypes_and_determinism():
    image, label, fov = make_vessel_image((96, 80), np.random.default_rng(4))
    assert image.shape == (96, 80, 3) and image.dtype == np.uint8
    assert label.shape == (96, 80) and label.dtype == np.uint8 and set(np.unique(label)) == {0, 1}
    assert fov.shape == (96, 80) and fov.dtype == bool
    again = make_vessel_image((96, 80), np.random.default_rng(4))
    for a, b in zip((image, label, fov), again):
        np.testing.assert_array_equal(a, b)
    other = make_vessel_image((96, 80), 5)
    assert not np.array_equal(other[1], label)


@pytest.mark.parametrize("size", [(128, 128), (256, 240)])
def test_vessel_fraction_is_drive_like(size):
    for seed in range(4):
        _, label, fov = make_vessel_image(size, seed)
        assert not label[~fov].any()
        frac = label[fov].mean()
        assert 0.08 <= frac <= 0.14, (size, seed, frac)


def test_vessels_form_trees_and_are_darker_in_green():
    image, label, fov = make_vessel_image((256, 256), 1)
    vessel, back = label.astype(bool), fov & ~ndi.binary_dilation(label.astype(bool), iterations=3)
    drop = image[back].mean(axis=0) - image[vessel].mean(axis=0)  # per channel, background minus vessel
    assert drop[1] > 0 and drop[1] > drop[0] and drop[1] > drop[2]  # green shows the vessels best
    assert image[~fov].max() < 30 and image[fov][:, 0].mean() > 100  # dark outside, red-orange inside
    lab, n = ndi.label(vessel, structure=np.ones((3, 3)))
    sizes = ndi.sum_labels(vessel, lab, index=np.arange(1, n + 1))
    assert sizes.max() > 0.3 * vessel.sum()  # one big connected tree rather than scattered specks


def test_bad_size():
    with pytest.raises(ValueError, match="size"):
        make_vessel_image((16, 64), 0)


def test_write_synthetic_drive(tmp_path):
    root = write_synthetic_drive(tmp_path / "syn", n_train=2, n_test=1, size=(64, 64), seed=7)
    assert detect_layout(root) == "drive"
    assert (root / "training/images/21_training.tif").is_file() and (root / "test/images/01_test.tif").is_file()
    case = drive_cases(root)[1]
    label, _ = read_label(case.label, num_classes=2)
    mask, _ = read_mask(case.mask)
    assert set(np.unique(np.asarray(Image.open(case.label)))) == {0, 255}
    image, expect_label, expect_fov = make_vessel_image((64, 64), np.random.default_rng([7, 0, 1]))
    np.testing.assert_array_equal(label, expect_label)
    np.testing.assert_array_equal(mask, expect_fov)
    np.testing.assert_array_equal(np.asarray(Image.open(case.image)), image)
    sample = load_case2d(case)
    assert sample["image"].shape == (3, 64, 64)
    # deterministic per seed: a second write gives identical files
    root2 = write_synthetic_drive(tmp_path / "syn2", n_train=2, n_test=1, size=(64, 64), seed=7)
    for f in root.rglob("*.*"):
        assert f.read_bytes() == (root2 / f.relative_to(root)).read_bytes()


def test_dimension_is_a_parameter(tmp_path):
    from mambaseg.data.synthetic import make_phantom, make_synthetic, write_synthetic

    img3, lab3 = make_synthetic(3, (12, 10, 8), rng=5)
    ref3 = make_phantom((12, 10, 8), rng=5)
    assert np.array_equal(img3, ref3[0]) and np.array_equal(lab3, ref3[1])
    img2, lab2 = make_synthetic(2, (64, 64), rng=5)
    ref2 = make_vessel_image((64, 64), np.random.default_rng(5))
    assert np.array_equal(img2, ref2[0]) and np.array_equal(lab2, ref2[1])
    assert (write_synthetic(tmp_path / "v", 3, n_cases=1, shape=(8, 8, 8)) / "dataset.json").is_file()
    assert (write_synthetic(tmp_path / "d", 2, n_train=1, n_test=0, size=(64, 64)) / "training" / "images").is_dir()
    with pytest.raises(ValueError, match="spatial_dims"):
        make_synthetic(4)
