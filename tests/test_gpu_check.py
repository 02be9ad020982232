"""The GPU check's arithmetic and its promise to run without TensorFlow (it runs on GPU
images that have none; its end-to-end CPU run is in docs/benchmarks.md, too slow for tests)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks.gpu_check import BATCH, TABLE6_ITERATIONS, TABLE6_RUNS, projected_hours


def test_table6_grid_is_15_runs_with_5_seeds_of_resnet110():
    assert sum(TABLE6_RUNS.values()) == 15 and TABLE6_RUNS[110] == 6


def test_projection_adds_up_the_grid_and_interpolates_in_depth():
    rates = {(20, 1): 1000.0, (56, 1): 400.0, (110, 1): 200.0, (1202, 1): 20.0, (110, 5): 500.0}
    alone, packed = projected_hours(rates, 5)
    per_image = {20: 1 / 1000, 56: 1 / 400, 110: 1 / 200, 1202: 1 / 20}
    per_image[32] = per_image[20] + (per_image[56] - per_image[20]) * 12 / 36
    per_image[44] = per_image[20] + (per_image[56] - per_image[20]) * 24 / 36
    images = TABLE6_ITERATIONS * BATCH
    expected = sum(runs * images * per_image[d] for d, runs in TABLE6_RUNS.items()) / 3600
    assert alone == pytest.approx(expected)
    assert packed == pytest.approx(expected - 5 * images / 200 / 3600 + 5 * images / 500 / 3600)


def test_gpu_check_imports_no_tensorflow():
    code = ("import sys, benchmarks.gpu_check; "
            "sys.exit(any(m.split('.')[0] in ('tensorflow', 'tensorflow_datasets') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
