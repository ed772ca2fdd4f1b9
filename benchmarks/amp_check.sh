#!/usr/bin/env bash
# AMP training check (issue 23): akmamba_net_cpu on DRIVE trained with and without train.amp (bf16 autocast on the
# CPU) for the same steps (600: 30 epochs x 20, batch 8, 128^2 patches, the v1 DRIVE recipe), seeds 0,1, one thread
# per run, two side by side; evaluated inside the FOV on the 20 DRIVE test images with each run's best-on-validation
# checkpoint. The two arms go to separate benchmark folders (the same model name, a different train.amp); the last
# step prints both arms' best validation Dice per seed, their test Dice and the training seconds, side by side.
# train.amp: true becomes the recommended setting only if the AMP arm's Dice is the fp32 arm's within seed noise.
# Prepared, not run by its author; rerunning resumes.
# Usage: bash benchmarks/amp_check.sh [more mambaseg benchmark options]
set -euo pipefail
cd "${MAMBASEG_ROOT:-$(dirname "$0")/..}"
DRIVE=${DRIVE:-../shared/data/DRIVE}
MAMBASEG=${MAMBASEG:-.venv/bin/mambaseg}
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-benchmarks/results/amp_check/steps600}
STEPS=${STEPS:-600}
common=(configs/drive/akmamba_net_cpu.yaml --models akmamba_net_cpu --seeds 0,1 --steps "$STEPS" --parallel 2
        --threads 1 --test "$DRIVE/test")
# one --set per command (a second --set would replace the first)
$MAMBASEG benchmark "${common[@]}" --set "data.root=$DRIVE" train.amp=false --out "$OUT/fp32" "$@"
$MAMBASEG benchmark "${common[@]}" --set "data.root=$DRIVE" train.amp=true --out "$OUT/bf16" "$@"
"$PYTHON" - "$OUT" <<'PY'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
print(f"{'arm':6s} {'seed':>4s} {'steps':>6s} {'train s':>9s} {'best val Dice':>14s}")
for arm in ("fp32", "bf16"):
    summary = json.loads((out / arm / "summary.json").read_text())
    for run in summary["runs"]:
        print(f"{arm:6s} {run['seed']:4d} {run['steps']:6d} {run['train_seconds']:9.1f} {run['best_val_dice']:14.4f}")
    print(f"{arm}: test metrics (summary.json 'metrics'): {json.dumps(summary.get('metrics'))[:400]}")
PY
