"""NIfTI / ITK volume I/O: geometry kept on round trips, channel layout, one-line DataErrors naming the file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mambaseg.data.errors import DataError
from mambaseg.data.io.volume import (
    meta_from_json,
    meta_to_json,
    read_nifti,
    read_nifti_label,
    read_volume,
    read_volume_label,
    write_nifti,
)


def oblique_affine() -> np.ndarray:
    """Permuted + flipped axes (axcodes I, L, A), anisotropic spacing (3.0, 0.8, 1.1) and an offset."""
    aff = np.eye(4)
    aff[:3, :3] = np.array([[0, -0.8, 0], [0, 0, 1.1], [-3.0, 0, 0]])
    aff[:3, 3] = [5.0, -7.0, 9.0]
    return aff


def save(path: Path, data: np.ndarray, affine: np.ndarray, qcode: int = 1, scode: int = 2) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.header.set_qform(affine, code=qcode)
    img.header.set_sform(affine, code=scode)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))
    return path


def test_read_image_geometry_and_layout(tmp_path):
    data = np.random.default_rng(0).normal(size=(6, 7, 5)).astype(np.float32)
    path = save(tmp_path / "img.nii.gz", data, oblique_affine())
    image, meta = read_nifti(path)
    assert image.dtype == np.float32 and image.shape == (1, 6, 7, 5)
    np.testing.assert_array_equal(image[0], data)
    np.testing.assert_allclose(meta["affine"], oblique_affine(), atol=1e-6)
    np.testing.assert_allclose(meta["spacing"], [3.0, 0.8, 1.1], atol=1e-6)
    assert meta["orientation"] == ("I", "L", "A")
    assert meta["shape"] == (6, 7, 5) and meta["qform_code"] == 1 and meta["sform_code"] == 2


def test_4d_image_is_channels_first(tmp_path):
    data = np.stack([np.full((4, 5, 3), float(t)) for t in range(3)], axis=-1).astype(np.float32)  # (X, Y, Z, T)
    image, meta = read_nifti(save(tmp_path / "img4d.nii.gz", data, np.eye(4)))
    assert image.shape == (3, 4, 5, 3) and meta["n_channels"] == 3
    assert [float(image[t].mean()) for t in range(3)] == [0.0, 1.0, 2.0]


def test_label_write_back_keeps_reference_geometry(tmp_path):
    ref = save(tmp_path / "ref.nii.gz", np.zeros((6, 7, 5), np.float32), oblique_affine(), qcode=1, scode=2)
    _, meta = read_nifti(ref)
    label = np.random.default_rng(1).integers(0, 4, size=(6, 7, 5))
    # through JSON, as preprocessing props store it
    meta = meta_from_json(json.loads(json.dumps(meta_to_json(meta))))
    out = write_nifti(tmp_path / "pred.nii.gz", label, meta)
    back, bmeta = read_nifti_label(out)
    np.testing.assert_array_equal(back, label)
    assert back.dtype == np.int64
    img = nib.load(str(out))
    assert img.get_data_dtype() == np.uint8
    ref_img = nib.load(str(ref))
    for coded in ("get_qform", "get_sform"):
        m_ref, c_ref = getattr(ref_img.header, coded)(coded=True)
        m_out, c_out = getattr(img.header, coded)(coded=True)
        assert c_out == c_ref
        np.testing.assert_allclose(m_out, m_ref, atol=1e-6)
    np.testing.assert_allclose(img.affine, ref_img.affine, atol=1e-6)


def test_write_rejects_shape_mismatch(tmp_path):
    _, meta = read_nifti(save(tmp_path / "ref.nii.gz", np.zeros((6, 7, 5), np.float32), np.eye(4)))
    with pytest.raises(ValueError, match=r"\(6, 7, 5\)"):
        write_nifti(tmp_path / "bad.nii.gz", np.zeros((6, 7, 4)), meta)


def test_float_stored_labels_become_int64(tmp_path):
    lab = np.zeros((4, 4, 4), np.float32)
    lab[1, 1, 1] = 2.0
    arr, _ = read_nifti_label(save(tmp_path / "lab.nii.gz", lab, np.eye(4)))
    assert arr.dtype == np.int64 and arr[1, 1, 1] == 2 and arr.sum() == 2


def _truncated(tmp_path: Path) -> Path:
    good = save(tmp_path / "good.nii.gz", np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32),
                np.eye(4))
    raw = good.read_bytes()
    bad = tmp_path / "trunc.nii.gz"
    bad.write_bytes(raw[: len(raw) // 2])  # header readable, gzip stream ends early
    return bad


def _zero_byte(tmp_path: Path) -> Path:
    p = tmp_path / "empty.nii.gz"
    p.write_bytes(b"")
    return p


def _two_d(tmp_path: Path) -> Path:
    return save(tmp_path / "flat.nii.gz", np.zeros((5, 6), np.float32), np.eye(4))


def _nan(tmp_path: Path) -> Path:
    data = np.zeros((4, 4, 4), np.float32)
    data[0, 0, 0] = np.nan
    data[1, 0, 0] = np.inf
    return save(tmp_path / "nan.nii.gz", data, np.eye(4))


@pytest.mark.parametrize("make, reader, pattern", [
    (lambda t: t / "missing.nii.gz", read_nifti, "not found"),
    (_zero_byte, read_nifti, "empty"),
    (_truncated, read_nifti, "truncated"),
    (_two_d, read_nifti, "2D"),
    (_nan, read_nifti, "2 NaN/Inf"),
    (lambda t: save(t / "frac.nii.gz", np.full((3, 3, 3), 0.5, np.float32), np.eye(4)), read_nifti_label,
     "non-integer"),
    (lambda t: save(t / "img4d.nii.gz", np.zeros((3, 3, 3, 2), np.float32), np.eye(4)), read_nifti_label, "4D"),
    (lambda t: t / "image.png", read_volume, "unsupported suffix"),
])
def test_errors_are_one_line_and_name_the_file(tmp_path, make, reader, pattern):
    path = make(tmp_path)
    with pytest.raises(DataError, match=pattern) as exc:
        reader(path)
    msg = str(exc.value)
    assert str(path) in msg and "\n" not in msg


def test_itk_reader_matches_nibabel_geometry(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    arr = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)  # ITK array order (Z, Y, X)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 1.3, 2.5))
    img.SetOrigin((10.0, -4.0, 3.0))
    img.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(img, str(tmp_path / "v.mha"))
    sitk.WriteImage(img, str(tmp_path / "v.nii.gz"))  # SimpleITK converts LPS -> RAS itself
    a_itk, m_itk = read_volume(tmp_path / "v.mha")
    a_nib, m_nib = read_volume(tmp_path / "v.nii.gz")
    assert a_itk.shape == (1, 7, 6, 5)
    np.testing.assert_allclose(a_itk, a_nib, atol=1e-6)
    np.testing.assert_allclose(m_itk["affine"], m_nib["affine"], atol=1e-4)
    np.testing.assert_allclose(m_itk["spacing"], [0.7, 1.3, 2.5], atol=1e-6)
    lab_img = sitk.GetImageFromArray((arr > 0).astype(np.uint8))
    lab_img.CopyInformation(img)
    sitk.WriteImage(lab_img, str(tmp_path / "l.nrrd"))
    lab, m_lab = read_volume_label(tmp_path / "l.nrrd")
    assert lab.dtype == np.int64
    np.testing.assert_array_equal(lab, (a_nib[0] > 0).astype(np.int64))
    np.testing.assert_allclose(m_lab["affine"], m_nib["affine"], atol=1e-4)


def test_itk_suffix_without_simpleitk_is_a_clear_error(tmp_path, monkeypatch):
    p = tmp_path / "v.nrrd"
    p.write_bytes(b"NRRD0004\n")
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # import SimpleITK -> ImportError
    with pytest.raises(DataError, match="SimpleITK"):
        read_volume(p)


def test_real_hippocampus_case(shared_data):
    HIPPO = shared_data("Task04_Hippocampus")
    image, meta = read_nifti(HIPPO / "imagesTr" / "hippocampus_001.nii.gz")
    label, lmeta = read_nifti_label(HIPPO / "labelsTr" / "hippocampus_001.nii.gz")
    assert image.shape[1:] == label.shape and image.shape[0] == 1
    assert set(np.unique(label).tolist()) == {0, 1, 2}
    np.testing.assert_allclose(meta["spacing"], [1, 1, 1])
    np.testing.assert_allclose(meta["affine"], lmeta["affine"])
