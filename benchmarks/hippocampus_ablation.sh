#!/usr/bin/env bash
# DM-SegNet ablation on MSD Task04 Hippocampus (issue 21): the full network (dm_segnet_cpu) against the same code
# without QSMamba (dm_segnet_cpu_no_qsmamba: GSC + residual convolutions), without GSC (dm_segnet_cpu_no_gsc) and with
# a plain convolutional decoder instead of MFMamba (dm_segnet_cpu_conv_decoder), at two budgets in one table:
# equal steps (the papers' protocol; STEPS, default 400 of batch 2 at 32x48x32) and equal CPU time (CPU_MIN, default
# 6 CPU-minutes per run), seeds 0,1, one thread per run, two side by side. Test: the seeded held-out 20 % of the
# labelled cases (benchmarks/hippocampus_split.py; symlinks, no data copied), each run's best-on-validation
# checkpoint. Paired comparisons against the full network. Run it from a git worktree pinned at one commit.
# Usage: bash benchmarks/hippocampus_ablation.sh [--dry-run] [more mambaseg benchmark options]
set -euo pipefail
cd "${MAMBASEG_ROOT:-$(dirname "$0")/..}"
HIPPO=${HIPPO:-../shared/data/Task04_Hippocampus}
SPLIT=${SPLIT:-runs/hippocampus_split}
MAMBASEG=${MAMBASEG:-.venv/bin/mambaseg}
PYTHON=${PYTHON:-.venv/bin/python}
"$PYTHON" benchmarks/hippocampus_split.py --root "$HIPPO" --out "$SPLIT"
exec $MAMBASEG benchmark configs/hippocampus/dm_segnet_cpu.yaml \
  --models dm_segnet_cpu,dm_segnet_cpu_no_qsmamba,dm_segnet_cpu_no_gsc,dm_segnet_cpu_conv_decoder \
  --budget "steps:${STEPS:-400}" --budget "cpu:${CPU_MIN:-6}" --seeds 0,1 --parallel 2 --threads 1 \
  --test "$SPLIT/test" --set "data.root=$SPLIT/train" data.cache_dir=runs/cache/hippocampus_split \
  --out "${OUT:-benchmarks/results/hippocampus_ablation}" "$@"
