"""JAX settings the command line applies before the first compile: the persistent cache.

Compiled programs are kept in the user's cache folder ($XDG_CACHE_HOME/resdepth/jax, else
~/.cache/resdepth/jax), so a resumed run, a second seed or a rerun of the same depth loads its
train and eval steps instead of compiling them again. RESDEPTH_COMPILATION_CACHE=0 turns the
cache off; RESDEPTH_COMPILATION_CACHE=/some/folder puts it elsewhere; an explicit
JAX_COMPILATION_CACHE_DIR is respected.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "RESDEPTH_COMPILATION_CACHE"
# Programs compiling faster than this are not worth a file (JAX's default is 1 s, which would
# skip the train step of the small nets on a GPU).
MIN_COMPILE_TIME_S = 0.1


def user_cache_root(environ: dict[str, str] | None = None) -> Path:
    """resdepth's folder in the user's cache: $XDG_CACHE_HOME/resdepth, else ~/.cache/resdepth."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "resdepth"


def compilation_cache_dir(environ: dict[str, str] | None = None) -> Path | None:
    """The persistent cache folder, or None when RESDEPTH_COMPILATION_CACHE turns it off."""
    environ = os.environ if environ is None else environ
    setting = environ.get(CACHE_ENV, "").strip()
    if setting.lower() in ("0", "false", "off", "no"):
        return None
    if setting and setting.lower() not in ("1", "true", "on", "yes"):
        return Path(setting).expanduser()
    if environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(environ["JAX_COMPILATION_CACHE_DIR"]).expanduser()
    return user_cache_root(environ) / "jax"


def enable_compilation_cache() -> Path | None:
    """Points JAX's persistent compilation cache at `compilation_cache_dir()`; returns it.

    Must run before the first compile; a cache folder that cannot be created leaves it off.
    """
    folder = compilation_cache_dir()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: compile every time rather than fail the run
    import jax

    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_S)
    return folder
