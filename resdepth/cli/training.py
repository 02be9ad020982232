"""`resdepth config`, `train` and `sweep`: the commands that build a config and train it."""


from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from resdepth.cli.common import parse_integers
from resdepth.cli.display import RunDisplay
from resdepth.errors import InvalidChoice
from resdepth.cli.common import (app, console, errors, examples, user_errors, _print_json, _build_config, _prepare_runtime,
                                 dataset_origin, dataset_origin_said)


# ------------------------------------------------------------------------------------- config
@app.command("config", epilog=(
    "Example, a shorter digits run saved, then trained:\n\n"
    "resdepth config --dataset digits --set optim.total_steps=1000 > mine.toml\n\n"
    "resdepth train --experiment mine.toml"))
@user_errors
def show_config(
    experiment: Annotated[Optional[str], typer.Option(metavar="NAME|FILE", help="experiment file name or path (experiments/*.toml)")] = None,
    dataset: Annotated[Optional[str], typer.Option(metavar="NAME", help="cifar10, digits or imagenet; picks its experiment file")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="override any config field: section.key=value")] = None,
) -> None:
    """Print the resolved config as TOML, an experiment file that --experiment reads back; trains nothing."""
    from resdepth.config import config_to_toml

    config = _build_config(experiment, dataset, set_ or [], **{"data.dataset": dataset})
    typer.echo(config_to_toml(config), nl=False)  # plain text: Rich would read [model] as markup



STEPS_HELP = ("total iterations{}; the learning-rate drops move to the same fractions of the run "
              "(the warm-up cap and the intervals stay); --set optim.lr_boundaries_steps=[...] or "
              "optim.total_steps=N is taken as given")


def _config_for_steps(experiment: Optional[str], dataset: Optional[str], overrides: list[str],
                      steps: Optional[int], **fields: Any) -> tuple[Any, Optional[dict[str, Any]]]:
    """The config of `train` and `sweep`, and how `--steps` scaled its schedule (or None).

    `--steps N` runs N iterations with the experiment's learning-rate drops at the same
    fractions of the run (config.scale_schedule), unless `--set` gives the drops or the
    iterations itself: those are taken literally. The scaling is one line on stderr.
    """
    from resdepth.config import parse_override, scale_schedule

    def literal(override: dict[str, Any]) -> bool:
        optim = override.get("optim")
        return isinstance(optim, dict) and bool({"total_steps", "lr_boundaries_steps"} & set(optim))

    if steps is None or any(literal(parse_override(text)) for text in overrides):
        return _build_config(experiment, dataset, overrides, **fields, **{"optim.total_steps": steps}), None
    config = _build_config(experiment, dataset, overrides, **fields)
    scaled = scale_schedule(config, steps)
    return config, scaled


def _say_scaled(scaled: Optional[dict[str, Any]]) -> None:
    """--steps 600: learning-rate drops at 300, 450 (the experiment's 200, 300 of 400, scaled)."""
    if scaled:
        join = lambda values: ", ".join(map(str, values))  # noqa: E731
        errors.print(f"--steps {scaled['total_steps']}: learning-rate drops at "
                     f"{join(scaled['lr_boundaries_steps'])} (the experiment's "
                     f"{join(scaled['from_lr_boundaries_steps'])} of {scaled['from_total_steps']}, "
                     f"scaled)", highlight=False, soft_wrap=True)


def _config_notes(scaled: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """What config.json records of how the run was started: the scaled schedule."""
    return {"lr_boundaries_scaled": scaled} if scaled else None



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
    dataset: Annotated[Optional[str], typer.Option(metavar="NAME", help="cifar10, digits (offline) or imagenet")] = None,
    depth: Annotated[Optional[int], typer.Option(metavar="N", help="weighted layers: 6n+2 for cifar10/digits")] = None,
    plain: Annotated[bool, typer.Option("--plain", help="the plain net: no shortcuts")] = False,
    shortcut: Annotated[Optional[str], typer.Option(metavar="A|B|C", help="shortcut option A, B or C (§3.3)")] = None,
    seed: Annotated[Optional[int], typer.Option(metavar="N", help="fixes initialization, data order and augmentation")] = None,
    out: Annotated[Path, typer.Option(metavar="DIR", help="results folder; the run goes to OUT/<experiment>/<run>")] = Path("results"),
    experiment: Annotated[Optional[str], typer.Option(metavar="NAME|FILE", help="experiment file name or path (experiments/*.toml)")] = None,
    data_dir: Annotated[Optional[str], typer.Option(metavar="DIR", help="TFDS data dir (datasets are downloaded here; default ~/tensorflow_datasets, for digits ~/.cache/resdepth/tensorflow_datasets)")] = None,
    manual_dir: Annotated[Optional[str], typer.Option(metavar="DIR", help="folder holding the ImageNet archives")] = None,
    val_split: Annotated[Optional[bool], typer.Option("--val-split/--no-val-split", help="hold out 10% of training images as the test set")] = None,
    steps: Annotated[Optional[int], typer.Option(metavar="N", help=STEPS_HELP.format(" (the paper: 64000 on CIFAR-10)"))] = None,
    tag: Annotated[Optional[str], typer.Option(metavar="NAME", help="a name suffix keeping a variant's run apart, e.g. lr05")] = None,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="also write the curves as TensorBoard event files in RUN_DIR/tensorboard (run.tensorboard)")] = False,
    set_: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="override any config field: section.key=value")] = None,
) -> None:
    """Train one plain or residual net with the paper's recipe; re-run the command to resume."""
    config, scaled = _config_for_steps(experiment, dataset, set_ or [], steps, **{
        "data.dataset": dataset, "model.depth": depth, "model.residual": False if plain else None,
        "model.shortcut": shortcut.upper() if shortcut else None, "run.seed": seed,
        "data.data_dir": data_dir, "data.manual_dir": manual_dir, "data.val_split": val_split,
        "run.tag": tag, "run.tensorboard": tensorboard or None})
    from resdepth.training.session import train_run
    from resdepth.rundir.directory import RunDirectory

    run_dir = RunDirectory.of(out, config).path

    def starting() -> None:  # the run is checked and free: now TensorFlow and JAX start
        _say_scaled(scaled)
        _prepare_runtime(config.data)

    origin = dataset_origin(experiment, dataset, set_ or [], config.data.dataset)
    # A finished run, a conflict or a run another process holds is told at once, before JAX.
    try:
        with dataset_origin_said(origin), RunDisplay(run_dir.name, run_dir, config.data.dataset) as display:
            summary = train_run(config, run_dir, display, prepare=starting,
                                config_notes=_config_notes(scaled))
    except KeyboardInterrupt:  # before the loop turns Ctrl-C into a flag: TensorFlow's import, say
        console.print(f"{run_dir.name}: interrupted; run the same command to resume", highlight=False)
        raise typer.Exit(130) from None
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
    dataset: Annotated[Optional[str], typer.Option(metavar="NAME", help="cifar10, digits or imagenet")] = None,
    depths: Annotated[Optional[str], typer.Option(metavar="N,N,...", help="comma-separated depths, e.g. 20,56,110")] = None,
    arch: Annotated[Optional[str], typer.Option(metavar="ARCH,...", help="plain,residual (either or both)")] = None,
    seeds: Annotated[Optional[str], typer.Option(metavar="N,N,...", help="comma-separated seeds, e.g. 0,1,2")] = None,
    experiment: Annotated[Optional[str], typer.Option(metavar="NAME|FILE", help="experiment file (experiments/*.toml); names the results folder")] = None,
    out: Annotated[Path, typer.Option(metavar="DIR", help="results folder")] = Path("results"),
    shard_: Annotated[Optional[str], typer.Option("--shard", metavar="I/N|auto", help="I/N: run only part I (0-based) of N disjoint parts; auto: I/N from a SLURM job array or a Kubernetes Indexed Job (auto/N, or RESDEPTH_SHARD_COUNT, gives N)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list the runs, their size and cost; train nothing")] = False,
    json_: Annotated[bool, typer.Option("--json", help="with --dry-run: the runs as JSON on stdout, nothing else")] = False,
    gpu: Annotated[Optional[str], typer.Option(metavar="NAME", help="with --dry-run: estimate at the rates recorded for this GPU (e.g. H200); default: the GPU benchmarks/gpu_check.sh last measured here, else the NVIDIA H200 figures shipped")] = None,
    data_dir: Annotated[Optional[str], typer.Option(metavar="DIR", help="TFDS data dir")] = None,
    steps: Annotated[Optional[int], typer.Option(metavar="N", help=STEPS_HELP.format(" per run"))] = None,
    tag: Annotated[Optional[str], typer.Option(metavar="NAME", help="a name suffix for every run of this sweep (a variant of the experiment)")] = None,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="also write each run's curves as TensorBoard event files in RUN_DIR/tensorboard (run.tensorboard)")] = False,
    pack: Annotated[Optional[bool], typer.Option("--pack/--no-pack", help="train runs of one shape packed into one program, or one at a time (sweep.pack; default auto: packed on TPUs only; sweep.pack_formulation lays a pack out)")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="override any config field: section.key=value")] = None,
) -> None:
    """Train every (architecture, depth, seed) of a grid; skips finished runs, resumes the rest."""
    grid = {"sweep.depths": parse_integers(depths, "--depths") if depths is not None else None,
            "sweep.depths_by_arch": {} if depths is not None else None,
            "sweep.archs": list(dict.fromkeys(a.strip() for a in arch.split(",") if a.strip()))
                           if arch else None,
            "sweep.seeds": parse_integers(seeds, "--seeds") if seeds is not None else None,
            "sweep.seeds_by_depth": {} if seeds is not None else None}
    config, scaled = _config_for_steps(experiment, dataset, set_ or [], steps, **{
        "data.dataset": dataset, "data.data_dir": data_dir, "run.tag": tag,
        "run.tensorboard": tensorboard or None, "sweep.pack": pack, **grid})
    if json_ and not dry_run:
        raise InvalidChoice("--json goes with --dry-run (a sweep's progress is not JSON)")
    if gpu and not dry_run:
        raise InvalidChoice("--gpu goes with --dry-run (it picks the rates of the estimate)")
    from resdepth.training import sweep as sweeping

    plan = sweeping.plan_sweep(config, shard_)
    if plan.shard:
        errors.print(f"{plan.shard}: {len(plan.points)} of {plan.grid_size} runs", highlight=False,
                     soft_wrap=True)
        if not plan.points:
            errors.print(f"[yellow]warning:[/yellow] {plan.shard.split(' from ')[0]} has no runs: the "
                         f"grid has only {plan.grid_size}; use at most {plan.grid_size} parts",
                         highlight=False, soft_wrap=True)
    _say_scaled(scaled)
    origin = dataset_origin(experiment, dataset, set_ or [], config.data.dataset)
    if dry_run:
        _show_dry_run(config, plan.points, out, json_, gpu, origin)
        return
    try:
        with dataset_origin_said(origin):
            outcome = sweeping.sweep(
                plan, out, lambda run_config, run_dir: RunDisplay(run_dir.name, run_dir, run_config.data.dataset),
                on_note=_skipped_note, prepare=lambda: _prepare_runtime(config.data),
                config_notes=_config_notes(scaled))
    except KeyboardInterrupt:  # before the sweep turns Ctrl-C into a flag: TensorFlow's import, say
        console.print(f"{config.name}: interrupted; run the same command to resume", highlight=False)
        raise typer.Exit(130) from None
    if plan.points:
        _show_sweep_table(config.name, outcome.summaries, len(plan.points), outcome.seconds)
    if outcome.interrupted:
        raise typer.Exit(130)


def _skipped_note(message: str) -> None:
    """A run passed over by the sweep (another process holds its lock): one line."""
    console.print(message, highlight=False, soft_wrap=True)


def _show_dry_run(config, points, out: Path, as_json: bool = False, gpu: str | None = None,
                  origin: str | None = None) -> None:
    from resdepth.runtime.backend import computes_on_cpu_without_starting_jax
    from resdepth.training.sweep import (ASSUMED_TFLOPS, dry_run_data, dry_run_rows,
                                         estimate_cpu_minutes, estimate_gpu_hours)

    rows = dry_run_rows(config, points, out)
    total = sum(row["train_pflop"] for row in rows)
    estimate = estimate_gpu_hours(config, rows, gpu)
    cpu = estimate_cpu_minutes(config, rows)
    gpu_hours = estimate["estimated_gpu_hours"]
    data = {**dry_run_data(config), "chosen_because": origin}
    cpu_here = computes_on_cpu_without_starting_jax()
    # In CPU-minutes where the runs will train on this CPU and a measured CPU rate fits them.
    on_cpu = cpu_here and gpu is None and cpu["cpu_estimated_runs"] > 0
    if as_json:
        _print_json({"experiment": config.name, "total_steps": config.optim.total_steps,
                     "lr_boundaries_steps": config.optim.lr_boundaries_steps,
                     "batch_size": config.optim.batch_size,
                     "compute_dtype": config.model.compute_dtype, "runs": rows,
                     "total_train_pflop": total, "assumed_tflops_per_gpu": ASSUMED_TFLOPS,
                     "rates_device": estimate["device"], "estimated_gpu_hours": gpu_hours,
                     "trains_on_cpu": cpu_here, **cpu, "data": data})
        return
    table = Table(title=f"{config.name}: {len(rows)} runs, {config.optim.total_steps} iterations "
                        f"of batch {config.optim.batch_size} each, {config.model.compute_dtype}")
    columns = ("CPU min", "at") if on_cpu else ("GPU h", "at")
    for column in ("run", "params", "multiply-adds/img", "train PFLOP", *columns, "status"):
        table.add_column(column, justify="right" if column != "run" else "left")
    for row in rows:
        time_cells = _cpu_cells(row) if on_cpu else _gpu_cells(row, ASSUMED_TFLOPS)
        table.add_row(row["name"], f"{row['params']:,}", f"{row['multiply_adds'] / 1e6:,.1f}M",
                      _amount(row["train_pflop"]), *time_cells, row["done"] or "to do")
    console.print(table)
    compute = (f"total training compute {_amount(total)} PFLOP (forward + backward = 3 x forward "
               f"multiply-adds x 2)")
    if on_cpu:
        _say_cpu_estimate(config, rows, cpu, compute)
    else:
        _say_gpu_estimate(rows, estimate, gpu, compute, cpu_unrated=cpu_here and gpu is None
                          and f"JAX has no GPU here, and no CPU rate is measured for "
                              f"{config.data.dataset} at batch {config.optim.batch_size} in "
                              f"{config.model.compute_dtype}: CPU time is not estimated")
    _say_data(data)


def _amount(value: float) -> str:
    """Two decimals, or two significant digits below 1, so a small grid is not "0.00"."""
    import math

    if value >= 1 or value <= 0:
        return f"{value:,.2f}"
    return f"{value:.{max(2, 1 - math.floor(math.log10(value)))}f}"


def _minutes(value: float) -> str:
    """'0.25', '3.4', '503'."""
    return _amount(value) if value < 1 else f"{value:,.1f}" if value < 10 else f"{value:,.0f}"


def _span(minutes: float) -> str:
    """' (16.8 hours)', ' (6.6 days)' from two hours up, else ''."""
    if minutes >= 2 * 24 * 60:
        return f" ({minutes / (24 * 60):,.1f} days)"
    return f" ({minutes / 60:.1f} hours)" if minutes >= 120 else ""


def _gpu_cells(row: dict[str, Any], assumed_tflops: float) -> tuple[str, str]:
    rate = row["rate"]
    at = (f"{assumed_tflops:.0f} TFLOP/s assumed" if rate["how"] == "assumed" else
          f"{'~' if rate['how'] == 'interpolated' else ''}{rate['images_per_s']:,.0f} img/s")
    return _amount(row["gpu_hours"]), at


def _cpu_cells(row: dict[str, Any]) -> tuple[str, str]:
    rate = row["cpu_rate"]
    if rate is None:
        return "—", "no CPU rate"
    mark = {"interpolated": "~", "lower bound": ">="}.get(rate["how"], "")
    return _minutes(row["cpu_minutes"]), f"{mark}{rate['images_per_s']:,.0f} img/s"


def _count(runs: int) -> str:
    return f"{runs} run{'s' if runs != 1 else ''}"


def _say_gpu_estimate(rows, estimate, gpu: str | None, compute: str, cpu_unrated=None) -> None:
    console.print(f"{compute}; about {_amount(estimate['estimated_gpu_hours'])} GPU-hours one run "
                  f"at a time.", highlight=False)
    by_detail: dict[str, int] = {}
    for row in rows:
        by_detail[row["rate"]["detail"]] = by_detail.get(row["rate"]["detail"], 0) + 1
    for detail, count in by_detail.items():
        console.print(f"  {_count(count)}: {detail}", highlight=False)
    if gpu and estimate["device"] is None:
        console.print(f"  no rates are recorded for a GPU matching {gpu!r}", highlight=False)
    if cpu_unrated:
        console.print(f"  {cpu_unrated}", highlight=False, soft_wrap=True)
    console.print("Measure your GPU with benchmarks/gpu_check.sh (make bench-gpu): it records its "
                  "rates for --dry-run; --gpu NAME picks a device whose rates are recorded.",
                  highlight=False)


def _say_cpu_estimate(config, rows, cpu: dict[str, Any], compute: str) -> None:
    """A grid this machine trains on its CPU (JAX has no GPU here), in CPU-minutes at the CPU
    rates the project measured, and which runs no measured rate fits."""
    estimated = cpu["cpu_estimated_runs"]
    which = "" if estimated == len(rows) else f" for {estimated} of the {len(rows)} runs"
    minutes = cpu["estimated_cpu_minutes"]
    console.print(f"{compute}; about {_minutes(minutes)} CPU-minutes{_span(minutes)}{which} "
                  f"one run at a time on this machine's CPU (JAX has no GPU here), compiling not "
                  f"counted.", highlight=False, soft_wrap=True)
    by_detail: dict[str, int] = {}
    for row in rows:
        detail = (row["cpu_rate"]["detail"] if row["cpu_rate"] else
                  f"no CPU rate measured for {config.data.dataset} at batch "
                  f"{config.optim.batch_size} in {config.model.compute_dtype}")
        by_detail[detail] = by_detail.get(detail, 0) + 1
    for detail, count in by_detail.items():
        console.print(f"  {_count(count)}: {detail}", highlight=False, soft_wrap=True)
    console.print("The CPU rates are this project's, on 2 cores: another CPU differs "
                  "(python -m benchmarks.train_throughput measures yours). --gpu NAME estimates "
                  "GPU-hours instead.", highlight=False, soft_wrap=True)


def _say_data(data: dict[str, Any]) -> None:
    """data: cifar10 is prepared in ..., or not, and what the first run downloads, and where."""
    if data["prepared"]:
        line = f"data: {data['dataset']} is prepared in {data['folder']}"
    else:
        line = f"data: {data['dataset']} is not prepared in {data['folder']}: {data['first_run']}"
    because = f"; {data['chosen_because']}" if data.get("chosen_because") else ""
    console.print(line + because, highlight=False, soft_wrap=True)


def sweep_title(name: str, summaries: list[dict[str, Any]], planned: int, seconds: float) -> str:
    """'demo: 4 runs: 1 completed, 1 interrupted, 2 not started (12 s)': every run of the sweep
    counted once, by its status (a run passed over as locked: "locked")."""
    import collections

    counts = collections.Counter(summary.get("status", "?") for summary in summaries)
    order = ["completed", "interrupted", "diverged", "failed", "locked"]
    parts = [f"{counts[status]} {status}" for status in sorted(
        counts, key=lambda status: (order.index(status) if status in order else len(order), status))]
    if planned > len(summaries):
        parts.append(f"{planned - len(summaries)} not started")
    runs = f"{planned} run" + ("" if planned == 1 else "s")
    return f"{name}: {runs}: {', '.join(parts)} ({seconds:.0f} s)"


def _show_sweep_table(name: str, summaries: list[dict[str, Any]], planned: int, seconds: float) -> None:
    title = sweep_title(name, summaries, planned, seconds)
    table = Table(title=title, min_width=len(title))  # the title on one line
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
