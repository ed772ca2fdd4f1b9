"""Peak memory of the 3D training data path as the dataset grows: streaming (cases read on demand) vs in RAM.

    OMP_NUM_THREADS=1 python benchmarks/data_scaling.py --cases 20 80 320

For each case count a synthetic MSD-style task (``--size``\\ ³ float32 images with a blob label, 1 mm isotropic, so
nothing is resampled) is written as NIfTI to a temporary folder. Each measurement runs in a fresh Python process:

- ``stream``: :func:`mambaseg.engine.data.load_dataset` on an empty cache (fingerprint, plan, preprocessing, cache
  written), then ``--batches`` training batches (``--batch-size`` patches of ``--patch``\\ ³, default augmentation)
  from the in-process sampler (``train.num_workers: 0``) - the cases are memory-mapped cache entries;
- ``in_ram``: the same cached dataset with every case's arrays loaded into RAM first (what training held before the
  streaming path: ``PreprocessCache.load`` per case), then the same batches;
- ``stream_workers``: as ``stream`` on the warm cache with ``--workers`` DataLoader workers (samples/s compared with
  ``stream``; the workers' own peak is reported separately).

Peak RSS is ``ru_maxrss`` of the measuring process (after the imports and after the batches) and, for workers, the
largest worker's. Then (``--model``, not for ``in_ram``) ``--batches`` training steps of that model (Adam, Dice+CE,
this process's threads) on the same batch source give training steps/s: with workers the next batches are drawn
while the model trains. Results with the command, the machine and the versions go to
``benchmarks/results/data_scaling.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 1024.0  # ru_maxrss is in KiB on Linux


def write_task(root: Path, n: int, size: int, seed: int = 0) -> Path:
    """MSD-style task: ``n`` cases of ``size``³ float32 (an ellipsoid 'head' with noise and a blob of labels 1/2)."""
    import nibabel as nib
    import numpy as np

    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[np.arange(size, dtype=np.float32)] * 3, indexing="ij"), -1) - size / 2
    head = ((g / (size * 0.45)) ** 2).sum(-1) < 1
    training = []
    for i in range(n):
        c = rng.uniform(-size / 6, size / 6, 3)
        r = rng.uniform(size / 12, size / 7, 3)
        d = (((g - c) / r) ** 2).sum(-1)
        label = np.where(d < 0.5, 2, np.where(d < 1, 1, 0)).astype(np.uint8)
        image = (head * (60 + 10 * rng.standard_normal(g.shape[:3])) + 40.0 * label).astype(np.float32)
        name = f"case_{i:04d}.nii.gz"
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(root / "imagesTr" / name))
        nib.save(nib.Nifti1Image(label, np.eye(4)), str(root / "labelsTr" / name))
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    (root / "dataset.json").write_text(json.dumps({
        "name": "scaling", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "outer", "2": "inner"},
        "numTraining": n, "training": training, "test": []}))
    return root


def measure(task: str, cache: str, mode: str, batches: int, batch_size: int, patch: int, workers: int,
            model: str = "") -> dict:
    """One measurement (run in its own process): peak RSS of building the dataset and drawing the batches."""
    import numpy as np

    from mambaseg.config import DataCfg
    from mambaseg.data.plans.cache import PreprocessCache
    from mambaseg.engine.data import load_dataset
    from mambaseg.engine.stream import make_batches

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / MB
    cfg = DataCfg(layout="msd", root=task, num_classes=3, patch_size=(patch,) * 3, val_fraction=0.0,
                  cache_dir=cache, augment="default", fg_prob=0.33)
    t0 = time.perf_counter()
    train, _, info = load_dataset(cfg, seed=0)
    if mode == "in_ram":  # what the training set held before: every case's arrays
        pc = PreprocessCache(cache)
        held = []
        for c in train:
            image, label, props = pc.load(_record(task, c.case_id), info["plan"])
            held.append({"id": c.case_id, "image": image, "label": label, "mask": None, "meta": props})
        train = held
    t_data = time.perf_counter() - t0
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / MB
    src = make_batches(train, cfg.patch_size, batch_size, cfg.fg_prob, cfg.augment, 0, num_workers=workers)
    x, _, _ = src.next_batch()  # the first batch starts the workers: not timed
    t1 = time.perf_counter()
    checksum = float(x.sum())
    for _ in range(batches - 1):
        x, _y, _ = src.next_batch()
        checksum += float(x.sum())
    t_batches = time.perf_counter() - t1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / MB
    steps = None
    if model and mode != "in_ram":  # training steps/s: batches drawn while the model trains (workers overlap)
        import torch

        from mambaseg.losses import SegLoss
        from mambaseg.models import build_model

        torch.manual_seed(0)
        net = build_model(model, in_channels=1, out_channels=3)
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        loss_fn = SegLoss(3, "dice_ce")

        def step(x, y):
            opt.zero_grad()
            loss_fn(net(x), y).backward()
            opt.step()

        step(*src.next_batch()[:2])  # warm-up
        t2 = time.perf_counter()
        for _ in range(batches):
            step(*src.next_batch()[:2])
        steps = batches / (time.perf_counter() - t2)
    if hasattr(src, "close"):
        src.close()
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / MB
    return {"mode": mode, "cases": len(train), "workers": workers,
            "rss_after_imports_mb": round(rss0, 1), "rss_after_dataset_mb": round(rss_data, 1),
            "peak_rss_mb": round(peak, 1), "peak_rss_worker_mb": round(children, 1) if workers else None,
            "dataset_seconds": round(t_data, 2), "batch_seconds": round(t_batches, 3),
            "samples_per_s": round((batches - 1) * batch_size / t_batches, 2),
            "model": model if steps else None, "train_steps_per_s": round(steps, 3) if steps else None,
            "peak_rss_with_model_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / MB, 1)
            if steps else None,
            "cache_mb": round(sum(f.stat().st_size for f in Path(cache).rglob("*") if f.is_file()) / 2**20, 1),
            "checksum": checksum, "arrays_in_ram_mb": round(sum(np.asarray(c["image"]).nbytes +
                                                                np.asarray(c["label"]).nbytes
                                                                for c in train) / 2**20, 1)
            if mode == "in_ram" else 0.0}


def _record(task: str, case_id: str):
    from mambaseg.data.layouts.detect3d import list_cases3d

    cache = getattr(_record, "cache", None)
    if cache is None or cache[0] != task:
        cache = (task, {c.case_id: c for c in list_cases3d(Path(task), layout="msd")})
        _record.cache = cache  # type: ignore[attr-defined]
    import dataclasses

    case = cache[1][case_id]
    return dataclasses.replace(case, extra={**case.extra, "num_classes": 3})


def _run_child(args: argparse.Namespace, task: Path, cache: Path, mode: str, workers: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--task", str(task), "--cache-dir", str(cache),
           "--batches", str(args.batches), "--batch-size", str(args.batch_size), "--patch", str(args.patch),
           "--workers", str(workers), "--model", args.model]
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, nargs="+", default=[20, 80, 320])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--patch", type=int, default=48)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--model", default="unet3d_tiny", help="model of the training-step throughput ('' = none)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "data_scaling.json")
    ap.add_argument("--child", choices=("stream", "in_ram", "stream_workers"), help=argparse.SUPPRESS)
    ap.add_argument("--task", help=argparse.SUPPRESS)
    ap.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        workers = args.workers if args.child == "stream_workers" else 0
        print(json.dumps(measure(args.task, args.cache_dir, args.child, args.batches, args.batch_size, args.patch,
                                 workers, args.model)))
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="mambaseg_scaling_") as tmp:
        for n in args.cases:
            t = time.perf_counter()
            task = write_task(Path(tmp) / f"task_{n}", n, args.size)
            print(f"{n} cases written in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            cache = Path(tmp) / f"cache_{n}"
            for mode, workers in (("stream", 0), ("in_ram", 0), ("stream_workers", args.workers)):
                row = _run_child(args, task, cache, mode, workers)
                row["n_cases"] = n
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
            import shutil

            shutil.rmtree(task)
            shutil.rmtree(cache)
    import numpy
    import torch

    result = {
        "command": "OMP_NUM_THREADS={} python benchmarks/data_scaling.py {}".format(
            os.environ.get("OMP_NUM_THREADS", ""), " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))),
        "what": "peak RSS of building a 3D training set (load_dataset: fingerprint, plan, preprocessing cache) "
                "and drawing training batches (in-process sampler; DataLoader workers for stream_workers), each in "
                "a fresh process. stream: cold cache, cases memory-mapped (this version); in_ram: warm cache, every "
                "case's arrays loaded into RAM as training held them before; stream_workers: warm cache, "
                "DataLoader workers.",
        "case_shape": [args.size] * 3, "patch": [args.patch] * 3, "batch_size": args.batch_size,
        "batches": args.batches, "rows": rows,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "numpy": numpy.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'cases':>6s} {'mode':>15s} {'peak RSS MB':>12s} {'after import':>13s} {'samples/s':>10s} "
          f"{'steps/s':>8s}")
    for r in rows:
        print(f"{r['n_cases']:6d} {r['mode']:>15s} {r['peak_rss_mb']:12.1f} {r['rss_after_imports_mb']:13.1f} "
              f"{r['samples_per_s']:10.2f} {r['train_steps_per_s'] or float('nan'):8.3f}")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
