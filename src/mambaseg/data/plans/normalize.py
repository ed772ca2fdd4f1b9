"""Intensity normalisation, the part of a plan that maps intensities: the per-channel schemes of a volume plan or of
an nnU-Net dataset (:func:`normalization_entries` chooses them, :func:`normalize_channels` applies them, see
:data:`NORM_SCHEMES`), and the default 2D per-image z-score (:func:`normalize_image`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["NORM_SCHEMES", "brain_mask", "median_relative_size_after_crop", "modality_name", "normalization_entries",
           "normalize_channels", "normalize_image"]

_MODALITIES = {"MR": "MR", "MRI": "MR", "CT": "CT"}
# nnU-Net v2 normalisation names accepted as a channel's modality (matched case-insensitively) -> canonical name
_NNUNET_NAMES = {"zscore": "zscore", "nonorm": "noNorm", "rescale_to_0_1": "rescale_to_0_1",
                 "rgb_to_0_1": "rgb_to_0_1"}
# the ``scheme`` of a plan's normalisation entry: how :func:`normalize_channels` maps a channel's intensities.
NORM_SCHEMES = ("zscore_nonzero", "zscore_brain", "zscore", "ct", "ct_window", "none", "rescale_to_0_1", "rgb_to_0_1")
# nnU-Net uses the non-zero mask for z-scoring when cropping to it leaves less than this median fraction of a case
_MASK_FOR_NORM_BELOW = 0.75


def modality_name(m: Any) -> str:
    """``"MR"``/``"CT"`` (legacy, upper-case aliases) or the canonical nnU-Net name; ValueError otherwise."""
    key = _MODALITIES.get(str(m).upper()) or _NNUNET_NAMES.get(str(m).casefold())
    if key is None:
        raise ValueError(f"modality must be 'MR', 'CT' or an nnU-Net normalisation name (zscore, noNorm, "
                         f"rescale_to_0_1, rgb_to_0_1), got {m!r}")
    return key


def median_relative_size_after_crop(fp: dict[str, Any]) -> float:
    """Median over the cases of (voxels in the non-zero bounding box) / (voxels in the case), as nnU-Net's
    fingerprint ``median_relative_size_after_cropping``; 1.0 when the fingerprint has no shapes."""
    shapes, cropped = fp.get("shapes") or [], fp.get("shapes_after_crop") or []
    if not shapes or len(shapes) != len(cropped):
        return 1.0
    rel = [float(np.prod(c, dtype=np.float64) / max(np.prod(s, dtype=np.float64), 1.0))
           for s, c in zip(shapes, cropped)]
    return float(np.median(rel))


def normalization_entries(modalities: Sequence[str], fp: dict[str, Any] | None = None,
                          ct_window: tuple[float, float] | None = None,
                          shared_mask: bool = False) -> list[dict[str, Any]]:
    """The plan's ``normalization`` list: one ``{scheme, ...}`` entry per channel (see :func:`normalize_channels`).

    Per channel ``modalities[c]``:

    - ``MR`` / ``MRI`` -> ``zscore_nonzero`` (mambaseg's historical 3D default: z-score on the non-zero voxels), or
      ``zscore_brain`` with ``shared_mask`` (z-score inside one mask for all channels: the union of their non-zero
      voxels with holes filled, nnU-Net's behaviour);
    - ``CT`` -> ``ct`` with the fingerprint's foreground ``percentile_00_5``/``percentile_99_5``/``mean``/``std`` of
      that channel (nnU-Net ``CTNormalization``: the same clip and z-score for every case), or ``ct_window``;
    - ``zscore`` -> per-case z-score, as nnU-Net's ``ZScoreNormalization``: over the non-zero voxels only
      (``zscore_nonzero``; ``zscore_brain`` with ``shared_mask``) when cropping to the non-zero box left less than
      3/4 of the median case (:func:`median_relative_size_after_crop` < 0.75: brain-like data, nnU-Net's
      ``use_mask_for_norm``), otherwise over every voxel (``zscore``);
    - ``noNorm`` -> ``none``; ``rescale_to_0_1`` -> per-case min-max; ``rgb_to_0_1`` -> ``x / 255``.

    Names are matched case-insensitively (``str.casefold``); an unknown name is a ValueError here - the
    nnU-Net fallback of unknown *channel names* to ``zscore`` happens in
    :func:`mambaseg.data.layouts.dataset_json.channel_modalities`.

    Args:
        modalities: one name per channel.
        fp: the fingerprint (:mod:`.fingerprint`); needed for ``CT`` (intensity statistics) and ``zscore`` (crop size).
        ct_window: ``(lo, hi)`` HU window for CT channels instead of the statistics.
    """
    out: list[dict[str, Any]] = []
    for c, m in enumerate(modalities):
        key = modality_name(m)
        masked_scheme = "zscore_brain" if shared_mask else "zscore_nonzero"
        if key == "MR":
            out.append(dict(scheme=masked_scheme))
        elif key == "CT" and ct_window is not None:
            lo, hi = (float(v) for v in ct_window)
            if not hi > lo:
                raise ValueError(f"ct_window must be (lo, hi) with hi > lo, got {ct_window}")
            out.append(dict(scheme="ct_window", lower=lo, upper=hi))
        elif key == "CT":
            if fp is None or str(c) not in fp.get("intensity", {}):
                raise ValueError(f"channel {c}: CT normalisation needs the fingerprint's intensity statistics")
            st = fp["intensity"][str(c)]
            out.append(dict(scheme="ct", lower=st["percentile_00_5"], upper=st["percentile_99_5"], mean=st["mean"],
                            std=max(st["std"], 1e-8)))
        elif key == "zscore":
            masked = fp is not None and median_relative_size_after_crop(fp) < _MASK_FOR_NORM_BELOW
            out.append(dict(scheme=masked_scheme if masked else "zscore"))
        else:
            out.append(dict(scheme={"noNorm": "none"}.get(key, key)))
    return out


def normalize_channels(image: np.ndarray, schemes: Sequence[dict],
                       where: str = "plan") -> tuple[np.ndarray, list[dict]]:
    """Normalise each channel of ``image`` ``(C, *S)`` as its entry of ``schemes`` says (computed in float64).

    Schemes (``entry["scheme"]``; nnU-Net v2 class in brackets):

    - ``zscore_nonzero``: ``(x - mean) / std`` over the non-zero voxels, the others set to 0 [``ZScoreNormalization``
      with ``use_mask_for_norm``];
    - ``zscore_brain``: the same inside ONE mask shared by every ``zscore_brain`` channel: the union of the non-zero
      voxels of all channels, holes filled (:func:`brain_mask`), the others set to 0 [nnU-Net's crop to non-zero +
      ``use_mask_for_norm``: a voxel dark in one modality but inside the brain is normalised, not zeroed];
    - ``zscore``: ``(x - mean) / std`` over every voxel [``ZScoreNormalization``];
    - ``ct``: ``(clip(x, lower, upper) - mean) / std`` with the dataset-wide values stored in the entry
      [``CTNormalization``];
    - ``ct_window``: ``(clip(x, lower, upper) - lower) / (upper - lower)`` (TransUNet-style HU window);
    - ``none``: unchanged [``NoNormalization``];
    - ``rescale_to_0_1``: ``(x - min) / (max - min)`` per case [``RescaleTo01Normalization``];
    - ``rgb_to_0_1``: ``x / 255`` clipped to [0, 1] [``RGBTo01Normalization``, which asserts 0..255 instead].

    Standard deviations and ranges below 1e-8 are replaced by 1e-8, as nnU-Net does.

    Returns:
        ``(float32 image, per-channel statistics used: {mean, std} or {min, max} or {})``.

    Raises:
        ValueError: the entry count differs from the channel count, or an unknown scheme (naming ``where``).
    """
    if len(schemes) != image.shape[0]:
        raise ValueError(f"{where} has {len(schemes)} normalisation entries, image has {image.shape[0]} channels")
    out, stats = np.empty(image.shape, dtype=np.float32), []
    shared = None
    for c, sch in enumerate(schemes):
        x = np.asarray(image[c], dtype=np.float64)
        name = sch.get("scheme") if isinstance(sch, dict) else None
        if name in ("zscore_nonzero", "zscore_brain"):
            if name == "zscore_brain":
                shared = brain_mask(image) if shared is None else shared
                mask = shared
            else:
                mask = x != 0
            vals = x[mask] if mask.any() else x.ravel()
            mean, std = float(vals.mean()), float(max(vals.std(), 1e-8))
            x = np.where(mask, (x - mean) / std, 0.0)
            stats.append(dict(mean=mean, std=std))
        elif name == "zscore":
            mean, std = float(x.mean()), float(max(x.std(), 1e-8))
            x = (x - mean) / std
            stats.append(dict(mean=mean, std=std))
        elif name == "ct":
            x = (np.clip(x, sch["lower"], sch["upper"]) - sch["mean"]) / sch["std"]
            stats.append({})
        elif name == "ct_window":
            x = (np.clip(x, sch["lower"], sch["upper"]) - sch["lower"]) / (sch["upper"] - sch["lower"])
            stats.append({})
        elif name == "none":
            stats.append({})
        elif name == "rescale_to_0_1":
            lo, hi = float(x.min()), float(x.max())
            x = (x - lo) / max(hi - lo, 1e-8)
            stats.append(dict(min=lo, max=hi))
        elif name == "rgb_to_0_1":
            x = np.clip(x / 255.0, 0.0, 1.0)
            stats.append({})
        else:
            raise ValueError(f"{where}: unknown normalisation scheme {name!r} for channel {c}, expected one of "
                             f"{', '.join(NORM_SCHEMES)}")
        out[c] = x
    return out, stats


def brain_mask(image: np.ndarray) -> np.ndarray:
    """bool ``(*S)``: the voxels non-zero in any channel of ``image`` ``(C, *S)``, holes filled
    (``scipy.ndimage.binary_fill_holes``), as nnU-Net's non-zero mask."""
    return ndimage.binary_fill_holes(np.any(np.asarray(image) != 0, axis=0))


def normalize_image(image: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Per-channel z-score inside ``mask`` (whole image without one); outside the mask is set to 0.

    Args:
        image: ``(C, *S)`` float array.
        mask: optional ``S``-shaped bool mask.

    Returns:
        ``(normalised float32 image, {'mean': [...], 'std': [...]})``.
    """
    image = np.asarray(image, dtype=np.float32)
    out = np.empty_like(image)
    means, stds = [], []
    for c in range(image.shape[0]):
        vals = image[c][mask] if mask is not None and mask.any() else image[c]
        mean, std = float(vals.mean()), float(vals.std())
        std = std if std > 1e-8 else 1.0
        out[c] = (image[c] - mean) / std
        means.append(mean)
        stds.append(std)
    if mask is not None:
        out[:, ~mask] = 0.0
    return out, {"mean": means, "std": stds}
