"""The channel-packed net (training/packing/net.py): S runs of one shape as one wide or grouped
net, network.ResNet with the runs as its lanes.

Each run of a pack must get the iteration it gets alone. The check walks each run's own
trajectory alone and, at every one of its 50 iterations, packs the runs' states, takes one
packed iteration and compares the loss (within 1e-4); after the first iteration also every
parameter, momentum and BatchNorm statistic (within 1e-5 of its leaf's scale).

Comparing two trajectories run apart instead measures the training's own chaos, not the
packing: on these tiny digits nets a 1e-7 relative change of the initial weights, the size of
a float rounding, grows to percent-level losses within 50 iterations for most seeds, alone and
in every formulation, vmap included; only the tuple layout is bit-identical. Some states along
a trajectory are ill-conditioned too (BatchNorm channels of nearly constant response): from
them one iteration of a 3-run pack moves a few BatchNorm biases by up to 2% of their leaf's
largest value, the same in the wide and grouped layouts (it comes from the per-channel
reductions over 3 runs' channels, not from the convolutions), which is why parameters are
compared after the first iteration only.
"""

from __future__ import annotations

import dataclasses
import json
import threading

import jax
import numpy as np
import pytest

from resdepth.rundir.directory import RunDirectory

from resdepth.data.datasets import BatchOrder, load_dataset
from resdepth.models.network import build_model
from resdepth.training import loop, step as steps
from resdepth.training.session import train_run, train_runs
from resdepth.training.mesh import make_mesh, replicated
from resdepth.training.packing import Pack, states as packing
from resdepth.training.packing.net import packed_graphdef
from resdepth.training.packing.steps import make_step, signals_of
from resdepth.training.step import model_spec
from resdepth.training.sweep import GridPoint, _pack_groups

from conftest import stop_at, tiny_config

ITERATIONS = 50
MEASURE = np.bool_(True)  # every iteration records its layer signals, which trains it the same


def copied(state):
    return jax.tree.map(lambda x: x.copy(), state)


def relative_difference(a, b) -> float:
    """The largest difference of two trees' leaves, each over the larger magnitude of its leaf."""
    worst = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        worst = max(worst, float(np.max(np.abs(x - y)) / max(np.max(np.abs(x)), 1e-30)))
    return worst


def nan_stem(params):
    """`params` with the first convolution's kernel NaN."""
    def poison(path, leaf):
        return leaf * np.float32(np.nan) if "'stem'" in jax.tree_util.keystr(path) and leaf.ndim == 4 else leaf

    return jax.tree_util.tree_map_with_path(poison, params)


@pytest.fixture(scope="module")
def digits(digits_data_dir):
    mesh = make_mesh()
    config = tiny_config(digits_data_dir)
    data = load_dataset(config.data)
    device_data = steps.DeviceDataset(*(jax.device_put(x, replicated(mesh)) for x in (
        data.train_images, data.train_labels.astype(np.int32), data.mean_image)))
    return digits_data_dir, mesh, device_data, len(data.train_images)


@pytest.fixture(scope="module")
def alone(digits):
    """Each run's trajectory alone: (config, graphdef, states before each iteration and after
    the last, each iteration's summed loss, its batches, its layer signals), keyed (residual,
    seed)."""
    data_dir, mesh, data, size = digits
    runs, train_steps = {}, {}
    for residual, seed in ((True, 0), (True, 1), (False, 0)):
        config = tiny_config(data_dir, residual=residual, seed=seed)
        graphdef, state = steps.init_state(config, build_model(model_spec(config, 10), seed, 1), mesh)
        train = train_steps.setdefault(residual, steps.make_train_step(config, graphdef, mesh))
        order = BatchOrder(seed, size, config.optim.batch_size)
        batches = [order.indices(t).astype(np.int32) for t in range(ITERATIONS)]
        states, losses, signals = [], [], []
        for indices in batches:
            states.append(copied(state))
            state, measured = train(state, data, indices, MEASURE)
            losses.append(float(state.loss_sum))
            signals.append(measured)
            state = packing.replace_per_seed(state, mesh, loss_sum=[0.0])
        states.append(state)
        runs[residual, seed] = (config, graphdef, states, losses, batches, signals)
    return runs


_COMPILED: dict = {}


def packed_step(digits, alone, keys, layout):
    """The packed train step of these runs, compiled once for the module."""
    if (keys, layout) not in _COMPILED:
        _, mesh, _, _ = digits
        config = alone[keys[0]][0]
        graphdef = packed_graphdef(model_spec(config, 10), [residual for residual, _ in keys],
                                   layout, 1)
        _COMPILED[keys, layout] = make_step(config, mesh, layout, [alone[key][1] for key in keys],
                                            graphdef)
    return _COMPILED[keys, layout]


# Two seeds of ResNet-8 and a plain-8 in one pack: a pack of seeds and a pack of plain beside
# residual at once (one compiled program for both, which the tests' time needs).
PACK = ((True, 0), (True, 1), (False, 0))


@pytest.mark.parametrize("layout, iterations", [
    ("wide", ITERATIONS),
    ("grouped", 2),  # grouped convolutions run slowly on CPU
])
def test_each_run_of_a_pack_gets_its_iteration_alone(digits, alone, layout, iterations):
    _, mesh, data, _ = digits
    keys = PACK
    train = packed_step(digits, alone, keys, layout)
    for t in range(iterations):
        packed = packing.pack_states([alone[key][2][t] for key in keys], mesh, layout)
        assert isinstance(packed, packing.ChannelPackedState)
        packed, signals = train(packed, data, np.stack([alone[key][4][t] for key in keys]), MEASURE)
        losses = packing.seed_values(packed, "loss_sum")
        for position, key in enumerate(keys):
            want = alone[key][3][t]
            assert abs(losses[position] - want) <= 1e-4 * abs(want), (key, t, losses[position], want)
            if t == 0:
                # Each lane's layer signals, measured inside the packed step, are its run's.
                mine = signals_of(layout, signals, position)
                for name, theirs in alone[key][5][t].items():
                    np.testing.assert_allclose(mine[name], theirs, rtol=1e-4, err_msg=f"{key} {name}")
                mine, theirs = packing.seed_slice(packed, position), alone[key][2][1]
                assert relative_difference(theirs.params, mine.params) < 1e-5, key
                assert relative_difference(theirs.opt_state, mine.opt_state) < 1e-5, key
                assert relative_difference(theirs.batch_stats, mine.batch_stats) < 1e-5, key
                assert int(mine.step) == 1


def test_a_pack_of_two_built_from_the_one_resnet_gets_each_runs_first_iteration(digits, alone):
    """A plain-8 beside a ResNet-8: network.ResNet with two lanes (no second net class) takes
    one iteration, and each run gets the loss and parameters it gets alone."""
    from resdepth.models.network import ResNet

    _, mesh, data, _ = digits
    keys = ((False, 0), (True, 1))
    config = alone[keys[0]][0]
    net = packed_graphdef(model_spec(config, 10), [residual for residual, _ in keys], "wide", 1)
    assert net.nodes[0].type is ResNet  # the root of the packed graph
    packed = packing.pack_states([alone[key][2][0] for key in keys], mesh, "wide")
    train = packed_step(digits, alone, keys, "wide")
    packed = train(packed, data, np.stack([alone[key][4][0] for key in keys]), MEASURE)[0]
    losses = packing.seed_values(packed, "loss_sum")
    for position, key in enumerate(keys):
        want = alone[key][3][0]
        assert abs(losses[position] - want) <= 1e-4 * abs(want), (key, losses[position], want)
        assert relative_difference(alone[key][2][1].params, packing.seed_slice(packed, position).params) < 1e-5


def test_packing_and_unpacking_is_exact_and_a_diverged_run_leaves_the_others_alone(digits, alone):
    _, mesh, data, _ = digits
    keys = PACK
    states = [alone[key][2][3] for key in keys]  # after 3 iterations: momentum is not zero
    packed = packing.pack_states(states, mesh, "wide")
    for position, state in enumerate(states):
        back = packing.seed_slice(packed, position)
        assert jax.tree.structure(back) == jax.tree.structure(state)
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(state)))

    # The plain run's first convolution is NaN: its loss is NaN, and the others compute, bit
    # for bit, what they compute beside a healthy one, in both layouts (3 iterations; grouped 1).
    broken = [*states[:2], dataclasses.replace(states[2], params=nan_stem(states[2].params))]
    batches = [np.stack([alone[key][4][t] for key in keys]) for t in range(3, 6)]
    for layout, iterations in (("wide", 3), ("grouped", 1)):
        train = packed_step(digits, alone, keys, layout)
        healthy, poisoned = (packing.pack_states(each, mesh, layout) for each in (states, broken))
        for indices in batches[:iterations]:
            healthy = train(healthy, data, indices, MEASURE)[0]
            poisoned = train(poisoned, data, indices, MEASURE)[0]
        losses = packing.seed_values(poisoned, "loss_sum")
        assert np.all(np.isfinite(losses[:2])) and np.isnan(losses[2]), layout
        assert losses[:2] == packing.seed_values(healthy, "loss_sum")[:2]
        for position in (0, 1):
            for a, b in zip(jax.tree.leaves(packing.seed_slice(healthy, position)),
                            jax.tree.leaves(packing.seed_slice(poisoned, position))):
                assert np.array_equal(a, b), layout


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_wide_pack_trains_plain_beside_residual_a_diverging_run_stops_alone_and_each_resumes_alone(
        tmp_path, digits_data_dir, monkeypatch):
    """Two ResNet-8 seeds and a plain-8 (its first convolution NaN from the start) in one wide
    program: the plain run diverges at the first log, the others train on; stopped there, a
    ResNet-8 resumes alone from the checkpoint the pack wrote in the single-run form."""
    fresh = steps.init_state

    def plain_broken(config, model, mesh):
        graphdef, state = fresh(config, model, mesh)
        if not config.model.residual:
            state = dataclasses.replace(state, params=nan_stem(state.params))
        return graphdef, state

    monkeypatch.setattr(loop.steps, "init_state", plain_broken)
    configs = [tiny_config(digits_data_dir, "sweep.pack_formulation='wide'", residual=residual,
                           seed=seed, steps=10, name="wide") for residual, seed in PACK]
    run_dirs = [RunDirectory.of(tmp_path, config).path for config in configs]
    flag, sink = stop_at(5)
    first = train_runs(configs, run_dirs, [sink] + [lambda event: None] * 2, flag, make_trainer=Pack)
    assert [s["status"] for s in first] == ["interrupted", "interrupted", "diverged"]
    assert first[2]["steps_done"] == 5 and "loss became nan" in first[2]["message"]
    assert [s["packed_seeds"] for s in first] == [3, 3, 3]
    for run_dir in run_dirs[:2]:
        assert [row["step"] for row in rows(run_dir)] == [5]
        assert np.isfinite(rows(run_dir)[0]["train_loss"])

    resumed = train_run(configs[1], run_dirs[1], stop=threading.Event())
    assert resumed["status"] == "completed" and resumed["packed_seeds"] == 1
    assert [(row["type"], row["step"]) for row in rows(run_dirs[1])] == [
        ("train", 5), ("train", 10), ("eval", 10)]
    assert np.isfinite(resumed["final_test_error"]) and np.isfinite(resumed["final_train_error"])


def test_the_sweep_packs_plain_beside_residual_where_the_layout_allows():
    from resdepth.config import load_config, parse_override

    points = [GridPoint(arch, depth, seed) for arch in ("plain", "residual")
              for depth in (20, 56) for seed in (0, 1, 2)]

    def groups(*overrides, backend="gpu"):
        base = load_config("cifar10", [parse_override(text) for text in ("sweep.pack=true", *overrides)])
        return [[f"{p.arch[0]}{p.depth}s{p.seed}" for p in group] for group in _pack_groups(base, points, backend)]

    assert groups("sweep.pack_formulation='wide'", "sweep.pack_size=4") == [
        ["p20s0", "p20s1", "p20s2", "r20s0"], ["p56s0", "p56s1", "p56s2", "r56s0"],
        ["r20s1", "r20s2"], ["r56s1", "r56s2"]]
    assert groups("sweep.pack_formulation='vmap'") == [
        ["p20s0", "p20s1", "p20s2"], ["p56s0", "p56s1", "p56s2"],
        ["r20s0", "r20s1", "r20s2"], ["r56s0", "r56s1", "r56s2"]]
    assert groups("sweep.pack_formulation='wide'", "model.shortcut='B'")[0] == ["p20s0", "p20s1", "p20s2"]
    assert groups(backend="cpu")[0] == ["p20s0", "p20s1", "p20s2", "r20s0", "r20s1", "r20s2"]  # tuple
    assert len(groups("sweep.pack=false")) == len(points)


def test_the_old_pack_seeds_key_is_refused_with_its_new_name_and_read_in_saved_configs():
    from resdepth.config import ConfigError, config_from_dict, load_config, parse_override

    with pytest.raises(ConfigError, match=r"sweep.pack_seeds is now sweep.pack"):
        load_config("cifar10", [parse_override("sweep.pack_seeds=true")])
    saved = load_config("cifar10").to_dict()
    saved["sweep"] = {**{k: v for k, v in saved["sweep"].items() if k != "pack"}, "pack_seeds": True}
    assert config_from_dict(saved).sweep.pack is True
    with pytest.raises(ConfigError, match="pack_formulation"):
        load_config("cifar10", [parse_override("sweep.pack_formulation='diagonal'")])


def test_pack_check_projects_the_fastest_plan_per_depth_and_imports_no_tensorflow():
    import subprocess
    import sys

    from benchmarks.pack_check import cell_order, pack_plan, project

    assert pack_plan(6, 4) == [4, 2] and pack_plan(2, 5) == [2] and pack_plan(8, 4) == [4, 4]
    order = cell_order([20, 110], [1, 2, 5], ["wide", "tuple"])
    assert order[:4] == [("alone", 20, 1), ("alone", 110, 1), ("wide", 20, 5), ("wide", 110, 5)]
    assert order[4:6] == [("tuple", 20, 5), ("tuple", 110, 5)]  # tuple: its first size early
    assert order[-3:] == [("wide", 110, 2), ("tuple", 20, 2), ("tuple", 110, 2)]
    assert len(order) == 2 + 2 * 2 * 2
    # ResNet-110 alone 100 images/s; 5 wide runs 250 in all (50 each); vmap no gain.
    rates = {("alone", 20, 1): 400.0, ("alone", 110, 1): 100.0, ("wide", 20, 5): 1000.0,
             ("wide", 110, 5): 250.0, ("vmap", 110, 5): 90.0, ("vmap", 20, 5): 300.0}
    grid = {("plain", 110): 1, ("residual", 110): 5, ("residual", 20): 1}
    plan = project(rates, grid, iterations=1000, batch=1)
    hour = 3600
    assert plan["alone_h"] == pytest.approx((6 * 1000 / 100 + 1000 / 400) / hour)
    # Depth 110: one wide pack of 5 (mixed archs allowed) and the sixth run alone.
    assert plan["per_depth"][110][0] == "wide packs of 5"
    assert plan["per_depth"][110][2] == pytest.approx((1000 * 5 / 250 + 1000 / 100) / hour)
    assert plan["per_depth"][20][0] == "one at a time"  # a pack of one is the run alone
    code = ("import sys, benchmarks.pack_check; sys.exit(any(m.split('.')[0] in "
            "('tensorflow', 'tensorflow_datasets', 'orbax') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
