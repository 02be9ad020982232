"""What the layer signals' taps cost an iteration that records none: `python -m benchmarks.tap_cost`.

The training step measures the layer signals itself (training/signals.py), inside `lax.cond`s
that run only on the iterations recording a row; every other iteration still passes through
them. This compiles one net's real step (step.train_iterations, one iteration a call) twice in
one process, tapped and untapped (benchmarks/untapped.py: as before signals existed), prints
each compile's seconds, then times `--iterations` iterations of each in `--rounds` alternating
rounds on the experiment's own data: untapped, tapped with no iteration measuring, and tapped
with every iteration measuring (what a logging row's iteration costs). It prints ms per
iteration and the ratios of the medians (the first round of each is left out: it warms the
caches).

    python -m benchmarks.tap_cost --experiment demo --depth 56 --arch plain
    python -m benchmarks.tap_cost --experiment cifar10 --mock-examples 512 --depth 20 --arch residual

`--mock-examples N` serves the experiment's TFDS dataset from `tfds.testing.mock_data` (random
images of its real shapes, through the real loader): CIFAR-10 offline.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from benchmarks.untapped import untapped
from resdepth.config import load_config, parse_override
from resdepth.models.network import build_model
from resdepth.training import step as steps
from resdepth.training.mesh import make_mesh
from resdepth.training.sources import DeviceResidentSource


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="demo")
    parser.add_argument("--depth", type=int, default=56)
    parser.add_argument("--arch", choices=("plain", "residual"), default="plain")
    parser.add_argument("--iterations", type=int, default=40, help="iterations per round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--mock-examples", type=int, default=0,
                        help="serve the experiment's dataset from tfds.testing.mock_data with "
                             "this many random examples per split (CIFAR-10 offline)")
    args = parser.parse_args()
    if args.mock_examples:
        import tensorflow_datasets as tfds

        from resdepth.data import datasets

        datasets.check_download_reachable = lambda *arguments, **keywords: None
        with tfds.testing.mock_data(num_examples=args.mock_examples):
            measure(args)
    else:
        measure(args)


def measure(args: argparse.Namespace) -> None:
    config = load_config(args.experiment, [
        parse_override(f"model.depth={args.depth}"),
        parse_override(f"model.residual={'true' if args.arch == 'residual' else 'false'}")])
    mesh = make_mesh()
    source = DeviceResidentSource(config, mesh)
    data = source.load()
    model = build_model(steps.model_spec(config, source.num_classes), config.run.seed,
                        source.in_channels)
    graphdef, fresh = steps.init_state(config, model, mesh)
    batches = [source.on_devices(source.batch_indices(config.run.seed, step))
               for step in range(args.iterations)]
    quiet = jnp.bool_(False)
    flags = {"untapped": quiet, "tapped": quiet, "tapped, measuring": jnp.bool_(True)}
    programs, states, compile_s = {}, {}, {}
    for variant in ("untapped", "tapped"):
        program = jax.jit(steps.train_iterations(config, graphdef, mesh), donate_argnums=0)
        states[variant] = jax.tree.map(jnp.copy, fresh)
        started = time.perf_counter()
        if variant == "untapped":
            with untapped():
                programs[variant] = program.lower(states[variant], data, batches[0], quiet).compile()
        else:
            programs[variant] = program.lower(states[variant], data, batches[0], quiet).compile()
        compile_s[variant] = time.perf_counter() - started
    programs["tapped, measuring"] = programs["tapped"]
    states["tapped, measuring"] = jax.tree.map(jnp.copy, fresh)
    print(f"{config.name} {args.arch}-{args.depth}, batch {config.optim.batch_size}: compile "
          + ", ".join(f"{variant} {seconds:.2f} s" for variant, seconds in compile_s.items()),
          flush=True)
    times: dict[str, list[float]] = {variant: [] for variant in programs}
    for round_number in range(args.rounds):
        order = list(programs) if round_number % 2 == 0 else list(programs)[::-1]
        for variant in order:
            state, started = states[variant], time.perf_counter()
            for indices in batches:
                state, _ = programs[variant](state, data, indices, flags[variant])
            jax.block_until_ready(state)
            states[variant] = state
            times[variant].append((time.perf_counter() - started) / len(batches) * 1000)
    medians = {variant: statistics.median(rounds[1:]) for variant, rounds in times.items()}
    for variant, rounds in times.items():
        print(f"{variant}: ms per iteration by round " + " / ".join(f"{ms:.1f}" for ms in rounds)
              + f"; median after the first {medians[variant]:.2f}")
    for variant in ("tapped", "tapped, measuring"):
        print(f"{variant} / untapped: {medians[variant] / medians['untapped']:.3f}")


if __name__ == "__main__":
    main()
