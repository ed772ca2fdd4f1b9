"""Run configuration: frozen dataclasses loaded from a small YAML file, overridden by ``--set key=value``.

Unknown keys raise (with the known ones listed), so a typo never silently falls back to a default. The resolved
configuration is saved as ``config.yaml`` in every run directory and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Config", "ModelCfg", "DataCfg", "LossCfg", "OptimCfg", "TrainCfg", "InferCfg", "load_config",
           "apply_overrides", "config_to_dict", "config_from_dict", "ConfigError"]


class ConfigError(ValueError):
    """A configuration file or override is invalid (one-line message)."""


@dataclass(frozen=True)
class ModelCfg:
    name: str = "akmamba_net_cpu"
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DataCfg:
    layout: str = "drive"  # drive | folder2d | synthetic_drive | msd | brats | synapse_npz | btcv
    root: str = ""
    split: str = "training"  # DRIVE split folder used for training
    val_fraction: float = 0.2
    val_root: str = ""  # optional separate validation dataset (same layout)
    num_classes: int = 2  # including background
    patch_size: tuple = (256, 256)
    fg_prob: float = 0.5
    augment: str = "default"  # default | light | none
    fov: bool = False  # restrict loss/metrics to a field-of-view mask; estimate it at inference when absent
    modality: str = "MR"  # 3D: MR | CT
    target_spacing: tuple = ()  # 3D: () = median spacing from the fingerprint
    ct_window: tuple = ()  # 3D CT: (lo, hi) HU window clipped and scaled to [0, 1]; () = nnU-Net CT normalisation
    cache_dir: str = ""  # 3D: preprocessed-case cache ('' = <run>/cache)
    synthetic_cases: int = 24  # synthetic_drive: number of training images generated
    synthetic_size: int = 256


@dataclass(frozen=True)
class LossCfg:
    name: str = "dice_ce"  # dice_ce (sigmoid BCE + Dice for 1 output, softmax CE + Dice otherwise) | ce | dice
    dice_weight: float = 1.0
    ce_weight: float = 1.0


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
    amp: bool = False  # bf16 autocast on CPU, fp16 on CUDA; the scan stays fp32
    grad_clip: float = 12.0
    deterministic: bool = False
    num_threads: int = 0  # 0 = torch default
    time_limit_min: float = 0.0  # stop (and finish cleanly) after this many minutes; 0 = no limit
    max_bad_steps: int = 5  # consecutive non-finite losses before training stops with an error
    device: str = "auto"


@dataclass(frozen=True)
class InferCfg:
    patch_size: tuple = ()  # () = data.patch_size
    overlap: float = 0.5
    mode: str = "gaussian"  # gaussian | constant
    tta: bool = False
    threshold: float = 0.5
    batch_size: int = 4


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
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}.") from None
        return int(v) if isinstance(default, int) and v == int(v) else v
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}.")
        return dict(value)
    if isinstance(default, str):
        return "" if value is None else str(value)
    return value


def _unknown(key: str, known) -> ConfigError:
    close = difflib.get_close_matches(key.split(".")[-1], list(known), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key '{key}'.{hint} Known: {', '.join(sorted(known))}.")


def config_from_dict(raw: dict) -> Config:
    """Build a :class:`Config` from nested dicts, checking every key and type."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping at the top level, got {type(raw).__name__}.")
    top = {}
    for key, value in raw.items():
        if key == "seed":
            top["seed"] = _coerce(value, 0, "seed")
        elif key in _SECTIONS:
            cls = _SECTIONS[key]
            defaults = cls()
            names = {f.name for f in dataclasses.fields(cls)}
            section = {}
            for k, v in (value or {}).items():
                if k not in names:
                    raise _unknown(f"{key}.{k}", names)
                section[k] = _coerce(v, getattr(defaults, k), f"{key}.{k}")
            top[key] = cls(**section)
        else:
            raise _unknown(key, ["seed", *_SECTIONS])
    return Config(**top)


def config_to_dict(cfg: Config) -> dict:
    def conv(x):
        if isinstance(x, tuple):
            return [conv(v) for v in x]
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        return x

    return conv(dataclasses.asdict(cfg))


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``key=value`` overrides (YAML-parsed values), e.g. ``train.epochs=5`` or ``model.kwargs.widths=[8,16]``."""
    raw = config_to_dict(cfg)
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
        node[parts[-1]] = yaml.safe_load(text)
    return config_from_dict(raw)


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config file and apply overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]}).") from None
    try:
        cfg = config_from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return apply_overrides(cfg, overrides or [])
