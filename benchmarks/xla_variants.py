"""The XLA levers on resdepth's train step, side by side: `benchmarks/gpu_check.sh --variants`.

On the H200 one iteration took about 167 µs more per layer at every depth, and bfloat16 made
only 1.2-1.35x float32 (docs/benchmarks.md): launches and latency, not arithmetic or bandwidth.
Our reading of XLA (what this measures, not what it assumes): command buffers (CUDA graphs) take
fusions, cuBLAS, cuDNN fusions and custom calls by default, but neither the legacy cuDNN
convolution custom calls nor `while` loops, so each scanned stage launches its kernels one by
one, about three convolutions per layer. The variants, each in a process of its own (XLA reads
XLA_FLAGS once, when its backend starts):

  default               XLA's own settings
  cb-off                --xla_gpu_enable_command_buffer= : every kernel launched alone
  cb-while              command buffers that also take while loops and conditionals (the whole
                        list spelled out: in some XLA versions `+X,Y` adds only X, and jaxlib
                        0.11.2 refuses it), with --xla_gpu_command_buffer_unroll_loops=true
  conv-fusion           --xla_gpu_experimental_enable_conv_fusion=true: convolutions as cuDNN
                        fusions, which command buffers take
  conv-fusion+cb-while  both: the only one under which a scanned stage can be one CUDA graph
  untapped              the step without the layer signals' taps (benchmarks/untapped.py), as
                        before signals existed: what the conditionals in every block cost
  unrolled              stages unrolled (no scan, benchmarks/unrolled_stages.py), depths up to
                        110; its compile time is printed beside
  autotune-0            (only when asked for) --xla_gpu_autotune_level=0: cuDNN's heuristic
                        algorithms against autotuned ones, for when the profile shows the
                        convolution kernels far from their best

Each variant runs benchmarks/gpu_check.py on one run alone at `--depths` in `--dtypes`, every
depth of the first dtype first, and prints each cell as it is measured. Before any of them,
every variant's flags are tried in a child process on the CPU (resdepth/runtime/xla_flags.py:
XLA aborts on a flag it does not know); a variant the running jaxlib refuses is skipped with
one line, and the options XLA holds under the others (the command buffer kinds in force) are
printed and kept. Off a GPU the variants of XLA:GPU flags are skipped too (they would time the
default again); `untapped` and `unrolled` run anywhere.

`--baseline-json PATH` takes the default from a gpu_check.py JSON measured in the same sitting
with no XLA_FLAGS of its own (the device plan's precision run) and adopts its rounds, round
length and iterations per call, instead of measuring it again. `--budget-s` is shared evenly
among the variants still to run (a variant starts no cell after its share; a cell under way
finishes); each is stopped 45 s after its share (90 s for `unrolled`, whose compile grows with
depth), and every one by `--cap-s`. `--json` (default $OUT/variants.json) is rewritten after
every variant, with what a stopped variant had measured.

The table: images/s per depth and dtype, each variant's ratio to the default, compile seconds,
and the time per layer: (128/images/s at the deepest - at the shallowest) / (their depth
difference), in µs per layer per iteration (default on the H200: about 165).

    JAX_PLATFORMS=cpu PYTHONPATH=. python -m benchmarks.xla_variants --smoke    # CPU smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.child_process import run
# resdepth's own XLA flags are in os.environ from here on (it sets them on import), as in the
# gpu_check.py processes this starts
from resdepth.runtime.xla_flags import jaxlib_version, probe_xla_flags

BATCH = 128  # benchmarks/gpu_check.py's
# XLA's command buffer kinds by default in jaxlib 0.11.2 (read on its CPU build: see
# docs/benchmarks.md); 0.12 adds COLLECTIVES_KERNEL, which one device never uses.
DEFAULT_COMMAND_BUFFERS = ("FUSION", "CUBLAS", "CUBLASLT", "CUSTOM_CALL", "CUDNN",
                           "DYNAMIC_SLICE_FUSION", "CONDITIONAL")
WHILE_COMMAND_BUFFERS = (
    "--xla_gpu_enable_command_buffer=" + ",".join(DEFAULT_COMMAND_BUFFERS + ("WHILE",)),
    "--xla_gpu_command_buffer_unroll_loops=true")
CONV_FUSION = ("--xla_gpu_experimental_enable_conv_fusion=true",)


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    flags: tuple[str, ...] = ()  # added to XLA_FLAGS
    unrolled: bool = False  # stages traced without their scans
    untapped: bool = False  # the step without the layer signals' taps (benchmarks/untapped.py)
    max_depth: int | None = None  # deeper nets are not measured
    gpu_only: bool = True  # it changes only what XLA:GPU does
    grace_s: float = 45  # how long past its share a variant runs before it is stopped
    why: str = ""


VARIANTS = {variant.name: variant for variant in (
    Variant("default", gpu_only=False, why="XLA's own settings"),
    Variant("cb-off", ("--xla_gpu_enable_command_buffer=",),
            why="no command buffers: every kernel launched alone"),
    Variant("cb-while", WHILE_COMMAND_BUFFERS,
            why="command buffers also take while loops, unrolled into the graph"),
    Variant("conv-fusion", CONV_FUSION, why="convolutions as cuDNN fusions, which command buffers take"),
    Variant("conv-fusion+cb-while", CONV_FUSION + WHILE_COMMAND_BUFFERS,
            why="both: a scanned stage can become one CUDA graph"),
    Variant("untapped", untapped=True, gpu_only=False,
            why="the step without the layer signals' taps: what their conditionals cost"),
    Variant("unrolled", unrolled=True, max_depth=110, gpu_only=False, grace_s=90,
            why="stages unrolled: no while loops, a program that grows with depth"),
    Variant("autotune-0", ("--xla_gpu_autotune_level=0",),
            why="no autotuning: cuDNN's heuristic convolution algorithms"),
)}
DEFAULT_VARIANTS = "default,untapped,cb-off,cb-while,conv-fusion,unrolled,conv-fusion+cb-while"


def child_command(variant: Variant, depths: list[int], dtypes: list[str], settings: dict[str, Any],
                  budget_s: float, json_path: Path) -> list[str]:
    """The gpu_check.py command that measures `variant` (its XLA_FLAGS go in the environment)."""
    command = [sys.executable, "-m", "benchmarks.gpu_check",
               "--depths", ",".join(map(str, depths)), "--dtypes", ",".join(dtypes),
               "--seeds", "1", "--no-memory", "--no-record", "--order", "dtype",
               "--rounds", str(settings["rounds"]), "--round-s", str(settings["round_s"]),
               "--steps-per-call", str(settings["steps_per_call"]),
               "--budget-s", f"{max(1.0, budget_s):.0f}", "--json", str(json_path)]
    if settings.get("steps"):
        command += ["--steps", str(settings["steps"])]
    if variant.unrolled:
        command.append("--unrolled-stages")
    if variant.untapped:
        command.append("--untapped")
    return command


def share_of_budget(left_s: float, variants_left: int, startup_s: float = 10) -> float:
    """The seconds of cells one variant may start: an even share of what is left, less its
    process's start (imports, the backend, the first config), which its own clock misses."""
    return max(1.0, left_s / max(1, variants_left) - startup_s)


def per_layer_us(rates: dict[int, float]) -> float | None:
    """µs one more layer adds to an iteration of BATCH images: the slope of seconds per
    iteration between the shallowest and the deepest net measured ({depth: images/s})."""
    depths = sorted(d for d, rate in rates.items() if rate)
    if len(depths) < 2:
        return None
    low, high = depths[0], depths[-1]
    return 1e6 * BATCH * (1 / rates[high] - 1 / rates[low]) / (high - low)


def rates_of(check: dict[str, Any] | None) -> dict[tuple[str, int], dict[str, Any]]:
    """{(dtype, depth): measurement} of a gpu_check JSON's runs alone."""
    return {(m["dtype"], m["depth"]): m for m in (check or {}).get("measurements", [])
            if m.get("seeds", 1) == 1}


def format_table(results: list[dict[str, Any]], depths: list[int], dtypes: list[str]) -> list[str]:
    """One row per variant measured and dtype: images/s per depth (with the ratio to the
    default), µs per layer, compile seconds per depth."""
    default = rates_of(next((r["check"] for r in results if r["name"] == "default"), None))
    width = 18
    lines = [f"{'variant':<22}{'dtype':<10}" + "".join(f"{'ResNet-' + str(d):>{width}}" for d in depths)
             + f"{'µs/layer':>10}  compile s"]
    for dtype in dtypes:
        for result in results:
            cells = rates_of(result["check"])
            if not any(dtype == key[0] for key in cells):
                continue
            row = f"{result['name']:<22}{dtype:<10}"
            for depth in depths:
                m = cells.get((dtype, depth), {})
                rate, base = m.get("images_per_s"), default.get((dtype, depth), {}).get("images_per_s")
                text = "—" if not rate else f"{rate:,.0f}"
                if rate and base and result["name"] != "default":
                    text += f" ({rate / base:.2f}x)"
                row += f"{text:>{width}}"
            slope = per_layer_us({d: cells[(dtype, d)].get("images_per_s") for d in depths
                                  if (dtype, d) in cells})
            compiles = "/".join("—" if cells.get((dtype, d), {}).get("compile_s") is None
                                else f"{cells[(dtype, d)]['compile_s']:.1f}" for d in depths)
            lines.append(row + f"{'—' if slope is None else f'{slope:.1f}':>10}  {compiles}")
    return lines


def why_skipped(variant: Variant, rejected: str | None, backend: str | None,
                depths: list[int]) -> str | None:
    """Why `variant` is not measured (None: it is): its flags refused by this jaxlib, XLA:GPU
    flags off a GPU (`backend`: the default's, None before it is known), or no depth for it."""
    if rejected:
        return f"this jaxlib refuses its flags: {rejected}"
    if variant.gpu_only and backend not in (None, "gpu"):
        return f"XLA:GPU flags: no effect on {backend}"
    if not [d for d in depths if variant.max_depth is None or d <= variant.max_depth]:
        return f"no depth up to {variant.max_depth}"
    return None


def measure_variant(variant: Variant, result: dict[str, Any], command: list[str], cap_s: float,
                    flags: str, json_path: Path, on_stop) -> None:
    """Runs `variant`'s gpu_check.py under XLA_FLAGS `flags`, stopped after `cap_s`; puts what it
    wrote into `result` (its JSON is rewritten after each cell: a stopped child's cells count).
    When this process is terminated meanwhile, `on_stop()` runs before it exits."""
    env = {**os.environ, "XLA_FLAGS": flags}
    env.setdefault("PYTHONUNBUFFERED", "1")
    begun = time.perf_counter()

    def keep(code: int) -> None:
        check = json.loads(json_path.read_text()) if json_path.exists() else None
        result.update(status="measured" if check else "failed", check=check,
                      seconds=round(time.perf_counter() - begun, 1),
                      note="" if code == 0 else f"exit code {code}"
                      + (" (stopped at its cap)" if code == 124 else ""))

    try:
        _, code, _ = run(f"variant {variant.name}", command, cap_s, env)
    except SystemExit:
        keep(143)
        on_stop()
        raise
    keep(code)


def read_baseline(path: str | None, base_flags: str) -> dict[str, Any] | None:
    """The gpu_check.py JSON at `path` when it can stand for the default here: readable, run
    under this process's XLA_FLAGS (else None, said in one line)."""
    if not path:
        return None
    try:
        baseline = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        print(f"baseline {path} unreadable ({error}): the default is measured here")
        return None
    missing = [key for key in ("rounds", "round_s", "steps_per_call", "measurements")
               if key not in baseline]
    if missing:
        print(f"baseline {path} lacks {', '.join(missing)}: the default is measured here")
        return None
    if baseline.get("xla_flags", "") != base_flags:
        print(f"baseline {path} ran under XLA_FLAGS {baseline.get('xla_flags')!r}, not "
              f"{base_flags!r}: the default is measured here")
        return None
    return baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                        help=f"comma-separated, in order, of {', '.join(VARIANTS)}")
    parser.add_argument("--depths", default="20,110,56", help="in measuring order")
    parser.add_argument("--dtypes", default="tf32,bfloat16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round-s", type=float, default=0.3)
    parser.add_argument("--steps", type=int, default=None, help="timed iterations per round "
                        "(default: enough for --round-s)")
    parser.add_argument("--steps-per-call", type=int, default=10)
    parser.add_argument("--budget-s", type=float, default=240,
                        help="for all the variants together: shared evenly, no cell started after")
    parser.add_argument("--cap-s", type=float, default=None,
                        help="every variant stopped by then (default: --budget-s + 60)")
    parser.add_argument("--baseline-json", default=None,
                        help="a gpu_check.py JSON of the default measured in this sitting")
    parser.add_argument("--json", default=None, help="default: $OUT/variants.json, else none")
    parser.add_argument("--smoke", action="store_true",
                        help="CPU smoke test: ResNet-8 and 14, tf32, one round of one iteration")
    args = parser.parse_args()
    if args.smoke:
        args.depths, args.dtypes, args.rounds, args.steps, args.steps_per_call = "8,14", "tf32", 1, 1, 1
        args.budget_s = max(args.budget_s, 1800)
    names = [name for name in args.variants.split(",") if name]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    variants = [VARIANTS[name] for name in names]
    depths = [int(d) for d in args.depths.split(",")]
    dtypes = args.dtypes.split(",")
    json_path = Path(args.json) if args.json else (Path(os.environ["OUT"]) / "variants.json"
                                                   if os.environ.get("OUT") else None)
    started = time.perf_counter()
    cap_s = args.cap_s if args.cap_s is not None else args.budget_s + 60
    base_flags = os.environ.get("XLA_FLAGS", "")
    baseline = read_baseline(args.baseline_json, base_flags)
    settings = ({key: baseline.get(key) for key in ("rounds", "round_s", "steps", "steps_per_call")}
                if baseline else {"rounds": args.rounds, "round_s": args.round_s,
                                  "steps": args.steps, "steps_per_call": args.steps_per_call})

    # Every variant's flags, tried at once in children on the CPU, before any variant runs.
    probed = probe_xla_flags([""] + [" ".join(v.flags) for v in variants])
    print(f"variants: {', '.join(names)}; jaxlib {jaxlib_version()}; depths {args.depths}, "
          f"{args.dtypes}; median of {settings['rounds']} rounds of "
          + (f"{settings['steps']} iterations" if settings["steps"] else f"~{settings['round_s']:g} s")
          + f", {settings['steps_per_call']} iterations per call; budget {args.budget_s:.0f} s"
          + (f"; XLA_FLAGS of all {base_flags}" if base_flags else ""), flush=True)
    results: list[dict[str, Any]] = []
    for variant, (complaint, options) in zip(variants, probed[1:]):
        changed = {k: v for k, v in options.items() if probed[0][1].get(k) != v}
        results.append({"name": variant.name, "flags": list(variant.flags),
                        "unrolled": variant.unrolled, "why": variant.why,
                        "xla_options": changed, "rejected": complaint, "check": None,
                        "status": "waiting", "note": "", "seconds": None})
        said = "; ".join(f"{k}: {','.join(v)}" for k, v in changed.items())
        print(f"  {variant.name}: {' '.join(variant.flags) or 'no flags'}"
              + (f" -> REFUSED by this jaxlib: {complaint}" if complaint
                 else f" -> XLA holds {said}" if said else ""), flush=True)

    def write_json() -> None:
        if json_path is None:
            return
        json_path.parent.mkdir(parents=True, exist_ok=True)
        document = {"jaxlib": jaxlib_version(), "base_xla_flags": base_flags, "depths": depths,
                    "dtypes": dtypes, "settings": settings, "budget_s": args.budget_s,
                    "baseline_json": args.baseline_json, "variants": results}
        json_path.with_suffix(".partial").write_text(json.dumps(document, indent=1))
        os.replace(json_path.with_suffix(".partial"), json_path)

    backend = baseline.get("backend") if baseline else None
    with tempfile.TemporaryDirectory(prefix="resdepth-variants-") as scratch:
        for index, (variant, result) in enumerate(zip(variants, results)):
            skipped = why_skipped(variant, result["rejected"], backend, depths)
            to_run = [v for v, r in zip(variants[index:], results[index:])
                      if not why_skipped(v, r["rejected"], backend, depths)
                      and not (v.name == "default" and baseline)]
            left = args.budget_s - (time.perf_counter() - started)
            if skipped:
                result.update(status="skipped", note=skipped)
            elif variant.name == "default" and baseline:
                result.update(status="measured", check=baseline, note=f"taken from {args.baseline_json}")
            elif left <= 0:
                result.update(status="skipped", note="time budget spent")
            else:
                share = share_of_budget(left, len(to_run))
                path = Path(scratch) / f"{index}.json"
                its_depths = [d for d in depths if variant.max_depth is None or d <= variant.max_depth]
                command = child_command(variant, its_depths, dtypes, settings, share, path)
                cap = max(1.0, min(share + 10 + variant.grace_s,
                                   cap_s - (time.perf_counter() - started)))
                measure_variant(variant, result, command, cap,
                                " ".join([base_flags, *variant.flags]).strip(), path, write_json)
            if result["status"] != "measured":
                print(f"  {variant.name}: {result['status']}: {result['note']}", flush=True)
            if result["check"] and backend is None:
                backend = result["check"].get("backend")
            write_json()

    measured = [r for r in results if r["status"] == "measured"]
    device = next((r["check"].get("device_kind") for r in measured if r["check"]), "?")
    print(f"\nXLA variants on {device}, batch {BATCH}, images/s (median round; in brackets: x the "
          f"default); µs/layer = 128 x (1/rate at the deepest - at the shallowest) / depth difference")
    print("\n".join(format_table(measured, sorted(depths), dtypes)))
    for result in results:
        print(f"  {result['name']}: {result['why']}"
              + (f" [{result['status']}: {result['note']}]" if result["status"] != "measured"
                 or result["note"] else ""))
    print(f"xla_variants: {time.perf_counter() - started:.0f} s"
          + (f"; {json_path}" if json_path else ""), flush=True)


if __name__ == "__main__":
    main()
