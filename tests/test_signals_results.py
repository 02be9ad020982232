"""The results side of signals.jsonl (§4.1): the vanishing rule, the signals figure, the
verdicts in table.md and report.html, and the note on runs without signals.

Run directories are written by hand: config.json, metrics.jsonl and summary.json as a run
writes them, and signals.jsonl through `SignalsLog`, the training loop's own writer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from resdepth.results import vanishing
from resdepth.results.plots import plot_folder
from resdepth.results.reading import load_runs
from resdepth.results.report import write_report
from resdepth.results.signals_figure import build_signals_figure, marked_rows
from resdepth.results.tables import experiment_tables, to_markdown, write_table
from resdepth.results.vanishing import VANISHING_RATIO, backward_verdict, rule_text
from resdepth.rundir.signals import Signals, SignalsLog

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STEPS = tuple(range(0, 601, 50))  # a signals row every 50 iterations of 600
BOUNDARIES = [300, 450]  # the learning-rate drops
WARMUP_SWITCH = 100


# ---- helpers -------------------------------------------------------------------------------

def signals_of(rows: list[list[float | None]]) -> Signals:
    """Signals whose rows (steps 0, 50, ...) have these response_grad_rms values."""
    count = len(rows[0]) if rows else 2
    names = tuple(f"layer{index}" for index in range(count))
    return Signals(weighted=names, responses=names, steps=tuple(50 * i for i in range(len(rows))),
                   response_grad_rms=tuple(tuple(row) for row in rows))


def gradients(layers: int, step: int, collapse: bool) -> list[float]:
    """Per-layer backward signal: even for a healthy net, falling by a factor of 10 per layer
    towards the input (shallower layers first in the list) as training goes on in a collapsing
    one."""
    decay = 10.0 ** (-step / STEPS[-1]) if collapse else 1.0
    return [0.5 * decay ** (layers - 1 - index) for index in range(layers)]


def write_run(experiment: Path, arch: str, depth: int, seed: int = 0, collapse: bool = False,
              signals: bool = True, warmup_switch_step: int | None = WARMUP_SWITCH) -> Path:
    """A completed cifar10 run of 600 iterations; with `signals`, a row every 50 iterations
    whose backward signal collapses towards the input layers when `collapse`."""
    residual = arch == "residual"
    folder = experiment / (f"resnet-{depth}-A-seed{seed}" if residual
                           else f"plain-{depth}-seed{seed}")
    folder.mkdir(parents=True)
    config = {"name": experiment.name, "data": {"dataset": "cifar10", "val_split": False},
              "model": {"depth": depth, "residual": residual, "shortcut": "A"},
              "optim": {"lr_schedule": "steps", "lr_boundaries_steps": BOUNDARIES,
                        "total_steps": STEPS[-1], "learning_rate": 0.1},
              "run": {"seed": seed, "tag": ""}}
    (folder / "config.json").write_text(json.dumps({"config": config, "code_version": "test"}))
    rows = [{"type": "train", "step": step, "train_error": 0.5, "train_loss": 1.0}
            for step in (300, 600)] + [{"type": "eval", "step": 600, "test_error": 0.4}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "summary.json").write_text(json.dumps({
        "status": "completed", "steps_done": STEPS[-1], "total_steps": STEPS[-1],
        "final_train_error": 0.5, "final_test_error": 0.4, "params": 1000,
        "warmup_switch_step": warmup_switch_step}))
    if signals:
        layers = depth - 1  # the 3x3 layers: the stem and two per block
        responses = ["stem", *(f"stage1.block{i // 2}.conv{i % 2 + 1}" for i in range(layers - 1))]
        weighted = [*responses, "head"]
        log = SignalsLog(folder / "signals.jsonl")
        log.start(weighted, responses)
        for step in STEPS:
            log.append_signals(step, {
                "weight_grad_rms": [0.01] * len(weighted), "weight_rms": [0.1] * len(weighted),
                "response_grad_rms": gradients(layers, step, collapse),
                "response_std": [1.0 + 0.01 * index for index in range(layers)]})
    return folder


def study(folder: Path, old_runs: int = 0) -> Path:
    """plain and residual nets of 8 and 14 layers with signals (plain-14's backward signal
    collapses), and `old_runs` seeds of plain-8 trained before signals were recorded."""
    write_run(folder, "plain", 8)
    write_run(folder, "residual", 8)
    write_run(folder, "plain", 14, collapse=True)
    write_run(folder, "residual", 14)
    for seed in range(1, old_runs + 1):
        write_run(folder, "plain", 8, seed=seed, signals=False)
    return folder


def verdicts(tables) -> dict[str, dict[str, str]]:
    """{run: row} of the backward-signals table."""
    [table] = [table for table in tables if "backward signals" in table.title]
    return {row["run"]: row for row in table.rows}


# ---- the rule -------------------------------------------------------------------------------

def test_the_rule_fires_when_a_row_after_the_first_falls_below_the_threshold():
    low = VANISHING_RATIO / 2
    verdict = backward_verdict(signals_of([[1.0, 1.0], [1.0, 0.5], [1.0, low], [1.0, 0.5]]))
    assert verdict.vanished is True
    assert (verdict.lowest_ratio, verdict.lowest_step) == (pytest.approx(low), 100)
    assert (verdict.start_ratio, verdict.start_step) == (1.0, 0)
    assert (verdict.end_ratio, verdict.end_step) == (0.5, 150)  # recovered: it still vanished


def test_the_rule_holds_at_the_threshold_and_above():
    healthy = backward_verdict(signals_of([[1.0, 1.0], [1.0, VANISHING_RATIO], [2.0, 1.0]]))
    assert healthy.vanished is False
    assert healthy.lowest_ratio == pytest.approx(VANISHING_RATIO)


def test_the_first_row_is_shown_but_not_judged():
    verdict = backward_verdict(signals_of([[1.0, 1e-6], [1.0, 0.5]]))
    assert verdict.vanished is False
    assert verdict.start_ratio == pytest.approx(1e-6)


def test_a_single_row_or_none_gives_no_verdict():
    single = backward_verdict(signals_of([[1.0, 1e-6]]))
    assert single.vanished is None and single.lowest_ratio is None
    assert single.start_ratio == single.end_ratio == pytest.approx(1e-6)
    empty = backward_verdict(signals_of([]))
    assert empty == vanishing.Verdict(None, None, None, None, None, None, 0, None)


def test_a_diverged_run_with_nulls():
    """A row with a null (a value not finite) has no ratio: it is counted, never judged."""
    diverged = backward_verdict(signals_of([[1.0, 1.0], [1.0, 0.5], [None, 1e-9], [None, None]]))
    assert diverged.vanished is False and diverged.unmeasured == 2
    assert diverged.end_ratio is None and diverged.lowest_step == 50
    all_null = backward_verdict(signals_of([[1.0, 1.0], [None, 1.0], [None, None]]))
    assert all_null.vanished is None and all_null.unmeasured == 2
    # A null in one row does not hide a collapse in another.
    assert backward_verdict(signals_of([[1.0, 1.0], [None, 1.0], [1.0, 1e-5]])).vanished is True


def test_the_rule_and_its_text_follow_the_constant(monkeypatch):
    signals = signals_of([[1.0, 1.0], [1.0, 0.3]])
    assert backward_verdict(signals).vanished is False
    assert f"below {VANISHING_RATIO:g}" in rule_text()
    monkeypatch.setattr(vanishing, "VANISHING_RATIO", 0.5)
    assert backward_verdict(signals).vanished is True
    assert "below 0.5 " in rule_text() and "under 1/2 " in rule_text()


# ---- the figure ----------------------------------------------------------------------------

def test_the_rows_drawn_are_the_first_after_each_change_of_learning_rate(tmp_path: Path):
    run = load_runs(write_run(tmp_path / "unit", "plain", 8))[0]
    assert marked_rows(run) == [
        (0, "iter. 0 (first)"), (3, "iter. 150 (after warm-up over)"),
        (7, "iter. 350 (after lr drop 1)"), (10, "iter. 500 (after lr drop 2)"),
        (12, "iter. 600 (last)")]
    # A warm-up that ended at the first drop marks one row for both; none, nothing.
    at_drop = load_runs(write_run(tmp_path / "b", "plain", 8, warmup_switch_step=300))[0]
    assert (7, "iter. 350 (after warm-up over, after lr drop 1)") in marked_rows(at_drop)
    none = load_runs(write_run(tmp_path / "c", "plain", 8, warmup_switch_step=None))[0]
    assert [label for _, label in marked_rows(none) if "warm-up" in label] == []


def test_the_figure_sets_plain_and_residual_side_by_side_per_depth(tmp_path: Path):
    runs = load_runs(study(tmp_path / "unit", old_runs=1))

    fig = build_signals_figure(runs)

    shown = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    titles = [ax.get_title() for ax in shown]
    assert titles == [
        "(a) backward: plain-8, seed 0", "(a) backward: ResNet-8, seed 0",
        "(b) forward: plain-8, seed 0", "(b) forward: ResNet-8, seed 0",
        "(c) backward ratio: 8 layers",
        "(a) backward: plain-14, seed 0", "(a) backward: ResNet-14, seed 0",
        "(b) forward: plain-14, seed 0", "(b) forward: ResNet-14, seed 0",
        "(c) backward ratio: 14 layers"]
    by_title = dict(zip(titles, shown))
    plain14 = by_title["(a) backward: plain-14, seed 0"]
    assert plain14.get_yscale() == "log"
    assert by_title["(b) forward: plain-14, seed 0"].get_yscale() == "linear"
    assert [line.get_label() for line in plain14.get_lines()] == [
        "iter. 0 (first)", "iter. 150 (after warm-up over)", "iter. 350 (after lr drop 1)",
        "iter. 500 (after lr drop 2)", "iter. 600 (last)"]
    # signals.jsonl keeps 7 significant digits
    assert list(plain14.get_lines()[-1].get_ydata()) == pytest.approx(gradients(13, 600, True),
                                                                      rel=1e-5)
    # The nets of a depth share the y axis, so plain and ResNet compare at a glance.
    resnet14 = by_title["(a) backward: ResNet-14, seed 0"]
    assert resnet14.get_ylim() == plain14.get_ylim()

    ratio = by_title["(c) backward ratio: 14 layers"]
    assert ratio.get_yscale() == "log"
    lines = {line.get_label(): line for line in ratio.get_lines()}
    assert set(lines) == {"plain-14, seed 0", "ResNet-14, seed 0",
                          f"vanishing below {VANISHING_RATIO:g}"}
    assert list(lines["plain-14, seed 0"].get_ydata()) == pytest.approx(
        [gradients(13, step, True)[0] / gradients(13, step, True)[-1] for step in STEPS],
        rel=1e-5)
    assert list(lines[f"vanishing below {VANISHING_RATIO:g}"].get_ydata()) == [
        VANISHING_RATIO] * 2
    assert "seed 0 of each net" in fig.get_suptitle()


def test_the_figure_draws_each_nets_lowest_seed_with_signals(tmp_path: Path):
    experiment = tmp_path / "unit"
    write_run(experiment, "plain", 8, seed=0, signals=False)
    write_run(experiment, "plain", 8, seed=2)
    write_run(experiment, "plain", 8, seed=1)

    fig = build_signals_figure(load_runs(experiment))

    titles = [ax.get_title() for ax in fig.axes if ax.axison]
    assert titles == ["(a) backward: plain-8, seed 1", "(b) forward: plain-8, seed 1",
                      "(c) backward ratio: 8 layers"]
    assert "lowest seed" in fig.get_suptitle()


def test_no_figure_without_signals(tmp_path: Path):
    experiment = tmp_path / "old"
    write_run(experiment, "plain", 8, signals=False)
    write_run(experiment, "residual", 8, signals=False)
    assert build_signals_figure(load_runs(experiment)) is None

    plotted = plot_folder(experiment)

    assert not any(path.stem == "signals" for path in plotted.paths)
    [note] = [note for note in plotted.notes if "signals.jsonl" in note]
    assert note == (f"2 of 2 runs of {experiment} have no signals.jsonl (trained before resdepth "
                    "recorded signals): no signals figure for them")


def test_plot_writes_the_figure_and_says_once_which_runs_have_none(tmp_path: Path):
    experiment = study(tmp_path / "unit", old_runs=3)

    plotted = plot_folder(experiment)

    written = {path.name for path in plotted.paths}
    assert {"signals.png", "signals.svg"} <= written
    assert (experiment / "signals.png").read_bytes().startswith(PNG_SIGNATURE)
    assert b"<svg" in (experiment / "signals.svg").read_bytes()[:2000]
    about_signals = [note for note in plotted.notes if "signals.jsonl" in note]
    assert about_signals == [f"3 of 7 runs of {experiment} have no signals.jsonl (trained "
                             "before resdepth recorded signals): no signals figure for them"]


def test_the_cli_prints_the_note_on_one_line(tmp_path: Path):
    from resdepth.cli.app import app

    experiment = study(tmp_path / "unit", old_runs=1)
    result = CliRunner().invoke(app, ["plot", str(experiment)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "signals.jsonl" in line]
    assert len(lines) == 1 and lines[0].startswith("note: 1 of 5 runs")
    assert lines[0].endswith("no signals figure for it")


# ---- table.md and report.html ---------------------------------------------------------------

def test_table_gives_each_runs_verdict_beside_the_rule(tmp_path: Path):
    experiment = study(tmp_path / "unit", old_runs=1)
    runs = load_runs(experiment)

    tables = experiment_tables(runs, "unit")
    rows = verdicts(tables)

    assert set(rows) == {"plain-8-seed0", "resnet-8-A-seed0", "plain-14-seed0",
                         "resnet-14-A-seed0"}  # plain-8-seed1 has no signals.jsonl
    collapsed, healthy = rows["plain-14-seed0"], rows["resnet-14-A-seed0"]
    assert collapsed["backward signal vanished"] == "yes"
    assert healthy["backward signal vanished"] == "no"
    assert collapsed["backward ratio, first row"] == "1 (iter. 0)"
    assert collapsed["backward ratio, last row"] == "1e-12 (iter. 600)"  # 12 layers of 1/10
    assert healthy["backward ratio, last row"] == "1 (iter. 600)"
    [table] = [table for table in tables if "backward signals" in table.title]
    assert table.notes[0] == rule_text()
    assert "1 run has no signals.jsonl" in table.notes[1]

    text = write_table(experiment, tables).read_text()
    assert f"_{rule_text()}_" in text
    assert ("| backward ratio, first row | backward ratio, last row | lowest backward ratio "
            "after the first row | backward signal vanished |") in text
    assert "| plain-14-seed0 | plain-14 | 0 | 1 (iter. 0) | 1e-12 (iter. 600) |" in text


def test_the_table_states_the_threshold_it_applied(tmp_path: Path, monkeypatch):
    experiment = study(tmp_path / "unit")
    monkeypatch.setattr(vanishing, "VANISHING_RATIO", 1e-20)
    text = to_markdown(experiment_tables(load_runs(experiment)))
    assert "below 1e-20 at some logged row" in text
    assert verdicts(experiment_tables(load_runs(experiment)))["plain-14-seed0"][
        "backward signal vanished"] == "no"


def test_runs_without_signals_get_no_verdict_table(tmp_path: Path):
    experiment = tmp_path / "old"
    write_run(experiment, "plain", 8, signals=False)
    titles = [table.title for table in experiment_tables(load_runs(experiment))]
    assert not any("backward signals" in title for title in titles)


def test_report_shows_the_figure_the_verdicts_and_the_rule(tmp_path: Path):
    experiment = study(tmp_path / "unit", old_runs=1)

    text = write_report(experiment).read_text()

    assert '<figure id="signals"><svg' in text
    assert "(<code>signals.svg</code> of <code>resdepth plot</code>)" in text
    assert "backward signals per run" in text
    verdict_table = text.split("backward signals per run", 1)[1]
    for run, answer in (("plain-14-seed0", "yes"), ("resnet-14-A-seed0", "no")):
        row = verdict_table.split(f"<tr><td>{run}</td><td>", 1)[1].split("</tr>", 1)[0]
        assert row.endswith(f"<td>{answer}</td>"), row
    assert f"below {vanishing.VANISHING_RATIO:g} at some logged row" in text
    assert "1 of 5 runs has no signals.jsonl" in text
    assert "Figures: Figure 6, Final error against depth (degradation), Signals." in text


def test_a_run_whose_signals_have_no_rows_yet_is_listed_without_a_verdict(tmp_path: Path):
    experiment = tmp_path / "unit"
    folder = write_run(experiment, "plain", 8, signals=False)
    SignalsLog(folder / "signals.jsonl").start(["stem", "head"], ["stem"])

    runs = load_runs(experiment)

    assert build_signals_figure(runs) is None
    row = verdicts(experiment_tables(runs))["plain-8-seed0"]
    assert row["backward signal vanished"] == "—" and row["backward ratio, first row"] == "—"
