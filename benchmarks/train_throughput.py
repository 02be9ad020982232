"""Training images/s of the real train step: `python -m benchmarks.train_throughput`.

For each CIFAR ResNet depth the project's jitted train step (forward, backward, SGD update,
on-device augmentation) is compiled, run once, then timed over `--steps` further steps on random
uint8 CIFAR-shaped images held on the devices. Compile time is reported apart from step time.

Achieved FLOP/s counts 3 x the forward multiply-adds (forward, plus a backward of about twice
the forward) x 2 FLOPs per multiply-add, with multiply-adds read off the model by
`resdepth.complexity.count_multiply_adds`; BatchNorm, ReLU and the update are not counted. On a
known GPU the figure is also given as a fraction of the device's dense peak.

`--xla-conv` also times each depth with XLA's own convolution gradient, to measure why CPU models
use `resdepth.cpu_conv` (XLA CPU runs the kernel-gradient conv of a scanned block slowly).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

import jax

from resdepth.architectures import InvalidChoice
from resdepth.complexity import count_multiply_adds

from benchmarks.train_setup import (check_depths_and_batch, cifar_config, compile_and_run_once,
                                    disable_persistent_cache, machine_lines, prepare,
                                    xla_convolutions)

DEFAULT_STEPS = {"cpu": 3}  # timed steps after the first; 2 shared CPU cores are slow
DEFAULT_ACCELERATOR_STEPS = 50
FLOPS_PER_MULTIPLY_ADD = 2
TRAIN_PASSES = 3  # forward + backward (about two forwards) per image

# Dense peak TFLOP/s per GPU from NVIDIA's datasheets (the sparse figures are twice these).
# Matched in order against `device_kind`; None marks a variant whose peak is not tabulated here.
# "tf32" is the tensor-core rate XLA may use for float32 convolutions at default precision;
# "float32" is the non-tensor-core rate.
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
    return ("bfloat16",) if dtype == "bfloat16" else ("tf32", "float32")


def measure(depth: int, batch: int, dtype: str, timed_steps: int, num_images: int) -> dict:
    """Compile time, first-step time and steady images/s of one depth's train step."""
    bench = prepare(cifar_config(depth, batch, dtype), num_images)
    batches = bench.indices(timed_steps + 1)
    compiled, timing = compile_and_run_once(bench, batches[0])
    state = bench.state
    start = time.perf_counter()
    for indices in batches[1:]:
        state = compiled(state, bench.data, indices)
    jax.block_until_ready(state)
    step_s = (time.perf_counter() - start) / timed_steps
    return {"spec": bench.spec, "compile_s": timing.total_s, "first_step_s": timing.first_step_s,
            "step_s": step_s, "images_per_s": batch / step_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="20,56,110", help="CIFAR depths, comma-separated")
    parser.add_argument("--batch", type=int, default=128, help="global batch size")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"timed steps after the first (default {DEFAULT_STEPS['cpu']} on CPU, "
                             f"{DEFAULT_ACCELERATOR_STEPS} on an accelerator)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="model.compute_dtype")
    parser.add_argument("--images", type=int, default=1024, help="random images on the device")
    parser.add_argument("--xla-conv", action="store_true",
                        help="also time each depth with lax.conv_general_dilated's own gradient")
    args = parser.parse_args()
    try:
        depths = check_depths_and_batch(args.depths, args.batch)
        if args.steps is not None and args.steps < 1:
            raise InvalidChoice(f"--steps must be at least 1, got {args.steps}")
    except InvalidChoice as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    disable_persistent_cache()
    backend = jax.default_backend()
    timed_steps = args.steps or DEFAULT_STEPS.get(backend, DEFAULT_ACCELERATOR_STEPS)
    device_kind = jax.devices()[0].device_kind
    peak = device_peak(device_kind)
    for line in machine_lines():
        print(line)
    print(f"residual option A, batch {args.batch}, {args.dtype}, {timed_steps} timed steps after "
          f"the first; FLOP/s = {TRAIN_PASSES} x forward multiply-adds x "
          f"{FLOPS_PER_MULTIPLY_ADD} x images/s")
    if peak is None:
        print(f"peak FLOP/s of {device_kind!r}: unknown")
    else:
        print(f"peak dense TFLOP/s of {device_kind!r}: "
              + ", ".join(f"{name} {peak[name]:g}" for name in peak_columns(args.dtype)))
    convs = ["resdepth"]
    if args.xla_conv:
        if backend == "cpu":
            convs.append("xla")
        else:
            print(f"--xla-conv: models on {backend} already use lax.conv_general_dilated; skipped")

    header = (f"{'depth':>6}{'conv':>9}{'compile s':>11}{'first step s':>14}{'step ms':>10}"
              f"{'images/s':>10}{'GFLOP/s':>10}")
    if peak is not None:
        header += "".join(f"{'% ' + name:>11}" for name in peak_columns(args.dtype))
    print(header)
    step_ms: dict[tuple[int, str], float] = {}
    for depth in depths:
        for conv in convs:
            with xla_convolutions() if conv == "xla" else contextlib.nullcontext():
                result = measure(depth, args.batch, args.dtype, timed_steps, args.images)
            multiply_adds = count_multiply_adds(result["spec"], 32)
            flops = TRAIN_PASSES * multiply_adds * FLOPS_PER_MULTIPLY_ADD * result["images_per_s"]
            step_ms[depth, conv] = 1e3 * result["step_s"]
            row = (f"{depth:>6}{conv:>9}{result['compile_s']:>11.2f}"
                   f"{result['first_step_s']:>14.2f}{1e3 * result['step_s']:>10.1f}"
                   f"{result['images_per_s']:>10.1f}{flops / 1e9:>10.1f}")
            if peak is not None:
                row += "".join(f"{100 * flops / (peak[name] * 1e12):>11.1f}"
                               for name in peak_columns(args.dtype))
            print(row, flush=True)
    if "xla" in convs:
        for depth in depths:
            print(f"ResNet-{depth}: XLA's conv gradient takes "
                  f"{step_ms[depth, 'xla'] / step_ms[depth, 'resdepth']:.1f}x the step time of "
                  "resdepth.cpu_conv's")


if __name__ == "__main__":
    main()
