"""The public API frozen while the package is restructured (issue 11): the CLI's subcommands and flags, the model
registry, and the ``state_dict`` keys and shapes of every ``*_tiny`` model and of both shipped checkpoints.

The expected values live in ``tests/snapshots/public_api.json``. A deliberate API change rewrites it with
``MAMBASEG_UPDATE_SNAPSHOT=1 pytest tests/test_public_api.py`` and the diff is reviewed with the change.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest
import torch

from mambaseg.cli import build_parser
from mambaseg.models import build_model, list_models

SNAPSHOT = Path(__file__).parent / "snapshots" / "public_api.json"
WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
SHIPPED = ("akmamba_net_drive.pt", "dm_segnet_brats_wt.pt", "dm_segnet_hippocampus.pt")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def _cli() -> dict[str, list[str]]:
    out = {}
    for name, sub in sorted(_subparsers(build_parser()).items()):
        flags = []
        for a in sub._actions:
            flags.extend(a.option_strings or [a.dest])
        out[name] = sorted(flags)
    return out


def _keys(state: dict) -> list[str]:
    return [f"{k}:{'x'.join(map(str, v.shape))}" for k, v in state.items()]


def _current() -> dict:
    tiny = {}
    for name in list_models():
        if name.endswith("_tiny"):
            torch.manual_seed(0)
            tiny[name] = _keys(build_model(name).state_dict())
    shipped = {}
    for fname in SHIPPED:
        from mambaseg.engine.checkpoint import load_checkpoint

        ck = load_checkpoint(WEIGHTS / fname)
        shipped[fname] = {"model_name": ck["model_name"], "keys": _keys(ck["state_dict"]),
                          "rebuilt_keys": _keys(build_model(ck["model_name"], **ck["model_kwargs"]).state_dict())}
    return {"cli": _cli(), "models": list_models(), "tiny_state_dicts": tiny, "shipped": shipped}


@pytest.fixture(scope="module")
def current() -> dict:
    cur = _current()
    if os.environ.get("MAMBASEG_UPDATE_SNAPSHOT") == "1":
        SNAPSHOT.write_text(json.dumps(cur, indent=0, sort_keys=True) + "\n")
    return cur


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads(SNAPSHOT.read_text())


def test_cli_subcommands_and_flags_unchanged(current, expected):
    assert sorted(current["cli"]) == sorted(expected["cli"]), "subcommands changed"
    for name, flags in expected["cli"].items():
        assert current["cli"][name] == flags, f"mambaseg {name}: flags changed"


def test_model_registry_unchanged(current, expected):
    assert current["models"] == expected["models"]


@pytest.mark.parametrize("name", [n for n in list_models() if n.endswith("_tiny")])
def test_tiny_model_state_dict_keys_unchanged(name, current, expected):
    assert current["tiny_state_dicts"][name] == expected["tiny_state_dicts"][name]


@pytest.mark.parametrize("fname", SHIPPED)
def test_shipped_checkpoints_keys_unchanged_and_loadable(fname, current, expected):
    cur, exp = current["shipped"][fname], expected["shipped"][fname]
    assert cur["keys"] == exp["keys"] and cur["model_name"] == exp["model_name"]
    assert cur["rebuilt_keys"] == cur["keys"]  # the model built from the stored kwargs takes these weights as they are


def test_every_cli_option_has_help():
    missing = []
    for name, sub in _subparsers(build_parser()).items():
        for a in sub._actions:
            if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip():
                missing.append(f"{name} {'/'.join(a.option_strings) or a.dest}")
    assert not missing, f"options without help text: {missing}"
