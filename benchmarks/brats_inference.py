"""Inference cost of the BraTS 2018 CPU configs on one real full-size case: seconds per case and peak memory.

    nice -n 10 python benchmarks/brats_inference.py            # data: $MAMBASEG_DATA/BraTS2018_WT

For each model (``configs/brats2018/<model>.yaml``: FLAIR + T1, resampled to the config's spacing, its patch size and
overlap, Gaussian-weighted sliding window) an UNTRAINED checkpoint (seeded random weights: the cost of inference does
not depend on the weights) is written with the preprocessing plan fitted on the measured case, then ``mambaseg
predict`` runs on that one case folder (240 x 240 x 155, two channels) in a fresh Python process at ``--threads``
threads, so each model's peak memory is its own. Reported per model: wall seconds of the predict call (read, crop,
normalise, resample, sliding window, inverse resampling to the 1 mm grid, write), the process's CPU seconds over the
same call, the peak RSS of the process (``ru_maxrss``, imports and model included) and the RSS before the call. The
load average before and after is recorded: on a busy machine the wall time is inflated, the CPU time much less.
``--crop N`` predicts the centre N^3 voxels of the case instead (when the full case would take too long).
Results go to ``benchmarks/results/brats_inference.json``.
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

REPO = Path(__file__).resolve().parents[1]
MODELS = ("dm_segnet_cpu", "unet3d_cpu", "segmamba_cpu")


def _data_root(arg: str) -> Path:
    if arg:
        return Path(arg)
    base = os.environ.get("MAMBASEG_DATA") or str(REPO.parent / "shared" / "data")
    return Path(base) / "BraTS2018_WT"


def _crop_case(src: Path, dst: Path, size: int) -> Path:
    """The centre ``size``^3 voxels of every file of the case folder ``src``, written to ``dst/<case>``."""
    import nibabel as nib
    import numpy as np

    out = dst / src.name
    out.mkdir(parents=True)
    for f in sorted(src.glob("*.nii*")):
        img = nib.load(f)
        arr = np.asarray(img.dataobj)
        lo = [max(0, (s - size) // 2) for s in arr.shape[:3]]
        box = tuple(slice(a, a + size) for a in lo)
        affine = img.affine.copy()
        affine[:3, 3] = img.affine[:3, :3] @ np.asarray(lo) + img.affine[:3, 3]
        nib.save(nib.Nifti1Image(arr[box], affine), out / f.name)
    return out


def _make_checkpoint(model: str, case_dir: Path, path: Path) -> dict:
    """An untrained checkpoint of ``configs/brats2018/<model>.yaml`` with the plan fitted on the one case."""
    import torch

    from mambaseg.config import config_to_dict, load_config
    from mambaseg.data.layouts.case_folders import case_folder_cases
    from mambaseg.data.plans.fingerprint import fingerprint
    from mambaseg.data.plans.plan import Plan3D
    from mambaseg.engine.checkpoint import save_checkpoint
    from mambaseg.engine.data import data_spec
    from mambaseg.models.registry import build_model

    cfg = load_config(REPO / "configs" / "brats2018" / f"{model}.yaml")
    spec = data_spec(cfg.data)
    case = case_folder_cases(case_dir, spec)[0]
    fitted = Plan3D.fit(fingerprint([case]), modality="MR", patch_size=list(cfg.data.patch_size),
                        target_spacing=list(cfg.data.target_spacing), brain_mask=True)
    torch.manual_seed(0)
    kwargs = {"in_channels": len(spec.channels), "out_channels": 1, **cfg.model.kwargs}
    net = build_model(cfg.model.name, **kwargs)
    data = {"spatial_dims": 3, **fitted.to_checkpoint(), "labels": {"background": 0, "WT": 1},
            "channel_names": list(spec.channel_names), "layout": "case_folders", "case_folders": spec.to_dict()}
    save_checkpoint({"model_name": cfg.model.name, "model_kwargs": kwargs, "state_dict": net.state_dict(),
                     "config": config_to_dict(cfg), "data": data, "epoch": 0}, path)
    return {"parameters": int(sum(p.numel() for p in net.parameters())), "plan": fitted.plan}


def _worker(spec: dict) -> dict:
    """One predict call in this (fresh) process; its time, CPU time and memory."""
    import torch

    torch.set_num_threads(int(spec["threads"]))
    from mambaseg.engine.predict import predict

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.perf_counter(), time.process_time()
    written = predict(spec["checkpoint"], spec["input"], spec["output"], progress=False, device="cpu")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"seconds_per_case": round(wall, 2), "cpu_seconds_per_case": round(cpu, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_before_predict_mb": round(rss_before, 1), "written": [str(w) for w in written],
            "torch_threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="", help="the BraTS2018_WT folder (default $MAMBASEG_DATA/BraTS2018_WT)")
    ap.add_argument("--case", default="", help="case folder name (default: the first)")
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--crop", type=int, default=0, help="predict the centre N^3 voxels instead of the whole case")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "brats_inference.json"))
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0
    root = _data_root(args.data)
    cases = sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    if not cases:
        print(f"{root}: no BraTS2018_WT case folders (set --data or MAMBASEG_DATA)", file=sys.stderr)
        return 2
    case = root / args.case if args.case else cases[0]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    report = {"command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": platform.platform(),
              "cpu_count": os.cpu_count(), "threads": args.threads, "case": case.name,
              "input": "full case" if not args.crop else f"centre {args.crop}^3 voxels of the case",
              "load_average_before": [round(v, 2) for v in os.getloadavg()],
              "weights": "untrained (seeded random init): inference cost does not depend on the weights",
              "models": {}, "complete": False}
    with tempfile.TemporaryDirectory(prefix="brats_inf_") as tmp:
        tmp = Path(tmp)
        src = _crop_case(case, tmp / "input", args.crop) if args.crop else case
        import nibabel as nib

        report["input_shape"] = list(nib.load(next(src.glob("FLAIR.nii*"))).shape)
        for model in args.models:
            ck = tmp / f"{model}.pt"
            info = _make_checkpoint(model, src, ck)
            job = {"checkpoint": str(ck), "input": str(src), "output": str(tmp / f"out_{model}"),
                   "threads": args.threads}
            proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], env=env,
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                print(proc.stderr[-2000:], file=sys.stderr)
                return proc.returncode
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            plan = info["plan"]
            res.pop("written", None)
            report["models"][model] = {**res, "parameters": info["parameters"],
                                       "target_spacing_mm": plan["target_spacing"], "patch_size": plan["patch_size"],
                                       "load_average_after": [round(v, 2) for v in os.getloadavg()]}
            print(model, json.dumps(report["models"][model]), flush=True)
            _write(report, args.out)  # after each model: a long run leaves what it measured
    report["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    report["complete"] = True
    _write(report, args.out)
    print(f"wrote {args.out}")
    return 0


def _write(report: dict, out: str) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
