"""The PyTorch peer of resdepth's train step: the same CIFAR ResNets, timed the same way.

Never a dependency of resdepth: this file imports only torch and the standard library, so it
runs under any Python that has torch (on the GPU machines the image's python3; on a CPU
machine a separate venv), and `benchmarks/peer_compare.py` runs it as a subprocess and joins
its rows with resdepth's.

The nets are §4.2's, as resdepth builds them: a 3x3 conv of 16 filters, three stages of n
basic blocks (16/32/64 filters, stride 2 at the first conv of stages 2 and 3), every conv
padded k//2 on each side and followed by BatchNorm (momentum 0.9 as an average, eps 1e-5),
option A shortcuts (subsample by 2, zero-pad the new channels), global average pooling and a
10-way dense layer; He-normal initialization. Parameters: 269,722 for ResNet-20 (asserted
against `cifar_params`, the closed formula resdepth's counts also give). BatchNorm normalizes
the whole batch of 128 (PyTorch's own, cuDNN's kernel) where resdepth's Table 6 config uses
groups of 64 (Caffe's per-GPU statistics): the same arithmetic per image.

One iteration, as resdepth's step: gather a batch of 128 uint8 images held on the device by
index, subtract the mean image, pad 4 and crop 32x32 at random offsets, flip half, forward,
softmax cross-entropy, backward, SGD with momentum 0.9 and weight decay 1e-4 (PyTorch's
v = m v + g + wd p, p -= lr v, resdepth's update), and the loss and error sums kept on the
device. Timing: warm-up iterations (compilation, autotuning, graph capture), then `--rounds`
rounds of enough iterations to last about `--round-s` seconds each, the device synchronized
before each clock read; images/s from the median round.

Configurations, each tried in try/except (a failure is one line in the output):
  eager-nchw, eager-cl   eager PyTorch, NCHW or channels_last activations;
  graph-nchw, graph-cl   the whole iteration captured once as a CUDA graph and replayed (CUDA only);
  compile-LAYOUT         torch.compile of augmentation + forward + loss (backward through
                         AOTAutograd), mode "reduce-overhead" on CUDA (CUDA graphs of the
                         compiled graphs), the default mode on CPU; the layout that timed best.
Precisions: "tf32" sets torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
to True (cuDNN's default for convolutions; matmul's default is False), "float32" sets both to
False (full float32), "bfloat16" runs forward and loss under torch.autocast(bfloat16) with float32
parameters (and TF32 allowed for what autocast leaves in float32). cudnn.benchmark is on.
On CPU both flags are moot: "float32" is what runs.

    python benchmarks/torch_peer.py --depths 20,56 --precisions float32 --json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

BATCH = 128
IMAGES = 4 * BATCH  # random uint8 images held on the device, as benchmarks/gpu_check.py
PAD = 4
CLASSES = 10
WIDTHS = (16, 32, 64)
CONFIGS = ("graph-cl", "eager-cl", "graph-nchw", "eager-nchw", "compile")
PRECISIONS = ("float32", "tf32", "bfloat16")


def blocks_per_stage(depth: int) -> int:
    """n of depth 6n+2."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR depth must be 6n+2 with n >= 1, got {depth}")
    return (depth - 2) // 6


def cifar_params(depth: int) -> int:
    """Parameters of resdepth's CIFAR ResNet (option A): 3x3 conv kernels without bias, a
    BatchNorm scale and bias per conv channel, the 64 x 10 dense layer with bias. 269,722 for
    ResNet-20, 19,421,274 for ResNet-1202 (Table 6: 0.27M, 19.4M)."""
    n = blocks_per_stage(depth)
    total, features = 9 * 3 * WIDTHS[0] + 2 * WIDTHS[0], WIDTHS[0]
    for width in WIDTHS:
        for block in range(n):
            total += 9 * features * width + 2 * width + 9 * width * width + 2 * width
            features = width
    return total + features * CLASSES + CLASSES


def round_iterations(seconds_per_iteration: float, round_s: float, least: int = 3, most: int = 200) -> int:
    """Iterations per timed round: about `round_s` seconds, within [least, most]."""
    if seconds_per_iteration <= 0:
        return most
    return max(least, min(most, math.ceil(round_s / seconds_per_iteration)))


def one_line(error: BaseException) -> str:
    """An exception as one short line for the table."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}"


# ------------------------------------------------------------------------- torch from here on
def _torch():
    import torch

    return torch


def build_net(depth: int):
    torch = _torch()
    nn = torch.nn
    functional = torch.nn.functional

    def conv_bn(cin: int, cout: int, stride: int):
        conv = nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False)
        nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
        return conv, nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1, self.bn1 = conv_bn(cin, cout, stride)
            self.conv2, self.bn2 = conv_bn(cout, cout, 1)
            self.stride, self.extra = stride, cout - cin

        def forward(self, x):
            y = functional.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            shortcut = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
            if self.extra:  # option A: zero-pad the new channels (NCHW: dimension 1)
                shortcut = functional.pad(shortcut, (0, 0, 0, 0, 0, self.extra))
            return functional.relu(y + shortcut)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            n = blocks_per_stage(depth)
            self.conv, self.bn = conv_bn(3, WIDTHS[0], 1)
            blocks, features = [], WIDTHS[0]
            for index, width in enumerate(WIDTHS):
                for block in range(n):
                    blocks.append(Block(features, width, 2 if index and not block else 1))
                    features = width
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(features, CLASSES)
            nn.init.kaiming_normal_(self.fc.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(self.fc.bias)

        def forward(self, x):
            x = self.blocks(functional.relu(self.bn(self.conv(x))))
            return self.fc(x.mean((2, 3)))

    return Net()


def set_precision(precision: str) -> None:
    torch = _torch()
    allow = precision != "float32"
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow
    torch.backends.cudnn.benchmark = True


class Step:
    """One configuration's training iteration on the device, with its own net and optimizer."""

    def __init__(self, depth: int, precision: str, config: str, device, seed: int = 0):
        torch = _torch()
        torch.manual_seed(seed)
        self.torch, self.device, self.config = torch, device, config
        self.cuda = device.type == "cuda"
        self.layout = torch.channels_last if config.endswith("cl") else torch.contiguous_format
        self.net = build_net(depth).to(device).to(memory_format=self.layout)
        self.params = sum(p.numel() for p in self.net.parameters())
        expected = cifar_params(depth)
        assert self.params == expected, f"ResNet-{depth}: {self.params:,} parameters, resdepth has {expected:,}"
        options = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}
        try:  # one fused kernel for the update where this torch has it
            self.optimizer = torch.optim.SGD(self.net.parameters(), fused=self.cuda, **options)
        except (TypeError, RuntimeError):
            self.optimizer = torch.optim.SGD(self.net.parameters(), foreach=self.cuda, **options)
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (IMAGES, 32, 32, 3), dtype=torch.uint8, generator=generator).to(device)
        self.labels = torch.randint(0, CLASSES, (IMAGES,), generator=generator).to(device)
        self.mean = self.images.float().mean(0)
        self.indices = torch.randint(0, IMAGES, (BATCH,), generator=generator).to(device)
        self.rows = torch.arange(32, device=device)
        self.batch = torch.arange(BATCH, device=device)
        self.loss_sum = torch.zeros((), device=device)
        self.error_sum = torch.zeros((), device=device)
        self.autocast = precision == "bfloat16"
        self.forward_loss = self._forward_loss
        self.compiled = config.startswith("compile")
        if self.compiled:
            mode = "reduce-overhead" if self.cuda else "default"
            self.forward_loss = torch.compile(self._forward_loss, mode=mode)
        self.graph = None

    def _forward_loss(self):
        """Augmented batch -> (mean loss, errors); what resdepth's step computes before the grad."""
        torch = self.torch
        x = self.images[self.indices].float() - self.mean  # (B, 32, 32, 3)
        x = torch.nn.functional.pad(x, (0, 0, PAD, PAD, PAD, PAD))  # zeros after the mean
        offsets = torch.randint(0, 2 * PAD + 1, (BATCH, 2), device=self.device)
        flips = torch.randint(0, 2, (BATCH, 1), device=self.device).bool()
        rows = offsets[:, :1] + self.rows
        cols = offsets[:, 1:] + torch.where(flips, 31 - self.rows, self.rows)
        x = x[self.batch[:, None, None], rows[:, :, None], cols[:, None, :]]  # crop and flip
        x = x.permute(0, 3, 1, 2).contiguous(memory_format=self.layout)
        labels = self.labels[self.indices]
        # No autocast weight cache: each weight is cast once per forward anyway, and CUDA
        # graph capture needs it off (PyTorch's CUDA graphs notes).
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast,
                            cache_enabled=False):
            logits = self.net(x)
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        errors = (logits.argmax(1) != labels).sum()
        return loss, errors

    def _iteration(self):
        if self.compiled and self.cuda:  # a new iteration for torch.compile's CUDA graph trees
            self.torch.compiler.cudagraph_mark_step_begin()
        self.optimizer.zero_grad(set_to_none=True)
        loss, errors = self.forward_loss()
        loss.backward()
        self.optimizer.step()
        with self.torch.no_grad():
            self.loss_sum += loss.detach() * BATCH
            self.error_sum += errors

    def prepare(self, warmup: int) -> None:
        """Warm-up iterations; for graph-*, then the capture of one iteration."""
        torch = self.torch
        if not self.config.startswith("graph"):
            for _ in range(warmup):
                self._iteration()
            self.sync()
            return
        if not self.cuda:
            raise RuntimeError("CUDA graphs need a CUDA device")
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # PyTorch's recipe for capturing a whole training step
            for _ in range(max(3, warmup)):
                self._iteration()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            loss, errors = self.forward_loss()
            loss.backward()
            self.optimizer.step()
            with torch.no_grad():
                self.loss_sum += loss.detach() * BATCH
                self.error_sum += errors
        self.graph.replay()
        self.sync()

    def run(self, iterations: int) -> None:
        for _ in range(iterations):
            if self.graph is not None:
                self.graph.replay()
            else:
                self._iteration()

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
        float(self.loss_sum)  # on CPU too: the work is done once its result is read


def measure(depth: int, precision: str, config: str, device, warmup: int, rounds: int,
            round_s: float) -> dict:
    """One row: images/s from the median of `rounds` timed rounds, or the error."""
    row = {"depth": depth, "precision": precision, "config": config, "params": cifar_params(depth)}
    started = time.perf_counter()
    step = None
    try:
        set_precision(precision)
        step = Step(depth, precision, config, device)
        row["params"] = step.params  # counted on the torch net, asserted equal to cifar_params
        step.prepare(warmup)
        row["setup_s"] = time.perf_counter() - started
        probe = time.perf_counter()
        step.run(2)
        step.sync()
        iterations = round_iterations((time.perf_counter() - probe) / 2, round_s)
        rates = []
        for _ in range(rounds):
            step.sync()
            begun = time.perf_counter()
            step.run(iterations)
            step.sync()
            rates.append(BATCH * iterations / (time.perf_counter() - begun))
        row.update(images_per_s=statistics.median(rates), rounds=rates, iterations=iterations)
        if not math.isfinite(float(step.loss_sum)):
            row["note"] = "loss not finite"
    except Exception as error:  # noqa: BLE001  (every failure is a row, and the next goes on)
        row["error"] = one_line(error)
    finally:
        del step
        _release(device)
    row["wall_s"] = time.perf_counter() - started
    return row


def _release(device) -> None:
    import gc

    gc.collect()
    torch = _torch()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    try:
        torch._dynamo.reset()
    except Exception:  # noqa: BLE001
        pass


def plan(depths: list[int], precisions: list[str], configs: list[str], cuda: bool,
         compile_max_depth: int) -> list[tuple[int, str, str]]:
    """(depth, precision, config) in the order they are measured: depth by depth, each
    precision's eager and graph rows (graphs on CUDA only); then torch.compile's (a minute or so
    of compiling each), in the layout that timed best, only for nets up to `compile_max_depth`
    deep (its compile time grows with depth). A time budget that runs out costs the compile rows
    first."""
    cells = [(depth, precision, config) for depth in depths for precision in precisions
             for config in configs if config != "compile" and (cuda or not config.startswith("graph"))]
    if "compile" in configs:
        cells += [(depth, precision, "compile") for depth in depths if depth <= compile_max_depth
                  for precision in precisions]
    return cells


def best_layout(rows: list[dict], depth: int, precision: str) -> str:
    """The layout ("cl" or "nchw") of the fastest row measured so far for this depth and precision."""
    measured = [row for row in rows if row["depth"] == depth and row["precision"] == precision
                and row.get("images_per_s")]
    if not measured:
        return "cl"
    return max(measured, key=lambda row: row["images_per_s"])["config"].rsplit("-", 1)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="20,56,110,1202")
    parser.add_argument("--precisions", default=None,
                        help="comma-separated, of float32, tf32, bfloat16 (default tf32,bfloat16 "
                             "on CUDA, float32 on CPU)")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--compile-max-depth", type=int, default=20,
                        help="torch.compile only nets this deep or less (its compile time grows with depth)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round-s", type=float, default=0.5, help="seconds per timed round, about")
    parser.add_argument("--budget-s", type=float, default=200, help="skip what would start after this")
    parser.add_argument("--compile-reserve-s", type=float, default=60,
                        help="start a torch.compile row only with this much of the budget left")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda where available)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line, nothing else on stdout")
    args = parser.parse_args()
    torch = _torch()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    precisions = (args.precisions or ("tf32,bfloat16" if cuda else "float32")).split(",")
    for precision in precisions:
        if precision not in PRECISIONS:
            sys.exit(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    depths = [int(d) for d in args.depths.split(",")]
    configs = args.configs.split(",")
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    header = {"kind": "device", "device": name, "torch": torch.__version__,
              "cudnn": torch.backends.cudnn.version() if cuda else None,
              "python": sys.version.split()[0], "threads": torch.get_num_threads()}
    emit = (lambda row: print(json.dumps(row), flush=True)) if args.json else None
    if emit:
        emit(header)
    else:
        print(f"device {name}, torch {header['torch']}, cuDNN {header['cudnn']}, "
              f"batch {BATCH}, {args.rounds} rounds of ~{args.round_s} s", flush=True)
    started = time.perf_counter()
    rows: list[dict] = []
    for depth, precision, config in plan(depths, precisions, configs, cuda, args.compile_max_depth):
        if config == "compile":
            config = f"compile-{best_layout(rows, depth, precision)}"
        left = args.budget_s - (time.perf_counter() - started)
        if left < 0 or (config.startswith("compile") and left < args.compile_reserve_s):
            row = {"depth": depth, "precision": precision, "config": config,
                   "params": cifar_params(depth), "error": "skipped (time budget)"}
        else:
            row = measure(depth, precision, config, device, args.warmup, args.rounds, args.round_s)
        rows.append(row)
        if emit:
            emit({"kind": "row", **row})
        else:
            rate = f"{row['images_per_s']:,.0f} images/s" if row.get("images_per_s") else row.get("error")
            print(f"ResNet-{depth:<5} {precision:<9} {config:<13} {row['params']:>11,} parameters  {rate}",
                  flush=True)
    skipped = [d for d in depths if d > args.compile_max_depth and "compile" in configs]
    note = {"kind": "note", "text": (
        f"torch.compile not tried for ResNet-{'/'.join(map(str, skipped))} "
        f"(compile time grows with depth; --compile-max-depth {args.compile_max_depth})") if skipped else ""}
    if emit and note["text"]:
        emit(note)
    elif note["text"]:
        print(note["text"])


if __name__ == "__main__":
    main()
