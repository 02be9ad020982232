"""What recording the layer signals costs a sweep: `python -m benchmarks.signals_cost`.

Runs the same `resdepth sweep` in fresh processes, two per round, side by side: as it is, and
with the training loop's `_signals` (the one place signals are measured, at iteration 0 and at
every logging row) and `_signals_ahead` (which compiles the measurement while the nets
initialize) replaced by no-ops, which leaves exactly the training of before signals existed.
The order alternates from round to round, so the machine's other load falls on both alike. The
persistent compilation cache is off (RESDEPTH_COMPILATION_CACHE=0): both pay every compile, as
a user's first sweep does. The figure is the ratio of the medians of the wall times, each the
whole command's.

The default is `make demo`'s grid (plain and residual 20 and 56 on the digits) at the default
logging interval of the config (`run.log_every_steps` = 100): signals are measured at
iteration 0 and at every logging row, so `--log-every 10` shows the demo's own setting. The
measurement's cost is one compile per net, about as long as the training step's but made on a
second thread while the net initializes (training/ahead.py), plus one forward and backward pass
per logging row, so its share falls with the run's length: `--steps` lengthens the runs (the
sweep scales the learning-rate drops with them), `--depths` and `--arch` narrow the grid.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NO_SIGNALS = ("from resdepth.training import loop; "
              "loop._Session._signals = lambda self: None; "
              "loop._signals_ahead = lambda *arguments: loop.Ahead(lambda: None); ")
SWEEP = "import sys; from resdepth.cli.app import app; sys.argv[0] = 'resdepth'; app()"


def timed_sweep(signals: bool, arguments: list[str]) -> float:
    """Seconds of one sweep in a fresh process, into a folder of its own."""
    with tempfile.TemporaryDirectory(prefix="resdepth-signals-cost-") as out:
        code = ("" if signals else NO_SIGNALS) + SWEEP
        env = {**os.environ, "RESDEPTH_COMPILATION_CACHE": "0"}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, "sweep", *arguments, "--out", out],
                       check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
        # Both write signals.jsonl's "layers" row at the start; only one measures.
        measured = [path for path in Path(out).glob("*/*/signals.jsonl")
                    if '"type": "signals"' in path.read_text()]
        if signals != bool(measured):
            raise SystemExit(f"signals={signals} but {len(measured)} runs measured signals")
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--experiment", default="demo")
    parser.add_argument("--log-every", type=int, default=100, help="run.log_every_steps")
    parser.add_argument("--steps", type=int, default=0, help="iterations per run (0: the experiment's)")
    parser.add_argument("--depths", default="", help="the sweep's --depths (default: the experiment's)")
    parser.add_argument("--arch", default="", help="the sweep's --arch (default: the experiment's)")
    args = parser.parse_args()
    arguments = ["--experiment", args.experiment, "--set", f"run.log_every_steps={args.log_every}"]
    for option, value in (("--steps", args.steps), ("--depths", args.depths), ("--arch", args.arch)):
        if value:
            arguments += [option, str(value)]
    print(f"sweep {' '.join(arguments)}; compilation cache off; {args.rounds} rounds", flush=True)
    times: dict[bool, list[float]] = {True: [], False: []}
    for round_number in range(args.rounds):
        order = (False, True) if round_number % 2 == 0 else (True, False)
        for signals in order:
            load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
            seconds = timed_sweep(signals, arguments)
            times[signals].append(seconds)
            print(f"round {round_number + 1} {'with' if signals else 'without'} signals: "
                  f"{seconds:.1f} s (load average before: {load})", flush=True)
    with_signals, without = statistics.median(times[True]), statistics.median(times[False])
    print(f"median: {with_signals:.1f} s with signals, {without:.1f} s without: "
          f"{with_signals / without:.3f}x ({(with_signals / without - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
