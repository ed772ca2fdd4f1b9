"""Every shipped config parses (unknown keys would raise) and names a registered model."""

from __future__ import annotations

from pathlib import Path

import pytest

from mambaseg.config import load_config
from mambaseg.models import list_models

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.relative_to(p.parents[1]).as_posix() for p in CONFIGS])
def test_config_parses_and_model_exists(path):
    cfg = load_config(path)
    assert cfg.model.name in list_models()
    assert len(cfg.data.patch_size) in (2, 3)


def test_all_drive_models_have_two_recipes():
    names = {p.stem for p in CONFIGS if p.parent.name == "drive"}
    for m in ("akmamba_net", "unet", "attention_unet", "unet_plus_plus", "unet3plus", "transunet"):
        assert {m, f"{m}_cpu"} <= names
