"""Retrieval metrics from rankings of ids: MAP@k (as Kaggle scores Eedi), Recall@k, MRR.

Rules, stated once:
- A ranking is a list of distinct string ids, best first. A duplicate id is an error (Kaggle's
  ``apk`` silently skips repeats; a ranking that repeats an id is a bug upstream, so we refuse).
- Gold ids per query: a non-empty list of distinct string ids.
- AP@k = sum over ranks i <= k holding a gold id of (gold hits in the top i) / i, divided by
  min(#gold, k). With one gold id it is 1/rank when rank <= k, else 0. MAP@k = mean over queries.
- Recall@k = |gold ids in the top k| / #gold. MRR = mean of 1/rank of the first gold id anywhere
  in the ranking (0 when absent).
- A ranking shorter than k is allowed: the missing places count as misses.
- Ties in scores (:func:`rank_from_scores`): higher score first, then lower corpus position
  first. The order is therefore a pure function of the scores, never of a sort's whim.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


def _check_ids(ids, what: str, qi: int) -> list:
    ids = list(ids)
    for x in ids:
        if not isinstance(x, str):
            raise ValueError(f"{what} of query {qi}: ids must be strings (the data contract), got "
                             f"{type(x).__name__} {x!r}; a str/int mismatch would score 0 silently")
    if len(set(ids)) != len(ids):
        dup = next(x for i, x in enumerate(ids) if x in ids[:i])
        raise ValueError(f"{what} of query {qi}: id {dup!r} appears more than once")
    return ids


def _pairs(ranked_ids, gold_ids):
    ranked_ids, gold_ids = list(ranked_ids), list(gold_ids)
    if len(ranked_ids) != len(gold_ids):
        raise ValueError(f"{len(ranked_ids)} rankings for {len(gold_ids)} gold lists: "
                         "need one ranking per query")
    if not ranked_ids:
        raise ValueError("no queries to score")
    for qi, (r, g) in enumerate(zip(ranked_ids, gold_ids)):
        r = _check_ids(r, "ranking", qi)
        g = _check_ids(g, "gold ids", qi)
        if not g:
            raise ValueError(f"gold ids of query {qi}: empty (every query needs a gold id)")
        yield r, set(g)


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def average_precision_at_k(ranked: Sequence[str], gold: set, k: int) -> float:
    """AP@k of one (already checked) ranking against a set of gold ids."""
    hits, score = 0, 0.0
    for i, pid in enumerate(ranked[:k]):
        if pid in gold:
            hits += 1
            score += hits / (i + 1)
    return score / min(len(gold), k)


def first_gold_rank(ranked: Sequence[str], gold: set) -> int | None:
    """1-based rank of the first gold id, or None when no gold id is ranked."""
    for i, pid in enumerate(ranked):
        if pid in gold:
            return i + 1
    return None


def per_query(ranked_ids, gold_ids, ks: Iterable[int] = (25, 50, 75, 100), map_k: int = 25) -> dict:
    """Per-query arrays: ``{"AP@25": array[Q], "Recall@k": array[Q], "RR": array[Q],
    "rank": array[Q] (1-based rank of the first gold id, 0 when absent)}``."""
    ks = [_check_k(k) for k in ks]
    map_k = _check_k(map_k)
    ap, rr, rank = [], [], []
    rec = {k: [] for k in ks}
    for r, g in _pairs(ranked_ids, gold_ids):
        ap.append(average_precision_at_k(r, g, map_k))
        fr = first_gold_rank(r, g)
        rank.append(fr or 0)
        rr.append(1.0 / fr if fr else 0.0)
        for k in ks:
            rec[k].append(len(g.intersection(r[:k])) / len(g))
    out = {f"MAP@{map_k}": np.asarray(ap, dtype=np.float64)}
    out.update({f"Recall@{k}": np.asarray(v, dtype=np.float64) for k, v in rec.items()})
    out["RR"] = np.asarray(rr, dtype=np.float64)
    out["rank"] = np.asarray(rank, dtype=np.int64)
    return out


def map_at_k(ranked_ids, gold_ids, k: int = 25) -> float:
    """Mean AP@k over queries, as Kaggle scores Eedi (one gold id: mean of 1/rank within k)."""
    k = _check_k(k)
    return float(np.mean([average_precision_at_k(r, g, k) for r, g in _pairs(ranked_ids, gold_ids)]))


def recall_at_k(ranked_ids, gold_ids, k: int = 25) -> float:
    """Mean over queries of the share of gold ids found in the top k."""
    k = _check_k(k)
    return float(np.mean([len(g.intersection(r[:k])) / len(g) for r, g in _pairs(ranked_ids, gold_ids)]))


def mrr(ranked_ids, gold_ids, k: int | None = None) -> float:
    """Mean reciprocal rank of the first gold id (within the top k when k is given)."""
    if k is not None:
        k = _check_k(k)
    vals = []
    for r, g in _pairs(ranked_ids, gold_ids):
        fr = first_gold_rank(r if k is None else r[:k], g)
        vals.append(1.0 / fr if fr else 0.0)
    return float(np.mean(vals))


def retrieval_metrics(ranked_ids, gold_ids, ks: Iterable[int] = (25, 50, 75, 100),
                      map_k: int = 25) -> dict:
    """``{"MAP@25": float, "Recall@25": float, ..., "MRR": float}`` (plain floats, JSON-ready)."""
    pq = per_query(ranked_ids, gold_ids, ks=ks, map_k=map_k)
    out = {key: float(v.mean()) for key, v in pq.items() if key not in ("RR", "rank")}
    out["MRR"] = float(pq["RR"].mean())
    return out


def rank_from_scores(scores, topk: int | None = None) -> np.ndarray:
    """Corpus positions ranked by score: descending score, ties by ascending corpus position.

    ``scores``: [N] or [Q, N] (numpy or torch). Returns int64 indices [topk] or [Q, topk]
    (topk defaults to N; capped at N). NaN scores are an error.
    """
    if hasattr(scores, "detach"):
        scores = scores.detach().float().cpu().numpy()
    s = np.asarray(scores)
    one = s.ndim == 1
    if one:
        s = s[None, :]
    if s.ndim != 2 or s.shape[1] == 0:
        raise ValueError(f"rank_from_scores: expected scores [N] or [Q, N] with N > 0, got shape {np.shape(scores)}")
    if np.isnan(s).any():
        raise ValueError("rank_from_scores: scores contain NaN")
    n = s.shape[1]
    topk = n if topk is None else min(_check_k(topk), n)
    # A stable sort of -score keeps equal scores in corpus order: exactly the stated tie rule.
    order = np.argsort(-s.astype(np.float64), axis=1, kind="stable")[:, :topk].astype(np.int64)
    return order[0] if one else order


def ids_from_indices(indices, corpus_ids: Sequence[str]) -> list[list[str]]:
    """Map [Q, k] corpus positions to ids; a position outside the corpus is an error."""
    idx = np.asarray(indices)
    if idx.ndim != 2:
        raise ValueError(f"ids_from_indices: expected indices [Q, k], got shape {idx.shape}")
    n = len(corpus_ids)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        bad = idx[(idx < 0) | (idx >= n)][0]
        raise ValueError(f"ids_from_indices: position {int(bad)} is outside the corpus of {n} passages")
    return [[corpus_ids[j] for j in row] for row in idx.tolist()]
