"""The paper's figures redrawn from run directories: Figures 4, 6, 7 and error against depth;
`plot_experiment` also writes the signals figure (results/signals_figure.py).

`build_*` functions return a matplotlib Figure (or None when the runs hold nothing to draw) so
it can be inspected; the others write it as PNG and SVG, each file atomically (temporary file,
then os.replace), and return the paths written, or []. Errors are fractions in the runs and
percent on the axes; iterations are in units of 10^4, as on the paper's x axes, for runs of
10^4 iterations or more (plain iterations for shorter ones). Runs evaluated
on held-out training images (`eval_split` "validation") get figures of their own, "-validation"
in the file name and "validation" in the title, never beside test errors. Panels without a run
are left out. matplotlib is imported only when a figure is drawn, so importing this module (and
the CLI) stays cheap.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from resdepth.rundir import identity as run_identity
from resdepth.results.drawing import (
    colours, figure_title, iteration_axis, new_figure, save_figure)
from resdepth.results.reading import (
    RunGroup, group_runs, load_runs, name_variants, require_experiments)
from resdepth.results.signals_figure import signals_figure, signals_note
from resdepth.rundir.record import RunRecord
from resdepth.rundir.summary import TEST, VALIDATION

# The y axes reach this fraction of their range past each end, so a curve at an end (0% error,
# or drawn at the edge because it is off the axis) lies inside, not hidden under the frame.
EDGE_MARGIN = 0.03
FIGURE6_ERROR_RANGE = (0.0, 20.0)  # percent, the paper's y axis
FIGURE4_ERROR_RANGE = (20.0, 60.0)
DEEP_RESNET = 110  # Figure 6's right panel: ResNet-110 and deeper (when a deeper one was run)
THIN, BOLD = 0.8, 2.0  # line widths: training error thin, test error bold, as in the paper
HELD_OUT = "validation: 10% of the training set held out"


def seeds_text(count: int) -> str:
    """"1 seed", "3 seeds"."""
    return f"{count} seed{'' if count == 1 else 's'}"


def _save_by_split(build: Any, runs: Sequence[RunRecord], folder: Path, stem: str) -> list[Path]:
    """Draws the test runs into `stem`, the validation runs into `stem`-validation."""
    paths = []
    for split, suffix in ((TEST, ""), (VALIDATION, "-validation")):
        fig = build(runs, split)
        if fig is not None:
            paths += save_figure(fig, Path(folder), stem + suffix)
    return paths


def _error_limits(paper_range: tuple[float, float], finals_percent: Iterable[float | None]
                  ) -> tuple[float, float]:
    """The paper's y range, unless no run ends inside it (tiny runs, small data sets).

    Then the range widens, in steps of 10%, to cover where the runs end.
    """
    finals = [v for v in finals_percent if v is not None]
    low, high = paper_range
    if not finals or any(low <= v <= high for v in finals):
        return paper_range
    return (min(low, 10.0 * (min(finals) // 10)),
            max(high, min(100.0, 10.0 * (max(finals) // 10 + 1))))


def _with_margin(low: float, high: float) -> tuple[float, float]:
    """The visible y range of data in [low, high]: EDGE_MARGIN of it more at each end."""
    margin = EDGE_MARGIN * (high - low)
    return low - margin, high + margin


def _label_off_axis_ends(ax: Any, ends: list[tuple[float, float, str, Any]],
                         low: float, high: float) -> None:
    """Names each curve that ends outside (low, high) at its right end, stacked at the edge."""
    above = [end for end in ends if end[1] > high]
    below = [end for end in ends if end[1] < low]
    for edge, sign, group in ((high, -1, above), (low, 1, below)):
        for index, (x, _, text, colour) in enumerate(group):
            ax.annotate(text, xy=(x, edge), xytext=(-2, sign * (2 + 9 * index)),
                        textcoords="offset points", ha="right",
                        va="top" if sign < 0 else "bottom", fontsize="x-small", color=colour,
                        bbox={"boxstyle": "square,pad=0.1", "facecolor": "white",
                              "edgecolor": "none", "alpha": 0.8})


def _curve_figure(panels: list[tuple[str, list[RunGroup]]], paper_range: tuple[float, float],
                  split: str, title: str) -> Any:
    """Panels of training (thin dashed) and test or validation (bold) error (%) against
    iterations (`iteration_axis`: 10^4 for long runs), one curve pair per net: its lowest
    seed, a real run and not an average.

    Values outside the y range are drawn at its edge, and a curve that ends there is labelled
    with its final value. Panels without a curve are left out; None if none has one.
    """
    panels = [(heading, [g for g in groups if g.runs[0].train or g.runs[0].evals])
              for heading, groups in panels]
    panels = [(heading, groups) for heading, groups in panels if groups]
    if not panels:
        return None
    shown = {id(group): group for _, groups in panels for group in groups}.values()
    colour_of = colours((group.depth, group.variant or "") for group in shown)
    low, high = _error_limits(paper_range, [
        None if g.runs[0].final_test_error is None else 100 * g.runs[0].final_test_error
        for g in shown])
    evaluated = "test" if split == TEST else "val."
    longest = max((p.step for g in shown for p in (*g.runs[0].train, *g.runs[0].evals)), default=0)
    unit, x_label = iteration_axis(longest)
    fig, axes = new_figure(1, len(panels), sharey=True)
    for ax, (heading, groups) in zip(axes[0], panels):
        ends = []
        for group in groups:
            run, colour = group.runs[0], colour_of[(group.depth, group.variant or "")]
            # A diverged or unfinished run keeps its curves, and says so in the legend.
            label = group.label if run.completed else f"{group.label} ({run.status})"
            label += "" if split == TEST else ", val. error"
            for points, kind, width, style in ((run.train, "train", THIN, "--"),
                                               (run.evals, evaluated, BOLD, "-")):
                if not points:
                    continue
                xs = [p.step / unit for p in points]
                ys = [100 * p.error for p in points]
                ax.plot(xs, [min(max(y, low), high) for y in ys], color=colour, linewidth=width,
                        linestyle=style, label=None if kind == "train" else label)
                ends.append((xs[-1], ys[-1], f"{group.label} {kind} {ys[-1]:.1f}%", colour))
        _label_off_axis_ends(ax, ends, low, high)
        ax.set_title(heading)
        ax.set_xlabel(x_label)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize="small")  # "best" also avoids the end labels
    axes[0][0].set_ylabel("error (%)")
    axes[0][0].set_ylim(*_with_margin(low, high))
    fig.suptitle(title, fontsize="medium")
    return fig


def _of_split(runs: Iterable[RunRecord], split: str, family: str) -> list[RunGroup]:
    return group_runs(run for run in runs if run.eval_split == split and run.family == family)


def _curves_caption(split: str) -> str:
    return ("training (dashed) and test (bold) error" if split == TEST
            else f"training (dashed) and validation (bold) error\n({HELD_OUT})")


def build_figure6(runs: Sequence[RunRecord], split: str = TEST) -> Any:
    """Figure 6 of the CIFAR-family runs evaluated on `split`, or None without any.

    Plain nets left, ResNets up to 110 layers middle, ResNet-110 and deeper right (only when a
    ResNet deeper than 110 was run); y from 0 to 20% as the paper's (wider only if no run ends
    below 20%), x in 10^4 iterations (plain iterations for runs shorter than 10^4).
    """
    groups = _of_split(runs, split, "cifar")
    plain = [g for g in groups if g.arch == "plain"]
    residual = [g for g in groups if g.arch == "residual"]
    panels = [("plain", plain)]
    if any(g.depth > DEEP_RESNET for g in residual):
        panels += [("ResNet", [g for g in residual if g.depth <= DEEP_RESNET]),
                   (f"ResNet-{DEEP_RESNET} and deeper",
                    [g for g in residual if g.depth >= DEEP_RESNET])]
    else:
        panels.append(("ResNet", residual))
    shown = [run for run in runs if run.eval_split == split and run.family == "cifar"]
    return _curve_figure(panels, FIGURE6_ERROR_RANGE, split,
                         figure_title(shown, f"Figure 6\n{_curves_caption(split)}"))


def figure6(runs: Sequence[RunRecord], folder: Path) -> list[Path]:
    """Writes folder/figure6.{png,svg} (and figure6-validation.* for validation runs)."""
    return _save_by_split(build_figure6, runs, folder, "figure6")


def build_figure4(runs: Sequence[RunRecord], split: str = TEST) -> Any:
    """Figure 4 of the ImageNet runs evaluated on `split`, or None without any.

    Plain nets left, ResNets right (18 against 34 layers in the paper), y from 20 to 60%,
    x in 10^4 iterations. "test" here is ImageNet's validation set, as in the paper.
    """
    groups = _of_split(runs, split, "imagenet")
    panels = [("plain", [g for g in groups if g.arch == "plain"]),
              ("ResNet", [g for g in groups if g.arch == "residual"])]
    shown = [run for run in runs if run.eval_split == split and run.family == "imagenet"]
    caption = ("training (dashed) and validation-set (bold) error" if split == TEST
               else f"training (dashed) and held-out (bold) error\n({HELD_OUT})")
    return _curve_figure(panels, FIGURE4_ERROR_RANGE, split,
                         figure_title(shown, f"Figure 4\n{caption}"))


def figure4(runs: Sequence[RunRecord], folder: Path) -> list[Path]:
    """Writes folder/figure4.{png,svg} (and figure4-validation.* for held-out runs)."""
    return _save_by_split(build_figure4, runs, folder, "figure4")


def _depth_free_recipe(group: RunGroup) -> str | None:
    """The recipe without the depth: the nets one line of the degradation plot may join."""
    config = copy.deepcopy(group.runs[0].config)
    if not config:
        return None
    config.get("model", {}).pop("depth", None)
    return run_identity.recipe_fingerprint(config)


def build_degradation(runs: Sequence[RunRecord], split: str = TEST) -> Any:
    """Final training error (left) and test or validation error (right), %, against depth.

    One line per (data set, plain or shortcut option, recipe but for the depth): plain dashed,
    residual solid; points are the mean over completed seeds, error bars the sample std (ddof=1)
    where a net has several. How many seeds stand behind the points: in the legend ("plain, 3
    seeds") for a line whose points share a count, beside each point for one whose do not, and
    only in the title ("1 seed per net") where every net has one. None when no run of `split`
    completed.
    """
    groups = [group for group in group_runs(runs)
              if group.completed and group.eval_split == split]
    if not groups:
        return None
    datasets = {group.dataset for group in groups}
    lines: dict[tuple, list[RunGroup]] = {}
    for group in groups:
        key = (group.dataset, group.arch, group.shortcut or "", _depth_free_recipe(group) or "")
        lines.setdefault(key, []).append(group)
    names = {}
    for kind in {key[:3] for key in lines}:
        keys = [key for key in lines if key[:3] == kind]
        names.update(zip(keys, name_variants(
            [[run for group in lines[key] for run in group.runs] for key in keys])))
    evaluated = "test" if split == TEST else "validation"
    panels = [(field, heading) for field, heading in (
        ("final_train_error", "training error"), ("final_test_error", f"{evaluated} error"))
        if any(group.stat(field) for group in groups)]
    fig, axes = new_figure(1, len(panels), sharey=False)
    depths = sorted({group.depth for group in groups})
    several = any(len(group.completed) > 1 for group in groups)
    for ax, (field, heading) in zip(axes[0], panels):
        for key, members in lines.items():
            dataset, arch, shortcut, _ = key
            stats = [(g.depth, g.stat(field)) for g in members if g.stat(field) is not None]
            if not stats:
                continue
            label = "plain" if arch == "plain" else f"ResNet ({shortcut})" if shortcut else "ResNet"
            label += f", {dataset}" if len(datasets) > 1 else ""
            label += f", {names[key]}" if names[key] else ""
            counts = {stat.n for _, stat in stats}
            if several and len(counts) == 1:
                label += f", {seeds_text(next(iter(counts)))}"
            drawn = ax.errorbar([d for d, _ in stats], [100 * s.mean for _, s in stats],
                                yerr=[100 * (s.std or 0.0) for _, s in stats], capsize=3,
                                marker="o" if arch == "plain" else "s",
                                linestyle="--" if arch == "plain" else "-", label=label)
            if several and len(counts) > 1:
                for depth, stat in stats:
                    ax.annotate(seeds_text(stat.n), xy=(depth, 100 * stat.mean),
                                xytext=(5, 3), textcoords="offset points", fontsize="x-small",
                                color=drawn.lines[0].get_color())
        if depths[-1] > 10 * depths[0]:  # 20 ... 1202 layers: a log axis keeps 20-110 apart
            ax.set_xscale("log")
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.minorticks_off()
        ax.set_title(f"final {heading}")
        ax.set_xlabel("layers")
        ax.set_ylabel(f"{heading} (%)")
        ax.set_ylim(*_with_margin(0.0, ax.get_ylim()[1]))  # a net at 0% stays in sight
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    what = "final error against depth\n" + (
        "mean ± std over seeds" if several else "1 seed per net: no spread measured")
    if split != TEST:
        what += f"\n({HELD_OUT})"
    fig.suptitle(figure_title((run for g in groups for run in g.runs), what), fontsize="medium")
    return fig


def degradation_plot(runs: Sequence[RunRecord], folder: Path) -> list[Path]:
    """Writes folder/degradation.{png,svg} (and degradation-validation.* for validation runs)."""
    return _save_by_split(build_degradation, runs, folder, "degradation")


def build_figure7(runs: Sequence[RunRecord]) -> Any:
    """Figure 7: std of each 3x3 layer's response (after BN, before ReLU/addition), y from 0.

    Top: layers in network order; bottom: sorted by magnitude, largest first. One line per run
    that has layer_responses.json: plain nets dashed, residual nets solid. Responses of runs
    trained with a held-out split were measured on those held-out images, and say so.
    None when no run has responses.
    """
    groups = [group for group in group_runs(runs)
              if any(run.layer_response_std for run in group.runs)]
    if not groups:
        return None
    colour_of = colours((group.depth, group.variant or "", group.eval_split) for group in groups)
    fig, axes = new_figure(2, 1, panel_size=(8.0, 3.2))  # wide, as the paper's
    top, bottom = axes[0][0], axes[1][0]
    for group in sorted(groups, key=lambda g: (g.arch != "plain", g.depth, g.eval_split)):
        drawn = [run for run in group.runs if run.layer_response_std]
        for run in drawn:
            std = run.layer_response_std
            label = group.label + (f" (seed {run.seed})" if len(drawn) > 1 else "")
            label += " (val. images)" if group.eval_split != TEST else ""
            style = {"color": colour_of[(group.depth, group.variant or "", group.eval_split)],
                     "linewidth": 1.2, "linestyle": "--" if group.arch == "plain" else "-"}
            layers = range(1, len(std) + 1)
            top.plot(layers, std, label=label, **style)
            bottom.plot(layers, sorted(std, reverse=True), **style)
    top.set_xlabel("layer index (original)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    for ax in (top, bottom):
        ax.set_ylabel("std")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    top.legend(fontsize="small", ncols=2)
    shown = [run for group in groups for run in group.runs if run.layer_response_std]
    fig.suptitle(figure_title(shown, "Figure 7\nstd of each 3x3 layer's response"),
                 fontsize="medium")
    return fig


def figure7(runs: Sequence[RunRecord], folder: Path) -> list[Path]:
    """Writes folder/figure7.{png,svg}; [] when no run has layer responses."""
    fig = build_figure7(runs)
    return [] if fig is None else save_figure(fig, Path(folder), "figure7")


def figure7_note(runs: Sequence[RunRecord], folder: Path) -> str | None:
    """What to run when trained CIFAR-family runs (the runs `analyze` measures) have no layer
    responses, so that Figure 7 is not drawn or leaves them out; None when none lacks them."""
    trained = [run for run in runs if run.completed and run.family == "cifar"]
    missing = [run for run in trained if not run.layer_response_std]
    if not missing:
        return None
    if len(missing) == len(trained):
        return (f"no Figure 7 for {folder}: no run has layer responses yet; run "
                f"`resdepth analyze {folder}`, then `resdepth plot {folder}` again")
    shown = " ".join(str(run.path) for run in missing[:3]) + (" ..." if len(missing) > 3 else "")
    return (f"Figure 7 of {folder} leaves out {len(missing)} of {len(trained)} trained runs, "
            f"which have no layer responses; run `resdepth analyze {shown}`, then "
            f"`resdepth plot {folder}` again")


@dataclasses.dataclass(frozen=True)
class Plotted:
    """The figure files `plot` wrote, and notes on figures it could not draw or drew without
    some runs (one line each), naming the command that would draw them where there is one."""

    paths: list[Path]
    notes: list[str]


def plot_experiment(folder: Path) -> Plotted:
    """Every figure the runs under one experiment folder allow, written into that folder."""
    folder = Path(folder)
    runs = load_runs(folder)
    paths = [*figure6(runs, folder), *degradation_plot(runs, folder),
             *figure7(runs, folder), *signals_figure(runs, folder), *figure4(runs, folder)]
    notes = [figure7_note(runs, folder), signals_note(runs, folder)]
    return Plotted(paths, [note for note in notes if note])


def plot_folder(folder: Path) -> Plotted:
    """Figures for each experiment under `folder` (itself, or each child holding runs).

    Figures without data are skipped; a note says what to run for Figure 7, another which runs
    have no signals to draw. Raises
    NoRunsFound when `folder` holds no runs.
    """
    made = [plot_experiment(experiment) for experiment in require_experiments(Path(folder))]
    return Plotted([path for one in made for path in one.paths],
                   [note for one in made for note in one.notes])
