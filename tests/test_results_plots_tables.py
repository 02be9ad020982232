"""Reading runs back, the paper's figures and tables.

End-to-end plot and table tests use `recorded_runs` (tests/conftest.py): real tiny digits runs
plain-8, resnet-8-A (seeds 0 and 1), plain-14, resnet-14-A. Unit tests of the reader and the row
builders write small run directories by hand.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resdepth.results import paper as paper_figures
from resdepth.results.plots import plot_folder
from resdepth.results.reading import (
    NoRunsFound, find_experiments, group_runs, load_run, load_runs, require_experiments,
    summarize)
from resdepth.rundir.record import build_record
from resdepth.rundir.storage import write_bytes_atomically
from resdepth.results.tables import (
    Table, cifar_table, experiment_tables, format_params, imagenet_table, runs_table, to_markdown,
    write_table)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RUN_NAME = re.compile(r"^(plain|resnet)-(\d+)(?:-[ABC])?-seed(\d+)(?:-[A-Za-z0-9_.-]+)?$")


# ---- helpers -------------------------------------------------------------------------------

def config(depth: int, residual: bool, seed: int = 0, dataset: str = "cifar10",
           shortcut: str = "A", learning_rate: float = 0.1, val_split: bool = False,
           tag: str = "") -> dict:
    """config.json as a run writes it (docs/run-directory.md), with the fields read back."""
    return {"config": {"name": "unit", "data": {"dataset": dataset, "val_split": val_split},
                       "run": {"seed": seed, "tag": tag},
                       "model": {"depth": depth, "residual": residual, "shortcut": shortcut},
                       "optim": {"batch_size": 128, "learning_rate": learning_rate}},
            "code_version": "test"}


def record(depth: int, residual: bool, seed: int, test: float, train: float = 0.01,
           status: str = "completed", dataset: str = "cifar10"):
    name = f"{'resnet' if residual else 'plain'}-{depth}-seed{seed}"
    summary = {"status": status, "steps_done": 100, "params": 1000,
               "final_train_error": train, "final_test_error": test}
    return build_record(Path("/runs") / name, config(depth, residual, seed, dataset),
                        summary=summary)


def write_run(folder: Path, cfg: dict | None, metrics: list[dict] | None = None,
              summary: dict | None = None, **extra_json: dict) -> Path:
    folder.mkdir(parents=True)
    if cfg is not None:
        (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in metrics or []))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    for stem, data in extra_json.items():
        (folder / f"{stem}.json").write_text(json.dumps(data))
    return folder


def markdown_tables(text: str) -> dict[str, list[dict[str, str]]]:
    """{heading: rows as {column: cell}} for each '## heading' table of a markdown file."""
    tables, heading, header = {}, None, None
    for line in text.splitlines():
        if line.startswith("## "):
            heading, header = line[3:], None
            tables[heading] = []
        elif line.startswith("|") and heading is not None:
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            if header is None:
                header = cells
            elif not set("".join(cells)) <= set("-"):
                tables[heading].append(dict(zip(header, cells)))
    return tables


def pct(fraction: float) -> str:
    return f"{100 * fraction:.2f}"


# ---- end to end, on real tiny runs ---------------------------------------------------------

@pytest.fixture
def experiment(recorded_runs: Path, tmp_path: Path) -> Path:
    """A private copy of the recorded runs, so writing figures leaves the shared fixture alone."""
    return Path(shutil.copytree(recorded_runs, tmp_path / recorded_runs.name))


def recorded_summaries(folder: Path) -> dict[str, dict]:
    return {path.name: json.loads((path / "summary.json").read_text())
            for path in sorted(folder.iterdir()) if (path / "summary.json").is_file()}


def test_plot_folder_writes_png_and_svg_atomically(experiment: Path):
    written = plot_folder(experiment).paths

    # The signals figure once the runs record signals.jsonl (tests/test_signals_results.py).
    signals = ("signals",) if any(experiment.glob("*/signals.jsonl")) else ()
    expected = {experiment / f"{stem}.{fmt}"
                for stem in ("figure6", "degradation", "figure7", *signals)
                for fmt in ("png", "svg")}
    assert set(written) == expected
    for path in expected:
        data = path.read_bytes()
        assert len(data) > 1000
        if path.suffix == ".png":
            assert data.startswith(PNG_SIGNATURE)
        else:
            assert b"<svg" in data[:2000]
    leftovers = [p.name for p in experiment.iterdir()
                 if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert leftovers == []
    assert not (experiment / "figure4.png").exists()  # digits is not ImageNet


def test_plot_folder_on_a_parent_writes_into_each_experiment(experiment: Path):
    written = plot_folder(experiment.parent).paths
    assert written and all(path.parent == experiment for path in written)


def test_table_md_matches_the_recorded_summaries(experiment: Path):
    summaries = recorded_summaries(experiment)
    assert len(summaries) == 5

    path = write_table(experiment)

    assert path == experiment / "table.md"
    assert [p.name for p in experiment.iterdir() if p.name.endswith(".tmp")] == []
    tables = markdown_tables(path.read_text())
    layout = next(rows for heading, rows in tables.items() if "Table 6" in heading)
    per_run = next(rows for heading, rows in tables.items() if heading.endswith("runs"))

    # Every run has its row, with the errors summary.json holds.
    by_name = {row["run"]: row for row in per_run}
    assert set(by_name) == set(summaries)
    for name, summary in summaries.items():
        assert by_name[name]["test err. %"] == pct(summary["final_test_error"])
        assert by_name[name]["train err. %"] == pct(summary["final_train_error"])

    # One Table 6 row per net; over 2 seeds, mean ± sample std and best.
    groups: dict[tuple[str, str], list[dict]] = {}
    for name, summary in summaries.items():
        arch, depth, _ = RUN_NAME.match(name).groups()
        groups.setdefault(("plain" if arch == "plain" else "ResNet", depth), []).append(summary)
    assert sorted(len(members) for members in groups.values()) == [1, 1, 1, 2]
    paper_column = "paper CIFAR-10 test err. % (Table 6)"  # digits is labelled as not CIFAR-10
    rows = {(row["net"], row["layers"]): row for row in layout}
    for key, members in groups.items():
        row = rows[key]
        tests = [s["final_test_error"] for s in members]
        trains = [s["final_train_error"] for s in members]
        assert row["seeds"] == str(len(members))
        for column, values in (("test err. % (mean ± std)", tests),
                               ("train err. % (mean ± std)", trains)):
            if len(members) > 1:  # both errors with their spread
                assert row[column] == (
                    f"{pct(statistics.mean(values))} ± {pct(statistics.stdev(values))}")
            else:
                assert row[column] == pct(values[0])
        assert row["test err. % (best)"] == pct(min(tests))
        assert row["params (exact)"] == f"{members[0]['params']:,}"
        assert row[paper_column] == "—"  # Table 6 has no 8- or 14-layer nets

    # A depth-8/14 study on digits: no row of Table 6's depths 20 ... 1202, which it never ran.
    assert set(rows) == set(groups)


def test_recorded_runs_read_back(recorded_runs: Path):
    runs = load_runs(recorded_runs)
    summaries = recorded_summaries(recorded_runs)
    assert {run.name for run in runs} == set(summaries)
    for run in runs:
        assert run.dataset == "digits" and run.completed
        assert run.train and run.evals  # metrics.jsonl has both kinds of rows
        assert run.final_test_error == summaries[run.name]["final_test_error"]
    with_responses = {run.name for run in runs if run.layer_response_std}
    assert {"plain-8-seed0", "resnet-8-A-seed0", "plain-14-seed0",
            "resnet-14-A-seed0"} <= with_responses


# ---- unit tests: reading runs ----------------------------------------------------------------

def test_summarize_uses_the_sample_std_and_min():
    stat = summarize([0.1, 0.2, 0.3])
    assert stat.mean == pytest.approx(0.2)
    assert stat.std == pytest.approx(0.1)  # ddof=1; the population std would be 0.0816
    assert stat.best == 0.1 and stat.n == 3
    assert summarize([0.05]).std is None
    assert summarize([None, math.nan]) is None


def test_group_runs_over_seeds():
    runs = [record(20, True, seed, test) for seed, test in enumerate([0.08, 0.09, 0.10])]
    runs += [record(20, False, 0, 0.12, train=0.05), record(8, True, 0, 0.2)]

    groups = group_runs(runs)

    assert [(g.arch, g.depth, len(g.runs)) for g in groups] == [
        ("plain", 20, 1), ("residual", 8, 1), ("residual", 20, 3)]
    stat = groups[2].stat("final_test_error")
    assert (stat.mean, stat.best, stat.n) == (pytest.approx(0.09), 0.08, 3)
    assert stat.std == pytest.approx(0.01)
    assert groups[0].stat("final_train_error").mean == 0.05
    assert groups[0].shortcut is None  # a plain net has no shortcut option


def test_a_diverged_run_is_shown_as_such_and_left_out_of_the_mean():
    runs = [record(56, False, 0, 0.10), record(56, False, 1, 0.12),
            record(56, False, 2, 0.90, status="diverged"),
            record(110, False, 0, 0.90, status="diverged")]

    group = group_runs(runs)[0]
    assert group.stat("final_test_error").mean == pytest.approx(0.11)

    rows = {row["layers"]: row for row in cifar_table(runs).rows if row["net"] == "plain"}
    assert rows["56"]["seeds"] == "2 of 3 (1 diverged)"
    assert rows["56"]["test err. % (mean ± std)"] == "11.00 ± 1.41"
    assert rows["110"]["test err. % (mean ± std)"] == "diverged"
    assert rows["110"]["test err. % (best)"] == "diverged"
    per_run = {row["run"]: row for row in runs_table(runs).rows}
    assert per_run["plain-56-seed2"]["test err. %"] == "diverged"


def test_a_run_in_progress_is_tolerated(tmp_path: Path):
    metrics = [{"type": "train", "step": 10, "epoch": 0.9, "train_error": 0.5},
               {"type": "eval", "step": 20, "epoch": 1.7, "test_error": 0.4},
               {"type": "train", "step": 30, "epoch": 2.6, "train_error": 0.3},
               {"type": "eval", "step": 30, "epoch": 2.6, "test_error": 0.35}]
    # No config.json yet either: the folder's name says what the run is.
    path = write_run(tmp_path / "exp" / "resnet-20-A-seed3", None, metrics)
    with (path / "metrics.jsonl").open("a") as file:
        file.write('{"type": "train", "step": 40, "tr')  # a live run mid-write

    run = load_run(path)

    assert run.status == "running"
    assert (run.arch, run.depth, run.shortcut, run.seed) == ("residual", 20, "A", 3)
    assert run.steps == 30
    assert run.final_train_error == 0.3 and run.final_test_error == 0.35
    assert [p.step for p in run.evals] == [20, 30]
    assert group_runs([run])[0].stat("final_test_error") is None  # not in any mean
    row = cifar_table([run]).rows
    assert any(r["layers"] == "20" and r["test err. % (1 seed)"] == "running" for r in row)

    an_hour_ago = time.time() - 3600
    os.utime(path / "metrics.jsonl", (an_hour_ago, an_hour_ago))
    assert load_run(path).status == "incomplete"


def test_layer_responses_in_network_order():
    responses = {"name": "plain-20-seed0", "layers": [
        {"index": 1, "name": "stage1.block0.conv1", "std": 2.0},
        {"index": 0, "name": "stem", "std": 3.0}]}
    run = build_record(Path("plain-20-seed0"), layer_responses=responses)
    assert run.layer_response_std == (3.0, 2.0)  # network order


def test_find_experiments(tmp_path: Path):
    done = {"status": "completed"}
    write_run(tmp_path / "a" / "plain-20-seed0", config(20, False), summary=done)
    write_run(tmp_path / "b" / "resnet-20-A-seed0", config(20, True), summary=done)
    (tmp_path / "empty").mkdir()

    assert find_experiments(tmp_path) == [tmp_path / "a", tmp_path / "b"]
    assert find_experiments(tmp_path / "a") == [tmp_path / "a"]
    with pytest.raises(NoRunsFound):
        require_experiments(tmp_path / "empty")
    with pytest.raises(NoRunsFound):
        write_table(tmp_path / "missing")


def test_atomic_write_leaves_only_the_file(tmp_path: Path):
    path = write_bytes_atomically(tmp_path / "table.md", b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["table.md"]
    assert path.read_bytes() == b"x" and path.stat().st_mode & 0o777 == 0o644


def test_reading_results_never_imports_jax():
    code = ("import sys, resdepth.results.reading, resdepth.results.plots, resdepth.results.tables; "
            "print('jax' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# ---- unit tests: ImageNet tables and the paper's numbers -------------------------------------

def test_imagenet_table_uses_tencrop_and_multiscale(tmp_path: Path):
    exp = tmp_path / "imagenet"
    write_run(exp / "resnet-34-B-seed0", config(34, True, dataset="imagenet", shortcut="B"),
              summary={"status": "completed", "params": 21_797_672, "final_test_error": 0.27,
                       "final_test_top5_error": 0.09},
              tencrop={"top1_error": 0.2452, "top5_error": 0.0746, "center_top1_error": 0.27,
                       "center_top5_error": 0.09, "scales": [256]},
              multiscale={"top1_error": 0.2184, "top5_error": 0.0571, "center_top1_error": 0.27,
                          "center_top5_error": 0.09, "scales": [224, 256, 384, 480, 640]})
    write_run(exp / "plain-34-seed0", config(34, False, dataset="imagenet", shortcut="B"),
              summary={"status": "completed", "final_test_error": 0.30,
                       "final_test_top5_error": 0.11})

    rows = {row["net"]: row for row in imagenet_table(load_runs(exp)).rows}

    resnet, plain = rows["ResNet"], rows["plain"]
    assert (resnet["shortcut"], resnet["params"]) == ("B", "21.8M")
    assert resnet["ours top-1 / top-5 %"] == "24.52 / 7.46"
    assert resnet["tested"] == "10-crop"
    assert resnet["paper 10-crop top-1 / top-5 % (Tables 2, 3)"] == "24.52 / 7.46"
    assert resnet["ours multi-scale top-1 / top-5 %"] == "21.84 / 5.71"
    assert resnet["paper multi-scale top-1 / top-5 % (Table 4)"] == "21.84 / 5.71"
    assert plain["shortcut"] == "—"
    assert plain["ours top-1 / top-5 %"] == "30.00 / 11.00"
    assert plain["tested"] == "single view"
    assert plain["paper 10-crop top-1 / top-5 % (Tables 2, 3)"] == "28.54 / 10.02"
    assert plain["ours multi-scale top-1 / top-5 %"] == "—"
    assert "24.52 / 7.46" in write_table(exp).read_text()


def test_paper_numbers():
    for depth, count in paper_figures.CIFAR_PARAMS_OPTION_A.items():
        assert paper_figures.cifar_params_option_a(depth) == count
    assert paper_figures.table6_test_error("residual", 110) == 6.43
    assert paper_figures.table6_test_error("plain", 20) is None
    assert paper_figures.tencrop_error("plain", 18, "A") == (27.94, None)  # Table 2 only
    assert paper_figures.tencrop_error("residual", 152, "B") == (21.43, 5.71)
    assert paper_figures.multiscale_error("residual", 34, "A") is None
    assert paper_figures.IMAGENET_MULTIPLY_ADDS[152] == 11.3e9
    assert paper_figures.IMAGENET_PARAMS_OPTION_B[50] == 25_557_032


@pytest.mark.parametrize("depth", sorted(paper_figures.CIFAR_PARAMS_OPTION_A))
def test_params_formatted_as_in_table6(depth: int):
    assert format_params(paper_figures.CIFAR_PARAMS_OPTION_A[depth]) == (
        paper_figures.TABLE6_PARAM_LABELS[depth])


def test_markdown_escapes_pipes_in_cells():
    table = Table("t", ("net", "note"), ({"net": "plain", "note": "a | b"},))
    assert to_markdown(table).splitlines()[-1] == "| plain | a \\| b |"


# ---- unit tests: run names, validation runs, recipes ------------------------------------------

@pytest.mark.parametrize("name, expected", [
    ("resnet-56-A-seed0-lr0.05", ("residual", 56, "A", 0, "lr0.05")),
    ("plain-20-seed3-bn_64.v2", ("plain", 20, None, 3, "bn_64.v2")),
    ("resnet-110-B-seed12-warm-up", ("residual", 110, "B", 12, "warm-up")),
    ("resnet-20-A-seed1", ("residual", 20, "A", 1, "")),
])
def test_a_run_directory_name_may_end_with_a_tag(name: str, expected: tuple):
    run = build_record(Path(name))  # no config.json or summary.json: the name says it all
    assert (run.arch, run.depth, run.shortcut, run.seed, run.tag) == expected


def test_the_evaluation_split_from_summary_else_config():
    done = {"status": "completed", "final_test_error": 0.1}
    said = build_record(Path("resnet-20-A-seed0"), config(20, True),
                        summary={**done, "eval_split": "validation"})
    old = build_record(Path("resnet-20-A-seed0"), config(20, True, val_split=True), summary=done)
    tested = build_record(Path("resnet-20-A-seed0"), config(20, True, val_split=True),
                          summary={**done, "eval_split": "test"})
    assert (said.eval_split, old.eval_split, tested.eval_split) == (
        "validation", "validation", "test")
    assert build_record(Path("resnet-20-A-seed0"), summary=done).eval_split == "test"


def test_validation_runs_never_sit_beside_the_papers_test_errors(tmp_path: Path):
    exp = tmp_path / "exp"
    done = {"status": "completed", "params": 853_018, "final_train_error": 0.01}
    write_run(exp / "resnet-56-A-seed0", config(56, True, seed=0),
              summary={**done, "final_test_error": 0.07, "eval_split": "test"})
    # The trainer names the split in summary.json; an older run says so only in config.json.
    write_run(exp / "resnet-56-A-seed1", config(56, True, seed=1, val_split=True),
              summary={**done, "final_test_error": 0.05, "eval_split": "validation"})
    write_run(exp / "resnet-56-A-seed2", config(56, True, seed=2, val_split=True),
              summary={**done, "final_test_error": 0.06})

    tables = markdown_tables(write_table(exp).read_text())

    layout = tables["exp: cifar10, Table 6 layout"]
    row = next(row for row in layout if row["layers"] == "56")
    assert (row["seeds"], row["test err. % (1 seed)"]) == ("1", "7.00")  # the test run only
    held_out = tables["exp: cifar10, validation runs (10% of the training set held out)"]
    assert [(r["net"], r["seeds"], r["validation err. % (mean ± std)"]) for r in held_out] == [
        ("ResNet-56", "2", "5.50 ± 0.71")]
    assert not any("paper" in column for column in held_out[0])
    per_run = {row["run"]: row for row in tables["exp: runs"]}
    assert (per_run["resnet-56-A-seed0"]["test err. %"],
            per_run["resnet-56-A-seed0"]["validation err. %"]) == ("7.00", "—")
    assert (per_run["resnet-56-A-seed2"]["test err. %"],
            per_run["resnet-56-A-seed2"]["validation err. %"]) == ("—", "6.00")
    only_held_out = experiment_tables([run for run in load_runs(exp) if run.seed > 0], "v")
    assert [table.title for table in only_held_out] == [
        "v: cifar10, validation runs (10% of the training set held out)", "v: runs"]
    held_out_only = cifar_table([run for run in load_runs(exp) if run.seed > 0])
    assert held_out_only.rows == ()  # none of ours, so none of Table 6's beside them either


def test_runs_whose_recipes_differ_are_never_averaged(tmp_path: Path):
    exp = tmp_path / "exp"
    done = {"status": "completed", "final_train_error": 0.01}
    write_run(exp / "resnet-56-A-seed0", config(56, True, seed=0),
              summary={**done, "final_test_error": 0.07})
    write_run(exp / "resnet-56-A-seed1", config(56, True, seed=1),
              summary={**done, "final_test_error": 0.08})
    write_run(exp / "resnet-56-A-seed2", config(56, True, seed=2, learning_rate=0.05),
              summary={**done, "final_test_error": 0.20})
    runs = load_runs(exp)

    groups = group_runs(runs)
    assert [(g.variant, [r.seed for r in g.runs]) for g in groups] == [
        ("variant 1", [0, 1]), ("variant 2", [2])]
    assert groups[0].recipe != groups[1].recipe and None not in (groups[0].recipe,
                                                                 groups[1].recipe)
    table = cifar_table(runs)
    rows = [row for row in table.rows if row["layers"] == "56"]
    assert [(row["variant"], row["test err. % (mean ± std)"]) for row in rows] == [
        ("variant 1", "7.50 ± 0.71"), ("variant 2", "20.00")]
    assert any("ResNet-56" in note and "optim.learning_rate (0.1 / 0.05)" in note
               and "run.seed" not in note for note in table.notes)
    assert {row["net"] for row in runs_table(runs).rows} == {
        "ResNet-56 (variant 1)", "ResNet-56 (variant 2)"}


def test_variants_are_named_by_their_tag(tmp_path: Path):
    exp = tmp_path / "exp"
    done = {"status": "completed", "final_test_error": 0.1}
    write_run(exp / "resnet-56-A-seed0", config(56, True), summary=done)
    write_run(exp / "resnet-56-A-seed0-lr0.05", config(56, True, learning_rate=0.05,
                                                        tag="lr0.05"), summary=done)
    # A run without config.json has no recipe: it is neither of the above.
    write_run(exp / "resnet-56-A-seed1", None, summary=done)

    groups = group_runs(load_runs(exp))

    assert [(g.variant, g.recipe is None) for g in groups] == [
        ("variant 1", False), ("lr0.05", False), ("variant 3", True)]
    assert [g.label for g in groups] == [
        "ResNet-56 (variant 1)", "ResNet-56 (lr0.05)", "ResNet-56 (variant 3)"]
    note = next(note for note in cifar_table(load_runs(exp)).notes if "recipes" in note)
    assert "variant 3 has no config.json" in note


def test_a_tag_alone_does_not_make_a_variant():
    # run.tag is result-neutral: a tagged run of the same recipe is one more seed.
    runs = [build_record(Path("resnet-20-A-seed0"), config(20, True, seed=0),
                         summary={"status": "completed", "final_test_error": 0.08}),
            build_record(Path("resnet-20-A-seed1-again"), config(20, True, seed=1, tag="again"),
                         summary={"status": "completed", "final_test_error": 0.10})]
    (group,) = group_runs(runs)
    assert group.variant is None and len(group.runs) == 2
