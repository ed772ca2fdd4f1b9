"""Non-finite losses are skipped, counted and logged; K in a row stop training with the last good checkpoint kept;
bf16 autocast training runs (the scan stays fp32)."""

from __future__ import annotations

import json

import pytest
import torch

import mambaseg.engine.train as train_mod
from mambaseg.config import apply_overrides, config_from_dict
from mambaseg.engine.checkpoint import load_checkpoint

BASE = {
    "seed": 0,
    "model": {"name": "unet_tiny"},
    "data": {"layout": "drive", "val_fraction": 0.0, "patch_size": [32, 32], "augment": "none"},
    "train": {"epochs": 2, "iters_per_epoch": 4, "batch_size": 2, "max_bad_steps": 3, "num_threads": 1},
}


@pytest.fixture(scope="module")
def data(tiny_drive):
    return tiny_drive  # conftest: 2 training + 1 test image, 40x44


def _poisoned_loss(bad_calls):
    class Poisoned(train_mod.SegLoss):
        calls = 0

        def forward(self, *a, **k):
            Poisoned.calls += 1
            out = super().forward(*a, **k)
            return out * float("nan") if Poisoned.calls in bad_calls else out

    return Poisoned


def test_nonfinite_steps_are_skipped_and_counted(data, tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "SegLoss", _poisoned_loss({2, 3}))
    cfg = apply_overrides(config_from_dict(BASE), [f"data.root={data}"])
    train_mod.train(cfg, tmp_path / "run", progress=False)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["skipped_steps"] == 2 and lines[1]["skipped_steps"] == 0
    assert "non-finite loss" in (tmp_path / "run" / "train.log").read_text()
    ck = load_checkpoint(tmp_path / "run" / "checkpoint_last.pt")
    assert all(torch.isfinite(v).all() for v in ck["state_dict"].values())


def test_k_nonfinite_in_a_row_stop_and_keep_last_good(data, tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "SegLoss", _poisoned_loss(set(range(5, 100))))  # epoch 1 fine, then NaN
    cfg = apply_overrides(config_from_dict(BASE), [f"data.root={data}"])
    with pytest.raises(train_mod.TrainingError, match="3 non-finite losses in a row"):
        train_mod.train(cfg, tmp_path / "run", progress=False)
    ck = load_checkpoint(tmp_path / "run" / "checkpoint_last.pt")
    assert ck["epoch"] == 0 and all(torch.isfinite(v).all() for v in ck["state_dict"].values())


def test_bf16_autocast_training_runs(data, tmp_path):
    cfg = apply_overrides(config_from_dict(BASE),
                          [f"data.root={data}", "train.amp=true", "model.name=akmamba_net_tiny"])
    summary = train_mod.train(cfg, tmp_path / "run", progress=False)
    assert summary["epochs_done"] == 2 and summary["last"]["train_loss"] == summary["last"]["train_loss"]  # not NaN
