"""Compile time of one training step against depth: `python -m benchmarks.compile_time`.

Each stage of a ResNet scans its identical blocks, so the compiled program should hardly grow
with depth. This lowers and compiles the project's real train step (forward, backward, SGD
update) for CIFAR ResNet-20, 110 and 1202 and checks the acceptance criterion: compiling
ResNet-1202 takes at most twice as long as ResNet-20. The persistent compilation cache is off,
and a small ResNet-26 is compiled and run first so that XLA's one-off start-up is not charged to
the first depth. Model construction is not timed; the first execution is timed separately.
"""

from __future__ import annotations

import argparse
import sys

import jax

from resdepth.errors import InvalidChoice
from resdepth.dataset_facts import cifar_blocks_per_stage

from benchmarks.train_setup import (check_depths_and_batch, cifar_config, compile_and_run_once,
                                    disable_persistent_cache, machine_lines, prepare)

ACCEPTABLE_RATIO = 2.0  # compile time of the deepest over the shallowest depth, on CPU
WARMUP_DEPTH = 26  # a tiny net that still scans (3 blocks per stage), compiled before timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="20,110,1202", help="CIFAR depths, comma-separated")
    parser.add_argument("--batch", type=int, default=8, help="global batch size")
    parser.add_argument("--images", type=int, default=64, help="random images on the device")
    args = parser.parse_args()
    try:
        depths = check_depths_and_batch(args.depths, args.batch)
    except InvalidChoice as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    disable_persistent_cache()
    for line in machine_lines():
        print(line)
    print(f"residual option A, 10 classes, 32x32x3 input, batch {args.batch}; one train step "
          "(forward, backward, SGD update) per depth")

    warmup = prepare(cifar_config(WARMUP_DEPTH, args.batch), args.images)
    compile_and_run_once(warmup, warmup.indices(1)[0])
    del warmup

    print(f"{'depth':>6}{'blocks/stage':>14}{'trace+lower s':>15}{'compile s':>11}"
          f"{'total s':>9}{'first step s':>14}")
    totals = {}
    for depth in depths:
        bench = prepare(cifar_config(depth, args.batch), args.images)
        timing = compile_and_run_once(bench, bench.indices(1)[0])[1]
        del bench
        totals[depth] = timing.total_s
        print(f"{depth:>6}{cifar_blocks_per_stage(depth):>14}{timing.lower_s:>15.2f}"
              f"{timing.compile_s:>11.2f}{timing.total_s:>9.2f}{timing.first_step_s:>14.2f}",
              flush=True)

    shallow, deep = min(depths), max(depths)
    ratio = totals[deep] / totals[shallow]
    verdict = "PASS" if ratio <= ACCEPTABLE_RATIO else "FAIL"
    print(f"total({deep}) / total({shallow}) = {ratio:.2f} (acceptance: <= {ACCEPTABLE_RATIO:g})")
    if jax.default_backend() != "cpu":
        print(f"{verdict} (informational: the acceptance is measured on CPU)")
        return
    print(verdict)
    if verdict == "FAIL":
        sys.exit(1)


if __name__ == "__main__":
    main()
