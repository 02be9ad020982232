"""`resdepth analyze` and `evaluate`: trained runs tested again (Figure 7; ImageNet testing)."""


from pathlib import Path
from typing import Annotated, Optional

import typer

from resdepth.cli.common import (app, console, errors, examples, user_errors, _prepare_runtime)


@app.command(epilog=examples("resdepth analyze results/demo",
                             "resdepth analyze results/demo/plain-56-seed0"))
@user_errors
def analyze(
    run_dirs: Annotated[list[Path], typer.Argument(metavar="RUN_DIR", help="run directories (or experiment folders)")],
    data_dir: Annotated[Optional[str], typer.Option(metavar="DIR", help="TFDS data dir, if not the run's own")] = None,
) -> None:
    """Std of each 3x3 layer's response on the test set (Figure 7), saved in each run."""
    from resdepth.results.reading import run_dirs_in

    targets, _ = run_dirs_in(run_dirs)  # each run once; files among the paths are passed over
    _prepare_runtime()
    from resdepth.evaluate.analyze import analyze_run

    for run_dir in targets:
        result = analyze_run(run_dir, data_dir)
        stds = [layer["std"] for layer in result["layers"]]
        console.print(f"{run_dir.name}: {len(stds)} 3x3 layers, response std "
                      f"{min(stds):.3f}..{max(stds):.3f}, mean {sum(stds) / len(stds):.3f}")


@app.command(epilog=examples("resdepth evaluate results/table2/resnet-50-B-seed0 --mode 10crop",
                             "resdepth evaluate results/table3 --mode multiscale"))
@user_errors
def evaluate(
    run_dirs: Annotated[list[Path], typer.Argument(metavar="RUN_DIR", help="ImageNet run directories, or experiment folders (files among them are passed over)")],
    mode: Annotated[str, typer.Option(metavar="10crop|multiscale", help="10crop (Tables 2, 3) or multiscale (Table 4)")] = "10crop",
    data_dir: Annotated[Optional[str], typer.Option(metavar="DIR", help="TFDS data dir, if not the run's own")] = None,
    manual_dir: Annotated[Optional[str], typer.Option(metavar="DIR", help="folder holding the ImageNet archives")] = None,
    limit: Annotated[Optional[int], typer.Option(metavar="N", help="test on the first N validation images only")] = None,
) -> None:
    """The paper's ImageNet testing of trained runs: 10-crop or fully convolutional multi-scale."""
    from resdepth.results.reading import run_dirs_in

    targets, files = run_dirs_in(run_dirs)  # `results/table3/*` also matches table.md, figures
    if files:
        names = ", ".join(path.name for path in files[:4]) + (", ..." if len(files) > 4 else "")
        errors.print(f"note: {len(files)} file{'s' if len(files) > 1 else ''} passed over, not run "
                     f"folders ({names})", highlight=False, soft_wrap=True)
    _prepare_runtime()
    from resdepth.evaluate.imagenet import evaluate_run

    for run_dir in targets:
        result = evaluate_run(run_dir, mode, data_dir, manual_dir, limit)
        console.print(f"{run_dir.name}: {mode} top-1 {100 * result['top1_error']:.2f}% top-5 "
                      f"{100 * result['top5_error']:.2f}% (centre crop {100 * result['center_top1_error']:.2f}% / "
                      f"{100 * result['center_top5_error']:.2f}%) on {result['count']:,} images")
