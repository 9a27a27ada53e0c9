"""Eedi CSVs -> corpus and query rows (DESIGN.md section 3), with clear errors.

The loader survives the quirks of the real files (float ids such as ``1672.0``, empty cells,
LaTeX and newlines inside quoted cells, surrounding white space, one misconception name under two
ids) and rejects bad input with one error naming the file, the line and the column.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from helpers.common.io_utils import InputError
from helpers.common.prompts import QUERY_TEMPLATE, RETRIEVAL_INSTRUCTION

LETTERS = ("A", "B", "C", "D")
QUESTION_COLUMNS = ["QuestionId", "ConstructId", "ConstructName", "SubjectId", "SubjectName",
                    "CorrectAnswer", "QuestionText"] + [f"Answer{x}Text" for x in LETTERS]
LABEL_COLUMNS = [f"Misconception{x}Id" for x in LETTERS]
MAPPING_COLUMNS = ["MisconceptionId", "MisconceptionName"]


def read_csv(path, required: list[str]) -> list[tuple[int, dict]]:
    """Read a CSV strictly as UTF-8; return ``(line, row)`` pairs (line = where the record starts)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, None, None, "file does not exist")
    raw = path.read_bytes()
    if not raw.strip():
        raise InputError(path, None, None, "file is empty")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise InputError(path, line, None, f"not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    start = 1
    try:
        header = [h.strip() for h in next(reader, [])]
        seen = set()
        for h in header:
            if h and h in seen:   # unnamed columns (trailing commas) carry nothing we read
                raise InputError(path, 1, h, "duplicate column (a second column of the same name would hide the first)")
            seen.add(h)
        missing = [c for c in required if c not in header]
        if missing:
            raise InputError(path, 1, missing[0], f"missing column (header has: {', '.join(header)})")
        rows, start = [], reader.line_num + 1
        for cells in reader:
            if not cells:         # a blank line: no record
                start = reader.line_num + 1
                continue
            if len(cells) != len(header):
                hint = ""
                if any("\n" in c for c in cells) and reader.line_num > start:
                    hint = (f" (an unterminated quote? this record runs from line {start} to line "
                            f"{reader.line_num})")
                raise InputError(path, start, None, f"{len(cells)} cells for {len(header)} columns{hint}")
            rows.append((start, dict(zip(header, cells))))
            start = reader.line_num + 1
    except csv.Error as e:
        raise InputError(path, start, None, f"not a valid CSV record ({e})") from None
    if not rows:
        raise InputError(path, None, None, "file has a header but no rows")
    return rows


def parse_id(value, path, line, column, allow_empty=False):
    """``"1672"`` / ``"1672.0"`` / ``" 1672 "`` -> ``"1672"``; empty -> None when allowed."""
    v = (value or "").strip()
    if not v:
        if allow_empty:
            return None
        raise InputError(path, line, column, "empty, expected an integer id")
    try:
        f = float(v)
    except ValueError:
        raise InputError(path, line, column, f"{v!r} is not an integer id") from None
    if not f.is_integer() or f < 0:
        raise InputError(path, line, column, f"{v!r} is not a non-negative integer id")
    return str(int(f))


def load_misconceptions(path) -> dict[str, str]:
    """misconception_mapping.csv -> {id: name}, ids as strings, names stripped."""
    out = {}
    for line, row in read_csv(path, MAPPING_COLUMNS):
        mid = parse_id(row["MisconceptionId"], path, line, "MisconceptionId")
        if mid in out:
            raise InputError(path, line, "MisconceptionId", f"duplicate id {mid}")
        name = (row["MisconceptionName"] or "").strip()
        if not name:
            raise InputError(path, line, "MisconceptionName", "empty")
        out[mid] = name
    return out


def load_questions(path, mapping: dict[str, str] | None = None, labelled=True) -> list[dict]:
    """Read train.csv (``labelled``) or test.csv; one dict per question, cells stripped.

    Each question gets ``line``, ids as strings, ``answers`` {letter: text} and, when labelled,
    ``misconceptions`` {letter: id or None}.
    """
    required = QUESTION_COLUMNS + (LABEL_COLUMNS if labelled else [])
    out, seen = [], {}
    for line, row in read_csv(path, required):
        qid = parse_id(row["QuestionId"], path, line, "QuestionId")
        if qid in seen:
            raise InputError(path, line, "QuestionId", f"duplicate QuestionId {qid} (first at line {seen[qid]})")
        seen[qid] = line
        correct = (row["CorrectAnswer"] or "").strip().upper()
        if correct not in LETTERS:
            raise InputError(path, line, "CorrectAnswer", f"{row['CorrectAnswer']!r} is not one of A, B, C, D")
        q = {"line": line, "QuestionId": qid,
             "ConstructId": parse_id(row["ConstructId"], path, line, "ConstructId"),
             "SubjectId": parse_id(row["SubjectId"], path, line, "SubjectId"),
             "ConstructName": (row["ConstructName"] or "").strip(),
             "SubjectName": (row["SubjectName"] or "").strip(),
             "QuestionText": (row["QuestionText"] or "").strip(),
             "CorrectAnswer": correct,
             "answers": {x: (row[f"Answer{x}Text"] or "").strip() for x in LETTERS}}
        if labelled:
            mis = {}
            for x in LETTERS:
                col = f"Misconception{x}Id"
                mid = parse_id(row[col], path, line, col, allow_empty=True)
                if mid is not None and mapping is not None and mid not in mapping:
                    raise InputError(path, line, col, f"misconception id {mid} is not in the mapping file")
                mis[x] = None if x == correct else mid   # the correct answer carries no misconception
            q["misconceptions"] = mis
        out.append(q)
    return out


def format_query(q: dict, letter: str, template: str = QUERY_TEMPLATE) -> str:
    fields = dict(q, CorrectAnswerText=q["answers"][q["CorrectAnswer"]], WrongAnswerText=q["answers"][letter],
                  AnswerLetter=letter)
    try:
        return template.format(**fields)
    except KeyError as e:
        raise ValueError(f"query_template: unknown field {e.args[0]!r}; available: "
                         "QuestionText, ConstructName, SubjectName, CorrectAnswerText, WrongAnswerText, "
                         "AnswerLetter, QuestionId, ConstructId, SubjectId") from None


def build_queries(questions: list[dict], mapping: dict[str, str] | None, template: str = QUERY_TEMPLATE,
                  instruction: str = RETRIEVAL_INSTRUCTION, labelled_only=True) -> list[dict]:
    """One query row per (question, wrong answer); with ``labelled_only`` only those with a misconception."""
    rows = []
    for q in questions:
        for x in LETTERS:
            if x == q["CorrectAnswer"]:
                continue
            mid = q.get("misconceptions", {}).get(x)
            if labelled_only and mid is None:
                continue
            rows.append({
                "query_id": f"{q['QuestionId']}_{x}",
                "query": format_query(q, x, template),
                "pos": [mapping[mid]] if mid is not None else [],
                "pos_ids": [mid] if mid is not None else [],
                "neg": [], "neg_ids": [],
                "prompt": instruction,
                "question_id": q["QuestionId"], "subject_id": q["SubjectId"],
                "construct_id": q["ConstructId"], "answer": x,
                "construct_name": q["ConstructName"], "subject_name": q["SubjectName"],
            })
    return rows


def corpus_rows(mapping: dict[str, str]) -> list[dict]:
    return [{"id": k, "text": v} for k, v in sorted(mapping.items(), key=lambda kv: int(kv[0]))]
