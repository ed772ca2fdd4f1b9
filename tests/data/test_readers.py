"""One reader registry for 2D and 3D files (issue 11)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mambaseg.data.errors import DataError
from mambaseg.data.io.readers import array_dims, read_array, read_label_array
from mambaseg.data.io.suffixes import FORMATS, format_of


def test_formats_and_dims(tmp_path):
    assert format_of("a.PNG") == "raster" and format_of("b.nii.gz") == "nifti" and format_of("c.nhdr") == "itk"
    with pytest.raises(DataError, match=r"x\.doc: unsupported file type"):
        format_of(tmp_path / "x.doc")
    assert ".nii.gz" in FORMATS and ".nrrd" in FORMATS and ".gif" in FORMATS
    Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(tmp_path / "rgb.png")
    nib.save(nib.Nifti1Image(np.zeros((5, 6), np.float32), np.eye(4)), tmp_path / "flat.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 1), np.float32), np.eye(4)), tmp_path / "slab.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 4), np.float32), np.eye(4)), tmp_path / "vol.nii.gz")
    assert [array_dims(tmp_path / n) for n in ("rgb.png", "flat.nii.gz", "slab.nii.gz", "vol.nii.gz")] == [2, 2, 2, 3]


def test_read_array_channels_first_for_2d_and_3d(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (5, 6, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    vol = np.arange(5 * 6 * 4, dtype=np.float32).reshape(5, 6, 4)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "vol.nii.gz")
    img, meta = read_array(tmp_path / "rgb.png")
    assert img.shape == (3, 5, 6) and meta["spatial_dims"] == 2 and np.array_equal(img[1], rgb[..., 1])
    arr, meta = read_array(tmp_path / "vol.nii.gz")
    assert arr.shape == (1, 5, 6, 4) and meta["spatial_dims"] == 3 and np.array_equal(arr[0], vol)
    lab = np.zeros((5, 6, 4), np.uint8)
    lab[1:3, 2:4, 1] = 2
    nib.save(nib.Nifti1Image(lab, np.eye(4)), tmp_path / "lab.nii.gz")
    got, meta = read_label_array(tmp_path / "lab.nii.gz", num_classes=3)
    assert got.dtype == np.int64 and meta["spatial_dims"] == 3 and np.array_equal(got, lab)
    with pytest.raises(DataError, match="lab.nii.gz"):
        read_label_array(tmp_path / "lab.nii.gz", num_classes=2)
