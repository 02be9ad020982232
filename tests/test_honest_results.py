"""What the results say about themselves (issue 22, points 1, 9 and 10): how many seeds stand
behind a number, what to run for a figure that is missing, and the small things that misread.

Every study here is written by hand (config.json from the demo's experiment file, metrics,
summary), so each test takes well under a second; the commands run through the CLI.
"""

from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from resdepth.cli.app import RunDisplay, app
from resdepth.config import load_config
from resdepth.results.plots import build_degradation, build_figure6
from resdepth.results.reading import load_runs
from resdepth.training.events import Event

runner = CliRunner()
WIDE = {"COLUMNS": "200"}
DEMO = load_config("demo").to_dict()


def write_run(experiment: Path, arch: str, depth: int, seed: int, train: float, test: float,
              *, dataset: str = "digits", name: str = "demo", responses: bool = False) -> Path:
    """A completed run of `experiment` as a run writes it: the demo's recipe for this net and
    seed, ten logged rows, a summary with its final errors (fractions)."""
    config = copy.deepcopy(DEMO)
    config["name"] = name
    config["data"]["dataset"] = dataset
    config["model"].update(depth=depth, residual=arch == "residual")
    config["run"]["seed"] = seed
    folder = experiment / (f"plain-{depth}-seed{seed}" if arch == "plain"
                           else f"resnet-{depth}-A-seed{seed}")
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"config": config, "code_version": "test"}))
    rows = []
    for step in range(40, 401, 40):
        late = step / 400
        rows += [{"type": "train", "step": step, "train_error": 0.9 - (0.9 - train) * late,
                  "train_loss": 1.0, "learning_rate": 0.1},
                 {"type": "eval", "step": step, "test_error": 0.9 - (0.9 - test) * late}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "summary.json").write_text(json.dumps({
        "status": "completed", "steps_done": 400, "total_steps": 400, "params": 852_730,
        "final_train_error": train, "final_test_error": test, "eval_split": "test"}))
    if responses:
        layers = [{"index": index, "name": f"layer{index}", "std": 1.0 + index / 10}
                  for index in range(depth - 2)]
        (folder / "layer_responses.json").write_text(json.dumps({"layers": layers}))
    return folder


def one_seed_demo(experiment: Path, responses: bool = False) -> Path:
    """The demo's four nets, seed 0 only (this machine's final errors)."""
    for arch, depth, train, test in (("plain", 20, 0.0, 0.0133), ("plain", 56, 0.3688, 0.3733),
                                     ("residual", 20, 0.0, 0.0033), ("residual", 56, 0.0, 0.0233)):
        write_run(experiment, arch, depth, 0, train, test, responses=responses)
    return experiment


def invoke(*args: str):
    result = runner.invoke(app, list(args), env=WIDE)
    assert result.exit_code == 0, result.output
    return result


# ---- point 1: one seed is one seed ----------------------------------------------------------

def test_a_one_seed_study_says_1_seed_and_never_mean_and_std(tmp_path: Path):
    demo = one_seed_demo(tmp_path / "demo")

    shown = invoke("table", str(demo)).output
    written = (demo / "table.md").read_text()
    invoke("report", str(demo))
    report = (demo / "report.html").read_text()

    for text in (shown, written, report):
        assert "± std" not in text and "± sample std" not in text, text
        assert "train err. % (1 seed)" in text and "test err. % (1 seed)" in text
    assert "one seed per net" in written
    # The degradation plot's title says so too (its SVG draws text as paths).
    title = build_degradation(load_runs(demo)).get_suptitle()
    assert "1 seed per net" in title and "±" not in title


def test_several_seeds_give_mean_and_std_of_both_errors_and_count_the_seeds(tmp_path: Path):
    demo = one_seed_demo(tmp_path / "demo")
    write_run(demo, "plain", 56, 1, 0.6469, 0.6267)
    write_run(demo, "plain", 56, 2, 0.4891, 0.48)

    invoke("table", str(demo))
    rows = {line.split(" | ")[1]: line for line in (demo / "table.md").read_text().splitlines()
            if line.startswith("| plain |")}
    # Training error with its spread (sample std, ddof=1), then the test error's, then the best.
    assert "| 3 | 50.16 ± 13.95 | 49.33 ± 12.72 | 37.33 |" in rows["56"]
    assert "| 1 | 0.00 | 1.33 | 1.33 |" in rows["20"]  # one run: its errors, no spread

    fig = build_degradation(load_runs(demo))
    legend = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert legend == ["plain", "ResNet (A), 1 seed"]  # plain's points: 1 and 3 seeds, beside each
    beside = sorted(text.get_text() for text in fig.axes[0].texts)
    assert beside == ["1 seed", "3 seeds"]
    assert "mean ± std over seeds" in fig.get_suptitle()


# ---- point 9: Figure 7 missing says what to run ------------------------------------------------

def test_plot_says_what_to_run_when_no_run_has_layer_responses(tmp_path: Path):
    demo = one_seed_demo(tmp_path / "demo")

    result = invoke("plot", str(demo))

    assert not (demo / "figure7.png").exists()
    assert f"resdepth analyze {demo}" in result.output and "Figure 7" in result.output


def test_plot_names_the_runs_figure7_leaves_out(tmp_path: Path):
    demo = one_seed_demo(tmp_path / "demo", responses=True)
    late = write_run(demo, "plain", 56, 1, 0.6469, 0.6267)  # trained after `analyze` ran

    result = invoke("plot", str(demo))

    assert (demo / "figure7.png").exists()
    assert "leaves out 1 of 5" in result.output and f"resdepth analyze {late}" in result.output
    late.joinpath("layer_responses.json").write_text(
        (demo / "plain-56-seed0" / "layer_responses.json").read_text())
    notes = [line for line in invoke("plot", str(demo)).output.splitlines()
             if line.startswith("note:")]
    # Nothing left to run: the one note left says these hand-made runs have no signals.jsonl.
    assert len(notes) == 1 and "no signals.jsonl" in notes[0], notes


# ---- point 10: the small things --------------------------------------------------------------

def test_a_mistyped_option_gets_only_close_suggestions():
    bogus = runner.invoke(app, ["train", "--bogus"], env=WIDE)
    assert bogus.exit_code == 2 and "No such option: --bogus" in bogus.output
    assert "--out" not in bogus.output  # "bogus" and "out" share only the dashes
    close = runner.invoke(app, ["train", "--dept", "8"], env=WIDE)
    assert close.exit_code == 2 and "--depth" in close.output


@pytest.mark.parametrize("command, usage", [("analyze", "RUN_DIR..."), ("evaluate", "RUN_DIR..."),
                                            ("plot", "FOLDER"), ("status", "FOLDER")])
def test_help_names_arguments_as_click_does(command: str, usage: str):
    result = runner.invoke(app, [command, "-h"], prog_name="resdepth", env=WIDE)
    line = next(line.strip() for line in result.output.splitlines() if "Usage:" in line)
    assert line == f"Usage: resdepth {command} [OPTIONS] {usage}"  # not {run_dirs}..., {folder}


def multiply_adds_column(text: str) -> list[str]:
    return [cells[-1] for cells in (re.findall(r"[\d.]+e\d", line) for line in text.splitlines())
            if cells]


def test_info_writes_each_tables_multiply_adds_in_one_unit_and_drops_empty_paper_columns():
    cifar = invoke("info", "--depths", "20,56,110").output
    assert multiply_adds_column(cifar) == ["40.6e6", "125.5e6", "252.9e6"]  # not 0.13e9, 0.25e9
    assert "paper params (Table 6)" in cifar and "paper FLOPs" not in cifar  # Table 1 is ImageNet's
    imagenet = invoke("info", "--dataset", "imagenet", "--depths", "18,50").output
    assert "paper params" not in imagenet and "paper FLOPs (Table 1)" in imagenet
    assert "3.86e9" in imagenet and "3.8e9" in imagenet
    digits = invoke("info", "--dataset", "digits", "--depths", "20,110").output
    assert "paper" not in digits and multiply_adds_column(digits) == ["2.5e6", "15.8e6"]


def table6_rows(folder: Path) -> list[str]:
    text = (folder / "table.md").read_text()
    return [line for line in text.split("## ")[1].splitlines() if line.startswith("| ")][1:]


def test_table6_rows_of_the_paper_only_beside_a_study_of_its_depths(tmp_path: Path):
    small = tmp_path / "small"
    for depth in (8, 14):
        write_run(small, "residual", depth, 0, 0.01, 0.05, dataset="cifar10", name="small")
    invoke("table", str(small))
    assert [row.split(" | ")[1] for row in table6_rows(small)] == ["8", "14"]

    paper_depths = tmp_path / "paper_depths"
    write_run(paper_depths, "residual", 20, 0, 0.01, 0.09, dataset="cifar10", name="paper")
    invoke("table", str(paper_depths))
    layers = [row.split(" | ")[1] for row in table6_rows(paper_depths)]
    assert layers == ["20", "32", "44", "56", "110", "1202"]  # Table 6's others, for reference


def test_the_reports_shared_settings_leave_out_what_no_run_reads(tmp_path: Path):
    demo = one_seed_demo(tmp_path / "demo")
    invoke("report", str(demo))
    shared = (demo / "report.html").read_text().split("Settings every run shares")[1]
    listed = re.findall(r"<td><code>([\w.]+)</code></td>", shared)
    assert "optim.learning_rate" in listed and "data.dataset" in listed
    for unread in ("data.image_size", "run.eval_examples", "optim.plateau_threshold",
                   "data.pad_pixels"):  # ImageNet's, the plateau schedule's, augmentation's
        assert unread not in listed
        assert unread in shared  # named once, as left out


def test_the_progress_bar_never_cuts_a_figure_at_80_columns():
    screen = io.StringIO()
    terminal = Console(file=screen, width=80, force_terminal=True, color_system=None)
    row = {"train_loss": 0.0023, "train_error": 0.0, "learning_rate": 0.001, "images_per_s": 1797.0}
    with RunDisplay("plain-20-seed1", Path("results/demo/plain-20-seed1"), "digits",
                    out=terminal) as display:
        for event in (Event("start", 0, 400, {"params": 269_434, "resumed": False}),
                      Event("eval", 380, 400, {"test_error": 0.0167}),
                      Event("train", 390, 400, row)):
            display(event)
    bar = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line)
           for line in screen.getvalue().splitlines() if "390/400" in line][-1]
    assert "…" not in bar and len(bar) <= 80, bar
    assert "test 1.67% @380 err 0.0% loss 0.002" in bar  # whole figures, most telling first


def test_a_figure_title_names_a_data_set_once(tmp_path: Path):
    # `resdepth train --dataset digits` files its run under the experiment "digits".
    study = tmp_path / "digits"
    write_run(study, "plain", 8, 0, 0.08, 0.04, name="digits")
    title = build_figure6(load_runs(study)).get_suptitle()
    assert title.startswith("digits: Figure 6") and "digits on digits" not in title
