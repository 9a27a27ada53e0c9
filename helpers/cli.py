"""Shared entry point of the stage commands: bad input -> one line ``error: ...``, exit code 2.

A stage's ``main`` raises :class:`helpers.io_utils.InputError` (file, line, field) or
``ValueError`` / ``FileNotFoundError`` / ``FileExistsError`` (an argument) on bad input. On the
command line a traceback would bury that one line, so :func:`run` prints just the message and
exits with 2 (argparse's code for a bad argument). ``EEDI_TRACEBACK=1`` prints the traceback too.
Anything else (a bug, out of memory, Ctrl-C) keeps its full traceback.
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import Callable, Optional

from .io_utils import InputError

USER_ERRORS = (InputError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError)


def run(main: Callable[[Optional[list]], object], argv: Optional[list] = None) -> None:
    """Call ``main(argv)``; exit 0 on success, 2 with one ``error:`` line on bad input."""
    try:
        rc = main(argv)
    except USER_ERRORS as e:
        if os.environ.get("EEDI_TRACEBACK"):
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    sys.exit(rc if isinstance(rc, int) else 0)
