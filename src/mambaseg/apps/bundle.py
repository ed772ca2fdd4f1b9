"""MONAI bundle export: a trained model as a folder that MONAI's bundle tools can run for inference.

:func:`export_bundle` writes (see MONAI's *Bundle Specification*)::

    OUT/
      configs/metadata.json    versions, task, authors, license, network_data_format (inputs/outputs)
      configs/inference.json   network_def, preprocessing, SlidingWindowInferer, postprocessing, run
      configs/logging.conf     the logging set-up MONAI's runner reads by default
      configs/metadata_schema.json  the JSON schema of metadata.json (verify_metadata offline)
      configs/mambaseg.json    2D: the checkpoint's model name, kwargs, config and data (mambaseg's components)
      models/model.pt          the state_dict (plain tensors, loads with ``torch.load(weights_only=True)``)
      docs/README.md           how to run it: ``python -m monai.bundle run --config_file configs/inference.json``
      LICENSE                  mambaseg's license (Apache-2.0)

``network_def`` is ``{"_target_": "mambaseg.models.build_model", "name": ..., **model_kwargs}``, so mambaseg must be
installed where the bundle runs (the networks are mambaseg's). Inference uses only MONAI components (no
pytorch-ignite): a ``Dataset`` over the input folder, ``preprocessing``, the ``inferer`` and ``postprocessing`` per
case, in the config's ``run`` expressions.

How close the MONAI pipeline is to ``mambaseg predict``:

* 3D: ``Orientationd`` RAS, ``CropForegroundd`` on non-zero voxels, the plan's normalisation (MR: z-score of the
  non-zero voxels, ``NormalizeIntensityd(nonzero=True, channel_wise=True)``, identical; CT: clip to the
  foreground percentiles and z-score with the dataset statistics, ``ScaleIntensityRanged`` + ``NormalizeIntensityd``
  with fixed values, identical; CT window: ``ScaleIntensityRanged`` to [0, 1], identical), ``Spacingd`` to the
  plan's target spacing (``scale_extent``: voxel extents aligned, the same grid shape and first voxel centre as
  mambaseg's ``scipy.ndimage.zoom(grid_mode=True)``; MONAI's cubic spline values differ slightly when the spacing
  changes, not at all when it does not), the sliding window
  with the same tile, overlap, Gaussian blending (sigma 1/8 of the tile) and batch size, then softmax/sigmoid,
  ``Invertd`` (probabilities resampled back; mambaseg resamples the label map instead), argmax/threshold and
  ``SaveImaged`` (``<case>_seg.nii.gz``, uint8).
* 2D: the steps of ``mambaseg predict`` itself, named in the config by ``_target_`` (mambaseg's components,
  :mod:`mambaseg.apps.bundle_components`, configured by ``configs/mambaseg.json``: the checkpoint's model name,
  kwargs, config and data dict): the reader of every format predict reads (PNG, TIF, GIF, JPG, BMP, NIfTI; an empty
  folder is an error), the model's plan (field of view from ``mask_dir`` or estimated, FOV z-score, rescaling to the
  training FOV diameter, ``data.fundus_norm``), the same sliding window, the plan's inverse, threshold (``auto``
  included) and FOV masking, the same 0/255 or label-value PNG (``<image>_seg.png``): identical masks.

``configs/metadata.json`` has a ``schema`` (``configs/metadata_schema.json``, a copy of the package's
``bundle_meta_schema.json``) that ``python -m monai.bundle verify_metadata --filepath configs/metadata_schema.json``
checks without a network connection. ``python -m monai.bundle`` needs ``fire`` (``pip install 'mambaseg[bundle]'``,
which also brings ``jsonschema`` for ``verify_metadata``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..engine.checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint_path, stored_config
from ..resources import package_version
from ..utils.atomic import set_default_mode
from ..utils.jsonable import to_jsonable
from .bundle_components import SETUP_FILE

__all__ = ["REQUIRED_METADATA_KEYS", "REQUIRED_TENSOR_KEYS", "bundle_inference_config", "bundle_metadata",
           "check_metadata", "export_bundle"]

logger = logging.getLogger(__name__)

# mandatory keys of metadata.json and of each tensor format specifier (MONAI Bundle Specification)
# (the specification's optional_packages_version is required_packages_version since MONAI 1.3; either is accepted)
REQUIRED_METADATA_KEYS = ("version", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
                          "task", "description", "authors", "copyright", "network_data_format")
REQUIRED_TENSOR_KEYS = ("type", "format", "modality", "num_channels", "spatial_shape", "dtype", "value_range",
                        "is_patch_data", "channel_def")
BUNDLE_VERSION = "0.1.0"
_SPECIAL = ("$", "@", "%")  # string prefixes ConfigParser would evaluate / dereference

LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""


def _check_plain(value: Any, where: str) -> None:
    """Model kwargs go into inference.json verbatim: strings that ConfigParser would evaluate are refused."""
    if isinstance(value, str) and value.startswith(_SPECIAL):
        raise ValueError(f"{where}: the value {value!r} starts with {value[0]!r}, which MONAI's ConfigParser would "
                         f"evaluate; cannot write it into inference.json.")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(v, f"{where}.{k}")
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")


def _package_meta() -> dict[str, str]:
    """Summary, authors and license of the installed distribution (fallbacks for a bare source tree)."""
    from importlib.metadata import PackageNotFoundError, metadata

    info = {"summary": "", "authors": "The mambaseg authors", "license": "Apache-2.0"}
    try:
        m = metadata("mambaseg")
    except PackageNotFoundError:
        return info
    info["summary"] = m.get("Summary") or ""
    author = m.get("Author") or m.get("Author-email") or ""
    if author:
        info["authors"] = author
    info["license"] = m.get("License-Expression") or m.get("License") or info["license"]
    return info


def _license_text() -> str:
    """mambaseg's LICENSE file: from the installed distribution, else the source checkout, else a short notice."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution("mambaseg")
        for name in ("licenses/LICENSE", "LICENSE"):
            text = dist.read_text(name)
            if text:
                return text
    except PackageNotFoundError:
        pass
    from ..resources import source_checkout

    root = source_checkout()
    if root is not None and (root / "LICENSE").is_file():
        return (root / "LICENSE").read_text(encoding="utf-8")
    return ("Licensed under the Apache License, Version 2.0 (the \"License\"); you may not use these files except in "
            "compliance with the License. You may obtain a copy of the License at\n\n"
            "    http://www.apache.org/licenses/LICENSE-2.0\n")


def _model_setup(ckpt: dict, net: torch.nn.Module, source: str | Path = "checkpoint") -> dict:
    """Everything the bundle needs from a checkpoint and its model: dims, channels (the model's ``in_channels`` /
    ``out_channels``, else ``model_kwargs``), tile, overlap, threshold, plan, labels."""
    from ..engine.threshold import resolve_threshold
    from ..models.registry import model_entry

    cfg, data = ckpt.get("config") or {}, ckpt.get("data") or {}
    typed = stored_config(ckpt, source)
    infer, data_cfg = typed.infer, typed.data
    sdims = int(data.get("spatial_dims") or model_entry(ckpt["model_name"])[1])
    kwargs = to_jsonable(dict(ckpt.get("model_kwargs") or {}))
    plan = data.get("plan") if sdims == 3 else None
    if sdims == 3 and not plan:
        raise ValueError("checkpoint of a 3D model has no preprocessing plan (data.plan); cannot write the bundle's "
                         "preprocessing.")
    tile = infer.patch_size or ((plan or {}).get("patch_size") if sdims == 3 else data_cfg.patch_size)
    tile = [int(t) for t in to_jsonable(tile or data_cfg.patch_size)]
    threshold = resolve_threshold(cfg, data)
    return {
        "spatial_dims": sdims, "kwargs": kwargs, "plan": to_jsonable(plan) if plan else None, "tile": tile,
        "overlap": float(infer.overlap), "mode": str(infer.mode), "batch_size": int(infer.batch_size),
        "threshold": float(threshold),
        "in_channels": int(getattr(net, "in_channels", None) or kwargs.get("in_channels", 1)),
        "out_channels": int(getattr(net, "out_channels", None) or kwargs.get("out_channels", 1)),
        "labels": {str(k): int(v) for k, v in (data.get("labels") or {}).items()},
        "channel_names": [str(c) for c in (data.get("channel_names") or [])],
        "fov": bool(data_cfg.fov), "fundus_norm": str(data_cfg.fundus_norm),
        "normalization": to_jsonable(data.get("normalization")) if sdims == 2 else None,
    }


def _differences(s: dict) -> list[str]:
    """Where the bundle's MONAI pipeline departs from ``mambaseg predict`` for this model."""
    out = []
    if s["spatial_dims"] == 3:
        out.append("resampling to the target spacing uses MONAI's `Spacingd` (cubic spline, same grid) instead of "
                   "`scipy.ndimage.zoom` with aligned voxel extents: identical when the input already has the "
                   "target spacing, slightly different values otherwise")
        out.append("probabilities are resampled back to the input grid before argmax/threshold (`Invertd`); "
                   "mambaseg resamples the label map")
        return out
    return out  # 2D: mambaseg predict's own steps (bundle_components), no difference


# ------------------------------------------------------------------------------------------------- inference.json
def normalization_steps(norm: list[dict]) -> list[dict]:
    """MONAI transforms (bundle config entries) for per-channel schemes of
    :func:`mambaseg.data.plans.normalize.normalize_channels`; one scheme for all channels.

    Raises:
        ValueError: mixed schemes, per-channel ranges that differ, or a scheme without a MONAI equivalent.
    """
    schemes = [n["scheme"] for n in norm]
    if len(set(schemes)) != 1:
        raise ValueError(f"plan normalisation mixes schemes across channels ({schemes}); the bundle's MONAI "
                         f"preprocessing supports one scheme for all channels.")
    scheme = schemes[0]
    if scheme in ("zscore_nonzero", "zscore"):
        return [{"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": scheme == "zscore_nonzero",
                 "channel_wise": True}]
    if scheme == "none":
        return []
    if scheme == "rescale_to_0_1":
        return [{"_target_": "ScaleIntensityd", "keys": "image", "minv": 0.0, "maxv": 1.0, "channel_wise": True}]
    if scheme == "rgb_to_0_1":
        return [{"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": 0.0, "a_max": 255.0, "b_min": 0.0,
                 "b_max": 1.0, "clip": True}]
    if scheme in ("ct", "ct_window") and len({(n["lower"], n["upper"]) for n in norm}) != 1:
        raise ValueError("plan CT normalisation clips the channels to different ranges; the bundle supports one "
                         "range for all channels.")
    if scheme == "ct":
        lo, hi = float(norm[0]["lower"]), float(norm[0]["upper"])
        return [{"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": lo, "a_max": hi, "b_min": lo,
                 "b_max": hi, "clip": True},
                {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": False, "channel_wise": True,
                 "subtrahend": [float(n["mean"]) for n in norm], "divisor": [float(n["std"]) for n in norm]}]
    if scheme == "ct_window":
        return [{"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": float(norm[0]["lower"]),
                 "a_max": float(norm[0]["upper"]), "b_min": 0.0, "b_max": 1.0, "clip": True}]
    raise ValueError(f"plan normalisation scheme {scheme!r} has no MONAI equivalent in the bundle.")


COMPONENTS = "mambaseg.apps.bundle_components"


def _preprocessing(s: dict) -> list[dict]:
    if s["spatial_dims"] == 2:  # mambaseg predict's own reader and plan (FOV, rescaling, normalisation)
        return [{"_target_": f"{COMPONENTS}.ReadImaged", "model": "@mambaseg", "mask_dir": "@mask_dir"},
                {"_target_": f"{COMPONENTS}.PlanForwardd", "model": "@mambaseg"}]
    plan = s["plan"]
    steps = [
        {"_target_": "LoadImaged", "keys": "image", "image_only": True},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS",
         "labels": [["L", "R"], ["P", "A"], ["I", "S"]]},
    ]
    if plan.get("crop_nonzero", True):
        steps.append({"_target_": "CropForegroundd", "keys": "image", "source_key": "image",
                      "select_fn": "$lambda x: x != 0", "margin": 0, "allow_smaller": True})
    steps += normalization_steps(plan["normalization"])
    steps.append({"_target_": "Spacingd", "keys": "image", "pixdim": [float(v) for v in plan["target_spacing"]],
                  "mode": int(plan.get("image_order", 3)), "padding_mode": "nearest", "scale_extent": True,
                  "align_corners": True})
    steps.append({"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"})
    return steps


def _postprocessing(s: dict) -> list[dict]:
    sigmoid = s["out_channels"] == 1
    if s["spatial_dims"] == 2:  # the plan's inverse, threshold, FOV mask and PNG of mambaseg predict
        return [{"_target_": f"{COMPONENTS}.PlanInversed", "model": "@mambaseg"},
                {"_target_": f"{COMPONENTS}.SaveMaskd", "output_dir": "@output_dir", "output_postfix": "seg",
                 "binary": sigmoid}]
    steps: list[dict] = [{"_target_": "Activationsd", "keys": "pred", "sigmoid": sigmoid, "softmax": not sigmoid}]
    steps.append({"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
                  "nearest_interp": False, "to_tensor": True})
    steps.append({"_target_": "AsDiscreted", "keys": "pred", "threshold": s["threshold"]} if sigmoid else
                 {"_target_": "AsDiscreted", "keys": "pred", "argmax": True})
    steps.append({"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
                  "separate_folder": False, "resample": False, "output_dtype": "$numpy.uint8", "print_log": False,
                  "output_ext": ".nii.gz"})
    return steps


def _run_steps(inference: str) -> list[str]:
    """The bundle's ``run`` section: load the weights, evaluation mode, ``inference`` (an expression) with autograd
    off, autograd back on."""
    return ["$@load_weights", "$@network.eval()", "$torch.set_grad_enabled(False)", inference,
            "$torch.set_grad_enabled(True)"]


def bundle_inference_config(model_name: str, setup: dict) -> dict:
    """The ``configs/inference.json`` dict for a model (``setup`` from the checkpoint, see :func:`export_bundle`)."""
    s = setup
    kwargs = dict(s["kwargs"])
    _check_plain(kwargs, "model_kwargs")
    if "name" in kwargs or "_target_" in kwargs:
        raise ValueError("model_kwargs contain a 'name' or '_target_' key, which network_def uses itself.")
    if s["spatial_dims"] == 2:
        return _inference_config_2d(model_name, s, kwargs)
    if s["spatial_dims"] == 3:
        pattern = "'*_0000' + @input_ext" if s["in_channels"] > 1 else "'*' + @input_ext"
        item = ("{'image': [f[: -len('_0000' + @input_ext)] + '_%04d' % c + @input_ext for c in range("
                f"{s['in_channels']})]}}" if s["in_channels"] > 1 else "{'image': f}")
        ext = ".nii.gz"
    else:
        pattern, item, ext = "'*' + @input_ext", "{'image': f}", ".png"
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "$@bundle_root + '/data'",
        "input_ext": ext,
        "datalist": {"_target_": f"{COMPONENTS}.require_inputs", "folder": "@dataset_dir", "pattern": f"${pattern}",
                     "items": f"$[{item} for f in sorted(glob.glob(os.path.join(@dataset_dir, {pattern})))]"},
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": "mambaseg.models.build_model", "name": model_name, **kwargs},
        "network": "$@network_def.to(@device)",
        "checkpoint": "$@bundle_root + '/models/model.pt'",
        "load_weights": "$@network.load_state_dict(torch.load(@checkpoint, map_location=@device, weights_only=True))",
        "preprocessing": {"_target_": "Compose", "transforms": _preprocessing(s)},
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": list(s["tile"]), "sw_batch_size": s["batch_size"],
                    "overlap": s["overlap"], "mode": "constant" if s["mode"] == "constant" else "gaussian",
                    "sigma_scale": 0.125, "padding_mode": "constant", "cval": 0.0},
        "postprocessing": {"_target_": "Compose", "transforms": _postprocessing(s)},
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": _run_steps("$[@postprocessing(d) for b in @dataloader for d in monai.data.decollate_batch("
                          "dict(b, pred=@inferer(b['image'].to(@device), @network)))]"),
    }


def _inference_config_2d(model_name: str, s: dict, kwargs: dict) -> dict:
    """2D: mambaseg predict's own steps (:mod:`mambaseg.apps.bundle_components`) around the bundle's network, so
    that the masks are predict's: every format predict reads, the FOV, rescaling, threshold and masking."""
    return {
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "$@bundle_root + '/data'",
        "mask_dir": "",  # optional FOV masks, as `mambaseg predict --mask` (default: estimated from the image)
        "setup_file": "$@bundle_root + '/configs/" + SETUP_FILE + "'",
        "datalist": {"_target_": f"{COMPONENTS}.image_list", "folder": "@dataset_dir"},
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": "mambaseg.models.build_model", "name": model_name, **kwargs},
        "network": "$@network_def.to(@device)",
        "checkpoint": "$@bundle_root + '/models/model.pt'",
        "load_weights": "$@network.load_state_dict(torch.load(@checkpoint, map_location=@device, weights_only=True))",
        "mambaseg": {"_target_": f"{COMPONENTS}.BundleModel", "setup_file": "@setup_file", "network": "@network",
                     "device": "@device"},
        "preprocessing": {"_target_": "Compose", "transforms": _preprocessing(s)},
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "inferer": {"_target_": f"{COMPONENTS}.SlidingWindowInferer2D", "model": "@mambaseg"},
        "postprocessing": {"_target_": "Compose", "transforms": _postprocessing(s)},
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": _run_steps("$[@postprocessing(dict(d, pred=@inferer(d['image'], @network))) for d in @dataset]"),
    }


# -------------------------------------------------------------------------------------------------- metadata.json
SCHEMA_FILE = "metadata_schema.json"  # configs/<SCHEMA_FILE>: a copy of the package's bundle_meta_schema.json


def schema_path() -> Path:
    """The JSON schema of mambaseg's bundle metadata, shipped in the package (also copied into every bundle)."""
    return Path(__file__).with_name("bundle_meta_schema.json")


def bundle_metadata(model_name: str, setup: dict, source: str) -> dict:
    """The ``configs/metadata.json`` dict (MONAI Bundle Specification keys plus mambaseg's source and license)."""
    import monai

    s = setup
    pkg = _package_meta()
    sdims, k = s["spatial_dims"], s["out_channels"]
    plan = s["plan"] or {}
    modality = (plan.get("modality") or ["n/a"])[0] if sdims == 3 else "n/a"
    schemes = [n.get("scheme") for n in plan.get("normalization", [])]
    window = sdims == 3 and schemes and schemes[0] == "ct_window"
    in_names = s["channel_names"] if len(s["channel_names"]) == s["in_channels"] else (
        ["red", "green", "blue"] if sdims == 2 and s["in_channels"] == 3 else
        [f"channel {c}" for c in range(s["in_channels"])])
    if k == 1:
        out_def = {"0": f"foreground logit (sigmoid >= {s['threshold']:g} is foreground)"}
    else:
        names = {v: n for n, v in s["labels"].items()}
        out_def = {str(c): f"logit of {names.get(c, 'background' if c == 0 else f'class {c}')}" for c in range(k)}
    tile = list(s["tile"])
    dims_txt = "3D volumes (NIfTI)" if sdims == 3 else "2D images (PNG, TIF, GIF, JPG, BMP, NIfTI)"
    import nibabel
    import PIL

    return {
        # verify_metadata offline: `--filepath configs/metadata_schema.json` (the file exists, nothing is downloaded)
        "schema": f"configs/{SCHEMA_FILE}",
        "version": BUNDLE_VERSION,
        "changelog": {BUNDLE_VERSION: f"exported by mambaseg {package_version()} from {Path(source).name}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {"mambaseg": package_version(), "nibabel": nibabel.__version__,
                                      "pillow": PIL.__version__},
        "name": f"mambaseg_{model_name}",
        "task": f"{sdims}D segmentation with mambaseg's {model_name}",
        "description": (f"{model_name} ({pkg['summary'] or 'mambaseg'}) exported as a MONAI bundle for inference on "
                        f"{dims_txt}: sliding-window inference with tiles of {'x'.join(map(str, tile))}, "
                        f"{'sigmoid + threshold' if k == 1 else 'softmax + argmax'}. The network is built by "
                        f"mambaseg.models.build_model, so mambaseg must be installed."),
        "authors": pkg["authors"],
        "copyright": f"Copyright (c) {pkg['authors']}",
        "license": pkg["license"],
        "source_checkpoint": str(source),
        "intended_use": "Research; not for diagnostic use.",
        "data_type": "nibabel" if sdims == 3 else "png",
        "image_classes": f"{s['in_channels']} channel(s): {', '.join(in_names)}",
        "pred_classes": ", ".join(f"{c}: {d}" for c, d in out_def.items()),
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "hounsfield" if modality == "CT" else "magnitude", "modality": modality,
                "num_channels": s["in_channels"], "spatial_shape": tile, "dtype": "float32",
                "value_range": [0, 1] if window else [], "is_patch_data": True,
                "channel_def": {str(c): n for c, n in enumerate(in_names)},
            }},
            "outputs": {"pred": {
                "type": "image", "format": "classes" if k == 1 else "labels", "modality": "n/a", "num_channels": k,
                "spatial_shape": tile, "dtype": "float32", "value_range": [], "is_patch_data": True,
                "channel_def": out_def,
            }},
        },
    }


def check_metadata(meta: dict) -> list[str]:
    """Missing mandatory keys of a metadata dict (the MONAI Bundle Specification's lists, no JSON schema needed)."""
    aliases = {"required_packages_version": "optional_packages_version"}
    missing = [k for k in REQUIRED_METADATA_KEYS if k not in meta and aliases.get(k) not in meta]
    fmt = meta.get("network_data_format") or {}
    for side in ("inputs", "outputs"):
        tensors = fmt.get(side)
        if not isinstance(tensors, dict) or not tensors:
            missing.append(f"network_data_format.{side}")
            continue
        for name, spec in tensors.items():
            missing += [f"network_data_format.{side}.{name}.{k}" for k in REQUIRED_TENSOR_KEYS if k not in spec]
    return missing


# ------------------------------------------------------------------------------------------------------- README
def _readme(model_name: str, s: dict, meta: dict) -> str:
    sdims = s["spatial_dims"]
    inp = ("NIfTI volumes `data/*.nii.gz`" + (f" (nnU-Net channel files `CASE_0000.nii.gz` ... "
                                               f"`CASE_{s['in_channels'] - 1:04d}.nii.gz`)"
                                               if s["in_channels"] > 1 else "")) if sdims == 3 else \
        "images in `data/` (every format `mambaseg predict` reads: PNG, TIF, GIF, JPG, BMP, NIfTI)"
    if sdims == 3:
        out = f"`eval/<case>{'_0000' if s['in_channels'] > 1 else ''}_seg.nii.gz` (uint8 labels on the input's grid)"
    else:
        out = f"`eval/<image>_seg.png` ({'0/255' if s['out_channels'] == 1 else 'label values'})"
    diffs = _differences(s)
    lines = [
        f"# mambaseg {model_name} (MONAI bundle)", "",
        meta["description"], "",
        "## Run inference", "",
        "Needs `mambaseg` (it defines the network) and MONAI installed. From the bundle folder:", "",
        "```bash",
        "python -m monai.bundle run --config_file configs/inference.json",
        "```", "",
        f"reads the {inp} and writes {out}. Other folders:", "",
        "```bash",
        "python -m monai.bundle run --config_file configs/inference.json --bundle_root /path/to/bundle \\",
        "    --dataset_dir /path/to/images --output_dir /path/to/predictions",
        "```", "",
        ("`python -m monai.bundle` needs the `fire` package: `pip install 'mambaseg[bundle]'` (it also brings "
         "`jsonschema` for `verify_metadata`). From Python: `monai.bundle.run(config_file='configs/inference.json', "
         "meta_file='configs/metadata.json', dataset_dir=..., output_dir=...)`."), "",
    ]
    if sdims == 2:
        lines += [("The 2D pipeline runs `mambaseg predict`'s own steps (`mambaseg.apps.bundle_components`, configured "
                   "by `configs/mambaseg.json`): the field of view is estimated from each image unless "
                   "`--mask_dir /path/to/masks` gives the masks (as `mambaseg predict --mask`); the masks are those "
                   "`mambaseg predict` writes."), ""]
    shape = [1, s["in_channels"], *s["tile"]]
    lines += [
        "Checking the metadata (offline: the schema is in `configs/`):", "",
        "```bash",
        "python -m monai.bundle verify_metadata --meta_file configs/metadata.json "
        "--filepath configs/metadata_schema.json",
        "```", "",
        ("TorchScript export (traced: mambaseg's networks are not scriptable; the trace is for the inference tile "
         f"{s['tile']}, which the sliding window feeds it):"), "",
        "```bash",
        "python -m monai.bundle ckpt_export network_def --filepath models/model.ts --ckpt_file models/model.pt \\",
        "    --meta_file configs/metadata.json --config_file configs/inference.json \\",
        f"    --use_trace True --input_shape \"{shape}\"",
        "```", "",
        "Loading the network alone:", "",
        "```python",
        "from monai.bundle import ConfigParser",
        "import torch",
        "parser = ConfigParser()",
        "parser.read_config('configs/inference.json')",
        "net = parser.get_parsed_content('network_def')",
        "net.load_state_dict(torch.load('models/model.pt', weights_only=True))",
        "```", "",
        "## Pipeline", "",
        f"- input: {meta['image_classes']}",
        (f"- sliding window: tiles of {s['tile']}, overlap {s['overlap']}, {s['mode']} blending, "
         f"{s['batch_size']} tiles per batch"),
        f"- output: {s['out_channels']} logit channel(s): {meta['pred_classes']}",
    ]
    if diffs:
        lines += ["", "## Differences from `mambaseg predict`", ""] + [f"- {d}" for d in diffs]
        lines += ["", "`mambaseg predict --model <run or checkpoint>` reproduces the training pipeline exactly."]
    lines += ["", "## License", "", f"{meta['license']}; see `LICENSE`. Research use; not for diagnosis.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------- export
#: the files this tool wrote into a bundle folder (relative paths); ``--overwrite`` replaces or removes only those
FILES_MANIFEST = ".mambaseg_bundle.json"
#: what a bundle written before the manifest existed holds (an old bundle's other files are the user's)
_KNOWN_FILES = ("LICENSE", "configs/inference.json", "configs/logging.conf", "configs/metadata.json",
                "docs/README.md", "models/model.pt")


def _owned_files(out: Path) -> list[str]:
    """The files of the existing bundle folder ``out`` that this tool wrote: its manifest's list (each checked to
    be a relative path inside the folder), or for an older bundle without one the standard bundle files present."""
    man = out / FILES_MANIFEST
    if not man.is_file():
        return [rel for rel in _KNOWN_FILES if (out / rel).is_file()]
    try:
        doc = json.loads(man.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{man}: unreadable list of the bundle's files ({e}); it is left untouched - remove the "
                         f"bundle folder yourself or choose another --bundle.") from None
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, str) and f and not Path(f).is_absolute()
                                              and ".." not in Path(f).parts for f in files):
        raise ValueError(f"{man}: 'files' is not a list of relative paths inside the bundle; it is left untouched - "
                         f"remove the bundle folder yourself or choose another --bundle.")
    return files


def _prepare_out(out: Path, overwrite: bool) -> list[str]:
    """Check the bundle folder before anything is made; returns the files of an earlier bundle there that
    ``overwrite`` may replace or remove (nothing else in the folder is touched)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder; --bundle needs a folder path.")
    if out.exists() and not overwrite:
        raise ValueError(f"{out}: bundle folder already exists (use --overwrite to replace it).")
    if not out.exists():
        return []
    if any(out.iterdir()) and not (out / "configs" / "metadata.json").is_file():
        raise ValueError(f"{out}: folder is not empty and holds no bundle (configs/metadata.json); --overwrite "
                         f"only replaces an earlier bundle, choose an empty or new folder.")
    return _owned_files(out)


def _inside(folder: Path, rel: str) -> bool:
    """``folder/rel`` lands inside ``folder`` with links resolved (no sub-folder of the bundle links elsewhere)."""
    base = os.path.realpath(folder)
    return os.path.commonpath([os.path.realpath(folder / rel), base]) == base


def _replace_into(tmp: Path, out: Path, written: list[str], owned: list[str]) -> None:
    """Move the new bundle's files from ``tmp`` into the existing bundle ``out`` one by one and remove the files of
    the earlier bundle that it no longer has; the user's other files in ``out`` stay as they are."""
    for rel in sorted(set(written) | set(owned)):
        if not _inside(out, rel):
            raise ValueError(f"{out / rel}: lies outside the bundle folder once links are resolved; nothing is "
                             f"written through a link - choose another --bundle.")
        if (out / rel).is_dir() and not (out / rel).is_symlink():
            raise ValueError(f"{out / rel}: is a folder where the bundle writes a file; move it away.")
    for rel in written:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / rel, out / rel)
    for rel in sorted(set(owned) - set(written)):
        if (out / rel).is_file() or (out / rel).is_symlink():
            (out / rel).unlink()


def export_bundle(model: str | Path, out: str | Path, overwrite: bool = False) -> dict:
    """Write a trained model (run folder or ``.pt`` checkpoint) as a MONAI bundle folder.

    Args:
        model: run folder (``checkpoint_best.pt`` / ``checkpoint_last.pt``) or checkpoint file.
        out: bundle folder to create; an existing one is refused unless ``overwrite`` (and then only an earlier
            bundle or an empty folder is replaced).
        overwrite: replace an existing bundle folder.

    Returns:
        ``{"path", "model_name", "spatial_dims", "files", "differences"}``.

    Raises:
        ValueError: ``out`` exists (without ``overwrite``) or is not a bundle; the checkpoint's preprocessing has no
            MONAI equivalent; CheckpointError (a ValueError) for unusable checkpoints.
    """
    out = Path(out)
    owned = _prepare_out(out, overwrite)
    ckpt_path = resolve_checkpoint_path(model, allow_onnx=False)
    from ..engine.outputs import check_apart

    check_apart(out_files=[out / rel for rel in (*_KNOWN_FILES, *owned, FILES_MANIFEST)], in_files=[ckpt_path],
                option="--bundle")
    ckpt = load_checkpoint(ckpt_path)
    net = model_from_checkpoint(ckpt, ckpt_path).float()  # validates the weights against the model
    setup = _model_setup(ckpt, net, ckpt_path)
    name = str(ckpt["model_name"])
    inference = bundle_inference_config(name, setup)
    meta = bundle_metadata(name, setup, str(ckpt_path))
    missing = check_metadata(meta)
    if missing:  # pragma: no cover - a programming error, not a user error
        raise RuntimeError(f"bundle metadata lacks {missing}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        files = {
            "configs/metadata.json": json.dumps(meta, indent=2) + "\n",
            f"configs/{SCHEMA_FILE}": schema_path().read_text(encoding="utf-8"),
            "configs/inference.json": json.dumps(inference, indent=2) + "\n",
            "configs/logging.conf": LOGGING_CONF,
            "docs/README.md": _readme(name, setup, meta),
            "LICENSE": _license_text(),
        }
        if setup["spatial_dims"] == 2:  # what mambaseg's own 2D components need: predict's configuration
            files[f"configs/{SETUP_FILE}"] = json.dumps(to_jsonable(
                {"model_name": name, "model_kwargs": ckpt.get("model_kwargs") or {}, "config": ckpt.get("config") or {},
                 "data": ckpt.get("data") or {}}), indent=1) + "\n"
        for rel, text in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text, encoding="utf-8")
        (tmp / "models").mkdir()
        state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        torch.save(state, tmp / "models" / "model.pt")
        written = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        (tmp / FILES_MANIFEST).write_text(json.dumps({"about": "the files mambaseg export --bundle wrote here; "
                                                      "--overwrite replaces or removes only these", "files": written},
                                                     indent=1) + "\n", encoding="utf-8")
        for p in tmp.rglob("*"):
            if p.is_file():
                set_default_mode(p)
            else:
                os.chmod(p, 0o777 & ~_umask())
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp made it 0700
        if out.exists():
            from ..utils.runlock import RunLock

            with RunLock(out, what="mambaseg export", option="--bundle", remove=True):  # one writer per bundle folder
                _replace_into(tmp, out, written + [FILES_MANIFEST], owned + [FILES_MANIFEST])
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    diffs = _differences(setup)
    logger.info("MONAI bundle of %s written to %s", name, out)
    return {"path": str(out), "model_name": name, "spatial_dims": setup["spatial_dims"], "files": written,
            "differences": diffs}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
