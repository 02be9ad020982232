"""scikit-learn's handwritten digits as a TensorFlow Datasets builder, so the embedded offline
dataset goes through exactly the same TFDS loading code as CIFAR-10.

1,797 grey 8x8 images in 10 classes ship inside scikit-learn (no download). A fixed permutation
(seed 0) makes 1,497 training and 300 test images. Pixel values 0..16 are scaled to 0..255.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

TEST_IMAGES = 300
SPLIT_SEED = 0


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """images uint8 (1797, 8, 8, 1) in 0..255 and labels int64 (1797,), in the fixed split order."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)[..., None]
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    return images[order], digits.target[order].astype(np.int64)


class ResdepthDigits(tfds.core.GeneratorBasedBuilder):
    """The scikit-learn digits, registered with TFDS as `resdepth_digits`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Fixed 1,497 / 300 split of scikit-learn's digits."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 1)),
                "label": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
        )

    # Nothing is downloaded: TFDS's "Downloading and preparing dataset Unknown size ..." and
    # "... downloaded and prepared to ..." lines would say otherwise, so they are left out.
    def _log_download_bytes(self) -> None:
        pass

    def _log_download_done(self) -> None:
        pass

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        return {"train": self._generate_examples(train=True),
                "test": self._generate_examples(train=False)}

    def _generate_examples(self, train: bool):
        images, labels = digits_arrays()
        cut = len(images) - TEST_IMAGES
        indices = range(cut) if train else range(cut, len(images))
        for index in indices:
            yield index, {"image": images[index], "label": labels[index]}
