"""Training images/s of the real train step: `python -m benchmarks.train_throughput`.

For each CIFAR ResNet depth the project's jitted train step (forward, backward, SGD update,
on-device augmentation) is compiled, run once, then timed over `--rounds` rounds of `--steps`
further steps on random uint8 CIFAR-shaped images held on the devices; images/s is taken from
the median round. Compile time is reported apart from step time.

Achieved FLOP/s counts 3 x the forward multiply-adds (forward, plus a backward of about twice
the forward) x 2 FLOPs per multiply-add, with multiply-adds read off the model by
`resdepth.models.complexity.count_multiply_adds`; BatchNorm, ReLU and the update are not counted. On a
known GPU the figure is also given as a fraction of the device's dense peak.

`--compare per-tap,xla` also builds each depth with other convolutions (on CPU, where models use
`resdepth.models.cpu_conv`): `per-tap`, resdepth's previous CPU convolution, and `xla`,
`lax.conv_general_dilated` with JAX's own gradients. The variants of one depth are compiled
first and then timed in alternating rounds, so that load from other processes on a shared
machine falls on all of them alike, and the ratio of their images/s is printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax

from resdepth.errors import InvalidChoice
from resdepth.models.complexity import count_multiply_adds

from benchmarks.train_setup import (CONVOLUTIONS, check_depths_and_batch, cifar_config,
                                    compile_and_run_once, convolutions, disable_persistent_cache,
                                    machine_lines, prepare)

DEFAULT_STEPS = {"cpu": 3}  # timed steps after the first; 2 shared CPU cores are slow
DEFAULT_ACCELERATOR_STEPS = 50
FLOPS_PER_MULTIPLY_ADD = 2
TRAIN_PASSES = 3  # forward + backward (about two forwards) per image

# Dense peak TFLOP/s per GPU from NVIDIA's datasheets (the sparse figures are twice these).
# Matched in order against `device_kind`; None marks a variant whose peak is not tabulated here.
# "tf32" is the tensor-core rate XLA may use for float32 convolutions at default precision
# (model.compute_dtype "tf32"); "float32" is the non-tensor-core rate, the ceiling of
# compute_dtype "float32" (precision HIGHEST).
PEAK_TFLOPS: tuple[tuple[str, dict[str, float] | None], ...] = (
    ("NVL", None),
    ("H100 PCIe", {"bfloat16": 756, "tf32": 378, "float32": 51}),
    ("H100", {"bfloat16": 989, "tf32": 494, "float32": 67}),  # SXM
    ("H200", {"bfloat16": 989, "tf32": 494, "float32": 67}),  # SXM: H100's compute, more memory
)


def device_peak(device_kind: str) -> dict[str, float] | None:
    """Dense peak TFLOP/s of one device by precision, or None when not tabulated."""
    for key, peak in PEAK_TFLOPS:
        if key.lower() in device_kind.lower():
            return peak
    return None


def peak_columns(dtype: str) -> tuple[str, ...]:
    return {"bfloat16": ("bfloat16",), "float32": ("float32",)}.get(dtype, ("tf32", "float32"))


class Run:
    """One depth's train step built with one convolution, compiled and run once."""

    def __init__(self, depth: int, batch: int, dtype: str, conv: str, timed_steps: int,
                 num_images: int):
        with convolutions(conv):
            self.bench = prepare(cifar_config(depth, batch, dtype), num_images)
            self.batches = self.bench.indices(timed_steps + 1)
            self.compiled, self.timing = compile_and_run_once(self.bench, self.batches[0])
        self.conv = conv
        self.round_s: list[float] = []

    def time_round(self) -> None:
        """Runs the timed steps once, to completion, and records their wall time."""
        state = self.bench.state
        start = time.perf_counter()
        for indices in self.batches[1:]:
            state = self.compiled(state, self.bench.data, indices)
        jax.block_until_ready(state)
        self.round_s.append(time.perf_counter() - start)
        self.bench.state = state

    def step_s(self) -> float:
        """Seconds per step in the median round."""
        return statistics.median(self.round_s) / (len(self.batches) - 1)


def measure(depth: int, batch: int, dtype: str, convs: list[str], timed_steps: int,
            rounds: int, num_images: int) -> list[Run]:
    """Compiles the step once per convolution, then times them in `rounds` alternating rounds."""
    runs = [Run(depth, batch, dtype, conv, timed_steps, num_images) for conv in convs]
    for _ in range(rounds):
        for run in runs:
            run.time_round()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="20,56,110", help="CIFAR depths, comma-separated")
    parser.add_argument("--batch", type=int, default=128, help="global batch size")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"timed steps per round (default {DEFAULT_STEPS['cpu']} on CPU, "
                             f"{DEFAULT_ACCELERATOR_STEPS} on an accelerator)")
    parser.add_argument("--dtype", choices=("float32", "tf32", "bfloat16"), default="tf32",
                        help="model.compute_dtype (tf32: JAX's default precision; float32: HIGHEST)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="timed rounds of --steps steps, alternating between convolutions "
                             "(default 3 with --compare, else 1)")
    parser.add_argument("--images", type=int, default=1024, help="random images on the device")
    parser.add_argument("--compare", default="",
                        help="on CPU, also time each depth with these convolutions, "
                             "comma-separated: per-tap (resdepth's previous CPU convolution), "
                             "xla (lax.conv_general_dilated's own gradients)")
    args = parser.parse_args()
    try:
        depths = check_depths_and_batch(args.depths, args.batch)
        if args.steps is not None and args.steps < 1:
            raise InvalidChoice(f"--steps must be at least 1, got {args.steps}")
        if args.rounds is not None and args.rounds < 1:
            raise InvalidChoice(f"--rounds must be at least 1, got {args.rounds}")
        others = [name for name in args.compare.split(",") if name]
        for name in others:
            if name not in CONVOLUTIONS or name == "resdepth":
                raise InvalidChoice(f"--compare: unknown convolution {name!r}; choose from "
                                    "per-tap, xla")
    except InvalidChoice as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    disable_persistent_cache()
    backend = jax.default_backend()
    timed_steps = args.steps or DEFAULT_STEPS.get(backend, DEFAULT_ACCELERATOR_STEPS)
    convs = ["resdepth"]
    if others and backend != "cpu":
        print(f"--compare: models on {backend} use lax.conv_general_dilated; comparison skipped")
    elif others:
        convs += others
    rounds = args.rounds or (3 if len(convs) > 1 else 1)
    device_kind = jax.devices()[0].device_kind
    peak = device_peak(device_kind)
    for line in machine_lines():
        print(line)
    print(f"residual option A, batch {args.batch}, {args.dtype}; after the first step, {rounds} "
          f"timed round(s) of {timed_steps} steps, images/s from the median round; FLOP/s = "
          f"{TRAIN_PASSES} x forward multiply-adds x {FLOPS_PER_MULTIPLY_ADD} x images/s")
    if peak is None:
        print(f"peak FLOP/s of {device_kind!r}: unknown")
    else:
        print(f"peak dense TFLOP/s of {device_kind!r}: "
              + ", ".join(f"{name} {peak[name]:g}" for name in peak_columns(args.dtype)))
    header = (f"{'depth':>6}{'conv':>9}{'compile s':>11}{'first step s':>14}{'step ms':>10}"
              f"{'images/s':>10}{'GFLOP/s':>10}")
    if peak is not None:
        header += "".join(f"{'% ' + name:>11}" for name in peak_columns(args.dtype))
    print(header)
    ratios = []
    for depth in depths:
        runs = measure(depth, args.batch, args.dtype, convs, timed_steps, rounds, args.images)
        multiply_adds = count_multiply_adds(runs[0].bench.spec, 32)
        for run in runs:
            images_per_s = args.batch / run.step_s()
            flops = TRAIN_PASSES * multiply_adds * FLOPS_PER_MULTIPLY_ADD * images_per_s
            row = (f"{depth:>6}{run.conv:>9}{run.timing.total_s:>11.2f}"
                   f"{run.timing.first_step_s:>14.2f}{1e3 * run.step_s():>10.1f}"
                   f"{images_per_s:>10.1f}{flops / 1e9:>10.1f}")
            if peak is not None:
                row += "".join(f"{100 * flops / (peak[name] * 1e12):>11.1f}"
                               for name in peak_columns(args.dtype))
            print(row, flush=True)
        for run in runs[1:]:
            per_round = [other / ours for ours, other in zip(runs[0].round_s, run.round_s)]
            ratios.append(f"ResNet-{depth}: resdepth's step makes "
                          f"{run.step_s() / runs[0].step_s():.2f}x the images/s of {run.conv}'s "
                          "(rounds: " + ", ".join(f"{ratio:.2f}" for ratio in per_round) + ")")
    for line in ratios:
        print(line)


if __name__ == "__main__":
    main()
