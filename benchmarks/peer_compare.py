"""resdepth's train step against its PyTorch peer on the same device, minutes apart: one table.

Runs, each as a subprocess so that each has the device to itself (JAX takes 75% of a GPU's
memory when it starts), its output streamed to this console as it comes (the device plan tees
the console into $OUT), and stopped at its time cap:
  1. with --profile, benchmarks/gpu_profile.py (ResNet-20 and 110: top kernels, busy fraction,
     achieved TFLOP/s and GB/s);
  2. benchmarks/torch_peer.py under `--torch-python` (default this Python; on a CPU machine a
     separate venv with torch): the same nets in PyTorch, each configuration;
  3. benchmarks/gpu_check.py (one run alone per depth and precision, no packed seeds): resdepth's
     images/s and the Table 6 grid's projected hours.
Then one table: each depth and precision, resdepth's images/s, the best PyTorch images/s and the
configuration that gave it, and the ratio (resdepth / PyTorch); the configurations that failed,
one line each; and at the end the profile tables, the peer table and the projection again, so
that the last lines of the output hold all three. Four files go to `--out` (default $OUT):
results.json (the PyTorch rows, gpu_check's results, the joined table; rewritten after each
part) and gpu_profile.py's profile.json and its two traces. `--check-json PATH` keeps
gpu_check's own JSON there too (benchmarks/xla_variants.py takes it as its default variant).

Both sides time alike: a warm-up (compilation, autotuning, graph capture), then rounds of about
`--round-s` seconds, synchronized before each clock read, images/s of the median round.
Imports neither JAX nor torch itself.

    benchmarks/gpu_check.sh --full        # on the GPU: profile, peer, projection (about 7 minutes)
    JAX_PLATFORMS=cpu PYTHONPATH=. python -m benchmarks.peer_compare --smoke \\
        --torch-python /tmp/venv-torch/bin/python --depths 8 --profile-depths 8   # CPU smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.child_process import ROOT, run


# ------------------------------------------------------------------------------ joining, pure
def best_torch(rows: list[dict[str, Any]]) -> dict[tuple[int, str], dict[str, Any]]:
    """The fastest PyTorch row of each (depth, precision)."""
    best: dict[tuple[int, str], dict[str, Any]] = {}
    for row in rows:
        if not row.get("images_per_s"):
            continue
        key = (row["depth"], row["precision"])
        if key not in best or row["images_per_s"] > best[key]["images_per_s"]:
            best[key] = row
    return best


def join(resdepth: list[dict[str, Any]], torch_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (depth, precision) either side measured: resdepth's images/s (a run alone),
    the best PyTorch configuration's, and resdepth / PyTorch."""
    ours = {(m["depth"], m["dtype"]): m.get("images_per_s") for m in resdepth if m.get("seeds", 1) == 1}
    best = best_torch(torch_rows)
    keys = sorted(set(ours) | {(r["depth"], r["precision"]) for r in torch_rows},
                  key=lambda key: (key[0], key[1]))
    joined = []
    for depth, precision in keys:
        mine, theirs = ours.get((depth, precision)), best.get((depth, precision))
        torch_rate = theirs["images_per_s"] if theirs else None
        joined.append({"depth": depth, "precision": precision, "resdepth": mine,
                       "torch": torch_rate, "torch_config": theirs["config"] if theirs else None,
                       "ratio": mine / torch_rate if mine and torch_rate else None})
    return joined


def failures(torch_rows: list[dict[str, Any]]) -> list[str]:
    """The configurations that failed or were skipped, one line per (configuration, error),
    naming the nets it happened for."""
    seen: dict[tuple[str, str], list[str]] = {}
    for row in torch_rows:
        if row.get("error"):
            seen.setdefault((row["config"], row["error"]), []).append(
                f"ResNet-{row['depth']} {row['precision']}")
    return [f"PyTorch {config}: {error} ({', '.join(nets)})" for (config, error), nets in seen.items()]


def _rate(value: float | None) -> str:
    return "—" if not value else f"{value:,.0f}"


def format_table(joined: list[dict[str, Any]], device: str) -> list[str]:
    lines = [f"resdepth against PyTorch on {device}, batch 128, images/s (median round); "
             "ratio = resdepth / best PyTorch",
             f"{'net':<12}{'precision':<10}{'resdepth':>10}{'PyTorch':>10}  {'best configuration':<18}{'ratio':>7}"]
    for row in joined:
        ratio = "—" if row["ratio"] is None else f"{row['ratio']:.2f}"
        lines.append(f"{'ResNet-' + str(row['depth']):<12}{row['precision']:<10}{_rate(row['resdepth']):>10}"
                     f"{_rate(row['torch']):>10}  {row['torch_config'] or '—':<18}{ratio:>7}")
    return lines


def format_configs(torch_rows: list[dict[str, Any]]) -> list[str]:
    """Every PyTorch configuration's images/s, one row per (depth, precision)."""
    configs = list(dict.fromkeys(row["config"] for row in torch_rows))
    keys = list(dict.fromkeys((row["depth"], row["precision"]) for row in torch_rows))
    lines = [f"{'PyTorch':<22}" + "".join(f"{config:>13}" for config in configs)]
    for depth, precision in keys:
        cells = {row["config"]: row for row in torch_rows
                 if row["depth"] == depth and row["precision"] == precision}
        values = []
        for config in configs:
            row = cells.get(config)
            values.append("" if row is None else _rate(row.get("images_per_s")) if not row.get("error")
                          else "failed" if not row["error"].startswith("skipped") else "skipped")
        lines.append(f"{'ResNet-' + str(depth) + ' ' + precision:<22}" + "".join(f"{v:>13}" for v in values))
    return lines


def parameters_line(torch_rows: list[dict[str, Any]]) -> str:
    """The PyTorch nets' parameter counts (asserted equal to resdepth's when built)."""
    from benchmarks.torch_peer import cifar_params

    counts = {row["depth"]: row["params"] for row in torch_rows if row.get("params")}
    same = all(count == cifar_params(depth) for depth, count in counts.items())
    return ("PyTorch parameters: " + ", ".join(f"ResNet-{d} {c:,}" for d, c in sorted(counts.items()))
            + (" (resdepth's counts)" if same else " (DIFFERENT from resdepth's)"))


def read_jsonl(text: str) -> list[dict[str, Any]]:
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    return rows


# ------------------------------------------------------------------------------ the subprocesses
def torch_line(line: str) -> str | None:
    """A line of torch_peer.py --json as the console shows it: a row in words, else as it is."""
    records = read_jsonl(line)
    if not records:
        return line
    row = records[0]
    if row.get("kind") == "row":
        rate = f"{row['images_per_s']:,.0f} images/s" if row.get("images_per_s") else row.get("error")
        return f"  PyTorch ResNet-{row['depth']} {row['precision']} {row['config']}: {rate}"
    if row.get("kind") == "device":
        return (f"  PyTorch {row.get('torch')} on {row.get('device')}, cuDNN {row.get('cudnn')}, "
                f"Python {row.get('python')}")
    return f"  {row.get('text', line)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="20,56,110,1202")
    parser.add_argument("--precisions", default=None,
                        help="comma-separated (default: tf32,bfloat16 on a GPU, float32 on CPU: "
                             "whatever the peer measures)")
    parser.add_argument("--torch-python", default=sys.executable, help="the Python that has torch")
    parser.add_argument("--profile", action="store_true", help="run benchmarks/gpu_profile.py first")
    parser.add_argument("--profile-depths", default="20,110")
    parser.add_argument("--profile-budget-s", type=float, default=60,
                        help="gpu_profile.py starts no cost analysis after this")
    parser.add_argument("--profile-cap-s", type=float, default=90,
                        help="gpu_profile.py is stopped after this")
    parser.add_argument("--torch-budget-s", type=float, default=200,
                        help="torch_peer.py starts no row after this; stopped 30 s later")
    parser.add_argument("--resdepth-budget-s", type=float, default=150,
                        help="gpu_check.py starts no cell after this; stopped 30 s later")
    parser.add_argument("--check-json", default=None,
                        help="where gpu_check.py's own JSON goes (default: a temporary file)")
    parser.add_argument("--round-s", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps-per-call", type=int, default=None,
                        help="resdepth's iterations per compiled call (default 10 on a GPU, 1 on CPU, "
                             "as `run.steps_per_call` trains)")
    parser.add_argument("--torch-args", default="", help="more arguments for torch_peer.py, one string")
    parser.add_argument("--profile-args", default="", help="more arguments for gpu_profile.py, one string")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny counts everywhere (one round, one iteration per call): a CPU smoke test")
    parser.add_argument("--out", default=os.environ.get("OUT") or None,
                        help="folder for results.json, profile.json and the traces (default $OUT, else a "
                             "temporary one)")
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="resdepth-peer-"))
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    rounds = 1 if args.smoke else args.rounds
    round_s = 0.2 if args.smoke else args.round_s
    started = time.perf_counter()

    profiles: list[dict[str, Any]] = []
    if args.profile:
        command = [sys.executable, "-m", "benchmarks.gpu_profile", "--depths", args.profile_depths,
                   "--out", str(out), "--budget-s", str(args.profile_budget_s)]
        if args.smoke:
            command += ["--iterations", "2", "--steps-per-call", "1", "--rounds", "1", "--round-s", "0.2"]
        command += args.profile_args.split()
        run("gpu_profile", command, args.profile_cap_s if not args.smoke else 600, env)
        if (out / "profile.json").exists():
            profiles = json.loads((out / "profile.json").read_text())

    command = [args.torch_python, str(ROOT / "benchmarks" / "torch_peer.py"), "--json",
               "--depths", args.depths, "--rounds", str(rounds), "--round-s", str(round_s),
               "--budget-s", str(args.torch_budget_s)]
    if args.precisions:
        command += ["--precisions", args.precisions]
    if args.smoke:
        command += ["--warmup", "1"]
    command += args.torch_args.split()
    stdout, _, _ = run("torch_peer", command, args.torch_budget_s + 30 if not args.smoke else 1200, env,
                       show=torch_line)
    records = read_jsonl(stdout)
    header = next((r for r in records if r.get("kind") == "device"), {})
    torch_rows = [r for r in records if r.get("kind") == "row"]
    notes = [r["text"] for r in records if r.get("kind") == "note"]
    precisions = args.precisions or ",".join(dict.fromkeys(r["precision"] for r in torch_rows)) or "tf32,bfloat16"
    # resdepth also in full float32 (precision HIGHEST), where the peer ran TF32: what table6's
    # choice of compute_dtype weighs
    dtypes = ",".join(dict.fromkeys(precisions.split(",") + (["float32"] if "tf32" in precisions else [])))

    def write_results(check: dict[str, Any]) -> list[dict[str, Any]]:
        joined = join(check.get("measurements", []), torch_rows)
        (out / "results.json").write_text(json.dumps({
            "device": check.get("device_kind") or header.get("device") or "?", "joined": joined,
            "torch": header, "torch_rows": torch_rows, "gpu_check": check}, indent=1))
        return joined

    write_results({})  # the PyTorch rows are kept whatever happens next
    with tempfile.TemporaryDirectory() as scratch:
        check_json = Path(args.check_json) if args.check_json else Path(scratch) / "gpu_check.json"
        check_json.unlink(missing_ok=True)
        command = [sys.executable, "-m", "benchmarks.gpu_check", "--depths", args.depths,
                   "--dtypes", dtypes, "--seeds", "1", "--no-memory", "--rounds", str(rounds),
                   "--round-s", str(round_s), "--budget-s", str(args.resdepth_budget_s),
                   "--json", str(check_json)]
        per_call = args.steps_per_call or (1 if header.get("device") == "cpu" else 10)
        command += ["--steps-per-call", str(1 if args.smoke else per_call)]
        if args.smoke:
            command += ["--steps", "1"]
        run("gpu_check", command, args.resdepth_budget_s + 30 if not args.smoke else 1200, env)
        # written after every cell: what a stopped gpu_check measured is in it
        check = json.loads(check_json.read_text()) if check_json.exists() else {}

    device = check.get("device_kind") or header.get("device") or "?"
    versions = (f"resdepth: jax {check.get('jax', '?')}; PyTorch {header.get('torch', '?')}, "
                f"cuDNN {header.get('cudnn')}, Python {header.get('python', '?')}")
    joined = write_results(check)
    print("\n=== recap", flush=True)
    if profiles:
        from benchmarks.gpu_profile import format_profile

        for profile in profiles:
            print("\n".join(format_profile(profile)))
        print()
    print("\n".join(format_table(joined, device)))
    print(versions)
    print(parameters_line(torch_rows))
    print("\n".join(format_configs(torch_rows)))
    for line in failures(torch_rows) + notes:
        print(line)
    print("\n".join(check.get("projection_lines")
                    or ["Table 6 grid: not projected (gpu_check did not finish)"]))
    print(f"peer_compare: {time.perf_counter() - started:.0f} s in all; files in {out}")


if __name__ == "__main__":
    main()
