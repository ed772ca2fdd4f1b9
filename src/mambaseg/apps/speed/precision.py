"""``mambaseg bench amp`` (training steps in fp32 and under bf16 autocast) and ``mambaseg bench infer`` (inference
at real size, fp32 and bf16, with peak memory in fresh processes): each Mamba network against its baseline."""

from __future__ import annotations

import resource
import time
from pathlib import Path

from .common import alternate, autocast, profile_table, provenance, run_worker, train_step_fn, write_report

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


def run_amp_bench(threads: int = 2, out: Path | None = None, command: str = "", rounds: int = 5,
                  quick: bool = False) -> dict:
    """One training step (Adam, as :func:`run_models2d_bench`) of each Mamba network and its baseline, in fp32 and
    under ``torch.autocast("cpu", bfloat16)``: all variants alternated round by round, best of each kept; the ratios
    Mamba/baseline per precision and the bf16 gain per network come from this one run. Also the top operators of one
    step of each network in each precision (their shares, not their times, are what to read on a busy machine).
    ``quick``: tiny inputs, to check that the command works."""
    import torch

    from ...models import build_model

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
            step = train_step_fn(build_model(name, in_channels=cin, out_channels=cout), x, y)
            for prec in PRECISIONS:
                def run(step=step, prec=prec):
                    with autocast(prec):
                        step()
                steps[f"{name}/{prec}"] = run
    best = alternate(steps, rounds)
    ratios, gains = {}, {}
    for _, base, mamba, *_ in AMP_PAIRS:
        for prec in PRECISIONS:
            ratios[f"{mamba}_over_{base}_{prec}"] = best[f"{mamba}/{prec}"] / best[f"{base}/{prec}"]
        for name in (base, mamba):
            gains[f"{name}_bf16_speedup"] = best[f"{name}/fp32"] / best[f"{name}/bf16"]
    profiles = {f"{mamba}/{prec}": profile_table(steps[f"{mamba}/{prec}"], rows=12)
                for _, _, mamba, *_ in AMP_PAIRS for prec in PRECISIONS}
    report = dict(benchmark="amp", quick=quick, **provenance(command, threads, rounds),
                  timing="one training step (forward, loss, backward, Adam); all variants alternated, best of each",
                  inputs=shapes, step_seconds=best, ratios=ratios, bf16_gains=gains, profiles=profiles,
                  goals={"Mamba network step / baseline step (fp32 and bf16)": "<= 2 (moonshot 1.5)"})
    return write_report(report, out)


def _infer_fn(model, image, tile, precision: str):
    """Inference of one image (C, *spatial) at full size: a whole-image forward (2D; the networks pad to their size
    multiple and crop back) or sliding-window inference with ``tile`` (3D, overlap 0.5, Gaussian weights)."""
    import torch

    from ...engine.inference import sliding_window

    def run():
        with torch.no_grad(), autocast(precision):
            if tile is None:
                return model(image.unsqueeze(0))[0]
            return sliding_window(lambda b: model(b), image, tile, 0.5, "gaussian", 1)

    return run


def _infer_setup(spec: dict):
    import torch

    from ...models import build_model

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


def infer_peak_worker(spec: dict) -> dict:
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
        best = alternate(fns, rounds)
        rows = {}
        for k, spec in specs.items():
            peak = run_worker("--infer-peak", spec)
            rows[k] = {"seconds": best[k], "peak_extra_mb": peak.get("peak_extra_mb"),
                       "peak_rss_mb": peak.get("peak_rss_mb"), **(
                {"peak_error": peak["error"]} if "error" in peak else {})}
        results[case] = dict(image=list(image), tile=tile, variants=rows)
        for prec in PRECISIONS:
            ratios[f"{case}/{mamba}_over_{base}_{prec}"] = best[f"{mamba}/{prec}"] / best[f"{base}/{prec}"]
    report = dict(benchmark="infer", quick=quick, **provenance(command, threads, rounds),
                  timing="per case, the four variants alternated, best of each; peak memory in fresh processes",
                  results=results, ratios=ratios, goals={"Mamba network / baseline (seconds)": "<= 2"})
    return write_report(report, out)


