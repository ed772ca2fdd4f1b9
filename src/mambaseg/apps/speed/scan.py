"""``mambaseg bench scan``: the selective scan's backends (compiled CPU kernel, chunked PyTorch, mambapy's parallel
scan, the Python reference loop), forward and forward+backward times and peak memory, one fresh process per
(case, backend)."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from pathlib import Path

from .common import run_worker, write_report

# name: (B, D, L, N)
SCAN_CASES = {
    "2d_skip_D128_L64x64": (1, 128, 64 * 64, 16),
    "3d_stage1_D96_L48^3": (1, 96, 48**3, 16),
    "3d_stage2_D192_L24^3": (1, 192, 24**3, 16),
    "3d_stage3_D384_L12^3": (1, 384, 12**3, 16),
}
REFERENCE_MAX_L = 4096  # the python loop records L autograd steps; longer sequences take many minutes


def _inputs(batch, dim, length, nstate, grad):
    import torch

    g = torch.Generator().manual_seed(0)
    t = dict(
        u=torch.randn(batch, dim, length, generator=g),
        delta=0.5 * torch.rand(batch, dim, length, generator=g),
        A=-0.5 * torch.rand(dim, nstate, generator=g) - 0.1,
        B=torch.randn(batch, 1, nstate, length, generator=g),
        C=torch.randn(batch, 1, nstate, length, generator=g),
        D=torch.randn(dim, generator=g),
        z=torch.randn(batch, dim, length, generator=g),
        delta_bias=0.5 * torch.rand(dim, generator=g),
    )
    for v in t.values():
        v.requires_grad_(grad)
    return t


def _mambapy_scan(u, delta, A, B, C, D, z, delta_bias):
    """The selective scan computed with mambapy's Blelloch ``pscan`` over (B, L, D, N) tensors."""
    import torch.nn.functional as F
    from mambapy.pscan import pscan

    dt = F.softplus(delta + delta_bias[:, None]).transpose(1, 2)  # (B, L, D)
    x = u.transpose(1, 2)  # (B, L, D)
    Bl, Cl = B[:, 0].transpose(1, 2), C[:, 0].transpose(1, 2)  # (B, L, N)
    dA = torch_exp(dt.unsqueeze(-1) * A)  # (B, L, D, N)
    bx = dt.unsqueeze(-1) * Bl.unsqueeze(2) * x.unsqueeze(-1)  # (B, L, D, N)
    hs = pscan(dA, bx)
    y = (hs @ Cl.unsqueeze(-1)).squeeze(-1) + D * x  # (B, L, D)
    return (y * F.silu(z.transpose(1, 2))).transpose(1, 2)


def torch_exp(x):
    import torch

    return torch.exp(x)


def _run_fn(backend):
    from ...ssm import selective_scan

    if backend == "mambapy":
        return _mambapy_scan
    return lambda **kw: selective_scan(**kw, delta_softplus=True, backend=backend)


def scan_worker(spec: dict) -> dict:
    """Measure one (case, backend) in this process; returns times in ms and extra peak memory in MB."""
    import torch

    torch.set_num_threads(spec["threads"])
    batch, dim, length, nstate = spec["shape"]
    fn = _run_fn(spec["backend"])
    res: dict = {}
    inputs = _inputs(batch, dim, length, nstate, grad=True)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = fn(**inputs)
    out.backward(torch.ones_like(out))
    res["peak_extra_mb_fwd_bwd"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    repeats = spec["repeats"]
    fb = []
    for _ in range(repeats):
        for v in inputs.values():
            v.grad = None
        t0 = time.perf_counter()
        out = fn(**inputs)
        out.backward(torch.ones_like(out))
        fb.append(time.perf_counter() - t0)
    fw = []
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(**inputs)
            fw.append(time.perf_counter() - t0)
    res["forward_ms"] = 1000 * statistics.median(fw)
    res["fwd_bwd_ms"] = 1000 * statistics.median(fb)
    res["repeats"] = repeats
    return res


def _measure(case: str, backend: str, threads: int, repeats: int, timeout: float) -> dict:
    return run_worker("--worker", dict(shape=SCAN_CASES[case], backend=backend, threads=threads, repeats=repeats),
                      timeout)

def _mambapy_available() -> bool:
    try:
        import mambapy.pscan  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def run_scan_bench(quick: bool = False, threads: int = 2, out: Path | None = None, command: str = "",
                   progress=None) -> dict:
    """Run the scan benchmark; returns (and writes to ``out``) a dict with the machine, versions and results."""
    import torch

    cases = ["2d_skip_D128_L64x64"] if quick else list(SCAN_CASES)
    from ...ssm import cpu_kernel

    backends = ["chunked"] + (["cpu"] if cpu_kernel.available() else []) + (["mambapy"] if _mambapy_available() else [])
    results = []
    for case in cases:
        length = SCAN_CASES[case][2]
        todo = list(backends)
        if length <= REFERENCE_MAX_L and not quick:
            todo.append("reference")
        for backend in todo:
            repeats = 1 if backend == "reference" else (3 if backend == "mambapy" or length > 50_000 else 5)
            if progress:
                progress(f"{case}: {backend} ...")
            r = _measure(case, backend, threads, repeats, timeout=1800)
            results.append(dict(case=case, shape=dict(zip("BDLN", SCAN_CASES[case])), backend=backend, **r))
    # ratios within this run
    ratios = []
    for case in cases:
        by = {r["backend"]: r for r in results if r["case"] == case and "error" not in r}
        if "chunked" not in by:
            continue
        for other in ("reference", "mambapy"):
            if other in by:
                if "cpu" in by:
                    ratios.append(dict(case=case, baseline=other, backend="cpu",
                                       speedup_forward=by[other]["forward_ms"] / by["cpu"]["forward_ms"],
                                       speedup_fwd_bwd=by[other]["fwd_bwd_ms"] / by["cpu"]["fwd_bwd_ms"]))
                ratios.append(dict(case=case, baseline=other, backend="chunked",
                                   speedup_forward=by[other]["forward_ms"] / by["chunked"]["forward_ms"],
                                   speedup_fwd_bwd=by[other]["fwd_bwd_ms"] / by["chunked"]["fwd_bwd_ms"]))
    report = dict(
        benchmark="scan",
        command=command,
        machine=dict(platform=platform.platform(), processor=platform.processor(), cpus=os.cpu_count(),
                     threads=threads),
        torch=torch.__version__,
        time=time.strftime("%Y-%m-%d %H:%M:%S"),
        quick=quick,
        results=results,
        ratios=ratios,
        goals={"chunked vs reference fwd+bwd (2d_skip)": ">= 30x", "chunked vs mambapy fwd+bwd (2d_skip)": ">= 3x",
               "3d_stage1 fwd+bwd peak extra memory": "<= 8192 MB"},
    )
    return write_report(report, out)


def format_scan_table(report: dict) -> str:
    lines = [f"{'case':24s} {'backend':10s} {'forward ms':>11s} {'fwd+bwd ms':>11s} {'peak MB':>9s}"]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"{r['case']:24s} {r['backend']:10s} {r['error']}")
        else:
            lines.append(f"{r['case']:24s} {r['backend']:10s} {r['forward_ms']:11.1f} {r['fwd_bwd_ms']:11.1f} "
                         f"{r['peak_extra_mb_fwd_bwd']:9.0f}")
    for q in report["ratios"]:
        lines.append(f"ratio {q['case']}: {q.get('backend', 'chunked')} is {q['speedup_forward']:.1f}x (forward), "
                     f"{q['speedup_fwd_bwd']:.1f}x (fwd+bwd) faster than {q['baseline']}")
    return "\n".join(lines)




