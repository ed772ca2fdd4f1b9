"""mambaseg's own components for the MONAI bundle of a 2D model (named by ``_target_`` in ``configs/inference.json``).

A 2D bundle runs the steps of ``mambaseg predict`` itself, so that its masks are the same: the same reader (PNG,
TIF, GIF, JPG, BMP, NIfTI), the model's preprocessing plan (field-of-view estimation or ``--mask``-style masks,
FOV z-score, rescaling to the training FOV diameter, ``data.fundus_norm``), the same sliding window, the plan's
inverse, threshold and FOV masking, and the same 0/255 (or label-value) PNG. Each piece is a plain callable that
MONAI's ``Compose`` and the config's ``run`` expression call:

* :func:`image_list` — the datalist: every supported image of a folder (an error when there is none; the 3D
  bundles' datalist goes through :func:`require_inputs` for the same reason);
* :class:`ReadImaged` — reads ``image`` (and its FOV mask from ``mask_dir`` when given);
* :class:`PlanForwardd` — the plan's forward (``image`` becomes the network input, ``props`` what the inverse needs);
* :class:`SlidingWindowInferer2D` — ``inferer(image, network)``: mambaseg's sliding window, logits (K, H, W);
* :class:`PlanInversed` — the plan's inverse, probabilities, threshold and FOV mask: ``pred`` becomes the label map;
* :class:`SaveMaskd` — writes ``<output_dir>/<name>_<postfix>.png`` (complete or absent).

They share a :class:`BundleModel`: the checkpoint's stored configuration and data dict (``configs/mambaseg.json``)
around the bundle's network, i.e. the :class:`~mambaseg.engine.predict.Predictor` that ``mambaseg predict`` builds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..data.errors import DataError
from ..data.io.png import write_png
from ..data.io.raster import read_image, read_mask
from ..data.io.suffixes import SUPPORTED_2D, stem_of
from ..data.plans.fundus import fundus_channels
from ..engine.predict.images import Images, collect_inputs, find_mask
from ..engine.predict.pipeline import segment
from ..engine.predict.predictor import Predictor
from ..engine.threshold import resolve_threshold
from ..utils.atomic import atomic_path

__all__ = ["BundleModel", "PlanForwardd", "PlanInversed", "ReadImaged", "SaveMaskd", "SlidingWindowInferer2D",
           "image_list", "require_inputs"]

SETUP_FILE = "mambaseg.json"  # configs/<SETUP_FILE>: model_name, model_kwargs, config, data of the checkpoint


def image_list(folder: str | Path) -> list[dict]:
    """``[{"image": path}, ...]`` for every image of ``folder`` that ``mambaseg predict`` reads (sorted).

    Raises:
        DataError: the folder is missing or holds no supported image (one line naming it and the formats).
    """
    return [{"image": str(f)} for f in collect_inputs(folder, SUPPORTED_2D)]


def require_inputs(items: list, folder: str | Path, pattern: str) -> list:
    """The 3D bundle's datalist, refused when empty: a folder without input files is an error naming it (not a run
    that writes nothing)."""
    if not items:
        raise DataError(f"{folder}: no input files matching {pattern!r} (the bundle's dataset_dir).")
    return items


class BundleModel:
    """The bundle's network with the configuration it was trained with: a ``mambaseg predict`` predictor.

    Args:
        setup_file: ``configs/mambaseg.json`` of the bundle.
        network: the bundle's network (weights loaded by the config's ``load_weights`` before inference).
        device: where the network runs (the bundle's ``device``).
    """

    def __init__(self, setup_file: str | Path, network: torch.nn.Module, device: str | torch.device = "cpu"):
        path = Path(setup_file)
        try:
            setup = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot read the bundle's mambaseg setup ({e}).") from None
        dev = torch.device(device)

        def run(x: torch.Tensor) -> torch.Tensor:
            return network(x.to(dev)).float()

        self.network = network
        self.predictor = Predictor(run, setup, path, dev)
        self.images = Images(self.predictor)
        self.threshold = resolve_threshold(self.predictor.config, self.predictor.ckpt.get("data"))


class ReadImaged:
    """Read ``d["image"]`` (a path) as ``mambaseg predict`` does: ``image`` (C, H, W) raw, ``mask`` (H, W) from
    ``mask_dir`` (the FOV masks of ``predict --mask``) or None (a fundus model's plan then estimates the FOV), and
    ``name`` (the file's stem)."""

    def __init__(self, model: BundleModel, mask_dir: str | Path = ""):
        self.model = model
        self.mask_dir = Path(mask_dir) if mask_dir else None

    def __call__(self, d: dict) -> dict:
        f = Path(d["image"])
        raw, _ = read_image(f)
        channels = self.model.predictor.in_channels
        norm = self.model.predictor.cfg.data.fundus_norm
        if fundus_channels(raw.shape[0], norm) != channels:
            raise DataError(f"{f}: image has {raw.shape[0]} channel(s), the model expects {channels}.")
        mask = None
        mask_file = find_mask(self.mask_dir, stem_of(f))
        if mask_file is not None:
            mask, _ = read_mask(mask_file)
            if mask.shape != raw.shape[1:]:
                raise DataError(f"{mask_file}: mask shape {mask.shape} differs from image {f} shape {raw.shape[1:]}.")
        return dict(d, image=raw, mask=mask, name=stem_of(f), path=str(f))


class PlanForwardd:
    """The model's preprocessing plan: ``image`` becomes the network input (C, H', W'), ``props`` what
    :class:`PlanInversed` needs (the FOV mask, the scale)."""

    def __init__(self, model: BundleModel):
        self.model = model

    def __call__(self, d: dict) -> dict:
        image, props = self.model.predictor.plan.forward({"image": d["image"], "mask": d.get("mask")})
        return dict(d, image=image, props=props)


class SlidingWindowInferer2D:
    """``inferer(image, network)`` -> logits (K, H', W'): mambaseg's sliding window with the model's tile, overlap,
    blending, batch size and mirroring TTA (``infer.tta``), as ``mambaseg predict`` runs it. ``network`` is the
    bundle's (the model's own network runs it; the argument keeps MONAI's inferer signature)."""

    def __init__(self, model: BundleModel):
        self.model = model

    def __call__(self, image, network=None) -> torch.Tensor:
        pred = self.model.predictor
        if network is not None and network is not self.model.network:
            raise ValueError("SlidingWindowInferer2D: the network differs from the bundle model's network.")
        arr = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        with torch.no_grad():
            return segment(pred, arr, self.model.images.tile, pred.cfg.infer.overlap, bool(pred.cfg.infer.tta))


class PlanInversed:
    """``pred`` (logits) becomes the label map (H, W) on the input image's grid: the plan's inverse, sigmoid/softmax,
    threshold (the checkpoint's, ``auto`` included) or argmax, zero outside the field of view."""

    def __init__(self, model: BundleModel):
        self.model = model

    def __call__(self, d: dict) -> dict:
        labels, probs = self.model.images.inverse(d["pred"], d["props"], self.model.threshold)
        return dict(d, pred=labels, probs=probs)


class SaveMaskd:
    """Write ``pred`` as ``<output_dir>/<name>_<output_postfix>.png``: 0/255 for a binary model, label values
    otherwise (as ``mambaseg predict``); written to a temporary name and renamed."""

    def __init__(self, output_dir: str | Path, output_postfix: str = "seg", binary: bool = True):
        self.output_dir, self.postfix, self.binary = Path(output_dir), str(output_postfix), bool(binary)

    def __call__(self, d: dict) -> dict:
        labels = np.asarray(d["pred"])
        self.output_dir.mkdir(parents=True, exist_ok=True)
        target = self.output_dir / (f"{d['name']}_{self.postfix}.png" if self.postfix else f"{d['name']}.png")
        with atomic_path(target) as tmp:
            write_png(tmp, (labels * 255 if self.binary else labels).astype(np.uint8))
        return dict(d, output=str(target))
