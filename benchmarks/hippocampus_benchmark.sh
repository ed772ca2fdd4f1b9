#!/usr/bin/env bash
# Hippocampus equal-budget benchmark (issue 12): DM-SegNet vs SegMamba vs DynUNet (unet3d_cpu), 30 min of training
# of CPU time (--budget-clock cpu: not shrunk by other work on the machine) per run, seeds 0 and 1, two trainings side by side with one thread each, evaluated on a seeded held-out 20 % of the
# labelled cases (benchmarks/hippocampus_split.py; symlinks under runs/, no data copied) with the best-on-validation
# checkpoint of each run. About three hours on a 2-core CPU (6 runs, 2 at a time); rerunning resumes.
# Usage: bash benchmarks/hippocampus_benchmark.sh [--dry-run] [more mambaseg benchmark options]
set -euo pipefail
cd "${MAMBASEG_ROOT:-$(dirname "$0")/..}"
HIPPO=${HIPPO:-../shared/data/Task04_Hippocampus}
SPLIT=${SPLIT:-runs/hippocampus_split}
.venv/bin/python benchmarks/hippocampus_split.py --root "$HIPPO" --out "$SPLIT"
exec .venv/bin/mambaseg benchmark configs/hippocampus/dm_segnet_cpu.yaml configs/hippocampus/segmamba_cpu.yaml \
  configs/hippocampus/unet3d_cpu.yaml --budget-minutes 30 --budget-clock cpu --seeds 0,1 --parallel 2 --threads 1 \
  --test "$SPLIT/test" --set "data.root=$SPLIT/train" data.cache_dir=runs/cache/hippocampus_split \
  --out benchmarks/results/hippocampus_benchmark "$@"
