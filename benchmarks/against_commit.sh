#!/usr/bin/env bash
# This checkout's CPU train step against another commit's, in one sitting. The two alternate
# (old, new, old, new, ...), each a fresh `python -m benchmarks.train_throughput` of that
# commit, so the machine's other load falls on both alike; the ratio is of the median rounds.
#   benchmarks/against_commit.sh [REV] [ROUNDS] [DEPTHS]
# REV defaults to d3ca069 (the code before issue 9), ROUNDS to 3, DEPTHS to 20,56.
# NEW_PYTHON and OLD_PYTHON pick the interpreters (default: .venv/bin/python for both; the
# Makefile's venv at d3ca069 was Python 3.11 with jax 0.10.2).
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:-d3ca069}
rounds=${2:-3}
depths=${3:-20,56}
new_python=${NEW_PYTHON:-.venv/bin/python}
old_python=${OLD_PYTHON:-$new_python}
here=$PWD
tree=$(mktemp -d)
log=$(mktemp)
trap 'git worktree remove --force "$tree" >/dev/null 2>&1 || rm -rf "$tree"; rm -f "$log"' EXIT
git worktree add --detach --quiet "$tree" "$rev"
echo "old: $rev ($old_python); new: $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo '+changes') ($new_python)"

for round in $(seq "$rounds"); do
  for side in old new; do
    if [ "$side" = old ]; then dir=$tree python=$old_python; else dir=$here python=$new_python; fi
    case $python in /*) ;; */*) python=$here/$python ;; esac  # runs from the other tree
    echo "--- round $round, $side: load average $(cut -d' ' -f1-3 /proc/loadavg)"
    # Each commit's own benchmark, run from its own tree (PYTHONPATH beats the venv's install).
    out=$(cd "$dir" && PYTHONPATH=$dir "$python" -m benchmarks.train_throughput --depths "$depths" 2>&1 |
          grep -E '^(python|backend| depth| +[0-9]+ +resdepth )')
    echo "$out"
    echo "$out" | awk -v side="$side" '$2 == "resdepth" {print side, $1, $6}' >> "$log"
  done
done

# images/s of each round -> median per (side, depth) -> new / old.
awk '{ rates[$1 " " $2] = rates[$1 " " $2] " " $3 }
     END {
       for (key in rates) {
         n = split(substr(rates[key], 2), values, " ")
         for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
           if (values[j] + 0 < values[i] + 0) { t = values[i]; values[i] = values[j]; values[j] = t }
         median[key] = (n % 2) ? values[(n + 1) / 2] : (values[n / 2] + values[n / 2 + 1]) / 2
         split(key, parts, " "); depth[parts[2]] = 1; all[key] = rates[key]
       }
       for (d in depth)
         printf "ResNet-%s: new %.1f images/s, old %.1f (medians of%s and%s): %.2fx\n", d,
                median["new " d], median["old " d], all["new " d], all["old " d],
                median["new " d] / median["old " d]
     }' "$log" | sort -t- -k2 -n
