"""The one error type a user should ever see from this project.

A :class:`UserError` is a mistake the user can fix (a config value, a path, a
cluster too small for what was asked). Entry points print its message on one
line and exit with status 2, without a traceback::

    $ orchestrator train --epochs 0
    error: training.epochs: must be >= 1, got 0 (valid example: `epochs: 20`)

Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

EXIT_USAGE = 2


class UserError(Exception):
    """A problem with the user's input, reported as one line, exit status 2."""

    def __init__(self, message: str):
        # One line, always: a message that spans lines is hard to grep in job logs.
        super().__init__(" ".join(str(message).split()))
