"""The embedded digits on first use: nothing said about downloading, nothing written outside
the user's cache folder ($XDG_CACHE_HOME/resdepth/tensorflow_datasets)."""

from __future__ import annotations

import logging

from resdepth.config import load_config


def test_first_digits_load_is_silent_and_writes_only_into_the_cache(tmp_path, monkeypatch,
                                                                       capfd, caplog):
    from resdepth.data.datasets import load_dataset
    from resdepth.runtime.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()  # as the command line does before loading (imports write ~/.keras)
    home, cache, cwd = tmp_path / "home", tmp_path / "cache", tmp_path / "cwd"
    for folder in (home, cache, cwd):
        folder.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.chdir(cwd)
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger="absl")
    capfd.readouterr()

    config = load_config("digits").data
    assert config.data_dir == ""
    data = load_dataset(config)

    out, err = capfd.readouterr()
    said = out + err + caplog.text
    assert "download" not in said.lower(), said
    assert data.train_images.shape == (1497, 8, 8, 1)
    target = cache / "resdepth" / "tensorflow_datasets"
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert written
    assert all(target in path.parents for path in written), written
    assert (target / "resdepth_digits").is_dir()
