"""What the speed benchmarks share: timing by alternation, a training step, operator profiles, the provenance every
result file records, workers in fresh processes."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path


def median_time(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def train_step_fn(model, x, y):
    """A callable doing one training step of ``model`` on ``(x, y)``: forward, loss (BCE with logits for a float
    target shaped like ``x``, cross-entropy for class indices), backward, Adam."""
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y) if y.dim() == x.dim() else \
            torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    return step


def alternate(fns: dict, rounds: int, before=None) -> dict:
    """Run every callable once per round, in turn (A, B, C, A, B, C, ...), after one warm-up each; best seconds.

    Alternating spreads the machine's noise over all variants; the best of several rounds is the least disturbed.
    ``before(name)`` runs before each call (e.g. to switch a kernel on or off) and is not timed.
    """
    best = dict.fromkeys(fns, float("inf"))
    for r in range(rounds + 1):
        for name, fn in fns.items():
            if before is not None:
                before(name)
            t0 = time.perf_counter()
            fn()
            if r > 0:  # round 0 warms up
                best[name] = min(best[name], time.perf_counter() - t0)
    return best


def profile_table(fn, rows: int = 10) -> list[dict]:
    """Top operators (self CPU time) of one call of ``fn``."""
    from torch.profiler import profile

    fn()
    with profile() as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [{"op": e.key, "self_ms": round(e.self_cpu_time_total / 1e3, 1),
             "share": round(e.self_cpu_time_total / total, 3), "calls": e.count} for e in events[:rows]]


def autocast(precision: str):
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def provenance(command: str, threads: int, rounds: int) -> dict:
    """What every result file records: the exact command, the commit, versions, the machine and its bf16 support,
    which compiled kernels are in use and the ``MAMBASEG_*`` environment variables."""
    import torch

    from ...resources import git_commit

    flags = ""
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n", 1)[0]
    except (OSError, IndexError):
        pass
    from ...nn import akconv_kernel
    from ...ssm import cpu_kernel

    kernels = {"selective_scan_cpu": cpu_kernel.available(), "akconv_cpu": akconv_kernel.available()}
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith("MAMBASEG_")}
    return dict(command=command, commit=git_commit(), torch=torch.__version__, threads=threads, rounds=rounds,
                compiled_kernels=kernels, environment=env,
                machine=dict(platform=platform.platform(), processor=platform.processor(), cpus=os.cpu_count(),
                             avx512_bf16=" avx512_bf16" in flags, amx_bf16=" amx_bf16" in flags),
                time=time.strftime("%Y-%m-%d %H:%M:%S"))


def write_report(report: dict, out: Path | None) -> dict:
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str))
    return report



def run_worker(flag: str, spec: dict, timeout: float = 3600) -> dict:
    """Run ``python -m mambaseg.apps.speed FLAG SPEC`` (a measurement in a fresh process, so that its peak memory is
    its own) and return the dict it prints last, or ``{"error": ...}``."""
    cmd = [sys.executable, "-m", "mambaseg.apps.speed", flag, json.dumps(spec)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"exit {p.returncode}: {last}"}
    return json.loads(p.stdout.strip().splitlines()[-1])
