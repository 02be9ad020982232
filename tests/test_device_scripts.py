"""The device plan's scripts without a device: the XLA flags they pass parse under the installed
jaxlib, the variants' arithmetic and commands, the cell order, the unrolled stages, and a part
stopped at its cap. (Their end-to-end smoke runs, under the device's pinned versions, are in
docs/benchmarks.md: too slow for tests.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from benchmarks.child_process import run
from benchmarks.gpu_check import cell_order
from benchmarks.gpu_profile import PROFILE_COMMAND_BUFFERS
from benchmarks.unrolled_stages import unrolled_stages
from benchmarks.xla_variants import (DEFAULT_VARIANTS, VARIANTS, child_command, format_table,
                                     per_layer_us, share_of_budget)
from resdepth.models.network import ModelSpec, ResNet
from resdepth.runtime.xla_flags import probe_xla_flags, xla_complaint

ROOT = Path(__file__).resolve().parents[1]


def test_every_flag_the_device_scripts_pass_parses_and_an_unknown_one_is_named():
    sets = [" ".join(variant.flags) for variant in VARIANTS.values()] + [PROFILE_COMMAND_BUFFERS]
    results = probe_xla_flags(sets + ["--xla_gpu_legacy_command_buffer_custom_call_targets=x"])
    assert [complaint for complaint, _ in results[:-1]] == [None] * len(sets)
    complaint, options = results[-1]
    assert complaint.startswith("Unknown flag in XLA_FLAGS") and options == {}
    # what XLA then holds: the whole list spelled out, WHILE in it
    held = dict(zip(VARIANTS, (options for _, options in results)))["cb-while"]
    assert "WHILE" in held["xla_gpu_enable_command_buffer"]
    assert held["xla_gpu_command_buffer_unroll_loops"] == ["true"]


def test_xla_complaints_are_read_out_of_a_childs_output():
    output = ("E1206 02:48:45.670234 8603 debug_options_flags.cc:194] Illegal value for "
              "--xla_gpu_enable_command_buffer 'BOGUS'\nF1206 ... Flag parsing failed.\nusage: ...")
    assert xla_complaint(output) == "Illegal value for --xla_gpu_enable_command_buffer 'BOGUS'"
    assert xla_complaint("F1206 parse_flags_from_env.cc:234] Unknown flag in XLA_FLAGS: --x=1") == \
        "Unknown flag in XLA_FLAGS: --x=1"
    assert xla_complaint("all well") is None


def test_variants_measure_each_in_its_own_gpu_check_with_an_even_share_of_the_budget(tmp_path):
    assert DEFAULT_VARIANTS.split(",")[0] == "default" and "autotune-0" not in DEFAULT_VARIANTS
    settings = {"rounds": 3, "round_s": 0.3, "steps": None, "steps_per_call": 10}
    command = child_command(VARIANTS["unrolled"], [20, 110], ["tf32"], settings, 37.4, tmp_path / "a.json")
    assert command[1:3] == ["-m", "benchmarks.gpu_check"] and command[-1] == "--unrolled-stages"
    assert command[command.index("--budget-s") + 1] == "37" and "--order" in command
    assert not any(flag.startswith("--xla") for flag in command)  # flags go in XLA_FLAGS
    assert share_of_budget(200, 4) == 40 and share_of_budget(5, 3) == 1
    # the H200's default, 2026-11-27: ResNet-20 40,262 and ResNet-110 7,108 images/s
    assert per_layer_us({20: 40_262.0, 110: 7_108.0, 56: 14_075.0}) == pytest.approx(
        1e6 * 128 * (1 / 7_108 - 1 / 40_262) / 90)
    assert per_layer_us({20: 40_262.0}) is None


def test_the_variants_table_gives_each_rate_against_the_default():
    def check(rates):
        return {"measurements": [{"depth": d, "dtype": "tf32", "seeds": 1, "images_per_s": r,
                                  "compile_s": 4.0} for d, r in rates.items()]}

    results = [{"name": "default", "check": check({20: 40_000.0, 110: 8_000.0})},
               {"name": "cb-off", "check": check({20: 20_000.0})}]
    header, default, cb_off = format_table(results, [20, 110], ["tf32"])
    assert "ResNet-110" in header and "40,000" in default and "8,000" in default
    assert "20,000 (0.50x)" in cb_off and "—" in cb_off


def test_cells_go_depth_by_depth_or_dtype_by_dtype():
    assert cell_order([20, 110], ["tf32", "bfloat16"], {"tf32"}, 5) == [
        (20, "tf32", 1), (20, "tf32", 5), (20, "bfloat16", 1),
        (110, "tf32", 1), (110, "tf32", 5), (110, "bfloat16", 1)]
    assert cell_order([20, 110], ["tf32", "bfloat16"], set(), 1, "dtype") == [
        (20, "tf32", 1), (110, "tf32", 1), (20, "bfloat16", 1), (110, "bfloat16", 1)]


def test_unrolled_stages_leave_no_while_loop_and_the_scan_returns_after():
    spec = ModelSpec(depth=20, compute_dtype="float32")  # 2 scanned blocks a stage
    graphdef, state = nnx.split(nnx.eval_shape(lambda: ResNet(spec, rngs=nnx.Rngs(0))))
    images = jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32)

    def program() -> str:  # a new function each time: JAX reuses the trace of one it has seen
        def forward(state, images):
            return nnx.merge(graphdef, state)(images, train=False)
        return jax.jit(forward).lower(state, images).as_text()

    with unrolled_stages():
        unrolled = program()
    assert "stablehlo.while" not in unrolled and "stablehlo.while" in program()


def test_the_untapped_variant_traces_the_step_without_the_signals_conditionals(tmp_path):
    """benchmarks/untapped.py: the step as before signals existed (no `case` anywhere), for the
    variant that measures what the taps cost; the taps come back after the block."""
    from benchmarks.untapped import untapped
    from resdepth.config import load_config, parse_override
    from resdepth.training import step as steps
    from resdepth.training.mesh import make_mesh

    config = load_config("digits", [parse_override("model.depth=14")])
    mesh = make_mesh()
    model = nnx.eval_shape(lambda: ResNet(ModelSpec(depth=14), rngs=nnx.Rngs(0), in_channels=1))
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    fresh = jax.eval_shape(lambda p, b: steps.fresh_state(config, p, b, mesh), params, batch_stats)
    data = steps.DeviceDataset(jax.ShapeDtypeStruct((64, 8, 8, 1), jnp.uint8),
                               jax.ShapeDtypeStruct((64,), jnp.int32),
                               jax.ShapeDtypeStruct((8, 8, 1), jnp.float32))
    arguments = (fresh, data, jax.ShapeDtypeStruct((32,), jnp.int32), jnp.bool_(False))

    def program() -> str:  # a new function each time: JAX reuses the trace of one it has seen
        return jax.jit(steps.train_iterations(config, graphdef, mesh)).lower(*arguments).as_text()

    with untapped():
        plain = program()
    assert "stablehlo.case" not in plain and "stablehlo.case" in program()
    command = child_command(VARIANTS["untapped"], [20], ["tf32"], {"rounds": 1, "round_s": 1,
                            "steps_per_call": 1}, 10, tmp_path / "u.json")
    assert command[-1] == "--untapped" and "untapped" in DEFAULT_VARIANTS


def test_a_part_streams_its_output_and_is_stopped_with_its_children_at_its_cap(capsys):
    code = ("import subprocess, sys, time\nprint('first', flush=True)\n"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\ntime.sleep(60)")
    output, status, seconds = run("sleeper", [sys.executable, "-c", code], 3, dict(os.environ))
    assert output == "first\n" and status == 124 and seconds < 20
    assert "first" in capsys.readouterr().out
    alive = subprocess.run(["pgrep", "-f", "time.sleep\\(60\\)"], capture_output=True, text=True)
    assert alive.stdout.strip() == ""


def test_the_device_calls_are_short_lines_that_check_their_arguments():
    script = ROOT / "benchmarks" / "device_call.sh"
    refused = subprocess.run(["bash", str(script), "3"], capture_output=True, text=True)
    assert refused.returncode == 2 and "usage" in refused.stderr
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
