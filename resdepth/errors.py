"""The one error a user can cause: a value outside its valid choices.

The CLI turns it into one line on stderr and exit code 2; every module that checks user input
raises it (or a subclass naming what went wrong).
"""


class InvalidChoice(ValueError):
    """A user-supplied value outside the valid choices; its message names them."""
