"""Teacher false-negative filter: pure functions on scored rows (``pos_scores`` / ``neg_scores``).

A negative is a **suspect** (a likely false negative: the teacher thinks it explains the wrong
answer as well as the gold misconception does) when its teacher score is above the query's best
positive score minus ``margin``: ``neg_score > max(pos_scores) - margin`` (margin 0: above the
positive; a larger margin flags more). Modes:

* ``none``: rows unchanged;
* ``drop``: suspects are removed from ``neg``, ``neg_ids``, ``neg_scores`` and every other list
  field named ``neg_*`` of the same length (kept aligned). At least one negative stays per row:
  when every negative is a suspect, the one with the LOWEST teacher score is kept (counted as
  ``kept_to_keep_one``), so a row never loses its group;
* ``mark``: nothing removed; ``neg_suspect`` (booleans aligned with ``neg``) is added, for the
  training side to honour (:func:`helpers.train.groups.load_group_rows` drops marked negatives,
  with the same keep-one rule) or ignore.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

FILTER_MODES = ("none", "drop", "mark")
SUSPECT_FIELD = "neg_suspect"


def check_filter(mode: str, margin) -> None:
    if mode not in FILTER_MODES:
        raise ValueError(f"teacher_filter {mode!r}: choose one of {', '.join(FILTER_MODES)}")
    if not isinstance(margin, (int, float)) or not math.isfinite(margin):
        raise ValueError(f"teacher_filter_margin must be a finite number, got {margin!r}")


def suspect_mask(row: dict, margin: float = 0.0) -> list[bool]:
    """Per negative of ``row``: teacher score > max positive score - ``margin``."""
    pos, neg = row.get("pos_scores"), row.get("neg_scores")
    if not pos or neg is None or len(neg) != len(row.get("neg", neg)):
        raise ValueError(f"row {row.get('query_id')!r}: the teacher filter needs pos_scores and neg_scores "
                         "aligned with neg")
    ref = max(float(s) for s in pos) - float(margin)
    return [float(s) > ref for s in neg]


def keep_indices(mask: Sequence[bool], neg_scores: Sequence[float]) -> list[int]:
    """Indices of the negatives to keep: the unflagged ones; all flagged -> the lowest-scored one."""
    keep = [j for j, m in enumerate(mask) if not m]
    if not keep and len(mask):
        keep = [min(range(len(mask)), key=lambda j: (float(neg_scores[j]), j))]
    return keep


def drop_negatives(row: dict, keep: Sequence[int]) -> dict:
    """A copy of ``row`` holding only the negatives ``keep`` (in order), in every aligned ``neg*`` list."""
    n = len(row["neg"])
    out = dict(row)
    for k, v in row.items():
        if (k == "neg" or k.startswith("neg_")) and isinstance(v, list) and len(v) == n:
            out[k] = [v[j] for j in keep]
    return out


def apply_teacher_filter(rows: list[dict], mode: str = "none", margin: float = 0.0,
                         examples: int = 20) -> tuple[list[dict], dict]:
    """``rows`` filtered by ``mode`` (new row dicts; the input is not changed) and a report:
    totals, ``flagged_per_query`` (one count per row) and up to ``examples`` flagged negatives
    side by side with their query and positive."""
    check_filter(mode, margin)
    report = dict(mode=mode, margin=float(margin), queries=len(rows), negatives=0, flagged=0,
                  queries_with_flagged=0, dropped=0, kept_to_keep_one=0, flagged_per_query=[], examples=[])
    if mode == "none":
        report["negatives"] = sum(len(r.get("neg", [])) for r in rows)
        return list(rows), report
    out = []
    for r in rows:
        mask = suspect_mask(r, margin)
        n_flag = sum(mask)
        report["negatives"] += len(mask)
        report["flagged"] += n_flag
        report["queries_with_flagged"] += n_flag > 0
        report["flagged_per_query"].append(n_flag)
        best = max(range(len(r["pos_scores"])), key=lambda j: float(r["pos_scores"][j]))
        for j, m in enumerate(mask):
            if m and len(report["examples"]) < examples:
                report["examples"].append({
                    "query_id": r.get("query_id"), "query": r["query"], "pos": r["pos"][best],
                    "pos_score": float(r["pos_scores"][best]), "neg_id": (r.get("neg_ids") or [None] * len(mask))[j],
                    "neg": r["neg"][j], "neg_score": float(r["neg_scores"][j])})
        if mode == "mark":
            out.append(dict(r, **{SUSPECT_FIELD: mask}))
            continue
        keep = keep_indices(mask, r["neg_scores"])
        report["dropped"] += len(mask) - len(keep)
        report["kept_to_keep_one"] += bool(n_flag) and n_flag == len(mask)
        out.append(drop_negatives(r, keep))
    return out, report


def drop_marked(row: dict) -> tuple[dict, int]:
    """Training side of ``mark``: ``row`` without its ``neg_suspect`` negatives (keep-one rule as in
    ``drop``) -> (row, number dropped). A row without the field is returned as it is."""
    mask: Optional[list] = row.get(SUSPECT_FIELD)
    if mask is None:
        return row, 0
    if not isinstance(mask, list) or len(mask) != len(row["neg"]) or not all(isinstance(m, bool) for m in mask):
        raise ValueError(f"{SUSPECT_FIELD} must be a list of booleans aligned with neg")
    scores = row.get("neg_scores") or [0.0] * len(mask)
    keep = keep_indices(mask, scores)
    return drop_negatives(row, keep), len(mask) - len(keep)


def summary_line(report: dict) -> str:
    n = max(1, report["queries"])
    return (f"teacher_filter {report['mode']} (margin {report['margin']}): {report['flagged']} of "
            f"{report['negatives']} negatives flagged ({report['flagged'] / n:.2f} per query, "
            f"{report['queries_with_flagged']} queries with any), {report['dropped']} dropped, "
            f"{report['kept_to_keep_one']} rows kept their lowest-scored suspect (all flagged)")
