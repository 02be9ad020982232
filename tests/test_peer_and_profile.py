"""The GPU measurement's pure parts, without torch and without a GPU: the PyTorch peer's
parameter formula and its table against resdepth's, the profile's trace reduction, and the
recorded rates `sweep --dry-run` estimates with (the runs themselves: docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks.gpu_profile import (PROFILE_COMMAND_BUFFERS, busy_time, command_buffer_mode,
                                    kernel_events, kind_of, reduce_trace)
from benchmarks.peer_compare import failures, format_table, join, read_jsonl
from benchmarks.torch_peer import cifar_params, plan, round_iterations
from resdepth.training import rates


@pytest.mark.parametrize("depth, params", [(20, 269_722), (56, 853_018), (110, 1_727_962),
                                           (1202, 19_421_274)])
def test_the_peers_parameter_formula_is_resdepths_count(depth, params):
    assert cifar_params(depth) == params  # resdepth's own counts (tests/test_models.py, Table 6)


def test_the_peer_imports_no_torch_at_import_and_plans_compile_for_shallow_nets_only():
    code = "import sys; sys.path.insert(0, 'benchmarks'); import torch_peer; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
    cells = plan([20, 110], ["tf32", "bfloat16"], ["graph-cl", "eager-cl", "compile"], True, 20)
    assert cells[:3] == [(20, "tf32", "graph-cl"), (20, "tf32", "eager-cl"), (20, "bfloat16", "graph-cl")]
    assert cells[-2:] == [(20, "tf32", "compile"), (20, "bfloat16", "compile")]  # compile last
    assert (110, "tf32", "compile") not in cells and len(cells) == 10
    assert all(config != "graph-cl" for _, _, config in plan([20], ["float32"], ["graph-cl", "eager-cl"], False, 20))
    assert round_iterations(0.01, 0.5) == 50 and round_iterations(1.0, 0.5) == 3


def test_the_peer_table_joins_the_best_configuration_and_the_ratio():
    ours = [{"depth": 20, "dtype": "tf32", "seeds": 1, "images_per_s": 40_000.0},
            {"depth": 20, "dtype": "tf32", "seeds": 5, "images_per_s": 99_000.0},  # packed: not compared
            {"depth": 56, "dtype": "tf32", "seeds": 1, "images_per_s": None}]
    peer = [{"depth": 20, "precision": "tf32", "config": "eager-cl", "images_per_s": 20_000.0},
            {"depth": 20, "precision": "tf32", "config": "graph-cl", "images_per_s": 32_000.0},
            {"depth": 20, "precision": "tf32", "config": "compile-cl", "error": "RuntimeError: no"},
            {"depth": 56, "precision": "tf32", "config": "graph-cl", "images_per_s": 9_000.0},
            {"depth": 56, "precision": "tf32", "config": "compile-cl", "error": "RuntimeError: no"}]
    joined = join(ours, peer)
    assert joined[0] == {"depth": 20, "precision": "tf32", "resdepth": 40_000.0, "torch": 32_000.0,
                         "torch_config": "graph-cl", "ratio": 1.25}
    assert joined[1]["ratio"] is None and joined[1]["torch"] == 9_000.0
    assert failures(peer) == ["PyTorch compile-cl: RuntimeError: no (ResNet-20 tf32, ResNet-56 tf32)"]
    table = format_table(joined, "NVIDIA H200")
    assert "1.25" in table[2] and "graph-cl" in table[2] and "40,000" in table[2]
    lines = "\n".join([json.dumps({"kind": "row", **peer[0]}), "a warning", "{not json"])
    assert read_jsonl(lines) == [{"kind": "row", **peer[0]}]


def trace(device: bool) -> dict:
    """A trace viewer JSON: on a GPU two streams and a derived "XLA Ops" line; on CPU thunks."""
    meta = [{"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/host:CPU"}},
            {"ph": "M", "pid": 1, "tid": 5, "name": "thread_name", "args": {"name": "python"}}]
    host = [{"ph": "X", "pid": 1, "tid": 5, "ts": 0, "dur": 500, "name": "PjitFunction(steps)"}]
    if not device:
        thunks = [{"ph": "X", "pid": 1, "tid": 6, "ts": ts, "dur": dur, "name": name, "args": {"hlo_op": name}}
                  for ts, dur, name in ((0, 100, "while.1"), (0, 10, "convolution.1"), (20, 35, "add_fusion"),
                                        (40, 20, "convolution.1"))]
        return {"traceEvents": meta + host + thunks}
    meta += [{"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "/device:GPU:0"}},
             {"ph": "M", "pid": 2, "tid": 1, "name": "thread_name", "args": {"name": "Stream #13(Compute)"}},
             {"ph": "M", "pid": 2, "tid": 2, "name": "thread_name", "args": {"name": "Stream #14(MemcpyD2D)"}},
             {"ph": "M", "pid": 2, "tid": 3, "name": "thread_name", "args": {"name": "XLA Ops"}}]
    kernels = [{"ph": "X", "pid": 2, "tid": tid, "ts": ts, "dur": dur, "name": name, "args": {"hlo_op": op}}
               for tid, ts, dur, name, op in ((1, 100, 40, "sm90_xmma_fprop_implicit_gemm", "cudnn-conv.1"),
                                              (1, 150, 10, "loop_add_fusion", "add_fusion"),
                                              (2, 145, 10, "MemcpyD2D", ""),
                                              (1, 300, 40, "sm90_xmma_fprop_implicit_gemm", "cudnn-conv.1"),
                                              (3, 100, 240, "cudnn-conv.1", "cudnn-conv.1"))]
    return {"traceEvents": meta + host + kernels}


def test_a_gpu_trace_reduces_to_its_stream_kernels():
    where, events = kernel_events(trace(device=True))
    assert where == "device" and len(events) == 4  # the derived XLA Ops line is not counted twice
    profile = reduce_trace(trace(device=True), iterations=2, top=2)
    assert [k["name"] for k in profile["kernels"]] == ["sm90_xmma_fprop_implicit_gemm", "loop_add_fusion"]
    assert profile["kernels"][0]["calls"] == 2 and profile["kernels"][0]["share"] == pytest.approx(0.8)
    # busy: 100-140, 145-160 (the copy overlaps the compute stream's add) and 300-340, of 100-340
    assert profile["busy_us"] == pytest.approx(95) and profile["busy_fraction"] == pytest.approx(95 / 240)
    assert profile["launches_per_iteration"] == 2 and profile["kinds"]["convolution"] == pytest.approx(0.8)


def test_a_cpu_trace_reduces_to_xla_thunks_without_their_containers():
    profile = reduce_trace(trace(device=False), iterations=1)
    assert profile["where"] == "cpu" and profile["launches"] == 3  # while.1 holds the others
    assert profile["kernels"][0]["name"] == "add_fusion" and profile["kernel_us"] == 65
    assert busy_time([{"ts": 0, "dur": 10}, {"ts": 5, "dur": 10}, {"ts": 30, "dur": 5}]) == (20, 35)


@pytest.mark.parametrize("name, hlo_op, kind", [
    ("sm90_xmma_fprop_implicit_gemm_tf32f32_tf32f32_f32_nhwckrsc_nhwc", "", "convolution"),
    ("sm80_xmma_wgrad_implicit_gemm_indexed_tf32f32", "", "convolution"),
    ("cudnn::engines_precompiled::nchwToNhwcKernel", "", "copy/transpose"),  # a layout change
    ("some_kernel", "cudnn-conv.3", "convolution"),  # unnamed kernels go by their HLO op
    ("convolution.12", "convolution.12", "convolution"),  # an XLA:CPU thunk
    ("loop_convert_fusion", "convert_fusion.7", "fusion"),  # XLA's converts are no convolutions
    ("input_convert_reduce_fusion_3", "", "fusion"),
    ("convert.5", "convert.5", "other"),
    ("sm90_xmma_gemm_f32f32_tf32f32_f32_tn_n_tilesize64x64x32", "custom-call.2", "matrix product"),
    ("transpose_copy_fusion.14", "", "copy/transpose"),
])
def test_kernels_are_sorted_by_what_they_do_and_a_convert_is_no_convolution(name, hlo_op, kind):
    assert kind_of(name, hlo_op) == kind


def test_the_profile_says_how_command_buffers_ran_while_traced():
    assert command_buffer_mode("on", "--xla_gpu_enable_command_buffer= --x=1")[0].startswith("off")
    assert command_buffer_mode("off", "")[0].startswith("off (XLA's default")
    assert command_buffer_mode("on", f"{PROFILE_COMMAND_BUFFERS}")[1] is None  # already set
    mode, flag = command_buffer_mode("on", "")  # asks a child process whether this jaxlib knows it
    assert mode.startswith("on") and flag == PROFILE_COMMAND_BUFFERS


def test_dry_run_rates_come_from_the_chosen_device(tmp_path):
    shipped = rates.choose_device(None, [])
    assert shipped[0] == "NVIDIA H200"
    rate = rates.rate_for(shipped[1], 1202, "tf32", 128)
    assert rate.how == "measured" and rate.images_per_s == 644 and "docs/benchmarks.md" in rate.detail
    between = rates.rate_for(shipped[1], 32, "tf32", 128)  # 1/rate linear in depth from 20 and 56
    expected = 1 / (1 / 40_262 + (1 / 14_075 - 1 / 40_262) * 12 / 36)
    assert between.how == "interpolated" and between.images_per_s == pytest.approx(expected)
    assert rates.rate_for(shipped[1], 20, "float32", 128) is None  # no full-float32 rate shipped
    assert rates.rate_for(shipped[1], 20, "tf32", 256) is None  # nor another batch
    assert rates.choose_device("a100", []) == (None, [])
    path = tmp_path / "rates.json"
    mine = {"device_kind": "NVIDIA A100-SXM4-80GB", "depth": 20, "compute_dtype": "tf32", "batch": 128,
            "images_per_s": 30_000.0}
    rates.record_measured([mine], path)
    rates.record_measured([{**mine, "images_per_s": 31_000.0}, {**mine, "depth": 56, "images_per_s": 11_000.0}], path)
    measured = rates.load_measured(path)
    assert [row["images_per_s"] for row in measured] == [31_000.0, 11_000.0]  # replaced, not added
    device, rows = rates.choose_device(None, measured)  # the device measured here comes first
    assert device == "NVIDIA A100-SXM4-80GB" and rates.rate_for(rows, 20, "tf32", 128).images_per_s == 31_000
    assert rates.choose_device("h200", measured)[0] == "NVIDIA H200"
    path.write_text("{damaged")
    assert rates.load_measured(path) == []


def test_dry_run_says_which_rate_each_run_is_estimated_at(tmp_path):
    from typer.testing import CliRunner

    from resdepth.cli.app import app

    env = {"XDG_CACHE_HOME": str(tmp_path), "COLUMNS": "200"}
    result = CliRunner().invoke(app, ["sweep", "--experiment", "table6", "--dry-run", "--json"], env=env)
    document = json.loads(result.stdout)
    runs = {run["name"]: run for run in document["runs"]}
    assert document["rates_device"] == "NVIDIA H200" and document["compute_dtype"] == "tf32"
    assert runs["resnet-1202-A-seed0"]["rate"]["how"] == "measured"
    assert runs["resnet-1202-A-seed0"]["gpu_hours"] == pytest.approx(64_000 * 128 / 644 / 3600)
    assert runs["plain-32-seed0"]["rate"]["how"] == "interpolated"
    assert document["estimated_gpu_hours"] == pytest.approx(sum(run["gpu_hours"] for run in runs.values()))
    small = ["sweep", "--dataset", "cifar10", "--depths", "20", "--arch", "residual", "--dry-run"]
    assumed = CliRunner().invoke(app, [*small, "--gpu", "A100"], env=env)
    assert assumed.exit_code == 0 and "assumed 20 TFLOP/s" in assumed.output and "A100" in assumed.output
    full = CliRunner().invoke(app, [*small, "--json", "--set", "model.compute_dtype='float32'"], env=env)
    assert {run["rate"]["how"] for run in json.loads(full.stdout)["runs"]} == {"assumed"}
    refused = CliRunner().invoke(app, ["sweep", "--dataset", "cifar10", "--gpu", "H200"], env=env)
    assert refused.exit_code == 2 and "--dry-run" in refused.output
