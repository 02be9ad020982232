"""What every command shares: the Typer app, the two consoles, the one-line error
handling (InvalidChoice -> exit code 2), building a config from options, and the runtime
set-up before JAX or TensorFlow start. Heavy imports happen inside commands so `--help`
is fast."""


import contextlib
import functools
import logging
import sys
from typing import Annotated, Any, Callable, Iterator, Optional

import typer
from rich.console import Console

from resdepth.dataset_facts import family_of
from resdepth.errors import InvalidChoice


def examples(*commands: str) -> str:
    """A --help epilog of real commands, one paragraph each, so neither Click nor Rich
    re-wraps them (keep each under 76 characters, and free of [square brackets])."""
    return "\n\n".join(["Examples:", *commands])


def _without_type_tags(params: list) -> None:
    """Typer tags every parameter in --help with its Python type (<bool>, <int>, <list[str]>)
    and has no setting to turn that off: an option shows its metavar (--depth N) or nothing
    (flags, and options whose name says it all), an argument shows its name only."""
    from typer.core import TyperArgument, TyperOption

    for param in params:
        if isinstance(param, TyperOption) and param.metavar is None:
            param.metavar = ""  # TyperOption.display_type_rich shows a metavar that is set
        elif isinstance(param, TyperArgument):
            param.display_type_rich = lambda ctx: None


class _HelpGroup(typer.core.TyperGroup):
    """The command group; its and each command's --help without Typer's type tags."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        _without_type_tags(params)
        return params

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None:
            _without_type_tags(command.get_params(ctx))  # includes its cached -h/--help
        return command


app = typer.Typer(cls=_HelpGroup, add_completion=False, no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Plain vs residual nets across depth: He et al., CVPR 2016, on JAX.",
                  epilog=examples("resdepth train --dataset digits --depth 14",
                                  "resdepth sweep --experiment demo && resdepth table results/demo"))
# Without a terminal (CI logs, files), Rich would assume 80 columns and squeeze the tables.
console = Console(width=None if sys.stdout.isatty() else 140)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


class _WarningLine(logging.Handler):
    """Shows the library's warnings (a damaged result file, say) as one line on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        from rich.markup import escape

        errors.print(f"[yellow]warning:[/yellow] {escape(record.getMessage())}", highlight=False,
                     soft_wrap=True)


_library_log = logging.getLogger("resdepth")
_library_log.addHandler(_WarningLine(logging.WARNING))
_library_log.propagate = False  # not twice through absl's or anyone's root handler



def user_errors(command: Callable) -> Callable:
    """Turns InvalidChoice into one line and exit code 2, and a Ctrl-C the command does not
    handle itself into the line "interrupted" and exit code 130 (Typer's own exits with 130
    and says nothing)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except InvalidChoice as error:
            errors.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("interrupted", highlight=False)
            raise typer.Exit(130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("resdepth")
        except PackageNotFoundError:  # run from a source tree that was never installed
            from resdepth import __version__ as number
        typer.echo(f"resdepth {number}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="print the version and exit")] = None,
) -> None:
    pass


def _prepare_runtime(data: Any = None) -> None:
    """Before anything imports TensorFlow or compiles: silence TF/TFDS start-up noise, fail at
    once if `data` (a DataConfig) must be downloaded from an unreachable host, and turn on JAX's
    persistent compilation cache (see runtime/quiet.py and runtime/jax_setup.py)."""
    from resdepth.runtime import quiet
    from resdepth.runtime.jax_setup import enable_compilation_cache

    with _ctrl_c_kept():  # the first seconds of a command, where a Ctrl-C most often comes
        quiet.quiet_logs()
        if data is not None:
            from resdepth.data.datasets import check_download_reachable

            check_download_reachable(data)  # seconds, before TensorFlow's import costs more
        quiet.import_tensorflow_quietly()
        enable_compilation_cache()


@contextlib.contextmanager
def _ctrl_c_kept() -> Iterator[None]:
    """A Ctrl-C in the block raises KeyboardInterrupt, as always, and is also remembered: one
    raised inside a garbage-collector callback (JAX registers one, and TensorFlow's import
    imports JAX) is reported by Python as "Exception ignored" and dropped, and the command
    would go on to train. At the end of the block a remembered Ctrl-C is raised again, and
    the dropped one's report is not shown."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed: list[int] = []

    def on_ctrl_c(signum, frame):
        pressed.append(signum)
        raise KeyboardInterrupt

    def unraisable(report) -> None:
        if not isinstance(report.exc_value, KeyboardInterrupt):
            previous_hook(report)

    previous, previous_hook = signal.signal(signal.SIGINT, on_ctrl_c), sys.unraisablehook
    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = previous_hook
    if pressed:
        raise KeyboardInterrupt



def parse_integers(text: str, option: str) -> list[int]:
    """'20,56,110' -> [20, 56, 110], or InvalidChoice naming `option` ("--depths", "--seeds").

    Only the parse: what the integers may be is config validation's (config.RULES)."""
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InvalidChoice(f"{option} must be comma-separated integers, got {text!r}") from None
    if not numbers:
        raise InvalidChoice(f"{option} must name at least one integer, got {text!r}")
    return numbers


def _print_json(document: Any) -> None:
    """One JSON document on stdout, unstyled (for --json); anything else goes to stderr."""
    import json

    typer.echo(json.dumps(document, indent=2))



def _build_config(experiment: Optional[str], dataset: Optional[str], overrides: list[str],
                  **fields: Any):
    from resdepth.config import load_config, parse_override

    if dataset is not None:
        family_of(dataset)  # "unknown dataset", before it is taken for an experiment's name
    name = experiment or dataset or "cifar10"  # each dataset has an experiment of its name
    parsed = [parse_override(text) for text in overrides]
    if experiment is not None and not any("name" in override for override in parsed):
        parsed = [*_named_after_file(experiment), *parsed]
    cli = {}
    for path, value in fields.items():
        if value is not None:
            section, key = path.split(".")
            cli.setdefault(section, {})[key] = value
    return load_config(name, [cli, *parsed] if cli else parsed)  # validated as it loads


def _named_after_file(experiment: str) -> list[dict[str, Any]]:
    """[{"name": <the file's stem>}] for a file outside the experiment folders that carries a
    shipped experiment's name (`resdepth config --dataset digits > mine.toml` writes name =
    "digits"), said in one line on stderr, so its runs go to OUT/mine rather than among the
    digits runs, where the same net's run meets them as a conflict; else []."""
    from resdepth.config import borrowed_name, experiment_path

    borrowed = borrowed_name(experiment)
    if borrowed is None:
        return []
    stem = experiment_path(experiment).stem
    errors.print(f'{experiment}: named "{stem}" after the file, not "{borrowed}" as it says: that '
                 f"is the {borrowed} experiment's name, whose runs it would meet (--set "
                 f"name={borrowed} keeps it)", highlight=False, soft_wrap=True)
    return [{"name": stem}]


def dataset_origin(experiment: Optional[str], dataset: Optional[str], overrides: list[str],
                   chosen: str) -> Optional[str]:
    """Where the config's dataset `chosen` came from, when nobody named it: the defaults behind
    an experiment file that names no dataset, or no --dataset or --experiment at all. None when
    --dataset, --set data.dataset=... or an experiment file (or its base) names it."""
    from resdepth.config import dataset_setter, parse_override

    if dataset is not None:
        return None
    for text in overrides:
        data = parse_override(text).get("data")
        if isinstance(data, dict) and "dataset" in data:
            return None
    if experiment is None:
        return f"{chosen} because no --dataset or --experiment was given; --dataset digits downloads nothing"
    if dataset_setter(experiment) is not None:
        return None
    return (f"{chosen} because {experiment} names no dataset and {chosen} is the default: set "
            f"data.dataset in it or pass --dataset; digits downloads nothing")


@contextlib.contextmanager
def dataset_origin_said(origin: Optional[str]) -> Iterator[None]:
    """A dataset that cannot be downloaded or prepared in the body (DatasetUnavailable) is said
    with `origin`, where the choice of that dataset came from (dataset_origin)."""
    from resdepth.data.datasets import DatasetUnavailable

    try:
        yield
    except DatasetUnavailable as error:
        if origin is None:
            raise
        raise DatasetUnavailable(f"{error}; {origin}") from None

