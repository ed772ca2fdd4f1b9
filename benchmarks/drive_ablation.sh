#!/usr/bin/env bash
# DRIVE ablation of Akmamba-Net at equal steps (issue 21): the paper's Table 3 arms (base U-Net at the same widths,
# +AKConv, +Mamba-out, both = Akmamba-Net) and the centred-sampling candidate fix, 600 steps each (30 epochs x 20,
# batch 8, 128^2 patches, the v1 DRIVE recipe), one thread per run, two side by side; seeds 0,1 for every arm, then
# seed 2 for the base and the full network. Evaluated inside the FOV on the 20 DRIVE test images with each run's
# best-on-validation checkpoint. Rerunning resumes.
# Usage: bash benchmarks/drive_ablation.sh [more mambaseg benchmark options]
set -euo pipefail
cd "${MAMBASEG_ROOT:-$(dirname "$0")/..}"
DRIVE=${DRIVE:-../shared/data/DRIVE}
MAMBASEG=${MAMBASEG:-.venv/bin/mambaseg}
OUT=${OUT:-benchmarks/results/drive_ablation/steps600}
ARMS=akmamba_net_cpu_base,akmamba_net_cpu_akconv,akmamba_net_cpu_mambaout,akmamba_net_cpu,akmamba_net_cpu_centred
common=(configs/drive/akmamba_net_cpu.yaml --steps 600 --parallel 2 --threads 1
        --test "$DRIVE/test" --set "data.root=$DRIVE" --out "$OUT")
$MAMBASEG benchmark "${common[@]}" --models "$ARMS" --seeds 0,1 "$@"
$MAMBASEG benchmark "${common[@]}" --models akmamba_net_cpu_base,akmamba_net_cpu --seeds 0,1,2 "$@"
