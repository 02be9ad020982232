"""Do backward signals vanish? The per-layer numbers behind results/vanishing.py's rule:
`python -m benchmarks.signals_study [--train-random OUT] [FOLDER ...]`.

With `--train-random OUT`, trains plain and residual CIFAR nets on random CIFAR-shaped data
(TFDS's mock CIFAR-10: random 32x32x3 images, random labels; the real loader and training loop)
for a few iterations, recording signals.jsonl like every run. Then, for every run under the
folders given (and OUT), prints the backward ratio (smallest over largest per-layer
response_grad_rms) at each recorded iteration, its minimum, and the forward std's range.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path


def train_random(out: Path, depths: list[int], steps: int, batch: int) -> None:
    """Plain and residual nets of each depth on mock CIFAR-10, `steps` iterations, the paper's
    learning rate 0.1 (warm-up 0.01 from depth 110, as §4.2), a signals row every steps // 4."""
    import tensorflow_datasets as tfds

    from resdepth.config import load_config, parse_override
    from resdepth.rundir.directory import RunDirectory
    from resdepth.training.session import train_run

    every = max(1, steps // 4)
    with tfds.testing.mock_data(num_examples=1024):
        for depth in depths:
            for residual in (False, True):
                config = load_config("cifar10", [parse_override(text) for text in (
                    "name='random-cifar'", f"data.data_dir='{out / 'tfds'}'", f"model.depth={depth}",
                    f"model.residual={'true' if residual else 'false'}", f"optim.total_steps={steps}",
                    "optim.lr_boundaries_steps=[]", f"optim.batch_size={batch}",
                    f"run.log_every_steps={every}", f"run.eval_every_steps={steps}",
                    f"run.checkpoint_every_steps={steps}", "run.eval_batch_size=256")])
                run_dir = RunDirectory.of(out, config).path
                summary = train_run(config, run_dir, stop=threading.Event())
                print(f"trained {run_dir.name}: {summary['status']}, {summary['wall_s']:.0f} s", flush=True)


def report(folders: list[Path]) -> None:
    from resdepth.rundir.record import find_run_dirs, read_run

    for folder in folders:
        for run_dir in find_run_dirs(folder):
            record = read_run(run_dir)
            signals = record.signals
            if signals is None or not signals.steps:
                continue
            ratios = [signals.backward_ratio(row) for row in range(len(signals.steps))]
            shown = "  ".join(f"{step}:{ratio:.3g}" if ratio is not None else f"{step}:-"
                              for step, ratio in zip(signals.steps, ratios))
            known = [ratio for ratio in ratios if ratio is not None]
            stds = [value for row in signals.response_std for value in row if value is not None]
            print(f"{record.experiment}/{record.label} seed {record.seed}: backward ratio {shown}  "
                  f"min {min(known):.3g}  forward std {min(stds):.3g}..{max(stds):.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, help="experiment folders to report")
    parser.add_argument("--train-random", type=Path, metavar="OUT",
                        help="first train on random CIFAR-shaped data into OUT")
    parser.add_argument("--depths", default="20,56,110", help="depths for --train-random")
    parser.add_argument("--steps", type=int, default=60, help="iterations for --train-random")
    parser.add_argument("--batch", type=int, default=32, help="batch size for --train-random")
    args = parser.parse_args()
    folders = list(args.folders)
    if args.train_random:
        train_random(args.train_random, [int(d) for d in args.depths.split(",")], args.steps, args.batch)
        folders.append(args.train_random)
    report(folders)


if __name__ == "__main__":
    main()
