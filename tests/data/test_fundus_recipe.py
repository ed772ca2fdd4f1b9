"""Fundus recipe options (#12): data.fundus_norm, data.augment strong_fundus, infer.threshold auto (config checks,
the validation threshold search, its storage in the checkpoint and its use by predict), on tiny synthetic data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mambaseg.config import Config, ConfigError, apply_overrides, config_from_dict, config_to_dict
from mambaseg.data.plans.fundus import estimate_fov, fundus_channels, fundus_normalize
from mambaseg.data.synthetic import make_vessel_image, write_synthetic_drive
from mambaseg.data.transforms import RandomIllumination, RandomRimDarkening, default_augmentation
from mambaseg.engine.threshold import THRESHOLD_GRID, choose_threshold, dice_curve, resolve_threshold
from mambaseg.engine.validation import case_dice, validate


def _raw(seed: int = 0, size=(96, 96)):
    img, lab, fov = make_vessel_image(size, seed)
    return np.moveaxis(img, -1, 0).astype(np.float32), lab.astype(np.int64), fov


# ------------------------------------------------------------------------------------------------- normalisation
def test_fov_zscore_mean0_sd1_inside_fov_zero_outside():
    raw, _, fov = _raw(1)
    image, mask, stats = fundus_normalize(raw, fov, "fov_zscore")
    assert image.shape == raw.shape and image.dtype == np.float32
    assert mask is not None and np.array_equal(mask, fov)
    for c in range(3):
        inside = image[c][fov]
        assert abs(inside.mean()) < 1e-4 and inside.std() == pytest.approx(1.0, abs=1e-4)
        assert np.all(image[c][~fov] == 0)
        assert stats["mean"][c] == pytest.approx(raw[c][fov].mean(), rel=1e-4)  # stats from the FOV only
    # without a mask the FOV is estimated from the photo (and close to the true one)
    est_image, est_mask, _ = fundus_normalize(raw, None, "fov_zscore")
    assert np.logical_and(est_mask, fov).sum() / np.logical_or(est_mask, fov).sum() > 0.95
    assert abs(est_image[0][est_mask].mean()) < 1e-4 and np.all(est_image[:, ~est_mask] == 0)


def test_green_clahe_one_channel_zscored_vessels_dark():
    raw, lab, fov = _raw(2)
    image, _, _ = fundus_normalize(raw, fov, "green_clahe")
    assert image.shape == (1, *raw.shape[1:]) and fundus_channels(3, "green_clahe") == 1
    inside = image[0][fov]
    assert abs(inside.mean()) < 1e-4 and inside.std() == pytest.approx(1.0, abs=1e-4)
    assert np.all(image[0][~fov] == 0)
    vessel, background = image[0][fov & (lab == 1)].mean(), image[0][fov & (lab == 0)].mean()
    assert vessel < background - 0.5  # vessels stay dark in the equalised green channel
    # CLAHE changes the image: not just the z-scored green channel
    plain_green = (raw[1] - raw[1][fov].mean()) / raw[1][fov].std()
    assert np.abs(image[0][fov] - plain_green[fov]).mean() > 0.05
    with pytest.raises(ValueError, match="fundus_norm"):
        fundus_normalize(raw, fov, "none")


def test_training_cases_use_fundus_norm(tmp_path):
    from mambaseg.engine.data import load_dataset

    root = write_synthetic_drive(tmp_path / "d", n_train=3, n_test=1, size=(64, 64), seed=3)
    (root / "training" / "mask" / "21_training_mask.gif").unlink()  # one case without a FOV mask
    base = config_from_dict({"data": {"layout": "drive", "root": str(root), "val_fraction": 0.0}}).data
    for norm, channels in (("fov_zscore", 3), ("green_clahe", 1)):
        cfg = config_from_dict({"data": {"layout": "drive", "root": str(root), "val_fraction": 0.0,
                                         "fundus_norm": norm}}).data
        train, _, _ = load_dataset(cfg, seed=0)
        for case in train:
            assert case["image"].shape[0] == channels and case["mask"] is not None  # estimated for case 21
            inside = case["image"][:, case["mask"]]
            np.testing.assert_allclose(inside.mean(axis=1), 0, atol=1e-4)
            np.testing.assert_allclose(inside.std(axis=1), 1, atol=1e-4)
            assert np.all(case["image"][:, ~case["mask"]] == 0)
    old, _, _ = load_dataset(base, seed=0)  # default: unchanged (no mask estimated for case 21)
    assert next(c for c in old if c["id"] == "21")["mask"] is None


# ---------------------------------------------------------------------------------------------------------- config
def test_config_defaults_unchanged_and_checks():
    d = config_to_dict(Config())
    assert "fundus_norm" not in d["data"] and "cldice_weight" not in d["loss"] and d["infer"]["threshold"] == 0.5
    assert d["data"]["augment"] == "default" and d["loss"]["name"] == "dice_ce"
    cfg = apply_overrides(Config(), ["data.fundus_norm=green_clahe", "infer.threshold=auto",
                                     "data.augment=strong_fundus", "loss.name=dice_ce_cldice"])
    d = config_to_dict(cfg)
    assert d["data"]["fundus_norm"] == "green_clahe" and d["infer"]["threshold"] == "auto"
    assert d["loss"]["cldice_weight"] == 0.5
    assert config_from_dict(d) == cfg
    with pytest.raises(ConfigError, match="in_channels"):
        apply_overrides(cfg, ["model.kwargs={in_channels: 3}"])
    assert apply_overrides(cfg, ["model.kwargs={in_channels: 1}"]).model.kwargs["in_channels"] == 1
    with pytest.raises(ConfigError, match="infer.threshold"):
        apply_overrides(Config(), ["infer.threshold=auto", "data.num_classes=3"])
    with pytest.raises(ConfigError, match="infer.threshold"):
        apply_overrides(Config(), ["infer.threshold=1.5"])
    with pytest.raises(ConfigError, match="or auto"):
        apply_overrides(Config(), ["infer.threshold=best"])
    assert apply_overrides(Config(), ["infer.threshold='0.4'"]).infer.threshold == 0.4
    with pytest.raises(ConfigError, match="fundus_norm"):
        apply_overrides(Config(), ["data.fundus_norm=clahe"])
    with pytest.raises(ConfigError, match="fundus_norm"):
        apply_overrides(Config(), ["data.fundus_norm=fov_zscore", "data.layout=msd"])
    with pytest.raises(ConfigError, match="strong_fundus"):
        apply_overrides(Config(), ["data.augment=strong_fundus", "data.layout=brats"])
    with pytest.raises(ConfigError, match="dice_ce_cldice"):
        apply_overrides(Config(), ["loss.name=dice_ce_cldice", "data.num_classes=4"])


# ---------------------------------------------------------------------------------------------------- augmentation
def _blob_sample(seed: int):
    rng = np.random.default_rng(seed)
    h = w = 64
    yy, xx = np.mgrid[0:h, 0:w]
    label = np.zeros((h, w), dtype=np.int64)
    for _ in range(4):
        cy, cx, r = rng.integers(10, 54), rng.integers(10, 54), rng.integers(4, 9)
        label[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    mask = (yy - 31.5) ** 2 + (xx - 31.5) ** 2 <= 30 ** 2
    label[~mask] = 0
    image = np.repeat((4.0 * (2.0 * label - 1.0))[None], 3, axis=0).astype(np.float32)
    image[:, ~mask] = 0
    return {"image": image, "label": label, "mask": mask}


def _order_agreement(image: np.ndarray, label: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of 4-neighbour (label 1, label 0) pairs inside the mask where the image is brighter on the 1 side."""
    x = image.mean(axis=0)
    good = total = 0
    for axis in (0, 1):
        for a, b in ((slice(None, -1), slice(1, None)), (slice(1, None), slice(None, -1))):
            sa = (a, slice(None)) if axis == 0 else (slice(None), a)
            sb = (b, slice(None)) if axis == 0 else (slice(None), b)
            pair = (label[sa] == 1) & (label[sb] == 0) & mask[sa] & mask[sb]
            good += int((x[sa][pair] > x[sb][pair]).sum())
            total += int(pair.sum())
    return good / max(total, 1)


def test_strong_fundus_keeps_image_label_mask_aligned():
    aug = default_augmentation(2, "strong_fundus")
    agreements, shifted, changed = [], [], 0
    for seed in range(30):
        s = _blob_sample(seed)
        out = aug(s, np.random.default_rng(seed))
        assert out["image"].dtype == np.float32 and out["label"].dtype == np.int64 and out["mask"].dtype == bool
        assert out["image"].shape == s["image"].shape and out["label"].shape == s["label"].shape
        assert set(np.unique(out["label"])) <= {0, 1}
        assert not out["label"][~out["mask"]].any()  # label and mask moved together
        assert np.all(out["image"][:, ~out["mask"]] == 0)  # zero outside the FOV, as normalisation puts it
        changed += not np.array_equal(out["label"], s["label"])
        agreements.append(_order_agreement(out["image"], out["label"], out["mask"]))
        shifted.append(_order_agreement(out["image"], np.roll(out["label"], 3, axis=1), out["mask"]))
    assert changed >= 10  # geometry was applied in many samples
    assert np.mean(agreements) > 0.97 and min(agreements) > 0.85
    assert np.mean(shifted) < 0.7  # the check notices a 3-pixel misalignment


def test_strong_fundus_deterministic_and_changes_intensities():
    aug = default_augmentation(2, "strong_fundus")
    s = _blob_sample(0)
    a, b = aug(s, np.random.default_rng(7)), aug(s, np.random.default_rng(7))
    for key in ("image", "label", "mask"):
        np.testing.assert_array_equal(a[key], b[key])
    c = aug(s, np.random.default_rng(8))
    assert not np.array_equal(a["image"], c["image"])


def test_illumination_and_rim_darkening_are_smooth_positive_gains():
    s = _blob_sample(1)
    s["image"] = np.ones_like(s["image"])
    out = RandomIllumination(strength=(0.4, 0.4), offset_ratio=(0.0, 0.0), p=1.0)(s, np.random.default_rng(0))
    gain = out["image"][0]  # raw-space gain with mean/std ratio 0: the image times the gain
    assert gain.min() > np.exp(-0.41) and gain.max() < np.exp(0.41) and gain.std() > 0.05
    assert np.abs(np.diff(gain, axis=0)).max() < 0.1  # smooth
    rim = RandomRimDarkening(depth=(0.5, 0.5), width=(3.0, 3.0), offset_ratio=(0.0, 0.0), p=1.0)
    out = rim(s, np.random.default_rng(0))["image"][0]
    yy, xx = np.mgrid[0:64, 0:64]
    r = np.hypot(yy - 31.5, xx - 31.5)
    assert out[(r > 28.5) & (r < 30)].mean() < 0.75 and out[r < 15].min() > 0.99  # dark rim, untouched centre
    no_mask = {"image": s["image"], "label": s["label"]}
    assert rim(no_mask, np.random.default_rng(0)) is no_mask


# ------------------------------------------------------------------------------------------------ auto threshold
def test_dice_curve_matches_case_dice():
    rng = np.random.default_rng(0)
    prob, label = rng.random((40, 40)), (rng.random((40, 40)) > 0.7).astype(np.int64)
    mask = rng.random((40, 40)) > 0.2
    curve = dice_curve(prob, label, mask)
    i = THRESHOLD_GRID.index(0.5)
    assert curve[i] == pytest.approx(case_dice((prob >= 0.5).astype(np.int64), label, mask, 2))
    assert THRESHOLD_GRID[0] == 0.3 and THRESHOLD_GRID[-1] == 0.7 and len(THRESHOLD_GRID) == 21


def _constructed_case(seed: int):
    """Vessels at p 0.65, half the background at 0.61 (false positives below 0.62), the rest at 0.2; a FOV whose
    outside holds p 0.9 background that must be ignored."""
    rng = np.random.default_rng(seed)
    label = (rng.random((32, 32)) > 0.8).astype(np.int64)
    prob = np.where(label == 1, 0.65, np.where(rng.random((32, 32)) > 0.5, 0.61, 0.2))
    mask = np.ones((32, 32), dtype=bool)
    mask[:, :4] = False
    label[:, :4], prob[:, :4] = 0, 0.9
    return prob, label, mask


def test_choose_threshold_recovers_known_optimum():
    curves = [dice_curve(*_constructed_case(s)) for s in range(3)]
    t, d = choose_threshold(curves)
    assert t == 0.62 and d == pytest.approx(1.0)  # 0.62 and 0.64 both perfect: the one closer to 0.5
    # a set whose optimum is lower: background at 0.45, vessels at 0.47 -> 0.46
    prob, label, mask = _constructed_case(0)
    prob = np.where(label == 1, 0.47, np.where(prob == 0.61, 0.45, prob))
    t, _ = choose_threshold([dice_curve(prob, label, mask)])
    assert t == 0.46
    assert choose_threshold([]) == (0.5, pytest.approx(float("nan"), nan_ok=True))


class _ProbModel(torch.nn.Module):
    """Returns channel 0 of its input as the logits (so the image carries the probability map)."""

    def forward(self, x):
        return x[:, :1]


def test_validate_auto_threshold_reports_and_improves():
    cases = []
    for s in range(2):
        prob, label, mask = _constructed_case(s)
        logit = np.log(prob / (1 - prob)).astype(np.float32)
        cases.append({"id": str(s), "image": logit[None], "label": label, "mask": mask})
    cfg = config_from_dict({"data": {"patch_size": [32, 32]}, "infer": {"threshold": "auto", "overlap": 0.0}})
    m = validate(_ProbModel(), cases, cfg, torch.device("cpu"))
    assert m["threshold"] == 0.62 and m["val_dice"] == pytest.approx(1.0, abs=1e-6)
    assert m["val_dice_at_0_5"] < 0.9
    fixed = validate(_ProbModel(), cases, config_from_dict({"data": {"patch_size": [32, 32]},
                                                            "infer": {"overlap": 0.0}}), torch.device("cpu"))
    assert "threshold" not in fixed and fixed["val_dice"] == pytest.approx(m["val_dice_at_0_5"])


def test_resolve_threshold():
    assert resolve_threshold({"infer": {"threshold": "auto"}}, {"threshold": 0.58}) == 0.58
    assert resolve_threshold({"infer": {"threshold": 0.4}}, {"threshold": 0.58}) == 0.4  # a number wins
    assert resolve_threshold({"infer": {"threshold": "auto"}}, {}) == 0.5
    assert resolve_threshold({}, None) == 0.5


def test_predict_uses_stored_threshold():
    from mambaseg.engine.predict import Predictor, predict_image_2d

    def run(x):  # every pixel p = 0.6
        return torch.full((x.shape[0], 1, *x.shape[2:]), math.log(0.6 / 0.4))

    raw, _, fov = _raw(4, size=(48, 48))
    base = {"data": {"patch_size": [32, 32], "fov": True}, "infer": {"threshold": "auto", "overlap": 0.0}}
    for stored, expect in ((0.62, 0), (0.58, 1)):
        ckpt = {"config": base, "data": {"threshold": stored, "spatial_dims": 2}, "model_kwargs": {"in_channels": 3}}
        _, labels = predict_image_2d(Predictor(run, ckpt, None, torch.device("cpu")), raw, fov, 0.0, False)
        assert np.all(labels[fov] == expect) and np.all(labels[~fov] == 0)


def test_train_predict_with_recipe_options(tmp_path):
    """Tiny end-to-end run with every option: the checkpoint holds the chosen threshold and the fundus_norm,
    predict (RGB photos into a 1-channel green_clahe model) applies both."""
    from PIL import Image

    from mambaseg.engine.checkpoint import load_checkpoint
    from mambaseg.engine.predict import predict
    from mambaseg.engine.train import train

    data = write_synthetic_drive(tmp_path / "data", n_train=4, n_test=2, size=(64, 64), seed=1)
    cfg = config_from_dict({
        "model": {"name": "unet_tiny"},
        "data": {"layout": "drive", "root": str(data), "val_fraction": 0.25, "patch_size": [48, 48], "fov": True,
                 "augment": "strong_fundus", "fundus_norm": "green_clahe"},
        "loss": {"name": "dice_ce_cldice", "cldice_iters": 5},
        "train": {"epochs": 2, "iters_per_epoch": 2, "batch_size": 2, "val_every": 1},
        "infer": {"patch_size": [64, 64], "threshold": "auto"}})
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    ck = load_checkpoint(run / "checkpoint_best.pt")
    assert ck["model_kwargs"]["in_channels"] == 1 and ck["config"]["data"]["fundus_norm"] == "green_clahe"
    assert ck["config"]["infer"]["threshold"] == "auto" and ck["data"]["threshold"] in THRESHOLD_GRID
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(x["threshold"] in THRESHOLD_GRID and "val_dice_at_0_5" in x for x in lines)
    assert "validation threshold" in (run / "train.log").read_text()
    out = tmp_path / "pred"
    written = predict(run, data / "test" / "images", out, probs=True, progress=False)
    assert len(written) == 2
    t = ck["data"]["threshold"]
    for w in written:
        labels = np.array(Image.open(w)) > 0
        p = np.array(Image.open(out / "probs" / w.name)).astype(np.float64) / 65535
        fov = estimate_fov(np.moveaxis(np.array(Image.open(data / "test" / "images" / (w.stem + ".tif"))), -1, 0))
        inside = fov & (np.abs(p - t) > 1e-3)  # away from 16-bit rounding at the threshold
        np.testing.assert_array_equal(labels[inside], p[inside] >= t)
