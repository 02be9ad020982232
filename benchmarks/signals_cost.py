"""What recording the layer signals costs a sweep: `python -m benchmarks.signals_cost`.

Runs the same `resdepth sweep` in fresh processes, two per round: as it is, and without
signals: the step untapped (benchmarks/untapped.py: the net's responses are not tapped and
nothing is measured) and the loop's `_signals` (which writes the rows) a no-op, which leaves
exactly the training step and loop of before signals existed. The order alternates from round
to round, so the machine's other load falls on both alike; with `--side-by-side` the two of a
round run at once, each pinned to a core of its own (swapped from round to round), so that
both see the same moments of that load (on a shared 2-core VM the same sweep run alone varied
by a fifth from round to round). The persistent compilation cache is off
(RESDEPTH_COMPILATION_CACHE=0): both pay every compile, as a user's first sweep does. The
figure is the ratio of the medians of the wall times, each the whole command's. Each sweep also
reports the seconds it spent in the loop's phases, summed over its runs (opening the runs,
initializing the nets, writing the rows, training), and the end their medians: where a
difference comes from.

The default is `make demo`'s grid (plain and residual 20 and 56 on the digits) at the default
logging interval of the config (`run.log_every_steps` = 100); `--log-every 10` is the demo's
own setting. The step measures the signals itself on the iterations that record a row (the
first, each logging row's, the last), inside `lax.cond`s: the cost is what those conditionals
add to every iteration and to the step's compile, and the reductions on the measured
iterations (`benchmarks/tap_cost.py` times one net's iterations alone). `--steps` lengthens the
runs (the sweep scales the learning-rate drops with them), `--depths` and `--arch` narrow the
grid.
`--experiment cifar10 --mock-examples 2560 --steps 300` times the study's own sweep (CIFAR-10's
nets, batch and augmentation, its logging interval) on random images of CIFAR-10's shapes,
shortened: the fixed cost weighs more in it than in the 64,000 iterations of a real run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Training as before signals existed: no taps in the net, no measurement, no rows.
NO_SIGNALS = ("from benchmarks.untapped import untap; untap(); "
              "from resdepth.training import loop; "
              "loop._Session._signals = lambda self, *arguments: None; ")
SWEEP = "import sys; from resdepth.cli.app import app; sys.argv[0] = 'resdepth'; app()"
# Seconds the sweep spends in the loop's phases, summed over its runs, written as JSON to the
# file PHASES_FILE names when the process exits. "training" includes the rows written during it
# (and waits for the iterations dispatched before them); "opening" includes "initializing".
PHASES_FILE = "RESDEPTH_BENCHMARK_PHASES"
PHASES = """
import atexit, functools, json, os, time
from resdepth.training import loop
_phases = {}
def _timed(owner, name, label):
    function = getattr(owner, name)
    @functools.wraps(function)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            _phases[label] = _phases.get(label, 0.0) + time.perf_counter() - start
    setattr(owner, name, timed)
for _owner, _name, _label in (
        (loop, "_open_session", "opening"), (loop, "build_model", "initializing"),
        (loop._Session, "_signals", "signals rows"),
        (loop._Session, "train", "training")):
    _timed(_owner, _name, _label)
""" + f"""
atexit.register(lambda: open(os.environ[{PHASES_FILE!r}], "w").write(json.dumps(_phases)))
"""


# With --mock-examples: the experiment's TFDS dataset served by tfds.testing.mock_data, random
# examples of its real shapes, through the loader users run (CIFAR-10 cannot be downloaded
# here). The context stays entered for the process: a reference keeps the generator behind it
# from being collected, which would undo its patches.
MOCK_DATA = """
import tensorflow_datasets as tfds
from resdepth.data import datasets
datasets.check_download_reachable = lambda *arguments, **keywords: None  # nothing to download
_mock_data = tfds.testing.mock_data(num_examples={examples})
_mock_data.__enter__()
"""


# What each variant runs before the sweep, and whether its runs measure signals.
VARIANTS = {"without signals": (NO_SIGNALS, False), "with signals": ("", True)}


def timed_sweep(variant: str, arguments: list[str], mock_examples: int = 0,
                core: int | None = None) -> tuple[float, dict[str, float]]:
    """(seconds, seconds by phase) of one sweep in a fresh process, into a folder of its own;
    `mock_examples` > 0: on that many mock examples per split (MOCK_DATA); `core`: the process
    pinned to that CPU core."""
    prelude, signals = VARIANTS[variant]
    if mock_examples:
        prelude = MOCK_DATA.format(examples=mock_examples) + prelude
    with tempfile.TemporaryDirectory(prefix="resdepth-signals-cost-") as out:
        code = prelude + PHASES + SWEEP
        phases_file = Path(out) / "phases.json"
        env = {**os.environ, "RESDEPTH_COMPILATION_CACHE": "0", PHASES_FILE: str(phases_file)}
        start = time.perf_counter()
        pin = None if core is None else (lambda: os.sched_setaffinity(0, {core}))
        subprocess.run([sys.executable, "-c", code, "sweep", *arguments, "--out", out],
                       check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       preexec_fn=pin)
        elapsed = time.perf_counter() - start
        phases = json.loads(phases_file.read_text())
        # Every variant writes signals.jsonl's "layers" row at the start; not all measure.
        measured = [path for path in Path(out).glob("*/*/signals.jsonl")
                    if '"type": "signals"' in path.read_text()]
        if signals != bool(measured):
            raise SystemExit(f"{variant}: {len(measured)} runs measured signals")
        return elapsed, phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--experiment", default="demo")
    parser.add_argument("--log-every", type=int, default=100, help="run.log_every_steps")
    parser.add_argument("--steps", type=int, default=0, help="iterations per run (0: the experiment's)")
    parser.add_argument("--depths", default="", help="the sweep's --depths (default: the experiment's)")
    parser.add_argument("--arch", default="", help="the sweep's --arch (default: the experiment's)")
    parser.add_argument("--mock-examples", type=int, default=0,
                        help="serve the experiment's dataset from tfds.testing.mock_data with "
                             "this many random examples per split (CIFAR-10 offline)")
    parser.add_argument("--side-by-side", action="store_true",
                        help="run the two variants of a round at once, each pinned to a core of "
                             "its own (swapped from round to round), so both see the same moments "
                             "of the machine's other load")
    args = parser.parse_args()
    arguments = ["--experiment", args.experiment, "--set", f"run.log_every_steps={args.log_every}"]
    for option, value in (("--steps", args.steps), ("--depths", args.depths), ("--arch", args.arch)):
        if value:
            arguments += [option, str(value)]
    variants = list(VARIANTS)
    data = f"; {args.mock_examples} mock examples per split" if args.mock_examples else ""
    print(f"sweep {' '.join(arguments)}; compilation cache off; {args.rounds} rounds{data}",
          flush=True)
    times: dict[str, list[float]] = {variant: [] for variant in variants}
    phases: dict[str, list[dict[str, float]]] = {variant: [] for variant in variants}
    for round_number in range(args.rounds):
        order = variants if round_number % 2 == 0 else variants[::-1]
        load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
        if args.side_by_side:
            with concurrent.futures.ThreadPoolExecutor(len(order)) as pool:
                futures = [pool.submit(timed_sweep, variant, arguments, args.mock_examples, core)
                           for core, variant in enumerate(order)]
                results = [future.result() for future in futures]
        else:
            results = [timed_sweep(variant, arguments, args.mock_examples) for variant in order]
        for core, (variant, (seconds, parts)) in enumerate(zip(order, results)):
            times[variant].append(seconds)
            phases[variant].append(parts)
            where = f"core {core}, beside the other" if args.side_by_side else "alone"
            print(f"round {round_number + 1} {variant} ({where}): {seconds:.1f} s (load average "
                  f"before: {load}); " + ", ".join(f"{name} {value:.1f} s" for name, value in parts.items()),
                  flush=True)
    without = statistics.median(times[variants[0]])
    for variant in variants:
        median = statistics.median(times[variant])
        print(f"median {variant}: {median:.1f} s, {median / without:.3f}x "
              f"({(median / without - 1) * 100:+.1f}%)")
    names = dict.fromkeys(name for rounds in phases.values() for parts in rounds for name in parts)
    for name in names:
        print(f"  {name}: median " + ", ".join(
            f"{statistics.median(parts.get(name, 0.0) for parts in phases[variant]):.1f} s {variant}"
            for variant in variants))


if __name__ == "__main__":
    main()
