"""Packed seeds (several seeds in one program) and several iterations per call."""

from __future__ import annotations

import json
import threading

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from resdepth.rundir.directory import RunDirectory

from resdepth.training import packing, step as steps
from resdepth.training.packing import states as pack_states_of
from resdepth.training.packing.steps import make_step, signals_of
from resdepth.training.mesh import make_mesh, replicated
from resdepth.config import load_config, parse_override
from resdepth.models.network import build_model
from resdepth.training.sweep import GridPoint, run_sweep
from resdepth.training.session import train_run, train_runs
from resdepth.training.step import model_spec

from conftest import stop_at, tiny_config

WALL_FIELDS = ("images_per_s", "wall_s")


def rows(run_dir):
    return [{k: v for k, v in json.loads(line).items() if k not in WALL_FIELDS}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_signals(alone, packed):
    """A pack's layer signals are the run's alone, to float32 rounding of equal-to-1e-5 states."""
    rows_alone, rows_packed = (
        [json.loads(line) for line in (run_dir / "signals.jsonl").read_text().splitlines()]
        for run_dir in (alone, packed))
    assert [(r["type"], r["step"]) for r in rows_packed] == [(r["type"], r["step"]) for r in rows_alone]
    assert len(rows_alone) == 12  # the layers row, iteration 1, and every 5th iteration to 50
    assert rows_packed[0] == rows_alone[0]
    for a, b in zip(rows_alone[1:], rows_packed[1:]):
        for key in ("weight_grad_rms", "weight_rms", "response_grad_rms", "response_std"):
            np.testing.assert_allclose(b[key], a[key], rtol=1e-4, err_msg=f"{key} at {a['step']}")


def saved_state(run_dir, step):
    return ocp.StandardCheckpointer().restore((run_dir / "checkpoints" / str(step) / "state").absolute())


def max_difference(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_packed_seeds_equal_seeds_trained_alone_and_each_resumes(tmp_path, digits_data_dir):
    solo = [tiny_config(digits_data_dir, steps=50, seed=seed, name="solo") for seed in (0, 1)]
    for config in solo:
        assert train_run(config, RunDirectory.of(tmp_path, config).path, stop=threading.Event())["status"] == "completed"

    # The sweep packs the two seeds of ResNet-8 into one program.
    base = tiny_config(digits_data_dir, "sweep.pack=true", steps=50, name="packed")
    points = [GridPoint("residual", 8, 0), GridPoint("residual", 8, 1)]
    summaries = run_sweep(base, points, tmp_path, lambda *_: (lambda event: None), threading.Event())
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    assert [s["packed_seeds"] for s in summaries] == [2, 2]
    for config, summary in zip(solo, summaries):
        alone, packed = RunDirectory.of(tmp_path, config).path, tmp_path / "packed" / summary["name"]
        assert max_difference(saved_state(alone, 50)["params"], saved_state(packed, 50)["params"]) < 1e-5
        assert rows(alone) == rows(packed)
        assert_same_signals(alone, packed)
        assert summary["final_test_error"] == json.loads((alone / "summary.json").read_text())["final_test_error"]

    # Interrupted at iteration 20, seed 0 resumes alone and seed 1 in a pack of one.
    configs = [tiny_config(digits_data_dir, steps=50, seed=seed, name="resumed") for seed in (0, 1)]
    run_dirs = [RunDirectory.of(tmp_path, config).path for config in configs]
    flag, sink = stop_at(20)
    interrupted = train_runs(configs, run_dirs, [sink, lambda event: None], flag, make_trainer=packing.Pack)
    assert [s["status"] for s in interrupted] == ["interrupted", "interrupted"]
    assert train_run(configs[0], run_dirs[0], stop=threading.Event())["status"] == "completed"
    assert train_runs(configs[1:], run_dirs[1:], [lambda event: None], threading.Event(),
                      make_trainer=packing.Pack)[0]["status"] == "completed"
    for config, run_dir in zip(solo, run_dirs):
        alone = RunDirectory.of(tmp_path, config).path
        assert max_difference(saved_state(alone, 50)["params"], saved_state(run_dir, 50)["params"]) < 1e-5
        assert rows(alone) == rows(run_dir)
        assert_same_signals(alone, run_dir)


def test_several_iterations_per_call_are_bit_identical_to_one(tmp_path, digits_data_dir):
    # Chunks of 4 stop at every logging point (every 5): calls of 4, 1, 4, 1, ...
    one = tiny_config(digits_data_dir, "run.steps_per_call=1", steps=20, name="one")
    four = tiny_config(digits_data_dir, "run.steps_per_call=4", steps=20, name="four")
    for config in (one, four):
        train_run(config, RunDirectory.of(tmp_path, config).path, stop=threading.Event())
    a, b = (saved_state(RunDirectory.of(tmp_path, config).path, 20) for config in (one, four))
    assert max_difference(a, b) == 0.0
    assert rows(RunDirectory.of(tmp_path, one).path) == rows(RunDirectory.of(tmp_path, four).path)


def test_vmapped_pack_matches_each_seed_to_float_rounding():
    """The accelerator layout (stacked state, jax.vmap) checked on CPU after one iteration;
    later iterations amplify rounding differences, which is why CPU packs are not vmapped."""
    config = load_config("digits", [parse_override(t) for t in ("model.depth=8", "optim.batch_size=32")])
    mesh = make_mesh()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 8, 8, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, 64).astype(np.int32)
    data = steps.DeviceDataset(*(jax.device_put(x, replicated(mesh)) for x in (
        images, labels, images.mean(0).astype(np.float32))))
    states, graphdef = [], None
    for seed in (0, 1):
        seeded = load_config("digits", [parse_override(t) for t in (
            "model.depth=8", "optim.batch_size=32", f"run.seed={seed}")])
        graphdef, state = steps.init_state(seeded, build_model(model_spec(seeded, 10), seed, 1), mesh)
        states.append(state)
    indices = np.stack([rng.permutation(64)[:32] for _ in (0, 1)]).astype(np.int32)
    assert [packing.layout("auto", backend) for backend in ("gpu", "tpu", "cpu")] == ["vmap", "vmap", "tuple"]
    packed, packed_signals = make_step(config, mesh, "vmap", [graphdef, graphdef])(
        pack_states_of.pack_states(states, mesh, "vmap"), data, indices, jnp.bool_(True))
    assert packed.step.shape == (2,)
    single = steps.make_train_step(config, graphdef, mesh)
    for seed in (0, 1):
        alone, signals = single(jax.tree.map(lambda x: x.copy(), states[seed]), data,
                                indices[seed], jnp.bool_(True))
        assert max_difference(alone.params, pack_states_of.seed_slice(packed, seed).params) < 1e-5
        # Each run's layer signals, measured inside the vmapped step, are its own.
        of_seed = signals_of("vmap", packed_signals, seed)
        for name, values in signals.items():
            assert np.all(np.asarray(values) > 0), name
            np.testing.assert_allclose(of_seed[name], values, rtol=1e-4, err_msg=name)


def test_auto_packs_on_tpus_only_and_true_or_false_wins():
    # "auto" follows the H200 measurement (vmapped seeds slower than one at a time on a GPU).
    auto = load_config("cifar10", [])
    assert auto.sweep.pack == "auto" and auto.sweep.pack_formulation == "auto"
    for backend, packs in (("cpu", False), ("gpu", False), ("tpu", True)):
        assert packing.packs(auto, backend) is packs
        assert packing.packs(load_config("cifar10", [parse_override("sweep.pack=true")]), backend)
        assert not packing.packs(load_config("cifar10", [parse_override("sweep.pack=false")]), backend)
    assert [packing.layout(auto.sweep.pack_formulation, backend) for backend in ("cpu", "gpu", "tpu")] == ["tuple", "vmap", "vmap"]
