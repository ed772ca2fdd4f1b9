"""onnxruntime vs PyTorch CPU inference time of exported checkpoints, at the export size (one tile).

    python benchmarks/onnx_bench.py --model weights/akmamba_net_drive.pt --model weights/dm_segnet_hippocampus.pt

Each checkpoint (or run folder) is exported to a temporary .onnx file with
:func:`mambaseg.apps.export.export_onnx`, then
both runtimes are timed on the same random tile (batch 1, the export size): ``--threads`` threads (default 2),
``--warmup`` untimed runs, median of ``--repeats`` timed runs (default 5). Results, the exact command, the machine
and the library versions go to ``benchmarks/results/onnx.json`` (``--out``); the PyTorch/ONNX time ratio is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _median_seconds(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_one(model: str, threads: int, warmup: int, repeats: int, size=None) -> dict:
    import torch

    from mambaseg.apps.export import _resolve_checkpoint, export_onnx, onnx_predictor
    from mambaseg.engine.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt_path = _resolve_checkpoint(model)
    ckpt = load_checkpoint(ckpt_path)
    net = model_from_checkpoint(ckpt, ckpt_path).float().eval()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        t0 = time.perf_counter()
        meta = export_onnx(ckpt_path, onnx_path, size=size)
        export_s = time.perf_counter() - t0
        run, _ = onnx_predictor(onnx_path, threads=threads)
        tile = meta["export_size"]
        x = torch.randn(1, meta["in_channels"], *tile, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            diff = float((run(x) - net(x)).abs().max())

            def torch_fn():
                net(x)

            torch_s = _median_seconds(torch_fn, warmup, repeats)
        onnx_s = _median_seconds(lambda: run(x), warmup, repeats)
        onnx_bytes = onnx_path.stat().st_size
    return {"model": str(model), "checkpoint": str(ckpt_path), "model_name": meta["model_name"], "tile": tile,
            "batch": 1, "fixed_size": meta["fixed_size"], "dynamic_batch": meta["dynamic_batch"],
            "export_seconds": round(export_s, 2), "onnx_bytes": onnx_bytes, "max_abs_diff": diff,
            "torch_seconds": torch_s, "onnx_seconds": onnx_s, "torch_over_onnx": torch_s / onnx_s}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True, help="checkpoint or run folder (repeatable)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--size", type=int, nargs="+", default=None, help="export size (default: the inference tile)")
    p.add_argument("--out", default="benchmarks/results/onnx.json")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import onnxruntime
    import torch

    import mambaseg

    torch.set_num_threads(args.threads)
    results = []
    for m in args.model:
        r = bench_one(m, args.threads, args.warmup, args.repeats, args.size)
        results.append(r)
        tile = "x".join(map(str, r["tile"]))
        print(f"{r['model_name']:24s} tile {tile:>12s}  PyTorch {r['torch_seconds']*1e3:9.1f} ms"
              f"  onnxruntime {r['onnx_seconds']*1e3:9.1f} ms  ratio PyTorch/ONNX {r['torch_over_onnx']:.2f}"
              f"  (max abs diff {r['max_abs_diff']:.1e})", flush=True)
    report = {
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0]] + (argv if argv is not None
                                                                                 else sys.argv[1:])),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "threads": args.threads},
        "versions": {"mambaseg": mambaseg.__version__, "torch": torch.__version__,
                     "onnxruntime": onnxruntime.__version__, "python": platform.python_version()},
        "protocol": f"batch 1 at the export size; {args.warmup} warm-up runs, median of {args.repeats}; "
                    f"{args.threads} threads for both runtimes; CPUExecutionProvider",
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
