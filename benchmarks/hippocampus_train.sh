#!/usr/bin/env bash
# Train, predict and evaluate Hippocampus (MSD Task04) models one after another (one training at a time).
# Usage: bash benchmarks/hippocampus_train.sh MODEL:MINUTES[:TAG] ...   e.g. dm_segnet:10 segmamba:5 dm_segnet:5:5min
# The seeded validation split (20 %) is held out: predictions for those cases go to runs/hippocampus/<model>/val_pred
# (written in each input's original geometry), metrics to runs/hippocampus/<model>/val_eval.
set -euo pipefail
cd "${MAMBASEG_ROOT:-$(dirname "$0")/..}"
HIPPO=${HIPPO:-../shared/data/Task04_Hippocampus}
for item in "$@"; do
  m=${item%%:*}; rest=${item#*:}; min=${rest%%:*}; tag=${rest#"$min"}; tag=${tag#:}
  run=runs/hippocampus/$m${tag:+_$tag}
  while pgrep -f "mambaseg train" > /dev/null; do sleep 10; done
  if [ ! -f "$run/summary.json" ]; then
    .venv/bin/mambaseg train configs/hippocampus/${m}_cpu.yaml --out "$run" --no-progress \
      --set train.time_limit_min=$min train.num_threads=${THREADS:-2} data.root=$HIPPO data.cache_dir=runs/cache/hippocampus
  fi
  rm -rf "$run/val_images" && mkdir -p "$run/val_images"
  .venv/bin/python - "$run" "$HIPPO" <<'PY'
import json, os, sys
from pathlib import Path
run, root = Path(sys.argv[1]), Path(sys.argv[2]).resolve()
import torch
ck = torch.load(run / "checkpoint_best.pt", map_location="cpu", weights_only=True)
for cid in ck["data"]["val_ids"]:
    os.symlink(root / "imagesTr" / f"{cid}.nii.gz", run / "val_images" / f"{cid}.nii.gz")
PY
  .venv/bin/mambaseg predict -m "$run" -i "$run/val_images" -o "$run/val_pred" --overwrite --no-progress
  .venv/bin/mambaseg evaluate --pred "$run/val_pred" --gt $HIPPO/labelsTr -o "$run/val_eval" --overwrite > "$run/val_eval.txt"
  tail -8 "$run/val_eval.txt"
done
