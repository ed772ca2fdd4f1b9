"""Reader/writer round-trips and error messages of mambaseg.data.io (raster, png, suffixes)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mambaseg.data.errors import DataError
from mambaseg.data.io.png import OVERLAY_COLOURS, write_overlay, write_png
from mambaseg.data.io.raster import read_image, read_label, read_mask
from mambaseg.data.io.suffixes import SUPPORTED_2D, suffix_of


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff", ".bmp"])
def test_rgb_roundtrip_lossless(tmp_path, rgb, suffix):
    path = tmp_path / f"img{suffix}"
    Image.fromarray(rgb).save(path)
    image, meta = read_image(path)
    assert image.dtype == np.float32 and image.shape == (3, 7, 9)
    np.testing.assert_array_equal(image, np.moveaxis(rgb, -1, 0).astype(np.float32))
    assert meta["path"] == str(path) and meta["shape"] == (3, 7, 9) and meta["spacing"] == (1.0, 1.0)


def test_grey_and_16bit_kept(tmp_path):
    grey = np.arange(63, dtype=np.uint8).reshape(7, 9)
    Image.fromarray(grey).save(tmp_path / "g.png")
    image, _ = read_image(tmp_path / "g.png")
    assert image.shape == (1, 7, 9)
    np.testing.assert_array_equal(image[0], grey)
    deep = (np.arange(63, dtype=np.uint16).reshape(7, 9) * 1000).astype(np.uint16)  # up to 62000 > 255
    Image.fromarray(deep).save(tmp_path / "d.png")
    image, _ = read_image(tmp_path / "d.png")
    np.testing.assert_array_equal(image[0], deep.astype(np.float32))


def test_palette_gif_image_applies_palette_label_uses_indices(tmp_path):
    idx = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    img = Image.fromarray(idx, mode="P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    img.save(tmp_path / "p.gif")
    image, _ = read_image(tmp_path / "p.gif")
    assert image.shape == (3, 2, 3)
    np.testing.assert_array_equal(image[:, 0, 1], [255, 0, 0])
    np.testing.assert_array_equal(image[:, 0, 2], [0, 0, 255])
    label, _ = read_label(tmp_path / "p.gif", num_classes=3)
    np.testing.assert_array_equal(label, idx)


def test_grey_palette_gives_one_channel(tmp_path):
    idx = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    img = Image.fromarray(idx, mode="P")
    img.putpalette([0, 0, 0, 200, 200, 200] + [0] * (256 * 3 - 6))
    img.save(tmp_path / "p.gif")
    image, _ = read_image(tmp_path / "p.gif")
    np.testing.assert_array_equal(image, [[[0, 200], [200, 0]]])


def test_label_0_255_maps_to_0_1_and_mask(tmp_path):
    lab = np.zeros((5, 6), np.uint8)
    lab[1:3, 2:5] = 255
    Image.fromarray(lab).save(tmp_path / "l.gif")
    label, meta = read_label(tmp_path / "l.gif", num_classes=2)
    assert label.dtype == np.int64 and meta["shape"] == (5, 6)
    np.testing.assert_array_equal(label, lab // 255)
    mask, _ = read_mask(tmp_path / "l.gif")
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, lab > 0)


def test_label_out_of_range_names_file_and_values(tmp_path):
    lab = np.array([[0, 1, 7], [3, 1, 0]], dtype=np.uint8)
    Image.fromarray(lab).save(tmp_path / "bad.png")
    with pytest.raises(DataError) as err:
        read_label(tmp_path / "bad.png", num_classes=3)
    msg = str(err.value)
    assert "bad.png" in msg and "3" in msg and "7" in msg and "\n" not in msg
    label, _ = read_label(tmp_path / "bad.png", num_classes=8)  # fine with enough classes
    np.testing.assert_array_equal(label, lab)


def test_colour_label_rejected(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "c.png")
    with pytest.raises(DataError, match="c.png"):
        read_label(tmp_path / "c.png")


def test_nifti_2d_and_singleton_3d(tmp_path):
    arr = np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(arr, np.diag([0.5, 0.7, 2.0, 1.0])), tmp_path / "a.nii.gz")
    image, meta = read_image(tmp_path / "a.nii.gz")
    np.testing.assert_allclose(image[0], arr)
    assert meta["spacing"] == pytest.approx((0.5, 0.7))
    nib.save(nib.Nifti1Image(arr[:, None, :], np.diag([0.5, 3.0, 0.7, 1.0])), tmp_path / "b.nii")
    image, meta = read_image(tmp_path / "b.nii")
    assert image.shape == (1, 6, 5) and meta["spacing"] == pytest.approx((0.5, 0.7))
    np.testing.assert_allclose(image[0], arr)


def test_nifti_3d_volume_rejected(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), np.eye(4)), tmp_path / "v.nii.gz")
    with pytest.raises(DataError, match=r"v\.nii\.gz.*2D"):
        read_image(tmp_path / "v.nii.gz")


def test_nan_rejected(tmp_path):
    arr = np.ones((4, 4), np.float32)
    arr[1, 2] = np.nan
    nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / "n.nii.gz")
    with pytest.raises(DataError, match="NaN"):
        read_image(tmp_path / "n.nii.gz")


def test_missing_empty_unsupported(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "x.xyz").write_bytes(b"abc")
    with pytest.raises(DataError) as err:
        read_image(tmp_path / "x.xyz")
    assert ".xyz" in str(err.value) and all(s in str(err.value) for s in SUPPORTED_2D)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".gif"])
def test_truncated_image_rejected(tmp_path, suffix):
    arr = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = tmp_path / f"t{suffix}"
    Image.fromarray(arr).convert("L" if suffix == ".gif" else "RGB").save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=f"t\\{suffix}: cannot decode"):
        read_image(path)


def test_garbage_bytes_rejected(tmp_path):
    (tmp_path / "g.png").write_bytes(b"not a png at all" * 10)
    with pytest.raises(DataError, match="g.png"):
        read_image(tmp_path / "g.png")


def test_suffix_of():
    assert suffix_of("a/b.NII.GZ") == ".nii.gz" and suffix_of("x.tif") == ".tif" and suffix_of("x.gz") == ".gz"


def test_write_png_roundtrip_and_errors(tmp_path, rgb):
    path = write_png(tmp_path / "sub" / "o.png", rgb)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), rgb)
    write_png(tmp_path / "b.png", np.eye(3, dtype=bool))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "b.png")), np.eye(3) * 255)
    with pytest.raises(ValueError, match="uint8"):
        write_png(tmp_path / "f.png", rgb.astype(np.float32))
    with pytest.raises(ValueError, match=".png"):
        write_png(tmp_path / "f.jpg", rgb)


def test_write_overlay_colours_outcomes(tmp_path):
    image = np.zeros((1, 4, 4), np.float32)  # black image: overlay colour = alpha * colour
    pred = np.zeros((4, 4), int)
    gt = np.zeros((4, 4), int)
    pred[0, 0] = gt[0, 0] = 1  # TP
    pred[1, 1] = 1  # FP
    gt[2, 2] = 1  # FN
    out = write_overlay(tmp_path / "ov.png", image, pred, gt, alpha=1.0)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "ov.png")), out)
    assert tuple(out[0, 0]) == OVERLAY_COLOURS["tp"]
    assert tuple(out[1, 1]) == OVERLAY_COLOURS["fp"]
    assert tuple(out[2, 2]) == OVERLAY_COLOURS["fn"]
    assert tuple(out[3, 3]) == (0, 0, 0)
    out = write_overlay(tmp_path / "p.png", image, pred, alpha=1.0)
    assert tuple(out[1, 1]) == OVERLAY_COLOURS["pred"] and tuple(out[2, 2]) == (0, 0, 0)
    with pytest.raises(ValueError, match="pred shape"):
        write_overlay(tmp_path / "x.png", image, pred[:3])


def test_black_white_palette_in_any_order(tmp_path):
    idx = np.array([[0, 1, 1], [1, 0, 0]], dtype=np.uint8)
    img = Image.fromarray(idx, mode="P")
    img.putpalette([255, 255, 255, 0, 0, 0] + [0] * (256 * 3 - 6))  # index 0 is white: vessels are index 0
    img.save(tmp_path / "bw.gif")
    label, _ = read_label(tmp_path / "bw.gif", num_classes=2)
    np.testing.assert_array_equal(label, 1 - idx)
    mask, _ = read_mask(tmp_path / "bw.gif")
    np.testing.assert_array_equal(mask, idx == 0)
