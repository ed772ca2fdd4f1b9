"""Predict reads a checkpoint's stored config through the config dataclasses (issue 11): defaults stated once,
bad stored values refused naming the file, and ``infer.tta`` in a model's config turns mirroring on."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import mambaseg.engine.predict.pipeline as predict_mod
from mambaseg.config import config_from_dict, config_to_dict
from mambaseg.engine.checkpoint import CheckpointError, save_checkpoint, stored_config
from mambaseg.models import build_model


def _ckpt(path, **infer):
    net = build_model("unet_tiny", in_channels=3, out_channels=1)
    cfg = config_from_dict({"model": {"name": "unet_tiny"}, "data": {"patch_size": [32, 32]}, "infer": infer})
    save_checkpoint({"model_name": "unet_tiny", "model_kwargs": {"in_channels": 3, "out_channels": 1},
                     "state_dict": net.state_dict(), "config": config_to_dict(cfg), "data": {"spatial_dims": 2}}, path)
    return path


def test_stored_config_fills_defaults_from_the_dataclasses(tmp_path):
    cfg = stored_config({"config": {"data": {"patch_size": [48, 48]}}}, tmp_path / "m.pt")
    assert cfg.data.patch_size == (48, 48) and cfg.infer.overlap == 0.5 and cfg.infer.batch_size == 4
    assert stored_config({}, "x.pt").infer.tta is False


def test_bad_stored_config_is_refused_naming_the_file():
    with pytest.raises(CheckpointError, match=r"^bad\.pt: stored config: .*infer\.overlap"):
        stored_config({"config": {"infer": {"overlap": 1.5}}}, "bad.pt")
    with pytest.raises(CheckpointError, match=r"^bad\.pt: stored config: .*infer\.nonsense"):
        stored_config({"config": {"infer": {"nonsense": 1}}}, "bad.pt")


@pytest.mark.parametrize("config_tta,flag,expected", [(False, False, ()), (True, False, (0, 1)),
                                                       (False, True, (0, 1))])
def test_infer_tta_in_the_config_turns_mirroring_on(tmp_path, monkeypatch, config_tta, flag, expected):
    model = _ckpt(tmp_path / "m.pt", tta=config_tta)
    img = tmp_path / "in" / "a.png"
    img.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(img)
    seen = []
    real = predict_mod.sliding_window

    def spy(predict, image, tile, overlap, mode, batch_size, axes, *rest):
        seen.append(tuple(axes))
        return real(predict, image, tile, overlap, mode, batch_size, axes, *rest)

    monkeypatch.setattr(predict_mod, "sliding_window", spy)
    predict_mod.predict(model, img, tmp_path / "out", tta=flag, progress=False)
    assert seen == [expected]
    assert (tmp_path / "out" / "a.png").is_file()
