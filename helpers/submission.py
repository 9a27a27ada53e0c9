"""Kaggle submission file: ``QuestionId_Answer,MisconceptionId`` with 25 space-separated ids.

    python -m helpers.submission --model_name_or_path M --embedder_model_class C \
        --test_csv test.csv --misconception_csv misconception_mapping.csv --output_file submission.csv

One row per wrong answer of every test question (``{QuestionId}_{letter}``, the correct letter
left out), ids ranked best first by the embedder. The file is checked before it is renamed into
place: header, row set (against ``sample_submission.csv`` when given), exactly ``k`` distinct
integer ids per row, every id in the misconception mapping.
"""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Sequence

from .data import LETTERS
from .io_utils import InputError, atomic_path

log = logging.getLogger(__name__)

HEADER = ("QuestionId_Answer", "MisconceptionId")


def expected_row_ids(questions: Sequence[dict]) -> list[str]:
    """``{QuestionId}_{letter}`` for every wrong answer, in question then letter order."""
    return [f"{q['QuestionId']}_{x}" for q in questions for x in LETTERS if x != q["CorrectAnswer"]]


def format_submission(row_ids: Sequence[str], ranked_ids: Sequence[Sequence[str]], k: int = 25) -> str:
    """CSV text: header, then ``row_id,id1 id2 ... idk`` (the first ``k`` of each ranking)."""
    if len(row_ids) != len(ranked_ids):
        raise ValueError(f"format_submission: {len(row_ids)} row ids for {len(ranked_ids)} rankings")
    lines = [",".join(HEADER)]
    for rid, ranked in zip(row_ids, ranked_ids):
        top = [str(x) for x in list(ranked)[:k]]
        if len(top) < k:
            raise ValueError(f"format_submission: row {rid}: only {len(top)} ids, need {k} "
                             "(is the corpus smaller than k?)")
        lines.append(f"{rid},{' '.join(top)}")
    return "\n".join(lines) + "\n"


def parse_submission(text: str, path="submission.csv") -> tuple[list[str], list[tuple[int, str, str]]]:
    """-> (header, [(line, row id, ids cell)]) with shape errors naming the line."""
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        raise InputError(path, None, None, "empty file")
    out = []
    for i, r in enumerate(rows[1:], 2):
        if not r:
            continue
        if len(r) != 2:
            raise InputError(path, i, None, f"{len(r)} cells, expected 2")
        out.append((i, r[0], r[1]))
    return [h.strip() for h in rows[0]], out


def validate_submission(text: str, expected_rows: Sequence[str] | None = None,
                        corpus_ids=None, k: int = 25, path="submission.csv") -> None:
    """Raise :class:`InputError` naming the line and column of the first problem."""
    header, rows = parse_submission(text, path)
    if tuple(header) != HEADER:
        raise InputError(path, 1, None, f"header {','.join(header)!r}, expected {','.join(HEADER)!r}")
    seen = {}
    for line, rid, cell in rows:
        if rid in seen:
            raise InputError(path, line, HEADER[0], f"duplicate row {rid!r} (first at line {seen[rid]})")
        seen[rid] = line
        ids = cell.split(" ")
        if len(ids) != k:
            raise InputError(path, line, HEADER[1], f"{len(ids)} ids, expected exactly {k} separated by single spaces")
        for x in ids:
            if not (x.isascii() and x.isdigit()) or str(int(x)) != x:
                raise InputError(path, line, HEADER[1], f"{x!r} is not a plain non-negative integer id")
            if corpus_ids is not None and x not in corpus_ids:
                raise InputError(path, line, HEADER[1], f"id {x} is not in the misconception mapping")
        if len(set(ids)) != k:
            dup = next(x for j, x in enumerate(ids) if x in ids[:j])
            raise InputError(path, line, HEADER[1], f"id {dup} appears more than once")
    if expected_rows is not None:
        want, got = set(expected_rows), set(seen)
        if want != got:
            missing, extra = sorted(want - got), sorted(got - want)
            raise InputError(path, None, HEADER[0], f"row set differs: {len(missing)} missing "
                             f"({', '.join(missing[:5])}), {len(extra)} unexpected ({', '.join(extra[:5])})")


def sample_row_ids(sample_submission) -> list[str]:
    """Row ids of Kaggle's ``sample_submission.csv`` (its header checked too)."""
    path = Path(sample_submission)
    if not path.exists():
        raise InputError(path, None, None, "file does not exist")
    header, rows = parse_submission(path.read_text(encoding="utf-8-sig"), path)
    if tuple(header) != HEADER:
        raise InputError(path, 1, None, f"header {','.join(header)!r}, expected {','.join(HEADER)!r}")
    return [rid for _, rid, _ in rows]


def write_submission(path, row_ids: Sequence[str], ranked_ids: Sequence[Sequence[str]], k: int = 25,
                     expected_rows: Sequence[str] | None = None, corpus_ids=None) -> str:
    """Format, validate, then write atomically; returns the text. Nothing is written on error."""
    text = format_submission(row_ids, ranked_ids, k)
    validate_submission(text, expected_rows if expected_rows is not None else row_ids,
                        set(corpus_ids) if corpus_ids is not None else None, k, path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    log.info("wrote %d rows x %d ids -> %s", len(row_ids), k, path)
    return text
