#!/usr/bin/env bash
# Akmamba-Net ablation on DRIVE at equal CPU time (issue 21), the companion of drive_ablation.sh (equal steps): base
# U-Net at the same widths, +AKConv, +Mamba-out, both (the paper's network), the centred-AKConv variant and the
# diagnosed fix (centred AKConv + residual Mamba-out), CPU_MIN CPU-minutes per run (default 8), seeds 0,1 (0,1,2 for
# the base and the full network), one thread per run, two side by side, the v1 recipe (configs/drive/
# akmamba_net_cpu.yaml), best-on-validation checkpoint, test Dice inside the FOV on the 20 DRIVE test images, paired
# comparisons against the base U-Net. Run it from a git worktree pinned at one commit.
# Usage: bash benchmarks/drive_ablation_cpu.sh [--dry-run] [more mambaseg benchmark options]
set -euo pipefail
cd "${MAMBASEG_ROOT:-$(dirname "$0")/..}"
DRIVE=${DRIVE:-../shared/data/DRIVE}
MAMBASEG=${MAMBASEG:-.venv/bin/mambaseg}
ARMS=akmamba_net_cpu_base,akmamba_net_cpu_akconv,akmamba_net_cpu_mambaout,akmamba_net_cpu,akmamba_net_cpu_centred,akmamba_net_cpu_fixed
exec $MAMBASEG benchmark configs/drive/akmamba_net_cpu.yaml --models "$ARMS" --budget-minutes "${CPU_MIN:-8}" \
  --budget-clock cpu --seeds 0,1 --arm-seeds akmamba_net_cpu_base,akmamba_net_cpu=0,1,2 --parallel 2 --threads 1 \
  --test "$DRIVE/test" --set "data.root=$DRIVE" --out "${OUT:-benchmarks/results/drive_ablation_cpu}" "$@"
