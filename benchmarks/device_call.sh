#!/usr/bin/env bash
# The device plan's two calls (docs/benchmarks.md, "The device plan"), each a short command line
# for the device tool, on one warm nvidia-h200 (timeout_s 600 each):
#   benchmarks/device_call.sh 1   the step's profile (ResNet-20/110, tf32), the PyTorch peer,
#                                 resdepth in tf32, bfloat16 and full float32, then the XLA
#                                 variants (benchmarks/xla_variants.py); ends within 390 s
#   benchmarks/device_call.sh 2   the packs (benchmarks/pack_check.py); ends within 240 s
# Each part has a budget (no new cell after it) and a cap (stopped then), so that the machine's
# start and both calls fit 13 of the 15 device minutes. The console of each call, every part's
# output included as it comes, is teed into $OUT/console-N.txt. Files in $OUT: call 1
# console-1.txt, results.json, profile.json, the two traces and variants.json; call 2
# console-2.txt and pack_check.json: 8 in all, the device tool's limit.
#
# On a CPU, the same parts at smoke sizes (docs/benchmarks.md has the pinned venvs):
#   JAX_PLATFORMS=cpu PYTHON=/tmp/venv-device/bin/python TORCH_PYTHON=/tmp/venv-torch/bin/python \
#     OUT=/tmp/call1 benchmarks/device_call.sh 1 --smoke
set -uo pipefail
cd "$(dirname "$0")/.."
call=${1:-}
smoke=${2:-}
if { [ "$call" != 1 ] && [ "$call" != 2 ]; } || { [ -n "$smoke" ] && [ "$smoke" != --smoke ]; }; then
  echo "usage: benchmarks/device_call.sh 1|2 [--smoke]" >&2
  exit 2
fi
out=${OUT:-$(mktemp -d /tmp/resdepth-call-XXXXXX)}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
torch_python=${TORCH_PYTHON:-$python}
end_s=$([ "$call" = 1 ] && echo 390 || echo 240)  # the call's own cap
[ -n "$smoke" ] && end_s=3000                       # a 2-core CPU compiles slowly

part() {  # part CAP_S COMMAND...: COMMAND, terminated after CAP_S s (killed 10 s later)
  local cap=$1 code
  shift
  timeout -k 10 "$cap" "$@"
  code=$?
  if [ "$code" -eq 124 ]; then echo "(stopped at its cap of $cap s)"
  elif [ "$code" -ne 0 ]; then echo "(exit code $code)"; fi
}

left() { echo $((end_s - SECONDS)); }  # seconds left of the call's cap

call_1() {
  local check_json
  check_json=$(mktemp /tmp/resdepth-precisions-XXXXXX.json)
  if [ -n "$smoke" ]; then
    part "$(left)" "$python" -m benchmarks.peer_compare --profile --smoke --depths 8,14 \
      --profile-depths 8 --precisions tf32 --torch-python "$torch_python" \
      --torch-args "--configs eager-cl,eager-nchw" \
      --out "$out" --check-json "$check_json"
    part "$(left)" "$python" -m benchmarks.xla_variants --smoke --baseline-json "$check_json" \
      --json "$out/variants.json"
  else
    # profile ~45 s (cap 75), peer ~60 s (cap 85), precisions ~80 s (cap 100): done by ~200 s
    part 280 "$python" -m benchmarks.peer_compare --profile --out "$out" --check-json "$check_json" \
      --torch-python "$torch_python" --round-s 0.3 \
      --profile-budget-s 40 --profile-cap-s 75 --profile-args "--cost-max-depth 56" \
      --torch-budget-s 55 --torch-args "--configs graph-cl,eager-cl" --resdepth-budget-s 70
    # the variants share what is left (about 180 s), their default taken from the precisions run
    part $(( $(left) - 5 )) "$python" -m benchmarks.xla_variants --baseline-json "$check_json" \
      --budget-s $(( $(left) - 25 )) --cap-s $(( $(left) - 10 )) --json "$out/variants.json"
  fi
  rm -f "$check_json"
}

call_2() {
  if [ -n "$smoke" ]; then
    part "$(left)" "$python" -m benchmarks.pack_check --smoke --json "$out/pack_check.json"
  else
    # 3 rounds of 60 iterations per cell, most telling cells first; no cell after 180 s
    part 230 "$python" -m benchmarks.pack_check --budget-s 180 --json "$out/pack_check.json"
  fi
}

main() {
  echo "=== device call $call${smoke:+ (smoke)}, $(date -u +%FT%TZ), files in $out"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv \
    2>/dev/null || echo "no nvidia-smi here"
  "$python" -c "import sys, jax, jaxlib, flax, optax; print('python', sys.version.split()[0], \
'jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'flax', flax.__version__, 'optax', optax.__version__)"
  "call_$call"
  echo "=== device call $call: $SECONDS s; in $out:"
  ls -l "$out"
}

main 2>&1 | tee -a "$out/console-$call.txt"
