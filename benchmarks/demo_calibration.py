"""Check the demo's step budgets (issue 25): train the 2D and the 3D demo for their default step counts (or others)
from several seeds, as ``mambaseg demo`` does, and record each run's test Dice, wall time and CPU time.

The budgets (``DEMO_2D_STEPS``, ``DEMO_3D_STEPS``) must give a printed Dice >= 0.7 for every seed, and the whole
demo must stay under five minutes on two free CPU cores. Run it on a quiet machine:

    python benchmarks/demo_calibration.py [--seeds 0,1,2] [--steps-2d 600] [--steps-3d 300] [--out FILE.json]

Writes ``benchmarks/results/demo_calibration.json`` by default (with the command and the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from mambaseg.apps.demo import DEMO_2D, DEMO_2D_STEPS, DEMO_3D, DEMO_3D_STEPS, step_overrides
from mambaseg.config import apply_overrides, config_from_dict
from mambaseg.engine.evaluate import evaluate
from mambaseg.engine.predict import predict
from mambaseg.engine.train import train

ROOT = Path(__file__).resolve().parents[1]


def run_2d(work: Path, steps: int, seed: int) -> float:
    cfg = apply_overrides(config_from_dict(DEMO_2D), step_overrides(DEMO_2D, steps, seed))
    train(cfg, work / "run", progress=False)
    test = work / "run" / "synthetic_data" / "test"
    predict(work / "run", test / "images", work / "pred", mask=test / "mask", progress=False)
    return evaluate(work / "pred", test, work / "eval")["mean_2d"]["dice"]


def run_3d(work: Path, steps: int, seed: int) -> float:
    from mambaseg.data.synthetic import write_phantom_msd

    data = write_phantom_msd(work / "task", n_cases=10, shape=(40, 48, 36))  # as mambaseg.apps.demo.run_part(root, 3)
    test = write_phantom_msd(work / "test", n_cases=2, shape=(44, 40, 38), seed=7)
    cfg = apply_overrides(config_from_dict(DEMO_3D), [f"data.root={data}", *step_overrides(DEMO_3D, steps, seed)])
    train(cfg, work / "run", progress=False)
    predict(work / "run", test / "imagesTr", work / "pred", progress=False)
    return evaluate(work / "pred", test / "labelsTr", work / "eval")["foreground_mean"]["Dice"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps-2d", type=int, default=DEMO_2D_STEPS)
    ap.add_argument("--steps-3d", type=int, default=DEMO_3D_STEPS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "demo_calibration.json"))
    args = ap.parse_args(argv)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for part, steps, fn in (("2d", args.steps_2d, run_2d), ("3d", args.steps_3d, run_3d)):
            with tempfile.TemporaryDirectory() as tmp:
                t0, c0 = time.perf_counter(), time.process_time()
                dice = fn(Path(tmp), steps, seed)
                row = {"part": part, "steps": steps, "seed": seed, "dice": round(dice, 4),
                       "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - c0, 1)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    result = {"command": " ".join(["python", *sys.argv]), "cpus": os.cpu_count(), "load_average": os.getloadavg(),
              "time": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": rows,
              "min_dice": {p: min(r["dice"] for r in rows if r["part"] == p) for p in ("2d", "3d")}}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"min Dice 2D {result['min_dice']['2d']:.3f}, 3D {result['min_dice']['3d']:.3f} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
