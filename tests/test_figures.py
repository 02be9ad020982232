"""The figures as matplotlib objects: panels, titles, axes, and labels of curves off the axis.

Figures of real tiny runs come from `recorded_runs` (tests/conftest.py: digits, plain/residual
8 and 14 layers, 30 iterations); the rest from RunRecords built in memory with `curve_run`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from resdepth.results.plots import (
    EDGE_MARGIN, build_degradation, build_figure4, build_figure6, build_figure7, plot_folder)
from resdepth.results.reading import load_runs
from resdepth.rundir.record import build_record
from resdepth.rundir.summary import VALIDATION


def curve_run(arch: str, depth: int, final_train: float, final_test: float, seed: int = 0,
              dataset: str = "cifar10", steps: int = 64000, learning_rate: float = 0.1,
              val_split: bool = False, experiment: str = "unit", responses: bool = False):
    """A completed run whose errors (fractions) fall linearly from 90% to the final ones."""
    residual = arch == "residual"
    name = f"resnet-{depth}-A-seed{seed}" if residual else f"plain-{depth}-seed{seed}"
    config = {"config": {"name": experiment, "data": {"dataset": dataset, "val_split": val_split},
                         "model": {"depth": depth, "residual": residual, "shortcut": "A"},
                         "optim": {"learning_rate": learning_rate}, "run": {"seed": seed}}}
    points = range(0, steps + 1, steps // 8)
    metrics = [{"type": kind, "step": step, key: 0.9 - (0.9 - final) * step / steps}
               for step in points
               for kind, key, final in (("train", "train_error", final_train),
                                        ("eval", "test_error", final_test))]
    summary = {"status": "completed", "experiment": experiment, "dataset": dataset,
               "final_train_error": final_train, "final_test_error": final_test,
               "steps_done": steps}
    layers = {"layers": [{"index": i, "std": 1.0 + i % 3} for i in range(depth - 1)]}
    return build_record(Path("/runs") / experiment / name, config, metrics, summary,
                        layer_responses=layers if responses else None)


def titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def texts(ax) -> list[str]:
    return [text.get_text() for text in ax.texts]


def legend(ax) -> list[str]:
    return ax.get_legend_handles_labels()[1]


def max_plotted(ax) -> float:
    return max(max(line.get_ydata()) for line in ax.get_lines())


def data_range(ax) -> tuple[float, float]:
    """The y range curves are drawn in: the axis less EDGE_MARGIN of it at each end."""
    low, high = ax.get_ylim()
    margin = (high - low) * EDGE_MARGIN / (1 + 2 * EDGE_MARGIN)
    return pytest.approx(low + margin), pytest.approx(high - margin)


# ---- Figure 6 ---------------------------------------------------------------------------------

def test_figure6_keeps_the_papers_axis_and_labels_a_curve_off_its_top():
    # The demo's headline: plain-56 ends at 57.9% training error, far above the 0-20% axis.
    runs = [curve_run("plain", 20, 0.0086, 0.0167), curve_run("plain", 56, 0.5789, 0.5133),
            curve_run("residual", 20, 0.0023, 0.02), curve_run("residual", 56, 0.0172, 0.0333)]

    fig = build_figure6(runs)

    plain, resnet = fig.axes
    assert titles(fig) == ["plain", "ResNet"]
    assert data_range(plain) == (0.0, 20.0)
    assert plain.get_xlabel() == "iter. (1e4)"
    assert max(max(line.get_xdata()) for line in plain.get_lines()) == pytest.approx(6.4)
    assert max_plotted(plain) == 20.0  # drawn at the top, not off the axis
    assert texts(plain) == ["plain-56 train 57.9%", "plain-56 test 51.3%"]
    assert texts(resnet) == []  # every ResNet curve ends on the axis
    assert legend(plain) == ["plain-20", "plain-56"]


def test_figure6_of_a_short_run_counts_plain_iterations_and_shows_a_curve_at_zero():
    runs = [curve_run("residual", 20, 0.0, 0.0033, steps=400),
            curve_run("plain", 56, 0.3688, 0.3733, steps=400)]

    fig = build_figure6(runs)

    for ax in fig.axes:
        assert ax.get_xlabel() == "iterations"
        assert max(max(line.get_xdata()) for line in ax.get_lines()) == 400
        assert ax.get_xlim()[1] >= 400
        low, high = ax.get_ylim()
        assert low < 0.0 < 20.0 < high
        for line in ax.get_lines():  # every point inside the frame, none on it
            assert all(low < y < high for y in line.get_ydata())
    resnet = fig.axes[1]
    train = next(line for line in resnet.get_lines() if line.get_linestyle() == "--")
    assert train.get_ydata()[-1] == 0.0
    assert resnet.get_ylim()[0] <= -0.02 * 20  # a visible gap below 0%, not a hair's breadth
    assert build_figure6([curve_run("residual", 20, 0.0, 0.0033, steps=10_000)]
                         ).axes[0].get_xlabel() == "iter. (1e4)"


def test_degradation_shows_a_net_at_zero_inside_the_axis():
    runs = [curve_run("plain", depth, train, 0.05, steps=400)
            for depth, train in ((20, 0.0), (56, 0.3688))]
    runs += [curve_run("residual", depth, 0.0, 0.01, steps=400) for depth in (20, 56)]

    fig = build_degradation(runs)

    training = fig.axes[0]
    low, high = training.get_ylim()
    assert low < 0.0 and high > 36.88
    assert low <= -0.02 * high  # the residual line at 0% is drawn above the frame


def test_figure6_panels_as_the_papers_and_never_empty():
    plain = [curve_run("plain", depth, 0.05, 0.08) for depth in (20, 56)]
    shallow = [curve_run("residual", depth, 0.01, 0.07) for depth in (20, 110)]
    deep = [curve_run("residual", 1202, 0.001, 0.079)]

    three = build_figure6(plain + shallow + deep)
    assert titles(three) == ["plain", "ResNet", "ResNet-110 and deeper"]
    assert legend(three.axes[1]) == ["ResNet-20", "ResNet-110"]
    assert legend(three.axes[2]) == ["ResNet-110", "ResNet-1202"]
    assert titles(build_figure6(plain + shallow)) == ["plain", "ResNet"]  # nothing above 110
    assert titles(build_figure6(shallow)) == ["ResNet"]  # no plain panel without plain runs
    assert titles(build_figure6(deep)) == ["ResNet-110 and deeper"]
    assert build_figure6([curve_run("plain", 34, 0.3, 0.3, dataset="imagenet")]) is None


def test_figure6_of_the_recorded_runs(recorded_runs: Path):
    fig = build_figure6(load_runs(recorded_runs))

    assert fig.get_suptitle().startswith("recorded on digits: Figure 6")
    assert titles(fig) == ["plain", "ResNet"]
    for ax in fig.axes:
        low, high = (value.expected for value in data_range(ax))
        assert low == pytest.approx(0.0) and high >= 20.0  # 0-20% unless no run ends below 20%
        assert max_plotted(ax) <= high + 1e-9
        assert ax.get_xlabel() == "iterations"  # 30 iterations: not 0.000-0.003 x 1e4
        assert max(max(line.get_xdata()) for line in ax.get_lines()) == 30
        # Every curve ending above the axis is named with its final value.
        ends_above = sum(line.get_ydata()[-1] == pytest.approx(high) for line in ax.get_lines())
        assert len(texts(ax)) >= ends_above
        assert all(text.endswith("%") for text in texts(ax))


def test_figure6_draws_each_recipe_of_a_net_apart():
    runs = [curve_run("residual", 56, 0.02, 0.07, seed=0),
            curve_run("residual", 56, 0.03, 0.08, seed=1, learning_rate=0.05)]
    assert legend(build_figure6(runs).axes[0]) == ["ResNet-56 (variant 1)", "ResNet-56 (variant 2)"]


def test_validation_runs_get_figures_of_their_own():
    tested = [curve_run("residual", 20, 0.01, 0.08)]
    held_out = [curve_run("residual", 20, 0.01, 0.09, seed=1, val_split=True)]

    test_fig = build_figure6(tested + held_out)
    validation_fig = build_figure6(tested + held_out, VALIDATION)

    assert legend(test_fig.axes[0]) == ["ResNet-20"]
    assert [line.get_ydata()[-1] for line in test_fig.axes[0].get_lines()] == [
        pytest.approx(1.0), pytest.approx(8.0)]  # the test run only
    assert "validation" in validation_fig.get_suptitle()
    assert "held out" in validation_fig.get_suptitle()
    assert legend(validation_fig.axes[0]) == ["ResNet-20, val. error"]
    assert build_figure6(tested, VALIDATION) is None
    assert build_figure6(held_out) is None
    degradation = build_degradation(tested + held_out, VALIDATION)
    assert [ax.get_title() for ax in degradation.axes] == [
        "final training error", "final validation error"]


def test_plot_folder_writes_validation_figures_apart(tmp_path: Path, recorded_runs: Path):
    experiment = Path(shutil.copytree(recorded_runs, tmp_path / "recorded"))
    summary_file = experiment / "resnet-8-A-seed0" / "summary.json"
    summary = json.loads(summary_file.read_text())
    summary_file.write_text(json.dumps({**summary, "eval_split": "validation"}))

    written = {path.name for path in plot_folder(experiment).paths}

    assert {"figure6.png", "figure6-validation.png", "degradation-validation.svg"} <= written


# ---- the other figures -------------------------------------------------------------------------

def test_every_figure_names_the_experiment_and_data_set(recorded_runs: Path):
    runs = load_runs(recorded_runs)
    for build, what in ((build_figure6, "Figure 6"), (build_degradation, "final error"),
                        (build_figure7, "Figure 7")):
        assert build(runs).get_suptitle().startswith(f"recorded on digits: {what}")
    imagenet = [curve_run("residual", 34, 0.25, 0.27, dataset="imagenet", experiment="table3")]
    assert build_figure4(imagenet).get_suptitle().startswith("table3 on imagenet: Figure 4")


def test_figure7_starts_at_zero(recorded_runs: Path):
    fig = build_figure7(load_runs(recorded_runs))
    assert len(fig.axes) == 2
    assert [ax.get_ylim()[0] for ax in fig.axes] == [0.0, 0.0]
    synthetic = build_figure7([curve_run("plain", 20, 0.1, 0.1, responses=True)])
    assert [ax.get_ylim()[0] for ax in synthetic.axes] == [0.0, 0.0]  # stds 1-3: not from 1


def test_figure4_clips_and_labels_and_has_no_empty_panel():
    resnets = [curve_run("residual", depth, 0.22, 0.25, dataset="imagenet", steps=600_000)
               for depth in (18, 34)]
    plain = [curve_run("plain", 34, 0.65, 0.62, dataset="imagenet", steps=600_000),
             curve_run("plain", 18, 0.27, 0.28, dataset="imagenet", steps=600_000)]

    assert titles(build_figure4(resnets)) == ["ResNet"]
    fig = build_figure4(plain + resnets)
    assert titles(fig) == ["plain", "ResNet"]
    ax = fig.axes[0]
    assert data_range(ax) == (20.0, 60.0)
    assert max_plotted(ax) == 60.0
    assert texts(ax) == ["plain-34 train 65.0%", "plain-34 test 62.0%"]
    assert ax.get_xlabel() == "iter. (1e4)"
    assert max(max(line.get_xdata()) for line in ax.get_lines()) == pytest.approx(60.0)
