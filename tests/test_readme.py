"""The README's multi-machine workflow, run as it is written there.

The SLURM script's sweep cannot train CIFAR-10 here (no download, hours of training), so it
runs with `--dry-run` under the variables a SLURM array sets; every command after it runs
unchanged on a results folder of real tiny runs placed where the README's commands look.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

from typer.testing import CliRunner

from resdepth.cli.app import app

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands(after: str) -> list[list[str]]:
    """The resdepth commands of the first two ```sh blocks after the line containing `after`,
    each split into arguments: `srun` and the venv prefix dropped, comments and `&&` split off."""
    text = README.read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text[text.index(after):], re.S)[:2]
    commands = []
    for line in "\n".join(blocks).splitlines():
        line = line.split(" #", 1)[0].strip()
        for part in line.split("&&"):
            words = shlex.split(part)
            if words[:1] == ["srun"]:
                words = words[1:]
            if words and words[0].endswith("resdepth"):
                commands.append(words[1:])
    return commands


def test_the_readme_slurm_workflow_runs_as_written(tmp_path, monkeypatch, recorded_runs):
    commands = readme_commands("With SLURM:")
    assert [c[0] for c in commands] == ["sweep", "status", "status", "analyze", "plot", "table",
                                        "report"], commands
    shared = tmp_path / "shared"
    shutil.copytree(recorded_runs, shared / "results" / "table6")

    def run(args: list[str], **env: str):
        args = [arg.replace("/shared", str(shared)) for arg in args]
        result = CliRunner().invoke(app, args, env={"COLUMNS": "200", **env})
        assert result.exit_code == 0, (args, result.output)
        return result.output

    # Array task 3 of `--array=0-14`: the fourth of 15 shards, one run of table6's grid.
    slurm = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "15",
             "SLURM_ARRAY_TASK_MIN": "0"}
    output = run(commands[0] + ["--dry-run"], **slurm)
    assert "SLURM" in output and "3/15" in output and "1 runs" in output.replace("1 run ", "1 runs ")

    output = run(commands[1])
    assert all(name in output for name in ("plain-8-seed0", "resnet-14-A-seed0"))
    rows = json.loads(run(commands[2]))["runs"]
    assert [row["status"] for row in rows] == ["completed"] * 5
    for args in commands[3:]:
        run(args)
    table6 = shared / "results" / "table6"
    assert (table6 / "table.md").exists() and (table6 / "report.html").exists()
    assert (table6 / "figure6.png").exists() and (table6 / "figure7.png").exists()


def demo_section() -> str:
    text = README.read_text()
    return text[text.index("1. `make demo`"):text.index("2. `make test`")]


def markdown_rows(text: str, first_cell: str) -> dict[str, list[str]]:
    """{first cell: the other cells} of every table row of `text` whose first cell starts so."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.strip().startswith("|") and cells[0].startswith(first_cell):
            rows[cells[0]] = [cell.replace("*", "") for cell in cells[1:]]
    return rows


def test_the_readme_says_how_many_seeds_the_demo_trains_and_shows_its_table():
    from resdepth.config import load_config

    seeds = load_config("demo").sweep.seeds  # what `make demo` sweeps
    section = demo_section()
    assert f"The demo trains **{len(seeds)} seed" in section
    # The README's numbers are the table `make demo` wrote (docs/figures/demo-table.md), whose
    # headers say "1 seed", not "mean ± std", when each net has one.
    table = (README.parent / "docs" / "figures" / "demo-table.md").read_text()
    assert "(1 seed)" in table and "± std" not in table.split("## demo: runs")[0]
    runs = table.split("## demo: runs")[1]
    made = markdown_rows(runs, "plain-") | markdown_rows(runs, "resnet-")
    seed0 = section.split("One seed is one draw")[0]
    shown = markdown_rows(seed0, "plain-") | markdown_rows(seed0, "ResNet-")
    names = {"plain-20": "plain-20-seed0", "plain-56": "plain-56-seed0",
             "ResNet-20": "resnet-20-A-seed0", "ResNet-56": "resnet-56-A-seed0"}
    for net, run in names.items():
        assert shown[net] == made[run][-2:], net  # training and test error, %


def test_the_readmes_spread_over_seeds_is_the_mean_and_sample_std_of_its_seeds():
    import statistics

    spread = demo_section().split("One seed is one draw")[1].split(SIGNALS_ANSWER)[0]
    rows = markdown_rows(spread, "plain-")
    assert set(rows) == {"plain-20", "plain-56"}
    for cells in rows.values():
        for cell in cells:  # "36.88, 64.69, 48.91 (50.16 ± 13.95)"
            values = [float(v) for v in cell.split(" (")[0].split(", ")]
            mean, std = (float(v) for v in cell.split(" (")[1].rstrip(")").split(" ± "))
            assert len(values) == 3
            assert abs(statistics.mean(values) - mean) < 0.006
            assert abs(statistics.stdev(values) - std) < 0.006


SIGNALS_ANSWER = "**Did plain-56's gradients vanish?"


def test_the_readme_answers_from_the_demos_signals_verdicts():
    from resdepth.results.vanishing import VANISHING_RATIO

    section = demo_section()
    made = (README.parent / "docs" / "figures" / "demo-table.md").read_text()
    verdicts = made.split("backward signals per run")[1].split("## demo: runs")[0]
    made_rows = markdown_rows(verdicts, "plain-") | markdown_rows(verdicts, "resnet-")
    answer = section.split(SIGNALS_ANSWER)[1]
    shown = markdown_rows(answer, "plain-") | markdown_rows(answer, "ResNet-")
    names = {"plain-20": "plain-20-seed0", "plain-56": "plain-56-seed0",
             "ResNet-20": "resnet-20-A-seed0", "ResNet-56": "resnet-56-A-seed0"}
    for net, run in names.items():
        assert shown[net] == made_rows[run][-4:], net  # first, last, lowest ratio, verdict
    said = "Yes" if made_rows["plain-56-seed0"][-1] == "yes" else "No"
    assert answer.startswith(f" {said}.**")
    assert f"below {VANISHING_RATIO:g} after the first row" in answer
    assert "docs/figures/demo-signals.png" in answer
    assert (README.parent / "docs" / "figures" / "demo-signals.png").stat().st_size > 10_000
