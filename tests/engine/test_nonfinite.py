"""Non-finite training (#14): a step whose gradients or updated weights are not finite is undone and counted,
train.max_bad_steps in a row stop with the last good checkpoint; a NaN validation Dice never marks the best
checkpoint; predict refuses weights with NaN/Inf (one line naming the file, exit 2)."""

from __future__ import annotations

import json
import math

import pytest
import torch

import mambaseg.engine.train as train_mod
from mambaseg.cli import main
from mambaseg.config import apply_overrides, config_from_dict, config_to_dict
from mambaseg.engine.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from mambaseg.engine.step_guard import StepGuard

BASE = {
    "seed": 0,
    "model": {"name": "unet_tiny"},
    "data": {"layout": "drive", "val_fraction": 0.0, "patch_size": [32, 32], "augment": "none"},
    "train": {"epochs": 2, "iters_per_epoch": 4, "batch_size": 2, "max_bad_steps": 3, "num_threads": 1},
}


@pytest.fixture(scope="module")
def data(tiny_drive):
    return tiny_drive  # conftest: 2 training + 1 test image, 40x44


def _cfg(data, *extra):
    return apply_overrides(config_from_dict(BASE), [f"data.root={data}", *extra])


def _finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def _lines(run) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------------- the step guard
def test_step_guard_restores_weights_buffers_and_optimizer_state():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    guard = StepGuard(net, opt)
    x = torch.randn(2, 1, 8, 8)
    guard.save()  # before the first step: no optimiser state yet
    net(x).mean().backward()
    opt.step()
    assert opt.state
    guard.restore()
    assert not opt.state  # the state the undone step created is gone
    net(x).pow(2).mean().backward()
    opt.step()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    state_before = {k: v.clone() for k, v in opt.state[net[0].weight].items()}
    guard.save()
    opt.zero_grad()
    net(x * float("nan")).mean().backward()  # NaN forward: BN running stats and then the weights turn NaN
    opt.step()
    assert not guard.model_finite()
    guard.restore()
    assert guard.model_finite()
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, v in opt.state[net[0].weight].items():
        assert torch.equal(v, state_before[k]), k


# --------------------------------------------------------------------------------------------------- training
class _NaNGrad(torch.autograd.Function):
    """Identity forward, NaN gradient: a finite loss whose backward is not."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


def _nan_grad_loss(bad_calls):
    class Loss(train_mod.SegLoss):
        calls = 0

        def forward(self, logits, *a, **k):
            Loss.calls += 1
            if Loss.calls in bad_calls:
                logits = _NaNGrad.apply(logits)
            return super().forward(logits, *a, **k)

    return Loss


def test_nonfinite_gradients_skip_the_step(data, tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "SegLoss", _nan_grad_loss({2, 3}))
    run = tmp_path / "run"
    train_mod.train(_cfg(data), run, progress=False)
    lines = _lines(run)
    assert lines[0]["skipped_steps"] == 2 and lines[1]["skipped_steps"] == 0
    assert math.isfinite(lines[0]["train_loss"])
    assert "non-finite gradients, step skipped" in (run / "train.log").read_text()
    assert _finite(load_checkpoint(run / "checkpoint_last.pt")["state_dict"])


def _poisoning_optimizer(bad_steps):
    """build_optimizer whose step() writes NaN into a weight on the given step calls (a diverging update)."""
    real = train_mod.build_optimizer

    def build(model, cfg):
        opt = real(model, cfg)
        count = {"n": 0}

        def poison(optimizer, args, kwargs):
            count["n"] += 1
            if count["n"] in bad_steps:
                with torch.no_grad():
                    next(model.parameters()).view(-1)[0] = float("inf")

        opt.register_step_post_hook(poison)
        return opt

    return build


def test_nonfinite_weights_after_update_are_undone(data, tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "build_optimizer", _poisoning_optimizer({3}))
    run = tmp_path / "run"
    train_mod.train(_cfg(data), run, progress=False)
    assert [h["skipped_steps"] for h in _lines(run)] == [1, 0]
    assert "non-finite weights after the update" in (run / "train.log").read_text()
    for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
        assert _finite(load_checkpoint(run / name)["state_dict"]), name


def test_max_bad_steps_of_weights_stop_with_last_good_checkpoint(data, tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "build_optimizer", _poisoning_optimizer(set(range(5, 100))))
    run = tmp_path / "run"
    with pytest.raises(train_mod.TrainingError, match=r"3 non-finite weight updates in a row at epoch 2 "
                                                      r"\(train.max_bad_steps=3\).*checkpoint_last.pt"):
        train_mod.train(_cfg(data), run, progress=False)
    ck = load_checkpoint(run / "checkpoint_last.pt")
    assert ck["epoch"] == 0 and _finite(ck["state_dict"])


# -------------------------------------------------------------------------------------------- best selection
def _fake_validate(scores):
    it = iter(scores)

    def validate(model, cases, cfg, device, progress=None):
        return {"val_dice": next(it), "val_cases": len(cases)}

    return validate


def test_nan_validation_dice_is_never_best(data, tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "validate", _fake_validate([0.2, float("nan"), 0.1]))
    run = tmp_path / "run"
    summary = train_mod.train(_cfg(data, "data.val_fraction=0.5", "train.epochs=3", "train.val_every=1"), run,
                              progress=False)
    lines = _lines(run)
    assert [h.get("best", False) for h in lines] == [True, False, False]
    assert math.isnan(lines[1]["val_dice"])
    assert load_checkpoint(run / "checkpoint_best.pt")["epoch"] == 0 and summary["best_val_dice"] == 0.2
    assert "validation Dice is NaN" in (run / "train.log").read_text()


def test_only_nan_validation_marks_no_epoch_best(data, tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "validate", _fake_validate([float("nan")] * 2))
    run = tmp_path / "run"
    summary = train_mod.train(_cfg(data, "data.val_fraction=0.5", "train.val_every=1"), run, progress=False)
    assert not any(h.get("best") for h in _lines(run))
    assert summary["best_val_dice"] == -1.0
    assert "no epoch had a finite validation Dice" in (run / "train.log").read_text()


# ------------------------------------------------------------------------------------- predict refuses NaN weights
def _nan_checkpoint(path):
    from mambaseg.models import build_model

    net = build_model("unet_tiny", in_channels=3, out_channels=1)
    state = net.state_dict()
    key = next(k for k, v in state.items() if v.is_floating_point() and v.dim() > 1)
    state[key].view(-1)[3] = float("nan")
    cfg = config_from_dict({"model": {"name": "unet_tiny"}, "data": {"patch_size": [32, 32]}})
    save_checkpoint({"model_name": "unet_tiny", "model_kwargs": {"in_channels": 3, "out_channels": 1},
                     "state_dict": state, "config": config_to_dict(cfg), "data": {"spatial_dims": 2}}, path)
    return key


def test_model_from_checkpoint_refuses_nan_weights(tmp_path):
    path = tmp_path / "diverged.pt"
    key = _nan_checkpoint(path)
    with pytest.raises(CheckpointError, match=rf"diverged.pt: the weights contain non-finite values .*{key}"):
        model_from_checkpoint(load_checkpoint(path), path)


def test_predict_cli_refuses_nan_weights(data, tmp_path, capsys):
    path = tmp_path / "diverged.pt"
    _nan_checkpoint(path)
    out = tmp_path / "pred"
    code = main(["predict", "-m", str(path), "-i", str(data / "test" / "images"), "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0]
    assert str(path) in err[0] and "non-finite" in err[0]
    assert not out.exists()
