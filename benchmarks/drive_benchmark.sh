#!/usr/bin/env bash
# DRIVE equal-budget benchmark (issue 12): Akmamba-Net vs U-Net vs Attention U-Net, 60 min of training per run, seeds 0 and 1, two
# trainings side by side with one thread each, evaluated inside the FOV on the 20 DRIVE test images with the
# best-on-validation checkpoint of each run. Takes about three hours on a 2-core CPU (6 runs, 2 at a time).
# Rerunning the same command resumes: finished runs are skipped, an interrupted one continues from its checkpoint.
# Usage: bash benchmarks/drive_benchmark.sh [--dry-run] [more mambaseg benchmark options]
# Results: benchmarks/results/drive_benchmark/{results.csv,summary.json,index.html} (runs/ holds the checkpoints).
set -euo pipefail
cd "${MAMBASEG_ROOT:-$(dirname "$0")/..}"
DRIVE=${DRIVE:-../shared/data/DRIVE}
exec .venv/bin/mambaseg benchmark configs/drive/akmamba_net_cpu.yaml configs/drive/unet_cpu.yaml \
  configs/drive/attention_unet_cpu.yaml \
  --budget-minutes 60 --seeds 0,1 --parallel 2 --threads 1 \
  --test "$DRIVE/test" --set "data.root=$DRIVE" \
  --out benchmarks/results/drive_benchmark "$@"
