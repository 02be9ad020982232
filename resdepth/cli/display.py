"""How a run looks while it trains: a Rich progress bar on a terminal, plain lines otherwise."""


from pathlib import Path
from typing import Optional

from rich.console import Console

from resdepth.cli.common import (console, errors)


LONG_ON_CPU = ("cifar10", "imagenet")  # datasets whose runs take hours to days on a CPU


def devices_line() -> str:
    """The backend and its devices, e.g. "gpu: 1 x NVIDIA H100 80GB HBM3" or "cpu: 1 x cpu"."""
    import collections

    import jax

    kinds = collections.Counter(device.device_kind for device in jax.devices())
    text = f"{jax.default_backend()}: " + ", ".join(f"{n} x {kind}" for kind, n in kinds.items())
    return text + (f" in {jax.process_count()} processes" if jax.process_count() > 1 else "")



def fitting(figures: list[str], width: int) -> str:
    """The leading `figures` that fit in `width` characters, space-separated: a figure that
    does not fit is left out whole (Rich would cut it, "loss 0.0…", which reads as a value)."""
    shown = ""
    for figure in figures:
        joined = f"{shown} {figure}" if shown else figure
        if len(joined) > width:
            break
        shown = joined
    return shown


class RunDisplay:
    """Rich progress bar on a terminal, plain log lines otherwise (CI, files, pipes).

    At the start of a run it names the devices and the run directory, warns when CIFAR-10 or
    ImageNet is about to train on a CPU, and says the first iteration waits for compilation.
    The bar's columns have fixed widths so that the iteration count survives an 80-column
    terminal; the statistics get what is left, as many whole figures as fit, most telling first
    (test error, training error, loss, learning rate, speed), never one cut off mid-number.

    A plain line for iteration N shows the test error of the evaluation at N, or none when N was
    not evaluated (the loop sends an iteration's "eval" event before its "train" event); the bar
    shows the latest evaluation with its iteration ("test 7.67% @40"). Events of other kinds
    ("signals": numbers per layer, for signals.jsonl and TensorBoard) show nothing.
    """

    live: Optional["RunDisplay"] = None  # the display whose progress bar is on screen

    def __init__(self, label: str, run_dir: Optional[Path] = None, dataset: Optional[str] = None,
                 out: Optional[Console] = None):
        self.label, self.run_dir, self.dataset = label, run_dir, dataset
        self.console = out or console
        self.progress, self.task = None, None
        self.last_eval: Optional[tuple[int, float]] = None  # (iteration, test error)
        self.last_line_tenth = 0
        self.stats_width = 0  # characters the bar leaves its statistics

    def __enter__(self):
        return self  # the bar starts with the run: its widths depend on the iteration count

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)
            self.progress = None
        if RunDisplay.live is self:
            RunDisplay.live = None

    def __call__(self, event) -> None:
        data = event.data
        if event.kind == "start":
            self._start(event)
        elif event.kind == "train":
            figures = [f"err {100 * data['train_error']:.1f}%", f"loss {data['train_loss']:.3f}",
                       f"lr {data['learning_rate']:.3g}", f"{data['images_per_s']:.0f} img/s"]
            if self.progress is not None:
                if self.last_eval is not None:
                    step, error = self.last_eval
                    figures.insert(0, f"test {100 * error:.2f}% @{step}")
                self.progress.update(self.task, completed=event.step,
                                     stats=fitting(figures, self.stats_width))
            elif self._plain_line_due(event):
                if self.last_eval is not None and self.last_eval[0] == event.step:
                    figures.insert(0, f"test {100 * self.last_eval[1]:.2f}%")
                self._line(f"{self.label} iter {event.step}/{event.total_steps} {' '.join(figures)}")
        elif event.kind == "eval":
            self.last_eval = (event.step, data["test_error"])
        elif event.kind == "already_completed":
            where = self.run_dir if self.run_dir is not None else self.label
            self.console.print(f"already completed: {where}", highlight=False, soft_wrap=True)
        elif event.kind == "note":
            self._line(f"{self.label}: {data['message']}")
        elif event.kind == "end":
            self.__exit__(None, None, None)

    def _start(self, event) -> None:
        devices = devices_line()
        where = f", run directory {self.run_dir}" if self.run_dir is not None else ""
        self._line(f"{self.label}: {devices}{where}")
        if devices.startswith("cpu:") and self.dataset in LONG_ON_CPU:
            errors.print(f"warning: {self.dataset} on a CPU: {event.total_steps:,} iterations take "
                         "hours to days; a GPU needs a CUDA build of jax (make install-gpu)",
                         highlight=False, soft_wrap=True)
        resumed = " (resumed)" if event.data.get("resumed") else ""
        self._line(f"{self.label}: {event.data['params']:,} parameters, from iteration {event.step}{resumed}")
        if event.step < event.total_steps:
            self._line(f"{self.label}: compiling the training step...")
        # One live bar at a time (Rich allows no more): the other seeds of a pack log lines.
        if self.console.is_terminal and RunDisplay.live is None:
            RunDisplay.live = self
            self.progress = self._progress_bar(event.total_steps)
            self.progress.__enter__()
            self.task = self.progress.add_task(self.label, total=event.total_steps,
                                               completed=event.step, stats="compiling...")

    def _progress_bar(self, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        from rich.table import Column

        width = self.console.width
        name_w = min(len(self.label), 20)
        count_w = 2 * len(str(total)) + 1  # "31234/64000"
        bar_w = 10 if width < 100 else 20
        eta_w = 7  # "1:02:03"
        stats_w = max(0, min(64, width - name_w - count_w - bar_w - eta_w - 5))
        self.stats_width = stats_w
        return Progress(
            TextColumn("{task.description}", style="bold", markup=False,
                       table_column=Column(width=name_w, no_wrap=True, overflow="ellipsis")),
            MofNCompleteColumn(table_column=Column(width=count_w, no_wrap=True, justify="right")),
            BarColumn(bar_width=bar_w),
            TextColumn("{task.fields[stats]}", markup=False,
                       table_column=Column(width=stats_w, no_wrap=True, overflow="ellipsis")),
            TimeRemainingColumn(table_column=Column(width=eta_w, no_wrap=True)),
            console=self.console)

    def _plain_line_due(self, event) -> bool:
        """Without a terminal, about ten lines per run (every 10% of it) rather than every row."""
        tenth = max(1, event.total_steps // 10)
        due = event.step // tenth > self.last_line_tenth or event.step == event.total_steps
        if due:
            self.last_line_tenth = event.step // tenth
        return due

    def _line(self, text: str) -> None:
        (self.progress.console if self.progress is not None else self.console).print(text, highlight=False)
