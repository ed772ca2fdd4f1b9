"""Time one training step of each Mamba network against its baseline on a CUDA GPU (issue 10 item 5).

Usage: python benchmarks/gpu_steps.py [--rounds 5] [--out benchmarks/results/gpu_steps.json]
Akmamba-Net vs U-Net (CPU widths, 8x3x128x128) and DM-SegNet vs DynUNet (CPU widths, 2x1x64^3), Adam step with
cross-entropy, alternated round by round, best of each kept (the scan runs on the chunked backend unless mamba_ssm's
CUDA kernel imports). Prints the ratios and writes them with the command. Needs CUDA: exits 2 with one line otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from mambaseg.models import build_model
from mambaseg.ssm import resolve_backend

PAIRS = {"2d": (("akmamba_net_cpu", "unet_cpu"), (8, 3, 128, 128)),
         "3d": (("dm_segnet_cpu", "unet3d_cpu"), (2, 1, 64, 64, 64))}


def step_fn(name: str, shape: tuple[int, ...]):
    net = build_model(name, in_channels=shape[1], out_channels=2).cuda()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.randn(shape, device="cuda")
    y = torch.randint(0, 2, (shape[0], *shape[2:]), device="cuda")

    def step() -> float:
        torch.cuda.synchronize()
        t = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        return time.perf_counter() - t

    step()  # warm-up (cuDNN autotune, allocator)
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_steps.json"))
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpu_steps: no CUDA device (torch.cuda.is_available() is False); run it on a GPU", file=sys.stderr)
        sys.exit(2)
    res: dict = {"command": " ".join(["python", *sys.argv]), "device": torch.cuda.get_device_name(0),
                 "torch": torch.__version__, "scan_backend": resolve_backend("auto", torch.device("cuda")),
                 "rounds": a.rounds, "timing": "alternated, best of each", "results": {}, "ratios": {}}
    for key, ((mamba, base), shape) in PAIRS.items():
        fns = {m: step_fn(m, shape) for m in (mamba, base)}
        best = {m: float("inf") for m in fns}
        for _ in range(a.rounds):
            for m, f in fns.items():
                best[m] = min(best[m], f())
        tag = "x".join(map(str, shape))
        for m in fns:
            res["results"][f"{m}_train_step_s_{tag}"] = best[m]
        res["ratios"][f"{mamba}_over_{base}_{key}"] = best[mamba] / best[base]
        print(f"{mamba} {best[mamba]:.4f} s vs {base} {best[base]:.4f} s ({tag}): {best[mamba] / best[base]:.2f}x",
              flush=True)
        del fns
        torch.cuda.empty_cache()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
