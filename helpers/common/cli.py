"""Shared entry point of the stage commands: bad input -> one line ``error: ...``, exit code 2.

A stage's ``main`` raises :class:`helpers.common.io_utils.InputError` (file, line, field) or
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

from helpers.common.io_utils import InputError

USER_ERRORS = (InputError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError)


def peak_memory_line() -> Optional[str]:
    """``peak GPU memory: cuda:0 5.21 GiB, ...`` (``torch.cuda.max_memory_allocated``); None without CUDA."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    parts = [f"cuda:{i} {torch.cuda.max_memory_allocated(i) / 1024 ** 3:.2f} GiB" for i in range(torch.cuda.device_count())]
    return "peak GPU memory (torch.cuda.max_memory_allocated): " + ", ".join(parts)


def run(main: Callable[[Optional[list]], object], argv: Optional[list] = None) -> None:
    """Call ``main(argv)``; exit 0 on success, 2 with one ``error:`` line on bad input. With
    ``$EEDI_REPORT_PEAK=1`` the command's peak GPU memory is printed at the end (tools/gpu_check.sh
    sets it, to put beside the memory plan's estimate)."""
    if os.environ.get("EEDI_REPORT_PEAK") == "1":
        import atexit
        atexit.register(lambda: print(peak_memory_line() or "peak GPU memory: no CUDA device", flush=True))
    try:
        rc = main(argv)
    except USER_ERRORS as e:
        if os.environ.get("EEDI_TRACEBACK"):
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    sys.exit(rc if isinstance(rc, int) else 0)


# ----------------------------------------------------------------------------- other spellings
# Other spellings of our flags that every stage, notebook and profile accepts: FlagEmbedding's
# names in its mining / evaluation scripts and its fine-tuning (HF TrainingArguments) flags, and
# this project's names before the embedder block was one dataclass (helpers.embed.args). Ours
# are the right-hand side, one name per concept.
FLAG_SPELLINGS = {
    "query_instruction_format_for_retrieval": "query_instruction_format",
    "embedder_name_or_path": "model_name_or_path",               # FlagEmbedding hn_mine
    "embedder_query_max_length": "query_max_len",                # FlagEmbedding hn_mine / evaluation
    "embedder_passage_max_length": "passage_max_len",
    "fp16": "use_fp16",                                          # HF TrainingArguments (fine-tuning)
    "eval_examples_for_task": "examples_for_task",               # ours before (03)
    "eval_examples_number": "examples_number",
}


def canonical_flags(params: dict) -> dict:
    """``params`` with other spellings renamed to ours; both spellings at once is an error."""
    out = dict(params)
    for other, ours in FLAG_SPELLINGS.items():
        if other in out:
            if ours in out and out[ours] != out[other]:
                raise ValueError(f"{other} and {ours} are the same flag, given twice with different values")
            out[ours] = out.pop(other)
    return out


def flag_aliases() -> dict:
    """``dataclass_parser`` aliases for the other spellings: ``{ours: ["--other"]}``."""
    out: dict[str, list] = {}
    for other, ours in FLAG_SPELLINGS.items():
        out.setdefault(ours, []).append(f"--{other}")
    return out


# ----------------------------------------------------------------------------- dataclass -> argparse
NONE_WORDS = ("none", "")


def _is_none_word(v) -> bool:
    return v is None or str(v).strip().lower() in NONE_WORDS


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
    return None if _is_none_word(v) else str(v)


def none_or_bool(v):
    """An ``Optional[bool]`` value: ``None`` / ``none`` / empty mean None, else :func:`str2bool`."""
    return None if _is_none_word(v) else str2bool(v)


def none_or(type_):
    """``Optional[int]`` / ``Optional[float]``: ``None`` / ``none`` / empty mean None, else ``type_(v)``."""
    def convert(v):
        return None if _is_none_word(v) else type_(v)
    convert.__name__ = type_.__name__        # argparse names it in "invalid int value: ..."
    return convert


def _sequence_action(container, elem, optional: bool):
    """argparse action of a list/tuple field (``nargs='*'``): the values converted by ``elem`` into
    ``container``; a lone ``None`` means None when the field is Optional; no values: empty."""
    import argparse

    class SequenceAction(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            if optional and len(values) == 1 and _is_none_word(values[0]):
                setattr(namespace, self.dest, None)
                return
            try:
                out = container(elem(v) for v in values)
            except (TypeError, ValueError):
                raise argparse.ArgumentError(self, f"expected {elem.__name__} values, got {values!r}")
            setattr(namespace, self.dest, out)
    return SequenceAction


def field_kwargs(f, hint) -> dict:
    """``add_argument`` keywords (type, nargs, action) for a dataclass field of type ``hint``.

    Every ``Optional[...]`` field parses ``None`` / ``none`` / empty as None, whatever its default,
    so that :func:`helpers.train.distributed.dataclass_argv` can pass None on a command line; booleans take
    ``True``/``False`` or stand alone; lists and tuples take any number of values."""
    import typing
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    origin = typing.get_origin(base) or base
    if base is bool:
        return dict(type=none_or_bool if optional else str2bool, nargs="?", const=True,
                    metavar="True|False" + ("|None" if optional else ""))
    if base in (int, float):
        return dict(type=none_or(base) if optional else base)
    if origin in (list, tuple):
        elems = [a for a in typing.get_args(base) if a is not Ellipsis]
        elem = elems[0] if elems and elems[0] in (int, float, str) else str
        return dict(nargs="*", action=_sequence_action(origin, elem, optional))
    return dict(type=none_or_str if optional else str)


def dataclass_parser(cls, description: str = "", prog: Optional[str] = None, aliases: Optional[dict] = None,
                     choices: Optional[dict] = None, overrides: Optional[dict] = None,
                     parser_class=None, epilog: Optional[str] = None, usage: Optional[str] = None):
    """One ``--flag`` per dataclass field, with its help text, default and type (:func:`field_kwargs`).

    Booleans take ``True``/``False`` or stand alone (``--flag`` means True), as in HF's scripts;
    ``Optional[...]`` fields take ``None``; list/tuple fields take several values; ``aliases`` maps
    a field to extra flag names (FlagEmbedding's spellings); ``choices`` restricts a field's values;
    ``overrides`` replaces a field's ``add_argument`` keywords (e.g. FlagEmbedding's list syntax for
    a string field); ``parser_class`` is an ``argparse.ArgumentParser`` subclass; ``usage`` and
    ``epilog`` go to it.
    """
    import argparse
    import dataclasses
    import typing
    p = (parser_class or argparse.ArgumentParser)(prog=prog, description=description, epilog=epilog, usage=usage,
                                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kw = {"help": f.metadata.get("help", ""), "dest": f.name}
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kw["required"] = True
        else:
            kw["default"] = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            kw["help"] += f" (default: {kw['default']})"
        kw.update(field_kwargs(f, hints[f.name]))
        if choices and f.name in choices:
            kw["choices"] = list(choices[f.name]) + ([None] if type(None) in typing.get_args(hints[f.name]) else [])
        kw.update((overrides or {}).get(f.name, {}))
        p.add_argument(f"--{f.name}", *(aliases or {}).get(f.name, []), **kw)
    return p


def build_parser(cls, description: str = ""):
    """A stage's parser: :func:`dataclass_parser` with the other spellings (:data:`FLAG_SPELLINGS`)
    accepted as aliases of our flags."""
    return dataclass_parser(cls, description, aliases=flag_aliases())


def given_dests(parser, argv: list) -> set:
    """The ``dest`` of every option that ``argv`` sets explicitly (not left at its default)."""
    import argparse
    saved = [(a, a.default) for a in parser._actions]
    try:
        for a, _ in saved:
            a.default = argparse.SUPPRESS
        ns, _ = argparse.ArgumentParser.parse_known_args(parser, list(argv))
    finally:
        for a, d in saved:
            a.default = d
    return set(vars(ns))


_UNSET = object()


def arg(default, help: str, resume: bool = True, before=_UNSET):
    """A dataclass field with its command-line help text: ``lr: float = arg(1e-4, "learning rate")``.

    For the training stages, whose runs resume: ``resume`` says whether a run may only be resumed
    with the same value (False: speed, memory, bookkeeping; the trained weights do not depend on
    it); ``before`` is the value a run saved before the field existed had (that run still resumes
    while the field keeps it). :func:`helpers.train.args.resume_keys` reads both."""
    import dataclasses
    meta = {"help": help, "resume": resume}
    if before is not _UNSET:
        meta["before"] = before
    return dataclasses.field(default=default, metadata=meta)


def retune(base, name: str, default, note: Optional[str] = None):
    """The field ``name`` of dataclass ``base`` with another default, for a subclass that only
    changes the default: help text and resume metadata stay declared once, in ``base``; ``note``
    is added to the help (what the new default, e.g. None, means in this stage)."""
    import dataclasses
    f = next((f for f in dataclasses.fields(base) if f.name == name), None)
    if f is None:
        raise TypeError(f"{base.__name__} has no field {name!r} to retune")
    meta = dict(f.metadata)
    if note:
        meta["help"] = f"{meta.get('help', '')}; {note}"
    return dataclasses.field(default=default, metadata=meta)


# ----------------------------------------------------------------------------- value types
def _type_name(hint) -> str:
    import typing
    args = [a for a in typing.get_args(hint) if a is not Ellipsis]
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        return " or ".join(_type_name(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {_type_name(args[0])}" if args else "a list"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            type(None): "None"}.get(hint, getattr(hint, "__name__", str(hint)))


def _fits(value, hint) -> bool:
    import typing
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        return any(_fits(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple) or hint in (list, tuple):
        elems = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return isinstance(value, (list, tuple)) and (not elems or all(_fits(v, elems[0]) for v in value))
    return True                         # Any, dict, classes: not checked here


def check_types(obj) -> None:
    """Every field of the dataclass ``obj`` holds a value of its declared type, or one ValueError
    naming the field, the value and what was expected: a ``learning_rate`` that arrived as the
    string ``'1e-4'`` stops here, before any file is read or model loaded, not in AdamW an hour
    later. ints pass as floats; a field whose default is None also takes None."""
    import dataclasses
    import typing
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        v, hint = getattr(obj, f.name), hints.get(f.name)
        if hint is None or _fits(v, hint) or (v is None and f.default is None):
            continue
        hint_text = " (a number given as text: pass it as a number)" if isinstance(v, str) and _number_like(v) else ""
        raise ValueError(f"{type(obj).__name__}: {f.name}={v!r} is {type(v).__name__}, expected "
                         f"{_type_name(hint)}{hint_text}")


def _number_like(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False
