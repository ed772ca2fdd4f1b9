"""Run configuration: frozen dataclasses loaded from a small YAML file, overridden by ``--set key=value``.

Unknown keys raise (with the known ones listed), so a typo never silently falls back to a default. The resolved
configuration is saved as ``config.yaml`` in every run directory and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "INFER_MODES",
    "LAYOUTS",
    "LAYOUTS_2D",
    "LAYOUTS_3D",
    "Config",
    "ConfigError",
    "DataCfg",
    "InferCfg",
    "LossCfg",
    "ModelCfg",
    "OptimCfg",
    "TrainCfg",
    "apply_overrides",
    "check_device",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "safe_yaml",
]


class ConfigError(ValueError):
    """A configuration file or override is invalid (one-line message)."""


@dataclass(frozen=True)
class ModelCfg:
    name: str = "akmamba_net_cpu"
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DataCfg:
    layout: str = "drive"  # drive | folder2d | synthetic_drive | msd | brats | case_folders | synapse_npz | btcv
    root: str = ""
    split: str = "training"  # DRIVE split folder used for training
    val_fraction: float = 0.2
    val_root: str = ""  # optional separate validation dataset (same layout)
    folds: int = 0  # k-fold cross-validation (mambaseg.data.splits): 0 = off; >= 2: fold `fold`'s cases held out
    fold: int = 0
    num_classes: int = 2  # including background
    patch_size: tuple = (256, 256)
    fg_prob: float = 0.5
    augment: str = "default"  # default | light | none | strong_fundus (2D fundus photos from other cameras)
    fov: bool = False  # restrict loss/metrics to a field-of-view mask; estimate it at inference when absent
    modality: str = "auto"  # 3D: MR | CT | auto (layout nnunet: from dataset.json channel_names; otherwise MR)
    target_spacing: tuple = ()  # 3D: () = median spacing from the fingerprint
    ct_window: tuple = ()  # 3D CT: (lo, hi) HU window clipped and scaled to [0, 1]; () = nnU-Net CT normalisation
    cache_dir: str = ""  # 3D: preprocessed-case cache ('' = <run>/cache)
    cache_compression: bool = False  # 3D cache: false = memory-mapped .npy (fast patch reads), true = deflated .npz
    synthetic_cases: int = 24  # synthetic_drive: number of training images generated
    synthetic_size: int = 256
    fundus_norm: str = "none"  # 2D: none | fov_zscore | green_clahe (data.plans.fundus; also applied by predict)
    # layout case_folders (mambaseg.data.layouts.case_folders): a preset (brats2023 | brats2021 | brats2018_wt) and/or
    # channels name -> file pattern inside each case folder (a list of names = a subset of the preset's channels),
    # label pattern, label_map raw -> training value ({} = the preset's)
    preset: str = ""
    channels: dict = field(default_factory=dict)
    label: str = ""
    label_map: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LossCfg:
    name: str = "dice_ce"  # dice_ce (sigmoid BCE + Dice for 1 output, softmax CE + Dice otherwise) | ce | dice
    #                        | dice_ce_cldice (binary: dice_ce + cldice_weight * soft clDice)
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    cldice_weight: float = 0.5
    cldice_iters: int = 10  # soft-skeleton iterations (about the largest vessel radius in pixels)


@dataclass(frozen=True)
class OptimCfg:
    name: str = "adam"  # adam | adamw | sgd
    lr: float = 5e-4
    weight_decay: float = 1e-4
    momentum: float = 0.99
    schedule: str = "poly"  # poly | cosine | constant
    warmup_iters: int = 0


@dataclass(frozen=True)
class TrainCfg:
    epochs: int = 100
    iters_per_epoch: int = 50
    batch_size: int = 8
    val_every: int = 5
    amp: bool = False  # bf16 autocast on CPU, fp16 on CUDA; the scan keeps its state and sums in fp32, AKConv and
    # the fused conv1d accumulate in fp32 (bf16 storage and GEMMs)
    grad_clip: float = 12.0
    deterministic: bool = False
    num_threads: int = 0  # 0 = torch default
    time_limit_min: float = 0.0  # stop (and finish cleanly) after this many minutes; 0 = no limit
    # what time_limit_min counts: wall (elapsed time) or cpu (this process's CPU time, all its threads: an equal
    # compute budget that a busy machine does not shrink; DataLoader workers' time is not counted)
    budget_clock: str = "wall"
    max_bad_steps: int = 5  # consecutive non-finite losses before training stops with an error
    device: str = "auto"
    num_workers: int = 0  # 0 = batches drawn in the training process; N = DataLoader worker processes (engine.stream)


@dataclass(frozen=True)
class InferCfg:
    patch_size: tuple = ()  # () = data.patch_size
    overlap: float = 0.5
    mode: str = "gaussian"  # gaussian | constant
    tta: bool = False
    threshold: float | str = 0.5  # a number, or auto: 2D binary, chosen on validation and stored in the checkpoint
    batch_size: int = 4
    # where sliding-window logits are accumulated (engine.inference.resolve_stitch_device): same = the network's
    # device, cpu, or auto = the CPU when the network is on a GPU and the buffers would exceed 1 GiB
    stitch_device: str = "auto"


@dataclass(frozen=True)
class Config:
    seed: int = 0
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    loss: LossCfg = field(default_factory=LossCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    infer: InferCfg = field(default_factory=InferCfg)


_SECTIONS = {"model": ModelCfg, "data": DataCfg, "loss": LossCfg, "optim": OptimCfg, "train": TrainCfg,
             "infer": InferCfg}


def _coerce(value: Any, default: Any, key: str) -> Any:
    if isinstance(default, bool):
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true/false, got {value!r}.")
        return value
    if isinstance(default, tuple):
        if isinstance(value, (int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}.")
        return tuple(value)
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}.")
        try:
            v = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}.") from None
        if not math.isfinite(v):
            raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}.")
        if isinstance(default, int):
            if v != int(v):
                raise ConfigError(f"config key '{key}' must be an integer, got {value!r}.")
            return int(value) if isinstance(value, int) else int(v)
        return v
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}.")
        return dict(value)
    if isinstance(default, str):
        return "" if value is None else str(value)
    return value


def _elsewhere(key: str) -> list[str]:
    """``section.leaf`` for every other section that has the leaf of ``key`` (``train.lr`` -> ``['optim.lr']``)."""
    parts = key.split(".")
    if len(parts) > 2:  # model.kwargs.* and other nested keys: free-form, no section to point to
        return []
    own = parts[0] if len(parts) == 2 else None
    return [f"{name}.{parts[-1]}" for name, cls in _SECTIONS.items()
            if name != own and parts[-1] in {f.name for f in dataclasses.fields(cls)}]


def _unknown(key: str, known) -> ConfigError:
    elsewhere = _elsewhere(key)
    if elsewhere:  # the key exists, in another section
        hint = f" Did you mean {' or '.join(repr(k) for k in elsewhere)}?"
    else:
        close = difflib.get_close_matches(key.split(".")[-1], list(known), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key '{key}'.{hint} Known: {', '.join(sorted(known))}.")


MAX_YAML_ALIASES = 100  # a config needs few or no anchors; billion-laughs documents need many references ...
MAX_YAML_NODES = 100_000  # ... or few references nested deep: the document's size once every alias is expanded


class _BudgetLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses alias bombs: at most :data:`MAX_YAML_ALIASES` alias references, no
    recursive aliases, and at most :data:`MAX_YAML_NODES` nodes once every alias is expanded (what the config code
    would copy). Checked on the composed node graph, before any Python object is constructed."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.alias_count = getattr(self, "alias_count", 0) + 1
            if self.alias_count > MAX_YAML_ALIASES:
                raise ConfigError(f"more than {MAX_YAML_ALIASES} YAML aliases (*name); refusing a document that "
                                  f"may expand without bound.")
        return super().compose_node(parent, index)

    def construct_document(self, node):
        _expanded_size(node)
        return super().construct_document(node)


def _expanded_size(root: yaml.Node) -> int:
    """Number of nodes of ``root`` with every alias expanded; raises :class:`ConfigError` above the budget."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConfigError("a YAML alias refers to the node that contains it (recursive document).")
        active.add(key)
        n = 1
        if isinstance(node, yaml.SequenceNode):
            n += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            n += sum(size(k) + size(v) for k, v in node.value)
        if n > MAX_YAML_NODES:
            raise ConfigError(f"the YAML document expands to more than {MAX_YAML_NODES} nodes through its aliases "
                              f"(*name); refusing it.")
        active.discard(key)
        sizes[key] = n
        return n

    return size(root)


def safe_yaml(text: str, source: str) -> Any:
    """Parse YAML text like ``yaml.safe_load`` within the alias budget; errors are one line naming ``source``."""
    try:
        return yaml.load(text, Loader=_BudgetLoader)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML ({str(e).splitlines()[0]}).") from None
    except RecursionError:
        raise ConfigError(f"{source}: YAML nested too deeply.") from None


# = engine.data's 2D + 3D; nnunet is 2D or 3D by its dataset.json file_ending
#: data.layout values: 2D ones, then 3D ones (``nnunet`` is 2D when its file_ending is an image format)
LAYOUTS_2D = ("drive", "folder2d", "synthetic_drive")
LAYOUTS_3D = ("msd", "brats", "case_folders", "synapse_npz", "btcv", "nnunet")
LAYOUTS = LAYOUTS_2D + LAYOUTS_3D
FUNDUS_NORMS = ("none", "fov_zscore", "green_clahe")  # = mambaseg.data.plans.fundus.FUNDUS_NORMS
CASE_FOLDER_PRESETS = ("brats2023", "brats2021", "brats2018_wt")  # = mambaseg.data.layouts.case_folders.PRESETS
# keys added after runs were started: left out of config_to_dict at their default, so the saved config of a run
# that does not use them is what it was before they existed (benchmark resume compares saved configs)
_OMIT_AT_DEFAULT = {"data": {"fundus_norm": "none", "cache_compression": False, "preset": "", "channels": {},
                             "label": "", "label_map": {}, "folds": 0, "fold": 0},
                    "loss": {"cldice_weight": 0.5, "cldice_iters": 10}, "train": {"num_workers": 0},
                    "infer": {"stitch_device": "auto"}}
INFER_MODES = ("gaussian", "constant")  # sliding-window blending (engine.inference)
_NULL_IS_ZERO = {"train.grad_clip", "train.time_limit_min"}  # null = off = 0


def _positive_ints(lengths: tuple[int, ...]) -> Callable[[Any], bool]:
    def ok(v) -> bool:
        return len(v) in lengths and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)
    return ok


def _positive_numbers(v) -> bool:
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0 for x in v)


def _window(v) -> bool:
    return len(v) == 0 or (len(v) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                and math.isfinite(x) for x in v) and v[0] < v[1])


# key -> (check, what is expected); every value has already been coerced to the default's type by _coerce
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (lambda v: 0 <= v < 2**63, "an integer >= 0"),
    "model.name": (lambda v: bool(v.strip()), "a registered model name"),
    "data.layout": (lambda v: v in LAYOUTS, "one of " + ", ".join(LAYOUTS)),
    "data.val_fraction": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "data.folds": (lambda v: v == 0 or 2 <= v <= 1000, "0 (no cross-validation) or 2 ... 1000 folds"),
    "data.fold": (lambda v: 0 <= v < 1000, "a fold number >= 0 (less than data.folds)"),
    "data.num_classes": (lambda v: v >= 2, "an integer >= 2 (classes including background)"),
    "data.patch_size": (_positive_ints((2, 3)), "2 or 3 positive integers"),
    "data.fg_prob": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "data.augment": (lambda v: v in ("default", "light", "none", "strong_fundus"),
                     "one of default, light, none, strong_fundus"),
    "data.fundus_norm": (lambda v: v in FUNDUS_NORMS, "one of " + ", ".join(FUNDUS_NORMS)),
    "data.modality": (lambda v: v.upper() in ("MR", "CT", "AUTO"),
                      "MR, CT or auto (layout nnunet: CT/z-score from dataset.json channel_names; else MR)"),
    "data.target_spacing": (lambda v: len(v) in (0, 3) and _positive_numbers(v), "[] or 3 positive numbers (mm)"),
    "data.ct_window": (_window, "[] or [lo, hi] with lo < hi"),
    "data.synthetic_cases": (lambda v: v >= 1, "an integer >= 1"),
    "data.synthetic_size": (lambda v: v >= 16, "an integer >= 16"),
    "loss.name": (lambda v: v in ("dice_ce", "ce", "dice", "dice_ce_cldice"),
                  "one of dice_ce, ce, dice, dice_ce_cldice"),
    "loss.cldice_weight": (lambda v: v >= 0, "a number >= 0"),
    "loss.cldice_iters": (lambda v: 1 <= v <= 100, "an integer in [1, 100]"),
    "loss.dice_weight": (lambda v: v >= 0, "a number >= 0"),
    "loss.ce_weight": (lambda v: v >= 0, "a number >= 0"),
    "optim.name": (lambda v: v.lower() in ("adam", "adamw", "sgd"), "one of adam, adamw, sgd"),
    "optim.lr": (lambda v: v > 0, "a finite number > 0"),
    "optim.weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "optim.momentum": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "optim.schedule": (lambda v: v in ("poly", "cosine", "constant"), "one of poly, cosine, constant"),
    "optim.warmup_iters": (lambda v: v >= 0, "an integer >= 0"),
    "train.epochs": (lambda v: v >= 1, "an integer >= 1"),
    "train.iters_per_epoch": (lambda v: v >= 1, "an integer >= 1"),
    "train.batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "train.val_every": (lambda v: v >= 1, "an integer >= 1 (validate every N epochs)"),
    "train.grad_clip": (lambda v: v >= 0, "a number >= 0 (0 or null = no clipping)"),
    "train.num_threads": (lambda v: v >= 0, "an integer >= 0 (0 = torch default)"),
    "train.time_limit_min": (lambda v: v >= 0, "a number >= 0 (0 = no limit)"),
    "train.budget_clock": (lambda v: v in ("wall", "cpu"), "wall or cpu (what train.time_limit_min counts)"),
    "train.max_bad_steps": (lambda v: v >= 1, "an integer >= 1"),
    "train.num_workers": (lambda v: 0 <= v <= 256, "an integer in [0, 256] (0 = no worker processes)"),
    "train.device": (lambda v: _parse_device(v) is not None, "auto, cpu, cuda, cuda:N or mps"),
    "infer.patch_size": (lambda v: len(v) == 0 or _positive_ints((2, 3))(v), "[] or 2 or 3 positive integers"),
    "infer.overlap": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "infer.mode": (lambda v: v in INFER_MODES, "one of " + ", ".join(INFER_MODES)),
    "infer.threshold": (lambda v: v == "auto" or 0 <= v <= 1, "a number in [0, 1] or auto"),
    "infer.batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "infer.stitch_device": (lambda v: v in ("auto", "cpu", "same"), "auto, cpu or same (where sliding-window "
                            "logits are accumulated)"),
}


def _check(key: str, value: Any) -> Any:
    rule = _RULES.get(key)
    if rule is not None and not rule[0](value):
        shown = list(value) if isinstance(value, tuple) else value
        raise ConfigError(f"config key '{key}' must be {rule[1]}, got {shown!r}.")
    return value


def _parse_device(name: str):
    import torch

    if name == "auto":
        return "auto"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        return None
    return dev if dev.type in ("cpu", "cuda", "mps") else None


def check_device(name: str, key: str = "train.device") -> None:
    """Raise a one-line :class:`ConfigError` when the configured device is not available on this machine."""
    import torch

    dev = _parse_device(name)
    if dev is None:
        raise ConfigError(f"config key '{key}' must be auto, cpu, cuda, cuda:N or mps, got {name!r}.")
    if dev == "auto" or dev.type == "cpu":
        return
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"config key '{key}' is {name!r} but CUDA is not available on this machine "
                              f"(use auto or cpu).")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"config key '{key}' is {name!r} but this machine has {torch.cuda.device_count()} "
                              f"CUDA device(s).")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"config key '{key}' is {name!r} but MPS is not available on this machine (use auto or cpu).")


def config_from_dict(raw: dict) -> Config:
    """Build a :class:`Config` from nested dicts, checking every key and type."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping at the top level, got {type(raw).__name__}.")
    top = {}
    for key, value in raw.items():
        if key == "seed":
            top["seed"] = _check("seed", _coerce(value, 0, "seed"))
        elif key in _SECTIONS:
            cls = _SECTIONS[key]
            defaults = cls()
            names = {f.name for f in dataclasses.fields(cls)}
            section = {}
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}.")
            for k, v in (value or {}).items():
                if k not in names:
                    raise _unknown(f"{key}.{k}", names)
                name = f"{key}.{k}"
                if v is None and name in _NULL_IS_ZERO:
                    v = 0
                if name == "infer.threshold" and isinstance(v, str):
                    if v.strip().lower() == "auto":
                        section[k] = "auto"
                        continue
                    try:
                        float(v)
                    except ValueError:
                        raise ConfigError(f"config key '{name}' must be a number in [0, 1] or auto, "
                                          f"got {v!r}.") from None
                if name == "data.channels" and isinstance(v, (list, tuple)):  # a subset of the preset's channels
                    v = {str(n): "" for n in v}
                section[k] = _check(name, _coerce(v, getattr(defaults, k), name))
            top[key] = cls(**section)
        else:
            raise _unknown(key, ["seed", *_SECTIONS])
    return _cross_check(Config(**top))


def _cross_check(cfg: Config) -> Config:
    """Checks between keys of the fundus recipe options (all off by default)."""
    two_d = cfg.data.layout in LAYOUTS_2D
    binary = cfg.data.num_classes == 2
    if cfg.data.fundus_norm != "none" and not two_d:
        raise ConfigError(f"config key 'data.fundus_norm' is {cfg.data.fundus_norm!r} but data.layout "
                          f"{cfg.data.layout!r} is 3D; fundus normalisation needs one of {', '.join(LAYOUTS_2D)}.")
    in_ch = cfg.model.kwargs.get("in_channels")
    if cfg.data.fundus_norm == "green_clahe" and in_ch is not None and in_ch != 1:
        raise ConfigError(f"config key 'model.kwargs.in_channels' is {in_ch!r} but data.fundus_norm green_clahe "
                          f"gives 1-channel images; set it to 1 or leave it out.")
    if cfg.data.augment == "strong_fundus" and not two_d:
        raise ConfigError(f"config key 'data.augment' is strong_fundus but data.layout {cfg.data.layout!r} is 3D; "
                          f"it needs one of {', '.join(LAYOUTS_2D)}.")
    if cfg.loss.name == "dice_ce_cldice" and not binary:
        raise ConfigError(f"config key 'loss.name' is dice_ce_cldice, which needs binary segmentation "
                          f"(data.num_classes: 2), got data.num_classes {cfg.data.num_classes}.")
    if cfg.data.layout == "case_folders":
        # the preset's name here; its channels and patterns are checked by data.layouts.case_folders when a
        # training starts (engine.train.check_model_config), before any data is read
        if cfg.data.preset and cfg.data.preset not in CASE_FOLDER_PRESETS:
            raise ConfigError(f"config key 'data.preset' must be one of {', '.join(CASE_FOLDER_PRESETS)}, got "
                              f"{cfg.data.preset!r}.")
        if not cfg.data.preset and not cfg.data.channels:
            raise ConfigError("config key 'data.channels' is empty and no 'data.preset' is set; expected name -> "
                              "file pattern per input channel (e.g. {FLAIR: '*FLAIR.nii.gz'}) or a preset "
                              f"({', '.join(CASE_FOLDER_PRESETS)}).")
    elif cfg.data.preset or cfg.data.channels or cfg.data.label or cfg.data.label_map:
        used = next(k for k in ("preset", "channels", "label", "label_map") if getattr(cfg.data, k))
        raise ConfigError(f"config key 'data.{used}' applies to data.layout case_folders, got layout "
                          f"{cfg.data.layout!r}.")
    if cfg.data.folds and cfg.data.fold >= cfg.data.folds:
        raise ConfigError(f"config key 'data.fold' is {cfg.data.fold}, expected 0 ... {cfg.data.folds - 1} for "
                          f"data.folds {cfg.data.folds}.")
    if cfg.data.fold and not cfg.data.folds:
        raise ConfigError(f"config key 'data.fold' is {cfg.data.fold} but data.folds is 0 (no cross-validation); "
                          f"set data.folds (e.g. 5).")
    if cfg.infer.threshold == "auto" and not (binary and two_d):
        raise ConfigError(f"config key 'infer.threshold' is auto, which needs a binary (data.num_classes: 2) 2D "
                          f"layout, got num_classes {cfg.data.num_classes} and layout {cfg.data.layout!r}.")
    return cfg


def config_to_dict(cfg: Config) -> dict:
    """Nested plain dict of ``cfg`` (what ``config.yaml`` and checkpoints hold); the keys of
    ``_OMIT_AT_DEFAULT`` are left out at their default value."""
    out = _full_dict(cfg)
    for section, keys in _OMIT_AT_DEFAULT.items():
        if section == "loss" and out["loss"]["name"] == "dice_ce_cldice":
            continue  # shown when used
        for k, default in keys.items():
            if out[section].get(k) == default:
                del out[section][k]
    return out


def _full_dict(cfg: Config) -> dict:
    def conv(x):
        if isinstance(x, tuple):
            return [conv(v) for v in x]
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        return x

    return conv(dataclasses.asdict(cfg))


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``key=value`` overrides (YAML-parsed values), e.g. ``train.epochs=5`` or ``model.kwargs.widths=[8,16]``."""
    raw = _full_dict(cfg)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}.")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for p in parts[:-1]:
            if not isinstance(node, dict) or p not in node:
                raise _unknown(key, node.keys() if isinstance(node, dict) else [])
            node = node[p]
        if parts[0] != "model" and parts[-1] not in node:
            raise _unknown(key, node.keys())
        node[parts[-1]] = safe_yaml(text, f"--set {key.strip()}")
    return config_from_dict(raw)


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config file and apply overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config ({e}).") from None
    raw = safe_yaml(text, str(path)) or {}
    try:
        cfg = config_from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return apply_overrides(cfg, overrides or [])
