"""Figure 7's quantity: the standard deviation of each 3x3 layer's response on the test set.

The response is a 3x3 conv's output after BN and before the ReLU or the addition (§4.2). The
model reports (mean, mean of squares) per layer per batch; they are combined over the whole
test set in float64 and turned into std = sqrt(E[y^2] - E[y]^2), over all of a layer's outputs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from resdepth.errors import InvalidChoice
from resdepth.dataset_facts import family_of
from resdepth.data.datasets import load_dataset
from resdepth.rundir.directory import RunDirectory
from resdepth.evaluate.trained import load_trained_run


def analyze_run(run_dir: Path, data_dir: str | None = None) -> dict[str, Any]:
    """Measures and saves `layer_responses.json` for a trained run; returns its content."""
    config = RunDirectory(run_dir).trained_config(data_dir)
    if family_of(config.data.dataset) != "cifar":
        raise InvalidChoice(f"{run_dir}: Figure 7 is measured on CIFAR-family runs only")
    data = load_dataset(config.data)
    run = load_trained_run(run_dir, data.num_classes, data.train_images.shape[-1], data_dir)
    graphdef, state = run.graphdef, run.state

    @jax.jit
    def batch_moments(state, images):
        model = nnx.merge(graphdef, state.params, state.batch_stats)
        normalized = images.astype(np.float32) - data.mean_image
        return model.forward_with_responses(normalized, train=False)[1]

    totals, count = None, 0
    batch = config.run.eval_batch_size
    for start in range(0, len(data.test_images), batch):
        images = data.test_images[start:start + batch]
        moments = [np.asarray(m, np.float64) * len(images) for m in jax.device_get(batch_moments(state, images))]
        totals = moments if totals is None else [t + m for t, m in zip(totals, moments)]
        count += len(images)
    # Each row's (mean, mean of squares) is over equal-sized layer outputs within a batch, so
    # weighting batches by their image count gives the test-set moments.
    names = _names(totals)
    flat = np.concatenate([t.reshape(-1, 2) for t in totals]) / count
    stds = [math.sqrt(max(square - mean * mean, 0.0)) for mean, square in flat]
    result = {"name": run_dir.name, "arch": "residual" if config.model.residual else "plain",
              "depth": config.model.depth, "dataset": config.data.dataset,
              "step": run.step,
              "layers": [{"index": i, "name": n, "std": s} for i, (n, s) in enumerate(zip(names, stds))]}
    RunDirectory(run_dir).write_responses(result)
    return result


def _names(moments: list[np.ndarray]) -> list[str]:
    """The stem's moments come first (shape (1, 1, 2)), then one (blocks, convs, 2) per stage."""
    names = ["stem"]
    for stage, array in enumerate(moments[1:], start=1):
        blocks, convs = array.shape[:2]
        names.extend(f"stage{stage}.block{b}.conv{c + 1}" for b in range(blocks) for c in range(convs))
    return names
