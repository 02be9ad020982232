"""One process of a two-process jax.distributed run (started by test_multiprocess.py).

usage: python distributed_worker.py PROCESS_ID PORT DATA_DIR OUT STEPS

Joins the coordinator on 127.0.0.1:PORT, trains the tiny digits run through the sweep (which
takes the run lock on process 0 and calls the real train_and_evaluate), and prints one JSON line:
the process's id, the run files it wrote, and the summary.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

process_id, port, data_dir, out, steps = sys.argv[1:6]

import jax  # noqa: E402

jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                           process_id=int(process_id), initialization_timeout=120)

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny_config  # noqa: E402  (also sets strict dtype promotion, as in pytest)

import resdepth.rundir.directory as directory  # noqa: E402
import resdepth.rundir.rows as rows  # noqa: E402
from resdepth.training.sweep import GridPoint, run_sweep  # noqa: E402

written: list[str] = []  # every run file this process writes: config, summary, metrics and signals rows
_write_json, _append = directory.write_json, rows.RowsLog.append


def recording_write_json(path, data, *args):
    written.append(Path(path).name)
    return _write_json(path, data, *args)


def recording_append(self, row):
    if self.enabled:
        written.append(self.path.name)
    return _append(self, row)


# config.json and summary.json (RunDirectory.write_config, .write_summary)
directory.write_json = recording_write_json
rows.RowsLog.append = recording_append  # metrics.jsonl's and signals.jsonl's writers

config = tiny_config(data_dir, "optim.learning_rate=0.01", steps=int(steps), name="distributed")
summaries = run_sweep(config, [GridPoint("residual", 8, 0)], Path(out),
                      lambda *args: (lambda event: None), threading.Event())
print(json.dumps({"process": jax.process_index(), "processes": jax.process_count(),
                  "devices": jax.device_count(), "written": sorted(set(written)),
                  "summary": summaries[0]}), flush=True)
jax.distributed.shutdown()
