"""One module per layout (issue 11): each module in ``mambaseg.data.layouts`` lists a tiny dataset of its kind; the
old ``layouts2d`` / ``layouts3d`` re-export facades are gone (issue 22)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

import mambaseg.data.layouts.brats as brats
import mambaseg.data.layouts.dataset_json as dataset_json
import mambaseg.data.layouts.detect3d as detect3d
import mambaseg.data.layouts.drive as drive
import mambaseg.data.layouts.folder2d as folder2d
import mambaseg.data.layouts.load2d as load2d
import mambaseg.data.layouts.msd as msd
import mambaseg.data.layouts.nnunet as nnunet
import mambaseg.data.layouts.synapse as synapse
import mambaseg.data.load3d as load3d
import mambaseg.data.records as records
from mambaseg.data import cases, layouts
from mambaseg.data.synthetic import write_phantom_msd, write_synthetic_drive

SHAPE = (4, 3, 2)


def _nii(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4)), str(path))


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_drive_module_lists_synthetic_drive(tmp_path):
    root = write_synthetic_drive(tmp_path / "drive", n_train=2, n_test=1, size=(32, 32))
    train = drive.drive_cases(root)
    assert [c.id for c in train] == ["21", "22"] and all(isinstance(c, records.Case2D) for c in train)
    assert train[0].label.name == "21_manual1.gif" and train[0].mask.name == "21_training_mask.gif"
    assert [c.id for c in drive.drive_cases(root, "test")] == ["01"]
    d = load2d.load_case2d(train[0])
    assert d["image"].shape == (3, 32, 32) and d["label"].shape == (32, 32)


def test_folder2d_module_lists_images_and_labels(tmp_path):
    for stem in ("b", "a"):
        _png(tmp_path / "images" / f"{stem}.png", np.full((6, 5), 7, np.uint8))
        _png(tmp_path / "labels" / f"{stem}.png", np.zeros((6, 5), np.uint8))
    _png(tmp_path / "masks" / "a.png", np.full((6, 5), 255, np.uint8))
    listed = folder2d.folder2d_cases(tmp_path)
    assert [(c.id, c.mask is not None) for c in listed] == [("a", True), ("b", False)]


def test_nnunet_module_lists_3d_and_2d_datasets(tmp_path):
    root3 = tmp_path / "Dataset001_Vol"
    for cid in ("x", "y"):
        for ch in range(2):
            _nii(root3 / "imagesTr" / f"{cid}_{ch:04d}.nii.gz", np.full(SHAPE, float(ch), np.float32))
        _nii(root3 / "labelsTr" / f"{cid}.nii.gz", np.zeros(SHAPE, np.uint8))
    (root3 / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT", "1": "T2"},
                                                    "labels": {"background": 0, "a": 1}, "file_ending": ".nii.gz"}))
    vol = nnunet.nnunet_cases(root3)
    assert [(c.case_id, c.layout, c.channel_names) for c in vol] == [("x", "nnunet", ("CT", "T2")),
                                                                     ("y", "nnunet", ("CT", "T2"))]
    assert not nnunet.nnunet_is_2d(root3)

    root2 = tmp_path / "Dataset002_Flat"
    for cid in ("p", "q"):
        _png(root2 / "imagesTr" / f"{cid}_0000.png", np.full((6, 5), 9, np.uint8))
        _png(root2 / "labelsTr" / f"{cid}.png", np.zeros((6, 5), np.uint8))
    (root2 / "dataset.json").write_text(json.dumps({"channel_names": {"0": "noNorm"},
                                                    "labels": {"background": 0, "a": 1}, "file_ending": ".png"}))
    assert nnunet.nnunet_is_2d(root2)
    flat = nnunet.nnunet2d_cases(root2)
    assert [c.id for c in flat] == ["p", "q"] and flat[0].norm == ({"scheme": "none"},)  # noNorm
    assert nnunet.nnunet2d_normalization(root2) == flat[1].norm
    assert dataset_json.read_dataset_json(root2)["file_ending"] == ".png"


def test_msd_module_lists_phantom_task(tmp_path):
    root = write_phantom_msd(tmp_path / "Task01_Phantom", n_cases=2, shape=(6, 5, 4))
    listed = msd.msd_cases(root)
    assert [(c.case_id, c.layout) for c in listed] == [("phantom_000", "msd"), ("phantom_001", "msd")]
    assert detect3d.detect_layout3d(root) == "msd"
    d = load3d.load_case3d(listed[0])
    assert d["image"].shape == (1, 6, 5, 4) and d["label"].shape == (6, 5, 4)
    grouped = msd.group_channels([Path("c_0001.nii.gz"), Path("c_0000.nii.gz"), Path("d.nii.gz")])
    assert grouped == {"c": [Path("c_0000.nii.gz"), Path("c_0001.nii.gz")], "d": [Path("d.nii.gz")]}


def test_brats_module_lists_case_folders_in_channel_order(tmp_path):
    cid = "BraTS-GLI-00001-000"
    for mod in ("t1n", "t1c", "t2w", "t2f", "seg"):
        _nii(tmp_path / cid / f"{cid}-{mod}.nii.gz", np.zeros(SHAPE, np.float32))
    (case,) = brats.brats_cases(tmp_path)
    assert [p.name.split("-")[-1] for p in case.images] == [f"{m}.nii.gz" for m in brats.BRATS_CHANNELS]
    assert case.label.name == f"{cid}-seg.nii.gz" and case.extra["scheme"] == "2023"
    assert detect3d.detect_layout3d(tmp_path) == "brats"


def test_synapse_module_lists_npz_slices_and_btcv(tmp_path):
    npz = tmp_path / "syn" / "train_npz"
    npz.mkdir(parents=True)
    for z in (1, 0):
        np.savez(npz / f"case0005_slice{z:03d}.npz", image=np.zeros((3, 3), np.float32),
                 label=np.zeros((3, 3), np.uint8))
    (case,) = synapse.synapse_cases(tmp_path / "syn", split="train")
    assert case.layout == "synapse_npz" and [p.name for p in case.images] == ["case0005_slice000.npz",
                                                                              "case0005_slice001.npz"]
    assert detect3d.detect_layout3d(tmp_path / "syn") == "synapse"

    for n in (1, 5):
        _nii(tmp_path / "btcv" / "img" / f"img{n:04d}.nii.gz", np.zeros(SHAPE, np.float32))
        _nii(tmp_path / "btcv" / "label" / f"label{n:04d}.nii.gz", np.zeros(SHAPE, np.uint8))
    (test_case,) = synapse.synapse_cases(tmp_path / "btcv", split="test")
    assert test_case.case_id == "case0001" and test_case.label_map == synapse.BTCV_TO_SYNAPSE8
    assert [c.case_id for c in detect3d.list_cases3d(tmp_path / "btcv", "btcv", "train")] == ["case0005"]


def test_cases_entry_points_use_the_layout_modules():
    assert cases.list_cases3d is detect3d.list_cases3d and cases.drive_cases is drive.drive_cases
    assert cases.Case2D is records.Case2D and cases.Case3D is records.Case3D


def test_old_path_facades_are_gone():
    import importlib

    for old in ("layouts2d", "layouts3d"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(f"mambaseg.data.{old}")


def test_layouts_package_has_one_module_per_layout():
    names = {p.stem for p in Path(layouts.__file__).parent.glob("*.py")}
    assert {"drive", "folder2d", "nnunet", "msd", "brats", "synapse"} <= names
