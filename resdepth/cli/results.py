"""`resdepth plot`, `table`, `status` and `report`: what the run directories hold, rendered."""


from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from resdepth.cli.common import (app, console, errors, examples, user_errors, _print_json)


# ------------------------------------------------------------------- plot, table, analyze
@app.command(epilog=examples("resdepth plot results/demo"))
@user_errors
def plot(folder: Annotated[Path, typer.Argument(metavar="FOLDER", help="an experiment folder, or a folder of them")]) -> None:
    """Figure 6, the degradation plot, Figure 7 (and Figure 4 for ImageNet) from saved runs."""
    from resdepth.results.plots import plot_folder

    plotted = plot_folder(folder)
    for path in plotted.paths:
        console.print(f"wrote {path}")
    for note in plotted.notes:  # a figure not drawn, and the command that draws it
        errors.print(f"note: {note}", highlight=False, soft_wrap=True)


@app.command(epilog=examples("resdepth table results/demo",
                             "resdepth table results/demo --json"))
@user_errors
def table(
    folder: Annotated[Path, typer.Argument(metavar="FOLDER", help="an experiment folder, or a folder of them")],
    json_: Annotated[bool, typer.Option("--json", help="print the tables as JSON on stdout, nothing else")] = False,
) -> None:
    """The paper's table layout with our errors beside the paper's; also writes table.md."""
    import dataclasses

    from resdepth.results.tables import folder_tables, write_table

    results = folder_tables(folder)
    if json_:
        written = write_table(folder, results)
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
    console.print(f"wrote {write_table(folder, results)}")


@app.command(epilog=examples("resdepth status results", "watch -n 30 resdepth status results/table6",
                             "resdepth status results --json"))
@user_errors
def status(
    folder: Annotated[Path, typer.Argument(metavar="FOLDER", help="a results folder, an experiment folder or a run")],
    json_: Annotated[bool, typer.Option("--json", help="print the rows as JSON on stdout, nothing else")] = False,
) -> None:
    """Every run's status, iterations, latest errors, speed, ETA and lock holder.

    Reads the files only, so it is safe while sweeps run (on this machine or others)."""
    from resdepth.results.status import study_status

    rows = study_status(folder)
    if json_:
        _print_json({"folder": str(folder), "runs": [row.to_dict() for row in rows]})
        return
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    rich_table = Table(title=f"{folder}: {len(rows)} run{'' if len(rows) == 1 else 's'}, " +
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
def report(folder: Annotated[Path, typer.Argument(metavar="FOLDER", help="an experiment folder (results/<experiment>), or a folder of them")]) -> None:
    """One self-contained report.html per experiment, opened from disk with no server.

    It holds the tables, figures, run status, config differences, code and machine, and needs
    no network."""
    from resdepth.results.report import report_folder

    for path in report_folder(folder):
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)
