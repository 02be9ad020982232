"""The paper's tables filled in from run directories: Table 6 (CIFAR) and Tables 2-4 (ImageNet).

A `Table` holds display-ready text cells keyed by column name, so the CLI (Rich) and table.md
(markdown) show the same thing. Errors are percent with 2 decimals; "a ± b" is the mean and
sample standard deviation (ddof=1) over the completed seeds. A table whose nets have one seed
each says "1 seed" in its headers, never "mean ± std". Runs that did not complete show
their status ("diverged", "running", ...) in place of errors and are left out of every mean.
Only runs of one recipe are averaged: a net run with several recipes gets a row per recipe,
named in a "variant" column, with a note on the settings they differ in. Runs evaluated on
held-out training images ("validation") get a table of their own, without the paper's test errors.
Runs that recorded signals.jsonl get one more: each run's backward-signal verdict (§4.1), by the
rule of results/vanishing.py, stated in the table's notes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from resdepth.results import paper as paper_figures
from resdepth.rundir import identity as run_identity
from resdepth.results.reading import (
    RunGroup, Stat, group_runs, load_runs, require_experiments, summarize)
from resdepth.results.vanishing import Verdict, backward_verdict, rule_text
from resdepth.rundir.record import RunRecord
from resdepth.rundir.storage import write_bytes_atomically
from resdepth.rundir.summary import TEST, VALIDATION

MISSING = "—"
ONE_SEED = "1 seed"
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


def several_seeds(groups: Sequence[RunGroup]) -> bool:
    """Whether some net of `groups` was run with two or more seeds (finished or not): only then
    may a table have a spread (mean ± std) and a best to show."""
    return any(len(group.runs) > 1 for group in groups)


def error_columns(groups: Sequence[RunGroup], measured: str) -> tuple[str, ...]:
    """The error columns of a table of `groups`: training and `measured` error ("test" or
    "validation") as mean ± std and the best, or as "1 seed" where every net has one seed."""
    if not several_seeds(groups):
        return (f"train err. % ({ONE_SEED})", f"{measured} err. % ({ONE_SEED})")
    return ("train err. % (mean ± std)", f"{measured} err. % (mean ± std)",
            f"{measured} err. % (best)")


def _error_cells(group: RunGroup, columns: tuple[str, ...]) -> dict[str, str]:
    """A group's training and tested error (%) under `columns` (`error_columns`' names)."""
    texts = (lambda g: format_stat(g.stat("final_train_error")),
             lambda g: format_stat(g.stat("final_test_error")),
             lambda g: format_percent(_best(g.stat("final_test_error"))))
    return {column: _group_cell(group, text) for column, text in zip(columns, texts)}


def spread_note(groups: Sequence[RunGroup]) -> str:
    """What the error cells are: one run's errors, or mean ± sample std over seeds."""
    if not several_seeds(groups):
        return ("Errors in %, at the end of training (not the best epoch), of one seed per net, "
                "so no spread was measured: another seed may end elsewhere (a sweep's --seeds "
                "trains more).")
    return ("Errors in %, at the end of training (not the best epoch); mean ± sample std "
            "(ddof=1) over completed seeds, best the lowest; a net with one seed shows that "
            "run's errors.")


def _group_cell(group: RunGroup, text: Callable[[RunGroup], str]) -> str:
    return text(group) if group.completed else _status_text(group)


def _variant_column(groups: Sequence[RunGroup]) -> tuple[str, ...]:
    """("variant",) where some net has several recipes, else ()."""
    return ("variant",) if any(group.variant for group in groups) else ()


def _setting_text(value: object) -> str:
    return MISSING if value is None else json.dumps(value)


def variant_notes(groups: Sequence[RunGroup]) -> list[str]:
    """For each net run with several recipes: the result-changing settings they differ in."""
    nets: dict[tuple, list[RunGroup]] = {}
    for group in groups:
        if group.variant:
            nets.setdefault(group.runs[0].net_key, []).append(group)
    notes = []
    for members in nets.values():
        names = " / ".join(group.variant or "" for group in members)
        configs = [group.runs[0].config for group in members]
        with_config = [config for config in configs if config]
        keys = sorted({key for config in with_config[1:]
                       for key in run_identity.differing_keys(with_config[0], config)}
                      - {run_identity.SEED_KEY})
        settings = [run_identity.result_settings(config) for config in configs]
        details = [f"{key} ({' / '.join(_setting_text(s.get(key)) for s in settings)})"
                   for key in keys]
        details += [f"{group.variant} has no config.json"
                    for group, config in zip(members, configs) if not config]
        notes.append(f"{members[0].runs[0].label} was run with {len(members)} recipes "
                     f"({names}), never averaged together; they differ in: "
                     f"{'; '.join(details)}.")
    return notes


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

    On CIFAR-10, where some run has one of Table 6's depths, every ResNet row of Table 6
    appears, with "—" for ours where that depth was not run; elsewhere (digits, or depths the
    paper never ran, such as 8 and 14) only the nets run have rows. The paper's column is Table
    6's CIFAR-10 test error for ResNets ("—" for plain nets, which the paper only plots); on
    another data set (digits) it is labelled as CIFAR-10's. Runs evaluated on held-out training
    images are left out (see `validation_table`).
    """
    groups = [group for group in group_runs(runs) if group.eval_split == TEST]
    datasets = sorted({group.dataset for group in groups})
    on_cifar10 = datasets == ["cifar10"]
    paper_column = ("paper test err. % (Table 6)" if on_cifar10
                    else "paper CIFAR-10 test err. % (Table 6)")
    errors = error_columns(groups, "test")
    columns = ("net", *_variant_column(groups), "layers", "params", "params (exact)", "seeds",
               *errors, paper_column, "paper params")
    keyed = [((group.arch, group.shortcut or "", group.depth), {
        "net": _cifar_net_name(group.arch, group.shortcut),
        "variant": group.variant or MISSING,
        "layers": str(group.depth),
        "params": format_params(_params(group)),
        "params (exact)": format_count(_params(group)),
        "seeds": _seeds_cell(group),
        **_error_cells(group, errors),
        paper_column: _table6_paper_cell(group.arch, group.depth, group.shortcut),
        "paper params": _paper_params_cell(group.depth, group.shortcut),
    }) for group in groups]
    run_keys = {key for key, _ in keyed}
    paper_depths = paper_figures.TABLE6_TEST_ERROR_PERCENT
    beside_table6 = on_cifar10 and any(depth in paper_depths for _, _, depth in run_keys)
    for depth in paper_depths if beside_table6 else ():
        if ("residual", "A", depth) not in run_keys:
            row = dict.fromkeys(columns, MISSING)
            row.update({"net": "ResNet", "layers": str(depth),
                        paper_column: _table6_paper_cell("residual", depth, "A"),
                        "paper params": _paper_params_cell(depth, "A")})
            keyed.append((("residual", "A", depth), row))
    arch_order = {"plain": 0, "residual": 1}
    # A stable sort: the variants of one net stay in group_runs' order.
    keyed.sort(key=lambda item: (arch_order.get(item[0][0], 2), item[0][1], item[0][2]))
    notes = [spread_note(groups), "Table 6 lists ResNets only (option A); its plain nets "
             "appear only in Figure 6."]
    if not on_cifar10:
        notes.append(f"Data set: {', '.join(datasets)}, not CIFAR-10; the paper's CIFAR-10 "
                     "errors are shown for scale only.")
    notes += variant_notes(groups)
    return Table(title or f"{', '.join(datasets)}: Table 6 layout", columns,
                 tuple(row for _, row in keyed), tuple(notes))


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
    summary.json (a single view, which the paper does not report). Runs evaluated on held-out
    training images are left out (see `validation_table`).
    """
    groups = [group for group in group_runs(runs) if group.eval_split == TEST]
    columns = ("net", *_variant_column(groups), "layers", "shortcut", "params", "seeds",
               "ours top-1 / top-5 %", "tested", "paper 10-crop top-1 / top-5 % (Tables 2, 3)",
               "ours multi-scale top-1 / top-5 %", "paper multi-scale top-1 / top-5 % (Table 4)")
    paper_tencrop, ours_multiscale, paper_multiscale = columns[-3:]
    rows = []
    for group in groups:
        ours, protocol = _imagenet_errors(group) if group.completed else (_status_text(group), "")
        rows.append({
            "net": _net_name(group.arch),
            "variant": group.variant or MISSING,
            "layers": str(group.depth),
            "shortcut": group.shortcut or MISSING,
            "params": format_params(_params(group)),
            "seeds": _seeds_cell(group),
            "ours top-1 / top-5 %": ours,
            "tested": protocol,
            paper_tencrop: _paper_pair(
                paper_figures.tencrop_error(group.arch, group.depth, group.shortcut)),
            ours_multiscale: _group_cell(group, _multiscale_cell),
            paper_multiscale: _paper_pair(
                paper_figures.multiscale_error(group.arch, group.depth, group.shortcut)),
        })
    spread = ("mean ± sample std (ddof=1) over completed seeds" if several_seeds(groups)
              else f"{ONE_SEED} per net, no spread")
    notes = (f"Errors in % on the validation set; {spread}.", *variant_notes(groups))
    return Table(title or "imagenet: Tables 2-4 layout", columns, tuple(rows), notes)


HELD_OUT_NOTE = ("Validation error: measured on 10% of the training set held out "
                 "(data.val_split = true; 5,000 images on CIFAR-10), not on the test set, so "
                 "the paper's test errors are not shown beside it.")


def validation_table(runs: Iterable[RunRecord], title: str = "") -> Table:
    """The runs evaluated on held-out training images: one row per net and recipe, no paper."""
    groups = [group for group in group_runs(runs) if group.eval_split != TEST]
    top5 = any(run.final_test_top5_error is not None for g in groups for run in g.runs)
    errors = error_columns(groups, "validation")
    top5_column = ("validation top-5 err. % (mean ± std)" if several_seeds(groups)
                   else f"validation top-5 err. % ({ONE_SEED})")
    columns = ("net", *_variant_column(groups), "params", "seeds", *errors,
               *((top5_column,) if top5 else ()))
    rows = tuple({
        "net": group.runs[0].label,
        "variant": group.variant or MISSING,
        "params": format_params(_params(group)),
        "seeds": _seeds_cell(group),
        **_error_cells(group, errors),
        top5_column: _group_cell(
            group, lambda g: format_stat(g.stat("final_test_top5_error"))),
    } for group in groups)
    return Table(title or "validation runs", columns, rows,
                 (HELD_OUT_NOTE, spread_note(groups), *variant_notes(groups)))


def runs_table(runs: Iterable[RunRecord], title: str = "") -> Table:
    """One row per run, its final errors (%) as summary.json has them, or its status.

    A run evaluated on held-out training images has its error under "validation err. %" (a
    column shown only when there is such a run), never under "test err. %".
    """
    groups = group_runs(runs)
    held_out = any(group.eval_split == VALIDATION for group in groups)
    columns = ("run", "net", "seed", "iter.", "params", "train err. %", "test err. %",
               *(("validation err. %",) if held_out else ()))
    rows = []
    for group in groups:
        for run in group.runs:
            final_error = format_percent(run.final_test_error) if run.completed else run.status
            rows.append({
                "run": run.name,
                "net": group.label,
                "seed": str(run.seed),
                "iter.": format_count(run.steps),
                "params": format_count(run.params),
                "train err. %": (format_percent(run.final_train_error) if run.completed
                                 else run.status),
                "test err. %": final_error if run.eval_split == TEST else MISSING,
                "validation err. %": final_error if run.eval_split == VALIDATION else MISSING,
            })
    return Table(title or "runs", columns, tuple(rows))


def format_ratio(ratio: float | None, step: int | None) -> str:
    """A backward ratio and its iteration: "0.31 (iter. 0)", "2.1e-05 (iter. 1,200)"; "—"."""
    return MISSING if ratio is None else f"{ratio:.2g} (iter. {step:,})"


def _vanished_cell(verdict: Verdict) -> str:
    """"yes", "no" or "—" (`vanishing.rule_text`), and how many rows had no ratio."""
    answer = {True: "yes", False: "no", None: MISSING}[verdict.vanished]
    if verdict.unmeasured and verdict.vanished is not None:
        answer += (f" ({verdict.unmeasured} row{'s' if verdict.unmeasured > 1 else ''} "
                   "without a ratio)")
    return answer


def signals_table(runs: Iterable[RunRecord], title: str = "") -> Table:
    """One row per run with signals.jsonl: its backward ratio at the first row, at the last,
    its lowest after the first, and whether its backward signal vanished, with the rule
    (`vanishing.rule_text`) in the notes. Runs without signals are counted in a note."""
    runs = list(runs)
    first, last, lowest, vanished = (
        "backward ratio, first row", "backward ratio, last row",
        "lowest backward ratio after the first row", "backward signal vanished")
    rows = []
    for group in group_runs(runs):
        for run in group.runs:
            if run.signals is None:
                continue
            verdict = backward_verdict(run.signals)
            rows.append({
                "run": run.name, "net": group.label, "seed": str(run.seed),
                first: format_ratio(verdict.start_ratio, verdict.start_step),
                last: format_ratio(verdict.end_ratio, verdict.end_step),
                lowest: format_ratio(verdict.lowest_ratio, verdict.lowest_step),
                vanished: _vanished_cell(verdict),
            })
    notes = [rule_text()]
    missing = sum(1 for run in runs if run.signals is None)
    if missing:
        notes.append(f"{missing} run{' has' if missing == 1 else 's have'} no signals.jsonl "
                     "(trained before resdepth recorded signals) and "
                     f"{'is' if missing == 1 else 'are'} not listed.")
    return Table(title or "backward signals", ("run", "net", "seed", first, last, lowest, vanished),
                 tuple(rows), tuple(notes))


def experiment_tables(runs: Sequence[RunRecord], name: str = "") -> list[Table]:
    """The paper-layout table(s) for one experiment's test runs, a table of its validation runs
    (held-out training images), the backward-signal verdict of each run with signals (§4.1),
    then the per-run table."""
    prefix = f"{name}: " if name else ""
    tables = []
    tested = [run for run in runs if run.eval_split == TEST]
    cifar = [run for run in tested if run.family == "cifar"]
    imagenet = [run for run in tested if run.family == "imagenet"]
    held_out = [run for run in runs if run.eval_split != TEST]
    if cifar:
        datasets = ", ".join(sorted({run.dataset for run in cifar}))
        tables.append(cifar_table(cifar, f"{prefix}{datasets}, Table 6 layout"))
    if imagenet:
        tables.append(imagenet_table(imagenet, f"{prefix}imagenet, Tables 2-4 layout"))
    if held_out:
        datasets = ", ".join(sorted({run.dataset for run in held_out}))
        tables.append(validation_table(
            held_out, f"{prefix}{datasets}, validation runs (10% of the training set held out)"))
    if any(run.signals is not None for run in runs):
        tables.append(signals_table(runs, f"{prefix}backward signals per run (§4.1: did "
                                          "gradients vanish?)"))
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


def write_table(folder: Path, tables: Sequence[Table] | None = None) -> Path:
    """Writes folder/table.md (atomically) with `tables`, by default those of every experiment
    under `folder` (pass the `folder_tables` already made to read the runs once)."""
    path = Path(folder) / TABLE_FILE
    made = folder_tables(folder) if tables is None else tables
    return write_bytes_atomically(path, to_markdown(made).encode())
