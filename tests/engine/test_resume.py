"""Exact resume: a real training process killed with SIGKILL mid-run, resumed with --resume, ends with weights
bit-identical to an uninterrupted run (CPU, deterministic mode)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

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


def _train(cfg, out, resume=False):
    cmd = [sys.executable, "-m", "mambaseg", "train", str(cfg), "--out", str(out), "--no-progress", "--deterministic"]
    return subprocess.Popen(cmd + (["--resume"] if resume else []), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    data = write_synthetic_drive(tmp_path / "data", n_train=4, n_test=1, size=(64, 72), seed=5)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG % data)
    full = _train(cfg, tmp_path / "full")
    assert full.wait(timeout=600) == 0, full.stderr.read()

    run = tmp_path / "killed"
    p = _train(cfg, run)
    deadline = time.time() + 600
    while time.time() < deadline:  # wait until at least two epochs are saved, then kill mid-epoch
        if (run / "metrics.jsonl").is_file() and len((run / "metrics.jsonl").read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    saved = load_checkpoint(run / "checkpoint_last.pt")["epoch"]
    assert saved < 5, "the run finished before it could be killed; make it longer"
    r = _train(cfg, run, resume=True)
    assert r.wait(timeout=600) == 0, r.stderr.read()

    a = load_checkpoint(tmp_path / "full" / "checkpoint_last.pt")
    b = load_checkpoint(run / "checkpoint_last.pt")
    assert a["epoch"] == b["epoch"] == 5
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert not any(p.name.endswith(".tmp") for p in run.iterdir())
