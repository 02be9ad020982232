"""The embedded digits on first use: nothing said about downloading, nothing written outside
the user's cache folder ($XDG_CACHE_HOME/resdepth/tensorflow_datasets)."""

from __future__ import annotations

import os
import subprocess
import sys


def test_a_first_digits_run_writes_nothing_outside_the_users_cache(tmp_path):
    """The whole command, in a new home: TensorFlow's Keras and matplotlib's folders included."""
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items()
           if key not in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "KERAS_HOME", "MPLCONFIGDIR")}
    env.update(HOME=str(home), COLUMNS="200")
    result = subprocess.run([sys.executable, "-m", "resdepth", "train", "--dataset", "digits",
                             "--depth", "8", "--steps", "4", "--out", str(tmp_path / "results")],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "download" not in (result.stdout + result.stderr).lower(), result.stdout + result.stderr
    outside = [path for path in home.rglob("*")
               if path != home / ".cache" and home / ".cache" / "resdepth" not in (path, *path.parents)]
    assert not outside, outside
    assert (home / ".cache" / "resdepth" / "tensorflow_datasets" / "resdepth_digits").is_dir()
    assert not (tmp_path / "tensorflow_datasets").exists()  # nor in the working folder
