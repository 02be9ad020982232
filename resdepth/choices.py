"""Every list of choices a user can name, spelled once (the bottom of the package: no imports).

Config validation (config.py) checks values against these; code that branches on a choice
imports the list from here rather than spelling it again.
"""

from __future__ import annotations

ARCHS = ("plain", "residual")  # sweep.archs; a run's "arch" in summary.json
SHORTCUTS = ("A", "B", "C")  # model.shortcut (§3.3: zero-pad, project where growing, always)
COMPUTE_DTYPES = ("float32", "tf32", "bfloat16")  # model.compute_dtype (models/network.py)
LR_SCHEDULES = ("steps", "plateau")  # optim.lr_schedule
# sweep.pack_formulation: how a pack of runs is laid out (resdepth/training/packing/), "auto" resolving
# per backend.
PACK_LAYOUTS = ("tuple", "vmap", "wide", "grouped")
