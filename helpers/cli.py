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


# ----------------------------------------------------------------------------- dataclass -> argparse
def str2bool(v) -> bool:
    """HF-style booleans: True/False (also 1/0, yes/no, t/f), case-insensitive."""
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("true", "1", "yes", "y", "t"):
        return True
    if s in ("false", "0", "no", "n", "f"):
        return False
    import argparse
    raise argparse.ArgumentTypeError(f"expected True or False, got {v!r}")


def none_or_str(v):
    """``None`` / ``none`` / empty on a command line mean None."""
    return None if v is None or str(v).strip().lower() in ("none", "") else str(v)


def dataclass_parser(cls, description: str = "", prog: Optional[str] = None, aliases: Optional[dict] = None,
                     choices: Optional[dict] = None):
    """One ``--flag`` per dataclass field, with its help text, default and type.

    Booleans take ``True``/``False`` or stand alone (``--flag`` means True), as in HF's scripts;
    ``Optional[list]`` fields take several values; ``aliases`` maps a field to extra flag names
    (FlagEmbedding's spellings); ``choices`` restricts a field's values.
    """
    import argparse
    import dataclasses
    import typing
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        base = next((a for a in typing.get_args(t) if a is not type(None)), t)
        kw = {"help": f.metadata.get("help", ""), "dest": f.name}
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kw["required"] = True
        else:
            kw["default"] = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            kw["help"] += f" (default: {kw['default']})"
        if base is bool:
            kw.update(type=str2bool, nargs="?", const=True, metavar="True|False")
        elif base in (int, float):
            kw["type"] = base
        elif base is list or typing.get_origin(base) is list:
            kw["nargs"] = "+"
        else:
            kw["type"] = none_or_str if f.default is None else str
        if choices and f.name in choices:
            kw["choices"] = choices[f.name]
        p.add_argument(f"--{f.name}", *(aliases or {}).get(f.name, []), **kw)
    return p


def arg(default, help: str):
    """A dataclass field with its command-line help text: ``lr: float = arg(1e-4, "learning rate")``."""
    import dataclasses
    return dataclasses.field(default=default, metadata={"help": help})
