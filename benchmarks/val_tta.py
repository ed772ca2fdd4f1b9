"""Mirror test-time augmentation, chosen on validation (issue 12): predict a run's validation cases (``data.val_ids``
of its checkpoint; never trained on) with and without mirroring and score both with ``mambaseg evaluate``, so the
shipped model's ``infer.tta`` is decided without touching the test cases. 2D DRIVE runs (scored inside the FOV masks)
and 3D MSD-layout runs (mean Dice and HD95 over the foreground labels).

Usage: python benchmarks/val_tta.py RUN [RUN ...] [--work runs/val_tta] [--out FILE.json]
(``RUN``: a run folder with ``checkpoint_best.pt``, or a shipped ``weights/*.pt``.)
Prints, per run, the mean over validation cases of each setting; ``--out`` also writes them as JSON.
Symbolic links and predictions live under ``--work`` (derived from the data: never inside the repository's results).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from mambaseg.apps.benchmark import case_metrics, resolve_test_set
from mambaseg.engine.evaluate import evaluate
from mambaseg.engine.predict import predict


def _fail(msg: str) -> None:
    print(f"val_tta: error: {msg}", file=sys.stderr)
    sys.exit(2)


def _checkpoint(run: Path) -> Path:
    path = run / "checkpoint_best.pt" if run.is_dir() else run
    if not path.is_file():
        _fail(f"{path}: not found (expected a run folder holding checkpoint_best.pt, or a checkpoint file)")
    return path


def link_val_cases(run: Path, dest: Path):
    """Symbolic links to a run's validation cases in a test-folder layout; returns the resolved test set."""
    ck = torch.load(_checkpoint(run), map_location="cpu", weights_only=True)
    data = ck["config"]["data"]
    root, ids, layout = Path(data["root"]), list(ck["data"].get("val_ids") or []), data.get("layout")
    if not ids:
        _fail(f"{run}: data.val_ids is empty (the run kept no validation cases)")
    if dest.exists():
        shutil.rmtree(dest)
    if layout == "drive":
        split = root / data.get("split", "training")
        files = {"images": [split / "images" / f"{i}_{split.name}.tif" for i in ids],
                 "1st_manual": [split / "1st_manual" / f"{i}_manual1.gif" for i in ids],
                 "mask": [split / "mask" / f"{i}_{split.name}_mask.gif" for i in ids]}
    elif layout == "msd":
        files = {"imagesTs": [root / "imagesTr" / f"{i}.nii.gz" for i in ids],
                 "labelsTs": [root / "labelsTr" / f"{i}.nii.gz" for i in ids]}
    else:
        _fail(f"{run}: data.layout {layout!r} (expected drive or msd)")
    for sub, paths in files.items():
        (dest / sub).mkdir(parents=True)
        for p in paths:
            if not p.is_file():
                _fail(f"{p}: validation case not found (data.root {root})")
            os.symlink(p.resolve(), dest / sub / p.name)
    return resolve_test_set(str(dest)), len(ids)


def score(run: Path, work: Path) -> dict:
    name = run.name if run.is_dir() else run.stem
    test, n = link_val_cases(run, work / name / "cases")
    out = {"run": str(run), "cases": n}
    for setting, tta in (("plain", False), ("tta", True)):
        pred, ev = work / name / f"pred_{setting}", work / name / f"eval_{setting}"
        predict(run, test.images, pred, mask=test.mask, tta=tta, overwrite=True, progress=False)
        rows = case_metrics(evaluate(pred, test.labels, ev, mask=test.mask, overwrite=True))
        metrics = sorted({m for _, m, _ in rows})
        out[setting] = {m: float(np.nanmean([v for _, k, v in rows if k == m])) for m in metrics}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--work", type=Path, default=Path("runs/val_tta"))
    p.add_argument("--out", type=Path, default=None, help="JSON file for the figures")
    args = p.parse_args(argv)
    rows = []
    for run in args.runs:
        r = score(run, args.work)
        rows.append(r)
        extra = {s: f" HD95 {r[s]['hd95']:.2f}" if "hd95" in r[s] else "" for s in ("plain", "tta")}
        print(f"{run}: {r['cases']} validation cases; plain Dice {r['plain']['dice']:.4f}{extra['plain']}; "
              f"tta Dice {r['tta']['dice']:.4f}{extra['tta']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        command = " ".join(["python", "benchmarks/val_tta.py", *(argv if argv is not None else sys.argv[1:])])
        args.out.write_text(json.dumps({"command": command, "runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
