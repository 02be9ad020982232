"""What every figure of `resdepth plot` shares: a new matplotlib figure, its title, its colours,
its iteration axis, and writing it as PNG and SVG.

Each file is written atomically (temporary file, then os.replace). matplotlib is imported only
when a figure is drawn, so importing this module (and the CLI) stays cheap.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from resdepth.rundir.record import RunRecord
from resdepth.rundir.storage import write_bytes_atomically

FORMATS = ("png", "svg")
PNG_DPI = 150
ITERATIONS_UNIT = 1e4  # x axes: iterations / 10^4, as the paper's
PAPER_AXIS_MIN_ITERATIONS = 10_000  # shorter runs: plain iterations (0.000-0.040 reads badly)
PANEL_SIZE = (5.0, 3.6)  # inches


def new_figure(rows: int, cols: int, panel_size: tuple[float, float] = PANEL_SIZE,
               **kwargs: Any):
    """(Figure, axes as a rows x cols array): a figure of `panel_size` (inches) per panel."""
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


def figure_title(runs: Iterable[RunRecord], what: str) -> str:
    """"demo on digits: Figure 6\n..." — the experiment(s) and data set(s) the runs come from;
    "digits: ..." where the experiment is named after its data set."""
    runs = list(runs)
    experiments = ", ".join(sorted({run.experiment for run in runs}))
    datasets = ", ".join(sorted({run.dataset for run in runs}))
    where = experiments if experiments == datasets else f"{experiments} on {datasets}"
    return f"{where}: {what}"


def colours(keys: Iterable[Any]) -> dict[Any, Any]:
    """One colour per key (a depth, or a depth and variant), the same in every panel."""
    import matplotlib

    palette = matplotlib.colormaps["tab10"].colors
    return {key: palette[index % len(palette)] for index, key in enumerate(sorted(set(keys)))}


def iteration_axis(longest: int) -> tuple[float, str]:
    """(unit, x label) of an axis of iterations reaching `longest`: 10^4 as on the paper's axes
    from PAPER_AXIS_MIN_ITERATIONS on, plain iterations for shorter runs."""
    if longest >= PAPER_AXIS_MIN_ITERATIONS:
        return ITERATIONS_UNIT, "iter. (1e4)"
    return 1, "iterations"
