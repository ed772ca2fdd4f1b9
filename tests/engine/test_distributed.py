"""DDP through torchrun with 2 CPU processes (gloo): same result as one process with the same global batch, and
--resume works under DDP."""

from __future__ import annotations

import subprocess
import sys

import torch

from mambaseg.data.synthetic import write_synthetic_drive
from mambaseg.engine.checkpoint import load_checkpoint

CONFIG = """
seed: 1
model: {name: unet_tiny}
data: {layout: drive, root: "%s", val_fraction: 0.25, patch_size: [48, 48], fov: false, augment: light}
loss: {name: ce}
optim: {name: adam, lr: 2.0e-3, schedule: constant}
train: {epochs: %d, iters_per_epoch: 3, batch_size: 4, val_every: 2, num_threads: 1}
infer: {patch_size: [64, 64]}
"""


def _run(args, nproc=1):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] \
        if nproc > 1 else [sys.executable]
    p = subprocess.run(launcher + ["-m", "mambaseg", "train", *args, "--no-progress", "--deterministic"],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]


def _close(a, b):
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4, msg=lambda m, k=k: f"{k}: {m}")


def test_ddp_two_processes_match_one_and_resume(tmp_path):
    data = write_synthetic_drive(tmp_path / "data", n_train=4, n_test=1, size=(64, 72), seed=4)
    c4, c2 = tmp_path / "c4.yaml", tmp_path / "c2.yaml"
    c4.write_text(CONFIG % (data, 4))
    c2.write_text(CONFIG % (data, 2))
    _run([str(c4), "--out", str(tmp_path / "single")])
    _run([str(c4), "--out", str(tmp_path / "ddp")], nproc=2)
    single = load_checkpoint(tmp_path / "single" / "checkpoint_last.pt")
    ddp = load_checkpoint(tmp_path / "ddp" / "checkpoint_last.pt")
    assert ddp["provenance"]["world_size"] == 2 and ddp["epoch"] == single["epoch"] == 3
    _close(single["state_dict"], ddp["state_dict"])
    assert single["state_dict"].keys() == ddp["state_dict"].keys()  # saved unwrapped (no 'module.' prefix)
    # resume under DDP: 2 epochs, then continue to 4
    _run([str(c2), "--out", str(tmp_path / "ddp_resumed")], nproc=2)
    _run([str(c4), "--out", str(tmp_path / "ddp_resumed"), "--resume"], nproc=2)
    resumed = load_checkpoint(tmp_path / "ddp_resumed" / "checkpoint_last.pt")
    assert resumed["epoch"] == 3
    _close(single["state_dict"], resumed["state_dict"])
