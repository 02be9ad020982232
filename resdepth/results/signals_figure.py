"""The signals figure (§4.1): forward and backward signals per layer of plain and residual nets
over training, drawn from each run's signals.jsonl (`RunRecord.signals`).

He et al. argue that deep plain nets do not degrade because signals vanish: BatchNorm keeps the
forward responses at non-zero variance, and the backward gradients keep healthy norms. One row
of panels per depth with signals; one run per net, its lowest seed with signals (named in each
panel's title):

(a) backward: per 3x3 layer, in network order, the RMS of the per-example loss gradient w.r.t.
    the layer's response (log y) at the iterations `marked_rows` picks; one panel per net, the
    nets of a depth side by side on one y axis;
(b) forward: the std of the same responses (Figure 7's quantity, during training) at the same
    iterations;
(c) the backward ratio (smallest over largest of (a)'s values) of every net of the depth across
    iterations (log y), with the VANISHING_RATIO line of table.md's verdict.

Runs without signals.jsonl (trained before resdepth recorded signals) are left out, and
`signals_note` says so in one line. matplotlib is imported only when the figure is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from resdepth.results import vanishing
from resdepth.results.drawing import (
    colours, figure_title, iteration_axis, new_figure, save_figure)
from resdepth.results.reading import RunGroup, group_runs
from resdepth.rundir.record import RunRecord
from resdepth.rundir.summary import TEST

SIGNALS_STEM = "signals"
PANEL_SIZE = (3.6, 2.8)  # inches: a depth's row has five panels or more
THRESHOLD_STYLE = {"color": "0.4", "linestyle": ":", "linewidth": 1.0}


def signal_runs(runs: Sequence[RunRecord]) -> list[tuple[RunGroup, RunRecord]]:
    """(net, the run drawn for it) for each net (runs over seeds) with a signals row: its lowest
    seed with one (`group_runs` sorts a net's runs by seed), in `group_runs`' order."""
    picked = []
    for group in group_runs(runs):
        drawn = [run for run in group.runs if run.signals is not None and run.signals.steps]
        if drawn:
            picked.append((group, drawn[0]))
    return picked


def marked_rows(run: RunRecord) -> list[tuple[int, str]]:
    """(row of run.signals, label) of the iterations panels (a) and (b) draw, in order: the
    first row, the first after the warm-up ended (summary.json's warmup_switch_step), the first
    after each learning-rate drop (optim.lr_boundaries_steps, under the "steps" schedule) and
    the last. A row picked twice is drawn once, its label naming both reasons.

    "After" means a row whose state has taken an update at the new rate: the row at step S
    is iteration S's own, on the state after S - 1 iterations, so after a change at iteration
    b (the last at the old rate) the first such row is one with S > b + 1.
    """
    steps = run.signals.steps
    optim = run.config.get("optim", {})
    changes = []  # (the last iteration at the old rate, what changed)
    if run.warmup_switch_step is not None:
        changes.append((run.warmup_switch_step, "warm-up over"))
    if optim.get("lr_schedule") == "steps":
        changes += [(boundary, f"lr drop {index}") for index, boundary
                    in enumerate(optim.get("lr_boundaries_steps") or (), start=1)]
    reasons: dict[int, list[str]] = {0: ["first"]}
    for boundary, what in sorted(changes, key=lambda change: change[0]):
        row = next((index for index, step in enumerate(steps) if step > boundary + 1), None)
        if row is not None:
            reasons.setdefault(row, []).append(f"after {what}")
    reasons.setdefault(len(steps) - 1, []).append("last")
    return [(row, f"iter. {steps[row]:,} ({', '.join(reasons[row])})") for row in sorted(reasons)]


def _values(row: Sequence[float | None]) -> list[float]:
    """A row's numbers with None (not finite) as NaN, which matplotlib leaves as a gap."""
    return [math.nan if value is None else value for value in row]


def _positive(axes: Sequence[Any]) -> bool:
    """Whether the lines of `axes` hold a positive number (a log axis needs one)."""
    return any(value > 0 for ax in axes for line in ax.get_lines()
               for value in line.get_ydata() if math.isfinite(value))


def _net_title(group: RunGroup, run: RunRecord) -> str:
    """"plain-56, seed 0", with the run's status unless it completed and "val." for a run
    evaluated on held-out images."""
    details = [f"seed {run.seed}", *([] if run.completed else [run.status]),
               *([] if group.eval_split == TEST else ["val."])]
    return f"{group.label}, {', '.join(details)}"


def _draw_net(backward: Any, forward: Any, ratio: Any, group: RunGroup, run: RunRecord,
              where: str, unit: float, colour: Any) -> None:
    """One net's panels (a) and (b), and its line of the depth's panel (c)."""
    import matplotlib

    signals, marks = run.signals, marked_rows(run)
    layers = range(1, len(signals.responses) + 1)
    for order, (row, label) in enumerate(marks):
        # Early iterations dark, later ones light, in every net's panels alike.
        style = {"color": matplotlib.colormaps["plasma"](0.85 * order / max(1, len(marks) - 1)),
                 "linewidth": 1.2}
        backward.plot(layers, _values(signals.response_grad_rms[row]), label=label, **style)
        forward.plot(layers, _values(signals.response_std[row]), **style)
    backward.set_title(f"(a) backward: {where}{_net_title(group, run)}", fontsize="small")
    forward.set_title(f"(b) forward: {where}{_net_title(group, run)}", fontsize="small")
    backward.legend(fontsize="x-small")
    ratio.plot([step / unit for step in signals.steps],
               _values([signals.backward_ratio(row) for row in range(len(signals.steps))]),
               color=colour, linestyle="--" if group.arch == "plain" else "-", linewidth=1.2,
               label=_net_title(group, run))


def _finish_row(backward: Sequence[Any], forward: Sequence[Any], ratio: Any, title: str,
                x_label: str) -> None:
    """Axes, scales and labels of one depth's panels (`backward`, `forward`: its nets')."""
    for panels, y_label in ((backward, "RMS of dloss/d(response)"), (forward, "response std")):
        for ax in panels[1:]:
            ax.sharey(panels[0])  # the nets of a depth on one axis, to compare them
        for ax in panels:
            ax.set_xlabel("3x3 layer index (network order)")
            ax.grid(alpha=0.3)
        panels[0].set_ylabel(y_label)
    if _positive(backward):
        backward[0].set_yscale("log", nonpositive="mask")  # shared: the row's (a) panels too
    forward[0].set_ylim(bottom=0)
    threshold = vanishing.VANISHING_RATIO
    ratio.axhline(threshold, label=f"vanishing below {threshold:g}", **THRESHOLD_STYLE)
    ratio.set_yscale("log", nonpositive="mask")
    ratio.set_title(title, fontsize="small")
    ratio.set_xlabel(x_label)
    ratio.set_xlim(left=0)
    ratio.set_ylabel("min / max over layers")
    ratio.grid(alpha=0.3)
    ratio.legend(fontsize="x-small")


def build_signals_figure(runs: Sequence[RunRecord]) -> Any:
    """The signals figure (module docstring) of the runs with signals; None when none has any.

    A row per (data set, depth); its columns: (a) for each net, then (b) for each net, then (c).
    A depth with fewer nets than the widest row leaves its spare (a) and (b) panels blank.
    """
    picked = signal_runs(runs)
    if not picked:
        return None
    rows: dict[tuple[str, int], list[tuple[RunGroup, RunRecord]]] = {}
    for group, run in picked:
        rows.setdefault((group.dataset, group.depth), []).append((group, run))
    width = max(len(nets) for nets in rows.values())
    several_datasets = len({dataset for dataset, _ in rows}) > 1
    colour_of = colours(_net_key(group) for group, _ in picked)
    unit, x_label = iteration_axis(max(run.signals.steps[-1] for _, run in picked))
    fig, axes = new_figure(len(rows), 2 * width + 1, panel_size=PANEL_SIZE)
    for panels_row, ((dataset, depth), nets) in zip(axes, sorted(rows.items())):
        where = f"{dataset}, " if several_datasets else ""
        backward, forward = panels_row[:len(nets)], panels_row[width:width + len(nets)]
        for ax in (*panels_row[len(nets):width], *panels_row[width + len(nets):2 * width]):
            ax.axis("off")
        for (group, run), back, fore in zip(nets, backward, forward):
            _draw_net(back, fore, panels_row[-1], group, run, where, unit,
                      colour_of[_net_key(group)])
        _finish_row(backward, forward, panels_row[-1],
                    f"(c) backward ratio: {where}{depth} layers", x_label)
    seeds = {run.seed for _, run in picked}
    which = "seed 0 of each net" if seeds == {0} else "each net's lowest seed (in the panel titles)"
    fig.suptitle(figure_title((run for _, run in picked), (
        f"forward and backward signals per layer (§4.1), {which}\n(a) backward: gradient RMS at "
        "each 3x3 layer's response; (b) forward: that response's std; at the iterations "
        "listed\n(c) backward ratio, the smallest of (a) over the largest, across iterations")),
        fontsize="medium")
    return fig


def _net_key(group: RunGroup) -> tuple[str, str, str, str]:
    """What gives a net its colour in panel (c), the same at every depth."""
    return (group.arch, group.shortcut or "", group.variant or "", group.eval_split)


def signals_figure(runs: Sequence[RunRecord], folder: Path) -> list[Path]:
    """Writes folder/signals.{png,svg}; [] when no run has signals."""
    fig = build_signals_figure(runs)
    return [] if fig is None else save_figure(fig, Path(folder), SIGNALS_STEM)


def signals_note(runs: Sequence[RunRecord], folder: Path | None = None) -> str | None:
    """One line when some runs (of `folder`, named if given) have no signals to draw; None
    when every run has them."""
    missing = [run for run in runs if run.signals is None]
    if not missing:
        return None
    where = "" if folder is None else f" of {folder}"
    verb, them = ("has", "it") if len(missing) == 1 else ("have", "them")
    return (f"{len(missing)} of {len(runs)} run{'s' if len(runs) > 1 else ''}{where} {verb} no "
            f"signals.jsonl (trained before resdepth recorded signals): no signals figure "
            f"for {them}")
