"""One self-contained HTML page per experiment: `resdepth report results/<experiment>`.

report.html holds the paper-layout tables (the same `Table`s as `resdepth table`, each run's
backward-signal verdict among them where runs recorded signals), every figure the runs allow
(the same matplotlib figures as `resdepth plot`, inlined as SVG with text drawn as paths), each
run's status, the result-changing settings that differ between runs, and the
code version, JAX version and devices each run recorded. It has no scripts, no external style
sheet, font or image and no link outside the page, so it opens from disk with no server and no
network, and can be mailed or archived as one file. All text from run files is escaped.

Like plots and tables, it reads the run directories' files only and never imports JAX.
"""

from __future__ import annotations

import datetime
import html
import io
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from resdepth.dataset_facts import family_of
from resdepth.results import plots
from resdepth.results.signals_figure import SIGNALS_STEM, build_signals_figure, signals_note
from resdepth.rundir import identity as run_identity
from resdepth.results.reading import load_runs, require_experiments
from resdepth.rundir.directory import code_version
from resdepth.rundir.record import RunRecord
from resdepth.rundir.storage import write_bytes_atomically
from resdepth.rundir.summary import COMPLETED, TEST, VALIDATION
from resdepth.results.tables import MISSING, Table, experiment_tables, format_percent

REPORT_FILE = "report.html"
# The settings a depth sweep varies on purpose; any other difference is worth a second look.
GRID_KEYS = ("model.residual", "model.depth", run_identity.SEED_KEY)
# Settings that only some runs read, and which: shown among the settings every run shares only
# where one of the runs reads them (a digits study has no use for ImageNet's crop size).
def _imagenet(settings: dict[str, Any]) -> bool:
    return family_of(str(settings.get("data.dataset"))) == "imagenet"


def _plateau(settings: dict[str, Any]) -> bool:
    return settings.get("optim.lr_schedule") == "plateau"


def _cifar_augmented(settings: dict[str, Any]) -> bool:
    return not _imagenet(settings) and bool(settings.get("data.augment"))


READ_ONLY_BY: dict[str, Callable[[dict[str, Any]], bool]] = {
    "data.image_size": _imagenet,
    "run.eval_examples": _imagenet,
    "data.plateau_holdout_examples": _plateau,
    "optim.plateau_patience_evals": _plateau,
    "optim.plateau_threshold": _plateau,
    "optim.lr_boundaries_steps": lambda settings: not _plateau(settings),
    "data.pad_pixels": _cifar_augmented,  # the random crop's padding
    "data.random_flip": _cifar_augmented,
}

STATUS_CLASS = {"completed": "ok", "running": "live", "diverged": "bad", "failed": "bad",
                "damaged": "bad"}

# (anchor, heading, builder): the figures of `resdepth plot`, in its order.
FIGURES: tuple[tuple[str, str, Callable[[Sequence[RunRecord]], Any]], ...] = (
    ("figure6", "Figure 6: error during training",
     lambda runs: plots.build_figure6(runs, TEST)),
    ("figure6-validation", "Figure 6, validation runs",
     lambda runs: plots.build_figure6(runs, VALIDATION)),
    ("degradation", "Final error against depth (degradation)",
     lambda runs: plots.build_degradation(runs, TEST)),
    ("degradation-validation", "Final error against depth, validation runs",
     lambda runs: plots.build_degradation(runs, VALIDATION)),
    ("figure7", "Figure 7: layer responses", plots.build_figure7),
    (SIGNALS_STEM, "Signals: forward and backward signals per layer during training (§4.1)",
     build_signals_figure),
    ("figure4", "Figure 4: ImageNet error during training",
     lambda runs: plots.build_figure4(runs, TEST)),
    ("figure4-validation", "Figure 4, held-out runs",
     lambda runs: plots.build_figure4(runs, VALIDATION)),
)

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1b1b1b;
       max-width: 1200px; margin: 0 auto; padding: 1.5em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05em; margin-top: 1.5em; }
nav a { margin-right: 1em; }
.meta, .note { color: #555; }
.note { font-size: 0.9em; max-width: 60em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.paper-only td { color: #888; }
.ok { color: #176f2c; } .live { color: #1d4fa0; } .bad { color: #b00020; font-weight: 600; }
.other { color: #9a5b00; }
.wide { overflow-x: auto; }
figure { margin: 1em 0 2em; }
figure svg { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.9em; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def status_span(status: str) -> str:
    return f'<span class="{STATUS_CLASS.get(status, "other")}">{esc(status)}</span>'


def _html_table(columns: Sequence[str], rows: Sequence[Sequence[str]],
                numeric: Sequence[bool] = (), row_classes: Sequence[str] = ()) -> str:
    """A table of already-escaped cell HTML."""
    head = "".join(f"<th>{esc(column)}</th>" for column in columns)
    body = []
    for index, row in enumerate(rows):
        cells = "".join(
            f'<td class="num">{cell}</td>' if index_ < len(numeric) and numeric[index_]
            else f"<td>{cell}</td>" for index_, cell in enumerate(row))
        klass = row_classes[index] if index < len(row_classes) and row_classes[index] else ""
        body.append(f'<tr class="{klass}">{cells}</tr>' if klass else f"<tr>{cells}</tr>")
    return (f'<div class="wide"><table><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


_NUMBER = re.compile(r"^[\d.,]+M?( ± [\d.]+)?$")


def table_html(table: Table) -> str:
    """A `tables.Table` as HTML: its title, its rows (cells as `resdepth table` shows them),
    its notes. Rows without a run of ours (the paper's numbers only) are greyed."""
    ours = [column for column in table.columns if "paper" not in column and column not in (
        "net", "variant", "layers")]
    rows, classes = [], []
    for row in table.rows:
        rows.append([esc(row.get(column, MISSING)) for column in table.columns])
        classes.append("paper-only" if all(row.get(c, MISSING) == MISSING for c in ours) else "")
    numeric = [all(_NUMBER.match(row.get(column, "")) or row.get(column) == MISSING
                   for row in table.rows) and column not in ("net", "run")
               for column in table.columns]
    notes = "".join(f'<p class="note">{esc(note)}</p>' for note in table.notes)
    return f"<h3>{esc(table.title)}</h3>{_html_table(table.columns, rows, numeric, classes)}{notes}"


def figure_svg(fig: Any, prefix: str) -> str:
    """A matplotlib figure as an inline <svg> element.

    Text is drawn as paths (no font needed); the XML prolog, metadata and namespace
    declarations are dropped (HTML needs none of them); every id gets `prefix` so that the
    figures of one page, which matplotlib numbers alike ("figure_1", "axes_1"), stay apart.
    """
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path"}):
        fig.savefig(buffer, format="svg", metadata={
            "Creator": None, "Date": None, "Format": None, "Type": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg, count=2)
    svg = re.sub(r'\bid="', f'id="{prefix}-', svg)
    svg = re.sub(r'href="#', f'href="#{prefix}-', svg)
    svg = svg.replace("url(#", f"url(#{prefix}-")
    return svg.replace("<svg ", f'<svg role="img" aria-label="{esc(prefix)}" ', 1)


def figures_html(runs: Sequence[RunRecord]) -> tuple[list[tuple[str, str]], str]:
    """([(anchor, heading)] of the figures drawn, their HTML)."""
    drawn, parts = [], []
    for anchor, heading, build in FIGURES:
        fig = build(runs)
        if fig is None:
            continue
        drawn.append((anchor, heading))
        parts.append(f'<figure id="{anchor}">{figure_svg(fig, anchor)}'
                     f"<figcaption>{esc(heading)} (<code>{anchor}.svg</code> of "
                     f"<code>resdepth plot</code>)</figcaption></figure>")
    if any(run.family == "cifar" for run in runs) and "figure7" not in dict(drawn):
        parts.append('<p class="note">Figure 7 needs the layer responses of trained runs: '
                     "run <code>resdepth analyze</code> on this folder, then the report again.</p>")
    missing_signals = signals_note(runs)
    if missing_signals:
        parts.append(f'<p class="note">{esc(missing_signals)}.</p>')
    if not drawn:
        parts.insert(0, '<p class="note">No figure yet: no run has logged any error.</p>')
    return drawn, "".join(parts)


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return MISSING
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def runs_html(runs: Sequence[RunRecord]) -> str:
    """One row per run: its status, iterations, final (or latest) errors, wall time, message."""
    rows = []
    for run in runs:
        total = run.total_steps
        done = MISSING if run.steps is None else f"{run.steps:,}"
        evaluated = "test" if run.eval_split == TEST else "val."
        error = format_percent(run.final_test_error)
        rows.append([
            esc(run.name), esc(run.label), status_span(run.status),
            esc(f"{done} / {total:,}" if isinstance(total, int) else done),
            esc(format_percent(run.final_train_error)),
            esc(error if error == MISSING else f"{error} ({evaluated})"),
            esc(_duration(run.wall_s)), esc(run.message),
        ])
    return _html_table(("run", "net", "status", "iterations", "train err. %", "test err. %",
                        "wall time", "message"), rows,
                       numeric=(False, False, False, True, True, True, True, False))


def _setting(value: Any) -> str:
    return MISSING if value is None else json.dumps(value)


def config_html(runs: Sequence[RunRecord]) -> str:
    """The result-changing settings (run_identity.result_settings) that differ between runs,
    one column per setting, and the settings all runs share."""
    configured = [run for run in runs if run.config]
    parts = []
    missing = [run.name for run in runs if not run.config]
    if missing:
        parts.append(f'<p class="note">No config.json (settings unknown): '
                     f"{esc(', '.join(missing))}.</p>")
    if not configured:
        return "".join(parts)
    first = configured[0].config
    keys = set()
    for run in configured[1:]:
        keys.update(run_identity.differing_keys(first, run.config))
    ordered = [key for key in GRID_KEYS if key in keys] + sorted(keys - set(GRID_KEYS))
    settings = {run.name: run_identity.result_settings(run.config) for run in configured}
    beyond = [key for key in ordered if key not in GRID_KEYS]
    if beyond:
        parts.append('<p>Besides the sweep grid (plain or residual, depth, seed), the runs '
                     f'differ in <strong>{esc(", ".join(beyond))}</strong>; only runs of one '
                     "recipe are averaged in the tables.</p>")
    elif len(configured) > 1:
        parts.append("<p>The runs differ only in the sweep grid (plain or residual, depth, "
                     "seed): one recipe.</p>")
    if ordered:
        rows = [[esc(run.name), *(esc(_setting(settings[run.name].get(key))) for key in ordered)]
                for run in configured]
        parts.append(_html_table(("run", *ordered), rows))
    shared = {key: value for key, value in settings[configured[0].name].items()
              if key not in keys}
    unread = sorted(key for key in shared if key in READ_ONLY_BY
                    and not any(READ_ONLY_BY[key](one) for one in settings.values()))
    shared = {key: value for key, value in shared.items() if key not in unread}
    if shared:
        rows = [[f"<code>{esc(key)}</code>", esc(_setting(value))]
                for key, value in shared.items()]
        left_out = ("" if not unread else
                    f'<p class="note">Left out, as no run here reads them (they serve ImageNet, '
                    f'the plateau schedule or augmentation): {esc(", ".join(unread))}.</p>')
        parts.append(f"<details><summary>Settings every run shares ({len(shared)})</summary>"
                     f'{_html_table(("setting", "value"), rows)}{left_out}</details>')
    return "".join(parts)


def _devices(devices: Any) -> str:
    if not isinstance(devices, list) or not devices:
        return MISSING
    kinds: dict[str, int] = {}
    for device in devices:  # "cuda:0", "cuda:1" -> "2 x cuda"; "TFRT_CPU_0" -> "1 x TFRT_CPU"
        kind = re.sub(r"[:_]?\d+$", "", str(device)) or str(device)
        kinds[kind] = kinds.get(kind, 0) + 1
    return ", ".join(f"{count} x {kind}" for kind, count in kinds.items())


def machine_html(runs: Sequence[RunRecord]) -> str:
    """Code version, JAX version and devices as each run's config.json recorded them, grouped."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for run in runs:
        key = (run.code_version or MISSING, run.jax_version or MISSING, _devices(list(run.devices)))
        groups.setdefault(key, []).append(run.name)
    rows = [[esc(code), esc(jax), esc(devices), esc(", ".join(names))]
            for (code, jax, devices), names in groups.items()]
    note = ("" if len(groups) < 2 else '<p class="note">The runs were made with more than one '
            "code version or machine.</p>")
    return note + _html_table(("code version", "JAX", "devices", "runs"), rows)


def _status_counts(runs: Sequence[RunRecord]) -> str:
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    order = sorted(counts, key=lambda status: (status != COMPLETED, status))
    return ", ".join(f"{counts[status]} {status_span(status)}" for status in order)


def build_report(folder: Path) -> str:
    """The report of one experiment folder (a folder of run directories), as HTML text."""
    folder = Path(folder)
    runs = load_runs(folder)
    name = folder.name
    drawn, figures = figures_html(runs)
    tables = "".join(table_html(table) for table in experiment_tables(runs, name))
    written = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = [("tables", "Tables"), ("figures", "Figures"), ("runs", "Runs"),
                ("config", "Config differences"), ("machine", "Machine and code")]
    nav = "".join(f'<a href="#{anchor}">{esc(title)}</a>' for anchor, title in sections)
    body = {
        "tables": tables,
        "figures": figures,
        "runs": runs_html(runs),
        "config": config_html(runs),
        "machine": machine_html(runs),
    }
    content = "".join(f'<section id="{anchor}"><h2>{esc(title)}</h2>{body[anchor]}</section>'
                      for anchor, title in sections)
    figure_list = ", ".join(heading.split(":")[0] for _, heading in drawn) or "none yet"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(name)}: resdepth report</title><style>{STYLE}</style></head><body>"
        f"<h1>{esc(name)}: plain vs residual nets across depth</h1>"
        f'<p class="meta">{len(runs)} runs: {_status_counts(runs)}. Figures: {esc(figure_list)}. '
        f"From <code>{esc(folder)}</code>, written {esc(written)} by "
        f"<code>resdepth report</code> ({esc(code_version())}). Errors are in %, at the end of "
        "training (the latest logged for runs not finished). He, Zhang, Ren and Sun, "
        "<em>Deep Residual Learning for Image Recognition</em>, CVPR 2016.</p>"
        f"<nav>{nav}</nav>{content}</body></html>\n")


def write_report(folder: Path) -> Path:
    """Writes folder/report.html (atomically) for one experiment folder; returns its path."""
    path = Path(folder) / REPORT_FILE
    return write_bytes_atomically(path, build_report(folder).encode())


def report_folder(folder: Path) -> list[Path]:
    """A report.html in each experiment folder under `folder` (itself, or each child holding
    runs). Raises NoRunsFound when `folder` holds no runs."""
    return [write_report(experiment) for experiment in require_experiments(Path(folder))]
