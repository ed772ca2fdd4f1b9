#!/usr/bin/env bash
# DRIVE recipe comparison and ship candidates (issue 12): Akmamba-Net with recipe v1 (configs/drive/akmamba_net_cpu.yaml)
# vs recipe v2 (configs/drive/akmamba_net_cpu_v2.yaml: FOV z-score, strong fundus augmentation, Dice+CE+clDice,
# threshold chosen on validation), 120 min of training each, seed 0, side by side with one thread each.
# The recipe to ship is chosen on the validation split inside DRIVE training (3 of 20 images, seeded); the 20 DRIVE
# test images are predicted once for the final figures. Takes about 2 h 10 min on a 2-core CPU.
# Rerunning the same command resumes: finished runs are skipped, an interrupted one continues from its checkpoint.
# Results: benchmarks/results/drive_recipe/{results.csv,summary.json,index.html} (runs/ holds the checkpoints).
set -euo pipefail
cd "${MAMBASEG_ROOT:-$(dirname "$0")/..}"
DRIVE=${DRIVE:-../shared/data/DRIVE}
exec .venv/bin/mambaseg benchmark configs/drive/akmamba_net_cpu.yaml configs/drive/akmamba_net_cpu_v2.yaml \
  --budget-minutes 120 --seeds 0 --parallel 2 --threads 1 \
  --test "$DRIVE/test" --set "data.root=$DRIVE" \
  --out benchmarks/results/drive_recipe "$@"
