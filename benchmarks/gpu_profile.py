"""Where resdepth's train step spends its time on the device: a short profile, reduced where it ran.

For each net (`--depths`, default ResNet-20 and 110) and compute dtype: the real train step of
benchmarks/gpu_check.py (batch 128, random uint8 CIFAR images on the device, `--steps-per-call`
iterations per call) is compiled, timed untraced (`--rounds` rounds of ~`--round-s` s), then
`--iterations` iterations are traced with `jax.profiler.trace(..., create_perfetto_trace=True)`.
The Perfetto JSON trace is reduced here, with the standard library (`reduce_trace`), to:
  - the top kernels by device time: name, calls, total ms, share of all kernel time, and the
    HLO op of the first call (on a GPU the CUDA kernels of the device's stream lines; on CPU the
    XLA:CPU thunks, which carry `hlo_op`, less the while/call/conditional thunks that contain
    others);
  - the time by coarse kind (convolution kernels, matrix products, copies and transposes,
    fusions, other), by kernel name, else by its HLO op (a heuristic: names, not counters;
    XLA's `convert` fusions are fusions, not convolutions);
  - the fraction of the traced span in which at least one kernel ran ("busy"), and kernel time
    and launches per iteration against the untraced wall time per iteration;
  - XLA's cost analysis of one iteration (`lower(...).compile().cost_analysis()`: FLOPs and
    bytes accessed) as achieved TFLOP/s and GB/s at the untraced rate. XLA counts a while loop's
    body once, whatever its trip count, and every stage is a scan, so the cost is taken from a
    copy of the step with the stages unrolled (benchmarks/unrolled_stages.py) and one iteration
    per call: the same arithmetic; its bytes are XLA's estimate for the unrolled program.
Every net is profiled, its table printed and `profile.json` written, before any cost analysis
(compiling an unrolled ResNet-110 takes tens of seconds on XLA:GPU); the cost analyses follow,
deepest last, none started after `--budget-s`, each adding its line and rewriting the JSON.

While traced, XLA:GPU runs its command buffers (CUDA graphs) as single kernels unless
`--xla_enable_command_buffers_during_profiling=true` (jaxlib 0.11.2 and 0.12 know it): without
it the trace would show another execution than the untraced rate's. `--trace-command-buffers
on` (the default) sets it, where the jaxlib accepts it (resdepth/runtime/xla_flags.py asks a
child process first: XLA aborts on a flag it does not know); every table and profile.json say
which mode was traced.

The gzipped trace of each net is kept in `--out` (default $OUT, else a temporary folder) as
`profile-resnet<depth>-<dtype>.json.gz` (open it in ui.perfetto.dev), the tables as
`profile.json`. Needs only jax, flax and optax (no TensorFlow).

    JAX_PLATFORMS=cpu PYTHONPATH=. python -m benchmarks.gpu_profile --depths 8 --iterations 2 \\
        --steps-per-call 1 --rounds 1      # smoke test on a CPU
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

# Lines xprof derives from the kernels (they would count each kernel twice), by name.
DERIVED_LINES = {"Steps", "XLA Modules", "XLA Ops", "Async XLA Ops", "TensorFlow Ops",
                 "TensorFlow Name Scope", "Launch Stats", "Source code", "XLA TraceMe"}
# XLA:CPU thunks that run other thunks inside them (their time is their contents').
CONTAINERS = re.compile(r"^(while|call|conditional)(\.\d+)?$")
KINDS = (  # (kind, pattern on the kernel name, else on its HLO op), first match wins
    # copies, transposes and cuDNN's layout changes (`nchwToNhwcKernel`) before all else
    ("copy/transpose", re.compile(r"copy|transpose|memcpy|memset|dynamic-update-slice|"
                                  r"dynamic_update_slice|nchwToNhwc|nhwcToNchw", re.I)),
    # cuDNN's convolution kernels (`sm90_xmma_fprop_implicit_gemm_...`, `..._dgrad_...`,
    # `..._wgrad_...`, `cudnn::...`), XLA's `convolution`/`cudnn-conv` ops; not `convert`.
    ("convolution", re.compile(r"conv(?!ert)|implicit_gemm|fprop|dgrad|wgrad|cudnn", re.I)),
    ("matrix product", re.compile(r"gemm|cublas|cutlass|matmul|\bdot", re.I)),
    ("fusion", re.compile(r"fusion|reduce|loop_|input_|triton", re.I)),
)
# What keeps XLA:GPU's command buffers (CUDA graphs) running while a profiler is attached.
PROFILE_COMMAND_BUFFERS = "--xla_enable_command_buffers_during_profiling=true"


# --------------------------------------------------------------- the trace, standard library only
def load_trace(path: Path) -> dict[str, Any]:
    """A trace viewer / Perfetto JSON trace, gzipped or not."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as file:
        return json.load(file)


def find_trace(log_dir: Path) -> Path:
    """The newest perfetto_trace.json.gz (else *.trace.json.gz) that jax.profiler wrote under log_dir."""
    found = sorted(Path(log_dir).rglob("perfetto_trace.json.gz"), key=os.path.getmtime) or \
        sorted(Path(log_dir).rglob("*.trace.json.gz"), key=os.path.getmtime)
    if not found:
        raise FileNotFoundError(f"no trace under {log_dir}")
    return found[-1]


def kernel_events(trace: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """("device", the kernels of the accelerator's stream lines) or ("cpu", XLA:CPU's thunks).

    On an accelerator: the complete ("X") events of the /device:* processes' "Stream ..." lines;
    without such lines, every line of those processes that xprof did not derive; failing that,
    its "XLA Ops" line. On CPU (no /device: process): the events that name an `hlo_op`, less
    the thunks that contain others.
    """
    events = trace.get("traceEvents", trace) if isinstance(trace, dict) else trace
    processes, threads = {}, {}
    for event in events:
        if event.get("ph") == "M" and event.get("name") == "process_name":
            processes[event.get("pid")] = event.get("args", {}).get("name", "")
        elif event.get("ph") == "M" and event.get("name") == "thread_name":
            threads[(event.get("pid"), event.get("tid"))] = event.get("args", {}).get("name", "")
    complete = [e for e in events if e.get("ph") == "X" and float(e.get("dur", 0)) > 0]
    devices = {pid for pid, name in processes.items() if str(name).startswith("/device:")}
    if devices:
        lines = {key: name for key, name in threads.items() if key[0] in devices}
        for choice in ({k for k, n in lines.items() if n.lower().startswith("stream")},
                       {k for k, n in lines.items() if n not in DERIVED_LINES},
                       {k for k, n in lines.items() if n == "XLA Ops"}):
            chosen = [e for e in complete if (e.get("pid"), e.get("tid")) in choice]
            if chosen:
                return "device", chosen
        return "device", []
    return "cpu", [e for e in complete if "hlo_op" in (e.get("args") or {})
                   and not CONTAINERS.match(str(e.get("name", "")))]


def busy_time(events: list[dict[str, Any]]) -> tuple[float, float]:
    """(time in which at least one event ran, the span from the first start to the last end), µs."""
    intervals = sorted((float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in events)
    if not intervals:
        return 0.0, 0.0
    busy, (start, end) = 0.0, intervals[0]
    for low, high in intervals[1:]:
        if low > end:
            busy, start, end = busy + end - start, low, high
        else:
            end = max(end, high)
    busy += end - start
    return busy, max(high for _, high in intervals) - intervals[0][0]


def kind_of(name: str, hlo_op: str = "") -> str:
    """The coarse kind of a kernel: by what its name says, else by its HLO op's name."""
    for text in (name, hlo_op):
        for kind, pattern in KINDS:
            if text and pattern.search(text):
                return kind
    return "other"


def reduce_trace(trace: dict[str, Any], iterations: int, top: int = 12) -> dict[str, Any]:
    """The trace as numbers: the top kernels, time by kind, busy fraction, per-iteration figures."""
    where, events = kernel_events(trace)
    total = sum(float(e["dur"]) for e in events)
    by_name: dict[str, dict[str, Any]] = {}
    for event in events:
        name = str(event.get("name", "?"))
        row = by_name.setdefault(name, {"name": name, "calls": 0, "total_us": 0.0,
                                        "hlo_op": str((event.get("args") or {}).get("hlo_op", ""))})
        row["calls"] += 1
        row["total_us"] += float(event["dur"])
    kernels = sorted(by_name.values(), key=lambda row: -row["total_us"])
    for row in kernels:
        row["share"] = row["total_us"] / total if total else 0.0
    kinds: dict[str, float] = {}
    for row in kernels:
        kind = kind_of(row["name"], row["hlo_op"])
        kinds[kind] = kinds.get(kind, 0.0) + row["total_us"]
    busy, span = busy_time(events)
    return {"where": where, "kernels": kernels[:top], "distinct_kernels": len(kernels),
            "launches": len(events), "kernel_us": total, "busy_us": busy, "span_us": span,
            "busy_fraction": busy / span if span else 0.0,
            "kinds": {kind: us / total for kind, us in sorted(kinds.items(), key=lambda kv: -kv[1])}
            if total else {},
            "iterations": iterations,
            "kernel_us_per_iteration": total / iterations if iterations else 0.0,
            "busy_us_per_iteration": busy / iterations if iterations else 0.0,
            "launches_per_iteration": len(events) / iterations if iterations else 0.0}


def format_profile(profile: dict[str, Any], width: int = 64) -> list[str]:
    """The printed table of one net's profile (profile: reduce_trace's, plus the run's figures)."""
    wall_ms = profile.get("wall_ms_per_iteration")
    lines = [f"ResNet-{profile['depth']} {profile['dtype']} on {profile['device']}: "
             f"{profile['iterations']} iterations traced, "
             + (f"{profile['images_per_s']:,.0f} images/s untraced ({wall_ms:.2f} ms per iteration)"
                if wall_ms else "untraced rate not measured")]
    if profile.get("command_buffers_traced"):
        lines.append(f"  traced with XLA's command buffers {profile['command_buffers_traced']}")
    on = "device" if profile["where"] == "device" else "XLA:CPU threads"
    lines.append(f"  {on} busy {100 * profile['busy_fraction']:.0f}% of the traced span; per iteration "
                 f"{profile['busy_us_per_iteration'] / 1e3:.2f} ms busy, "
                 f"{profile['kernel_us_per_iteration'] / 1e3:.2f} ms of kernels in "
                 f"{profile['launches_per_iteration']:,.0f} launches"
                 + (f", against {wall_ms:.2f} ms wall" if wall_ms else ""))
    lines += cost_lines(profile)
    if profile.get("note"):
        lines.append(f"  NOTE: {profile['note']}")
    if profile.get("kinds"):
        lines.append("  by kind: " + ", ".join(f"{kind} {100 * share:.0f}%"
                                               for kind, share in profile["kinds"].items()))
    lines.append(f"  {'kernel':<{width}}{'calls':>8}{'total ms':>10}{'share':>7}  hlo op")
    for row in profile["kernels"]:
        name = row["name"] if len(row["name"]) <= width - 1 else row["name"][:width - 2] + "…"
        lines.append(f"  {name:<{width}}{row['calls']:>8}{row['total_us'] / 1e3:>10.2f}"
                     f"{100 * row['share']:>6.1f}%  {row['hlo_op'][:40]}")
    return lines


def cost_lines(profile: dict[str, Any]) -> list[str]:
    """The cost analysis's line of one net's table (none before it ran): XLA's FLOPs and bytes
    of one iteration and what they come to at the untraced rate."""
    if profile.get("flops_per_iteration"):
        per_s = (profile.get("images_per_s") or 0) / profile.get("batch", 128)
        return [f"  XLA cost analysis per iteration: {profile['flops_per_iteration'] / 1e9:,.1f} GFLOP, "
                f"{(profile.get('bytes_per_iteration') or 0) / 1e9:,.2f} GB accessed -> "
                f"{profile['flops_per_iteration'] * per_s / 1e12:,.2f} TFLOP/s, "
                f"{(profile.get('bytes_per_iteration') or 0) * per_s / 1e9:,.0f} GB/s achieved"]
    if profile.get("cost_note"):
        return [f"  XLA cost analysis: {profile['cost_note']}"]
    return []


def command_buffer_mode(wanted: str, flags: str) -> tuple[str, str | None]:
    """(how the trace will run XLA's command buffers, in words; the flag to add to XLA_FLAGS, or
    None) for `--trace-command-buffers` `wanted` ("on"/"off") under the XLA_FLAGS `flags`."""
    if re.search(r"--xla_gpu_enable_command_buffer=(?=\s|$)", flags):
        return "off (XLA_FLAGS turns them off)", None
    if wanted == "off":
        return ("off (XLA's default while profiling: each kernel launched alone, unlike the "
                "untraced rate)"), None
    if "xla_enable_command_buffers_during_profiling" in flags:
        return f"as XLA_FLAGS sets them ({flags})", None
    from resdepth.runtime.xla_flags import probe_xla_flags

    complaint, _ = probe_xla_flags([PROFILE_COMMAND_BUFFERS])[0]
    if complaint:
        return (f"off: this jaxlib refuses {PROFILE_COMMAND_BUFFERS} ({complaint}), so each "
                "kernel ran alone, unlike the untraced rate"), None
    return f"on, as untraced ({PROFILE_COMMAND_BUFFERS})", PROFILE_COMMAND_BUFFERS


# ----------------------------------------------------------------------------------- JAX from here
def cost_per_iteration(depth: int, dtype: str) -> tuple[float | None, float | None]:
    """(FLOPs, bytes accessed) of one iteration by XLA's cost analysis of the unrolled step."""
    import jax

    from benchmarks.gpu_check import build
    from benchmarks.unrolled_stages import unrolled_stages

    train, state, data, indices = build(depth, dtype, 1, 1)
    with unrolled_stages():
        compiled = train.compile(state, data, indices).step
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    del train, state, compiled
    jax.clear_caches()
    return (cost or {}).get("flops"), (cost or {}).get("bytes accessed")


def profile_net(depth: int, dtype: str, iterations: int, per_call: int, rounds: int,
                round_s: float, out: Path, top: int) -> dict[str, Any]:
    import jax

    from benchmarks.gpu_check import BATCH, build, calls_per_round, timed_rounds

    train, state, data, indices = build(depth, dtype, 1, per_call)
    started = time.perf_counter()
    state = jax.block_until_ready(train(state, data, indices))  # compiles
    compile_s = time.perf_counter() - started
    started = time.perf_counter()
    state = jax.block_until_ready(train(state, data, indices))
    calls = calls_per_round(time.perf_counter() - started, round_s)
    state, rates = timed_rounds(train, state, data, indices, calls, rounds, BATCH * per_call)
    images_per_s = statistics.median(rates)
    traced_calls = max(1, iterations // per_call)
    with tempfile.TemporaryDirectory() as log_dir:
        try:  # no Python tracer: a smaller trace, and the kernels are what is read
            options = jax.profiler.ProfileOptions()
            options.python_tracer_level = 0
            context = jax.profiler.trace(log_dir, create_perfetto_trace=True, profiler_options=options)
        except (AttributeError, TypeError):  # a jax without profiler options
            context = jax.profiler.trace(log_dir, create_perfetto_trace=True)
        with context:
            for _ in range(traced_calls):
                state = train(state, data, indices)
            jax.block_until_ready(state)
        source = find_trace(Path(log_dir))
        kept = out / f"profile-resnet{depth}-{dtype}.json.gz"
        shutil.copyfile(source, kept)
        trace = load_trace(source)
    del state, train
    jax.clear_caches()
    profile = reduce_trace(trace, traced_calls * per_call, top)
    if jax.default_backend() != "cpu" and (profile["where"] != "device" or not profile["launches"]):
        profile["note"] = ("no device kernels in the trace (is CUPTI available?): the rows are "
                           "host events")
    profile.update(depth=depth, dtype=dtype, device=jax.devices()[0].device_kind, batch=BATCH,
                   images_per_s=images_per_s, rounds=rates, compile_s=compile_s,
                   wall_ms_per_iteration=1e3 * BATCH / images_per_s,
                   trace_file=str(kept), trace_bytes=kept.stat().st_size)
    return profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="20,110")
    parser.add_argument("--dtypes", default="tf32", help="model.compute_dtype values")
    parser.add_argument("--iterations", type=int, default=10, help="iterations traced per net")
    parser.add_argument("--steps-per-call", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="untraced timed rounds")
    parser.add_argument("--round-s", type=float, default=0.5)
    parser.add_argument("--top", type=int, default=12, help="kernels listed per net")
    parser.add_argument("--out", default=os.environ.get("OUT") or None,
                        help="folder for the traces and profile.json (default $OUT, else a temporary one)")
    parser.add_argument("--trace-command-buffers", choices=("on", "off"), default="on",
                        help="on: XLA's command buffers (CUDA graphs) run while traced, as untraced "
                             f"({PROFILE_COMMAND_BUFFERS}); off: XLA's default while profiling")
    parser.add_argument("--cost-analysis", action=argparse.BooleanOptionalAction, default=True,
                        help="XLA's cost analysis of each net, after all the profiles")
    parser.add_argument("--budget-s", type=float, default=60,
                        help="start no cost analysis after this many seconds")
    parser.add_argument("--cost-max-depth", type=int, default=None,
                        help="no cost analysis of deeper nets (an unrolled ResNet-110 takes tens of "
                             "seconds to compile on XLA:GPU)")
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="resdepth-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # Before JAX starts: XLA reads XLA_FLAGS once, when its first backend starts.
    mode, flag = command_buffer_mode(args.trace_command_buffers, os.environ.get("XLA_FLAGS", ""))
    if flag:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    import jax

    if jax.default_backend() == "cpu":
        mode = "n/a (XLA:CPU has none)"
    print(f"profile: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}; "
          f"traced with XLA's command buffers {mode}; traces in {out}", flush=True)
    per_call = max(1, min(args.steps_per_call, args.iterations))
    profiles = []

    def write_json() -> None:
        (out / "profile.json.partial").write_text(json.dumps(profiles, indent=1))
        os.replace(out / "profile.json.partial", out / "profile.json")

    for depth in (int(d) for d in args.depths.split(",")):
        for dtype in args.dtypes.split(","):
            profile = profile_net(depth, dtype, args.iterations, per_call, args.rounds,
                                  args.round_s, out, args.top)
            profile.update(command_buffers_traced=mode,
                           xla_flags=os.environ.get("XLA_FLAGS", ""))
            profiles.append(profile)
            print("\n".join(format_profile(profile)), flush=True)
            write_json()
    for profile in sorted(profiles, key=lambda p: p["depth"]) if args.cost_analysis else []:
        name = f"ResNet-{profile['depth']} {profile['dtype']}"
        if args.cost_max_depth is not None and profile["depth"] > args.cost_max_depth:
            profile["cost_note"] = f"not run (deeper than --cost-max-depth {args.cost_max_depth})"
        elif time.perf_counter() - started > args.budget_s:
            profile["cost_note"] = f"not run (--budget-s {args.budget_s:g} spent)"
        else:
            begun = time.perf_counter()
            flops, bytes_accessed = cost_per_iteration(profile["depth"], profile["dtype"])
            profile.update(flops_per_iteration=flops, bytes_per_iteration=bytes_accessed,
                           cost_compile_s=time.perf_counter() - begun)
        print("\n".join([f"{name}:"] + cost_lines(profile)), flush=True)
        write_json()
    print(f"gpu_profile: {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
