#!/usr/bin/env bash
# BraTS 2018 whole-tumour equal-budget table (issue 26): DM-SegNet vs DynUNet (unet3d_cpu) vs SegMamba on FLAIR + T1,
# and DM-SegNet on FLAIR alone (what T1 adds), on the ten real cases of ../shared/data/BraTS2018_WT.
# Protocol: nnU-Net's 5-fold cross-validation (benchmark --folds 5; folds dealt from a fixed shuffle of the case ids,
# the same for every arm): each run trains on the 8 cases outside its fold (6 training + 2 validation, seed 0; the
# best-on-validation checkpoint) and predicts its 2 held-out cases at full size (1 mm grid, whole tumour Dice and
# HD95 in mm). Budget: CPU time per run (--budget-clock cpu, not shrunk by other work), one thread per run, two runs
# side by side. FOLD_IDS picks the folds run (default 0,1: 4 of the 10 cases, what one session's compute allows;
# rerunning with more folds adds them, the finished runs are kept).
# Usage: bash benchmarks/brats_cv.sh [more mambaseg benchmark options]
set -euo pipefail
cd "${MAMBASEG_ROOT:-$(dirname "$0")/..}"
BRATS=${BRATS:-../shared/data/BraTS2018_WT}
MAMBASEG=${MAMBASEG:-.venv/bin/mambaseg}
MINUTES=${MINUTES:-15}
FOLD_IDS=${FOLD_IDS:-0,1}
OUT=${OUT:-benchmarks/results/brats_cv}
$MAMBASEG benchmark configs/brats2018/dm_segnet_cpu.yaml configs/brats2018/unet3d_cpu.yaml \
  configs/brats2018/segmamba_cpu.yaml configs/brats2018/dm_segnet_cpu_flair.yaml \
  --budget-minutes "$MINUTES" --budget-clock cpu --seeds 0 --folds 5 --fold-ids "$FOLD_IDS" --parallel 2 --threads 1 \
  --set "data.root=$BRATS" --out "$OUT" "$@"
