"""Fundus-photograph normalisation options (``data.fundus_norm``), applied identically at training and predict time.

* ``none`` — today's behaviour (see :func:`mambaseg.data.plans.normalize.normalize_image`): per-channel z-score
  inside the FOV mask when the case has one (the whole image otherwise); predict uses the mask only for ``data.fov``
  models.
* ``fov_zscore`` — per image and per channel z-score computed inside the field of view only, outside set to 0; the
  FOV is the provided mask or, when there is none, estimated with :func:`estimate_fov`
  (at training and predict time alike, whatever ``data.fov`` says).
* ``green_clahe`` — one channel: the green channel of a colour photo (the grey channel of a grey one), rescaled to
  [0, 1] between its 0.5/99.5 percentiles inside the FOV, contrast-limited adaptive histogram equalisation
  (scikit-image ``exposure.equalize_adapthist``, 8x8 tiles, clip limit 0.01), then z-score inside the FOV
  (outside 0). The model has ``in_channels = 1``.

The chosen option is part of the run configuration, so it is stored in every checkpoint (``config.data``) and
:mod:`mambaseg.engine.predict` applies the same function to new photos.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from mambaseg.data.plans.normalize import normalize_image

__all__ = ["CLAHE_CLIP_LIMIT", "FUNDUS_NORMS", "clahe", "estimate_fov", "fundus_channels", "fundus_normalize",
           "green_channel"]

FUNDUS_NORMS = ("none", "fov_zscore", "green_clahe")
CLAHE_CLIP_LIMIT = 0.01


def fundus_channels(in_channels: int, norm: str) -> int:
    """Number of channels the model sees for a raw image with ``in_channels`` channels under ``norm``."""
    return 1 if norm == "green_clahe" else int(in_channels)


def green_channel(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` green channel of an RGB(A) ``(C, H, W)`` image; the channel mean for 1 or 2 channels."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {image.shape}")
    return image[1] if image.shape[0] >= 3 else image.mean(axis=0)


def clahe(channel: np.ndarray, mask: np.ndarray | None = None, clip_limit: float = CLAHE_CLIP_LIMIT) -> np.ndarray:
    """CLAHE of one ``(H, W)`` channel: robust rescale to [0, 1] (0.5/99.5 percentiles inside ``mask``), then
    ``skimage.exposure.equalize_adapthist`` with 8x8 tiles. Returns float32 in [0, 1]."""
    from skimage import exposure

    x = np.asarray(channel, dtype=np.float64)
    vals = x[mask] if mask is not None and mask.any() else x.ravel()
    lo, hi = np.percentile(vals, [0.5, 99.5])
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.float32)
    x = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return exposure.equalize_adapthist(x, clip_limit=clip_limit).astype(np.float32)


def fundus_normalize(raw: np.ndarray, mask: np.ndarray | None, norm: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """Normalise one raw fundus image ``(C, H, W)`` as ``norm`` says (``fov_zscore`` or ``green_clahe``).

    Args:
        raw: un-normalised image (raw file values).
        mask: ``(H, W)`` bool FOV mask, or None to estimate it from ``raw``.
        norm: ``fov_zscore`` or ``green_clahe``.

    Returns:
        ``(image float32 (C', H, W), mask used, stats)``: C' = C for ``fov_zscore``, 1 for ``green_clahe``; zero
        outside the mask; ``stats`` holds the z-score ``mean``/``std`` per channel.
    """
    if norm not in FUNDUS_NORMS[1:]:
        raise ValueError(f"data.fundus_norm must be one of {', '.join(FUNDUS_NORMS[1:])} here, got {norm!r}")
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {raw.shape}")
    if mask is None:
        mask = estimate_fov(raw)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != raw.shape[1:]:
        raise ValueError(f"mask shape {mask.shape} differs from the image's {raw.shape[1:]}")
    src = raw if norm == "fov_zscore" else clahe(green_channel(raw), mask)[None]
    image, stats = normalize_image(src, mask if mask.any() else None)
    return image, mask, stats


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu threshold of a 1D sample (numpy only)."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist, dtype=np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (m0 / w0 - (m0[-1] - m0) / w1) ** 2
    return float(centres[np.argmax(np.nan_to_num(between))])


def estimate_fov(image: np.ndarray) -> np.ndarray:
    """Estimate the field of view of a fundus photograph (the bright disc on a dark background).

    Uses the red channel (channel 0) of a colour image or the channel mean otherwise: a 5x5 median filter, a
    threshold at half the Otsu threshold (the background is near black, so this sits well below the darkest retina),
    a binary opening of radius ~1 % of the image side, the largest connected component and hole filling.
    On DRIVE this matches the provided masks with IoU > 0.99.

    Args:
        image: ``(C, H, W)`` raw (un-normalised) image.

    Returns:
        ``(H, W)`` bool mask.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {image.shape}")
    chan = image[0] if image.shape[0] >= 3 else image.mean(axis=0)
    chan = ndi.median_filter(chan.astype(np.float32), size=5)
    if chan.max() <= chan.min():
        return np.ones(chan.shape, dtype=bool)
    low = float(np.percentile(chan, 1))
    fov = chan > low + 0.5 * (_otsu(chan.ravel()) - low)
    radius = max(1, round(min(chan.shape) / 100))
    fov = ndi.binary_opening(fov, structure=ndi.generate_binary_structure(2, 1), iterations=radius)
    lab, n = ndi.label(fov)
    if n > 1:
        sizes = ndi.sum_labels(fov, lab, index=np.arange(1, n + 1))
        fov = lab == (1 + int(np.argmax(sizes)))
    return ndi.binary_fill_holes(fov)
