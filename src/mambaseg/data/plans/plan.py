"""Preprocessing plans: what is done to an image before the network and undone after it, for 2D and 3D alike.

A plan is *fitted* on the training cases, stored in the checkpoint (``data``: the 2D fields, or ``data.plan`` in
3D), rebuilt by :func:`plan_from_checkpoint`, and applied by prediction as ``forward`` (a case -> the network's input
array and the properties needed to go back) then ``inverse`` (the network's output -> the case's own grid):

- :class:`Plan2D`: normalisation (``data.fundus_norm``, an nnU-Net dataset's per-channel schemes, or a per-image
  z-score inside the field of view), the field of view (given or estimated), and a rescale of photos from other
  cameras so their field-of-view diameter matches the training data's; ``inverse`` resizes scores back.
- :class:`Plan3D`: the nnU-Net-style plan of :mod:`mambaseg.data.plans.preprocess` (orientation to RAS, crop to
  non-zero, normalisation, resampling to the target spacing); ``inverse`` undoes them for label maps or probabilities.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mambaseg.data.errors import DataError
from mambaseg.data.plans.fundus import estimate_fov, fundus_normalize
from mambaseg.data.plans.normalize import normalize_channels, normalize_image
from mambaseg.data.plans.preprocess import invert_prediction, preprocess_case
from mambaseg.data.plans.preprocess import plan as make_plan

__all__ = ["Plan2D", "Plan3D", "fov_diameter", "plan_from_checkpoint"]

logger = logging.getLogger(__name__)

#: a field-of-view rescale closer to 1 than this is skipped (the network has seen that much scale augmentation)
MIN_RESCALE = 0.1


def fov_diameter(mask: np.ndarray) -> float:
    """Diameter (pixels) of the disc with the area of a field-of-view mask."""
    return float(2.0 * np.sqrt(mask.sum() / np.pi))


@dataclass(frozen=True)
class Plan2D:
    """2D preprocessing (see the module docstring).

    Attributes:
        fov: the model was trained with field-of-view masks (fundus); predictions are zero outside the FOV.
        fundus_norm: ``none`` | ``fov_zscore`` | ``green_clahe`` (:mod:`mambaseg.data.plans.fundus`).
        normalization: per-channel schemes of an nnU-Net dataset
            (:func:`mambaseg.data.plans.normalize.normalize_channels`) or None.
        fov_diameter: median training FOV diameter in pixels, None when the training data had no FOV.
        source: named in error messages (the checkpoint).
    """

    fov: bool = False
    fundus_norm: str = "none"
    normalization: tuple | None = None
    fov_diameter: float | None = None
    source: str = "checkpoint"
    spatial_dims = 2

    @classmethod
    def fit(cls, train_cases: Sequence[dict], fov: bool, fundus_norm: str = "none",
            normalization: Sequence[dict] | None = None) -> Plan2D:
        """The plan of loaded training cases (each with its ``mask`` or None)."""
        diam = [fov_diameter(c["mask"]) for c in train_cases if c.get("mask") is not None]
        return cls(fov=bool(fov), fundus_norm=fundus_norm,
                   normalization=tuple(dict(e) for e in normalization) if normalization else None,
                   fov_diameter=float(np.median(diam)) if diam else None)

    def to_checkpoint(self) -> dict[str, Any]:
        """The checkpoint ``data`` keys this plan adds (``normalization``, ``fov_diameter``), as before plans."""
        out: dict[str, Any] = {}
        if self.normalization:
            out["normalization"] = [dict(e) for e in self.normalization]
        if self.fov_diameter is not None:
            out["fov_diameter"] = self.fov_diameter
        return out

    def forward(self, case: dict) -> tuple[np.ndarray, dict[str, Any]]:
        """``case``: ``image`` (C, H, W) raw, ``mask`` (H, W) or None. Returns the network input (C, h, w) float32
        and ``props`` (``shape``, ``scale``, ``mask``: the FOV used, or None)."""
        raw, mask = case["image"], case.get("mask")
        if self.fundus_norm != "none":  # as at training time, FOV estimated when none is given
            image, mask, _ = fundus_normalize(raw, mask, self.fundus_norm)
        elif self.normalization:  # per-channel schemes chosen by an nnU-Net dataset.json at training time
            image, _ = normalize_channels(raw, [dict(e) for e in self.normalization],
                                          f"{self.source}: checkpoint key 'data.normalization'")
        else:
            if self.fov and mask is None:
                mask = estimate_fov(raw)
            image, _ = normalize_image(raw, mask if (mask is not None and self.fov) else None)
        h, w = image.shape[1:]
        scale = 1.0
        if self.fov and self.fov_diameter and mask is not None and mask.any():
            scale = self.fov_diameter / fov_diameter(mask)
            if abs(scale - 1) < MIN_RESCALE:
                scale = 1.0
        if scale != 1.0:
            size = (max(8, round(h * scale)), max(8, round(w * scale)))
            image = F.interpolate(torch.from_numpy(image)[None], size=size, mode="bilinear",
                                  align_corners=False)[0].numpy()
            logger.info("rescaled %dx%d by %.3f to match the training field of view", h, w, scale)
        return image, {"shape": (h, w), "scale": scale, "mask": mask if self.fov else None}

    def inverse(self, scores: torch.Tensor, props: dict[str, Any]) -> torch.Tensor:
        """Scores (K, h, w) on the network's grid -> (K, H, W) on the image's (bilinear when it was rescaled)."""
        if props["scale"] == 1.0:
            return scores
        return F.interpolate(scores[None], size=tuple(props["shape"]), mode="bilinear", align_corners=False)[0]


@dataclass(frozen=True)
class Plan3D:
    """3D preprocessing: :func:`mambaseg.data.plans.preprocess.plan`'s dict (``plan``) applied by ``forward`` /
    ``inverse``."""

    plan: dict
    spatial_dims = 3

    @classmethod
    def fit(cls, fingerprint: dict, modality: str | Sequence[str] = "MR", patch_size: Sequence[int] | None = None,
            **kwargs: Any) -> Plan3D:
        """:func:`mambaseg.data.plans.preprocess.plan` of a dataset fingerprint."""
        return cls(make_plan(fingerprint, modality, patch_size, **kwargs))

    def to_checkpoint(self) -> dict[str, Any]:
        return {"plan": self.plan}

    def forward(self, case: dict) -> tuple[np.ndarray, dict[str, Any]]:
        """A ``load_case3d`` dict -> the network input (C, X', Y', Z') float32 and ``props``."""
        image, _, props = preprocess_case(case, self.plan)
        return np.ascontiguousarray(image, dtype=np.float32), props

    def inverse(self, prediction: np.ndarray, props: dict[str, Any]) -> np.ndarray:
        """A label map (X', Y', Z') or probabilities (K, X', Y', Z') -> the case's original voxel grid."""
        return invert_prediction(prediction, props)


def plan_from_checkpoint(cfg: Any, data: dict, source: str = "checkpoint") -> Plan2D | Plan3D:
    """The plan a checkpoint's model was trained with: ``cfg`` is its :class:`~mambaseg.config.Config`, ``data`` its
    ``data`` dict (``spatial_dims``, ``plan`` in 3D, ``normalization`` / ``fov_diameter`` in 2D)."""
    if int(data.get("spatial_dims", 2)) == 3:
        if not data.get("plan"):
            raise DataError(f"{source}: checkpoint has no 3D preprocessing plan (not a 3D model?).")
        return Plan3D(dict(data["plan"]))
    entries = data.get("normalization")
    return Plan2D(fov=bool(cfg.data.fov), fundus_norm=cfg.data.fundus_norm,
                  normalization=tuple(dict(e) for e in entries) if entries else None,
                  fov_diameter=data.get("fov_diameter"), source=str(source))
