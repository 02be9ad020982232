"""The paper's ImageNet testing of a trained run: 10-crop (Tables 2, 3) or multi-scale (Table 4).

Writes `tencrop.json` or `multiscale.json` into the run directory with top-1 and top-5 error,
and the centre-crop errors of the same images beside them (what most other tools report).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from resdepth.errors import InvalidChoice
from resdepth.dataset_facts import family_of
from resdepth.rundir.directory import RESULT_FILES, RunDirectory
from resdepth.training.step import make_logits_step
from resdepth.evaluate.trained import load_trained_run


def evaluate_run(run_dir: Path, mode: str, data_dir: str | None = None,
                 manual_dir: str | None = None, limit: int | None = None) -> dict[str, Any]:
    """Tests a trained ImageNet run on the validation split; `limit` caps the image count."""
    from resdepth.data import imagenet_input, multicrop

    if mode not in RESULT_FILES:
        raise InvalidChoice(f"unknown test mode {mode!r}; choose 10crop or multiscale")
    config = RunDirectory(run_dir).trained_config(data_dir)
    if family_of(config.data.dataset) != "imagenet":
        raise InvalidChoice(f"{run_dir}: 10-crop and multi-scale testing are for ImageNet runs")
    if manual_dir is not None:
        config.data.manual_dir = manual_dir
    imagenet_input.prepare_imagenet(config.data)
    run = load_trained_run(run_dir, 1000, 3, data_dir)

    logits = make_logits_step(run.graphdef)
    images = imagenet_input.eval_images(config.data)
    results = multicrop.evaluate_modes(
        lambda batch: np.asarray(logits(run.state, batch)),
        itertools.islice(images, limit) if limit else images, (mode, "center"))
    result, center = results[mode], results["center"]
    saved = {"top1_error": result["top1_error"], "top5_error": result["top5_error"],
             "center_top1_error": center["top1_error"], "center_top5_error": center["top5_error"],
             "count": result["count"], "step": run.step, "mode": mode,
             "scales": list(multicrop.TEST_SCALES) if mode == "multiscale" else [256]}
    RunDirectory(run_dir).write_result(mode, saved)
    return saved
