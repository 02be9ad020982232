"""The paper's figures redrawn from run directories: Figures 4, 6, 7 and error against depth.

Each figure is written as PNG and SVG, each file atomically (temporary file, then os.replace),
and each function returns the paths it wrote, or [] when the runs hold nothing to draw.
Errors are fractions in the runs and percent on the axes. matplotlib is imported only when a
figure is drawn, so importing this module (and the CLI) stays cheap.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from resdepth.results import RunRecord, group_runs, load_runs, require_experiments
from resdepth.run_files import write_bytes_atomically

FORMATS = ("png", "svg")
PNG_DPI = 150
IMAGENET_TRAIN_IMAGES = 1_281_167  # to turn iterations into epochs where a run logged no epoch
FIGURE6_ERROR_RANGE = (0.0, 20.0)  # percent, the paper's y axis
FIGURE4_ERROR_RANGE = (20.0, 60.0)
PANEL_SIZE = (5.0, 3.6)  # inches
THIN, BOLD = 0.8, 2.0  # line widths: training error thin, test error bold, as in the paper


def _new_figure(rows: int, cols: int, panel_size: tuple[float, float] = PANEL_SIZE,
                **kwargs: Any):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # not pyplot: no global figure registry to leak

    fig = Figure(figsize=(panel_size[0] * cols, panel_size[1] * rows), layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False, **kwargs)


def save_figure(fig: Any, folder: Path, stem: str) -> list[Path]:
    """Writes `fig` as folder/stem.png and folder/stem.svg atomically; returns both paths."""
    paths = []
    for fmt in FORMATS:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=PNG_DPI)
        paths.append(write_bytes_atomically(Path(folder) / f"{stem}.{fmt}", buffer.getvalue()))
    return paths


def _first_seed_runs(runs: Iterable[RunRecord]) -> list[RunRecord]:
    """One run per net: the lowest seed, so curves are real runs and not averages of them."""
    return [group.runs[0] for group in group_runs(runs)]


def _depth_colours(runs: Sequence[RunRecord]) -> dict[int, Any]:
    """One colour per depth, the same in every panel of a figure."""
    import matplotlib

    palette = matplotlib.colormaps["tab10"].colors
    depths = sorted({run.depth for run in runs})
    return {depth: palette[index % len(palette)] for index, depth in enumerate(depths)}


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


def _percent(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def _curve_panels(runs: Sequence[RunRecord], folder: Path, stem: str, x_label: str,
                  x_of: Any, paper_range: tuple[float, float], title: str) -> list[Path]:
    """Plain nets left, residual nets right: training error thin dashed, test error bold."""
    runs = [run for run in _first_seed_runs(runs) if run.train or run.evals]
    if not runs:
        return []
    colours = _depth_colours(runs)
    fig, axes = _new_figure(1, 2, sharey=True)
    for ax, arch, heading in zip(axes[0], ("plain", "residual"), ("plain", "ResNet")):
        for run in (r for r in runs if r.arch == arch):
            colour = colours[run.depth]
            if run.train:
                ax.plot([x_of(run, p) for p in run.train], [100 * p.error for p in run.train],
                        color=colour, linewidth=THIN, linestyle="--")
            # A diverged or unfinished run keeps its curves, and says so in the legend.
            label = run.label if run.completed else f"{run.label} ({run.status})"
            if run.evals:
                ax.plot([x_of(run, p) for p in run.evals], [100 * p.error for p in run.evals],
                        color=colour, linewidth=BOLD, label=label)
        ax.set_title(heading)
        ax.set_xlabel(x_label)
        ax.set_xlim(left=0)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 3))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize="small")
    axes[0][0].set_ylabel("error (%)")
    finals = [_percent(run.final_test_error) for run in runs]
    axes[0][0].set_ylim(*_error_limits(paper_range, finals))
    fig.suptitle(title, fontsize="medium")
    return save_figure(fig, folder, stem)


def figure6(runs: Sequence[RunRecord], folder: Path) -> list[Path]:
    """Figure 6: CIFAR-family training (thin dashed) and test (bold) error (%) against iterations.

    Plain nets left, residual nets right, one colour per depth, y from 0 to 20% as in the paper
    (wider only if no run ends below 20%). Where a net has several seeds, the lowest seed's
    curves are drawn (a real run, not an average). Writes folder/figure6.{png,svg}.
    """
    cifar = [run for run in runs if run.family == "cifar"]
    return _curve_panels(cifar, Path(folder), "figure6", "iter.", lambda run, p: p.step,
                         FIGURE6_ERROR_RANGE, "dashed: training error, bold: test error")


def _epoch(run: RunRecord, point: Any) -> float:
    if point.epoch is not None:
        return point.epoch
    batch = run.config.get("optim", {}).get("batch_size", 256)
    return point.step * batch / IMAGENET_TRAIN_IMAGES


def figure4(runs: Sequence[RunRecord], folder: Path) -> list[Path]:
    """Figure 4: ImageNet training (thin dashed) and validation (bold) error (%) against epochs.

    Plain nets left, residual nets right (18 against 34 layers in the paper); lowest seed per
    net. Writes folder/figure4.{png,svg}.
    """
    imagenet = [run for run in runs if run.family == "imagenet"]
    return _curve_panels(imagenet, Path(folder), "figure4", "epochs", _epoch,
                         FIGURE4_ERROR_RANGE, "dashed: training error, bold: validation error")


def degradation_plot(runs: Sequence[RunRecord], folder: Path) -> list[Path]:
    """Final training error (left) and test error (right), percent, against depth.

    One line for plain nets (dashed) and one per residual shortcut option (solid); points are the
    mean over completed seeds, error bars the sample std (ddof=1) where a net has several.
    Writes folder/degradation.{png,svg}.
    """
    groups = [group for group in group_runs(runs) if group.completed]
    if not groups:
        return []
    datasets = {group.dataset for group in groups}
    lines: dict[tuple[str, str, str | None], list[Any]] = {}
    for group in groups:
        lines.setdefault((group.dataset, group.arch, group.shortcut), []).append(group)
    fig, axes = _new_figure(1, 2, sharey=False)
    panels = (("final_train_error", "training error"), ("final_test_error", "test error"))
    for ax, (field, heading) in zip(axes[0], panels):
        for (dataset, arch, shortcut), members in lines.items():
            stats = [(group.depth, group.stat(field)) for group in members]
            stats = [(depth, stat) for depth, stat in stats if stat is not None]
            if not stats:
                continue
            label = "plain" if arch == "plain" else f"ResNet ({shortcut})" if shortcut else "ResNet"
            if len(datasets) > 1:
                label = f"{label}, {dataset}"
            ax.errorbar([d for d, _ in stats], [100 * s.mean for _, s in stats],
                        yerr=[100 * (s.std or 0.0) for _, s in stats], capsize=3,
                        marker="o" if arch == "plain" else "s",
                        linestyle="--" if arch == "plain" else "-", label=label)
        depths = sorted({group.depth for group in groups})
        if depths[-1] > 10 * depths[0]:  # 20 ... 1202 layers: a log axis keeps 20-110 apart
            ax.set_xscale("log")
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.minorticks_off()
        ax.set_title(f"final {heading}")
        ax.set_xlabel("layers")
        ax.set_ylabel(f"{heading} (%)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.suptitle("mean ± std over seeds", fontsize="medium")
    return save_figure(fig, Path(folder), "degradation")


def figure7(runs: Sequence[RunRecord], folder: Path) -> list[Path]:
    """Figure 7: std of each 3x3 layer's response (after BN, before ReLU/addition).

    Top: layers in network order; bottom: sorted by magnitude, largest first. One line per run
    that has layer_responses.json: plain nets dashed, residual nets solid, one colour per depth.
    Returns [] when no run has responses. Writes folder/figure7.{png,svg}.
    """
    runs = [run for run in runs if run.layer_response_std]
    if not runs:
        return []
    runs = sorted(runs, key=lambda run: (run.arch != "plain", run.depth, run.seed))
    colours = _depth_colours(runs)
    seeds_per_net: dict[str, int] = {}
    for run in runs:
        seeds_per_net[run.label] = seeds_per_net.get(run.label, 0) + 1
    fig, axes = _new_figure(2, 1, panel_size=(8.0, 3.2))  # wide, as the paper's
    top, bottom = axes[0][0], axes[1][0]
    for run in runs:
        std = run.layer_response_std
        label = run.label + (f" (seed {run.seed})" if seeds_per_net[run.label] > 1 else "")
        style = {"color": colours[run.depth], "linewidth": 1.2,
                 "linestyle": "--" if run.arch == "plain" else "-"}
        layers = range(1, len(std) + 1)
        top.plot(layers, std, label=label, **style)
        bottom.plot(layers, sorted(std, reverse=True), **style)
    top.set_xlabel("layer index (original)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    for ax in (top, bottom):
        ax.set_ylabel("std")
        ax.grid(alpha=0.3)
    top.legend(fontsize="small", ncols=2)
    return save_figure(fig, Path(folder), "figure7")


def plot_experiment(folder: Path) -> list[Path]:
    """Every figure the runs under one experiment folder allow, written into that folder."""
    folder = Path(folder)
    runs = load_runs(folder)
    return [*figure6(runs, folder), *degradation_plot(runs, folder),
            *figure7(runs, folder), *figure4(runs, folder)]


def plot_folder(folder: Path) -> list[Path]:
    """Figures for each experiment under `folder` (itself, or each child holding runs).

    Returns the paths written; figures without data are skipped. Raises NoRunsFound when
    `folder` holds no runs.
    """
    return [path for experiment in require_experiments(Path(folder))
            for path in plot_experiment(experiment)]
