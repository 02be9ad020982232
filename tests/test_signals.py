"""Forward and backward signals per layer (training/signals.py, signals.jsonl): the logged
numbers against an independent net differentiated with jax.grad, and the file's life."""

from __future__ import annotations

import json
import shutil
import threading

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from resdepth.data.augment import normalize, random_crop_flip
from resdepth.data.datasets import BatchOrder, load_dataset
from resdepth.evaluate.trained import load_trained_run
from resdepth.rundir.directory import RunDirectory
from resdepth.rundir.record import read_run
from resdepth.training.mesh import make_mesh
from resdepth.training.session import train_run

from conftest import lowerings, tiny_config


# ------------------------------------------------------------------ an independent net
def _conv(x, kernel, stride):
    pad = kernel.shape[0] // 2
    return lax.conv_general_dilated(x, kernel, (stride, stride), [(pad, pad), (pad, pad)],
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision=lax.Precision.HIGHEST)


def _batch_norm(x, norm):
    mean = jnp.mean(x, axis=(0, 1, 2))
    var = jnp.mean(jnp.square(x), axis=(0, 1, 2)) - jnp.square(mean)
    return (x - mean) * lax.rsqrt(var + 1e-5) * norm["scale"] + norm["bias"]


def _blocks(stage):
    """A stage's blocks as parameter dicts: the first, then each scanned one unstacked."""
    blocks = [stage["first"]]
    repeated = stage.get("repeated")
    if repeated is not None:
        count = repeated["layers"][0]["conv"]["kernel"].shape[0]
        blocks += [jax.tree.map(lambda leaf, b=b: leaf[b], repeated) for b in range(count)]
    return blocks


def reference_loss(params, probes, images, labels, residual):
    """Mean cross-entropy of a CIFAR-family net (two 3x3 convs per block, option A) written
    from the paper, with probes added to each 3x3 response; also returns the responses.
    `probes` None: zeros are made and their shapes returned in place of the loss."""
    responses = []

    def respond(y):
        y = y + (probes[len(responses)] if probes is not None else 0.0)
        responses.append(y)
        return y

    x = jax.nn.relu(respond(_batch_norm(_conv(images, params["stem"]["conv"]["kernel"], 1),
                                        params["stem"]["norm"])))
    for index in sorted(params["stages"]):
        for number, block in enumerate(_blocks(params["stages"][index])):
            stride = 2 if index > 0 and number == 0 else 1
            first, second = block["layers"][0], block["layers"][1]
            y = jax.nn.relu(respond(_batch_norm(_conv(x, first["conv"]["kernel"], stride), first["norm"])))
            y = respond(_batch_norm(_conv(y, second["conv"]["kernel"], 1), second["norm"]))
            if residual:
                shortcut = x[:, ::stride, ::stride, :]
                extra = y.shape[-1] - shortcut.shape[-1]
                y = y + jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0), (0, extra)))
            x = jax.nn.relu(y)
    logits = jnp.mean(x, axis=(1, 2)) @ params["head"]["kernel"] + params["head"]["bias"]
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    return loss, responses


def reference_signals(params, images, labels, residual):
    """The four quantities of docs/run-directory.md, from jax.grad of the reference net."""
    _, responses = reference_loss(params, None, images, labels, residual)
    probes = [jnp.zeros_like(r) for r in responses]
    (_, responses), (param_grads, probe_grads) = jax.value_and_grad(
        reference_loss, argnums=(0, 1), has_aux=True)(params, probes, images, labels, residual)

    def kernels(tree):
        found = [tree["stem"]["conv"]["kernel"]]
        for index in sorted(tree["stages"]):
            for block in _blocks(tree["stages"][index]):
                found += [block["layers"][j]["conv"]["kernel"] for j in sorted(block["layers"])]
        return found + [tree["head"]["kernel"]]

    rms = lambda a: float(jnp.sqrt(jnp.mean(jnp.square(a))))  # noqa: E731
    batch = images.shape[0]
    return {"weight_grad_rms": [rms(g) for g in kernels(param_grads)],
            "weight_rms": [rms(w) for w in kernels(params)],
            "response_grad_rms": [rms(batch * g) for g in probe_grads],
            "response_std": [float(jnp.std(r)) for r in responses]}


def signal_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "signals.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_logged_signals_equal_jax_grad_of_an_independent_net(tmp_path, digits_data_dir, residual):
    # Depth 14: every stage has a scanned block. Rows of iterations 1, 5 and 10; checkpoints
    # after iterations 9 and 10.
    config = tiny_config(digits_data_dir, "run.checkpoint_every_steps=9", depth=14,
                         residual=residual, steps=10, name="signals")
    run_dir = RunDirectory.of(tmp_path, config).path
    with lowerings() as lowered:
        assert train_run(config, run_dir, stop=threading.Event())["status"] == "completed"
    rows = signal_rows(run_dir)
    assert [row["type"] for row in rows] == ["layers", "signals", "signals", "signals"]
    assert [row["step"] for row in rows[1:]] == [1, 5, 10]
    # One training program for the iterations that measure and those that do not, and no other.
    assert [name for name, _ in lowered if name == "jit(steps)"] == ["jit(steps)"]
    assert not any("signals" in name for name, _ in lowered)

    # The last row: iteration 10's, on its batch and the state before its update (checkpoint 9).
    shutil.rmtree(run_dir / "checkpoints" / "10")
    data = load_dataset(config.data)
    trained = load_trained_run(run_dir, data.num_classes, data.train_images.shape[-1])
    assert trained.step == 9
    indices = BatchOrder(config.run.seed, len(data.train_images), config.optim.batch_size).indices(9)
    images = normalize(data.train_images[indices], data.mean_image)
    key = jax.random.fold_in(jax.random.wrap_key_data(trained.state.rng), 9)
    images = random_crop_flip(key, images, config.data.pad_pixels, config.data.random_flip)[0]
    labels = jnp.asarray(data.train_labels[indices])
    expected = reference_signals(trained.state.params.to_pure_dict(), images, labels, residual)

    header, last = rows[0], rows[-1]
    assert len(header["weighted"]) == 14 and header["weighted"][0] == "stem" and header["weighted"][-1] == "head"
    assert header["responses"] == header["weighted"][:-1]  # every conv is 3x3 in option A nets
    for key, values in expected.items():
        np.testing.assert_allclose(last[key], values, rtol=1e-5, err_msg=key)
    # A signal that is never measured would be 0 or equal everywhere: these vary by layer.
    assert min(last["response_grad_rms"]) > 0 and len(set(last["response_grad_rms"])) > 10


def test_iterations_that_record_signals():
    """The first iteration, each logging row's and the last, and a call's flags follow them."""
    from resdepth.training.signals import measured, measured_steps

    assert [step for step in range(1, 24) if measured(step, 5, 23)] == [1, 5, 10, 15, 20, 23]
    config = tiny_config("unused", steps=23)  # log every 5
    assert measured_steps(config, 0, 1) == [True]
    assert measured_steps(config, 1, 4) == [False, False, False, True]
    assert measured_steps(config, 20, 3) == [False, False, True]


def test_a_step_that_does_not_measure_trains_exactly_as_one_that_does(digits_data_dir):
    """The taps leave training alone: the same state whether an iteration measures or not,
    and zeros for the signals of one that does not."""
    from resdepth.data.datasets import load_dataset as load
    from resdepth.models.network import build_model
    from resdepth.training import step as steps
    from resdepth.training.mesh import make_mesh
    from resdepth.training.sources import DeviceResidentSource

    config = tiny_config(digits_data_dir, depth=8, residual=False, steps=10)
    mesh = make_mesh()
    source = DeviceResidentSource(config, mesh, load(config.data))
    model = build_model(steps.model_spec(config, source.num_classes), 0, source.in_channels)
    graphdef, fresh = steps.init_state(config, model, mesh)
    data, indices = source.load(), source.on_devices(source.batch_indices(0, 0))
    program = steps.make_train_step(config, graphdef, mesh)
    copy = lambda state: jax.tree.map(jnp.copy, state)  # noqa: E731  (the step donates it)
    measured_state, signals = program(copy(fresh), data, indices, jnp.bool_(True))
    plain_state, zeros = program(copy(fresh), data, indices, jnp.bool_(False))
    for a, b in zip(jax.tree.leaves(measured_state), jax.tree.leaves(plain_state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for name, values in signals.items():
        assert values.shape == zeros[name].shape and values.shape[0] == 1
        assert np.all(np.asarray(values) > 0) and not np.any(np.asarray(zeros[name])), name


def test_a_missing_or_damaged_signals_file_is_said_once_and_never_crashes(tmp_path, digits_data_dir, caplog):
    config = tiny_config(digits_data_dir, steps=10, name="files")
    run_dir = RunDirectory.of(tmp_path, config).path
    train_run(config, run_dir, stop=threading.Event())
    signals = read_run(run_dir).signals
    assert signals.steps == (1, 5, 10) and len(signals.response_grad_rms[0]) == len(signals.responses)
    assert signals.backward_ratio(0) == min(signals.response_grad_rms[0]) / max(signals.response_grad_rms[0])

    path = run_dir / "signals.jsonl"
    lines = path.read_text().splitlines()
    short_row = json.loads(lines[2])
    short_row["response_std"] = short_row["response_std"][:-1]
    path.write_text("\n".join([lines[0], "not json", json.dumps(short_row), lines[3]]) + "\n")
    caplog.clear()
    record = read_run(run_dir)
    warned = [r.getMessage() for r in caplog.records if "signals.jsonl" in r.getMessage()]
    assert len(warned) == 1 and "skipped" in warned[0], warned
    assert record.signals.steps == (10,)
    assert any(entry.startswith("signals.jsonl") for entry in record.damage)

    path.unlink()  # a run made before signals were recorded
    caplog.clear()
    record = read_run(run_dir)
    assert record.signals is None and not caplog.records


def test_a_streamed_source_measures_the_iterations_that_record_signals():
    """ImageNet's tf.data stream: one call per iteration, each told whether it measures, the
    signals stacked in the order trained."""
    from resdepth.training.sources import StreamingSource

    source = object.__new__(StreamingSource)  # only the stream's bookkeeping, no ImageNet
    source.config, source.mesh = tiny_config("unused", steps=23), make_mesh()  # log every 5
    source._batches = iter(range(100))
    source._train_step = lambda state, batch, measuring: (
        state + [batch], {"measured": jnp.where(measuring, jnp.float32(batch), 0.0)})
    trained, signals = source.train_steps([], 3, count=3)  # iterations 4, 5 and 6
    assert trained == [0, 1, 2] and signals["measured"].tolist() == [0.0, 1.0, 0.0]


def test_a_tap_passes_the_response_through_and_measures_each_lane_only_when_told():
    """models/observe.py on a response of 2 lanes: y itself forward and dL/dy backward, and as
    the sink's gradient per lane the mean of (dL/dy)^2 and the moments of y, or zeros on an
    unmeasured iteration."""
    from resdepth.models.observe import MEASURES, observe

    y = jax.random.normal(jax.random.key(0), (4, 3, 3, 2 * 5))
    weights = jax.random.normal(jax.random.key(1), y.shape)
    loss = lambda y, sink: jnp.sum(weights * observe(y, sink) ** 2)  # noqa: E731

    for flag in (1.0, 0.0):
        value, (dy, dsink) = jax.value_and_grad(loss, argnums=(0, 1))(y, jnp.full((2, MEASURES), flag))
        assert value == jnp.sum(weights * y ** 2)
        np.testing.assert_array_equal(dy, 2 * weights * y)
        lanes, grads = (y[..., :5], y[..., 5:]), ((2 * weights * y)[..., :5], (2 * weights * y)[..., 5:])
        want = [[jnp.mean(g ** 2), jnp.mean(lane), jnp.mean(lane ** 2)] for lane, g in zip(lanes, grads)]
        np.testing.assert_allclose(dsink, np.array(want) * flag, rtol=1e-6)
