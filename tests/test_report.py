"""`resdepth report`: one self-contained report.html per experiment, checked by parsing it.

The end-to-end test reads a copy of `recorded_runs` (tests/conftest.py: real tiny digits runs
plain-8, resnet-8-A seeds 0 and 1, plain-14, resnet-14-A, with layer responses); the others write
small run directories by hand.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

from typer.testing import CliRunner

from resdepth.results.reading import load_runs
from resdepth.results.tables import experiment_tables

runner = CliRunner()
# Attributes that make a browser fetch something; in a self-contained page they may only point
# inside it ("#id").
FETCHING = {"href", "src", "xlink:href", "srcset", "action", "data", "poster", "background"}


class Page(HTMLParser):
    """The parts of a page the tests look at: elements by tag, table rows as cell texts,
    fetching attributes, and the text."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.rows: list[list[str]] = []
        self.section_rows: dict[str, list[list[str]]] = {}  # by <section id>
        self._section = ""
        self.text: list[str] = []
        self.references: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        self.references += [value or "" for name, value in attrs if name in FETCHING]
        if tag == "section":
            self._section = attributes.get("id") or ""
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self.section_rows.setdefault(self._section, []).append(self._row)
            self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def ids(self, tag: str) -> list[str]:
        return [attributes.get("id") or "" for name, attributes in self.tags if name == tag]

    def count(self, tag: str) -> int:
        return sum(1 for name, _ in self.tags if name == tag)


def assert_self_contained(text: str, page: Page) -> None:
    assert all(reference.startswith("#") for reference in page.references), page.references
    for tag in ("script", "link", "img", "iframe", "object", "embed"):
        assert page.count(tag) == 0, tag
    lowered = text.lower()
    assert "http://" not in lowered and "https://" not in lowered
    assert "@import" not in lowered and "@font-face" not in lowered
    assert lowered.count("url(") == lowered.count("url(#")  # clip paths inside the page only


def test_report_of_recorded_runs(recorded_runs: Path, tmp_path: Path):
    from resdepth.cli.app import app

    experiment = Path(shutil.copytree(recorded_runs, tmp_path / "recorded",
                                      ignore=shutil.ignore_patterns("checkpoints")))
    result = runner.invoke(app, ["report", str(experiment)])
    assert result.exit_code == 0, result.output
    assert f"wrote {experiment / 'report.html'}" in " ".join(result.output.split())
    text = (experiment / "report.html").read_text()
    page = Page(text)
    assert_self_contained(text, page)

    # Every figure the runs allow (digits runs with layer responses: no Figure 4), inline; the
    # signals figure and verdicts once the runs record signals.jsonl (test_signals_results.py).
    signals = any(experiment.glob("*/signals.jsonl"))
    figures = ["figure6", "degradation", "figure7", *(["signals"] if signals else [])]
    assert page.ids("figure") == figures
    assert page.count("svg") == len(figures)
    assert len(set(page.ids("g")) - {""}) == len([i for i in page.ids("g") if i])  # unique ids

    # The same tables as `resdepth table`, row by row, cell by cell.
    runs = load_runs(experiment)
    tables = experiment_tables(runs, "recorded")
    assert [table.title for table in tables] == [
        "recorded: digits, Table 6 layout",
        *(["recorded: backward signals per run (§4.1: did gradients vanish?)"] if signals else []),
        "recorded: runs"]
    for table in tables:
        assert list(table.columns) in page.section_rows["tables"]
        for row in table.rows:
            assert [row.get(column, "") for column in table.columns] in page.section_rows["tables"]

    # Each run's name and status; the runs differ only in the grid; code and machine.
    header, *status_rows = page.section_rows["runs"]
    assert header[:3] == ["run", "net", "status"]
    assert {row[0]: row[2] for row in status_rows} == {run.name: "completed" for run in runs}
    assert len(runs) == 5
    words = " ".join(" ".join(page.text).split())
    assert "differ only in the sweep grid" in words
    assert page.section_rows["config"][0] == ["run", "model.residual", "model.depth", "run.seed"]
    saved = json.loads((experiment / "plain-8-seed0" / "config.json").read_text())
    [machine] = page.section_rows["machine"][1:]
    assert machine[:2] == [saved["code_version"], saved["jax_version"]]
    assert machine[2].startswith(f"{len(saved['devices'])} x ")


def write_run(folder: Path, config: dict | None, metrics: list[dict], summary: dict | None,
              code_version: str = "git:abc1234") -> None:
    folder.mkdir(parents=True)
    if config is not None:
        (folder / "config.json").write_text(json.dumps({
            "config": config, "code_version": code_version, "jax_version": "0.0.test",
            "devices": ["cuda:0", "cuda:1"]}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in metrics))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))


def digits_config(depth: int, residual: bool, learning_rate: float = 0.1) -> dict:
    return {"name": "hand", "data": {"dataset": "digits", "val_split": False},
            "model": {"depth": depth, "residual": residual, "shortcut": "A"},
            "optim": {"learning_rate": learning_rate, "total_steps": 20, "batch_size": 32},
            "run": {"seed": 0, "tag": ""}}


ROWS = [{"type": "train", "step": 10, "train_error": 0.5, "train_loss": 1.0},
        {"type": "eval", "step": 10, "test_error": 0.4, "test_loss": 1.2},
        {"type": "train", "step": 20, "train_error": 0.3, "train_loss": 0.8},
        {"type": "eval", "step": 20, "test_error": 0.35, "test_loss": 1.1}]


def test_report_shows_status_differences_and_escapes_text(tmp_path: Path):
    from resdepth.results.report import write_report

    experiment = tmp_path / "hand"
    hostile = '<script>alert("x")</script> & <b>bold</b>'
    write_run(experiment / "plain-8-seed0", digits_config(8, False), ROWS, {
        "status": "completed", "steps_done": 20, "total_steps": 20, "final_train_error": 0.3,
        "final_test_error": 0.35, "wall_s": 75.0, "params": 1000, "message": ""})
    write_run(experiment / "resnet-8-A-seed0", digits_config(8, True, learning_rate=0.05),
              ROWS[:2], {"status": "failed", "message": hostile, "arch": "residual", "depth": 8})
    write_run(experiment / "plain-14-seed0", digits_config(14, False), ROWS[:1], None,
              code_version="git:def5678+dirty")  # in progress: no summary yet, logged just now
    write_run(experiment / "plain-20-seed0", None, ROWS[:1], None)  # no config.json
    old = time.time() - 3 * 3600
    os.utime(experiment / "plain-20-seed0" / "metrics.jsonl", (old, old))  # stopped long ago

    text = write_report(experiment).read_text()
    page = Page(text)
    assert_self_contained(text, page)
    assert "<script>" not in text and "<b>bold</b>" not in text
    words = " ".join(" ".join(page.text).split())
    assert hostile in words  # shown as text, escaped in the file

    status = {row[0]: row[2] for row in page.section_rows["runs"][1:]}
    assert status == {"plain-8-seed0": "completed", "resnet-8-A-seed0": "failed",
                      "plain-14-seed0": "running", "plain-20-seed0": "incomplete"}
    plain8 = next(row for row in page.section_rows["runs"] if row[0] == "plain-8-seed0")
    assert plain8[3] == "20 / 20" and plain8[6] == "1:15"

    # The learning rate is a difference beyond the grid, named above the table of differences.
    assert "differ in optim.learning_rate" in words
    header, *differences = page.section_rows["config"]
    assert header == ["run", "model.residual", "model.depth", "optim.learning_rate"]
    assert ["resnet-8-A-seed0", "true", "8", "0.05"] in differences
    assert "No config.json (settings unknown): plain-20-seed0." in words

    # Two code versions, each with its runs; two GPUs each.
    machines = {row[0]: row for row in page.section_rows["machine"][1:]}
    assert machines["git:def5678+dirty"][1:] == ["0.0.test", "2 x cuda", "plain-14-seed0"]
    assert "more than one code version" in words
    assert page.ids("figure")[:1] == ["figure6"]


def test_report_of_a_folder_of_experiments_and_of_nothing(tmp_path: Path):
    from resdepth.cli.app import app

    for name in ("one", "two"):
        write_run(tmp_path / "results" / name / "plain-8-seed0", digits_config(8, False), ROWS,
                  {"status": "completed", "final_train_error": 0.3, "final_test_error": 0.35})
    result = runner.invoke(app, ["report", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "results" / "one" / "report.html").is_file()
    assert (tmp_path / "results" / "two" / "report.html").is_file()

    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["report", str(tmp_path / "empty")])
    assert result.exit_code == 2
    assert "no runs under" in result.output and "Traceback" not in result.output
