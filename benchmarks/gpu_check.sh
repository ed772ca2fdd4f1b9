#!/usr/bin/env bash
# The GPU checks of issue 10 item 5, as one short script for a lent GPU machine (a few minutes; nothing in CI needs
# a GPU): the CUDA parity tests (chunked scan and AKConv against their CPU references, float64, outputs and every
# gradient; a few training steps of the tiny Mamba networks) and one training step of each Mamba network against
# its baseline (benchmarks/gpu_steps.py -> benchmarks/results/gpu_steps.json).
# Usage: bash benchmarks/gpu_check.sh            (PYTHON=... to pick an interpreter with a CUDA torch)
set -euo pipefail
cd "${MAMBASEG_ROOT:-$(dirname "$0")/..}"
PY=${PYTHON:-python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch, sys
if not torch.cuda.is_available():
    print('gpu_check: no CUDA device visible to ' + sys.executable, file=sys.stderr); sys.exit(2)"
"$PY" -m pytest -q -p no:cacheprovider -m gpu tests/gpu
"$PY" benchmarks/gpu_steps.py --rounds 5
