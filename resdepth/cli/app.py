"""`resdepth`: the command line. Each command parses, builds a config, calls the library and
renders with Rich. Heavy imports (JAX, TensorFlow) happen inside commands so `--help` is fast.

A mistake the user can make (a bad depth, a missing dataset, an unwritable folder) is one line
on stderr and exit code 2; a run that diverges exits with 1.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from resdepth.models.architectures import (
    DEFAULT_SHORTCUT, check_shortcut, family_of, parse_depths, stage_plan, weighted_layers)
from resdepth.errors import InvalidChoice

def examples(*commands: str) -> str:
    """A --help epilog of real commands, one paragraph each, so neither Click nor Rich
    re-wraps them (keep each under 76 characters, and free of [square brackets])."""
    return "\n\n".join(["Examples:", *commands])


app = typer.Typer(add_completion=False, no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Plain vs residual nets across depth: He et al., CVPR 2016, on JAX.",
                  epilog=examples("resdepth train --dataset digits --depth 14",
                                  "resdepth sweep --experiment demo && resdepth table results/demo"))
# Without a terminal (CI logs, files), Rich would assume 80 columns and squeeze the tables.
console = Console(width=None if sys.stdout.isatty() else 140)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


class _WarningLine(logging.Handler):
    """Shows the library's warnings (a damaged result file, say) as one line on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        from rich.markup import escape

        errors.print(f"[yellow]warning:[/yellow] {escape(record.getMessage())}", highlight=False,
                     soft_wrap=True)


_library_log = logging.getLogger("resdepth")
_library_log.addHandler(_WarningLine(logging.WARNING))
_library_log.propagate = False  # not twice through absl's or anyone's root handler

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


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("resdepth")
        except PackageNotFoundError:  # run from a source tree that was never installed
            from resdepth import __version__ as number
        typer.echo(f"resdepth {number}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="print the version and exit")] = None,
) -> None:
    pass


def _prepare_runtime(data: Any = None) -> None:
    """Before anything imports TensorFlow or compiles: silence TF/TFDS start-up noise, fail at
    once if `data` (a DataConfig) must be downloaded from an unreachable host, and turn on JAX's
    persistent compilation cache (see runtime/quiet.py and runtime/jax_setup.py)."""
    from resdepth.runtime import quiet
    from resdepth.runtime.jax_setup import enable_compilation_cache

    quiet.quiet_logs()
    if data is not None:
        from resdepth.data.datasets import check_download_reachable

        check_download_reachable(data)  # seconds, before TensorFlow's import costs more
    quiet.import_tensorflow_quietly()
    enable_compilation_cache()


# --------------------------------------------------------------------------------------- info
@app.command(epilog=examples("resdepth info --depths 20,56,110,1202",
                             "resdepth info --dataset imagenet --json"))
@user_errors
def info(
    dataset: Annotated[str, typer.Option(help="cifar10 (6n+2 nets), digits or imagenet (Table 1)")] = "cifar10",
    depths: Annotated[Optional[str], typer.Option(help="comma-separated depths, e.g. 20,56,110")] = None,
    shortcut: Annotated[Optional[str], typer.Option(help="A (zero-pad), B (project where dims grow), C (project all)")] = None,
    json_: Annotated[bool, typer.Option("--json", help="print the rows as JSON on stdout, nothing else")] = False,
) -> None:
    """Depth, weighted layers, parameters and multiply-adds per image, beside the paper's."""
    family = family_of(dataset)
    option = check_shortcut(shortcut or DEFAULT_SHORTCUT[family])
    from resdepth.models.architectures import CIFAR_PAPER_DEPTHS, IMAGENET_DEPTHS

    chosen = parse_depths(depths) if depths else list(CIFAR_PAPER_DEPTHS if family == "cifar" else IMAGENET_DEPTHS)
    for depth in chosen:
        stage_plan(family, depth)

    from resdepth.results import paper as paper_figures
    from resdepth.models.complexity import count_multiply_adds, count_params
    from resdepth.data.datasets import IMAGE_SIZE_PIXELS, IN_CHANNELS, NUM_CLASSES
    from resdepth.models.network import ModelSpec, abstract_model

    channels, size = IN_CHANNELS[dataset], IMAGE_SIZE_PIXELS[dataset]
    table = Table(title=f"{dataset}: residual nets, shortcut option {option}, {size}x{size} input")
    for column in ("depth", "layers", "blocks/stage", "params", "paper params", "multiply-adds", "paper FLOPs"):
        table.add_column(column, justify="right")
    rows = []
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
        rows.append({"depth": depth, "layers": weighted_layers(plan), "blocks_per_stage": list(plan.stage_sizes),
                     "params": params, "paper_params": paper_params, "multiply_adds": macs,
                     "paper_multiply_adds": paper_flops})
        table.add_row(str(depth), str(weighted_layers(plan)), "/".join(map(str, plan.stage_sizes)),
                      f"{params:,}", f"{paper_params:,}" if paper_params else "—",
                      f"{macs / 1e9:.2f}e9" if macs >= 1e8 else f"{macs / 1e6:.1f}e6",
                      f"{paper_flops / 1e9:.1f}e9" if paper_flops else "—")
    if json_:
        _print_json({"dataset": dataset, "shortcut": option, "image_size_pixels": size,
                     "in_channels": channels, "rows": rows})
    else:
        console.print(table)


def _print_json(document: Any) -> None:
    """One JSON document on stdout, unstyled (for --json); anything else goes to stderr."""
    import json

    typer.echo(json.dumps(document, indent=2))


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


LONG_ON_CPU = ("cifar10", "imagenet")  # datasets whose runs take hours to days on a CPU


def devices_line() -> str:
    """The backend and its devices, e.g. "gpu: 1 x NVIDIA H100 80GB HBM3" or "cpu: 1 x cpu"."""
    import collections

    import jax

    kinds = collections.Counter(device.device_kind for device in jax.devices())
    text = f"{jax.default_backend()}: " + ", ".join(f"{n} x {kind}" for kind, n in kinds.items())
    return text + (f" in {jax.process_count()} processes" if jax.process_count() > 1 else "")


def already_completed(run_dir: Path) -> Optional[dict[str, Any]]:
    """The saved summary of a finished run (which train_and_evaluate returns untouched), or None."""
    from resdepth.rundir.files import SUMMARY_FILE, read_json

    summary = read_json(run_dir / SUMMARY_FILE)
    return summary if isinstance(summary, dict) and summary.get("status") == "completed" else None


class RunDisplay:
    """Rich progress bar on a terminal, plain log lines otherwise (CI, files, pipes).

    At the start of a run it names the devices and the run directory, warns when CIFAR-10 or
    ImageNet is about to train on a CPU, and says the first iteration waits for compilation.
    The bar's columns have fixed widths so that the iteration count survives an 80-column
    terminal; the statistics get what is left.
    """

    live: Optional["RunDisplay"] = None  # the display whose progress bar is on screen

    def __init__(self, label: str, run_dir: Optional[Path] = None, dataset: Optional[str] = None,
                 out: Optional[Console] = None):
        self.label, self.run_dir, self.dataset = label, run_dir, dataset
        self.console = out or console
        self.progress, self.task, self.last_eval = None, None, None
        self.last_line_tenth = 0

    def __enter__(self):
        return self  # the bar starts with the run: its widths depend on the iteration count

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)
            self.progress = None
        if RunDisplay.live is self:
            RunDisplay.live = None

    def __call__(self, event) -> None:
        data = event.data
        if event.kind == "start":
            self._start(event)
        elif event.kind == "train":
            stats = (f"err {100 * data['train_error']:.1f}% loss {data['train_loss']:.3f} "
                     f"lr {data['learning_rate']:.3g} {data['images_per_s']:.0f} img/s")
            if self.last_eval is not None:
                stats = f"test {100 * self.last_eval:.2f}% " + stats
            if self.progress is not None:
                self.progress.update(self.task, completed=event.step, stats=stats)
            elif self._plain_line_due(event):
                self._line(f"{self.label} iter {event.step}/{event.total_steps} {stats}")
        elif event.kind == "eval":
            self.last_eval = data["test_error"]
        elif event.kind == "note":
            self._line(f"{self.label}: {data['message']}")
        elif event.kind == "end":
            self.__exit__(None, None, None)

    def _start(self, event) -> None:
        devices = devices_line()
        where = f", run directory {self.run_dir}" if self.run_dir is not None else ""
        self._line(f"{self.label}: {devices}{where}")
        if devices.startswith("cpu:") and self.dataset in LONG_ON_CPU:
            errors.print(f"warning: {self.dataset} on a CPU: {event.total_steps:,} iterations take "
                         "hours to days; a GPU needs a CUDA build of jax (make install-gpu)",
                         highlight=False, soft_wrap=True)
        resumed = " (resumed)" if event.data.get("resumed") else ""
        self._line(f"{self.label}: {event.data['params']:,} parameters, from iteration {event.step}{resumed}")
        if event.step < event.total_steps:
            self._line(f"{self.label}: compiling the training step...")
        # One live bar at a time (Rich allows no more): the other seeds of a pack log lines.
        if self.console.is_terminal and RunDisplay.live is None:
            RunDisplay.live = self
            self.progress = self._progress_bar(event.total_steps)
            self.progress.__enter__()
            self.task = self.progress.add_task(self.label, total=event.total_steps,
                                               completed=event.step, stats="compiling...")

    def _progress_bar(self, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        from rich.table import Column

        width = self.console.width
        name_w = min(len(self.label), 20)
        count_w = 2 * len(str(total)) + 1  # "31234/64000"
        bar_w = 10 if width < 100 else 20
        eta_w = 7  # "1:02:03"
        stats_w = max(0, min(64, width - name_w - count_w - bar_w - eta_w - 5))
        return Progress(
            TextColumn("{task.description}", style="bold", markup=False,
                       table_column=Column(width=name_w, no_wrap=True, overflow="ellipsis")),
            MofNCompleteColumn(table_column=Column(width=count_w, no_wrap=True, justify="right")),
            BarColumn(bar_width=bar_w),
            TextColumn("{task.fields[stats]}", markup=False,
                       table_column=Column(width=stats_w, no_wrap=True, overflow="ellipsis")),
            TimeRemainingColumn(table_column=Column(width=eta_w, no_wrap=True)),
            console=self.console)

    def _plain_line_due(self, event) -> bool:
        """Without a terminal, about ten lines per run (every 10% of it) rather than every row."""
        tenth = max(1, event.total_steps // 10)
        due = event.step // tenth > self.last_line_tenth or event.step == event.total_steps
        if due:
            self.last_line_tenth = event.step // tenth
        return due

    def _line(self, text: str) -> None:
        (self.progress.console if self.progress is not None else self.console).print(text, highlight=False)


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


@app.command(epilog=examples("resdepth train --dataset digits --depth 14",
                             "resdepth train --dataset cifar10 --depth 56 --plain --seed 1"))
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
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="also write the curves as TensorBoard event files in RUN_DIR/tensorboard (run.tensorboard)")] = False,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override any config field: section.key=value")] = None,
) -> None:
    """Train one plain or residual net with the paper's recipe; re-run the command to resume."""
    config = _build_config(experiment, dataset, set_ or [], **{
        "data.dataset": dataset, "model.depth": depth, "model.residual": False if plain else None,
        "model.shortcut": shortcut.upper() if shortcut else None, "run.seed": seed,
        "data.data_dir": data_dir, "data.manual_dir": manual_dir, "data.val_split": val_split,
        "optim.total_steps": steps, "run.tag": tag, "run.tensorboard": tensorboard or None})
    from resdepth.rundir.files import ensure_writable
    from resdepth.training.sweep import run_dir_for

    run_dir = run_dir_for(out, config)
    from resdepth.rundir.lock import removed_if_left_empty

    with removed_if_left_empty(run_dir):  # a run that fails before training leaves no folder
        ensure_writable(run_dir)
        from resdepth.rundir.files import check_same_run

        check_same_run(run_dir, config)  # before JAX starts: a conflict is one line, at once
        finished = already_completed(run_dir)
        if finished is not None:  # what train_and_evaluate would return, without starting JAX
            console.print(f"already completed: {run_dir}", highlight=False, soft_wrap=True)
            _report(finished)
            return
        _prepare_runtime(config.data)
        from resdepth.training.sweep import claim_run
        from resdepth.training.tensorboard_log import with_tensorboard
        from resdepth.training.loop import train_and_evaluate

        # One process per run: another holding it is one line naming its host and pid, exit 2.
        with claim_run(run_dir), RunDisplay(run_dir.name, run_dir, config.data.dataset) as display:
            sink = with_tensorboard(display, run_dir, config.run.tensorboard)
            summary = train_and_evaluate(config, run_dir, sink)
    _report(summary)
    if summary["status"] == "diverged":
        raise typer.Exit(1)
    if summary["status"] == "interrupted":
        raise typer.Exit(130)


# -------------------------------------------------------------------------------------- sweep
@app.command(epilog=examples("resdepth sweep --experiment table6 --dry-run",
                             "resdepth sweep --dataset digits --depths 20,56 --seeds 0,1"))
@user_errors
def sweep(
    dataset: Annotated[Optional[str], typer.Option(help="cifar10, digits or imagenet")] = None,
    depths: Annotated[Optional[str], typer.Option(help="comma-separated depths, e.g. 20,56,110")] = None,
    arch: Annotated[Optional[str], typer.Option(help="plain,residual (either or both)")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="comma-separated seeds, e.g. 0,1,2")] = None,
    experiment: Annotated[Optional[str], typer.Option(help="experiment file (experiments/*.toml); names the results folder")] = None,
    out: Annotated[Path, typer.Option(help="results folder")] = Path("results"),
    shard_: Annotated[Optional[str], typer.Option("--shard", help="I/N: run only part I (0-based) of N disjoint parts; auto: I/N from a SLURM job array or a Kubernetes Indexed Job (auto/N, or RESDEPTH_SHARD_COUNT, gives N)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list the runs, their size and cost; train nothing")] = False,
    json_: Annotated[bool, typer.Option("--json", help="with --dry-run: the runs as JSON on stdout, nothing else")] = False,
    data_dir: Annotated[Optional[str], typer.Option(help="TFDS data dir")] = None,
    steps: Annotated[Optional[int], typer.Option(help="total iterations per run")] = None,
    tag: Annotated[Optional[str], typer.Option(help="a name suffix for every run of this sweep (a variant of the experiment)")] = None,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="also write each run's curves as TensorBoard event files in RUN_DIR/tensorboard (run.tensorboard)")] = False,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override any config field: section.key=value")] = None,
) -> None:
    """Train every (architecture, depth, seed) of a grid; skips finished runs, resumes the rest."""
    overrides = {"data.dataset": dataset, "data.data_dir": data_dir, "optim.total_steps": steps,
                 "run.tag": tag, "run.tensorboard": tensorboard or None}
    config = _build_config(experiment, dataset, set_ or [], **overrides)
    if depths:
        config.sweep.depths = parse_depths(depths)
        config.sweep.depths_by_arch = {}
    if arch:
        config.sweep.archs = list(dict.fromkeys(a.strip() for a in arch.split(",") if a.strip()))
    if seeds:
        config.sweep.seeds = parse_depths(seeds)
        config.sweep.seeds_by_depth = {}
    from resdepth.config import validate

    validate(config)  # the grid options above changed the config after it was built
    from resdepth.training import sweep as sweeping

    points = sweeping.expand_grid(config)  # a point named twice is one run
    if shard_:
        grid_size = len(points)
        index, count, found = sweeping.resolve_shard(shard_)
        points = sweeping.shard(points, index, count)
        errors.print(f"{found}: {len(points)} of {grid_size} runs", highlight=False, soft_wrap=True)
        if not points:
            errors.print(f"[yellow]warning:[/yellow] shard {index}/{count} has no runs: the grid has "
                         f"only {grid_size}; use at most {grid_size} parts", highlight=False, soft_wrap=True)
    if json_ and not dry_run:
        raise InvalidChoice("--json goes with --dry-run (a sweep's progress is not JSON)")
    if dry_run:
        _show_dry_run(config, points, out, json_)
        return
    if not points:
        return  # an empty shard (warned above): nothing to train, no folder to make
    from resdepth.rundir.files import ensure_writable
    from resdepth.rundir.lock import removed_if_left_empty

    # A sweep that fails before training (no dataset, say) leaves no empty folder behind.
    with removed_if_left_empty(out / config.name):
        ensure_writable(out / config.name)
        _prepare_runtime(config.data)
        from resdepth.training.loop import stop_on_signals

        started = time.time()
        shown: list[RunDisplay] = []  # the current run's display, closed even if its run crashed

        def on_run(point, run_config, run_dir):
            if already_completed(run_dir) is not None:
                console.print(f"already completed: {run_dir}", highlight=False, soft_wrap=True)
                return lambda event: None
            display = RunDisplay(run_dir.name, run_dir, run_config.data.dataset)
            shown.append(display.__enter__())
            from resdepth.training.tensorboard_log import with_tensorboard

            sink = with_tensorboard(display, run_dir, run_config.run.tensorboard)

            def closing_sink(event):  # packed seeds train together: each display ends with its run
                sink(event)
                if event.kind == "end":
                    display.__exit__(None, None, None)

            return closing_sink

        with stop_on_signals() as stop:
            try:
                summaries = sweeping.run_sweep(config, points, out, on_run, stop, on_note=_skipped_note)
            finally:
                while shown:
                    shown.pop().__exit__(None, None, None)
    _show_sweep_table(config.name, summaries, len(points), time.time() - started)
    if any(s.get("status") == "interrupted" for s in summaries):
        raise typer.Exit(130)


def _skipped_note(message: str) -> None:
    """A run passed over by the sweep (another process holds its lock): one line."""
    console.print(message, highlight=False, soft_wrap=True)


def _show_dry_run(config, points, out: Path, as_json: bool = False) -> None:
    from resdepth.training.sweep import dry_run_rows

    rows = dry_run_rows(config, points, out)
    total = sum(row["train_pflop"] for row in rows)
    gpu_hours = total * 1e15 / (ASSUMED_TFLOPS * 1e12) / 3600
    if as_json:
        _print_json({"experiment": config.name, "total_steps": config.optim.total_steps,
                     "batch_size": config.optim.batch_size, "runs": rows, "total_train_pflop": total,
                     "assumed_tflops_per_gpu": ASSUMED_TFLOPS, "estimated_gpu_hours": gpu_hours})
        return
    table = Table(title=f"{config.name}: {len(rows)} runs, {config.optim.total_steps} iterations "
                        f"of batch {config.optim.batch_size} each")
    for column in ("run", "params", "multiply-adds/img", "train PFLOP", "status"):
        table.add_column(column, justify="right" if column != "run" else "left")
    for row in rows:
        table.add_row(row["name"], f"{row['params']:,}", f"{row['multiply_adds'] / 1e6:,.1f}M",
                      f"{row['train_pflop']:,.2f}", row["done"] or "to do")
    console.print(table)
    console.print(f"total training compute {total:,.2f} PFLOP (forward + backward = 3 x forward "
                  f"multiply-adds x 2). At an assumed sustained {ASSUMED_TFLOPS:.0f} TFLOP/s per GPU "
                  f"(small CIFAR convs use a GPU poorly; `make bench` measures yours) that is about "
                  f"{gpu_hours:,.1f} GPU-hours.")


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
@app.command(epilog=examples("resdepth plot results/demo"))
@user_errors
def plot(folder: Annotated[Path, typer.Argument(help="an experiment folder, or a folder of them")]) -> None:
    """Figure 6, the degradation plot, Figure 7 (and Figure 4 for ImageNet) from saved runs."""
    from resdepth.results.plots import plot_folder

    for path in plot_folder(folder):
        console.print(f"wrote {path}")


@app.command(epilog=examples("resdepth table results/demo",
                             "resdepth table results/demo --json"))
@user_errors
def table(
    folder: Annotated[Path, typer.Argument(help="an experiment folder, or a folder of them")],
    json_: Annotated[bool, typer.Option("--json", help="print the tables as JSON on stdout, nothing else")] = False,
) -> None:
    """The paper's table layout with our errors beside the paper's; also writes table.md."""
    import dataclasses

    from resdepth.results.tables import folder_tables, write_table

    results = folder_tables(folder)
    if json_:
        written = write_table(folder)
        _print_json({"tables": [dataclasses.asdict(result) for result in results], "written": str(written)})
        errors.print(f"wrote {written}", highlight=False, soft_wrap=True)
        return
    for result in results:
        rich_table = Table(title=result.title)
        for column in result.columns:
            rich_table.add_column(column)
        for row in result.rows:
            rich_table.add_row(*(row.get(column, "") for column in result.columns))
        console.print(rich_table)
        for note in result.notes:
            console.print(note, style="dim")
    console.print(f"wrote {write_table(folder)}")


@app.command(epilog=examples("resdepth status results", "watch -n 30 resdepth status results/table6",
                             "resdepth status results --json"))
@user_errors
def status(
    folder: Annotated[Path, typer.Argument(help="a results folder, an experiment folder or a run")],
    json_: Annotated[bool, typer.Option("--json", help="print the rows as JSON on stdout, nothing else")] = False,
) -> None:
    """Every run's status, iterations, latest errors, speed, ETA and lock holder; reads the
    files only, so it is safe while sweeps run (on this machine or others)."""
    from resdepth.results.status import study_status

    rows = study_status(folder)
    if json_:
        _print_json({"folder": str(folder), "runs": [row.to_dict() for row in rows]})
        return
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    rich_table = Table(title=f"{folder}: {len(rows)} runs, " +
                       ", ".join(f"{n} {name}" for name, n in sorted(counts.items())))
    for column in ("run", "status", "iterations", "train err", "test err", "img/s", "ETA", "lock", "message"):
        rich_table.add_column(column, justify="right" if column in ("iterations", "train err", "test err", "img/s", "ETA") else "left")
    for row in rows:
        def pct(value):
            return "—" if value is None else f"{100 * value:.2f}%"
        done = "?" if row.steps_done is None else f"{row.steps_done:,}"
        total = "?" if row.total_steps is None else f"{row.total_steps:,}"
        rich_table.add_row(
            f"{row.experiment}/{row.run}", row.status, f"{done}/{total}", pct(row.train_error),
            pct(row.test_error), "—" if row.images_per_s is None else f"{row.images_per_s:,.0f}",
            _duration(row.eta_s), f"{row.lock_host} pid {row.lock_pid}" if row.lock_host else "",
            row.message)
    console.print(rich_table)


def _duration(seconds: Optional[float]) -> str:
    """1 h 05 min, 4 min 10 s, 12 s; "—" for None."""
    if seconds is None:
        return "—"
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


@app.command(epilog=examples("resdepth report results/demo",
                             "xdg-open results/demo/report.html"))
@user_errors
def report(folder: Annotated[Path, typer.Argument(help="an experiment folder (results/<experiment>), or a folder of them")]) -> None:
    """One self-contained report.html per experiment: tables, figures, run status, config
    differences, code and machine; opens from disk with no server or network."""
    from resdepth.results.report import report_folder

    for path in report_folder(folder):
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)


@app.command(epilog=examples("resdepth analyze results/demo",
                             "resdepth analyze results/demo/plain-56-seed0"))
@user_errors
def analyze(
    run_dirs: Annotated[list[Path], typer.Argument(help="run directories (or experiment folders)")],
    data_dir: Annotated[Optional[str], typer.Option(help="TFDS data dir, if not the run's own")] = None,
) -> None:
    """Std of each 3x3 layer's response on the test set (Figure 7), saved in each run."""
    from resdepth.results.reading import find_run_dirs

    targets = []
    for path in run_dirs:
        if not path.exists():
            raise InvalidChoice(f"no such folder: {path}")
        targets.extend([path] if (path / "config.json").exists() else find_run_dirs(path))
    if not targets:
        raise InvalidChoice("no run directories found (a run directory holds config.json)")
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
    run_dirs: Annotated[list[Path], typer.Argument(help="ImageNet run directories, or experiment folders (files among them are passed over)")],
    mode: Annotated[str, typer.Option(help="10crop (Tables 2, 3) or multiscale (Table 4)")] = "10crop",
    data_dir: Annotated[Optional[str], typer.Option(help="TFDS data dir, if not the run's own")] = None,
    manual_dir: Annotated[Optional[str], typer.Option(help="folder holding the ImageNet archives")] = None,
    limit: Annotated[Optional[int], typer.Option(help="test on the first N validation images only")] = None,
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


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
