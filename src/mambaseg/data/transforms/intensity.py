"""Intensity augmentation of the image only (:mod:`mambaseg.data.transforms`): brightness, contrast, gamma, noise
(nnU-Net's defaults) and Gaussian blur."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from .base import check_p, check_range, check_sample

__all__ = ["RandomBlur", "RandomIntensity"]


class RandomIntensity:
    """Image-only intensity changes, each drawn independently per channel (nnU-Net defaults).

    In order: multiplicative brightness, contrast around the channel mean (result clipped to the original range),
    gamma (applied on the channel rescaled to [0, 1], then scaled back; with probability ``p_invert_gamma`` on the
    inverted image), additive Gaussian noise with variance uniform in ``noise_var``.

    Args:
        brightness, contrast, gamma, noise_var: ``(low, high)`` ranges.
        p_brightness, p_contrast, p_gamma, p_invert_gamma, p_noise: probabilities.
    """

    def __init__(self, brightness: Sequence[float] = (0.75, 1.25), p_brightness: float = 0.15,
                 contrast: Sequence[float] = (0.75, 1.25), p_contrast: float = 0.15,
                 gamma: Sequence[float] = (0.7, 1.5), p_gamma: float = 0.3, p_invert_gamma: float = 0.1,
                 noise_var: Sequence[float] = (0.0, 0.1), p_noise: float = 0.1) -> None:
        self.brightness = check_range("brightness", brightness)
        self.contrast = check_range("contrast", contrast)
        self.gamma = check_range("gamma", gamma, positive=True)
        self.noise_var = check_range("noise_var", noise_var)
        if self.noise_var[0] < 0:
            raise ValueError(f"noise_var must be non-negative, got {tuple(noise_var)}")
        self.p_brightness = check_p("p_brightness", p_brightness)
        self.p_contrast = check_p("p_contrast", p_contrast)
        self.p_gamma = check_p("p_gamma", p_gamma)
        self.p_invert_gamma = check_p("p_invert_gamma", p_invert_gamma)
        self.p_noise = check_p("p_noise", p_noise)

    def _channel(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() < self.p_brightness:
            x = x * rng.uniform(*self.brightness)
        if rng.random() < self.p_contrast:
            mean, lo, hi = x.mean(), x.min(), x.max()
            x = np.clip((x - mean) * rng.uniform(*self.contrast) + mean, lo, hi)
        for invert, p in ((True, self.p_invert_gamma), (False, self.p_gamma)):
            if rng.random() < p:
                x = -x if invert else x
                mean, std, lo, hi = x.mean(), x.std(), x.min(), x.max()
                rng_ = hi - lo
                if rng_ > 0:
                    x = ((x - lo) / rng_) ** rng.uniform(*self.gamma) * rng_ + lo
                    if x.std() > 0:  # keep the channel statistics (nnU-Net retain_stats)
                        x = (x - x.mean()) / x.std() * std + mean
                x = -x if invert else x
        if rng.random() < self.p_noise:
            var = rng.uniform(*self.noise_var)
            x = x + rng.normal(0.0, np.sqrt(var), size=x.shape)
        return x

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        check_sample(sample)
        out = dict(sample)
        image = np.asarray(sample["image"], dtype=np.float32)
        out["image"] = np.ascontiguousarray(np.stack([self._channel(ch.astype(np.float64), rng) for ch in image]),
                                            dtype=np.float32)
        return out

    def __repr__(self) -> str:
        return (f"RandomIntensity(brightness={self.brightness}@{self.p_brightness}, contrast={self.contrast}"
                f"@{self.p_contrast}, gamma={self.gamma}@{self.p_gamma}/{self.p_invert_gamma}, "
                f"noise_var={self.noise_var}@{self.p_noise})")


class RandomBlur:
    """With probability ``p`` per sample, blur each channel (with probability ``p_channel``) by a Gaussian of
    σ uniform in ``sigma`` (voxels, image only)."""

    def __init__(self, sigma: Sequence[float] = (0.5, 1.0), p: float = 0.2, p_channel: float = 0.5) -> None:
        self.sigma = check_range("sigma", sigma, positive=True)
        self.p = check_p("p", p)
        self.p_channel = check_p("p_channel", p_channel)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        check_sample(sample)
        if rng.random() >= self.p:
            return sample
        out = dict(sample)
        chans = []
        for ch in np.asarray(sample["image"], dtype=np.float32):
            chans.append(ndi.gaussian_filter(ch, rng.uniform(*self.sigma)) if rng.random() < self.p_channel else ch)
        out["image"] = np.ascontiguousarray(np.stack(chans), dtype=np.float32)
        return out

    def __repr__(self) -> str:
        return f"RandomBlur(sigma={self.sigma}, p={self.p}, p_channel={self.p_channel})"
