"""Diagnose Akmamba-Net's learning (issue 21): learning curves at equal steps, AKConv offsets and sampling centre,
Mamba-out skip scale and detail, per-module gradient norms.

Usage:
    python benchmarks/akmamba_diagnose.py --runs benchmarks/results/drive_ablation_onecommit/steps600/runs \
        --checkpoint weights/akmamba_net_drive.pt --checkpoint RUN/checkpoint_best.pt --init akmamba_net_cpu \
        --data-root ../shared/data/DRIVE --out benchmarks/results/akmamba_diagnosis

What each part measures:
* **curves**: validation Dice of every run under ``--runs`` against the training step (``metrics.jsonl``), so arms are
  compared at equal steps, and the step at which each first reaches 95 % of its best.
* **offsets**: for every AKConv, the learned offsets on real training patches (mean and SD per axis, mean |offset|)
  and the *sampling centre* = mean of the initial shape p_n + mean offset, relative to the output pixel. The official
  anchored shape has its centre at (+1, +1) for N = 9 (it samples rows/columns i..i+2), so unless the offsets learn
  -1 each AKConv shifts its map by one pixel of its level; a centred shape starts at (0, 0).
* **skips**: for every Mamba-out skip, ``||SS2D(x)|| / ||x||`` and the correlation of the skip's output with its
  input's high frequencies (Laplacian), i.e. how much fine detail the skip still carries to the decoder.
* **gradients**: the L2 norm of the gradient of the training loss for each module group (offset branches, AKConv
  weights, Mamba-out skips, up-convolutions, decoder, head), relative to the group's weight norm, averaged over
  ``--batches`` training batches.

Writes ``OUT/diagnosis.json`` and ``OUT/diagnosis.md`` with the exact command. Nothing here trains.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from mambaseg.config import load_config
from mambaseg.engine.checkpoint import load_checkpoint, model_from_checkpoint
from mambaseg.engine.data import load_dataset
from mambaseg.engine.stream import make_batches
from mambaseg.losses import SegLoss
from mambaseg.models import build_model
from mambaseg.nn.akconv import AKConv, initial_sampling_shape
from mambaseg.nn.ss2d import MambaOut
from mambaseg.resources import git_commit

ROOT = Path(__file__).resolve().parent.parent


def learning_curves(runs: Path) -> dict:
    """Validation Dice against the step for every run folder under ``runs``."""
    out = {}
    for run in sorted(p for p in runs.iterdir() if (p / "metrics.jsonl").is_file()):
        per_epoch = int(yaml.safe_load((run / "config.yaml").read_text())["train"]["iters_per_epoch"])
        pts = []
        for line in (run / "metrics.jsonl").read_text().splitlines():
            try:
                m = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "val_dice" in m:
                pts.append((m["epoch"] * per_epoch, round(float(m["val_dice"]), 4)))
        if not pts:
            continue
        best = max(v for _, v in pts)
        reach = next(s for s, v in pts if v >= 0.95 * best)
        out[run.name] = {"points": pts, "best": best, "step_95pct_of_best": reach}
    return out


def _groups(net: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    """Parameters of Akmamba-Net by role."""
    groups: dict[str, list] = {"offset branch (p_conv)": [], "AKConv / conv weights": [], "Mamba-out skips": [],
                               "up-convolutions": [], "head": []}
    for name, p in net.named_parameters():
        if ".p_conv." in name:
            groups["offset branch (p_conv)"].append(p)
        elif name.startswith("skips."):
            groups["Mamba-out skips"].append(p)
        elif name.startswith("ups."):
            groups["up-convolutions"].append(p)
        elif name.startswith("head."):
            groups["head"].append(p)
        else:
            groups["AKConv / conv weights"].append(p)
    return {k: v for k, v in groups.items() if v}


def _laplacian(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    c = x.shape[1]
    return F.conv2d(x, k.repeat(c, 1, 1, 1).to(x.dtype), padding=1, groups=c)


def inspect_model(net: torch.nn.Module, batches: list, loss_fn) -> dict:
    """Offsets, skip statistics and gradient norms of one network on the given batches."""
    offsets: dict[str, list] = {}
    skips: dict[str, list] = {}
    hooks = []
    for name, mod in net.named_modules():
        if isinstance(mod, AKConv):
            def off_hook(m, inp, out, name=name, n=mod.num_param):
                offsets.setdefault(name, []).append((out[:, :n].detach(), out[:, n:].detach()))
            hooks.append(mod.p_conv.register_forward_hook(off_hook))
        elif isinstance(mod, MambaOut):
            def skip_hook(m, inp, out, name=name):
                x, y = inp[0].detach(), out.detach()
                lx, ly = _laplacian(x), _laplacian(y)
                corr = F.cosine_similarity(lx.flatten(2), ly.flatten(2), dim=2).abs().mean().item()
                skips.setdefault(name, []).append((y.norm().item() / max(x.norm().item(), 1e-12), corr))
            hooks.append(mod.register_forward_hook(skip_hook))
    groups = _groups(net)
    grad_sq = {k: 0.0 for k in groups}
    net.train()
    for x, y, m in batches:
        net.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y, m)
        loss.backward()
        for k, ps in groups.items():
            grad_sq[k] += sum(float(p.grad.pow(2).sum()) for p in ps if p.grad is not None)
    for h in hooks:
        h.remove()
    res = {"akconv": {}, "skips": {}, "gradients": {}}
    for name, vals in offsets.items():
        mod = net.get_submodule(name)
        pn = initial_sampling_shape(mod.num_param, mod.centred)
        n = mod.num_param
        dr = torch.cat([v[0].flatten() for v in vals])
        dc = torch.cat([v[1].flatten() for v in vals])
        res["akconv"][name] = {
            "offset_mean": [round(dr.mean().item(), 3), round(dc.mean().item(), 3)],
            "offset_sd": [round(dr.std().item(), 3), round(dc.std().item(), 3)],
            "offset_mean_abs": round(torch.cat([dr.abs(), dc.abs()]).mean().item(), 3),
            "sampling_centre": [round(pn[:n].mean().item() + dr.mean().item(), 3),
                                round(pn[n:].mean().item() + dc.mean().item(), 3)],
        }
    for name, vals in skips.items():
        res["skips"][name] = {"out_over_in_norm": round(float(np.mean([v[0] for v in vals])), 4),
                              "laplacian_cosine_in_out": round(float(np.mean([v[1] for v in vals])), 4)}
    for k, ps in groups.items():
        wn = float(torch.sqrt(sum(p.detach().pow(2).sum() for p in ps)))
        gn = (grad_sq[k] / len(batches)) ** 0.5
        res["gradients"][k] = {"grad_norm": round(gn, 6), "weight_norm": round(wn, 4),
                               "grad_over_weight": round(gn / max(wn, 1e-12), 6)}
    return res


def _md(report: dict) -> str:
    lines = ["# Akmamba-Net diagnosis", "", f"Command: `{report['command']}`", f"Commit: {report['commit']}", ""]
    if report.get("curves"):
        lines += ["## Validation Dice against training steps", "", "| run | best | step reaching 95 % of best | "
                  "curve (step: Dice) |", "|---|---|---|---|"]
        for run, c in report["curves"].items():
            pts = ", ".join(f"{s}: {v:.3f}" for s, v in c["points"])
            lines.append(f"| {run} | {c['best']:.4f} | {c['step_95pct_of_best']} | {pts} |")
        lines.append("")
    for label, m in report.get("models", {}).items():
        lines += [f"## {label}", "", "| AKConv | offset mean (row, col) | offset SD | mean abs | sampling centre |",
                  "|---|---|---|---|---|"]
        for name, a in m["akconv"].items():
            lines.append(f"| {name} | {a['offset_mean']} | {a['offset_sd']} | {a['offset_mean_abs']} | "
                         f"{a['sampling_centre']} |")
        if m["skips"]:
            lines += ["", "| skip | norm out/in | Laplacian cosine in↔out |", "|---|---|---|"]
            lines += [f"| {n} | {s['out_over_in_norm']} | {s['laplacian_cosine_in_out']} |"
                      for n, s in m["skips"].items()]
        lines += ["", "| parameter group | gradient norm | weight norm | gradient / weight |", "|---|---|---|---|"]
        lines += [f"| {k} | {g['grad_norm']:.3g} | {g['weight_norm']:.3g} | {g['grad_over_weight']:.3g} |"
                  for k, g in m["gradients"].items()]
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="", help="folder of run folders (a benchmark's runs/) for the learning curves")
    p.add_argument("--checkpoint", action="append", default=[], help="checkpoint to inspect (repeatable)")
    p.add_argument("--init", action="append", default=[], help="registered model to inspect untrained (repeatable)")
    p.add_argument("--config", default=str(ROOT / "configs/drive/akmamba_net_cpu.yaml"))
    p.add_argument("--data-root", default="", help="DRIVE folder (default: the config's data.root)")
    p.add_argument("--batches", type=int, default=4, help="training batches for offsets and gradients")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    torch.manual_seed(0)
    report = {"command": shlex.join(["python", "benchmarks/akmamba_diagnose.py",
                                     *(argv if argv is not None else sys.argv[1:])]),
              "commit": git_commit(), "curves": {}, "models": {}}
    if a.runs:
        report["curves"] = learning_curves(Path(a.runs))
    if a.checkpoint or a.init:
        sets = [f"data.root={a.data_root}"] if a.data_root else []
        cfg = load_config(a.config, sets)
        train, _, _ = load_dataset(cfg.data, cfg.seed)
        sampler = make_batches(train, cfg.data.patch_size, cfg.train.batch_size, cfg.data.fg_prob, cfg.data.augment,
                               cfg.seed)
        batches = [sampler.next_batch() for _ in range(a.batches)]
        batches = [(x, y, m if cfg.data.fov else None) for x, y, m in batches]
        loss_fn = SegLoss(1, cfg.loss.name, cfg.loss.dice_weight, cfg.loss.ce_weight, cfg.loss.cldice_weight,
                          cfg.loss.cldice_iters)
        for path in a.checkpoint:
            net = model_from_checkpoint(load_checkpoint(path), path)
            report["models"][f"trained: {path}"] = inspect_model(net, batches, loss_fn)
        for name in a.init:
            torch.manual_seed(0)
            net = build_model(name, in_channels=batches[0][0].shape[1], out_channels=1)
            report["models"][f"untrained: {name}"] = inspect_model(net, batches, loss_fn)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "diagnosis.json").write_text(json.dumps(report, indent=1))
    (out / "diagnosis.md").write_text(_md(report))
    print(f"wrote {out / 'diagnosis.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
