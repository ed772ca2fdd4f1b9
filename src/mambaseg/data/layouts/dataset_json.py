"""``dataset.json`` of MSD and nnU-Net v2 raw datasets: reading and checking it, declared label values, and the
nnU-Net v2 normalisation chosen by each channel's name.

Conventions [nnUNet ``documentation/dataset_format.md``]: nnU-Net v2 ``dataset.json`` has ``channel_names``,
``labels`` (name -> int, or a list for regions; the MSD/v1 index -> name form is accepted too), ``file_ending`` (only
files with that ending are read), ``numTraining`` (a mismatch is warned about). ``channel_names`` choose the
normalisation as nnU-Net v2 does (CT / zscore / noNorm / rescale_to_0_1 / rgb_to_0_1, case-insensitive, other names
z-scored) when ``data.modality`` is ``auto`` (:func:`channel_modalities`). MSD: ``modality`` (index -> name),
``labels`` (index -> name), ``training: [{image, label}]``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mambaseg.data.errors import DataError

__all__ = ["channel_modalities", "declared_label_values", "nnunet_normalisation", "read_dataset_json"]


def _int_value(val: Any) -> int | None:
    """``val`` as an int if it is an integer (int, integral float, or a decimal string), else None."""
    if isinstance(val, bool):
        return None
    if isinstance(val, int):
        return val
    if isinstance(val, float) and val.is_integer():
        return int(val)
    if isinstance(val, str) and val.strip().lstrip("-").isdigit():
        return int(val)
    return None


def declared_label_values(labels: Any, path: Path | str = "dataset.json") -> dict[str, int]:
    """dataset.json labels, MSD (``{"0": "background"}``) or nnU-Net v2 (``{"background": 0, "WT": [1, 2, 3]}``).

    Raises:
        DataError: naming ``path`` and the offending key when a label value is not an integer >= 0.
    """
    if not isinstance(labels, dict) or not labels:
        raise DataError(f"{path}: 'labels' must be a non-empty mapping, e.g. "
                        f"{{\"0\": \"background\", \"1\": \"tumour\"}} (MSD) or "
                        f"{{\"background\": 0, \"tumour\": 1}} (nnU-Net v2)")
    out: dict[str, int] = {}
    for key, val in labels.items():
        if isinstance(val, str):  # MSD: index -> name; the key must be the integer label value
            v = _int_value(key)
            if v is None or v < 0:
                raise DataError(f"{path}: 'labels' key {key!r} (-> {val!r}) is not an integer label value >= 0, "
                                f"expected MSD style {{\"0\": \"background\"}} or nnU-Net style {{\"background\": 0}}")
            out[val] = v
        elif isinstance(val, (list, tuple)):  # nnU-Net region: all members are valid label values
            for member in val:
                v = _int_value(member) if not isinstance(member, str) else None
                if v is None or v < 0:
                    raise DataError(f"{path}: 'labels' region {key!r} holds {member!r}, expected integer label "
                                    f"values >= 0")
                out[f"{key}:{v}"] = v
        else:
            v = _int_value(val) if not isinstance(val, str) else None
            if v is None or v < 0:
                raise DataError(f"{path}: 'labels' entry {key!r}: {val!r} is not an integer label value >= 0")
            out[str(key)] = v
    return out


def read_dataset_json(root: str | os.PathLike) -> dict[str, Any]:
    """Read ``root/dataset.json`` and normalise MSD / nnU-Net v2 fields.

    Returns:
        dict with ``style`` (``"msd"`` | ``"nnunet"``), ``channel_names`` (list), ``labels`` (name -> int),
        ``file_ending``, ``training`` (MSD list of {image, label}, possibly empty) and ``raw`` (the file content).
    """
    path = Path(root) / "dataset.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (expected an MSD / nnU-Net dataset.json)") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text, expected a JSON object") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a JSON object with 'labels' and 'channel_names'/'modality', got "
                        f"{type(raw).__name__}")
    if "channel_names" in raw:
        style, chans = "nnunet", raw["channel_names"]
    elif "modality" in raw:
        style, chans = "msd", raw["modality"]
    else:
        raise DataError(f"{path}: has neither 'channel_names' (nnU-Net v2) nor 'modality' (MSD)")
    field_name = "channel_names" if style == "nnunet" else "modality"
    if not isinstance(chans, dict) or not chans:
        raise DataError(f"{path}: '{field_name}' must be a non-empty mapping of channel index -> name, "
                        f"e.g. {{\"0\": \"MRI\"}}")
    index: dict[int, Any] = {}
    for k, name in chans.items():
        i = _int_value(k)
        if i is None or i < 0:
            raise DataError(f"{path}: '{field_name}' key {k!r} is not an integer channel index >= 0, "
                            f"expected {{\"0\": ..., \"1\": ...}}")
        index[i] = name
    if sorted(index) != list(range(len(index))):
        raise DataError(f"{path}: '{field_name}' indices {sorted(index)} are not 0..{len(index) - 1}")
    channel_names = [str(index[i]) for i in range(len(index))]
    if "labels" not in raw:
        raise DataError(f"{path}: missing 'labels'")
    training = raw.get("training") or []
    if style == "msd" and training and not all(isinstance(t, dict) and "image" in t for t in training):
        raise DataError(f"{path}: 'training' must be a list of {{image, label}} entries")
    ending = raw.get("file_ending", ".nii.gz")
    if not isinstance(ending, str) or not ending.startswith(".") or len(ending) < 2:
        raise DataError(f"{path}: 'file_ending' {ending!r} is not a file suffix, expected e.g. \".nii.gz\" or \".png\"")
    n_training = raw.get("numTraining")
    if n_training is not None and (_int_value(n_training) is None or _int_value(n_training) < 0):
        raise DataError(f"{path}: 'numTraining' {n_training!r} is not an integer >= 0")
    return {"style": style, "channel_names": channel_names, "labels": declared_label_values(raw["labels"], path),
            "file_ending": ending, "num_training": None if n_training is None else _int_value(n_training),
            "training": training, "raw": raw}


# nnU-Net v2 normalisation by channel name (nnunetv2/preprocessing/normalization/map_channel_name_to_normalization.py):
# the name is case-folded (str.casefold, no stripping) and looked up; every other name gets the default, zscore.
_NNUNET_NORMALISATION = {"ct": "CT", "nonorm": "noNorm", "zscore": "zscore", "rescale_to_0_1": "rescale_to_0_1",
                         "rgb_to_0_1": "rgb_to_0_1"}


def nnunet_normalisation(channel_name: str) -> str:
    """nnU-Net v2's normalisation for a ``channel_names`` entry: ``CT``, ``noNorm``, ``zscore``, ``rescale_to_0_1``
    or ``rgb_to_0_1``, matched case-insensitively as nnU-Net's ``get_normalization_scheme`` does
    (``channel_name.casefold()``); any other name (``T2``, ``MRI``, ``" CT"`` with a space, ...) -> ``zscore``."""
    return _NNUNET_NORMALISATION.get(str(channel_name).casefold(), "zscore")


def channel_modalities(channel_names: Sequence[str], modality: str = "auto",
                       layout: str = "nnunet") -> str | list[str]:
    """The ``modality`` argument of :func:`mambaseg.data.plans.preprocess.plan` for a dataset.

    ``modality`` ``"MR"``/``"CT"`` (``data.modality``) applies to every channel as before. ``"auto"`` (the default):
    with ``layout: nnunet`` each channel's name in ``dataset.json`` (``channel_names``, or MSD ``modality``) decides
    as in nnU-Net v2 (:func:`nnunet_normalisation`): ``CT`` -> CT normalisation (clip to the dataset's foreground
    0.5-99.5 percentiles, z-score with the foreground mean/std), ``noNorm`` -> none, ``rescale_to_0_1`` -> per-case
    min-max, ``rgb_to_0_1`` -> ``x / 255``, ``zscore`` and every other name -> per-case z-score (on the non-zero
    voxels when cropping to them shrinks the cases, see :func:`mambaseg.data.plans.normalize.normalization_entries`).
    Every other layout: ``"MR"`` (what ``auto`` replaced, so existing configs keep their behaviour).
    """
    if str(modality).lower() != "auto":
        return modality
    if layout != "nnunet" or not channel_names:
        return "MR"
    return [nnunet_normalisation(name) for name in channel_names]
