"""Shared test fixtures: tiny synthetic datasets and configs, and the real-data root.

Real data (tests that use it skip cleanly when it is absent) is looked up under ``$MAMBASEG_DATA`` — the variable
the package itself reads for data roots — else ``../shared/data`` next to the repository.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_script(relpath: str):
    """Import a script of the repository that is not part of the package (``benchmarks/*.py``, ``docs/hooks/*.py``)
    by its path relative to the repository root."""
    path = REPO / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod

#: the smallest 2D training config: unet_tiny on 32x32 patches, one thread, no validation split
TINY_2D = {
    "seed": 0,
    "model": {"name": "unet_tiny"},
    "data": {"layout": "drive", "val_fraction": 0.0, "patch_size": [32, 32], "augment": "none"},
    "train": {"epochs": 1, "iters_per_epoch": 2, "batch_size": 2, "num_threads": 1},
}

#: the smallest 3D training config: dm_segnet_tiny on 16x16x16 patches of a 3-class MSD-layout task (such as
#: mambaseg.data.synthetic's phantoms), one step, validated once; whole tiles, two at a time, when predicting
TINY_3D = {
    "seed": 0,
    "model": {"name": "dm_segnet_tiny"},
    "data": {"layout": "msd", "num_classes": 3, "patch_size": [16, 16, 16], "val_fraction": 0.25, "augment": "none"},
    "train": {"epochs": 1, "iters_per_epoch": 1, "batch_size": 1, "val_every": 1},
    "infer": {"overlap": 0.0, "batch_size": 2},
}


def tiny_3d(root: str | Path, *overrides: str) -> dict:
    """:data:`TINY_3D` on the data root ``root`` with ``key=value`` overrides (``"data.num_classes=2"``; the value
    is read as YAML, a missing section or key is added), as a config dict."""
    import copy

    import yaml

    cfg = copy.deepcopy(TINY_3D)
    cfg["data"]["root"] = str(root)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r}: expected key=value")
        *sections, name = key.split(".")
        node = cfg
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = yaml.safe_load(value)
    return cfg


def tiny_3d_yaml(root: str | Path, *overrides: str) -> str:
    """:func:`tiny_3d` as the text of a config file (``root="%s"`` gives a template for ``text % root``)."""
    import yaml

    return yaml.safe_dump(tiny_3d(root, *overrides), sort_keys=False)


def shared_data_root() -> Path:
    """``$MAMBASEG_DATA``, else ``<repository>/../shared/data``."""
    env = os.environ.get("MAMBASEG_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Callable[..., Path]:
    """``shared_data("DRIVE", "training")``: that path under the real-data root, or the test is skipped."""

    def get(*parts: str) -> Path:
        path = shared_data_root().joinpath(*parts)
        if not path.exists():
            pytest.skip(f"real data not available: {path} (set MAMBASEG_DATA)")
        return path

    return get


@pytest.fixture(scope="session")
def tiny_drive(tmp_path_factory) -> Path:
    """A synthetic DRIVE-layout dataset: 2 training and 1 test image of 40x44 pixels (seed 3)."""
    from mambaseg.data.synthetic import write_synthetic_drive

    return write_synthetic_drive(tmp_path_factory.mktemp("tiny_drive") / "d", n_train=2, n_test=1, size=(40, 44),
                                 seed=3)


@pytest.fixture
def tiny_cfg(tiny_drive) -> Callable[..., object]:
    """``tiny_cfg("train.epochs=2", ...)``: :data:`TINY_2D` on :func:`tiny_drive` with ``key=value`` overrides."""
    from mambaseg.config import apply_overrides, config_from_dict

    def make(*overrides: str, base: dict | None = None):
        return apply_overrides(config_from_dict(base or TINY_2D), [f"data.root={tiny_drive}", *overrides])

    return make


# --- nnunetv2/evaluation/evaluate_predictions.py (v2.x), the loader nnU-Net uses for its summary.json -------------
def _key_to_label_or_region(key: str):
    try:
        return int(key)
    except ValueError:
        key = key.replace("(", "")
        key = key.replace(")", "")
        split = key.split(",")
        return tuple([int(i) for i in split if len(i) > 0])


def _nnunet_load_summary_json(filename: str):
    import json

    with open(filename) as f:
        results = json.load(f)
    results["mean"] = {_key_to_label_or_region(k): results["mean"][k] for k in results["mean"]}
    for i in range(len(results["metric_per_case"])):
        results["metric_per_case"][i]["metrics"] = \
            {_key_to_label_or_region(k): results["metric_per_case"][i]["metrics"][k]
             for k in results["metric_per_case"][i]["metrics"]}
    return results
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def load_summary_json() -> Callable[[str], dict]:
    """nnU-Net v2's own ``load_summary_json`` (its key conversion back to label values / region tuples)."""
    return _nnunet_load_summary_json


#: ``python SCRIPT CONFIG RUN_DIR`` (or under torchrun): mambaseg.engine.train.train() unchanged, with the model
#: wrapped to compute in float64 and its initial weights saved as RUN_DIR/init.pt (the same on every rank)
F64_TRAIN = """
import sys
from pathlib import Path

import torch

import mambaseg.engine.train as T
from mambaseg.config import load_config

build = T.build_model


class Float64(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net.double()

    def forward(self, x):
        return self.net(x.double())


def build64(name, **kw):
    net = Float64(build(name, **kw))
    torch.save(net.state_dict(), Path(sys.argv[2]) / "init.pt")
    return net


T.build_model = build64
T.train(load_config(sys.argv[1]), Path(sys.argv[2]), progress=False)
"""


@pytest.fixture
def f64_train_script(tmp_path) -> Path:
    """:data:`F64_TRAIN` written to a file."""
    path = tmp_path / "f64_train.py"
    path.write_text(F64_TRAIN)
    return path
