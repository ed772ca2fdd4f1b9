"""Config: YAML loading, overrides, unknown keys and bad values raise with the key named."""

from __future__ import annotations

import pytest

from mambaseg.config import Config, ConfigError, apply_overrides, config_from_dict, config_to_dict, load_config


def test_load_and_override(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("seed: 3\nmodel: {name: unet_tiny, kwargs: {widths: [4, 8]}}\ntrain: {epochs: 7}\n")
    cfg = load_config(p, ["train.epochs=2", "data.patch_size=[32, 48]", "model.kwargs.widths=[2, 4]"])
    assert cfg.seed == 3 and cfg.train.epochs == 2 and cfg.data.patch_size == (32, 48)
    assert cfg.model.kwargs == {"widths": [2, 4]}
    assert config_from_dict(config_to_dict(cfg)) == cfg


@pytest.mark.parametrize("raw,needle", [
    ({"trian": {}}, "trian"),
    ({"train": {"epoch": 3}}, "train.epoch"),
    ({"train": {"epochs": "many"}}, "train.epochs"),
    ({"train": {"amp": "maybe"}}, "train.amp"),
    ({"data": {"patch_size": "big"}}, "data.patch_size"),
])
def test_bad_keys_and_values(raw, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        config_from_dict(raw)


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(Config(), ["train.epochs"])
    with pytest.raises(ConfigError, match="optim.lrr"):
        apply_overrides(Config(), ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
