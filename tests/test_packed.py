"""Packed seeds (several seeds in one program) and several iterations per call."""

from __future__ import annotations

import json
import threading

import jax
import numpy as np
import orbax.checkpoint as ocp

from resdepth.training import packing, step as steps
from resdepth.training.mesh import make_mesh, replicated
from resdepth.config import load_config, parse_override
from resdepth.models.network import build_model
from resdepth.training.sweep import GridPoint, run_dir_for, run_sweep
from resdepth.training.loop import model_spec, train_and_evaluate, train_packed

from conftest import stop_at, tiny_config

WALL_FIELDS = ("images_per_s", "wall_s")


def rows(run_dir):
    return [{k: v for k, v in json.loads(line).items() if k not in WALL_FIELDS}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def saved_state(run_dir, step):
    return ocp.StandardCheckpointer().restore((run_dir / "checkpoints" / str(step) / "state").absolute())


def max_difference(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_packed_seeds_equal_seeds_trained_alone_and_each_resumes(tmp_path, digits_data_dir):
    solo = [tiny_config(digits_data_dir, steps=50, seed=seed, name="solo") for seed in (0, 1)]
    for config in solo:
        assert train_and_evaluate(config, run_dir_for(tmp_path, config), stop=threading.Event())["status"] == "completed"

    # The sweep packs the two seeds of ResNet-8 into one program.
    base = tiny_config(digits_data_dir, "sweep.pack=true", steps=50, name="packed")
    points = [GridPoint("residual", 8, 0), GridPoint("residual", 8, 1)]
    summaries = run_sweep(base, points, tmp_path, lambda *_: (lambda event: None), threading.Event())
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    assert [s["packed_seeds"] for s in summaries] == [2, 2]
    for config, summary in zip(solo, summaries):
        alone, packed = run_dir_for(tmp_path, config), tmp_path / "packed" / summary["name"]
        assert max_difference(saved_state(alone, 50)["params"], saved_state(packed, 50)["params"]) < 1e-5
        assert rows(alone) == rows(packed)
        assert summary["final_test_error"] == json.loads((alone / "summary.json").read_text())["final_test_error"]

    # Interrupted at iteration 20, seed 0 resumes alone and seed 1 in a pack of one.
    configs = [tiny_config(digits_data_dir, steps=50, seed=seed, name="resumed") for seed in (0, 1)]
    run_dirs = [run_dir_for(tmp_path, config) for config in configs]
    flag, sink = stop_at(20)
    interrupted = train_packed(configs, run_dirs, [sink, lambda event: None], flag)
    assert [s["status"] for s in interrupted] == ["interrupted", "interrupted"]
    assert train_and_evaluate(configs[0], run_dirs[0], stop=threading.Event())["status"] == "completed"
    assert train_packed(configs[1:], run_dirs[1:], [lambda event: None], threading.Event())[0]["status"] == "completed"
    for config, run_dir in zip(solo, run_dirs):
        alone = run_dir_for(tmp_path, config)
        assert max_difference(saved_state(alone, 50)["params"], saved_state(run_dir, 50)["params"]) < 1e-5
        assert rows(alone) == rows(run_dir)


def test_several_iterations_per_call_are_bit_identical_to_one(tmp_path, digits_data_dir):
    # Chunks of 4 stop at every logging point (every 5): calls of 4, 1, 4, 1, ...
    one = tiny_config(digits_data_dir, "run.steps_per_call=1", steps=20, name="one")
    four = tiny_config(digits_data_dir, "run.steps_per_call=4", steps=20, name="four")
    for config in (one, four):
        train_and_evaluate(config, run_dir_for(tmp_path, config), stop=threading.Event())
    a, b = (saved_state(run_dir_for(tmp_path, config), 20) for config in (one, four))
    assert max_difference(a, b) == 0.0
    assert rows(run_dir_for(tmp_path, one)) == rows(run_dir_for(tmp_path, four))


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
    assert steps.stacks_seeds("gpu") and steps.stacks_seeds("tpu") and not steps.stacks_seeds("cpu")
    packed = steps.make_train_step(config, graphdef, mesh, packed=True, stacked=True)(
        packing.pack_states(states, mesh, stacked=True), data, indices)
    assert packed.step.shape == (2,)
    single = steps.make_train_step(config, graphdef, mesh)
    for seed in (0, 1):
        alone = single(jax.tree.map(lambda x: x.copy(), states[seed]), data, indices[seed])
        assert max_difference(alone.params, packing.seed_slice(packed, seed).params) < 1e-5


def test_auto_packs_on_tpus_only_and_true_or_false_wins():
    # "auto" follows the H200 measurement (vmapped seeds slower than one at a time on a GPU).
    from resdepth.training import sweep

    auto = load_config("cifar10", [])
    assert auto.sweep.pack == "auto" and auto.sweep.pack_formulation == "auto"
    for backend, packs in (("cpu", False), ("gpu", False), ("tpu", True)):
        assert sweep.packs(auto, backend) is packs
        assert sweep.packs(load_config("cifar10", [parse_override("sweep.pack=true")]), backend)
        assert not sweep.packs(load_config("cifar10", [parse_override("sweep.pack=false")]), backend)
    assert [sweep.pack_layout(auto, backend) for backend in ("cpu", "gpu", "tpu")] == ["tuple", "vmap", "vmap"]
