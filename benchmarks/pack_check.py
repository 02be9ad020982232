"""Packs on one GPU: S runs of one shape in one program, in each formulation, timed.

For ResNet-20, 56 and 110 at batch 128 (CIFAR-sized random uint8 data held on the device, the
real compiled train step with augmentation), S = 1, 2, 4, 5 and 8 runs trained together in
each formulation of `sweep.pack_formulation` (resdepth/training/packing/):

  vmap      the S states stacked, the pure step `jax.vmap`ped (grouped convolutions inside)
  wide      one net with the runs' channels side by side, block-diagonal dense convolutions
  grouped   the same net with grouped convolutions over the runs' channel blocks
  tuple     S copies of the step in one program (on a GPU, S programs in sequence, fused)
  wide-unguarded   (only when asked for) wide without the guard that keeps a diverged run's
            NaNs out of the others (resdepth/training/packing/net.py `isolate_runs`): what the guard costs

prints total and per-run images/s (S = 1 is the run alone: "S programs in sequence" make its
images/s), and projects experiments/table6.toml's grid (15 runs of 64k iterations) with the
fastest packing measured for each depth against one run at a time.

The cells run most telling first (S = 1 and 5 of every formulation at every depth, then 8,
then 2 and 4), each compiled once and timed in `--rounds` rounds of `--steps` iterations
(images/s of the median round; 3 rounds of 60 by default), until `--budget-s` is spent; the
rest are shown as skipped. Imports neither TensorFlow nor TFDS, nor orbax: only jax, flax, optax and
resdepth's model, config and step modules, so it runs from a bare checkout:
    PYTHONPATH=. python3 -m benchmarks.pack_check                   # on a GPU, about 5 minutes
    JAX_PLATFORMS=cpu PYTHONPATH=. python3 -m benchmarks.pack_check --smoke   # CPU smoke test
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import gc
import json
import statistics
import time

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from resdepth.config import load_config, parse_override
from resdepth.models.network import ModelSpec, build_model
from resdepth.training import step as steps
from resdepth.training.mesh import DATA_AXIS, make_mesh, replicated
from benchmarks.gpu_check import timed_rounds
from benchmarks.train_setup import Unmeasured
from resdepth.choices import PACK_LAYOUTS as FORMULATIONS
from resdepth.training.packing import mixes_architectures
from resdepth.training.packing.net import packed_graphdef
from resdepth.training.packing.states import pack_states
from resdepth.training.packing.steps import make_step
from resdepth.training.sweep import expand_grid

ALONE = "alone"
UNGUARDED = "wide-unguarded"
# The order cells are measured in: (formulation, runs), most telling first.
PRIORITY_RUNS = (5, 8, 2, 4)


@dataclasses.dataclass
class Cell:
    formulation: str  # "alone" (S = 1) or one of FORMULATIONS
    depth: int
    runs: int
    images_per_s: float | None = None  # all runs together, the median round
    compile_s: float | None = None
    note: str = ""
    rounds: list[float] = dataclasses.field(default_factory=list)  # images/s of each round


def _config(depth: int, dtype: str, seed: int, batch: int):
    return load_config("cifar10", [parse_override(text) for text in (
        f"model.depth={depth}", f"model.compute_dtype='{dtype}'", f"run.seed={seed}",
        f"optim.batch_size={batch}")])


def build(formulation: str, depth: int, runs: int, dtype: str, batch: int, per_call: int):
    """(jitted train step, state, on-device data, indices of one call) for `runs` ResNets of
    `depth` laid out by `formulation` ("alone": one run), as `resdepth sweep` builds them."""
    mesh = make_mesh()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4 * batch, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 4 * batch).astype(np.int32)
    data = steps.DeviceDataset(*(jax.device_put(x, replicated(mesh)) for x in (
        images, labels, images.mean(0).astype(np.float32))))
    config = _config(depth, dtype, 0, batch)
    spec = ModelSpec("cifar", depth, True, "A", 10, dtype, False, config.model.bn_group_size)
    graphdef, state = steps.init_state(config, build_model(spec, 0), mesh)
    # One initialization copied to every run: the rate does not depend on the weights' values,
    # and S initializations would cost S compilations.
    states = [state] + [jax.tree.map(lambda x: x.copy(), state) for _ in range(runs - 1)]
    if formulation == ALONE:
        state, train = states[0], Unmeasured.of(steps.make_train_step(config, graphdef, mesh),
                                                mesh)
        indices = rng.integers(0, 4 * batch, (per_call, batch)).astype(np.int32)
    else:
        layout = "wide" if formulation == UNGUARDED else formulation
        state = pack_states(states, mesh, layout)
        packed_net = None
        if layout in ("wide", "grouped"):
            packed_net = packed_graphdef(spec, [True] * runs, layout,
                                         isolate_runs=False if formulation == UNGUARDED else None)
        train = Unmeasured.of(make_step(config, mesh, layout, [graphdef] * runs, packed_net), mesh)
        indices = np.stack([rng.integers(0, 4 * batch, (per_call, batch)) for _ in range(runs)])
        indices = indices.astype(np.int32)
    del states
    sharding = NamedSharding(mesh, PartitionSpec(*[None] * (indices.ndim - 1), DATA_AXIS))
    return train, state, data, jax.device_put(indices, sharding)


def measure(formulation: str, depth: int, runs: int, dtype: str, batch: int, iterations: int,
            per_call: int, rounds: int = 3) -> Cell:
    """Images/s of all runs together: one warm call (the compilation), then `rounds` rounds of
    `iterations` iterations each, the clock read after each round's work is done; the median
    round (one window would take a passing stall for the rate)."""
    train, state, data, indices = build(formulation, depth, runs, dtype, batch, per_call)
    started = time.perf_counter()
    state = jax.block_until_ready(train(state, data, indices))
    compile_s = time.perf_counter() - started
    calls = max(1, iterations // per_call)
    state, rates = timed_rounds(train, state, data, indices, calls, rounds,
                                runs * batch * per_call)
    del state, train
    gc.collect()
    jax.clear_caches()
    return Cell(formulation, depth, runs, statistics.median(rates), compile_s, rounds=rates)


def cell_order(depths: list[int], sizes: list[int], formulations: list[str]) -> list[tuple[str, int, int]]:
    """(formulation, depth, runs) in measuring order: every depth alone, then each size of
    PRIORITY_RUNS (those asked for; others after) in every formulation at every depth; the
    tuple layout, which on a GPU runs its S steps one after another, at its first size only
    until the end."""
    order = [(ALONE, depth, 1) for depth in depths]
    ranked = [s for s in PRIORITY_RUNS if s in sizes] + [s for s in sizes if s not in PRIORITY_RUNS]
    ranked = [s for s in ranked if s >= 2]
    later = []
    for runs in ranked:
        for formulation in formulations:
            cells = [(formulation, depth, runs) for depth in depths]
            (later if formulation == "tuple" and runs != ranked[0] else order).extend(cells)
    return order + later


def table6_runs() -> tuple[dict[tuple[str, int], int], int, int]:
    """experiments/table6.toml's grid: {(arch, depth): runs}, iterations and batch per run."""
    config = load_config("table6")
    runs = collections.Counter((point.arch, point.depth) for point in expand_grid(config))
    return dict(runs), config.optim.total_steps, config.optim.batch_size


def seconds_per_run_image(rates: dict[tuple[str, int, int], float], formulation: str, depth: int,
                          runs: int) -> tuple[float | None, bool]:
    """(the seconds a pack of `runs` of `formulation` at `depth` takes to give each of its runs
    one image, runs / its total images/s; whether it was measured rather than taken linear in
    depth from the depths measured): None when fewer than two depths have it."""
    measured = sorted(d for f, d, s in rates if (f, s) == (formulation, runs))
    if depth in measured:
        return runs / rates[formulation, depth, runs], True
    if len(measured) < 2:
        return None, False
    below, above = [d for d in measured if d < depth], [d for d in measured if d > depth]
    low, high = ((below[-1], above[0]) if below and above
                 else (measured[-2], measured[-1]) if below else (measured[0], measured[1]))
    t_low, t_high = (runs / rates[formulation, d, runs] for d in (low, high))
    return t_low + (t_high - t_low) * (depth - low) / (high - low), False


def pack_plan(count: int, size: int) -> list[int]:
    """`count` runs in packs of at most `size`, as evenly as the sweep's chunks: [size, ..., rest]."""
    return [size] * (count // size) + ([count % size] if count % size else [])


def project(rates: dict[tuple[str, int, int], float], grid: dict[tuple[str, int], int],
            iterations: int, batch: int) -> dict:
    """Hours for `grid` at `rates` (total images/s keyed (formulation, depth, runs); "alone"
    with runs 1): one run at a time, and with the fastest plan for each depth, packs of one
    size in one formulation (the last pack smaller; a pack of one runs alone, and a smaller
    pack takes the time of its own size where measured, else of the full size). Plain
    and residual nets of one depth are taken to run at the residual nets' rate; vmap packs
    one architecture at a time. Returns {"alone_h", "packed_h", "per_depth": {depth: (plan
    text, hours alone, hours packed)}, "extrapolated": [depths]}."""
    images = iterations * batch
    depths = sorted({depth for _, depth in grid})
    per_depth, extrapolated = {}, set()
    alone_total = packed_total = 0.0
    for depth in depths:
        by_arch = {arch: n for (arch, d), n in grid.items() if d == depth}
        alone, exact = seconds_per_run_image(rates, ALONE, depth, 1)
        if alone is None:
            return {"alone_h": None, "packed_h": None, "per_depth": {}, "extrapolated": []}
        if not exact:
            extrapolated.add(depth)
        alone_s = sum(by_arch.values()) * images * alone  # one after another
        best, best_s = "one at a time", alone_s
        sizes = sorted({s for f, _, s in rates if f != ALONE})
        for formulation in sorted({f for f, _, _ in rates if f != ALONE}):
            if formulation == UNGUARDED:
                continue  # not a layout the sweep trains in
            groups = ([sum(by_arch.values())] if mixes_architectures(formulation, "A")
                      else list(by_arch.values()))
            for size in sizes:
                full, _ = seconds_per_run_image(rates, formulation, depth, size)
                if full is None:
                    continue
                total = 0.0
                for group in groups:
                    for pack in pack_plan(group, size):
                        own = seconds_per_run_image(rates, formulation, depth, pack)[0]
                        each = alone if pack == 1 else (own if own is not None else full)
                        total += images * each  # the pack's runs advance together
                if total < best_s:
                    best, best_s = f"{formulation} packs of {size}", total
        per_depth[depth] = (best, alone_s / 3600, best_s / 3600)
        alone_total += alone_s
        packed_total += best_s
    return {"alone_h": alone_total / 3600, "packed_h": packed_total / 3600,
            "per_depth": per_depth, "extrapolated": sorted(extrapolated)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="20,56,110")
    parser.add_argument("--runs", default="1,2,4,5,8", help="pack sizes S")
    parser.add_argument("--formulations", default=",".join(("vmap", "wide", "grouped", "tuple")))
    parser.add_argument("--dtype", default=load_config("cifar10").model.compute_dtype,
                        help="model.compute_dtype (default: the experiments')")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60, help="timed iterations per round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per cell; the median counts")
    parser.add_argument("--steps-per-call", type=int, default=10)
    parser.add_argument("--budget-s", type=float, default=270,
                        help="start no cell after this many seconds")
    parser.add_argument("--json", metavar="PATH", help="also write the cells and the projection")
    parser.add_argument("--smoke", action="store_true",
                        help="CPU smoke test: ResNet-8 and 14 on batch 8, S = 1 and 2, rounds of 1 step")
    args = parser.parse_args()
    if args.smoke:
        args.depths, args.runs, args.batch, args.steps, args.steps_per_call = "8,14", "1,2", 8, 1, 1
    depths = [int(d) for d in args.depths.split(",")]
    sizes = [int(s) for s in args.runs.split(",")]
    formulations = [f for f in args.formulations.split(",") if f]
    unknown = set(formulations) - set(FORMULATIONS) - {UNGUARDED}
    if unknown:
        parser.error(f"unknown formulations {sorted(unknown)}; choose from "
                     f"{(*FORMULATIONS, UNGUARDED)}")
    per_call = max(1, min(args.steps_per_call, args.steps))
    device = jax.devices()[0]
    print(f"device: {len(jax.devices())} x {device.device_kind} ({jax.default_backend()}), "
          f"jax {jax.__version__}, {args.dtype}, batch {args.batch} per run, median of "
          f"{args.rounds} rounds of {args.steps} timed iterations, {per_call} per call, budget "
          f"{args.budget_s:.0f} s", flush=True)
    started = time.perf_counter()
    cells: list[Cell] = []
    for formulation, depth, runs in cell_order(depths, sizes, formulations):
        if time.perf_counter() - started > args.budget_s:
            cells.append(Cell(formulation, depth, runs, note="skipped (time budget)"))
            continue
        try:
            cell = measure(formulation, depth, runs, args.dtype, args.batch, args.steps, per_call,
                           args.rounds)
        except Exception as error:  # an out-of-memory pack, say: noted, the others go on
            cell = Cell(formulation, depth, runs, note=f"failed: {type(error).__name__}: "
                                                         f"{str(error).splitlines()[0][:100]}")
        cells.append(cell)
        rate = "" if cell.images_per_s is None else f": {cell.images_per_s:,.0f} images/s"
        spread = (f" (rounds {min(cell.rounds):,.0f}-{max(cell.rounds):,.0f})"
                  if len(cell.rounds) > 1 else "")
        print(f"  ResNet-{depth} {formulation} x{runs}{rate}{spread} {cell.note}".rstrip(), flush=True)

    alone = {c.depth: c.images_per_s for c in cells if c.formulation == ALONE and c.images_per_s}
    print(f"\n{'net':<12}{'formulation':<12}{'S':>3}{'images/s':>12}{'per run':>10}"
          f"{'x alone':>9}{'compile s':>11}  note")
    for c in sorted(cells, key=lambda c: (c.depth, c.runs > 1, c.formulation, c.runs)):
        rate = "—" if c.images_per_s is None else f"{c.images_per_s:,.0f}"
        each = "—" if c.images_per_s is None else f"{c.images_per_s / c.runs:,.0f}"
        gain = ("—" if c.images_per_s is None or c.depth not in alone
                else f"{c.images_per_s / alone[c.depth]:.2f}")
        compile_s = "—" if c.compile_s is None else f"{c.compile_s:.1f}"
        print(f"{'ResNet-' + str(c.depth):<12}{c.formulation:<12}{c.runs:>3}{rate:>12}{each:>10}"
              f"{gain:>9}{compile_s:>11}  {c.note}".rstrip())

    rates = {(c.formulation, c.depth, c.runs): c.images_per_s for c in cells if c.images_per_s}
    grid, iterations, batch = table6_runs()
    plan = project(rates, grid, iterations, batch)
    runs_total = sum(grid.values())
    if plan["alone_h"] is None:
        print("\nTable 6 grid: not projected (needs two depths measured alone)")
    else:
        basis = (f"ResNet-{'/'.join(map(str, plan['extrapolated']))} taken linear in depth from "
                 f"ResNet-{'/'.join(map(str, sorted(alone)))}" if plan["extrapolated"] else "measured")
        print(f"\nTable 6 grid ({runs_total} runs x {iterations // 1000}k iterations of batch "
              f"{batch}, {args.dtype}; {basis}): {plan['alone_h']:.1f} h one run at a time; "
              f"{plan['packed_h']:.1f} h with the fastest packing measured per depth")
        for depth, (how, hours_alone, hours) in plan["per_depth"].items():
            count = sum(n for (_, d), n in grid.items() if d == depth)
            print(f"  depth {depth:>4}: {count} run{'s' if count > 1 else ''}, {how}: {hours:.2f} h "
                  f"(alone {hours_alone:.2f} h)")
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"device": f"{len(jax.devices())} x {device.device_kind}",
                       "backend": jax.default_backend(), "jax": jax.__version__,
                       "dtype": args.dtype, "batch": args.batch, "steps": args.steps,
                       "rounds": args.rounds,
                       "cells": [dataclasses.asdict(c) for c in cells],
                       "table6": {**plan, "per_depth": {str(d): v for d, v in plan["per_depth"].items()}}},
                      file, indent=1)


if __name__ == "__main__":
    main()
