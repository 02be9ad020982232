#!/usr/bin/env bash
# The GPU check: runs from a checkout with nothing installed but jax, flax and optax (no TensorFlow).
#   benchmarks/gpu_check.sh [ARGS]          benchmarks/gpu_check.py: images/s per depth and compute
#                                           dtype, packed seeds, memory, Table 6's projected hours
#                                           (under 6 minutes on one H200)
#   benchmarks/gpu_check.sh --full [ARGS]   benchmarks/peer_compare.py --profile: the profile of
#                                           ResNet-20/110 (gpu_profile.py), the PyTorch peer
#                                           (torch_peer.py, needs torch) against resdepth, and the
#                                           projection, in one call of about 7 minutes; files in $OUT
#   benchmarks/gpu_check.sh --packs [ARGS]  benchmarks/pack_check.py: S = 1, 2, 4, 5, 8 ResNets of
#                                           depth 20/56/110 packed in each formulation (vmap, wide,
#                                           grouped, tuple), images/s, Table 6 with the fastest
#                                           packing (about 5 minutes on one H200)
#   benchmarks/gpu_check.sh --variants [ARGS]  benchmarks/xla_variants.py: the train step of
#                                           ResNet-20/56/110 in tf32 and bfloat16 under XLA's
#                                           levers (command buffers off, with while loops, conv
#                                           fusion, stages unrolled), each in its own process
# The device plan runs these through benchmarks/device_call.sh 1 and 2 (docs/benchmarks.md).
# Smoke tests on a CPU:
#   JAX_PLATFORMS=cpu benchmarks/gpu_check.sh --smoke
#   JAX_PLATFORMS=cpu benchmarks/gpu_check.sh --full --smoke --depths 8 --profile-depths 8 --torch-python /tmp/venv-torch/bin/python
#   JAX_PLATFORMS=cpu benchmarks/gpu_check.sh --packs --smoke
#   JAX_PLATFORMS=cpu benchmarks/gpu_check.sh --variants --smoke
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "${1:-}" = "--packs" ]; then
  shift
  exec "${PYTHON:-python3}" -m benchmarks.pack_check "$@"
fi
if [ "${1:-}" = "--variants" ]; then
  shift
  exec "${PYTHON:-python3}" -m benchmarks.xla_variants "$@"
fi
if [ "${1:-}" = "--full" ]; then
  shift
  exec "${PYTHON:-python3}" -m benchmarks.peer_compare --profile "$@"
fi
exec "${PYTHON:-python3}" -m benchmarks.gpu_check "$@"
