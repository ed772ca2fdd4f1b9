"""NIfTI (and ITK) headers are untrusted: shapes, datatypes, pixdim and affines are checked before any voxel is read,
so a tiny file declaring a huge volume is refused quickly, with one line naming the file, and without allocating."""

from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mambaseg.cli import main
from mambaseg.data.errors import DataError
from mambaseg.data.io.headers import check_resample_size, resampled_shape, volume_header
from mambaseg.data.io.volume import read_volume, read_volume_label
from mambaseg.data.synthetic import write_phantom_msd
from mambaseg.utils.limits import max_volume_bytes
from tests.conftest import tiny_3d_yaml


def craft(path: Path, shape=(4, 4, 4), dtype=np.float32, pixdim=None, sform=None, qform_nan=False, nifti2=False,
          data_bytes: int | None = None) -> Path:
    """A NIfTI file whose header says what we want, followed by ``data_bytes`` zero bytes (default: 64)."""
    cls = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    hdr = cls(np.zeros((2, 2, 2), np.float32), np.eye(4)).header
    hdr["dim"][0] = len(shape)
    hdr["dim"][1:1 + len(shape)] = shape
    hdr.set_data_dtype(dtype)
    if pixdim is not None:
        hdr["pixdim"][1:4] = pixdim
    if sform is not None:
        hdr.set_sform(np.asarray(sform), code=1)
    if qform_nan:
        hdr["quatern_b"] = np.nan
        hdr["qform_code"] = 1
    block = hdr.binaryblock + b"\0" * (int(hdr["vox_offset"]) - len(hdr.binaryblock)) + b"\0" * (data_bytes or 64)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(block) if path.name.endswith(".gz") else block)
    return path


def _aff(**cols) -> np.ndarray:
    a = np.eye(4)
    for i, v in cols.items():
        a[int(i[1]), int(i[1])] = v
    return a


BAD = {  # name -> (craft kwargs, text expected in the message)
    "huge_gz.nii.gz": ({"shape": (1024, 1024, 512)}, "2.0 GiB"),
    "huge2_gz.nii.gz": ({"shape": (2048, 2048, 1024)}, "GiB"),
    "nifti2_huge.nii": ({"shape": (100000, 100000, 100000), "nifti2": True}, "limit"),
    "truncated.nii": ({"shape": (64, 64, 64)}, "truncated"),
    "dim0.nii.gz": ({"shape": (0, 5, 5)}, "(0, 5, 5)"),
    "pixdim0.nii.gz": ({"pixdim": (0.0, 1.0, 1.0)}, "pixdim"),
    "pixdim_tiny.nii.gz": ({"pixdim": (1e-6, 1.0, 1.0)}, "pixdim"),
    "pixdim_nan.nii.gz": ({"pixdim": (np.nan, 1.0, 1.0)}, "pixdim"),
    "affine_zero.nii.gz": ({"sform": _aff(c0=0.0)}, "affine voxel sizes"),
    "affine_1e6.nii.gz": ({"sform": _aff(c0=1e6), "pixdim": (1e6, 1, 1)}, "voxel sizes"),
    "affine_nan.nii.gz": ({"sform": _aff(c0=np.nan)}, "NaN/Inf"),
    "affine_inf.nii.gz": ({"sform": _aff(c1=np.inf)}, "NaN/Inf"),
    "qform_nan.nii.gz": ({"qform_nan": True}, "qform"),
    "complex.nii.gz": ({"dtype": np.complex64}, "complex64"),
    "rgb.nii.gz": ({"dtype": "RGB"}, "RGB"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_header_refused_before_allocation(tmp_path, name):
    kwargs, needle = BAD[name]
    path = craft(tmp_path / name, **kwargs)
    for reader in (read_volume, read_volume_label, volume_header):
        tracemalloc.start()
        try:
            with pytest.raises(DataError) as ei:
                reader(path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        msg = str(ei.value)
        assert name in msg and needle in msg and "\n" not in msg, msg
        assert peak < 20 * 2**20, f"{reader.__name__} allocated {peak} bytes before refusing {name}"


def test_good_header_passes_and_reports_geometry(tmp_path):
    path = tmp_path / "ok.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((5, 6, 7), np.float32), np.diag([0.8, 0.9, 2.5, 1.0])), path)
    head = volume_header(path)
    assert head["shape"] == (5, 6, 7) and head["n_channels"] == 1
    assert np.allclose(head["spacing"], [0.8, 0.9, 2.5])
    image, meta = read_volume(path)
    assert image.shape == (1, 5, 6, 7) and np.allclose(meta["spacing"], head["spacing"])
    lab = tmp_path / "lab.nii"
    nib.save(nib.Nifti1Image(np.ones((5, 6, 7), np.uint8), np.diag([0.8, 0.9, 2.5, 1.0])), lab)
    assert read_volume_label(lab)[0].shape == (5, 6, 7)


def test_cap_from_environment(tmp_path, monkeypatch):
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((16, 16, 16), np.uint8), np.eye(4)), path)  # 16 KiB as float32
    monkeypatch.setenv("MAMBASEG_MAX_VOLUME_BYTES", "8K")
    assert max_volume_bytes() == 8192
    with pytest.raises(DataError, match=r"v\.nii\.gz.*16\.0 KiB.*8\.0 KiB limit"):
        read_volume(path)
    monkeypatch.setenv("MAMBASEG_MAX_VOLUME_BYTES", "16384")
    assert read_volume(path)[0].shape == (1, 16, 16, 16)
    with pytest.raises(DataError, match=r"label map \(read as int64\) 16x16x16 x 8 bytes = 32\.0 KiB"):
        read_volume_label(path)  # the int64 array a label read makes
    monkeypatch.setenv("MAMBASEG_MAX_VOLUME_BYTES", "32K")
    assert read_volume_label(path)[0].shape == (16, 16, 16)
    monkeypatch.setenv("MAMBASEG_MAX_VOLUME_BYTES", "lots")
    with pytest.raises(ValueError, match="MAMBASEG_MAX_VOLUME_BYTES"):
        max_volume_bytes()
    monkeypatch.delenv("MAMBASEG_MAX_VOLUME_BYTES")
    assert max_volume_bytes() == 2 * 1024**3


def test_resample_size_computed_before_resampling(tmp_path):
    aff = np.diag([2.0, 1.0, 100.0, 1.0])
    assert resampled_shape((10, 20, 30), aff, (1.0, 1.0, 1.0)) == (20, 20, 3000)
    flipped = np.array([[0, -1.0, 0, 0], [2.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])  # voxel i -> A, j -> R
    assert resampled_shape((10, 20, 30), flipped, (1.0, 1.0, 1.0)) == (20, 20, 30)
    assert check_resample_size("a.nii", (10, 20, 30), aff, (1.0, 1.0, 1.0)) == (20, 20, 3000)
    msg = r"big\.nii: resampling its 100x100x100 voxels .* 100000x100x1000 .* 37\.3 GiB"
    with pytest.raises(DataError, match=msg) as ei:
        check_resample_size("big.nii", (100, 100, 100), np.diag([1e3, 1.0, 1.0, 1.0]), (1.0, 1.0, 0.1), 1)
    assert "\n" not in str(ei.value)


def test_itk_header_checks(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    img = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.float32))
    img.SetSpacing((1e-6, 1.0, 1.0))
    sitk.WriteImage(img, str(tmp_path / "tiny.nrrd"))
    with pytest.raises(DataError, match=r"tiny\.nrrd: spacing"):
        read_volume(tmp_path / "tiny.nrrd")
    # (MetaImage stores complex voxels as 2-component vectors: they read as 2 channels, not as complex)
    ok = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.float32))
    sitk.WriteImage(ok, str(tmp_path / "ok.mha"))
    assert volume_header(tmp_path / "ok.mha")["shape"] == (6, 5, 4)


@pytest.fixture(scope="module")
def run3d(tmp_path_factory):
    root = tmp_path_factory.mktemp("hdr3d")
    data = write_phantom_msd(root / "task", n_cases=2, shape=(16, 18, 16))
    cfg = root / "cfg.yaml"
    cfg.write_text(tiny_3d_yaml(data, "data.val_fraction=0.0"))
    run = root / "run"
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0
    return run


@pytest.mark.parametrize("name", ["huge_gz.nii.gz", "nifti2_huge.nii", "dim0.nii.gz", "pixdim0.nii.gz",
                                  "affine_nan.nii.gz", "complex.nii.gz", "rgb.nii.gz"])
def test_predict_cli_refuses_bad_header(run3d, tmp_path, capsys, name):
    kwargs, _ = BAD[name]
    inp = tmp_path / "in"
    good = inp / "good.nii.gz"
    inp.mkdir()
    nib.save(nib.Nifti1Image(np.ones((16, 16, 16), np.float32), np.eye(4)), good)
    craft(inp / name, **kwargs)
    out = tmp_path / "out"
    code = main(["predict", "-m", str(run3d), "-i", str(inp), "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1 and name in err, err
    assert not out.exists() or not any(out.iterdir())  # nothing written, not even the good case


def test_predict_cli_refuses_huge_resampling(run3d, tmp_path, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    # 1000 mm voxels are a legal header, but at the model's ~1 mm spacing they would be 16000^2 x 16 voxels
    nib.save(nib.Nifti1Image(np.ones((16, 16, 16), np.float32), np.diag([1000.0, 1000.0, 1.0, 1.0])),
             inp / "coarse.nii.gz")
    code = main(["predict", "-m", str(run3d), "-i", str(inp), "-o", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "coarse.nii.gz: resampling" in err and "limit" in err, err


# ------------------------------------------------------------------------- training data: labels, dataset.json, headers
def _train_err(tmp_path: Path, capsys, data: Path, num_classes: int = 3) -> str:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(tiny_3d_yaml(data, "data.val_fraction=0.0", f"data.num_classes={num_classes}"))
    run = tmp_path / "run"
    code = main(["train", str(cfg), "--out", str(run), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert not (run / "checkpoint_last.pt").exists()  # refused before training started
    return err


def _relabel(path: Path, values: dict[tuple[int, int, int], float], dtype=None) -> None:
    img = nib.load(path)
    lab = np.asarray(img.dataobj)
    lab = lab.astype(dtype or lab.dtype)
    for idx, v in values.items():
        lab[idx] = v
    nib.save(nib.Nifti1Image(lab, img.affine), path)


@pytest.fixture
def phantom(tmp_path):
    return write_phantom_msd(tmp_path / "task", n_cases=2, shape=(16, 18, 16))


def test_label_at_or_above_num_classes_refused(tmp_path, capsys, phantom):
    lab = sorted((phantom / "labelsTr").glob("*.nii.gz"))[1]
    _relabel(lab, {(1, 1, 1): 5})
    err = _train_err(tmp_path, capsys, phantom)
    assert lab.name in err and "[0, 1, 2, 5]" in err and "include [5]" in err and "num_classes=3" in err, err


def test_three_class_labels_with_num_classes_2_refused(tmp_path, capsys, phantom):
    err = _train_err(tmp_path, capsys, phantom, num_classes=2)
    assert "labelsTr" in err and "[0, 1, 2]" in err and "include [2]" in err and "num_classes=2" in err, err


def test_negative_label_refused(tmp_path, capsys, phantom):
    lab = min((phantom / "labelsTr").glob("*.nii.gz"))
    _relabel(lab, {(2, 2, 2): -1}, np.int16)
    err = _train_err(tmp_path, capsys, phantom)
    assert lab.name in err and "negative values ([-1])" in err and "num_classes=3" in err, err


def test_non_integer_label_refused(tmp_path, capsys, phantom):
    lab = min((phantom / "labelsTr").glob("*.nii.gz"))
    _relabel(lab, {(2, 2, 2): 0.5}, np.float32)
    err = _train_err(tmp_path, capsys, phantom)
    assert lab.name in err and "non-integer values ([0.5])" in err and "num_classes=3" in err, err


def test_cached_labels_checked_against_num_classes(tmp_path, capsys, phantom):
    """With a warm preprocessing cache (filled under num_classes 3) a num_classes 2 run is still refused."""
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    cfg = tmp_path / "ok.yaml"
    cfg.write_text(tiny_3d_yaml(phantom, "data.val_fraction=0.0", cache))
    assert main(["train", str(cfg), "--out", str(tmp_path / "r1"), "--no-progress"]) == 0
    assert len(list((tmp_path / "cache").rglob("*.label.npy"))) == 2  # cached (memory-mappable entries)
    capsys.readouterr()
    cfg.write_text(tiny_3d_yaml(phantom, "data.val_fraction=0.0", cache, "data.num_classes=2"))
    code = main(["train", str(cfg), "--out", str(tmp_path / "r2"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "num_classes=2" in err and "labelsTr" in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("field,value,needle", [
    ("modality", {"a": "MRI"}, "'modality' key 'a'"),
    ("modality", {"0": "T1", "2": "T2"}, "are not 0..1"),
    ("labels", {"0": "background", "x": "tumour"}, "'labels' key 'x'"),
    ("labels", {"0": "background", "1.5": "tumour"}, "'labels' key '1.5'"),
    ("labels", {"background": 0, "tumour": "one"}, "'labels' key 'tumour'"),
    ("labels", {"background": 0, "tumour": 1.5}, "'labels' entry 'tumour'"),
    ("labels", {"background": 0, "WT": [1, "x"]}, "region 'WT'"),
    ("labels", [], "non-empty mapping"),
])
def test_dataset_json_bad_keys(tmp_path, capsys, phantom, field, value, needle):
    import json

    ds = json.loads((phantom / "dataset.json").read_text())
    ds[field] = value
    (phantom / "dataset.json").write_text(json.dumps(ds))
    err = _train_err(tmp_path, capsys, phantom)
    assert "dataset.json" in err and needle in err, err


def test_training_case_with_pixdim_0_refused(tmp_path, capsys, phantom):
    img_file = sorted((phantom / "imagesTr").glob("*.nii.gz"))[1]
    raw = gzip.decompress(img_file.read_bytes())
    hdr = nib.Nifti1Header.from_fileobj(__import__("io").BytesIO(raw), check=False)
    hdr["pixdim"][2] = 0.0
    img_file.write_bytes(gzip.compress(hdr.binaryblock + raw[len(hdr.binaryblock):]))
    err = _train_err(tmp_path, capsys, phantom)
    assert img_file.name in err and "pixdim" in err, err


def test_training_case_with_huge_resampling_refused(tmp_path, capsys, monkeypatch):
    phantom = write_phantom_msd(tmp_path / "task3", n_cases=3, shape=(16, 18, 16))
    img_file = sorted((phantom / "imagesTr").glob("*.nii.gz"))[1]
    lab_file = phantom / "labelsTr" / img_file.name
    for f in (img_file, lab_file):  # one case at 300x coarser spacing than the others (median = target)
        img = nib.load(f)
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine @ np.diag([300.0, 300.0, 1.0, 1.0])), f)
    monkeypatch.setenv("MAMBASEG_MAX_VOLUME_BYTES", "256M")
    err = _train_err(tmp_path, capsys, phantom)
    assert "resampling" in err and "limit" in err and img_file.name in err, err


def test_num_classes_checked_after_label_map_and_for_npz(tmp_path):
    import dataclasses

    from mambaseg.data.layouts.brats import brats_cases
    from mambaseg.data.layouts.synapse import synapse_cases
    from mambaseg.data.load3d import load_case3d

    case_dir = tmp_path / "brats" / "BraTS2021_00001"
    case_dir.mkdir(parents=True)
    for m in ("t1", "t1ce", "t2", "flair"):
        nib.save(nib.Nifti1Image(np.ones((6, 6, 6), np.float32), np.eye(4)), case_dir / f"{case_dir.name}_{m}.nii.gz")
    seg = np.zeros((6, 6, 6), np.uint8)
    seg[1, 1, 1], seg[2, 2, 2] = 4, 2  # BraTS 2020/21 label 4 is remapped to 3
    nib.save(nib.Nifti1Image(seg, np.eye(4)), case_dir / f"{case_dir.name}_seg.nii.gz")
    (case,) = brats_cases(tmp_path / "brats")
    ok = load_case3d(dataclasses.replace(case, extra={**case.extra, "num_classes": 4}))
    assert set(np.unique(ok["label"]).tolist()) == {0, 2, 3}
    with pytest.raises(DataError, match=r"_seg\.nii\.gz: label values \[0, 2, 3\] include \[3\] .*num_classes=3"):
        load_case3d(dataclasses.replace(case, extra={**case.extra, "num_classes": 3}))

    npz = tmp_path / "syn" / "train_npz"
    npz.mkdir(parents=True)
    for z in range(2):
        np.savez(npz / f"case0005_slice{z:03d}.npz", image=np.zeros((4, 4), np.float32),
                 label=np.full((4, 4), 9.0 if z else 0.0, np.float32))
    (syn,) = synapse_cases(tmp_path / "syn", split="train")
    with pytest.raises(DataError, match=r"include \[9\] .*num_classes=9"):
        load_case3d(dataclasses.replace(syn, extra={"num_classes": 9}), check_labels=False)
    np.savez(npz / "case0005_slice001.npz", image=np.zeros((4, 4), np.float32), label=np.full((4, 4), 0.5))
    with pytest.raises(DataError, match="non-integer"):
        load_case3d(dataclasses.replace(syn, extra={"num_classes": 9}), check_labels=False)


@pytest.mark.parametrize("content,needle", [
    ('{"labels": {"0": "background", "x": "Anterior"}}', "'labels' key 'x'"),
    ('{"labels": {"background": 0, "Anterior": "one"}}', "'labels' key 'Anterior'"),
    ('{"labels": ', "invalid JSON"),
])
def test_evaluate_3d_bad_dataset_json_named(tmp_path, capsys, phantom, content, needle):
    import shutil

    pred = tmp_path / "pred"
    shutil.copytree(phantom / "labelsTr", pred)
    (phantom / "dataset.json").write_text(content)
    code = main(["evaluate", "--pred", str(pred), "--gt", str(phantom / "labelsTr"), "-o", str(tmp_path / "ev")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "dataset.json" in err and needle in err, err
    assert not (tmp_path / "ev").exists()


def test_2d_nifti_picture_header_checked_before_reading(tmp_path):
    """A 2D NIfTI read as a picture (predict/evaluate 2D) gets the size/datatype checks before its data is read."""
    import struct

    from mambaseg.data.io.raster import read_image

    good = tmp_path / "ok.nii"
    nib.save(nib.Nifti1Image(np.arange(12, dtype=np.float32).reshape(3, 4), np.eye(4)), good)
    arr, _ = read_image(good)
    assert arr.size == 12
    bomb = tmp_path / "bomb.nii"
    raw = bytearray(good.read_bytes())
    raw[42:56] = struct.pack("<7h", 30000, 30000, 1, 1, 1, 1, 1)  # dim[1..7]: 30000 x 30000 (3.4 GiB), no data
    bomb.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"bomb\.nii.*(exceeds|above|cap|header declares)"):
        read_image(bomb)
