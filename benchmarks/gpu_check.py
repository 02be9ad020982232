"""One table for a GPU: what the Table 6 grid costs there, measured in minutes.

For ResNet-20/56/110/1202 at batch 128 (CIFAR-sized random uint8 data held on the device, the
real compiled train step with augmentation), in float32 and bfloat16, trained alone and as
`--seeds` packed seeds: images/s (all seeds together) and compile time; the peak device memory
of ResNet-1202 with and without `model.remat`; and the wall time of the Table 6 grid (15 runs
of 64k iterations, ResNet-110 with 5 seeds) projected from those rates.

Imports neither TensorFlow nor TFDS (the GPU images this runs on have neither): only resdepth's
model, config and step modules. `benchmarks/gpu_check.sh` runs it from a checkout.
    JAX_PLATFORMS=cpu benchmarks/gpu_check.sh --depths 20,56 --steps 2 --seeds 2   # smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import time

import jax
import numpy as np

from jax.sharding import NamedSharding, PartitionSpec

from resdepth.training import step as steps
from resdepth.training.mesh import DATA_AXIS, make_mesh, replicated
from resdepth.training.packing import pack_states
from resdepth.config import load_config, parse_override
from resdepth.models.network import ModelSpec, build_model

BATCH = 128
TABLE6_ITERATIONS = 64_000
# Table 6's grid: (depth, runs). Plain 20/32/44/56/110 and ResNet 20/32/44/56/110 (5 seeds)/1202.
TABLE6_RUNS = {20: 2, 32: 2, 44: 2, 56: 2, 110: 1 + 5, 1202: 1}


@dataclasses.dataclass
class Measurement:
    depth: int
    dtype: str
    seeds: int
    images_per_s: float | None = None
    compile_s: float | None = None
    peak_bytes: int | None = None
    note: str = ""


def _config(depth: int, dtype: str, remat: bool, seed: int):
    return load_config("cifar10", [parse_override(text) for text in (
        f"model.depth={depth}", f"model.compute_dtype='{dtype}'",
        f"model.remat={'true' if remat else 'false'}", f"run.seed={seed}")])


def _peak_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def measure(depth: int, dtype: str, seeds: int, iterations: int, per_call: int,
            remat: bool = False) -> Measurement:
    """Images/s of `seeds` packed seeds (1: alone), `iterations` timed after one warm call."""
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
    stacked = steps.stacks_seeds(jax.default_backend())
    state = pack_states(states, mesh, stacked) if seeds > 1 else states[0]
    del states
    train = steps.make_train_step(config, graphdef, mesh, packed=seeds > 1, stacked=stacked)
    one_call = rng.integers(0, 4 * BATCH, (per_call, BATCH)).astype(np.int32)
    indices = np.stack([one_call] * seeds) if seeds > 1 else one_call
    sharding = NamedSharding(mesh, PartitionSpec(*[None] * (indices.ndim - 1), DATA_AXIS))
    indices = jax.device_put(indices, sharding)
    started = time.perf_counter()
    state = jax.block_until_ready(train(state, data, indices))  # compiles
    compile_s = time.perf_counter() - started
    calls = max(1, iterations // per_call)
    started = time.perf_counter()
    for _ in range(calls):
        state = train(state, data, indices)
    jax.block_until_ready(state)
    elapsed = time.perf_counter() - started
    result = Measurement(depth, dtype, seeds, seeds * BATCH * calls * per_call / elapsed,
                         compile_s, _peak_bytes())
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="20,56,110,1202")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--seeds", type=int, default=5, help="packed seeds (Table 6: 5 for ResNet-110)")
    parser.add_argument("--steps", type=int, default=40, help="timed iterations per measurement")
    parser.add_argument("--steps-per-call", type=int, default=10, help="iterations per compiled call")
    parser.add_argument("--budget-s", type=float, default=330, help="skip what would start after this")
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    dtypes = args.dtypes.split(",")
    per_call = max(1, min(args.steps_per_call, args.steps))
    device = jax.devices()[0]
    print(f"device: {len(jax.devices())} x {device.device_kind} ({jax.default_backend()}), "
          f"jax {jax.__version__}, batch {BATCH}, {args.steps} timed iterations, "
          f"{per_call} per call", flush=True)
    started = time.perf_counter()
    memory: dict[bool, int | None] = {}
    deepest = max(depths)
    # Memory first: peak_bytes_in_use only grows, so the smaller (remat) program goes first.
    for remat in (True, False):
        measured = measure(deepest, "float32", 1, per_call, per_call, remat=remat)
        memory[remat] = measured.peak_bytes
    results: list[Measurement] = []
    for depth in depths:
        for dtype in dtypes:
            for seeds in (1, args.seeds):
                if time.perf_counter() - started > args.budget_s:
                    results.append(Measurement(depth, dtype, seeds, note="skipped (time budget)"))
                    continue
                results.append(measure(depth, dtype, seeds, args.steps, per_call))
                print(f"  measured ResNet-{depth} {dtype} x{seeds}", flush=True)

    print(f"\n{'net':<12}{'dtype':<10}{'seeds':>6}{'images/s':>12}{'per seed':>10}{'compile s':>11}  note")
    for m in results:
        rate = "—" if m.images_per_s is None else f"{m.images_per_s:,.0f}"
        each = "—" if m.images_per_s is None else f"{m.images_per_s / m.seeds:,.0f}"
        compile_s = "—" if m.compile_s is None else f"{m.compile_s:.1f}"
        print(f"{'ResNet-' + str(m.depth):<12}{m.dtype:<10}{m.seeds:>6}{rate:>12}{each:>10}{compile_s:>11}  {m.note}")

    def gib(value: int | None) -> str:
        return "n/a (no memory statistics on this device)" if value is None else f"{value / 2**30:.2f} GiB"

    print(f"\npeak device memory, ResNet-{deepest} float32 batch {BATCH}: "
          f"{gib(memory[False])} without remat, {gib(memory[True])} with model.remat")
    for dtype in dtypes:
        rates = {(m.depth, m.seeds): m.images_per_s for m in results
                 if m.dtype == dtype and m.images_per_s is not None}
        alone_depths = sorted(d for d, s in rates if s == 1)
        if len(alone_depths) < 2:
            print(f"Table 6 grid ({dtype}): not projected (needs two depths measured alone)")
            continue
        alone, packed = projected_hours(rates, args.seeds)
        basis = ("measured" if set(TABLE6_RUNS) - {32, 44} <= set(alone_depths)
                 else f"EXTRAPOLATED from ResNet-{'/'.join(map(str, alone_depths))} only")
        packed_text = (f"{packed:.1f} h with ResNet-110's 5 seeds packed" if (110, 5) in rates
                       else "packed: needs ResNet-110 x5 measured")
        print(f"Table 6 grid ({dtype}, 15 runs x 64k iterations, {basis}): {alone:.1f} h one run "
              f"at a time; {packed_text}")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
