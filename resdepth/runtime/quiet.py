"""Keeps TensorFlow's and TFDS's start-up noise off the user's terminal and logs.

TensorFlow is here only to prepare and read datasets, yet importing it prints C++ log lines
("All log messages before absl::InitializeLog() ...", "oneDNN custom operations are on ...")
that TF_CPP_MIN_LOG_LEVEL does not reach: absl writes them straight to file descriptor 2
before its logging is initialised. So the import runs with descriptor 2 pointed at a temporary
file, which is shown only if the import fails. TFDS's tqdm bars and absl's warnings are off.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def stderr_descriptor_captured() -> Iterator[None]:
    """Points file descriptor 2 at a temporary file for the body; replays what was written
    there to stderr if the body fails (an Exception). Restores the descriptor on the way out.

    A Ctrl-C in the body (KeyboardInterrupt) or an exit is no failure of the body: what it
    wrote stays swallowed, so an early Ctrl-C ends with the command's one "interrupted" line
    rather than TensorFlow's start-up lines."""
    _flush_stderr()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            except Exception:
                _flush_stderr()
                os.dup2(saved, 2)
                sink.seek(0)
                os.write(2, sink.read())
                raise
            finally:
                _flush_stderr()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _flush_stderr() -> None:
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError):  # replaced or closed by the host program
        pass


def quiet_logs() -> None:
    """Sets TensorFlow's log level, absl's verbosity and TFDS's progress bars; imports TFDS,
    which does not import TensorFlow until a dataset is prepared or read."""
    # C++ messages after absl is initialised do honour this: info and warnings off, errors shown.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import absl.logging
    import tensorflow_datasets as tfds

    absl.logging.set_verbosity(absl.logging.ERROR)  # e.g. TFDS's "Variant folder ... has no dataset_info.json"
    tfds.disable_progress_bar()  # "Generating splits...", "Shuffling ...", "Dl Completed..."


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow with its C++ start-up lines swallowed, and hides every GPU from it
    (it only reads data; a TensorFlow that saw the GPU would reserve memory JAX needs).
    A second call does nothing."""
    if "tensorflow" not in sys.modules:
        # TensorFlow's import loads Keras, which writes ~/.keras/keras.json: keep it in
        # resdepth's cache folder (a user's own KERAS_HOME wins).
        from resdepth.runtime.jax_setup import user_cache_root

        os.environ.setdefault("KERAS_HOME", str(user_cache_root() / "keras"))
        # It also imports matplotlib, which creates ~/.config/matplotlib: where the user has no
        # matplotlib config there is none to read, so its folder goes to the cache too.
        config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        if "MPLCONFIGDIR" not in os.environ and not (config_home / "matplotlib").exists():
            os.environ["MPLCONFIGDIR"] = str(user_cache_root() / "matplotlib")
        with stderr_descriptor_captured():
            import tensorflow as tf

            try:
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError:  # TensorFlow's devices were already initialised by the caller
                pass
