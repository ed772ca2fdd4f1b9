"""nnU-Net v2 normalisation chosen from dataset.json ``channel_names`` (CT / zscore / noNorm / rescale_to_0_1 /
rgb_to_0_1, case-insensitive, unknown names -> zscore), stored in the plan (3D) or the case records (2D) and applied
the same way at predict time.

Expected values are written out by hand; the tolerance 1e-6 is float32 rounding of values of magnitude <= ~10
(float32 keeps ~7 significant digits: spacing 2**-23 * 8 ~ 1e-6 near 8).
"""

from __future__ import annotations

import json
import pickle

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from mambaseg.data.errors import DataError
from mambaseg.data.layouts.dataset_json import channel_modalities, nnunet_normalisation
from mambaseg.data.layouts.load2d import load_case2d
from mambaseg.data.layouts.nnunet import nnunet2d_cases
from mambaseg.data.plans.fingerprint import fingerprint
from mambaseg.data.plans.normalize import (
    NORM_SCHEMES,
    median_relative_size_after_crop,
    normalization_entries,
    normalize_channels,
)
from mambaseg.data.plans.preprocess import plan, plan_hash, preprocess_case

TOL = 1e-6


def _one(values, entry):
    x = np.asarray(values, dtype=np.float32).reshape(1, 2, 2)
    out, stats = normalize_channels(x, [entry])
    assert out.dtype == np.float32 and out.shape == (1, 2, 2)
    return out.reshape(-1), stats[0]


def test_zscore_whole_image_exact():
    out, st = _one([1, 2, 3, 4], {"scheme": "zscore"})  # mean 2.5, std sqrt(1.25)
    np.testing.assert_allclose(out, [-1.3416407865, -0.4472135955, 0.4472135955, 1.3416407865], atol=TOL)
    assert st["mean"] == 2.5 and st["std"] == pytest.approx(1.1180339887, abs=1e-9)


def test_zscore_nonzero_exact():
    out, _ = _one([0, 2, 4, 6], {"scheme": "zscore_nonzero"})  # non-zero: mean 4, std sqrt(8/3); zero stays 0
    np.testing.assert_allclose(out, [0.0, -1.2247448714, 0.0, 1.2247448714], atol=TOL)


def test_ct_exact():
    entry = {"scheme": "ct", "lower": -100.0, "upper": 300.0, "mean": 50.0, "std": 100.0}
    out, _ = _one([-1000, 0, 50, 1000], entry)  # clip -> [-100, 0, 50, 300]
    np.testing.assert_allclose(out, [-1.5, -0.5, 0.0, 2.5], atol=TOL)


def test_nonorm_is_identity():
    out, _ = _one([-3.5, 0.0, 7.25, 1e4], {"scheme": "none"})
    np.testing.assert_array_equal(out, np.float32([-3.5, 0.0, 7.25, 1e4]))


def test_rescale_to_0_1_exact():
    out, st = _one([10, 20, 30, 50], {"scheme": "rescale_to_0_1"})
    np.testing.assert_allclose(out, [0.0, 0.25, 0.5, 1.0], atol=TOL)
    assert st == {"min": 10.0, "max": 50.0}
    out, _ = _one([7, 7, 7, 7], {"scheme": "rescale_to_0_1"})  # constant image: (x - min) / 1e-8 = 0, no NaN
    np.testing.assert_array_equal(out, 0.0)


def test_rgb_to_0_1_exact_and_clipped():
    out, _ = _one([0, 51, 255, 300], {"scheme": "rgb_to_0_1"})
    np.testing.assert_allclose(out, [0.0, 0.2, 1.0, 1.0], atol=TOL)
    out, _ = _one([-10, 127.5, 25.5, 255], {"scheme": "rgb_to_0_1"})
    np.testing.assert_allclose(out, [0.0, 0.5, 0.1, 1.0], atol=TOL)


def test_unknown_scheme_and_count_mismatch_are_errors():
    x = np.ones((2, 2, 2), np.float32)
    with pytest.raises(ValueError, match="unknown normalisation scheme 'gamma'"):
        normalize_channels(x, [{"scheme": "none"}, {"scheme": "gamma"}])
    with pytest.raises(ValueError, match="1 normalisation entries, image has 2 channels"):
        normalize_channels(x, [{"scheme": "none"}])
    assert set(NORM_SCHEMES) >= {"zscore", "zscore_nonzero", "ct", "none", "rescale_to_0_1", "rgb_to_0_1"}


# ------------------------------------------------------------------------------------------- channel names -> scheme
@pytest.mark.parametrize("name, expected", [
    ("CT", "CT"), ("ct", "CT"), ("cT", "CT"), ("noNorm", "noNorm"), ("NONORM", "noNorm"), ("zscore", "zscore"),
    ("ZScore", "zscore"), ("rescale_to_0_1", "rescale_to_0_1"), ("Rescale_To_0_1", "rescale_to_0_1"),
    ("rgb_to_0_1", "rgb_to_0_1"), ("RGB_TO_0_1", "rgb_to_0_1"),
    # unknown names fall back to zscore like nnU-Net's get_normalization_scheme (casefold, no stripping)
    ("T2", "zscore"), ("MRI", "zscore"), ("PET", "zscore"), (" CT", "zscore"), ("CT ", "zscore"), ("", "zscore"),
    ("rescale_0_1", "zscore"),
])
def test_channel_name_matching_like_nnunet(name, expected):
    assert nnunet_normalisation(name) == expected


def test_unknown_channel_names_plan_zscore():
    fp = {"n_channels": 2, "shapes": [[8, 8, 8]], "shapes_after_crop": [[8, 8, 8]], "spacings": [[1, 1, 1]],
          "median_spacing": [1, 1, 1], "intensity": {}}
    mods = channel_modalities(["FLAIR", "whatever"], "auto", "nnunet")
    assert mods == ["zscore", "zscore"]
    assert [e["scheme"] for e in plan(fp, mods, (8, 8, 8))["normalization"]] == ["zscore", "zscore"]


def test_zscore_uses_nonzero_mask_when_cropping_shrinks_cases_like_nnunet():
    def fp(cropped):
        return {"shapes": [[10, 10, 10]] * 3, "shapes_after_crop": cropped}

    shrunk = fp([[5, 10, 10], [7, 10, 10], [10, 10, 10]])  # relative sizes 0.5, 0.7, 1.0 -> median 0.7 < 0.75
    assert median_relative_size_after_crop(shrunk) == pytest.approx(0.7)
    assert normalization_entries(["zscore"], shrunk) == [{"scheme": "zscore_nonzero"}]
    kept = fp([[8, 10, 10], [7, 10, 10], [10, 10, 10]])  # median 0.8
    assert normalization_entries(["zscore"], kept) == [{"scheme": "zscore"}]
    exact = fp([[10, 10, 7.5]] * 3)  # 0.75 is not < 0.75: no mask, as nnU-Net's strict comparison
    assert normalization_entries(["zscore"], exact) == [{"scheme": "zscore"}]
    # the historical MR modality keeps its non-zero z-score whatever the crop
    assert normalization_entries(["MR"], kept) == [{"scheme": "zscore_nonzero"}]


# ------------------------------------------------------------------------------------------------- mixed channels (3D)
def _mixed_case():
    """Two channels on an identity-affine (RAS, 1 mm) grid, no zero voxel (so no crop) and no resampling."""
    rng = np.random.default_rng(3)
    label = np.zeros((6, 5, 4), np.int64)
    label[1:4, 1:4, 1:3] = 1
    ct = rng.normal(-400.0, 30.0, label.shape) + 700.0 * label
    ct[0, 0, 0], ct[5, 4, 3] = -3000.0, 4000.0  # outliers, clipped by the percentiles
    raw = rng.uniform(5.0, 9.0, label.shape)
    meta = {"affine": np.eye(4), "spacing": np.ones(3), "shape": label.shape, "path": "mixed.nii.gz"}
    return {"case_id": "mixed", "image": np.stack([ct, raw]).astype(np.float32), "label": label, "meta": meta}


def test_mixed_ct_and_nonorm_channels_exact():
    case = _mixed_case()
    fp = fingerprint([case])
    p = plan(fp, ["CT", "noNorm"], (4, 4, 4))
    assert p["modality"] == ["CT", "noNorm"]
    assert [e["scheme"] for e in p["normalization"]] == ["ct", "none"]
    fg = case["image"][0][case["label"] > 0].astype(np.float64)  # 18 voxels < n_samples: every one is used
    ct = p["normalization"][0]
    assert ct["lower"] == pytest.approx(np.percentile(fg, 0.5))
    assert ct["upper"] == pytest.approx(np.percentile(fg, 99.5))
    assert ct["mean"] == pytest.approx(fg.mean()) and ct["std"] == pytest.approx(fg.std())
    image, _, props = preprocess_case(case, p)
    assert props["bbox"] == [[0, 6], [0, 5], [0, 4]] and image.shape == (2, 6, 5, 4)
    expected_ct = (np.clip(case["image"][0].astype(np.float64), ct["lower"], ct["upper"]) - ct["mean"]) / ct["std"]
    np.testing.assert_allclose(image[0], expected_ct, atol=TOL)
    np.testing.assert_array_equal(image[1], case["image"][1])  # noNorm: the raw intensities, untouched


def test_plan_round_trip_json_and_pickle_gives_identical_preprocessing():
    case = _mixed_case()
    p = plan(fingerprint([case]), ["ct", "NoNorm"], (4, 4, 4))
    via_json = json.loads(json.dumps(p))
    via_pickle = pickle.loads(pickle.dumps(p))
    for q in (via_json, via_pickle):
        assert q == p and plan_hash(q) == plan_hash(p)
        a, _, _ = preprocess_case(case, p)
        b, _, _ = preprocess_case(case, q)
        np.testing.assert_array_equal(a, b)


def test_plan_survives_a_checkpoint_file(tmp_path):
    """The plan as predict reads it back: torch.save / torch.load(weights_only=True) of the checkpoint dict."""
    case = _mixed_case()
    p = plan(fingerprint([case]), ["CT", "noNorm"], (4, 4, 4))
    torch.save({"data": {"plan": p, "spatial_dims": 3}}, tmp_path / "ck.pt")
    back = torch.load(tmp_path / "ck.pt", weights_only=True)["data"]["plan"]
    assert back == p
    np.testing.assert_array_equal(preprocess_case(case, back)[0], preprocess_case(case, p)[0])


def test_checkpoint_field_check_accepts_every_scheme_and_refuses_others():
    from mambaseg.engine.checkpoint import CheckpointError, check_fields

    p = plan(fingerprint([_mixed_case()]), ["CT", "noNorm"], (4, 4, 4))
    for entries in (p["normalization"], [{"scheme": s} for s in ("zscore", "rescale_to_0_1", "rgb_to_0_1")]):
        check_fields({"data": {"plan": dict(p, normalization=entries)}}, "ck.pt")
    for bad in ([{"scheme": "gamma"}], [{"scheme": "ct", "lower": 0.0}], [{"scheme": "ct_window"}]):
        with pytest.raises(CheckpointError, match="data.plan.normalization"):
            check_fields({"data": {"plan": dict(p, normalization=bad)}}, "ck.pt")


# ---------------------------------------------------------------------------------------- 3D dataset -> training plan
def _nnunet3d(root, channels):
    for d in ("imagesTr", "labelsTr"):
        (root / d).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        lab = np.zeros((10, 10, 8), np.uint8)
        lab[2:7, 3:8, 2:6] = 1
        for c in range(len(channels)):
            img = rng.uniform(1.0, 200.0, lab.shape) + 300.0 * lab
            path = root / "imagesTr" / f"c{i}_{c:04d}.nii.gz"
            nib.save(nib.Nifti1Image(img.astype(np.float32), np.eye(4)), str(path))
        nib.save(nib.Nifti1Image(lab, np.eye(4)), str(root / "labelsTr" / f"c{i}.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {str(i): n for i, n in enumerate(channels)}, "labels": {"background": 0, "fg": 1},
        "numTraining": 3, "file_ending": ".nii.gz"}))
    return root


def test_training_plan_follows_channel_names(tmp_path):
    from mambaseg.config import DataCfg
    from mambaseg.engine.data import load_dataset

    root = _nnunet3d(tmp_path / "ds", ["ct", "NONORM", "Rescale_To_0_1", "T2", "rgb_to_0_1"])
    cfg = DataCfg(layout="nnunet", root=str(root), num_classes=2, patch_size=(8, 8, 8), val_fraction=0.34,
                  cache_dir=str(tmp_path / "cache"))
    train, _, info = load_dataset(cfg, 0, tmp_path / "run")
    p = info["plan"]
    assert p["modality"] == ["CT", "noNorm", "rescale_to_0_1", "zscore", "rgb_to_0_1"]
    # no zero voxels -> the crop keeps everything -> nnU-Net z-scores every voxel (no mask)
    assert [e["scheme"] for e in p["normalization"]] == ["ct", "none", "rescale_to_0_1", "zscore", "rgb_to_0_1"]
    img = np.asarray(train[0]["image"])
    cid = train[0].case_id
    raw = [np.asarray(nib.load(str(root / "imagesTr" / f"{cid}_{c:04d}.nii.gz")).dataobj) for c in range(5)]
    np.testing.assert_array_equal(img[1], raw[1])  # noNorm untouched (same grid: 1 mm, no crop)
    assert img[2].min() == pytest.approx(0.0, abs=TOL) and img[2].max() == pytest.approx(1.0, abs=TOL)
    assert abs(float(img[3].mean())) < 1e-5 and float(img[3].std()) == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(img[4], np.clip(raw[4] / 255.0, 0, 1), atol=TOL)


# -------------------------------------------------------------------------------------------------------- 2D datasets
def _nnunet2d(root, names, rgb):
    for d in ("imagesTr", "labelsTr"):
        (root / d).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(3):
        lab = np.zeros((12, 10), np.uint8)
        lab[3:8, 2:7] = 1
        img = rng.integers(0, 200, (12, 10, 3) if rgb else (12, 10), dtype=np.uint8)
        Image.fromarray(img).save(root / "imagesTr" / f"im_{i}_0000.png")
        Image.fromarray(lab).save(root / "labelsTr" / f"im_{i}.png")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {str(i): n for i, n in enumerate(names)}, "labels": {"background": 0, "fg": 1},
        "numTraining": 3, "file_ending": ".png"}))
    return root


def test_2d_rgb_to_0_1_and_nonorm(tmp_path):
    root = _nnunet2d(tmp_path / "rgb", ["RGB_to_0_1", "noNorm", "rescale_to_0_1"], rgb=True)
    cases = nnunet2d_cases(root)
    assert [e["scheme"] for e in cases[0].norm] == ["rgb_to_0_1", "none", "rescale_to_0_1"]
    raw = np.asarray(Image.open(cases[0].image), dtype=np.float64).transpose(2, 0, 1)
    case = load_case2d(cases[0], num_classes=2)
    np.testing.assert_allclose(case["image"][0], raw[0] / 255.0, atol=TOL)
    np.testing.assert_array_equal(case["image"][1], raw[1])
    np.testing.assert_allclose(case["image"][2], (raw[2] - raw[2].min()) / (raw[2].max() - raw[2].min()), atol=TOL)
    assert case["meta"]["normalization"] == [dict(e) for e in cases[0].norm]


def test_2d_ct_uses_dataset_foreground_statistics(tmp_path):
    root = _nnunet2d(tmp_path / "ct", ["CT"], rgb=False)
    cases = nnunet2d_cases(root)
    imgs = [np.asarray(Image.open(c.image), dtype=np.float64) for c in cases]
    labs = [np.asarray(Image.open(c.label)) for c in cases]
    fg = np.concatenate([i[lab > 0] for i, lab in zip(imgs, labs)])  # 25 px per case < n_samples: all used
    e = cases[0].norm[0]
    assert e["scheme"] == "ct"
    assert e["lower"] == pytest.approx(np.percentile(fg, 0.5)) and e["upper"] == pytest.approx(np.percentile(fg, 99.5))
    assert e["mean"] == pytest.approx(fg.mean()) and e["std"] == pytest.approx(fg.std())
    out = load_case2d(cases[1], num_classes=2)["image"][0]
    np.testing.assert_allclose(out, (np.clip(imgs[1], e["lower"], e["upper"]) - e["mean"]) / e["std"], atol=TOL)


def test_2d_default_zscore_and_channel_count_mismatch(tmp_path):
    root = _nnunet2d(tmp_path / "z", ["R", "G", "B"], rgb=True)
    case = load_case2d(nnunet2d_cases(root)[0], num_classes=2)
    for c in range(3):
        assert abs(float(case["image"][c].mean())) < 1e-5
        assert float(case["image"][c].std()) == pytest.approx(1, abs=1e-5)
    root = _nnunet2d(tmp_path / "bad", ["rgb_to_0_1"], rgb=True)  # one name for an RGB file
    with pytest.raises(DataError, match=r"im_0_0000\.png: 3 channel\(s\), the dataset's 'channel_names' list 1"):
        load_case2d(nnunet2d_cases(root)[0], num_classes=2)


def test_2d_predict_applies_the_stored_entries():
    """predict_image_2d normalises with the checkpoint's ``data.normalization`` (what the model saw in training)."""
    from mambaseg.engine.predict import Predictor, predict_image_2d

    seen = []

    def run(x):
        seen.append(x.clone())
        return torch.zeros((x.shape[0], 1, *x.shape[2:]))

    entries = [{"scheme": "rgb_to_0_1"}, {"scheme": "none"}]
    ck = {"config": {"data": {"patch_size": [8, 8]}, "infer": {"mode": "constant", "threshold": 0.5}},
          "data": {"spatial_dims": 2, "normalization": entries}, "model_kwargs": {"in_channels": 2}}
    raw = np.random.default_rng(0).uniform(0, 255, (2, 8, 8)).astype(np.float32)
    predict_image_2d(Predictor(run, ck, "m.pt", torch.device("cpu")), raw, None, 0.0, False)
    x = seen[0][0].numpy()
    np.testing.assert_allclose(x[0], raw[0] / 255.0, atol=TOL)
    np.testing.assert_array_equal(x[1], raw[1])


# ------------------------------------------------------------------------------------- trained end to end (CLI)
def test_2d_entries_stored_in_the_checkpoint_and_used_by_predict(tmp_path):
    from mambaseg.cli import main
    from mambaseg.engine.predict_provenance import PROVENANCE_NAME

    root = _nnunet2d(tmp_path / "Dataset130_Rgb", ["rgb_to_0_1", "rgb_to_0_1", "noNorm"], rgb=True)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("seed: 0\nmodel: {name: unet_tiny, kwargs: {in_channels: 3}}\n"
                   f"data: {{layout: nnunet, root: \"{root}\", num_classes: 2, patch_size: [8, 8], "
                   "val_fraction: 0.34, augment: none}\n"
                   "train: {epochs: 1, iters_per_epoch: 1, batch_size: 1, val_every: 1}\ninfer: {patch_size: [8, 8]}\n")
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0
    ck = torch.load(run / "checkpoint_last.pt", weights_only=False, map_location="cpu")
    expected = [{"scheme": "rgb_to_0_1"}, {"scheme": "rgb_to_0_1"}, {"scheme": "none"}]
    assert ck["data"]["normalization"] == expected
    out = tmp_path / "pred"
    assert main(["predict", "-m", str(run), "-i", str(root / "imagesTr"), "-o", str(out), "--no-progress"]) == 0
    doc = json.loads((out / PROVENANCE_NAME).read_text())
    assert doc["preprocessing"]["normalization_entries"] == expected
    assert "nnU-Net" in doc["preprocessing"]["normalization"]


def test_3d_mixed_ct_nonorm_trained_and_predicted(tmp_path):
    from mambaseg.cli import main
    from mambaseg.engine.predict_provenance import PROVENANCE_NAME

    root = _nnunet3d(tmp_path / "Dataset131_Mixed", ["CT", "noNorm"])
    cfg = tmp_path / "c.yaml"
    cfg.write_text("seed: 0\nmodel: {name: unet3d_tiny, kwargs: {in_channels: 2}}\n"
                   f"data: {{layout: nnunet, root: \"{root}\", num_classes: 2, patch_size: [16, 16, 16], "
                   "val_fraction: 0.34, augment: none}\n"
                   "train: {epochs: 1, iters_per_epoch: 1, batch_size: 1, val_every: 1}\n"
                   "infer: {overlap: 0.0, batch_size: 1}\n")
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0
    ck = torch.load(run / "checkpoint_last.pt", weights_only=False, map_location="cpu")
    assert [e["scheme"] for e in ck["data"]["plan"]["normalization"]] == ["ct", "none"]
    inp = tmp_path / "in"
    inp.mkdir()
    for c in range(2):
        name = f"c0_{c:04d}.nii.gz"
        (inp / name).write_bytes((root / "imagesTr" / name).read_bytes())
    out = tmp_path / "pred"
    assert main(["predict", "-m", str(run), "-i", str(inp), "-o", str(out), "--no-progress"]) == 0
    assert nib.load(out / "c0.nii.gz").shape == (10, 10, 8)
    plan_used = json.loads((out / PROVENANCE_NAME).read_text())["preprocessing"]["plan"]
    assert plan_used["modality"] == ["CT", "noNorm"] and plan_used["normalization"][1] == {"scheme": "none"}
