"""``mambaseg bench models2d`` / ``models3d``: training steps and inference of each Mamba network against its CNN
baseline, alternated in one process, with the top operators of a step and (3D) peak memory in fresh processes."""

from __future__ import annotations

import resource
import time
from pathlib import Path

from .common import alternate, median_time, profile_table, provenance, run_worker, train_step_fn, write_report


def peak_worker(spec: dict) -> dict:
    """Peak RSS above the baseline of one training step (fresh process)."""
    import torch

    from ...models import build_model

    torch.set_num_threads(spec["threads"])
    model = build_model(spec["model"], **spec.get("kwargs", {}))
    x = torch.randn(*spec["input"])
    y = torch.randint(0, spec["kwargs"].get("out_channels", 2), (x.shape[0], *x.shape[2:]))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    train_step_fn(model, x, y)()
    return {"step_seconds": time.perf_counter() - t0,
            "peak_extra_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024}


def run_models2d_bench(threads: int = 2, out: Path | None = None, command: str = "", weights: str = "",
                       rounds: int = 5) -> dict:
    """Akmamba-Net vs U-Net of equal width: a training step (8x3x128x128) and full-image inference (565x584).

    Variants are alternated and each keeps its best time: ``unet_cpu``, ``akmamba_net_cpu`` (compiled AKConv
    kernel) and ``akmamba_net_cpu[reference]`` (the pure-PyTorch AKConv, i.e. before the kernel). With ``weights``
    (the shipped Akmamba-Net) full-image inference uses that model, and the masks of the two AKConv paths are
    compared. Also: the 1- vs 2-thread speed-up of an Akmamba-Net step, and the top operators of one step.
    """
    import torch

    from ...models import build_model
    from ...nn import akconv

    torch.set_num_threads(threads)
    x = torch.randn(8, 3, 128, 128)
    y = (torch.rand(8, 1, 128, 128) > 0.9).float()
    nets = {"unet_cpu": build_model("unet_cpu", in_channels=3, out_channels=1),
            "akmamba_net_cpu": build_model("akmamba_net_cpu", in_channels=3, out_channels=1)}
    ref = "akmamba_net_cpu[reference]"

    def switch(name):
        akconv.set_kernel_enabled(name != ref)

    steps = {"unet_cpu": train_step_fn(nets["unet_cpu"], x, y),
             "akmamba_net_cpu": train_step_fn(nets["akmamba_net_cpu"], x, y)}
    steps[ref] = steps["akmamba_net_cpu"]
    rows = {name: {"train_step_s_8x3x128x128": t} for name, t in alternate(steps, rounds, switch).items()}
    for name in rows:
        rows[name]["parameters"] = sum(p.numel() for p in nets[name.split("[")[0]].parameters())

    shipped = None
    if weights and Path(weights).is_file():
        from ...engine.checkpoint import load_checkpoint, model_from_checkpoint

        shipped = model_from_checkpoint(load_checkpoint(weights), weights).eval()
    img = torch.randn(1, 3, 584, 565)
    infer_nets = {"unet_cpu": nets["unet_cpu"].eval(),
                  "akmamba_net_cpu": shipped if shipped is not None else nets["akmamba_net_cpu"].eval()}
    infer_nets[ref] = infer_nets["akmamba_net_cpu"]
    with torch.no_grad():
        fns = {name: (lambda m=m: m(img)) for name, m in infer_nets.items()}
        for name, t in alternate(fns, max(2, rounds // 2), switch).items():
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
        scaling[t] = alternate({"step": steps["akmamba_net_cpu"]}, max(2, rounds // 2))["step"]
    torch.set_num_threads(threads)
    profiles = {}
    for name in ("akmamba_net_cpu", ref):
        switch(name)
        profiles[name] = profile_table(steps[name])
    switch("akmamba_net_cpu")

    u = rows["unet_cpu"]
    report = dict(benchmark="models2d", **provenance(command, threads, rounds),
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
    return write_report(report, out)


def run_models3d_bench(threads: int = 2, out: Path | None = None, command: str = "", quick: bool = False,
                       rounds: int = 5) -> dict:
    """DM-SegNet vs a 3D U-Net of CPU width: training steps (batch 2, 48^3 and 64^3, 3 classes), alternated, best
    of each, with the top operators of one DM-SegNet step. Unless ``quick``: also the paper-width DM-SegNet vs
    SwinUNETR (feature 48) and UNETR forward+backward at 1x1x64^3, sliding-window inference of 1x1x128^3
    (dm_segnet_cpu) and the peak memory of a 96^3 training step (fresh processes)."""
    import torch

    from ...engine.inference import sliding_window
    from ...models import build_model

    torch.set_num_threads(threads)
    rows, ratios = {}, {}
    cpu_nets = {n: build_model(n, in_channels=1, out_channels=3) for n in ("unet3d_cpu", "dm_segnet_cpu")}
    profiles = {}
    for size in (48, 64):
        x = torch.randn(2, 1, size, size, size)
        y = torch.randint(0, 3, (2, size, size, size))
        steps = {n: train_step_fn(m, x, y) for n, m in cpu_nets.items()}
        for n, t in alternate(steps, rounds).items():
            rows.setdefault(n, {"parameters": sum(p.numel() for p in cpu_nets[n].parameters())})[
                f"train_step_s_2x1x{size}^3"] = t
        ratios[f"dm_segnet_cpu_over_unet3d_cpu_{size}^3"] = (rows["dm_segnet_cpu"][f"train_step_s_2x1x{size}^3"]
                                                             / rows["unet3d_cpu"][f"train_step_s_2x1x{size}^3"])
        if size == 48:
            profiles["dm_segnet_cpu_2x1x48^3"] = profile_table(steps["dm_segnet_cpu"])
    if not quick:
        x = torch.randn(1, 1, 64, 64, 64)
        y = torch.randint(0, 2, (1, 64, 64, 64))
        for name, kw in (("dm_segnet", {}), ("swin_unetr", {}), ("unetr", {"img_size": (64, 64, 64)})):
            model = build_model(name, in_channels=1, out_channels=2, **kw)
            rows[name] = {"parameters": sum(p.numel() for p in model.parameters()),
                          "fwd_bwd_s_1x1x64^3": median_time(train_step_fn(model, x, y), 1)}
        model = build_model("dm_segnet_cpu", in_channels=1, out_channels=2).eval()
        vol = torch.randn(1, 128, 128, 128)
        with torch.no_grad():
            rows["dm_segnet_cpu"]["sliding_window_s_1x1x128^3_tile64_overlap0.5"] = median_time(
                lambda: sliding_window(lambda b: model(b), vol, (64, 64, 64), 0.5, "gaussian", 2), 1)
        for ckpt in (False, True):
            spec = dict(model="dm_segnet", kwargs={"in_channels": 1, "out_channels": 2, "grad_checkpoint": ckpt},
                        input=[1, 1, 96, 96, 96], threads=threads)
            rows["dm_segnet"][f"train_step_96^3{'_checkpointed' if ckpt else ''}"] = run_worker("--peak", spec)
        base = rows["dm_segnet"]["fwd_bwd_s_1x1x64^3"]
        ratios.update({f"dm_segnet_over_{n}": base / rows[n]["fwd_bwd_s_1x1x64^3"] for n in ("swin_unetr", "unetr")})
    report = dict(benchmark="models3d", **provenance(command, threads, rounds),
                  timing="cpu-width steps alternated, best of each", results=rows, ratios=ratios, profiles=profiles,
                  goals={"dm_segnet_cpu_over_unet3d_cpu (48^3-64^3)": "<= 1.5",
                         "96^3 training step peak memory, batch 1": "< 24 GB"})
    return write_report(report, out)


