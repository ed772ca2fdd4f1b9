"""``configs/inference.json`` of a MONAI bundle: network_def, preprocessing, inferer, postprocessing and run (MONAI
transforms for 3D, the plan's steps; for 2D mambaseg predict's own components,
:mod:`mambaseg.apps.bundle_components`)."""

from __future__ import annotations

from typing import Any

from ..bundle_components import SETUP_FILE

_SPECIAL = ("$", "@", "%")  # string prefixes ConfigParser would evaluate / dereference


def check_plain(value: Any, where: str) -> None:
    """Model kwargs go into inference.json verbatim: strings that ConfigParser would evaluate are refused."""
    if isinstance(value, str) and value.startswith(_SPECIAL):
        raise ValueError(f"{where}: the value {value!r} starts with {value[0]!r}, which MONAI's ConfigParser would "
                         f"evaluate; cannot write it into inference.json.")
    if isinstance(value, dict):
        for k, v in value.items():
            check_plain(v, f"{where}.{k}")
    if isinstance(value, list):
        for i, v in enumerate(value):
            check_plain(v, f"{where}[{i}]")


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
    check_plain(kwargs, "model_kwargs")
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
