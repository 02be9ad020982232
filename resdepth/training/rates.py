"""Measured training rates (images/s) of the CIFAR nets, and the one `sweep --dry-run` uses.

Two sources, both rows of (device kind, depth, compute dtype, batch, images/s):
- RECORDED: the rates measured for this project and shipped with it (docs/benchmarks.md);
- the user's own, which `benchmarks/gpu_check.sh` writes after measuring a GPU (or TPU) into
  `measured_rates_path()`: resdepth's cache folder, `rates.json`.

`rate_for` picks, for one run, a rate measured on the chosen device at the run's depth, compute
dtype and batch; a depth between (or beyond) measured depths is interpolated linearly in seconds
per image, as gpu_check's projection does; a plain net takes the residual net's rate (the same
convolutions). Without one, --dry-run falls back to an assumed sustained TFLOP/s.

RECORDED_CPU: the CPU rates measured for this project on two cores (docs/benchmarks.md), per
dataset; `cpu_rate_for` picks one for a run, and --dry-run gives a grid that will train on this
machine's CPU in CPU-minutes from them.

`choose_device` decides which device's rates: `--gpu NAME` (matched case-insensitively against
the device kind, e.g. "H200"), else the device the user's own file last measured, else the
shipped NVIDIA H200 figures. It never starts JAX: a dry run on the machine of a running sweep
must not take the GPU's memory.

Pure Python, no JAX.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterable

RATES_FILE = "rates.json"
REFERENCE = "docs/benchmarks.md"

# One NVIDIA H200, jax 0.11.2, batch 128, one run alone (benchmarks/gpu_check.sh, 2026-11-27;
# the "float32" rows of then ran at JAX's default precision, which is "tf32" now).
RECORDED: tuple[dict[str, Any], ...] = tuple(
    {"device_kind": "NVIDIA H200", "depth": depth, "compute_dtype": dtype, "batch": 128,
     "images_per_s": rate, "jax": "0.11.2", "measured": "2026-11-27", "source": REFERENCE}
    for dtype, rates in (("tf32", {20: 40_262, 56: 14_075, 110: 7_108, 1202: 644}),
                         ("bfloat16", {20: 53_264, 56: 18_868, 110: 9_570, 1202: 752}))
    for depth, rate in rates.items())


# Two cores of a quiet KVM guest ("Intel(R) Xeon(R) Processor"), jax 0.12, batch 128, tf32,
# one run alone (docs/benchmarks.md, "Measurements: CPU, 2026-11-28"): the medians of
# benchmarks.train_throughput for CIFAR-10's 32x32x3 nets, and the digits step (8x8x1, the
# demo's config) of the same sitting at 37.6 and 133.8 ms an iteration. They put the demo's
# four runs at 2 min 17 s before compilation and evaluation; the README's `make demo` on two
# cores of an AMD EPYC took 2 min 34 s for them. The only CPU rates the project has measured:
# a CPU of other cores or another count runs at other rates.
CPU_KIND = "2 CPU cores"
RECORDED_CPU: tuple[dict[str, Any], ...] = tuple(
    {"device_kind": CPU_KIND, "dataset": dataset, "depth": depth, "compute_dtype": "tf32",
     "batch": 128, "images_per_s": rate, "jax": "0.12", "measured": "2026-11-28",
     "source": REFERENCE, "recorded": True}
    for dataset, rates in (("cifar10", {20: 271.7, 56: 95.3}),
                           ("digits", {20: 128 / 0.0376, 56: 128 / 0.1338}))
    for depth, rate in rates.items())


def measured_rates_path(environ: dict[str, str] | None = None) -> Path:
    """Where gpu_check records the rates it measured: <resdepth's cache folder>/rates.json."""
    from resdepth.runtime.jax_setup import user_cache_root

    return user_cache_root(environ) / RATES_FILE


def load_measured(path: Path | None = None) -> list[dict[str, Any]]:
    """The user's recorded rates, newest last; [] when none (or the file cannot be read)."""
    path = path or measured_rates_path()
    try:
        rows = json.loads(Path(path).read_text()).get("rates", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [row for row in rows if _valid(row)]


def _valid(row: Any) -> bool:
    return (isinstance(row, dict) and isinstance(row.get("device_kind"), str)
            and isinstance(row.get("depth"), int) and isinstance(row.get("compute_dtype"), str)
            and isinstance(row.get("batch"), int)
            and isinstance(row.get("images_per_s"), (int, float)) and row["images_per_s"] > 0)


def _key(row: dict[str, Any]) -> tuple:
    return (row["device_kind"], row["depth"], row["compute_dtype"], row["batch"])


def record_measured(new_rows: Iterable[dict[str, Any]], path: Path | None = None) -> Path:
    """Adds `new_rows` to the user's file, each replacing an older row of the same (device kind,
    depth, compute dtype, batch); written atomically. Returns the file's path."""
    path = Path(path or measured_rates_path())
    new_rows = [row for row in new_rows if _valid(row)]
    replaced = {_key(row) for row in new_rows}
    rows = [row for row in load_measured(path) if _key(row) not in replaced] + new_rows
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps({"rates": rows}, indent=1) + "\n")
    os.replace(temporary, path)
    return path


@dataclasses.dataclass(frozen=True)
class Rate:
    """The rate one run is estimated at, and where it comes from."""

    images_per_s: float
    how: str  # "measured" | "interpolated" | "lower bound" (cpu_rate_for)
    device_kind: str
    source: str  # the user's rates file, or docs/benchmarks.md
    detail: str  # one phrase for the table: "measured on NVIDIA H200 (jax 0.11.2, docs/benchmarks.md)"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def choose_device(gpu: str | None, measured: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """(the device kind whose rates to use, its rows, the user's first) for `--gpu NAME`, or
    without it the device the user's file last measured, else the shipped H200 figures.
    (None, []) when `gpu` matches no recorded device."""
    rows = list(measured) + [dict(row, recorded=True) for row in RECORDED]
    if gpu:
        wanted = gpu.lower()
        kinds = [row["device_kind"] for row in rows if wanted in row["device_kind"].lower()]
    else:
        kinds = [row["device_kind"] for row in measured[::-1]] or [row["device_kind"] for row in RECORDED]
    if not kinds:
        return None, []
    kind = kinds[0]
    return kind, [row for row in rows if row["device_kind"] == kind]


def rate_for(rows: list[dict[str, Any]], depth: int, compute_dtype: str, batch: int) -> Rate | None:
    """The images/s of one run of `depth` from one device's `rows` (choose_device): the row of
    that depth, else interpolated in depth from two measured depths; None when the device has no
    rows of this compute dtype and batch. The user's rows come before the shipped ones."""
    same: dict[int, dict[str, Any]] = {}
    for row in rows:
        if row["compute_dtype"] == compute_dtype and row["batch"] == batch:
            same.setdefault(row["depth"], row)
    if not same:
        return None
    if depth in same:
        row = same[depth]
        return Rate(float(row["images_per_s"]), "measured", row["device_kind"], _source(row),
                    f"measured on {_where(row)}")
    depths = sorted(same)
    if len(depths) < 2:
        return None
    below, above = [d for d in depths if d < depth], [d for d in depths if d > depth]
    low, high = ((below[-1], above[0]) if below and above
                 else (depths[-2], depths[-1]) if below else (depths[0], depths[1]))
    t_low, t_high = 1 / same[low]["images_per_s"], 1 / same[high]["images_per_s"]
    seconds = t_low + (t_high - t_low) * (depth - low) / (high - low)
    if seconds <= 0:
        return None
    row = same[low]
    return Rate(1 / seconds, "interpolated", row["device_kind"], _source(row),
                f"interpolated from ResNet-{low}/{high} measured on {_where(row)}")


def _source(row: dict[str, Any]) -> str:
    return REFERENCE if row.get("recorded") else str(measured_rates_path())


def _where(row: dict[str, Any]) -> str:
    jax = f"jax {row['jax']}, " if row.get("jax") else ""
    return f"{row['device_kind']} ({jax}{REFERENCE if row.get('recorded') else 'benchmarks/gpu_check.sh here'})"


def cpu_rate_for(dataset: str, depth: int, compute_dtype: str, batch: int) -> Rate | None:
    """The images/s of one run of `depth` on `dataset` on a CPU (RECORDED_CPU), measured or
    interpolated in depth as `rate_for`; None where no CPU rate of this dataset, compute dtype
    and batch was measured (ImageNet, say).

    A net shallower than the shallowest measured takes that one's rate, how "lower bound": on
    a CPU a step's fixed costs do not shrink with depth, and extrapolating seconds per image
    down in depth would promise ResNet-8 on digits 7x ResNet-20's rate."""
    rows = [row for row in RECORDED_CPU if row["dataset"] == dataset]
    shallowest = min((row["depth"] for row in rows), default=depth)
    if depth >= shallowest:
        return rate_for(rows, depth, compute_dtype, batch)
    rate = rate_for(rows, shallowest, compute_dtype, batch)
    return None if rate is None else dataclasses.replace(
        rate, how="lower bound", detail=f"at least ResNet-{shallowest}'s rate, {rate.detail}")


def hours_at(rate: Rate, total_steps: int, batch: int) -> float:
    """Hours of one run of `total_steps` iterations of `batch` images at `rate`."""
    return total_steps * batch / rate.images_per_s / 3600
