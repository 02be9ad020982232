"""A real trained run, its files damaged one way at a time, read by every command that reads runs.

`status --json`, `table`, `plot` and `report` must each exit 0 (or 2 with one line), never with
a traceback; name the damaged file in a warning; and never show a "completed" run with errors
other than its own final ones (rundir/record.py is the one reader they share).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from resdepth.cli.app import app

DAMAGED_RUN, SOUND_RUN = "resnet-8-A-seed0", "plain-8-seed0"


def cut(fraction: float) -> Callable[[bytes], bytes]:
    return lambda data: data[:int(len(data) * fraction)]


def cut_tail(count: int) -> Callable[[bytes], bytes]:
    return lambda data: data[:-count]


def replace_with(new: bytes) -> Callable[[bytes], bytes]:
    return lambda data: new


def non_utf8(data: bytes) -> bytes:
    return data[:10] + b"\xff\xfe\x80" + data[10:]


RANDOM = bytes(range(256))[::7] * 3  # the same "random" bytes every run: no NUL-free guarantee
WRONG_SUMMARY = json.dumps({"status": 3, "steps_done": "thirty", "final_test_error": [0.1],
                            "depth": "eight"}).encode()
WRONG_CONFIG = json.dumps({"config": {"model": "deep", "run": {"seed": "zero"}, "optim": [1]},
                           "code_version": 7, "devices": "gpu"}).encode()
WRONG_ROWS = b'{"type": "train", "step": "ten", "train_error": "low"}\n[1, 2, 3]\n"row"\n'

# (file, damage, whether the reader can tell: a missing summary.json or config.json is a run
# still starting, not damage; everything else must be named in a warning).
CASES: dict[str, tuple[str, Callable[[bytes], bytes] | None, bool]] = {
    "summary-cut-third": ("summary.json", cut(1 / 3), True),
    "summary-cut-half": ("summary.json", cut(1 / 2), True),
    "summary-cut-tail": ("summary.json", cut_tail(3), True),
    "summary-empty": ("summary.json", replace_with(b""), True),
    "summary-random": ("summary.json", replace_with(RANDOM), True),
    "summary-non-utf8": ("summary.json", non_utf8, True),
    "summary-wrong-types": ("summary.json", replace_with(WRONG_SUMMARY), True),
    "summary-list": ("summary.json", replace_with(b'["completed", 30]'), True),
    "summary-missing": ("summary.json", None, False),
    "config-cut-half": ("config.json", cut(1 / 2), True),
    "config-empty": ("config.json", replace_with(b""), True),
    "config-non-utf8": ("config.json", non_utf8, True),
    "config-wrong-types": ("config.json", replace_with(WRONG_CONFIG), True),
    "config-list": ("config.json", replace_with(b"[1, 2]"), True),
    "config-missing": ("config.json", None, False),
    "metrics-cut-third": ("metrics.jsonl", cut(1 / 3), True),
    "metrics-cut-half": ("metrics.jsonl", cut(1 / 2), True),
    "metrics-cut-tail": ("metrics.jsonl", cut_tail(5), True),
    "metrics-empty": ("metrics.jsonl", replace_with(b""), True),
    "metrics-random": ("metrics.jsonl", replace_with(RANDOM), True),
    "metrics-non-utf8": ("metrics.jsonl", non_utf8, True),
    "metrics-wrong-types": ("metrics.jsonl", replace_with(WRONG_ROWS), True),
    "metrics-missing": ("metrics.jsonl", None, True),
    "responses-cut-half": ("layer_responses.json", cut(1 / 2), True),
    "responses-wrong-types": ("layer_responses.json",
                              replace_with(b'{"layers": [{"index": "a", "std": "b"}]}'), True),
    "checkpoints-gone": ("checkpoints", None, False),
}


@pytest.fixture(scope="module")
def damaged_studies(recorded_runs: Path, tmp_path_factory) -> tuple[Path, dict]:
    """One experiment folder per case, the damaged copy of a trained run beside a sound one;
    and folder "all", the sound run and every damaged copy (named `resnet-8-A-seed0-<case>`)
    for the commands that draw figures. Returns (the folder of them all, the true summary)."""
    root = tmp_path_factory.mktemp("damaged")
    truth = json.loads((recorded_runs / DAMAGED_RUN / "summary.json").read_text())
    shutil.copytree(recorded_runs / SOUND_RUN, root / "all" / SOUND_RUN)
    for case, (name, damage, _) in CASES.items():
        copies = [root / case / DAMAGED_RUN, root / "all" / f"{DAMAGED_RUN}-{case}"]
        shutil.copytree(recorded_runs / SOUND_RUN, root / case / SOUND_RUN)
        for copy in copies:
            shutil.copytree(recorded_runs / DAMAGED_RUN, copy)
            target = copy / name
            if target.is_dir():
                shutil.rmtree(target)
            elif damage is None:
                target.unlink()
            else:
                target.write_bytes(damage(target.read_bytes()))
    return root, truth


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    if result.exit_code == 2:
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    else:
        assert result.exit_code == 0, result.output
    return result


def warned_about(result, path: Path) -> bool:
    return any(line.startswith("warning:") and str(path) in line
               for line in result.stderr.splitlines())


def pct(value: float) -> str:
    return f"{100 * value:.2f}"


@pytest.mark.parametrize("case", list(CASES))
def test_status_and_table_name_the_damage_and_never_show_other_numbers_as_final(damaged_studies, case):
    root, truth = damaged_studies
    folder = root / case
    name, _, detectable = CASES[case]
    damaged_file = folder / DAMAGED_RUN / name
    final = (truth["final_train_error"], truth["final_test_error"])

    status = invoke("status", str(folder), "--json")
    rows = {row["run"]: row for row in json.loads(status.stdout)["runs"]}
    assert rows[SOUND_RUN]["status"] == "completed"  # the other run is read as usual
    row = rows[DAMAGED_RUN]
    if row["status"] == "completed":
        assert (row["train_error"], row["test_error"]) == final, row
        assert row["steps_done"] == truth["steps_done"]
    if detectable and name != "layer_responses.json":  # status does not read layer responses
        assert warned_about(status, damaged_file), status.stderr
    if name == "summary.json" and detectable:
        assert row["status"] == "damaged" and "summary.json" in row["message"], row
    if name == "metrics.jsonl":  # completed only where its last rows survived the damage
        assert row["status"] in ("damaged", "completed"), row

    table = invoke("table", str(folder), "--json")
    [runs_table] = [t for t in json.loads(table.stdout)["tables"] if t["title"].endswith(": runs")]
    [listed] = [r for r in runs_table["rows"] if r.get("run") == DAMAGED_RUN]
    if detectable:
        assert warned_about(table, damaged_file), table.stderr
    cells = " ".join(str(value) for value in listed.values())
    if row["status"] == "completed":
        assert pct(final[1]) in cells and pct(final[0]) in cells, listed
    else:  # a run that did not complete shows its status, never errors as if final
        assert row["status"] in cells, listed


def test_plot_and_report_go_on_past_every_damage_and_show_only_final_numbers(damaged_studies):
    root, truth = damaged_studies
    folder = root / "all"
    final = (truth["final_train_error"], truth["final_test_error"])
    plot = invoke("plot", str(folder))
    assert (folder / "figure6.png").is_file() and (folder / "degradation.png").is_file()
    report = invoke("report", str(folder))
    runs_section = (folder / "report.html").read_text().split('<section id="runs">')[1]
    runs_section = runs_section.split("</section>")[0]
    status = {row["run"]: row["status"] for row in
              json.loads(invoke("status", str(folder), "--json").stdout)["runs"]}
    for case, (name, _, detectable) in CASES.items():
        run = f"{DAMAGED_RUN}-{case}"
        if detectable:
            for result in (plot, report):
                assert warned_about(result, folder / run / name), (case, result.stderr)
        [html_row] = re.findall(rf"<tr><td>{re.escape(run)}</td>.*?</tr>", runs_section)
        assert f">{status[run]}<" in html_row, (case, html_row)
        if status[run] == "completed":
            assert pct(final[0]) in html_row and pct(final[1]) in html_row, (case, html_row)


def test_a_run_killed_after_a_resume_is_stopped_at_its_last_logged_iteration(tmp_path):
    """kill -9 after resuming: the summary is the earlier session's (interrupted at 1)."""
    run = tmp_path / "exp" / "resnet-8-A-seed0"
    run.mkdir(parents=True)
    rows = [{"type": "train", "step": step, "train_error": 0.9 - step / 100, "wall_s": step / 10}
            for step in (1, 20, 40, 60)] + [{"type": "eval", "step": 60, "test_error": 0.4}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (run / "summary.json").write_text(json.dumps({
        "status": "interrupted", "name": run.name, "steps_done": 1, "total_steps": 100,
        "final_train_error": 0.89, "message": "interrupted at iteration 1; run the same command"}))
    (run / "run.lock").write_text(json.dumps({"host": "gone", "pid": 1, "since": ""}))

    [row] = json.loads(invoke("status", str(tmp_path / "exp"), "--json").stdout)["runs"]

    assert row["status"] == "stopped" and row["steps_done"] == 60
    assert (row["train_error"], row["test_error"]) == (0.9 - 60 / 100, 0.4)
    assert "iteration 60" in row["message"] and "iteration 1;" not in row["message"]


def test_train_on_a_run_whose_config_json_is_not_utf8_never_shows_a_traceback(recorded_runs, tmp_path):
    run = tmp_path / "out" / "digits" / DAMAGED_RUN
    shutil.copytree(recorded_runs / DAMAGED_RUN, run)
    (run / "config.json").write_bytes(non_utf8((run / "config.json").read_bytes()))
    result = invoke("train", "--dataset", "digits", "--depth", "8", "--out", str(tmp_path / "out"))
    assert "already completed" in result.stdout  # its summary.json is sound
