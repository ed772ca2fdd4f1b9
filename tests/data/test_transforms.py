"""N-D augmentation transforms and foreground-biased patch sampling."""

from __future__ import annotations

import numpy as np
import pytest

from mambaseg.data.sampling import pad_to_size, sample_patch
from mambaseg.data.transforms import (
    Compose,
    RandomAffine,
    RandomBlur,
    RandomFlip,
    RandomIntensity,
    RandomRot90,
    default_augmentation,
    rotation_matrix,
)


def _sample(shape, seed=0, channels=2) -> dict:
    """Image channel 0 is the label as float, so geometric consistency can be checked pixel-wise."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.int64)
    label[tuple(slice(s // 4, s // 2 + 1) for s in shape)] = 1
    label[tuple(slice(s // 2 + 1, 3 * s // 4) for s in shape)] = 2
    image = np.concatenate([label[None].astype(np.float32), rng.normal(size=(channels - 1,) + shape)]).astype(
        np.float32)
    return {"image": image, "label": label, "mask": label > 0, "meta": {"id": "x"}}


def _consistent(out: dict) -> None:
    np.testing.assert_array_equal(out["image"][0], out["label"].astype(np.float32))
    np.testing.assert_array_equal(out["mask"], out["label"] > 0)


@pytest.mark.parametrize("shape", [(6, 7), (4, 5, 6)])
def test_flip_exact_and_consistent(shape):
    s = _sample(shape)
    out = RandomFlip(axes=(0, -1), p=1.0)(s, np.random.default_rng(0))
    axes = (0, len(shape) - 1)
    np.testing.assert_array_equal(out["label"], np.flip(s["label"], axes))
    np.testing.assert_array_equal(out["image"], np.flip(s["image"], tuple(a + 1 for a in axes)))
    _consistent(out)
    assert out["image"].flags.c_contiguous and out["meta"] is s["meta"]
    assert RandomFlip(p=0.0)(s, np.random.default_rng(0)) is s


def test_flip_probability_is_per_axis():
    s = _sample((5, 6))
    flips = RandomFlip(p=0.5)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(60):
        lab = flips(s, rng)["label"]
        seen.add(next(k for k, ax in enumerate([(), (0,), (1,), (0, 1)])
                      if np.array_equal(lab, np.flip(s["label"], ax) if ax else s["label"])))
    assert seen == {0, 1, 2, 3}


@pytest.mark.parametrize("shape", [(6, 6), (3, 5, 5)])
def test_rot90(shape):
    s = _sample(shape)
    out = RandomRot90(p=1.0)(s, np.random.default_rng(1))
    n = len(shape)
    candidates = [np.rot90(s["label"], k, axes=(n - 2, n - 1)) for k in (1, 2, 3)]
    assert any(np.array_equal(out["label"], c) for c in candidates)
    assert not np.array_equal(out["label"], s["label"])
    _consistent(out)


def test_affine_known_rotation_matches_rot90(monkeypatch):
    s = _sample((9, 9))
    aff = RandomAffine(rotate_deg=90.0, p=1.0)
    monkeypatch.setattr(aff, "sample_matrix", lambda ndim, rng: rotation_matrix(2, {(0, 1): np.pi / 2}))
    out = aff(s, np.random.default_rng(0))
    rotated = [np.rot90(s["label"], k) for k in (1, 3)]
    assert any(np.array_equal(out["label"], r) for r in rotated)
    np.testing.assert_allclose(out["image"][0], out["label"], atol=1e-5)
    np.testing.assert_array_equal(out["mask"], out["label"] > 0)


def test_affine_scale_enlarges_content(monkeypatch):
    label = np.zeros((21, 21), np.int64)
    label[8:13, 8:13] = 1  # 5x5 square at the centre
    s = {"image": label[None].astype(np.float32), "label": label}
    aff = RandomAffine(p=1.0)
    monkeypatch.setattr(aff, "sample_matrix", lambda ndim, rng: 2.0 * np.eye(2))
    out = aff(s, np.random.default_rng(0))
    assert 80 <= out["label"].sum() <= 121  # ~ (2 * 5)^2 = 100
    assert out["label"][10, 10] == 1 and out["label"][4, 4] == 0


@pytest.mark.parametrize("shape,planes", [((24, 24), "all"), ((12, 14, 16), "all"), ((12, 14, 16), "random")])
def test_affine_random_consistent(shape, planes):
    s = _sample(shape, channels=1)
    out = RandomAffine(rotate_deg=40.0, scale=(0.8, 1.2), p=1.0, planes=planes)(s, np.random.default_rng(2))
    assert out["image"].shape == s["image"].shape and out["image"].dtype == np.float32
    assert out["label"].dtype == np.int64 and out["mask"].dtype == bool
    assert not np.array_equal(out["label"], s["label"])
    assert set(np.unique(out["label"])) <= {0, 1, 2}
    # linear image vs nearest label agree away from edges
    assert np.mean(np.round(out["image"][0]) == out["label"]) > 0.9
    np.testing.assert_array_equal(out["mask"], out["label"] > 0)


def test_rotation_matrix_is_orthonormal():
    m = rotation_matrix(3, {(0, 1): 0.3, (0, 2): -1.1, (1, 2): 2.0})
    np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(m) == pytest.approx(1.0)


def test_affine_never_triggered_returns_input():
    s = _sample((8, 8))
    assert RandomAffine(p=0.0, p_scale=0.0)(s, np.random.default_rng(0)) is s


def test_intensity_only_changes_image():
    s = _sample((8, 9))
    before = {k: v.copy() for k, v in s.items() if k != "meta"}
    t = RandomIntensity(brightness=(2.0, 2.0), p_brightness=1.0, p_contrast=0.0, p_gamma=0.0, p_invert_gamma=0.0,
                        p_noise=0.0)
    out = t(s, np.random.default_rng(0))
    np.testing.assert_allclose(out["image"], 2.0 * s["image"], rtol=1e-6)
    for k, v in before.items():
        np.testing.assert_array_equal(s[k], v)  # input not mutated
    assert out["label"] is s["label"] and out["mask"] is s["mask"]


def test_gamma_keeps_stats_and_noise_changes():
    s = _sample((16, 16))
    s["image"][1] = np.abs(s["image"][1])
    t = RandomIntensity(p_brightness=0, p_contrast=0, p_gamma=1.0, p_invert_gamma=0.0, p_noise=0)
    out = t(s, np.random.default_rng(3))
    assert not np.allclose(out["image"][1], s["image"][1])
    np.testing.assert_allclose(out["image"][1].mean(), s["image"][1].mean(), atol=1e-4)
    np.testing.assert_allclose(out["image"][1].std(), s["image"][1].std(), rtol=1e-4)
    noisy = RandomIntensity(p_brightness=0, p_contrast=0, p_gamma=0, p_invert_gamma=0, p_noise=1.0,
                            noise_var=(0.04, 0.04))(s, np.random.default_rng(0))
    assert np.std(noisy["image"] - s["image"]) == pytest.approx(0.2, rel=0.15)


def test_blur_smooths():
    s = _sample((32, 32))
    out = RandomBlur(p=1.0, p_channel=1.0)(s, np.random.default_rng(0))
    assert np.abs(np.diff(out["image"][1], axis=0)).mean() < np.abs(np.diff(s["image"][1], axis=0)).mean()


@pytest.mark.parametrize("dims,shape", [(2, (20, 22)), (3, (10, 12, 14))])
@pytest.mark.parametrize("strength", ["none", "light", "default", "strong"])
def test_default_augmentation(dims, shape, strength):
    aug = default_augmentation(dims, strength)
    s = _sample(shape)
    a = aug(s, np.random.default_rng(5))
    b = aug(s, np.random.default_rng(5))
    for key in ("image", "label", "mask"):
        np.testing.assert_array_equal(a[key], b[key])  # deterministic per generator
        assert a[key].shape == s[key].shape and a[key].dtype == s[key].dtype
    if strength == "none":
        assert a is s


def test_bad_arguments():
    with pytest.raises(ValueError, match="p must be in"):
        RandomFlip(p=1.5)
    with pytest.raises(ValueError, match="axes entry 2"):
        RandomFlip(axes=(2,), p=1.0)(_sample((4, 4)), np.random.default_rng(0))
    with pytest.raises(ValueError, match="scale"):
        RandomAffine(scale=(1.2, 0.8))
    with pytest.raises(ValueError, match="strength"):
        default_augmentation(2, "extreme")
    with pytest.raises(ValueError, match="spatial_dims"):
        default_augmentation(1)
    with pytest.raises(ValueError, match="label"):
        RandomFlip(p=1.0)({"image": np.zeros((1, 4, 4), np.float32), "label": np.zeros((4, 5))},
                          np.random.default_rng(0))
    assert isinstance(default_augmentation(2), Compose)


# ---------------------------------------------------------------------------------------------------------------
# patch sampling
# ---------------------------------------------------------------------------------------------------------------
def _coord_sample(shape) -> dict:
    """Image channel c holds the coordinate along spatial axis c, so a crop reveals where it came from."""
    grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    label = np.zeros(shape, np.int64)
    return {"image": np.stack(grids).astype(np.float32), "label": label, "mask": np.ones(shape, bool)}


@pytest.mark.parametrize("shape,patch", [((20, 30), (8, 10)), ((10, 12, 14), (4, 6, 8))])
def test_patch_is_a_contiguous_crop(shape, patch):
    s = _coord_sample(shape)
    out = sample_patch(s, patch, np.random.default_rng(0), fg_prob=0.0)
    assert out["image"].shape == (len(shape),) + patch and out["label"].shape == patch
    origin = out["image"][(slice(None),) + (0,) * len(shape)].astype(int)
    box = tuple(slice(o, o + p) for o, p in zip(origin, patch))
    np.testing.assert_array_equal(out["image"], s["image"][(slice(None),) + box])


def test_fg_prob_one_always_contains_foreground():
    s = _coord_sample((64, 64))
    s["label"][50, 7] = 1
    s["label"][10, 40] = 2
    rng = np.random.default_rng(0)
    hits = {1: 0, 2: 0}
    for _ in range(40):
        out = sample_patch(s, (16, 16), rng, fg_prob=1.0)
        present = set(np.unique(out["label"])) - {0}
        assert len(present) == 1
        hits[present.pop()] += 1
    assert hits[1] > 5 and hits[2] > 5
    for _ in range(20):
        assert 2 in sample_patch(s, (16, 16), rng, fg_prob=1.0, fg_classes=[2])["label"]


def test_fg_centring_when_possible():
    s = _coord_sample((64, 64))
    s["label"][30, 33] = 1
    out = sample_patch(s, (9, 9), np.random.default_rng(0), fg_prob=1.0)
    assert out["label"][4, 4] == 1  # centred on the only foreground voxel


def test_uniform_sampling_rarely_hits_small_foreground():
    s = _coord_sample((100, 100))
    s["label"][0:3, 0:3] = 1
    rng = np.random.default_rng(1)
    hits = sum(sample_patch(s, (10, 10), rng, fg_prob=0.0)["label"].any() for _ in range(200))
    assert hits < 20  # uniform: P(hit) ~ (3+9)^2 / 91^2 ~ 2 %


def test_padding_when_smaller_than_patch():
    s = _coord_sample((5, 6))
    s["image"] += 1.0
    out = sample_patch(s, (8, 6), np.random.default_rng(0))
    assert out["image"].shape == (2, 8, 6) and out["mask"].shape == (8, 6)
    # 3 padded rows split 1 before / 2 after, image 0, label 0, mask False
    assert np.all(out["image"][:, 0] == 0) and np.all(out["image"][:, -2:] == 0)
    assert not out["mask"][0].any() and out["mask"][1:6].all() and not out["mask"][6:].any()
    np.testing.assert_array_equal(out["image"][:, 1:6], s["image"])
    assert pad_to_size(s, (3, 3)) is s


def test_sampling_bad_arguments():
    s = _coord_sample((8, 8))
    with pytest.raises(ValueError, match="patch_size"):
        sample_patch(s, (4, 4, 4), np.random.default_rng(0))
    with pytest.raises(ValueError, match="fg_prob"):
        sample_patch(s, (4, 4), np.random.default_rng(0), fg_prob=2.0)
