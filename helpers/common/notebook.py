"""What the notebooks share beyond the stage functions.

:func:`args_from` builds a stage's argument dataclass from the notebook's parameters cell by field
name, so a notebook never lists the stage's keywords a second time: every parameter whose name is a
field goes in, by that name; the stage's own default stands for every field the cell does not set.
What each notebook's ``parameters`` cell must hold (one parameter set per stage, written once: in
the dataclass) is declared and checked in the tests: tests/pipeline/notebook_spec.py.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping

from helpers.common.cli import canonical_flags


def field_values(cls, namespace: Mapping[str, Any], exclude=()) -> dict:
    """``{field: namespace[field]}`` for every field of ``cls`` found in ``namespace`` (other
    spellings of a flag count as ours; names starting with ``_`` and ``exclude`` left out)."""
    names = {f.name for f in fields(cls)} - set(exclude)
    ns = canonical_flags({k: v for k, v in namespace.items() if not k.startswith("_")})
    return {k: v for k, v in ns.items() if k in names}


def args_from(cls, namespace: Mapping[str, Any], **explicit):
    """``cls(**{field: namespace[field] for every field of cls in namespace}, **explicit)``.

    ``namespace`` is the notebook's ``globals()``; ``explicit`` sets fields whose value the
    notebook computes (e.g. ``input_file`` when one notebook runs the stage on two files) and
    wins over the namespace. Other spellings of a flag (``query_instruction_format_for_retrieval``)
    count as ours.
    """
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(explicit) - names)
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    return cls(**{**field_values(cls, namespace), **explicit})
