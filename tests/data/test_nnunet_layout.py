"""``data.layout: nnunet``: nnU-Net v2 raw datasets (dataset.json v2 ``channel_names`` / ``labels`` name -> int /
``file_ending`` / ``numTraining``; v1 label style too), CT normalisation chosen from ``channel_names``, 2D ``.png``
nnU-Net datasets through the 2D pipeline."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mambaseg.config import ConfigError, config_from_dict
from mambaseg.data.errors import DataError
from mambaseg.data.layouts.dataset_json import channel_modalities
from mambaseg.data.layouts.detect3d import list_cases3d
from mambaseg.data.layouts.load2d import load_case2d
from mambaseg.data.layouts.nnunet import nnunet2d_cases, nnunet_is_2d
from mambaseg.data.load3d import load_case3d


def _vol(path: Path, arr: np.ndarray, dtype=np.float32) -> None:
    nib.save(nib.Nifti1Image(arr.astype(dtype), np.diag([1.0, 1.0, 1.5, 1.0])), str(path))


def make_nnunet3d(root: Path, n: int = 3, channels=("CT",), ending: str = ".nii.gz", labels=None,
                  shape=(16, 16, 12), num_training: int | None = None) -> Path:
    """A tiny nnU-Net v2 raw dataset: a bright block (label 1) in noise; CT-like intensities (HU)."""
    for d in ("imagesTr", "labelsTr", "imagesTs"):
        (root / d).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        lab = np.zeros(shape, np.uint8)
        lab[4 + i % 2: 10, 5:11, 3:8] = 1
        for c in range(len(channels)):
            img = rng.normal(-500.0, 50.0, shape) + 800.0 * lab + 10 * c
            _vol(root / "imagesTr" / f"liver_{i:03d}_{c:04d}{ending}", img)
        _vol(root / "labelsTr" / f"liver_{i:03d}{ending}", lab, np.uint8)
    _vol(root / "imagesTs" / f"liver_900_0000{ending}", rng.normal(0, 1, shape))
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {str(i): c for i, c in enumerate(channels)},
        "labels": labels or {"background": 0, "liver": 1},
        "numTraining": n if num_training is None else num_training, "file_ending": ending}))
    return root


def test_layout_accepted_by_config():
    cfg = config_from_dict({"data": {"layout": "nnunet", "root": "x", "patch_size": [16, 16, 16]}})
    assert cfg.data.layout == "nnunet" and cfg.data.modality == "auto"
    with pytest.raises(ConfigError, match="data.modality"):
        config_from_dict({"data": {"modality": "PET"}})


def test_v2_dataset_cases_and_reading(tmp_path):
    root = make_nnunet3d(tmp_path / "Dataset003_Liver")
    # a file with another ending is not part of the dataset (file_ending decides)
    _vol(root / "imagesTr" / "liver_777_0000.nii", np.zeros((4, 4, 4)))
    cases = list_cases3d(root, "nnunet")
    assert [c.case_id for c in cases] == ["liver_000", "liver_001", "liver_002"]
    assert cases[0].images == (root / "imagesTr" / "liver_000_0000.nii.gz",)
    assert cases[0].label == root / "labelsTr" / "liver_000.nii.gz"
    assert cases[0].labels == {"background": 0, "liver": 1} and cases[0].channel_names == ("CT",)
    case = load_case3d(cases[0])
    assert case["image"].shape == (1, 16, 16, 12) and case["label"].sum() == 6 * 6 * 5
    test = list_cases3d(root, "nnunet", split="test")
    assert [c.case_id for c in test] == ["liver_900"] and test[0].label is None


def test_v1_labels_multichannel_and_other_ending(tmp_path):
    root = make_nnunet3d(tmp_path / "ds", channels=("T2", "ADC"), ending=".nii",
                         labels={"0": "background", "1": "prostate"})
    cases = list_cases3d(root, "nnunet")
    assert len(cases) == 3 and all(len(c.images) == 2 for c in cases)
    assert cases[0].labels == {"background": 0, "prostate": 1}
    assert load_case3d(cases[1])["image"].shape[0] == 2


def test_missing_channel_and_label_are_one_line_errors(tmp_path):
    root = make_nnunet3d(tmp_path / "ds", channels=("T2", "ADC"))
    (root / "imagesTr" / "liver_001_0001.nii.gz").unlink()
    with pytest.raises(DataError, match=r"liver_001_0001\.nii\.gz.*2 channel"):
        list_cases3d(root, "nnunet")
    root = make_nnunet3d(tmp_path / "ds2")
    (root / "labelsTr" / "liver_002.nii.gz").unlink()
    with pytest.raises(DataError, match=r"labelsTr/liver_002\.nii\.gz"):
        list_cases3d(root, "nnunet")
    root = make_nnunet3d(tmp_path / "ds3")
    (root / "imagesTr" / "liver_000_0000.nii.gz").rename(root / "imagesTr" / "liver_000.nii.gz")
    with pytest.raises(DataError, match=r"liver_000\.nii\.gz: no channel index"):
        list_cases3d(root, "nnunet")
    root = make_nnunet3d(tmp_path / "ds4")
    raw = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps(dict(raw, file_ending="nii.gz")))
    with pytest.raises(DataError, match="file_ending"):
        list_cases3d(root, "nnunet")


def test_num_training_mismatch_warns(tmp_path, caplog):
    root = make_nnunet3d(tmp_path / "ds", num_training=5)
    with caplog.at_level(logging.WARNING):
        assert len(list_cases3d(root, "nnunet")) == 3
    assert "numTraining is 5" in caplog.text


def test_channel_names_choose_normalisation():
    assert channel_modalities(["CT"], "auto", "nnunet") == ["CT"]
    assert channel_modalities(["ct", "T2"], "auto", "nnunet") == ["CT", "zscore"]  # other names: nnU-Net's zscore
    assert channel_modalities(["CT"], "MR", "nnunet") == "MR"  # an explicit data.modality wins
    assert channel_modalities(["CT"], "auto", "msd") == "MR"  # other layouts: the historical default
    assert channel_modalities(["noNorm"], "auto", "nnunet") == ["noNorm"]


def test_training_data_gets_ct_normalisation_without_modality(tmp_path):
    from mambaseg.config import DataCfg
    from mambaseg.engine.data import load_dataset

    root = make_nnunet3d(tmp_path / "ds", n=3)
    cfg = DataCfg(layout="nnunet", root=str(root), num_classes=2, patch_size=(16, 16, 16), val_fraction=0.34,
                  cache_dir=str(tmp_path / "cache"))
    train, val, info = load_dataset(cfg, 0, tmp_path / "run")
    assert info["plan"]["modality"] == ["CT"] and info["plan"]["normalization"][0]["scheme"] == "ct"
    assert len(train) == 2 and len(val) == 1 and info["labels"] == {"background": 0, "liver": 1}
    mr = DataCfg(**{**cfg.__dict__, "modality": "MR", "cache_dir": str(tmp_path / "cache2")})
    assert load_dataset(mr, 0, tmp_path / "run2")[2]["plan"]["normalization"][0]["scheme"] == "zscore_nonzero"


def make_nnunet2d(root: Path, n: int = 3, rgb: bool = True) -> Path:
    for d in ("imagesTr", "labelsTr", "imagesTs"):
        (root / d).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        lab = np.zeros((24, 20), np.uint8)
        lab[3:9, 4:12] = 1
        lab[12:18, 6:10] = 2
        img = rng.integers(0, 255, (24, 20, 3) if rgb else (24, 20), dtype=np.uint8)
        Image.fromarray(img).save(root / "imagesTr" / f"road_{i}_0000.png")
        Image.fromarray(lab).save(root / "labelsTr" / f"road_{i}.png")
    Image.fromarray(np.zeros((24, 20, 3), np.uint8)).save(root / "imagesTs" / "road_9_0000.png")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "R", "1": "G", "2": "B"} if rgb else {"0": "grey"},
        "labels": {"background": 0, "road": 1, "car": 2}, "numTraining": n, "file_ending": ".png"}))
    return root


def test_2d_png_dataset_lists_and_reads(tmp_path):
    root = make_nnunet2d(tmp_path / "Dataset120_Road", rgb=False)
    assert nnunet_is_2d(root)
    cases = nnunet2d_cases(root)
    assert [c.id for c in cases] == ["road_0", "road_1", "road_2"]
    case = load_case2d(cases[0], num_classes=3)
    assert case["image"].shape == (1, 24, 20) and set(np.unique(case["label"])) == {0, 1, 2}
    assert [c.id for c in nnunet2d_cases(root, "test")] == ["road_9"]
    with pytest.raises(DataError, match="2D nnU-Net dataset"):
        list_cases3d(root, "nnunet")
    (root / "imagesTr" / "road_0_0001.png").write_bytes((root / "imagesTr" / "road_0_0000.png").read_bytes())
    with pytest.raises(DataError, match="channel"):
        nnunet2d_cases(root)


def test_2d_png_dataset_through_training_loader(tmp_path):
    from mambaseg.config import DataCfg
    from mambaseg.engine.data import load_dataset

    root = make_nnunet2d(tmp_path / "Dataset120_Road")
    cases = nnunet2d_cases(root)  # an RGB _0000.png holds the 3 channels R, G, B (nnU-Net NaturalImage2DIO)
    assert load_case2d(cases[0], num_classes=3)["image"].shape == (3, 24, 20)
    cfg = DataCfg(layout="nnunet", root=str(root), num_classes=3, patch_size=(16, 16), val_fraction=0.34)
    train, val, info = load_dataset(cfg, 0, tmp_path / "run")
    assert info["spatial_dims"] == 2 and len(train) == 2 and len(val) == 1
    assert train[0]["image"].shape == (3, 24, 20) and train[0]["label"].max() == 2
