"""Exact resume: a real training process killed with SIGKILL mid-run, resumed with --resume, ends with weights
bit-identical to an uninterrupted run (CPU, deterministic mode). The kill comes at a set training step, not after a
set time, so where the run stops does not depend on how busy the machine is."""

from __future__ import annotations

import signal
import subprocess
import sys

import torch

from mambaseg.data.synthetic import write_synthetic_drive
from mambaseg.engine.checkpoint import load_checkpoint

CONFIG = """
seed: 3
model: {name: unet_tiny}
data: {layout: drive, root: "%s", val_fraction: 0.25, patch_size: [48, 48], fov: true, augment: default}
optim: {name: adamw, lr: 3.0e-3, schedule: cosine, warmup_iters: 3}
train: {epochs: 6, iters_per_epoch: 8, batch_size: 2, val_every: 2, num_threads: 1}
infer: {patch_size: [64, 64]}
"""


#: ``python -c KILL_AT_STEP N ARGS...``: ``mambaseg ARGS...``, which sends itself SIGKILL when training step N
#: (counted from 1 in this process) has updated the weights, before the scheduler steps
KILL_AT_STEP = """
import os, signal, sys

import mambaseg.engine.train as T
from mambaseg.cli import main

kill_at, done = int(sys.argv[1]), [0]
real_step = T._Trainer._step


def step(trainer):
    out = real_step(trainer)
    done[0] += 1
    if done[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return out


T._Trainer._step = step
sys.exit(main(sys.argv[2:]))
"""


def _train(cfg, out, resume=False, kill_at_step=0):
    args = ["train", str(cfg), "--out", str(out), "--no-progress", "--deterministic"] + (["--resume"] if resume else [])
    cmd = [sys.executable] + (["-c", KILL_AT_STEP, str(kill_at_step)] if kill_at_step else ["-m", "mambaseg"])
    return subprocess.Popen(cmd + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    data = write_synthetic_drive(tmp_path / "data", n_train=4, n_test=1, size=(64, 72), seed=5)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG % data)
    full = _train(cfg, tmp_path / "full")
    assert full.wait(timeout=600) == 0, full.stderr.read()

    run = tmp_path / "killed"
    p = _train(cfg, run, kill_at_step=20)  # step 4 of 8 of epoch 3: epochs 1 and 2 are saved
    p.wait(timeout=600)
    assert p.returncode == -signal.SIGKILL, p.stderr.read()
    assert load_checkpoint(run / "checkpoint_last.pt")["epoch"] == 1  # 0-based: the second epoch
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    r = _train(cfg, run, resume=True)
    assert r.wait(timeout=600) == 0, r.stderr.read()

    a = load_checkpoint(tmp_path / "full" / "checkpoint_last.pt")
    b = load_checkpoint(run / "checkpoint_last.pt")
    assert a["epoch"] == b["epoch"] == 5
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert not any(p.name.endswith(".tmp") for p in run.iterdir())
