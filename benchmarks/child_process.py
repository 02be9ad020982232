"""A benchmark's part in a process of its own: its output streamed as it comes, stopped at a cap.

The device benchmarks run each part as a child process: JAX takes 75% of a GPU's memory when
it starts, and XLA reads XLA_FLAGS once per process. The child's lines reach this console the
moment they are printed (the device plan tees the console into $OUT), so a part stopped at its
time cap loses nothing it printed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]


def run(name: str, command: list[str], timeout: float, env: dict[str, str],
        show: Callable[[str], str | None] = lambda line: line) -> tuple[str, int, float]:
    """Runs `command` from the repository's root, its stdout and stderr streamed to this console
    line by line as they come (`show(line)`: the text printed for a line, None for nothing),
    stopped with its whole process group after `timeout` seconds, or when this process is
    terminated. Returns (its output, exit code: 124 when stopped at the cap, seconds)."""
    print(f"--- {name}: {' '.join(command)} (at most {timeout:.0f} s)", flush=True)
    started = time.perf_counter()
    # A process group of its own, so that its children (torch.compile's workers) stop with it;
    # the same session, so that whatever runs the whole plan can still end it.
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, bufsize=1, process_group=0)
    lines: list[str] = []

    def pump() -> None:
        for line in child.stdout:
            lines.append(line)
            text = show(line.rstrip("\n"))
            if text is not None:
                print(text, flush=True)

    def stop(signum, frame):  # `timeout` around the plan terminates this process, not the group
        raise SystemExit(128 + signum)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        code = child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = 124
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        signal.signal(signal.SIGTERM, previous)
    reader.join(timeout=10)
    seconds = time.perf_counter() - started
    if code == 124:
        print(f"{name}: stopped after {timeout:.0f} s (its time cap); what it printed is above",
              flush=True)
    elif code:
        print(f"{name}: exit code {code} after {seconds:.0f} s", flush=True)
    else:
        print(f"{name}: done in {seconds:.0f} s", flush=True)
    return "".join(lines), code, seconds
