#!/usr/bin/env bash
# The fix the Akmamba-Net diagnosis points to (issue 21), trained like the ablation arms of drive_ablation.sh (600
# steps, v1 DRIVE recipe, one thread per run, seeds 0 and 1 side by side): akmamba_net_cpu_fixed = centred AKConv
# sampling + residual Mamba-out skips. Compare with benchmarks/results/drive_ablation/steps600 (same steps, seeds,
# split and test set). Rerunning resumes.
set -euo pipefail
cd "${MAMBASEG_ROOT:-$(dirname "$0")/..}"
DRIVE=${DRIVE:-../shared/data/DRIVE}
MAMBASEG=${MAMBASEG:-.venv/bin/mambaseg}
exec $MAMBASEG benchmark configs/drive/akmamba_net_cpu.yaml --models akmamba_net_cpu_fixed --steps 600 --seeds 0,1 \
  --parallel 2 --threads 1 --test "$DRIVE/test" --set "data.root=$DRIVE" \
  --out "${OUT:-benchmarks/results/drive_ablation_fix/steps600}" "$@"
