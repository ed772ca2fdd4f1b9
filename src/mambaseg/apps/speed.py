"""Speed and memory measurements: ``mambaseg bench scan | models2d | models3d | amp | infer`` (not to be confused
with :mod:`mambaseg.apps.benchmark`, which compares the accuracy of trained models).

Each (case, backend) runs in a fresh subprocess so that its peak memory (``ru_maxrss`` above the level after the
inputs are allocated) is its own. Times are medians over repeats after one warm-up run. Ratios are computed only
between numbers measured in the same invocation.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["SCAN_CASES", "run_scan_bench", "format_scan_table", "run_models2d_bench", "run_models3d_bench",
           "run_amp_bench", "run_infer_bench"]

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
    from mambaseg.ssm import selective_scan

    if backend == "mambapy":
        return _mambapy_scan
    return lambda **kw: selective_scan(**kw, delta_softplus=True, backend=backend)


def _worker(spec: dict) -> dict:
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
    spec = dict(shape=SCAN_CASES[case], backend=backend, threads=threads, repeats=repeats)
    cmd = [sys.executable, "-m", "mambaseg.apps.speed", "--worker", json.dumps(spec)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"exit {p.returncode}: {last}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


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
    from ..ssm import cpu_kernel

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
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
    return report


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




# ----------------------------------------------------------------------------------------------------------------
# model benchmarks: `mambaseg bench models2d` / `mambaseg bench models3d`
# ----------------------------------------------------------------------------------------------------------------
def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _train_step_fn(model, x, y):
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y) if y.dim() == x.dim() else \
            torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    return step


def _peak_worker(spec: dict) -> dict:
    """Peak RSS above the baseline of one training step (fresh process)."""
    import torch

    from ..models import build_model

    torch.set_num_threads(spec["threads"])
    model = build_model(spec["model"], **spec.get("kwargs", {}))
    x = torch.randn(*spec["input"])
    y = torch.randint(0, spec["kwargs"].get("out_channels", 2), (x.shape[0], *x.shape[2:]))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    _train_step_fn(model, x, y)()
    return {"step_seconds": time.perf_counter() - t0,
            "peak_extra_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024}


def _alternate(fns: dict, rounds: int, before=None) -> dict:
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


def _profile_table(fn, rows: int = 10) -> list[dict]:
    """Top operators (self CPU time) of one call of ``fn``."""
    from torch.profiler import profile

    fn()
    with profile() as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [{"op": e.key, "self_ms": round(e.self_cpu_time_total / 1e3, 1),
             "share": round(e.self_cpu_time_total / total, 3), "calls": e.count} for e in events[:rows]]


def run_models2d_bench(threads: int = 2, out: Path | None = None, command: str = "", weights: str = "",
                       rounds: int = 5) -> dict:
    """Akmamba-Net vs U-Net of equal width: a training step (8x3x128x128) and full-image inference (565x584).

    Variants are alternated and each keeps its best time: ``unet_cpu``, ``akmamba_net_cpu`` (compiled AKConv
    kernel) and ``akmamba_net_cpu[reference]`` (the pure-PyTorch AKConv, i.e. before the kernel). With ``weights``
    (the shipped Akmamba-Net) full-image inference uses that model, and the masks of the two AKConv paths are
    compared. Also: the 1- vs 2-thread speed-up of an Akmamba-Net step, and the top operators of one step.
    """
    import torch

    from ..models import build_model
    from ..nn import akconv

    torch.set_num_threads(threads)
    x = torch.randn(8, 3, 128, 128)
    y = (torch.rand(8, 1, 128, 128) > 0.9).float()
    nets = {"unet_cpu": build_model("unet_cpu", in_channels=3, out_channels=1),
            "akmamba_net_cpu": build_model("akmamba_net_cpu", in_channels=3, out_channels=1)}
    ref = "akmamba_net_cpu[reference]"

    def switch(name):
        akconv.set_kernel_enabled(name != ref)

    steps = {"unet_cpu": _train_step_fn(nets["unet_cpu"], x, y),
             "akmamba_net_cpu": _train_step_fn(nets["akmamba_net_cpu"], x, y)}
    steps[ref] = steps["akmamba_net_cpu"]
    rows = {name: {"train_step_s_8x3x128x128": t} for name, t in _alternate(steps, rounds, switch).items()}
    for name in rows:
        rows[name]["parameters"] = sum(p.numel() for p in nets[name.split("[")[0]].parameters())

    shipped = None
    if weights and Path(weights).is_file():
        from ..engine.checkpoint import load_checkpoint, model_from_checkpoint

        shipped = model_from_checkpoint(load_checkpoint(weights), weights).eval()
    img = torch.randn(1, 3, 584, 565)
    infer_nets = {"unet_cpu": nets["unet_cpu"].eval(),
                  "akmamba_net_cpu": shipped if shipped is not None else nets["akmamba_net_cpu"].eval()}
    infer_nets[ref] = infer_nets["akmamba_net_cpu"]
    with torch.no_grad():
        fns = {name: (lambda m=m: m(img)) for name, m in infer_nets.items()}
        for name, t in _alternate(fns, max(2, rounds // 2), switch).items():
            rows[name]["infer_full_image_s_565x584"] = t
        masks = {}
        for name in ("akmamba_net_cpu", ref):
            switch(name)
            masks[name] = infer_nets[name](img) > 0
    switch("akmamba_net_cpu")
    mask_diff = float((masks["akmamba_net_cpu"] != masks[ref]).float().mean())

    scaling = {}
    for t in (1, threads):
        torch.set_num_threads(t)
        scaling[t] = _alternate({"step": steps["akmamba_net_cpu"]}, max(2, rounds // 2))["step"]
    torch.set_num_threads(threads)
    profiles = {}
    for name in ("akmamba_net_cpu", ref):
        switch(name)
        profiles[name] = _profile_table(steps[name])
    switch("akmamba_net_cpu")

    u = rows["unet_cpu"]
    report = dict(benchmark="models2d", command=command, torch=torch.__version__, threads=threads, rounds=rounds,
                  machine=dict(platform=platform.platform(), cpus=os.cpu_count()),
                  time=time.strftime("%Y-%m-%d %H:%M:%S"),
                  weights=weights or None, timing="alternated, best of each", results=rows,
                  ratios={"akmamba_train_step_over_unet": rows["akmamba_net_cpu"]["train_step_s_8x3x128x128"]
                          / u["train_step_s_8x3x128x128"],
                          "akmamba_reference_train_step_over_unet": rows[ref]["train_step_s_8x3x128x128"]
                          / u["train_step_s_8x3x128x128"],
                          "akmamba_infer_over_unet": rows["akmamba_net_cpu"]["infer_full_image_s_565x584"]
                          / u["infer_full_image_s_565x584"],
                          "akmamba_reference_infer_over_unet": rows[ref]["infer_full_image_s_565x584"]
                          / u["infer_full_image_s_565x584"],
                          f"akmamba_step_speedup_{threads}_threads_over_1": scaling[1] / scaling[threads]},
                  mask_pixels_differing_kernel_vs_reference=mask_diff,
                  profiles=profiles,
                  goals={"akmamba_train_step_over_unet": "<= 3 (moonshot 1.5)", "akmamba_infer_over_unet": "<= 3",
                         "akmamba infer 565x584 (2 threads)": "< 1 s",
                         f"akmamba_step_speedup_{threads}_threads_over_1": ">= 1.7"})
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str))
    return report


def run_models3d_bench(threads: int = 2, out: Path | None = None, command: str = "", quick: bool = False,
                       rounds: int = 5) -> dict:
    """DM-SegNet vs a 3D U-Net of CPU width: training steps (batch 2, 48^3 and 64^3, 3 classes), alternated, best
    of each, with the top operators of one DM-SegNet step. Unless ``quick``: also the paper-width DM-SegNet vs
    SwinUNETR (feature 48) and UNETR forward+backward at 1x1x64^3, sliding-window inference of 1x1x128^3
    (dm_segnet_cpu) and the peak memory of a 96^3 training step (fresh processes)."""
    import torch

    from ..engine.inference import sliding_window
    from ..models import build_model

    torch.set_num_threads(threads)
    rows, ratios = {}, {}
    cpu_nets = {n: build_model(n, in_channels=1, out_channels=3) for n in ("unet3d_cpu", "dm_segnet_cpu")}
    profiles = {}
    for size in (48, 64):
        x = torch.randn(2, 1, size, size, size)
        y = torch.randint(0, 3, (2, size, size, size))
        steps = {n: _train_step_fn(m, x, y) for n, m in cpu_nets.items()}
        for n, t in _alternate(steps, rounds).items():
            rows.setdefault(n, {"parameters": sum(p.numel() for p in cpu_nets[n].parameters())})[
                f"train_step_s_2x1x{size}^3"] = t
        ratios[f"dm_segnet_cpu_over_unet3d_cpu_{size}^3"] = (rows["dm_segnet_cpu"][f"train_step_s_2x1x{size}^3"]
                                                             / rows["unet3d_cpu"][f"train_step_s_2x1x{size}^3"])
        if size == 48:
            profiles["dm_segnet_cpu_2x1x48^3"] = _profile_table(steps["dm_segnet_cpu"])
    if not quick:
        x = torch.randn(1, 1, 64, 64, 64)
        y = torch.randint(0, 2, (1, 64, 64, 64))
        for name, kw in (("dm_segnet", {}), ("swin_unetr", {}), ("unetr", {"img_size": (64, 64, 64)})):
            model = build_model(name, in_channels=1, out_channels=2, **kw)
            rows[name] = {"parameters": sum(p.numel() for p in model.parameters()),
                          "fwd_bwd_s_1x1x64^3": _time(_train_step_fn(model, x, y), 1)}
        model = build_model("dm_segnet_cpu", in_channels=1, out_channels=2).eval()
        vol = torch.randn(1, 128, 128, 128)
        with torch.no_grad():
            rows["dm_segnet_cpu"]["sliding_window_s_1x1x128^3_tile64_overlap0.5"] = _time(
                lambda: sliding_window(lambda b: model(b), vol, (64, 64, 64), 0.5, "gaussian", 2), 1)
        for ckpt in (False, True):
            spec = dict(model="dm_segnet", kwargs={"in_channels": 1, "out_channels": 2, "grad_checkpoint": ckpt},
                        input=[1, 1, 96, 96, 96], threads=threads)
            cmd = [sys.executable, "-m", "mambaseg.apps.speed", "--peak", json.dumps(spec)]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
            key = f"train_step_96^3{'_checkpointed' if ckpt else ''}"
            rows["dm_segnet"][key] = (json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0
                                      else {"error": (p.stderr.strip().splitlines() or ['?'])[-1]})
        base = rows["dm_segnet"]["fwd_bwd_s_1x1x64^3"]
        ratios.update({f"dm_segnet_over_{n}": base / rows[n]["fwd_bwd_s_1x1x64^3"] for n in ("swin_unetr", "unetr")})
    report = dict(benchmark="models3d", command=command, torch=torch.__version__, threads=threads, rounds=rounds,
                  machine=dict(platform=platform.platform(), cpus=os.cpu_count()),
                  time=time.strftime("%Y-%m-%d %H:%M:%S"),
                  timing="cpu-width steps alternated, best of each", results=rows, ratios=ratios, profiles=profiles,
                  goals={"dm_segnet_cpu_over_unet3d_cpu (48^3-64^3)": "<= 1.5",
                         "96^3 training step peak memory, batch 1": "< 24 GB"})
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str))
    return report


# ----------------------------------------------------------------------------------------------------------------
# mixed precision: `mambaseg bench amp` (training steps) and `mambaseg bench infer` (inference at real size)
# ----------------------------------------------------------------------------------------------------------------
PRECISIONS = ("fp32", "bf16")
# (pair name, baseline, Mamba network, input shape, quick input shape, in_channels, out_channels)
AMP_PAIRS = (
    ("2d", "unet_cpu", "akmamba_net_cpu", (8, 3, 128, 128), (2, 3, 32, 32), 3, 1),
    ("3d", "unet3d_cpu", "dm_segnet_cpu", (2, 1, 48, 48, 48), (1, 1, 16, 16, 16), 1, 3),
)
# (case, baseline, Mamba network, image (C, *spatial), quick image, out_channels, sliding-window tile or None)
INFER_CASES = (
    ("drive_565x584", "unet_cpu", "akmamba_net_cpu", (3, 584, 565), (3, 60, 52), 1, None),
    ("hippocampus_36x50x35", "unet3d_cpu", "dm_segnet_cpu", (1, 36, 50, 35), (1, 20, 22, 18), 3, (32, 48, 32)),
    ("brats_240x240x155", "unet3d_cpu", "dm_segnet_cpu", (4, 240, 240, 155), (4, 40, 36, 30), 4, (128, 128, 128)),
)
QUICK_TILE = (16, 16, 16)


def _autocast(precision: str):
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def _provenance(command: str, threads: int, rounds: int) -> dict:
    """What every result file records: the exact command, the commit, versions, the machine and its bf16 support,
    which compiled kernels are in use and the ``MAMBASEG_*`` environment variables."""
    import torch

    from ..resources import git_commit

    flags = ""
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n", 1)[0]
    except (OSError, IndexError):
        pass
    from ..nn import akconv_kernel
    from ..ssm import cpu_kernel

    kernels = {"selective_scan_cpu": cpu_kernel.available(), "akconv_cpu": akconv_kernel.available()}
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith("MAMBASEG_")}
    return dict(command=command, commit=git_commit(), torch=torch.__version__, threads=threads, rounds=rounds,
                compiled_kernels=kernels, environment=env,
                machine=dict(platform=platform.platform(), processor=platform.processor(), cpus=os.cpu_count(),
                             avx512_bf16=" avx512_bf16" in flags, amx_bf16=" amx_bf16" in flags),
                time=time.strftime("%Y-%m-%d %H:%M:%S"))


def _write(report: dict, out: Path | None) -> dict:
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str))
    return report


def run_amp_bench(threads: int = 2, out: Path | None = None, command: str = "", rounds: int = 5,
                  quick: bool = False) -> dict:
    """One training step (Adam, as :func:`run_models2d_bench`) of each Mamba network and its baseline, in fp32 and
    under ``torch.autocast("cpu", bfloat16)``: all variants alternated round by round, best of each kept; the ratios
    Mamba/baseline per precision and the bf16 gain per network come from this one run. Also the top operators of one
    step of each network in each precision (their shares, not their times, are what to read on a busy machine).
    ``quick``: tiny inputs, to check that the command works."""
    import torch

    from ..models import build_model

    torch.set_num_threads(threads)
    steps, shapes = {}, {}
    for pair, base, mamba, shape, quick_shape, cin, cout in AMP_PAIRS:
        shape = quick_shape if quick else shape
        shapes[pair] = list(shape)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(*shape, generator=g)
        y = ((torch.rand(shape[0], 1, *shape[2:], generator=g) > 0.9).float() if cout == 1
             else torch.randint(0, cout, (shape[0], *shape[2:]), generator=g))
        for name in (base, mamba):
            torch.manual_seed(0)
            step = _train_step_fn(build_model(name, in_channels=cin, out_channels=cout), x, y)
            for prec in PRECISIONS:
                def run(step=step, prec=prec):
                    with _autocast(prec):
                        step()
                steps[f"{name}/{prec}"] = run
    best = _alternate(steps, rounds)
    ratios, gains = {}, {}
    for _, base, mamba, *_ in AMP_PAIRS:
        for prec in PRECISIONS:
            ratios[f"{mamba}_over_{base}_{prec}"] = best[f"{mamba}/{prec}"] / best[f"{base}/{prec}"]
        for name in (base, mamba):
            gains[f"{name}_bf16_speedup"] = best[f"{name}/fp32"] / best[f"{name}/bf16"]
    profiles = {f"{mamba}/{prec}": _profile_table(steps[f"{mamba}/{prec}"], rows=12)
                for _, _, mamba, *_ in AMP_PAIRS for prec in PRECISIONS}
    report = dict(benchmark="amp", quick=quick, **_provenance(command, threads, rounds),
                  timing="one training step (forward, loss, backward, Adam); all variants alternated, best of each",
                  inputs=shapes, step_seconds=best, ratios=ratios, bf16_gains=gains, profiles=profiles,
                  goals={"Mamba network step / baseline step (fp32 and bf16)": "<= 2 (moonshot 1.5)"})
    return _write(report, out)


def _infer_fn(model, image, tile, precision: str):
    """Inference of one image (C, *spatial) at full size: a whole-image forward (2D; the networks pad to their size
    multiple and crop back) or sliding-window inference with ``tile`` (3D, overlap 0.5, Gaussian weights)."""
    import torch

    from ..engine.inference import sliding_window

    def run():
        with torch.no_grad(), _autocast(precision):
            if tile is None:
                return model(image.unsqueeze(0))[0]
            return sliding_window(lambda b: model(b), image, tile, 0.5, "gaussian", 1)

    return run


def _infer_setup(spec: dict):
    import torch

    from ..models import build_model

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    model = build_model(spec["model"], in_channels=spec["image"][0], out_channels=spec["out_channels"]).eval()
    image = torch.randn(*spec["image"], generator=torch.Generator().manual_seed(0))
    return _infer_fn(model, image, spec["tile"], spec["precision"])


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _infer_peak_worker(spec: dict) -> dict:
    """Peak RSS of one inference above the RSS once the model and image exist (fresh process). On Linux the
    high-water mark is reset first (``/proc/self/clear_refs``), so a higher peak while importing or building the
    model does not hide the inference's; elsewhere the process's ``ru_maxrss`` is used (then 0 can mean "below the
    setup's peak")."""
    run = _infer_setup(spec)
    reset = False
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        pass
    before = _status_kb("VmRSS") if reset else None
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    run()
    seconds = time.perf_counter() - t0
    peak = _status_kb("VmHWM") if reset else None
    if before is not None and peak is not None:
        return {"seconds_first_call": seconds, "peak_extra_mb": (peak - before) / 1024, "peak_rss_mb": peak / 1024}
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds_first_call": seconds, "peak_extra_mb": (maxrss - base) / 1024, "peak_rss_mb": maxrss / 1024}


def run_infer_bench(threads: int = 2, out: Path | None = None, command: str = "", rounds: int = 3,
                    quick: bool = False, cases: tuple[str, ...] = ()) -> dict:
    """Inference at real size: a full DRIVE image (565x584, whole-image forward), a Hippocampus-sized volume
    (36x50x35) and a BraTS-sized volume (4x240x240x155), both by sliding window with the CPU configs' tiles — each
    Mamba network vs its baseline, fp32 and bf16 autocast. Times: the four variants of a case alternated, best of
    ``rounds``; peak memory: one inference per variant in a fresh process (RSS above the level before it).
    Random weights (speed and memory do not depend on them). ``quick``: tiny images and tiles; ``cases``: a subset."""
    import torch

    torch.set_num_threads(threads)
    todo = [c for c in INFER_CASES if not cases or c[0] in cases]
    unknown = set(cases) - {c[0] for c in INFER_CASES}
    if unknown:
        raise ValueError(f"bench infer: unknown case {sorted(unknown)[0]!r}; expected one of "
                         f"{[c[0] for c in INFER_CASES]}.")
    results, ratios = {}, {}
    for case, base, mamba, image, quick_image, cout, tile in todo:
        image = quick_image if quick else image
        tile = (QUICK_TILE if quick else tile) if tile is not None else None
        specs = {f"{name}/{prec}": dict(model=name, image=list(image), out_channels=cout, tile=tile, precision=prec,
                                        threads=threads)
                 for name in (base, mamba) for prec in PRECISIONS}
        fns = {k: _infer_setup(s) for k, s in specs.items()}
        best = _alternate(fns, rounds)
        rows = {}
        for k, spec in specs.items():
            cmd = [sys.executable, "-m", "mambaseg.apps.speed", "--infer-peak", json.dumps(spec)]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
            peak = (json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0
                    else {"error": (p.stderr.strip().splitlines() or ["?"])[-1]})
            rows[k] = {"seconds": best[k], "peak_extra_mb": peak.get("peak_extra_mb"),
                       "peak_rss_mb": peak.get("peak_rss_mb"), **(
                {"peak_error": peak["error"]} if "error" in peak else {})}
        results[case] = dict(image=list(image), tile=tile, variants=rows)
        for prec in PRECISIONS:
            ratios[f"{case}/{mamba}_over_{base}_{prec}"] = best[f"{mamba}/{prec}"] / best[f"{base}/{prec}"]
    report = dict(benchmark="infer", quick=quick, **_provenance(command, threads, rounds),
                  timing="per case, the four variants alternated, best of each; peak memory in fresh processes",
                  results=results, ratios=ratios, goals={"Mamba network / baseline (seconds)": "<= 2"})
    return _write(report, out)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.stdout.write(json.dumps(_worker(json.loads(sys.argv[2]))) + "\n")  # result channel to the parent
    elif len(sys.argv) == 3 and sys.argv[1] == "--peak":
        sys.stdout.write(json.dumps(_peak_worker(json.loads(sys.argv[2]))) + "\n")
    elif len(sys.argv) == 3 and sys.argv[1] == "--infer-peak":
        sys.stdout.write(json.dumps(_infer_peak_worker(json.loads(sys.argv[2]))) + "\n")
