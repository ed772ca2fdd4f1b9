#!/usr/bin/env bash
# Train, predict and evaluate DRIVE models one after another (never two trainings at once on 2 cores).
# Usage: bash benchmarks/drive_train.sh MODEL:MINUTES [MODEL:MINUTES ...]   e.g. bash benchmarks/drive_train.sh unet:12
# Runs go to runs/drive/<model>; predictions on the 20 DRIVE test images to runs/drive/<model>/test_pred,
# metrics (inside the DRIVE FOV masks) to runs/drive/<model>/test_eval. Then: python benchmarks/drive_table.py
set -euo pipefail
cd "${MAMBASEG_ROOT:-$(dirname "$0")/..}"
DRIVE=${DRIVE:-../shared/data/DRIVE}
for item in "$@"; do
  m=${item%%:*}; min=${item##*:}
  run=runs/drive/$m
  while pgrep -f "mambaseg train" > /dev/null; do sleep 10; done   # one training at a time
  if [ ! -f "$run/summary.json" ]; then
    .venv/bin/mambaseg train configs/drive/${m}_cpu.yaml --out "$run" --no-progress \
      --set train.time_limit_min=$min train.num_threads=${THREADS:-1} data.root=$DRIVE
  fi
  .venv/bin/mambaseg predict -m "$run" -i $DRIVE/test/images -o "$run/test_pred" --mask $DRIVE/test/mask \
    --probs --overlay --overwrite --no-progress
  .venv/bin/mambaseg evaluate --pred "$run/test_pred" --gt $DRIVE/test -o "$run/test_eval" --overwrite > "$run/test_eval.txt"
  tail -12 "$run/test_eval.txt"
done
