"""The paper's tables filled in from run directories: Table 6 (CIFAR) and Tables 2-4 (ImageNet).

A `Table` holds display-ready text cells keyed by column name, so the CLI (Rich) and table.md
(markdown) show the same thing. Errors are percent with 2 decimals; "a ± b" is the mean and
sample standard deviation (ddof=1) over the completed seeds. Runs that did not complete show
their status ("diverged", "running", ...) in place of errors and are left out of every mean.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from resdepth import paper_figures
from resdepth.results import (RunGroup, RunRecord, Stat, group_runs, load_runs,
                              require_experiments, summarize)
from resdepth.run_files import write_bytes_atomically

MISSING = "—"
TABLE_FILE = "table.md"


@dataclasses.dataclass(frozen=True)
class Table:
    """A titled table: `rows` map each of `columns` to its cell text; `notes` follow it."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[dict[str, str], ...]
    notes: tuple[str, ...] = ()


def format_percent(fraction: float | None) -> str:
    """0.0875 -> "8.75"; None -> "—"."""
    return MISSING if fraction is None else f"{100 * fraction:.2f}"


def format_stat(stat: Stat | None) -> str:
    """"8.75 ± 0.16" (percent) for several values, "8.75" for one, "—" for none."""
    if stat is None:
        return MISSING
    if stat.std is None:
        return format_percent(stat.mean)
    return f"{format_percent(stat.mean)} ± {format_percent(stat.std)}"


def format_params(count: int | None) -> str:
    """Parameters as Table 6 writes them: 269,722 -> "0.27M", 1,727,962 -> "1.7M", 19.4M."""
    if count is None:
        return MISSING
    millions = count / 1e6
    if millions >= 10:
        return f"{millions:.1f}M"
    return f"{float(f'{millions:.2g}'):g}M"  # two significant digits


def format_count(count: int | None) -> str:
    return MISSING if count is None else f"{count:,}"


def _seeds_cell(group: RunGroup) -> str:
    """"2" when every run completed, else e.g. "2 of 3 (1 diverged)"."""
    done = len(group.completed)
    if done == len(group.runs):
        return str(done)
    others: dict[str, int] = {}
    for run in group.runs:
        if not run.completed:
            others[run.status] = others.get(run.status, 0) + 1
    detail = ", ".join(f"{count} {status}" for status, count in others.items())
    return f"{done} of {len(group.runs)} ({detail})"


def _status_text(group: RunGroup) -> str:
    """What stands in for errors when no run of the group completed."""
    return ", ".join(dict.fromkeys(run.status for run in group.runs))


def _group_cell(group: RunGroup, text: Callable[[RunGroup], str]) -> str:
    return text(group) if group.completed else _status_text(group)


def _params(group: RunGroup) -> int | None:
    return next((run.params for run in group.runs if run.params is not None), None)


def _net_name(arch: str) -> str:
    return "plain" if arch == "plain" else "ResNet"


def _table6_paper_cell(arch: str, depth: int, shortcut: str | None) -> str:
    error = paper_figures.table6_test_error(arch, depth) if shortcut in (None, "A") else None
    if error is None:
        return MISSING
    if depth == 110:
        mean, std = paper_figures.TABLE6_RESNET110_MEAN_STD_PERCENT
        return f"{error:.2f} (best of 5; mean {mean:.2f} ± {std:.2f})"
    return f"{error:.2f}"


def _cifar_net_name(arch: str, shortcut: str | None) -> str:
    """Table 6's "ResNet" is option A; another option is named."""
    return _net_name(arch) + (f" {shortcut}" if arch == "residual" and shortcut != "A" else "")


def _paper_params_cell(depth: int, shortcut: str | None) -> str:
    # Option A adds no parameters, so the paper's count holds for plain nets of that depth too.
    if shortcut not in (None, "A"):
        return MISSING
    return paper_figures.TABLE6_PARAM_LABELS.get(depth, MISSING)


def cifar_table(runs: Iterable[RunRecord], title: str = "") -> Table:
    """Table 6's layout, one row per net over seeds, plain nets included, beside the paper.

    Every ResNet row of Table 6 appears, with "—" for ours where that depth was not run. The
    paper's column is Table 6's CIFAR-10 test error for ResNets ("—" for plain nets, which the
    paper only plots); on another data set (digits) it is labelled as CIFAR-10's.
    """
    groups = group_runs(runs)
    datasets = sorted({group.dataset for group in groups})
    on_cifar10 = datasets == ["cifar10"]
    paper_column = ("paper test err. % (Table 6)" if on_cifar10
                    else "paper CIFAR-10 test err. % (Table 6)")
    columns = ("net", "layers", "params", "params (exact)", "seeds", "train err. % (mean)",
               "test err. % (mean ± std)", "test err. % (best)", paper_column, "paper params")
    keyed = [((group.arch, group.shortcut or "", group.depth), {
        "net": _cifar_net_name(group.arch, group.shortcut),
        "layers": str(group.depth),
        "params": format_params(_params(group)),
        "params (exact)": format_count(_params(group)),
        "seeds": _seeds_cell(group),
        "train err. % (mean)": _group_cell(
            group, lambda g: format_percent(_mean(g.stat("final_train_error")))),
        "test err. % (mean ± std)": _group_cell(
            group, lambda g: format_stat(g.stat("final_test_error"))),
        "test err. % (best)": _group_cell(
            group, lambda g: format_percent(_best(g.stat("final_test_error")))),
        paper_column: _table6_paper_cell(group.arch, group.depth, group.shortcut),
        "paper params": _paper_params_cell(group.depth, group.shortcut),
    }) for group in groups]
    run_keys = {key for key, _ in keyed}
    for depth in paper_figures.TABLE6_TEST_ERROR_PERCENT:
        if ("residual", "A", depth) not in run_keys:
            row = dict.fromkeys(columns, MISSING)
            row.update({"net": "ResNet", "layers": str(depth),
                        paper_column: _table6_paper_cell("residual", depth, "A"),
                        "paper params": _paper_params_cell(depth, "A")})
            keyed.append((("residual", "A", depth), row))
    arch_order = {"plain": 0, "residual": 1}
    keyed.sort(key=lambda item: (arch_order.get(item[0][0], 2), item[0][1], item[0][2]))
    notes = ["Errors in %, at the end of training (not the best epoch); mean ± sample std "
             "(ddof=1) over completed seeds; best is the lowest. Table 6 lists ResNets only "
             "(option A); its plain nets appear only in Figure 6."]
    if not on_cifar10:
        notes.append(f"Data set: {', '.join(datasets)}, not CIFAR-10; the paper's CIFAR-10 "
                     "errors are shown for scale only.")
    return Table(title or f"{', '.join(datasets)}: Table 6 layout", columns,
                 tuple(row for _, row in keyed), tuple(notes))


def _mean(stat: Stat | None) -> float | None:
    return None if stat is None else stat.mean


def _best(stat: Stat | None) -> float | None:
    return None if stat is None else stat.best


def _top1_top5(top1: str, top5: str) -> str:
    return MISSING if top1 == MISSING and top5 == MISSING else f"{top1} / {top5}"


def _paper_pair(pair: tuple[float, float | None] | None) -> str:
    if pair is None:
        return MISSING
    top1, top5 = pair
    return _top1_top5(f"{top1:.2f}", MISSING if top5 is None else f"{top5:.2f}")


def _imagenet_errors(group: RunGroup) -> tuple[str, str]:
    """(ours top-1 / top-5, protocol): 10-crop where every completed run has tencrop.json."""
    runs = group.completed
    if all(run.tencrop for run in runs):
        top1 = summarize(run.tencrop.top1 for run in runs)
        top5 = summarize(run.tencrop.top5 for run in runs)
        protocol = "10-crop"
    else:
        top1 = summarize(run.final_test_error for run in runs)
        top5 = summarize(run.final_test_top5_error for run in runs)
        protocol = "single view"
    return _top1_top5(format_stat(top1), format_stat(top5)), protocol


def _multiscale_cell(group: RunGroup) -> str:
    runs = [run for run in group.completed if run.multiscale]
    return _top1_top5(format_stat(summarize(run.multiscale.top1 for run in runs)),
                      format_stat(summarize(run.multiscale.top5 for run in runs)))


def imagenet_table(runs: Iterable[RunRecord], title: str = "") -> Table:
    """Tables 2 and 3 (10-crop) and Table 4 (multi-scale) layout: top-1 / top-5 beside the paper.

    Ours is 10-crop where tencrop.json exists, else the final validation error from
    summary.json (a single view, which the paper does not report).
    """
    columns = ("net", "layers", "shortcut", "params", "seeds", "ours top-1 / top-5 %", "tested",
               "paper 10-crop top-1 / top-5 % (Tables 2, 3)", "ours multi-scale top-1 / top-5 %",
               "paper multi-scale top-1 / top-5 % (Table 4)")
    rows = []
    for group in group_runs(runs):
        ours, protocol = _imagenet_errors(group) if group.completed else (_status_text(group), "")
        rows.append({
            "net": _net_name(group.arch),
            "layers": str(group.depth),
            "shortcut": group.shortcut or MISSING,
            "params": format_params(_params(group)),
            "seeds": _seeds_cell(group),
            "ours top-1 / top-5 %": ours,
            "tested": protocol,
            columns[7]: _paper_pair(
                paper_figures.tencrop_error(group.arch, group.depth, group.shortcut)),
            columns[8]: _group_cell(group, _multiscale_cell),
            columns[9]: _paper_pair(
                paper_figures.multiscale_error(group.arch, group.depth, group.shortcut)),
        })
    notes = ("Errors in % on the validation set; mean ± sample std (ddof=1) over completed "
             "seeds.",)
    return Table(title or "imagenet: Tables 2-4 layout", columns, tuple(rows), notes)


def runs_table(runs: Iterable[RunRecord], title: str = "") -> Table:
    """One row per run, its final errors (%) as summary.json has them, or its status."""
    columns = ("run", "net", "seed", "iter.", "params", "train err. %", "test err. %")
    rows = []
    for run in sorted(runs, key=lambda r: (r.arch != "plain", r.depth, r.shortcut or "", r.seed)):
        rows.append({
            "run": run.name,
            "net": run.label,
            "seed": str(run.seed),
            "iter.": format_count(run.steps),
            "params": format_count(run.params),
            "train err. %": format_percent(run.final_train_error) if run.completed else run.status,
            "test err. %": format_percent(run.final_test_error) if run.completed else run.status,
        })
    return Table(title or "runs", columns, tuple(rows))


def experiment_tables(runs: Sequence[RunRecord], name: str = "") -> list[Table]:
    """The paper-layout table(s) for one experiment's runs, then the per-run table."""
    prefix = f"{name}: " if name else ""
    tables = []
    cifar = [run for run in runs if run.family == "cifar"]
    imagenet = [run for run in runs if run.family == "imagenet"]
    if cifar:
        datasets = ", ".join(sorted({run.dataset for run in cifar}))
        tables.append(cifar_table(cifar, f"{prefix}{datasets}, Table 6 layout"))
    if imagenet:
        tables.append(imagenet_table(imagenet, f"{prefix}imagenet, Tables 2-4 layout"))
    if runs:
        tables.append(runs_table(runs, f"{prefix}runs"))
    return tables


def folder_tables(folder: Path) -> list[Table]:
    """Tables for each experiment under `folder` (itself, or each child holding runs).

    Raises NoRunsFound when `folder` holds no runs.
    """
    return [table for experiment in require_experiments(Path(folder))
            for table in experiment_tables(load_runs(experiment), experiment.name)]


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(tables: Table | Sequence[Table]) -> str:
    """GitHub-flavoured markdown: a heading, the table and its notes, for each table."""
    parts = []
    for table in [tables] if isinstance(tables, Table) else tables:
        lines = [f"## {table.title}", "",
                 "| " + " | ".join(map(_markdown_cell, table.columns)) + " |",
                 "|" + "|".join("---" for _ in table.columns) + "|"]
        lines += ["| " + " | ".join(_markdown_cell(row.get(column, MISSING))
                                    for column in table.columns) + " |" for row in table.rows]
        if table.notes:
            for note in table.notes:  # a blank line between notes keeps them paragraphs
                lines += ["", f"_{note}_"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def write_table(folder: Path) -> Path:
    """Writes folder/table.md (atomically) with the tables of every experiment under `folder`."""
    path = Path(folder) / TABLE_FILE
    return write_bytes_atomically(path, to_markdown(folder_tables(folder)).encode())
