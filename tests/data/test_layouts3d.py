"""3D layouts: MSD / nnU-Net raw, BraTS 2023 + 2020/21, Synapse npz/h5/BTCV, checks in load_case3d, seeded split."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mambaseg.data.cases import detect_layout
from mambaseg.data.errors import DataError
from mambaseg.data.layouts.brats import brats_region_masks
from mambaseg.data.layouts.detect3d import list_cases3d
from mambaseg.data.layouts.synapse import BTCV_TO_SYNAPSE8, SYNAPSE_TEST_CASES, SYNAPSE_TRAIN_CASES
from mambaseg.data.load3d import load_case3d

SHAPE = (6, 5, 4)


def nii(path: Path, data, affine=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
    return path


def label_volume(values=(0, 1, 2)) -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    for i, v in enumerate(values):
        lab[i] = v
    return lab


def msd_root(tmp_path: Path, n_mod: int = 1, declared_mod: int | None = None, labels=None) -> Path:
    root = tmp_path / "Task99_Toy"
    declared_mod = n_mod if declared_mod is None else declared_mod
    training = []
    for cid in ("toy_001", "toy_002"):
        img = np.random.default_rng(0).normal(size=SHAPE + ((n_mod,) if n_mod > 1 else ())).astype(np.float32)
        nii(root / "imagesTr" / f"{cid}.nii.gz", img)
        nii(root / "labelsTr" / f"{cid}.nii.gz", label_volume())
        training.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
    (root / "imagesTr" / "._toy_001.nii.gz").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork
    ds = {"name": "Toy", "modality": {str(i): f"M{i}" for i in range(declared_mod)},
          "labels": labels or {"0": "background", "1": "a", "2": "b"}, "numTraining": 2, "training": training}
    (root / "dataset.json").write_text(json.dumps(ds))
    return root


def test_msd_layout_ignores_macos_files_and_loads(tmp_path):
    root = msd_root(tmp_path)
    assert detect_layout(root) == "msd"
    cases = list_cases3d(root)
    assert [c.case_id for c in cases] == ["toy_001", "toy_002"]
    d = load_case3d(cases[0])
    assert d["image"].shape == (1, *SHAPE) and d["image"].dtype == np.float32
    assert d["label"].dtype == np.int64 and d["label"].shape == SHAPE
    assert d["meta"]["channel_names"] == ["M0"]


def test_msd_multichannel_4d_image(tmp_path):
    d = load_case3d(list_cases3d(msd_root(tmp_path, n_mod=3))[0])
    assert d["image"].shape == (3, *SHAPE)


def test_wrong_number_of_modalities(tmp_path):
    case = list_cases3d(msd_root(tmp_path, n_mod=2, declared_mod=3))[0]
    with pytest.raises(DataError, match=r"2 channel\(s\).*expected 3"):
        load_case3d(case)


def test_undeclared_label_value_names_the_label_file(tmp_path):
    case = list_cases3d(msd_root(tmp_path, labels={"0": "background", "1": "a"}))[0]
    with pytest.raises(DataError, match=r"label values \[2\] not declared") as exc:
        load_case3d(case)
    assert str(case.label) in str(exc.value)


def nnunet_root(tmp_path: Path) -> Path:
    root = tmp_path / "Dataset042_Toy"
    for cid in ("a", "b"):
        for ch in range(2):
            nii(root / "imagesTr" / f"{cid}_{ch:04d}.nii.gz", np.full(SHAPE, 10.0 * ch + 1, np.float32))
        nii(root / "labelsTr" / f"{cid}.nii.gz", label_volume((0, 1, 1)))
    (root / "imagesTr" / "._a_0000.nii.gz").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork
    (root / "labelsTr" / "._a.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1", "1": "T2"}, "labels": {"background": 0, "tumour": 1, "whole": [1]},
        "numTraining": 2, "file_ending": ".nii.gz"}))
    return root


def test_nnunet_v2_channels_in_suffix_order_ignoring_macos_files(tmp_path):
    root = nnunet_root(tmp_path)
    assert detect_layout(root) == "nnunet"
    cases = list_cases3d(root)
    assert [c.case_id for c in cases] == ["a", "b"]
    assert [p.name for p in cases[0].images] == ["a_0000.nii.gz", "a_0001.nii.gz"]
    d = load_case3d(cases[0])
    assert d["image"][:, 0, 0, 0].tolist() == [1.0, 11.0]
    assert d["meta"]["channel_names"] == ["T1", "T2"]


def test_msd_json_with_nnunet_channel_files(tmp_path):
    """MSD dataset.json listing CASE.nii.gz while the folder holds CASE_0000.nii.gz (nnU-Net converted)."""
    root = nnunet_root(tmp_path)
    (root / "dataset.json").write_text(json.dumps({
        "modality": {"0": "T1", "1": "T2"}, "labels": {"0": "background", "1": "tumour"},
        "training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}]}))
    (case,) = list_cases3d(root)
    assert load_case3d(case)["image"].shape == (2, *SHAPE)


def test_modality_affine_mismatch_names_both_files(tmp_path):
    root = nnunet_root(tmp_path)
    shifted = np.eye(4)
    shifted[0, 3] = 5.0
    bad = nii(root / "imagesTr" / "a_0001.nii.gz", np.ones(SHAPE, np.float32), shifted)
    case = list_cases3d(root)[0]
    with pytest.raises(DataError, match="geometry mismatch") as exc:
        load_case3d(case)
    assert str(bad) in str(exc.value) and "a_0000.nii.gz" in str(exc.value)


def test_label_shape_mismatch_names_both_files(tmp_path):
    root = nnunet_root(tmp_path)
    nii(root / "labelsTr" / "b.nii.gz", np.zeros((6, 5, 3), np.uint8))
    case = list_cases3d(root)[1]
    with pytest.raises(DataError, match="does not match") as exc:
        load_case3d(case)
    assert "b.nii.gz" in str(exc.value) and "b_0000.nii.gz" in str(exc.value)


BRATS_SCHEMES = {
    "2023": ("BraTS-GLI-00001-000", "-", {"t1n": 3, "t1c": 4, "t2w": 1, "t2f": 2}, "seg"),
    "2021": ("BraTS2021_00001", "_", {"t1": 3, "t1ce": 4, "t2": 1, "flair": 2}, "seg"),
}


def brats_root(tmp_path: Path, scheme: str, skip: str | None = None) -> Path:
    cid, sep, mods, seg = BRATS_SCHEMES[scheme]
    root = tmp_path / f"brats{scheme}"
    for mod, val in mods.items():
        if mod != skip:
            nii(root / cid / f"{cid}{sep}{mod}.nii.gz", np.full(SHAPE, float(val), np.float32))
    lab = label_volume((0, 1, 2, 4 if scheme == "2021" else 3))
    nii(root / cid / f"{cid}{sep}{seg}.nii.gz", lab)
    return root


@pytest.mark.parametrize("scheme", ["2023", "2021"])
def test_brats_channel_order_and_labels(tmp_path, scheme):
    root = brats_root(tmp_path, scheme)
    assert detect_layout(root) == "brats"
    (case,) = list_cases3d(root)
    d = load_case3d(case)
    # constants 1..4 were written to t2w, t2f, t1n, t1c (or t2, flair, t1, t1ce): order must be [T2w, FLAIR, T1n, T1c]
    assert d["image"][:, 0, 0, 0].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert sorted(np.unique(d["label"]).tolist()) == [0, 1, 2, 3]  # 2021's 4 -> 3
    assert (d["label"][3] == 3).all()


@pytest.mark.parametrize("scheme, missing", [("2023", "t1c"), ("2021", "flair")])
def test_brats_missing_modality(tmp_path, scheme, missing):
    root = brats_root(tmp_path, scheme, skip=missing)
    cid = BRATS_SCHEMES[scheme][0]
    with pytest.raises(DataError, match=f"{cid}.*{missing}.nii.gz"):
        list_cases3d(root)


def test_brats_region_masks():
    lab = np.array([0, 1, 2, 3]).reshape(4, 1, 1)
    wt, tc, et = brats_region_masks(lab)
    assert wt.ravel().tolist() == [False, True, True, True]
    assert tc.ravel().tolist() == [False, True, False, True]
    assert et.ravel().tolist() == [False, False, False, True]


def test_synapse_h5_volume(tmp_path):
    h5py = pytest.importorskip("h5py")
    image = np.random.default_rng(0).random((3, 8, 9)).astype(np.float32)  # (Z, H, W) as in TransUNet's h5
    label = np.zeros((3, 8, 9), np.float32)
    label[1, 2:4, 3:5] = 7
    (tmp_path / "test_vol_h5").mkdir()
    with h5py.File(tmp_path / "test_vol_h5" / "case0001.npy.h5", "w") as f:
        f.create_dataset("image", data=image)
        f.create_dataset("label", data=label)
    assert detect_layout(tmp_path) == "synapse"
    (case,) = list_cases3d(tmp_path, split="test")
    assert case.case_id == "case0001"
    d = load_case3d(case)
    assert d["image"].shape == (1, 8, 9, 3)
    np.testing.assert_array_equal(d["image"][0, :, :, 2], image[2])
    assert d["label"].dtype == np.int64 and d["label"][2, 3, 1] == 7


def test_synapse_npz_slices_stack_in_numeric_order(tmp_path):
    d = tmp_path / "train_npz"
    d.mkdir()
    for z in (0, 2, 10, 1):
        np.savez(d / f"case0005_slice{z:03d}.npz", image=np.full((4, 4), float(z), np.float32),
                 label=np.full((4, 4), z % 9, np.uint8))
    (case,) = list_cases3d(tmp_path, split="train")
    assert list_cases3d(tmp_path, "synapse_npz", split="all") == [case]
    out = load_case3d(case)
    assert out["image"].shape == (1, 4, 4, 4)
    assert out["image"][0, 0, 0].tolist() == [0.0, 1.0, 2.0, 10.0]
    assert out["label"][0, 0].tolist() == [0, 1, 2, 1]


def test_btcv_remap_to_transunet_8_organs_and_split(tmp_path):
    raw = np.arange(14, dtype=np.uint8).reshape(14, 1, 1).repeat(2, 1).repeat(2, 2)  # BTCV labels 0..13
    for n in (1, 5):
        nii(tmp_path / "RawData" / "Training" / "img" / f"img{n:04d}.nii.gz", np.zeros(raw.shape, np.float32))
        nii(tmp_path / "RawData" / "Training" / "label" / f"label{n:04d}.nii.gz", raw)
    assert detect_layout(tmp_path) == "btcv"
    assert [c.case_id for c in list_cases3d(tmp_path, "btcv", split="train")] == ["case0005"]
    (case,) = list_cases3d(tmp_path, "btcv", split="test")
    assert case.case_id == "case0001"
    lab = load_case3d(case)["label"][:, 0, 0]
    expected = [0] * 14
    for btcv, synapse in {8: 1, 4: 2, 3: 3, 2: 4, 6: 5, 11: 6, 1: 7, 7: 8}.items():
        expected[btcv] = synapse
    assert BTCV_TO_SYNAPSE8 == {8: 1, 4: 2, 3: 3, 2: 4, 6: 5, 11: 6, 1: 7, 7: 8}
    assert lab.tolist() == expected  # esophagus, IVC, veins, adrenals -> background


def test_synapse_split_lists():
    assert len(SYNAPSE_TRAIN_CASES) == 18 and len(SYNAPSE_TEST_CASES) == 12
    assert not set(SYNAPSE_TRAIN_CASES) & set(SYNAPSE_TEST_CASES)
    all30 = {f"case{n:04d}" for n in [*range(1, 11), *range(21, 41)]}
    assert set(SYNAPSE_TRAIN_CASES) | set(SYNAPSE_TEST_CASES) == all30


def test_split_ids_seeded_and_order_independent():
    """The one split function of 2D and 3D training (data.splits)."""
    from mambaseg.data.splits import split_ids

    ids = [f"c{i:02d}" for i in range(20)]
    train, val = split_ids(ids, 0.25, seed=7)
    assert len(val) == 5 and len(train) == 15 and not set(train) & set(val) and set(train) | set(val) == set(ids)
    assert split_ids(list(reversed(ids)), 0.25, seed=7) == (train, val)
    assert split_ids(ids, 0.25, seed=8)[1] != val
    assert split_ids(ids, 0.0, seed=7) == (ids, [])
    assert split_ids(ids[:2], 0.99, seed=7)[0]  # at least one training case


def test_unknown_layout(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="unknown layout"):
        detect_layout(tmp_path)


def test_real_hippocampus_layout(shared_data):
    root = shared_data("Task04_Hippocampus")
    assert detect_layout(root) == "msd"
    cases = list_cases3d(root)
    assert len(cases) == 208
    d = load_case3d(cases[0])
    assert d["image"].shape[0] == 1 and d["image"].shape[1:] == d["label"].shape


def test_real_brats_sample_without_label(shared_data):
    (case,) = list_cases3d(shared_data("BraTS2023_GLI_sample"))
    assert [p.name.split("-")[-1] for p in case.images] == ["t2w.nii.gz", "t2f.nii.gz", "t1n.nii.gz", "t1c.nii.gz"]
    assert case.label is None
