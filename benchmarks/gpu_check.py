"""One table for a GPU: what the Table 6 grid costs there, measured in minutes.

For ResNet-20/56/110/1202 at batch 128 (CIFAR-sized random uint8 data held on the device, the
real compiled train step with augmentation), in each `--dtypes` compute dtype ("tf32": float32
at JAX's default precision; "float32": full float32, precision HIGHEST; "bfloat16"), trained
alone and, for `--packed-dtypes`, as `--seeds` packed seeds: images/s (all seeds together, the
median of `--rounds` timed rounds of about `--round-s` seconds each after a warm call) and
compile time; the peak device memory of ResNet-1202 with and without `model.remat`; and the
wall time of the Table 6 grid (experiments/table6.toml: 15 runs of 64k iterations, ResNet-110
with 5 seeds) projected from those rates, for each dtype, table6's own marked.

Each cell's images/s is printed the moment it is measured, and `--json PATH` is rewritten
after every cell (every measurement, then the projection: benchmarks/peer_compare.py and
benchmarks/xla_variants.py read it), so a run stopped at its time cap keeps what it measured.
`--order dtype` measures every depth in the first dtype before the second (default: every
dtype of a depth before the next depth). `--unrolled-stages` traces the stages without their
scans (benchmarks/unrolled_stages.py; XLA_FLAGS and this are what xla_variants.py varies).

On a GPU or TPU the rates of the runs alone are recorded for `resdepth sweep --dry-run`
(resdepth/training/rates.py: <resdepth's cache folder>/rates.json; --no-record leaves it).

Imports neither TensorFlow nor TFDS (the GPU images this runs on have neither): only resdepth's
model, config and step modules. `benchmarks/gpu_check.sh` runs it from a checkout.
    JAX_PLATFORMS=cpu benchmarks/gpu_check.sh --smoke     # smoke test: ResNet-8/14, 1 iteration
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime
import os
import gc
import json
import math
import statistics
import time

import jax
import numpy as np

from jax.sharding import NamedSharding, PartitionSpec

from resdepth.training import step as steps
from resdepth.training.mesh import DATA_AXIS, make_mesh, replicated
from resdepth.training.packing import layout as pack_layout
from resdepth.training.packing.states import pack_states
from resdepth.training.packing.steps import make_step
from resdepth.config import load_config, parse_override
from resdepth.models.network import ModelSpec, build_model
from resdepth.training.sweep import expand_grid

from benchmarks.train_setup import Unmeasured
from benchmarks.unrolled_stages import unrolled_stages
from benchmarks.untapped import untapped as untapped_step

BATCH = 128


def table6_grid() -> tuple[dict[int, int], int, str]:
    """experiments/table6.toml's grid as {depth: runs}, its iterations per run and its compute
    dtype: plain 20/32/44/56/110 and ResNet 20/32/44/56/1202 once, ResNet-110 with 5 seeds
    (its 4 extra seeds included): 15 runs of 64k iterations."""
    config = load_config("table6")
    runs = collections.Counter(point.depth for point in expand_grid(config))
    return dict(sorted(runs.items())), config.optim.total_steps, config.model.compute_dtype


TABLE6_RUNS, TABLE6_ITERATIONS, TABLE6_DTYPE = table6_grid()


@dataclasses.dataclass
class Measurement:
    depth: int
    dtype: str
    seeds: int
    images_per_s: float | None = None
    compile_s: float | None = None
    peak_bytes: int | None = None
    note: str = ""
    rounds: list[float] = dataclasses.field(default_factory=list)  # images/s of each timed round
    iterations: int = 0  # timed iterations per round


def _config(depth: int, dtype: str, remat: bool, seed: int):
    return load_config("cifar10", [parse_override(text) for text in (
        f"model.depth={depth}", f"model.compute_dtype='{dtype}'",
        f"model.remat={'true' if remat else 'false'}", f"run.seed={seed}")])


def _peak_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def build(depth: int, dtype: str, seeds: int, per_call: int, remat: bool = False):
    """(jitted train step, state, on-device data, indices of one call) of `seeds` packed seeds
    (1: alone) of ResNet-`depth` at `per_call` iterations per call, as `resdepth train` builds
    them, on 4 x 128 random uint8 CIFAR images held on the device."""
    mesh = make_mesh()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4 * BATCH, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 4 * BATCH).astype(np.int32)
    data = steps.DeviceDataset(*(jax.device_put(x, replicated(mesh)) for x in (
        images, labels, images.mean(0).astype(np.float32))))
    states, graphdef = [], None
    for seed in range(seeds):
        config = _config(depth, dtype, remat, seed)
        spec = ModelSpec("cifar", depth, True, "A", 10, dtype, remat, config.model.bn_group_size)
        graphdef, state = steps.init_state(config, build_model(spec, seed), mesh)
        states.append(state)
    layout = pack_layout("auto", jax.default_backend())
    state = pack_states(states, mesh, layout) if seeds > 1 else states[0]
    del states
    train = Unmeasured.of(make_step(config, mesh, layout, [graphdef] * seeds) if seeds > 1
                          else steps.make_train_step(config, graphdef, mesh), mesh)
    one_call = rng.integers(0, 4 * BATCH, (per_call, BATCH)).astype(np.int32)
    indices = np.stack([one_call] * seeds) if seeds > 1 else one_call
    sharding = NamedSharding(mesh, PartitionSpec(*[None] * (indices.ndim - 1), DATA_AXIS))
    indices = jax.device_put(indices, sharding)
    return train, state, data, indices


def timed_rounds(train, state, data, indices, calls: int, rounds: int, images_per_call: int):
    """(the state after, images/s of each round): `rounds` rounds of `calls` calls each, the
    clock read after the round's work is done (dispatch is asynchronous)."""
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            state = train(state, data, indices)
        jax.block_until_ready(state)
        rates.append(images_per_call * calls / (time.perf_counter() - started))
    return state, rates


def calls_per_round(seconds_per_call: float, round_s: float, most: int = 1000) -> int:
    """Calls in a timed round of about `round_s` seconds (at least 1)."""
    if seconds_per_call <= 0:
        return most
    return max(1, min(most, math.ceil(round_s / seconds_per_call)))


def measure(depth: int, dtype: str, seeds: int, iterations: int | None, per_call: int,
            remat: bool = False, rounds: int = 1, round_s: float = 1.0,
            unrolled: bool = False, untapped: bool = False) -> Measurement:
    """Images/s of `seeds` packed seeds (1: alone): after one warm call (the compilation),
    `rounds` timed rounds of `iterations` iterations each, or where `iterations` is None of
    enough calls to last about `round_s` seconds; the median round. `unrolled`: the stages
    traced without their scans (compile_s then grows with depth); `untapped`: the step without
    the layer signals' taps (benchmarks/untapped.py)."""
    with (unrolled_stages() if unrolled else contextlib.nullcontext(),
          untapped_step() if untapped else contextlib.nullcontext()):
        return _measure(depth, dtype, seeds, iterations, per_call, remat, rounds, round_s)


def _measure(depth: int, dtype: str, seeds: int, iterations: int | None, per_call: int,
             remat: bool, rounds: int, round_s: float) -> Measurement:
    train, state, data, indices = build(depth, dtype, seeds, per_call, remat)
    started = time.perf_counter()
    state = jax.block_until_ready(train(state, data, indices))  # compiles
    compile_s = time.perf_counter() - started
    if iterations is None:
        started = time.perf_counter()
        state = jax.block_until_ready(train(state, data, indices))
        calls = calls_per_round(time.perf_counter() - started, round_s)
    else:
        calls = max(1, iterations // per_call)
    state, rates = timed_rounds(train, state, data, indices, calls, rounds,
                                seeds * BATCH * per_call)
    result = Measurement(depth, dtype, seeds, statistics.median(rates), compile_s, _peak_bytes(),
                         rounds=rates, iterations=calls * per_call)
    del state, train
    gc.collect()
    jax.clear_caches()
    return result


def projected_hours(rates: dict[tuple[int, int], float], packed_seeds: int) -> tuple[float, float]:
    """Hours for Table 6's grid at these rates (images/s keyed (depth, seeds)): every run alone,
    and ResNet-110's 5 seeds packed. Seconds per image are taken linear in depth between (and
    beyond) the depths measured alone."""
    measured = sorted(depth for depth, seeds in rates if seeds == 1)

    def seconds_per_image(depth: int) -> float:
        if depth in measured:
            return 1 / rates[(depth, 1)]
        below = [d for d in measured if d < depth]
        above = [d for d in measured if d > depth]
        low, high = ((below[-1], above[0]) if below and above
                     else (measured[-2], measured[-1]) if below else (measured[0], measured[1]))
        t_low, t_high = 1 / rates[(low, 1)], 1 / rates[(high, 1)]
        return t_low + (t_high - t_low) * (depth - low) / (high - low)

    images = TABLE6_ITERATIONS * BATCH
    alone = sum(runs * images * seconds_per_image(depth) for depth, runs in TABLE6_RUNS.items())
    packed = alone
    if (110, packed_seeds) in rates and packed_seeds == 5:
        packed = alone - 5 * images * seconds_per_image(110) + 5 * images / rates[(110, packed_seeds)]
    return alone / 3600, packed / 3600


def projection_lines(results: list[Measurement], dtypes: list[str], packed_seeds: int
                     ) -> tuple[list[str], dict[str, dict]]:
    """The grid's projected hours per dtype, as printed lines and as data for --json."""
    lines, data = [], {}
    grid = f"{sum(TABLE6_RUNS.values())} runs x {TABLE6_ITERATIONS // 1000}k iterations"
    for dtype in dtypes:
        rates = {(m.depth, m.seeds): m.images_per_s for m in results
                 if m.dtype == dtype and m.images_per_s is not None}
        alone_depths = sorted(d for d, s in rates if s == 1)
        label = f"{dtype}, table6's compute_dtype" if dtype == TABLE6_DTYPE else dtype
        if len(alone_depths) < 2:
            lines.append(f"Table 6 grid ({label}): not projected (needs two depths measured alone)")
            continue
        alone, packed = projected_hours(rates, packed_seeds)
        basis = ("measured" if set(TABLE6_RUNS) - {32, 44} <= set(alone_depths)
                 else f"EXTRAPOLATED from ResNet-{'/'.join(map(str, alone_depths))} only")
        packed_text = (f"{packed:.1f} h with ResNet-110's 5 seeds packed" if (110, 5) in rates
                       else "packed: not measured")
        lines.append(f"Table 6 grid ({label}, {grid}, {basis}): {alone:.1f} h one run at a time; "
                     f"{packed_text}")
        data[dtype] = {"alone_h": alone, "packed_h": packed if (110, 5) in rates else None,
                       "basis": basis}
    return lines, data


def cell_order(depths: list[int], dtypes: list[str], packed_dtypes: set[str], seeds: int,
               order: str = "depth") -> list[tuple[int, str, int]]:
    """(depth, dtype, seeds) in measuring order, so that a spent budget drops the last:
    order "depth", each depth in every dtype before the next depth; "dtype", every depth in
    the first dtype before the next dtype. A packed cell follows its run alone."""
    pairs = ([(depth, dtype) for depth in depths for dtype in dtypes] if order == "depth"
             else [(depth, dtype) for dtype in dtypes for depth in depths])
    return [(depth, dtype, count) for depth, dtype in pairs
            for count in ((1, seeds) if dtype in packed_dtypes else (1,))]


def cell_line(m: Measurement) -> str:
    """One measured cell, printed the moment it is measured."""
    if m.images_per_s is None:
        return f"  ResNet-{m.depth} {m.dtype} x{m.seeds}: {m.note}"
    spread = f" (rounds {min(m.rounds):,.0f}-{max(m.rounds):,.0f})" if len(m.rounds) > 1 else ""
    return (f"  ResNet-{m.depth} {m.dtype} x{m.seeds}: {m.images_per_s:,.0f} images/s{spread}, "
            f"compile {m.compile_s:.1f} s")


def recorded_rows(results: list[Measurement], device_kind: str) -> list[dict]:
    """The runs measured alone, as rows of resdepth/training/rates.py's file."""
    today = datetime.date.today().isoformat()
    return [{"device_kind": device_kind, "depth": m.depth, "compute_dtype": m.dtype, "batch": BATCH,
             "images_per_s": round(m.images_per_s, 1), "jax": jax.__version__, "measured": today,
             "source": "benchmarks/gpu_check.py"}
            for m in results if m.seeds == 1 and m.images_per_s]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="20,56,110,1202")
    parser.add_argument("--dtypes", default="tf32,bfloat16,float32",
                        help="model.compute_dtype values: tf32 (JAX's default precision), "
                             "float32 (precision HIGHEST), bfloat16")
    parser.add_argument("--seeds", type=int, default=5,
                        help="packed seeds (Table 6: 5 for ResNet-110); 1: no packed rows")
    parser.add_argument("--packed-dtypes", default="tf32", help="the dtypes packed seeds are measured in")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed iterations per round (default: enough for --round-s)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds; images/s of the median")
    parser.add_argument("--round-s", type=float, default=1.0, help="seconds per timed round, about")
    parser.add_argument("--steps-per-call", type=int, default=10, help="iterations per compiled call")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                        help="measure the deepest net's peak memory with and without remat first")
    parser.add_argument("--budget-s", type=float, default=330, help="skip what would start after this")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON")
    parser.add_argument("--record", action=argparse.BooleanOptionalAction, default=None,
                        help="record the rates for `resdepth sweep --dry-run` (default: on a GPU or TPU)")
    parser.add_argument("--order", choices=("depth", "dtype"), default="depth",
                        help="depth: every dtype of a depth before the next depth; dtype: every "
                             "depth in the first dtype before the next dtype")
    parser.add_argument("--unrolled-stages", action="store_true",
                        help="trace the stages without their scans (no while loops; compile time "
                             "grows with depth)")
    parser.add_argument("--untapped", action="store_true",
                        help="the step without the layer signals' taps, as before signals "
                             "existed (benchmarks/untapped.py): what their conditionals cost")
    parser.add_argument("--smoke", action="store_true",
                        help="CPU smoke test: ResNet-8 and 14, tf32, 2 packed seeds, one iteration")
    args = parser.parse_args()
    if args.smoke:
        args.depths, args.dtypes, args.seeds, args.steps, args.steps_per_call = "8,14", "tf32", 2, 1, 1
        args.rounds, args.memory, args.budget_s = 1, False, 3600
    depths = [int(d) for d in args.depths.split(",")]
    dtypes = args.dtypes.split(",")
    packed_dtypes = set(args.packed_dtypes.split(",")) if args.seeds > 1 else set()
    per_call = max(1, min(args.steps_per_call, args.steps or args.steps_per_call))
    device = jax.devices()[0]
    timing = (f"rounds of {args.steps} timed iterations" if args.steps
              else f"rounds of ~{args.round_s:g} s")
    xla_flags = os.environ.get("XLA_FLAGS", "")
    print(f"device: {len(jax.devices())} x {device.device_kind} ({jax.default_backend()}), "
          f"jax {jax.__version__}, batch {BATCH}, median of {args.rounds} {timing}, "
          f"{per_call} iterations per call"
          + (", stages unrolled (no scan)" if args.unrolled_stages else "")
          + (", untapped (no layer signals)" if args.untapped else "")
          + (f"; XLA_FLAGS {xla_flags}" if xla_flags else ""), flush=True)
    started = time.perf_counter()
    memory: dict[bool, int | None] = {True: None, False: None}
    deepest = max(depths)
    if args.memory:
        # Memory first: peak_bytes_in_use only grows, so the smaller (remat) program goes first.
        for remat in (True, False):
            measured = measure(deepest, TABLE6_DTYPE, 1, per_call, per_call, remat=remat)
            memory[remat] = measured.peak_bytes
    results: list[Measurement] = []

    def write_json(projection: dict | None = None, lines: list[str] | None = None) -> None:
        if not args.json:
            return
        document = {"device_kind": device.device_kind, "backend": jax.default_backend(),
                    "devices": len(jax.devices()), "jax": jax.__version__, "batch": BATCH,
                    "xla_flags": xla_flags, "unrolled_stages": args.unrolled_stages,
                    "untapped": args.untapped,
                    "rounds": args.rounds, "round_s": args.round_s, "steps": args.steps,
                    "steps_per_call": per_call,
                    "table6_compute_dtype": TABLE6_DTYPE, "table6_runs": TABLE6_RUNS,
                    "measurements": [dataclasses.asdict(m) for m in results],
                    "peak_bytes": {"remat": memory[True], "no_remat": memory[False]},
                    "projection": projection, "projection_lines": lines,
                    "finished": projection is not None}
        partial = f"{args.json}.partial"
        with open(partial, "w") as file:
            json.dump(document, file, indent=1)
        os.replace(partial, args.json)  # a reader never sees half a file

    for depth, dtype, seeds in cell_order(depths, dtypes, packed_dtypes, args.seeds, args.order):
        if time.perf_counter() - started > args.budget_s:
            measured = Measurement(depth, dtype, seeds, note="skipped (time budget)")
        else:
            try:
                measured = measure(depth, dtype, seeds, args.steps, per_call, rounds=args.rounds,
                                   round_s=args.round_s, unrolled=args.unrolled_stages,
                                   untapped=args.untapped)
            except Exception as error:  # out of memory, an XLA flag that breaks a compile: noted
                message = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
                measured = Measurement(depth, dtype, seeds,
                                       note=f"failed: {type(error).__name__}: {message}")
                gc.collect()
                jax.clear_caches()
        results.append(measured)
        print(cell_line(measured), flush=True)
        write_json()

    print(f"\n{'net':<12}{'dtype':<10}{'seeds':>6}{'images/s':>12}{'per seed':>10}{'compile s':>11}  note")
    for m in results:
        rate = "—" if m.images_per_s is None else f"{m.images_per_s:,.0f}"
        each = "—" if m.images_per_s is None else f"{m.images_per_s / m.seeds:,.0f}"
        compile_s = "—" if m.compile_s is None else f"{m.compile_s:.1f}"
        spread = (f"rounds {min(m.rounds):,.0f}-{max(m.rounds):,.0f}" if len(m.rounds) > 1 else "")
        print(f"{'ResNet-' + str(m.depth):<12}{m.dtype:<10}{m.seeds:>6}{rate:>12}{each:>10}"
              f"{compile_s:>11}  {m.note or spread}")

    def gib(value: int | None) -> str:
        return "n/a (no memory statistics on this device)" if value is None else f"{value / 2**30:.2f} GiB"

    if args.memory:
        print(f"\npeak device memory, ResNet-{deepest} {TABLE6_DTYPE} batch {BATCH}: "
              f"{gib(memory[False])} without remat, {gib(memory[True])} with model.remat")
    lines, projection = projection_lines(results, dtypes, args.seeds)
    print(*lines, sep="\n")
    record = args.record if args.record is not None else jax.default_backend() != "cpu"
    if record:
        from resdepth.training.rates import record_measured

        try:
            path = record_measured(recorded_rows(results, device.device_kind))
            print(f"rates recorded in {path} for `resdepth sweep --dry-run`")
        except OSError as error:
            print(f"rates not recorded: {error}")
    write_json(projection, lines)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
