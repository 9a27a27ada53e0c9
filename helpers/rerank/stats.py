"""How good is the teacher on its own groups? (stage 02's report)

A group is one query's positives and negatives with their scores. The rank of a positive is 1 +
the number of negatives scoring at least as high (ties count against the positive; other
positives do not count). Per query we average over its positives; then over queries:

- ``top1``: share of positives ranked first in their group (scored above every negative);
- ``map``: mean 1/rank of the positive in its group (with one positive, the group's MAP);
- ``mean_pos`` / ``mean_neg``: mean raw score of positives / negatives.
"""
from __future__ import annotations

import math

import numpy as np


def positive_ranks(pos_scores, neg_scores) -> list[int]:
    """1-based rank of each positive among the negatives (ties count against it)."""
    for name, s in (("pos_scores", pos_scores), ("neg_scores", neg_scores)):
        if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in s):
            raise ValueError(f"{name}: every score must be a finite number")
    neg = np.asarray(neg_scores, dtype=float)
    return [1 + int((neg >= p).sum()) for p in pos_scores]


def group_rank_stats(rows) -> dict:
    """Teacher's own group metrics over scored rows (``pos_scores`` / ``neg_scores``)."""
    top1, rr, pos, neg = [], [], [], []
    for i, r in enumerate(rows):
        if "pos_scores" not in r or "neg_scores" not in r:
            raise ValueError(f"row {i} (query_id {r.get('query_id')!r}) has no pos_scores/neg_scores")
        if not r["pos_scores"]:
            raise ValueError(f"row {i} (query_id {r.get('query_id')!r}): pos_scores is empty")
        ranks = positive_ranks(r["pos_scores"], r["neg_scores"])
        top1.append(np.mean([k == 1 for k in ranks]))
        rr.append(np.mean([1.0 / k for k in ranks]))
        pos += list(r["pos_scores"])
        neg += list(r["neg_scores"])
    if not rr:
        raise ValueError("no scored rows")
    return {"queries": len(rr), "top1": float(np.mean(top1)), "map": float(np.mean(rr)),
            "mean_pos": float(np.mean(pos)), "mean_neg": float(np.mean(neg)) if neg else float("nan"),
            "groups_size_mean": float(np.mean([len(r["pos_scores"]) + len(r["neg_scores"]) for r in rows]))}


def teacher_vs_miner(rows) -> dict:
    """The teacher against the mining model on the groups KD will train on: :func:`group_rank_stats`
    of the written scores (``teacher``), of the reranker's own when fused (``reranker``) and of the
    mining model's (``miner``: ``pos_embedder_scores`` / ``neg_embedder_scores``, from
    ``hn_mine --keep_scores True``); {} when the rows carry no mining scores. On eedi_dev a fused teacher
    that re-orders the student's test top 25 better still put the positive first on fewer of these groups
    than the student (0.657 against 0.674), and KD with it lost (README, issue 29)."""
    from helpers.rerank.fusion import EMBEDDER_FIELDS, RAW_FIELDS

    def of(fields):
        pos, neg = fields
        return group_rank_stats([{"query_id": r.get("query_id"), "pos_scores": r[pos], "neg_scores": r[neg]}
                                 for r in rows])
    if not rows or any(f not in r for r in rows for f in EMBEDDER_FIELDS):
        return {}
    out = {"teacher": group_rank_stats(rows), "miner": of(EMBEDDER_FIELDS)}
    if all(f in r for r in rows for f in RAW_FIELDS):
        out["reranker"] = of(RAW_FIELDS)
    return out


def plot_score_histograms(rows, ax=None, bins=40, title=None):
    """Overlaid histograms of positive and negative scores (density, shared bins)."""
    import matplotlib.pyplot as plt
    pos = [x for r in rows for x in r["pos_scores"]]
    neg = [x for r in rows for x in r["neg_scores"]]
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    edges = np.histogram_bin_edges(pos + neg, bins=bins)
    ax.hist(neg, bins=edges, density=True, alpha=0.55, label=f"negatives ({len(neg)})")
    ax.hist(pos, bins=edges, density=True, alpha=0.55, label=f"positives ({len(pos)})")
    ax.set_xlabel("teacher score")
    ax.set_ylabel("density")
    ax.legend()
    if title:
        ax.set_title(title)
    return ax
