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
