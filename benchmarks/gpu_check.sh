#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): runs from a checkout with nothing installed but jax,
# flax and optax (no TensorFlow). Under 6 minutes on one H100. Smoke test on a CPU:
#   JAX_PLATFORMS=cpu benchmarks/gpu_check.sh --depths 20,56 --steps 2 --seeds 2
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" -m benchmarks.gpu_check "$@"
