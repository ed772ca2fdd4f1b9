"""Reading one 2D case (:func:`load_case2d`).

:func:`load_case2d` reads one case and normalises the image: with
:attr:`~mambaseg.data.records.Case2D.norm` set (nnU-Net datasets) as those entries say; otherwise **per image
and per channel z-score**, ``(x - mean) / std`` with mean and std computed over the pixels inside the mask (the whole
image when there is no mask); pixels outside the mask are then set to 0 (the normalised mean). ``std`` below 1e-8 is
replaced by 1 (:func:`mambaseg.data.plans.normalize.normalize_image`); a missing field of view can be estimated
(:func:`mambaseg.data.plans.fundus.estimate_fov`).
"""

from __future__ import annotations

from mambaseg.data.errors import DataError
from mambaseg.data.io.raster import read_image, read_label, read_mask
from mambaseg.data.plans.fundus import estimate_fov
from mambaseg.data.plans.normalize import normalize_channels, normalize_image
from mambaseg.data.records import Case2D

__all__ = ["load_case2d"]


def load_case2d(case: Case2D, num_classes: int | None = 2, normalize: bool = True,
                estimate_mask: bool = False) -> dict:
    """Read and normalise one 2D case.

    Args:
        case: the case record.
        num_classes: label values must be in ``[0, num_classes)`` (None: only checked to be >= 0).
        normalize: apply the per-image, per-channel z-score described in the module docstring.
        estimate_mask: when the case has no mask, estimate a fundus FOV with :func:`estimate_fov`.

    Returns:
        ``dict(image=float32 (C, H, W), label=int64 (H, W) | None, mask=bool (H, W) | None, meta=dict)``; ``meta``
        holds the image meta plus ``id``, ``label_path``, ``mask_path`` and the normalisation ``mean``/``std``.

    Raises:
        DataError: unreadable files, bad label values, or image/label/mask sizes that differ (naming both files).
    """
    image, meta = read_image(case.image)
    hw = image.shape[1:]
    label = mask = None
    if case.label is not None:
        label, _ = read_label(case.label, num_classes)
        if label.shape != hw:
            raise DataError(f"{case.label}: label shape {label.shape} differs from image {case.image} shape {hw}")
    if case.mask is not None:
        mask, _ = read_mask(case.mask)
        if mask.shape != hw:
            raise DataError(f"{case.mask}: mask shape {mask.shape} differs from image {case.image} shape {hw}")
    elif estimate_mask:
        mask = estimate_fov(image)
    meta.update(id=case.id, label_path=None if case.label is None else str(case.label),
                mask_path=None if case.mask is None else str(case.mask),
                mask_estimated=case.mask is None and mask is not None)
    if normalize and case.norm:
        if len(case.norm) != image.shape[0]:
            raise DataError(f"{case.image}: {image.shape[0]} channel(s), the dataset's 'channel_names' list "
                            f"{len(case.norm)}")
        image, stats = normalize_channels(image, case.norm, str(case.image))
        meta.update(normalization=[dict(e) for e in case.norm], normalization_stats=stats)
    elif normalize:
        image, stats = normalize_image(image, mask)
        meta.update(stats)
    return {"image": image, "label": label, "mask": mask, "meta": meta}
