"""`resdepth`, the command line: a thin shell over the library. Each command parses its
options, calls the library and renders the result with Rich; the commands live in the
modules beside this one, registered here in the order `--help` lists them.

A mistake the user can make (a bad depth, a missing dataset, an unwritable folder) is one line
on stderr and exit code 2; a run that diverges exits with 1.
"""

import sys

# Importing a command module registers its commands; this order is --help's.
from resdepth.cli import info  # noqa: F401, I001
from resdepth.cli import training  # noqa: F401
from resdepth.cli import results  # noqa: F401
from resdepth.cli import evaluate  # noqa: F401
from resdepth.cli.common import app
from resdepth.cli.display import RunDisplay  # noqa: F401  (the run display, for tests and users)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())

