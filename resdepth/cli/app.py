"""`resdepth`, the command line: a thin shell over the library. Each command parses its
options, calls the library and renders the result with Rich; the commands live in the
modules beside this one, registered here in the order `--help` lists them.

A mistake the user can make (a bad depth, a missing dataset, an unwritable folder) is one line
on stderr and exit code 2; a run that diverges exits with 1.
"""

import contextlib
import difflib
import sys
from collections.abc import Iterator

# Importing a command module registers its commands; this order is --help's.
from resdepth.cli import info  # noqa: F401, I001
from resdepth.cli import training  # noqa: F401
from resdepth.cli import results  # noqa: F401
from resdepth.cli import evaluate  # noqa: F401
from resdepth.cli.common import _HelpGroup, app
from resdepth.cli.display import RunDisplay  # noqa: F401  (the run display, for tests and users)

# How alike a mistyped option and an option must be, dashes aside, for the error to suggest it
# (difflib's ratio; Click's own cutoff, but Click counts the shared "--" as likeness).
SUGGESTION_CUTOFF = 0.6


@contextlib.contextmanager
def _close_suggestions_only() -> Iterator[None]:
    """Click answers a mistyped option with every option within difflib's 0.6 of it, the
    leading "--" counted as a match, so that `train --bogus` suggested "--out". An error that
    carries suggestions (Click's NoSuchOption, found by its fields: Typer vendors Click in some
    versions) keeps those alike once the dashes are set aside: `--dept` still gets "--depth"."""
    try:
        yield
    except Exception as error:
        typo, offered = getattr(error, "option_name", None), getattr(error, "possibilities", None)
        if isinstance(typo, str) and offered:
            error.possibilities = [
                name for name in offered
                if difflib.SequenceMatcher(None, typo.lstrip("-"), name.lstrip("-")).ratio()
                >= SUGGESTION_CUTOFF]
        raise


def _usage_name(argument) -> list[str]:
    """An argument as Click writes it on the usage line, RUN_DIR... (Typer writes {run_dirs}...,
    its name in the code, braced where it is required)."""
    name = argument.metavar or argument.name.upper()
    return [name + ("..." if argument.nargs != 1 else "")]


class _Group(_HelpGroup):
    """The command group, with close suggestions only and Click's usage line for arguments."""

    def parse_args(self, ctx, args):
        with _close_suggestions_only():
            return super().parse_args(ctx, args)

    def invoke(self, ctx):
        with _close_suggestions_only():  # a command's options are parsed inside the group's invoke
            return super().invoke(ctx)

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        for param in command.get_params(ctx) if command is not None else ():
            if param.param_type_name == "argument":
                param.get_usage_pieces = lambda ctx, param=param: _usage_name(param)
        return command


app.info.cls = _Group  # before Typer builds the Click group, on the first call of app()


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())

