"""``configs/metadata.json`` and ``docs/README.md`` of a MONAI bundle, and what both are made from: the model's setup
read from its checkpoint (dims, channels, tile, threshold, plan, labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...engine.checkpoint import stored_config
from ...resources import package_version
from ...utils.jsonable import to_jsonable

# mandatory keys of metadata.json and of each tensor format specifier (MONAI Bundle Specification)
# (the specification's optional_packages_version is required_packages_version since MONAI 1.3; either is accepted)
REQUIRED_METADATA_KEYS = ("version", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
                          "task", "description", "authors", "copyright", "network_data_format")
REQUIRED_TENSOR_KEYS = ("type", "format", "modality", "num_channels", "spatial_shape", "dtype", "value_range",
                        "is_patch_data", "channel_def")
BUNDLE_VERSION = "0.1.0"


def package_meta() -> dict[str, str]:
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


def license_text() -> str:
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
    from ...resources import source_checkout

    root = source_checkout()
    if root is not None and (root / "LICENSE").is_file():
        return (root / "LICENSE").read_text(encoding="utf-8")
    return ("Licensed under the Apache License, Version 2.0 (the \"License\"); you may not use these files except in "
            "compliance with the License. You may obtain a copy of the License at\n\n"
            "    http://www.apache.org/licenses/LICENSE-2.0\n")


def model_setup(ckpt: dict, net: torch.nn.Module, source: str | Path = "checkpoint") -> dict:
    """Everything the bundle needs from a checkpoint and its model: dims, channels (the model's ``in_channels`` /
    ``out_channels``, else ``model_kwargs``), tile, overlap, threshold, plan, labels."""
    from ...engine.threshold import resolve_threshold
    from ...models.registry import model_entry

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


def differences(s: dict) -> list[str]:
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

SCHEMA_FILE = "metadata_schema.json"  # configs/<SCHEMA_FILE>: a copy of the package's bundle_meta_schema.json


def schema_path() -> Path:
    """The JSON schema of mambaseg's bundle metadata, shipped in the package (also copied into every bundle)."""
    return Path(__file__).resolve().parent.parent / "bundle_meta_schema.json"


def bundle_metadata(model_name: str, setup: dict, source: str) -> dict:
    """The ``configs/metadata.json`` dict (MONAI Bundle Specification keys plus mambaseg's source and license)."""
    import monai

    s = setup
    pkg = package_meta()
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
def readme(model_name: str, s: dict, meta: dict) -> str:
    sdims = s["spatial_dims"]
    inp = ("NIfTI volumes `data/*.nii.gz`" + (f" (nnU-Net channel files `CASE_0000.nii.gz` ... "
                                               f"`CASE_{s['in_channels'] - 1:04d}.nii.gz`)"
                                               if s["in_channels"] > 1 else "")) if sdims == 3 else \
        "images in `data/` (every format `mambaseg predict` reads: PNG, TIF, GIF, JPG, BMP, NIfTI)"
    if sdims == 3:
        out = f"`eval/<case>{'_0000' if s['in_channels'] > 1 else ''}_seg.nii.gz` (uint8 labels on the input's grid)"
    else:
        out = f"`eval/<image>_seg.png` ({'0/255' if s['out_channels'] == 1 else 'label values'})"
    diffs = differences(s)
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
