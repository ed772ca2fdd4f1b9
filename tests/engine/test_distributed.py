"""DDP through torchrun with 2 CPU processes (gloo): one training step computes the same gradient as one process with
the same global batch, and --resume works under DDP.

Why the DDP-vs-single comparison is made on one float64 SGD step and not on float32 weights after several Adam steps:
DDP sums the two half-batch gradients with an all-reduce, one process sums all samples in one go, so the float32
results differ by rounding, in an order that depends on the machine. Adam then turns such rounding noise into
updates of size ``lr`` wherever a gradient is theoretically zero (e.g. the bias of a convolution followed by instance
norm: ``m / sqrt(v)`` is ±1 whatever the magnitude of the noise), so float32 weights after a few steps differ by up to
``lr`` on some machines (1.47e-4 seen on a clean machine). In float64 with plain SGD (lr 1, no momentum, no weight
decay, no clipping) the weights after one step are ``w0 - g``: a difference between the two runs is a difference of
gradients. The loss itself is computed in float32 (``SegLoss`` casts the logits), but its backward is elementwise and
identical for each sample, so the gradients differ only by the float64 rounding of their sums (~1e-18 measured,
bounded by ~1e-12 for ~10^4 terms of size <= 1). The tolerance, 1e-8 absolute + 1e-7 relative, is thus
machine-independent, while the mistakes this test exists for — gradients summed instead of averaged (factor 2), a
rank training on the wrong part of the batch, the loss not averaged over ranks — change the weights by O(|g|) >= 3e-5
for every tensor here, far above it (the test checks the factor-2 margin; a wrong split was checked to fail by
editing train.py). The logged loss (a float32 mean over 9216 pixels vs the mean of two float32 means over 4608) is
compared with rtol 1e-5, above the pairwise-summation bound log2(n) * eps ~ 1e-6; a wrong split moves it by ~1e-3.
"""

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

# one SGD step with lr 1: weights after the step = initial weights - gradient of the global batch
STEP_CONFIG = """
seed: 3
model: {name: unet_tiny}
data: {layout: drive, root: "%s", val_fraction: 0.0, patch_size: [48, 48], fov: false, augment: light}
loss: {name: ce}
optim: {name: sgd, lr: 1.0, momentum: 0.0, weight_decay: 0.0, schedule: constant}
train: {epochs: 1, iters_per_epoch: 1, batch_size: 4, num_threads: 1, grad_clip: 0, num_workers: %d}
"""

# tolerances of the float64 comparison (see the module docstring)
RTOL, ATOL = 1e-7, 1e-8
LOSS_RTOL = 1e-5


def _launcher(nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] \
        if nproc > 1 else [sys.executable]


def _run(args, nproc=1):
    p = subprocess.run(_launcher(nproc) + ["-m", "mambaseg", "train", *args, "--no-progress", "--deterministic"],
                       check=False, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]


def _step_f64(script, cfg, out, nproc):
    p = subprocess.run(_launcher(nproc) + [str(script), str(cfg), str(out)], check=False, capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    return load_checkpoint(out / "checkpoint_last.pt")


def _step_difference(a: dict, b: dict) -> float:
    """Largest violation of ``|a - b| <= ATOL + RTOL |b|`` over all weights, in units of the tolerance (<= 1: equal)."""
    worst = 0.0
    for k, v in a.items():
        assert v.dtype == torch.float64, k
        worst = max(worst, float(((v - b[k]).abs() / (ATOL + RTOL * b[k].abs())).max()))
    return worst


def test_ddp_step_matches_single_process_in_float64(tmp_path, f64_train_script):
    data = write_synthetic_drive(tmp_path / "data", n_train=4, n_test=1, size=(64, 72), seed=4)
    cfg, script = tmp_path / "step.yaml", f64_train_script
    cfg.write_text(STEP_CONFIG % (data, 1))
    single = _step_f64(script, cfg, tmp_path / "single", 1)
    cfg.write_text(STEP_CONFIG % (data, 0))
    ddp = _step_f64(script, cfg, tmp_path / "ddp", 2)
    assert ddp["provenance"]["world_size"] == 2 and single["provenance"]["world_size"] == 1
    assert single["state_dict"].keys() == ddp["state_dict"].keys()  # saved unwrapped (no 'module.' prefix)
    # the logged loss is the mean over ranks of the half-batch losses = the global-batch loss
    assert abs(ddp["history"][0]["train_loss"] - single["history"][0]["train_loss"]) <= \
        LOSS_RTOL * abs(single["history"][0]["train_loss"])
    worst = _step_difference(ddp["state_dict"], single["state_dict"])
    assert worst <= 1.0, f"DDP step differs from the single-process step by {worst:.3g} x tolerance"
    # the comparison is not vacuous: both runs started from the same weights, the step moved them, and a DDP that
    # summed instead of averaged the gradients (w0 - 2 g) would miss the tolerance by orders of magnitude
    init = torch.load(tmp_path / "single" / "init.pt", weights_only=True)
    init_ddp = torch.load(tmp_path / "ddp" / "init.pt", weights_only=True)
    assert all(torch.equal(init[k], init_ddp[k]) for k in init)
    grad = {k: init[k] - single["state_dict"][k] for k in init}
    assert max(float(g.abs().max()) for g in grad.values()) > 1e-3
    summed = {k: init[k] - 2 * grad[k] for k in init}
    assert _step_difference(summed, single["state_dict"]) > 1e3


def test_ddp_resume_matches_uninterrupted_ddp(tmp_path):
    data = write_synthetic_drive(tmp_path / "data", n_train=4, n_test=1, size=(64, 72), seed=4)
    c4, c2 = tmp_path / "c4.yaml", tmp_path / "c2.yaml"
    c4.write_text(CONFIG % (data, 4))
    c2.write_text(CONFIG % (data, 2))
    _run([str(c4), "--out", str(tmp_path / "ddp")], nproc=2)
    ddp = load_checkpoint(tmp_path / "ddp" / "checkpoint_last.pt")
    assert ddp["provenance"]["world_size"] == 2 and ddp["epoch"] == 3
    assert not any(k.startswith("module.") for k in ddp["state_dict"])  # saved unwrapped
    # resume under DDP: 2 epochs, then continue to 4; same process layout, so the same reduction order: bit-exact
    _run([str(c2), "--out", str(tmp_path / "ddp_resumed")], nproc=2)
    _run([str(c4), "--out", str(tmp_path / "ddp_resumed"), "--resume"], nproc=2)
    resumed = load_checkpoint(tmp_path / "ddp_resumed" / "checkpoint_last.pt")
    assert resumed["epoch"] == 3
    for k, v in ddp["state_dict"].items():
        assert torch.equal(v, resumed["state_dict"][k]), k
