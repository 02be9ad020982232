"""`resdepth`: the command line. Each command parses, builds a config, calls the library and
renders with Rich. Heavy imports (JAX, TensorFlow) happen inside commands so `--help` is fast.

A mistake the user can make (a bad depth, a missing dataset, an unwritable folder) is one line
on stderr and exit code 2; a run that diverges exits with 1.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from resdepth.architectures import (DEFAULT_SHORTCUT, InvalidChoice, check_shortcut, family_of,
                                    parse_depths, stage_plan, weighted_layers)

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Plain vs residual nets across depth: He et al., CVPR 2016, on JAX.")
# Without a terminal (CI logs, files), Rich would assume 80 columns and squeeze the tables.
console = Console(width=None if sys.stdout.isatty() else 140)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 140)

ASSUMED_TFLOPS = 20.0  # sustained training throughput per GPU assumed by --dry-run estimates
DEFAULT_EXPERIMENT = {"cifar10": "cifar10", "digits": "digits", "imagenet": "imagenet"}


def user_errors(command: Callable) -> Callable:
    """Turns InvalidChoice (and Ctrl-C outside a run) into one line and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except InvalidChoice as error:
            errors.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _quiet_logs() -> None:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)


# --------------------------------------------------------------------------------------- info
@app.command()
@user_errors
def info(
    dataset: Annotated[str, typer.Option(help="cifar10 (6n+2 nets), digits or imagenet (Table 1)")] = "cifar10",
    depths: Annotated[Optional[str], typer.Option(help="comma-separated depths, e.g. 20,56,110")] = None,
    shortcut: Annotated[Optional[str], typer.Option(help="A (zero-pad), B (project where dims grow), C (project all)")] = None,
) -> None:
    """Depth, weighted layers, parameters and multiply-adds per image, beside the paper's."""
    family = family_of(dataset)
    option = check_shortcut(shortcut or DEFAULT_SHORTCUT[family])
    from resdepth.architectures import CIFAR_PAPER_DEPTHS, IMAGENET_DEPTHS

    chosen = parse_depths(depths) if depths else list(CIFAR_PAPER_DEPTHS if family == "cifar" else IMAGENET_DEPTHS)
    for depth in chosen:
        stage_plan(family, depth)

    from resdepth import paper_figures
    from resdepth.complexity import count_multiply_adds, count_params
    from resdepth.data import IMAGE_SIZE_PIXELS, IN_CHANNELS, NUM_CLASSES
    from resdepth.models import ModelSpec, abstract_model

    channels, size = IN_CHANNELS[dataset], IMAGE_SIZE_PIXELS[dataset]
    table = Table(title=f"{dataset}: residual nets, shortcut option {option}, {size}x{size} input")
    for column in ("depth", "layers", "blocks/stage", "params", "paper params", "multiply-adds", "paper FLOPs"):
        table.add_column(column, justify="right")
    for depth in chosen:
        spec = ModelSpec(family, depth, True, option, NUM_CLASSES[dataset])
        params = count_params(abstract_model(spec, channels))
        macs = count_multiply_adds(spec, size, channels)
        plan = stage_plan(family, depth)
        if family == "cifar":
            paper_params = paper_figures.CIFAR_PARAMS_OPTION_A.get(depth) if option == "A" and dataset == "cifar10" else None
            paper_flops = None
        else:
            paper_params = paper_figures.IMAGENET_PARAMS_OPTION_B.get(depth) if option == "B" else None
            paper_flops = paper_figures.IMAGENET_MULTIPLY_ADDS.get(depth)
        table.add_row(str(depth), str(weighted_layers(plan)), "/".join(map(str, plan.stage_sizes)),
                      f"{params:,}", f"{paper_params:,}" if paper_params else "—",
                      f"{macs / 1e9:.2f}e9" if macs >= 1e8 else f"{macs / 1e6:.1f}e6",
                      f"{paper_flops / 1e9:.1f}e9" if paper_flops else "—")
    console.print(table)


# ------------------------------------------------------------------------------------- config
@app.command("config", epilog=(
    "Example, a shorter digits run saved, then trained:\n\n"
    "resdepth config --dataset digits --set optim.total_steps=1000 > mine.toml\n\n"
    "resdepth train --experiment mine.toml"))
@user_errors
def show_config(
    experiment: Annotated[Optional[str], typer.Option(help="experiment file name or path (experiments/*.toml)")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="cifar10, digits or imagenet; picks its experiment file")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override any config field: section.key=value")] = None,
) -> None:
    """Print the resolved config as TOML, an experiment file that --experiment reads back; trains nothing."""
    from resdepth.config import config_to_toml

    config = _build_config(experiment, dataset, set_ or [], **{"data.dataset": dataset})
    typer.echo(config_to_toml(config), nl=False)  # plain text: Rich would read [model] as markup


# -------------------------------------------------------------------------------------- train
def _build_config(experiment: Optional[str], dataset: Optional[str], overrides: list[str],
                  **fields: Any):
    from resdepth.config import load_config, parse_override

    if dataset is not None:
        family_of(dataset)
    name = experiment or DEFAULT_EXPERIMENT.get(dataset or "cifar10", "cifar10")
    parsed = [parse_override(text) for text in overrides]
    cli = {}
    for path, value in fields.items():
        if value is not None:
            section, key = path.split(".")
            cli.setdefault(section, {})[key] = value
    config = load_config(name, [cli, *parsed] if cli else parsed)
    family = family_of(config.data.dataset)
    config.model.shortcut = check_shortcut(config.model.shortcut)
    stage_plan(family, config.model.depth)
    return config


class RunDisplay:
    """Rich progress bar on a terminal, plain log lines otherwise (CI, files, pipes)."""

    def __init__(self, label: str):
        self.label, self.progress, self.task, self.last_eval = label, None, None, None
        self.last_line_tenth = 0

    def __enter__(self):
        if console.is_terminal:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                                     TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                     console=console)
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def __call__(self, event) -> None:
        data = event.data
        if event.kind == "start":
            resumed = " (resumed)" if data.get("resumed") else ""
            self._line(f"{self.label}: {data['params']:,} parameters, from iteration {event.step}{resumed}")
            if self.progress is not None:
                self.task = self.progress.add_task(self.label, total=event.total_steps,
                                                   completed=event.step, stats="")
        elif event.kind == "train":
            stats = (f"loss {data['train_loss']:.3f} err {100 * data['train_error']:.1f}% "
                     f"lr {data['learning_rate']:.3g} {data['images_per_s']:.0f} img/s")
            if self.last_eval is not None:
                stats += f" test {100 * self.last_eval:.2f}%"
            if self.progress is not None:
                self.progress.update(self.task, completed=event.step, stats=stats)
            elif self._plain_line_due(event):
                self._line(f"{self.label} iter {event.step}/{event.total_steps} {stats}")
        elif event.kind == "eval":
            self.last_eval = data["test_error"]
        elif event.kind == "note":
            self._line(f"{self.label}: {data['message']}")

    def _plain_line_due(self, event) -> bool:
        """Without a terminal, about ten lines per run (every 10% of it) rather than every row."""
        tenth = max(1, event.total_steps // 10)
        due = event.step // tenth > self.last_line_tenth or event.step == event.total_steps
        if due:
            self.last_line_tenth = event.step // tenth
        return due

    def _line(self, text: str) -> None:
        (self.progress.console if self.progress is not None else console).print(text, highlight=False)


def _report(summary: dict[str, Any]) -> None:
    status = summary.get("status")
    if status == "completed":
        console.print(f"{summary['name']}: completed, final test error "
                      f"{100 * summary['final_test_error']:.2f}%, training error "
                      f"{100 * summary['final_train_error']:.2f}% ({summary['wall_s']:.0f} s)", highlight=False)
    elif status == "diverged":
        errors.print(f"{summary['name']}: diverged: {summary['message']}", highlight=False)
    elif status == "interrupted":
        console.print(f"{summary['name']}: {summary['message']}")


@app.command()
@user_errors
def train(
    dataset: Annotated[Optional[str], typer.Option(help="cifar10, digits (offline) or imagenet")] = None,
    depth: Annotated[Optional[int], typer.Option(help="weighted layers: 6n+2 for cifar10/digits")] = None,
    plain: Annotated[bool, typer.Option("--plain", help="the plain net: no shortcuts")] = False,
    shortcut: Annotated[Optional[str], typer.Option(help="shortcut option A, B or C (§3.3)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="fixes initialization, data order and augmentation")] = None,
    out: Annotated[Path, typer.Option(help="results folder; the run goes to OUT/<experiment>/<run>")] = Path("results"),
    experiment: Annotated[Optional[str], typer.Option(help="experiment file name or path (experiments/*.toml)")] = None,
    data_dir: Annotated[Optional[str], typer.Option(help="TFDS data dir (datasets are downloaded here)")] = None,
    manual_dir: Annotated[Optional[str], typer.Option(help="folder holding the ImageNet archives")] = None,
    val_split: Annotated[Optional[bool], typer.Option("--val-split/--no-val-split", help="hold out 10% of training images as the test set")] = None,
    steps: Annotated[Optional[int], typer.Option(help="total iterations (the paper: 64000 on CIFAR-10)")] = None,
    tag: Annotated[Optional[str], typer.Option(help="a name suffix keeping a variant's run apart, e.g. lr05")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override any config field: section.key=value")] = None,
) -> None:
    """Train one plain or residual net with the paper's recipe; re-run the command to resume."""
    config = _build_config(experiment, dataset, set_ or [], **{
        "data.dataset": dataset, "model.depth": depth, "model.residual": False if plain else None,
        "model.shortcut": shortcut.upper() if shortcut else None, "run.seed": seed,
        "data.data_dir": data_dir, "data.manual_dir": manual_dir, "data.val_split": val_split,
        "optim.total_steps": steps, "run.tag": tag})
    from resdepth.run_files import ensure_writable
    from resdepth.sweep import run_dir_for

    run_dir = run_dir_for(out, config)
    ensure_writable(run_dir)
    from resdepth.run_files import check_same_run

    check_same_run(run_dir, config)  # before JAX starts: a conflict is one line, at once
    _quiet_logs()
    from resdepth.train import train_and_evaluate

    with RunDisplay(run_dir.name) as display:
        summary = train_and_evaluate(config, run_dir, display)
    _report(summary)
    if summary["status"] == "diverged":
        raise typer.Exit(1)
    if summary["status"] == "interrupted":
        raise typer.Exit(130)


# -------------------------------------------------------------------------------------- sweep
@app.command()
@user_errors
def sweep(
    dataset: Annotated[Optional[str], typer.Option(help="cifar10, digits or imagenet")] = None,
    depths: Annotated[Optional[str], typer.Option(help="comma-separated depths, e.g. 20,56,110")] = None,
    arch: Annotated[Optional[str], typer.Option(help="plain,residual (either or both)")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="comma-separated seeds, e.g. 0,1,2")] = None,
    experiment: Annotated[Optional[str], typer.Option(help="experiment file (experiments/*.toml); names the results folder")] = None,
    out: Annotated[Path, typer.Option(help="results folder")] = Path("results"),
    shard_: Annotated[Optional[str], typer.Option("--shard", help="I/N: run only part I (0-based) of N disjoint parts")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list the runs, their size and cost; train nothing")] = False,
    data_dir: Annotated[Optional[str], typer.Option(help="TFDS data dir")] = None,
    steps: Annotated[Optional[int], typer.Option(help="total iterations per run")] = None,
    tag: Annotated[Optional[str], typer.Option(help="a name suffix for every run of this sweep (a variant of the experiment)")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override any config field: section.key=value")] = None,
) -> None:
    """Train every (architecture, depth, seed) of a grid; skips finished runs, resumes the rest."""
    overrides = {"data.dataset": dataset, "data.data_dir": data_dir, "optim.total_steps": steps,
                 "run.tag": tag}
    config = _build_config(experiment, dataset, set_ or [], **overrides)
    if depths:
        config.sweep.depths = parse_depths(depths)
        config.sweep.depths_by_arch = {}
    if arch:
        config.sweep.archs = [a.strip() for a in arch.split(",") if a.strip()]
    if seeds:
        config.sweep.seeds = parse_depths(seeds)
        config.sweep.seeds_by_depth = {}
    from resdepth import sweep as sweeping

    points = sweeping.expand_grid(config)
    if shard_:
        points = sweeping.shard(points, *sweeping.parse_shard(shard_))
    if dry_run:
        _show_dry_run(config, points, out)
        return
    from resdepth.run_files import ensure_writable

    ensure_writable(out / config.name)
    _quiet_logs()
    from resdepth.train import stop_on_signals

    started = time.time()
    with stop_on_signals() as stop:
        def on_run(point, run_config, run_dir):
            display = RunDisplay(run_dir.name)
            display.__enter__()
            def sink(event):
                display(event)
                if event.kind == "end":
                    display.__exit__(None, None, None)
            return sink
        summaries = sweeping.run_sweep(config, points, out, on_run, stop)
    _show_sweep_table(config.name, summaries, len(points), time.time() - started)
    if any(s.get("status") == "interrupted" for s in summaries):
        raise typer.Exit(130)


def _show_dry_run(config, points, out: Path) -> None:
    from resdepth.sweep import dry_run_rows

    rows = dry_run_rows(config, points, out)
    table = Table(title=f"{config.name}: {len(rows)} runs, {config.optim.total_steps} iterations "
                        f"of batch {config.optim.batch_size} each")
    for column in ("run", "params", "multiply-adds/img", "train PFLOP", "status"):
        table.add_column(column, justify="right" if column != "run" else "left")
    for row in rows:
        table.add_row(row["name"], f"{row['params']:,}", f"{row['multiply_adds'] / 1e6:,.1f}M",
                      f"{row['train_pflop']:,.2f}", row["done"] or "to do")
    console.print(table)
    total = sum(row["train_pflop"] for row in rows)
    console.print(f"total training compute {total:,.2f} PFLOP (forward + backward = 3 x forward "
                  f"multiply-adds x 2). At an assumed sustained {ASSUMED_TFLOPS:.0f} TFLOP/s per GPU "
                  f"(small CIFAR convs use a GPU poorly; `make bench` measures yours) that is about "
                  f"{total * 1e15 / (ASSUMED_TFLOPS * 1e12) / 3600:,.1f} GPU-hours.")


def _show_sweep_table(name: str, summaries: list[dict[str, Any]], planned: int, seconds: float) -> None:
    table = Table(title=f"{name}: {len(summaries)} of {planned} runs ({seconds:.0f} s)")
    for column in ("run", "status", "train error", "test error", "params"):
        table.add_column(column, justify="left" if column in ("run", "status") else "right")
    for summary in summaries:
        def pct(key):
            value = summary.get(key)
            return "—" if value is None else f"{100 * value:.2f}%"
        table.add_row(summary.get("name", "?"), summary.get("status", "?"),
                      pct("final_train_error"), pct("final_test_error"),
                      f"{summary['params']:,}" if summary.get("params") else "—")
    console.print(table)


# ------------------------------------------------------------------- plot, table, analyze
@app.command()
@user_errors
def plot(folder: Annotated[Path, typer.Argument(help="an experiment folder, or a folder of them")]) -> None:
    """Figure 6, the degradation plot, Figure 7 (and Figure 4 for ImageNet) from saved runs."""
    from resdepth.plots import plot_folder

    for path in plot_folder(folder):
        console.print(f"wrote {path}")


@app.command()
@user_errors
def table(folder: Annotated[Path, typer.Argument(help="an experiment folder, or a folder of them")]) -> None:
    """The paper's table layout with our errors beside the paper's; also writes table.md."""
    from resdepth.tables import folder_tables, write_table

    for result in folder_tables(folder):
        rich_table = Table(title=result.title)
        for column in result.columns:
            rich_table.add_column(column)
        for row in result.rows:
            rich_table.add_row(*(row.get(column, "") for column in result.columns))
        console.print(rich_table)
        for note in result.notes:
            console.print(note, style="dim")
    console.print(f"wrote {write_table(folder)}")


@app.command()
@user_errors
def analyze(
    run_dirs: Annotated[list[Path], typer.Argument(help="run directories (or experiment folders)")],
    data_dir: Annotated[Optional[str], typer.Option(help="TFDS data dir, if not the run's own")] = None,
) -> None:
    """Std of each 3x3 layer's response on the test set (Figure 7), saved in each run."""
    from resdepth.results import find_run_dirs

    targets = []
    for path in run_dirs:
        if not path.exists():
            raise InvalidChoice(f"no such folder: {path}")
        targets.extend([path] if (path / "config.json").exists() else find_run_dirs(path))
    if not targets:
        raise InvalidChoice("no run directories found (a run directory holds config.json)")
    _quiet_logs()
    from resdepth.analyze import analyze_run

    for run_dir in targets:
        result = analyze_run(run_dir, data_dir)
        stds = [layer["std"] for layer in result["layers"]]
        console.print(f"{run_dir.name}: {len(stds)} 3x3 layers, response std "
                      f"{min(stds):.3f}..{max(stds):.3f}, mean {sum(stds) / len(stds):.3f}")


@app.command()
@user_errors
def evaluate(
    run_dirs: Annotated[list[Path], typer.Argument(help="ImageNet run directories")],
    mode: Annotated[str, typer.Option(help="10crop (Tables 2, 3) or multiscale (Table 4)")] = "10crop",
    data_dir: Annotated[Optional[str], typer.Option(help="TFDS data dir, if not the run's own")] = None,
    manual_dir: Annotated[Optional[str], typer.Option(help="folder holding the ImageNet archives")] = None,
    limit: Annotated[Optional[int], typer.Option(help="test on the first N validation images only")] = None,
) -> None:
    """The paper's ImageNet testing of trained runs: 10-crop or fully convolutional multi-scale."""
    _quiet_logs()
    from resdepth.imagenet_eval import evaluate_run

    for run_dir in run_dirs:
        if not (run_dir / "config.json").exists():
            raise InvalidChoice(f"{run_dir} is not a run directory (no config.json)")
        result = evaluate_run(run_dir, mode, data_dir, manual_dir, limit)
        console.print(f"{run_dir.name}: {mode} top-1 {100 * result['top1_error']:.2f}% top-5 "
                      f"{100 * result['top5_error']:.2f}% (centre crop {100 * result['center_top1_error']:.2f}% / "
                      f"{100 * result['center_top5_error']:.2f}%) on {result['count']:,} images")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
