#!/usr/bin/env bash
# DRIVE ablation of Akmamba-Net at equal steps (issue 21), every arm in one command at one commit: the paper's Table 3
# arms (base U-Net at the same widths, +AKConv, +Mamba-out, both = Akmamba-Net) and the diagnosis' two fixes (centred
# AKConv sampling; centred + residual Mamba-out skips), 600 steps each (30 epochs x 20, batch 8, 128^2 patches, the v1
# DRIVE recipe), one thread per run, two side by side; seeds 0,1 for every arm and 0,1,2 for the base, the full and
# the fixed network. Evaluated inside the FOV on the 20 DRIVE test images with each run's best-on-validation
# checkpoint. About 235 CPU-minutes (2 hours on two cores). Rerunning resumes.
# Usage: bash benchmarks/drive_ablation.sh [more mambaseg benchmark options]
set -euo pipefail
cd "${MAMBASEG_ROOT:-$(dirname "$0")/..}"
DRIVE=${DRIVE:-../shared/data/DRIVE}
MAMBASEG=${MAMBASEG:-.venv/bin/mambaseg}
exec $MAMBASEG benchmark configs/drive/akmamba_net_cpu.yaml \
  --models akmamba_net_cpu_base,akmamba_net_cpu_akconv,akmamba_net_cpu_mambaout,akmamba_net_cpu,akmamba_net_cpu_centred,akmamba_net_cpu_fixed \
  --seeds 0,1 --arm-seeds akmamba_net_cpu_base,akmamba_net_cpu,akmamba_net_cpu_fixed=0,1,2 \
  --steps 600 --threads 1 --parallel 2 --test "$DRIVE/test" --set "data.root=$DRIVE" \
  --out "${OUT:-benchmarks/results/drive_ablation_onecommit/steps600}" "$@"
