"""Retrieval scoring shared by every stage that ranks the corpus: rank by inner product, score the
rankings against the gold (MAP@k, Recall@k, MRR, overall and on the seen / unseen subsets).

Mining (01) scores its student's rankings, training (03) scores every epoch
(:func:`evaluate_embedder`), evaluation (04) and the submission rank the corpus with
:func:`rank_corpus`. Seen/unseen: a test query is *seen* when every gold id of it is a
``pos_ids`` of the train split, else *unseen* (the competition's hidden test was mostly unseen).
"""
from __future__ import annotations

import csv
import io
import re
from typing import Iterable, Optional, Sequence

import numpy as np

from helpers.embed.search import search
from helpers.eval.metrics import ids_from_indices, per_query

DEFAULT_KS = tuple(range(1, 101))
SUBSETS = ("all", "seen", "unseen")
_METRIC = re.compile(r"^(MAP@\d+|Recall@\d+|MRR)$")


def rank_corpus(q_emb, p_emb, corpus_ids: Sequence[str], topk: int = 100):
    """-> (ranked ids [Q][k], scores [Q, k]); best first, ties by lower corpus position."""
    p = np.asarray(p_emb)
    if p.shape[0] != len(corpus_ids):
        raise ValueError(f"rank_corpus: {p.shape[0]} passage embeddings for {len(corpus_ids)} corpus ids")
    scores, idx = search(q_emb, p, topk)
    return ids_from_indices(idx, list(corpus_ids)), scores


def seen_ids(train_rows: Iterable[dict]) -> set:
    return {pid for r in train_rows for pid in r.get("pos_ids", [])}


def _summary(pq: dict, mask: np.ndarray, map_key: str) -> dict:
    out = {"n_queries": int(mask.sum())}
    if not mask.any():
        return out
    out[map_key] = float(pq[map_key][mask].mean())
    out.update({k: float(v[mask].mean()) for k, v in pq.items() if k.startswith("Recall@")})
    out["MRR"] = float(pq["RR"][mask].mean())
    return out


def score_rankings(ranked_ids: Sequence[Sequence[str]], query_rows: Sequence[dict],
                   corpus_ids: Optional[Iterable[str]] = None, train_rows: Optional[Sequence[dict]] = None,
                   ks: Iterable[int] = DEFAULT_KS, map_k: int = 25) -> dict:
    """Metrics of rankings against the rows' ``pos_ids``.

    Returns ``{"n_queries", "MAP@25", "Recall@k"..., "MRR"}`` and, with ``train_rows``, the
    same under ``"seen"`` and ``"unseen"`` (a subset with no query has only ``n_queries``).
    A ranked id that is not in ``corpus_ids`` is an error.
    """
    if len(ranked_ids) != len(query_rows):
        raise ValueError(f"score_rankings: {len(ranked_ids)} rankings for {len(query_rows)} queries")
    if corpus_ids is not None:
        cset = set(corpus_ids)
        for r, ranked in zip(query_rows, ranked_ids):
            for pid in ranked:
                if pid not in cset:
                    raise ValueError(f"ranking of query {r.get('query_id')!r}: id {pid!r} is not in the corpus")
    gold = [r["pos_ids"] for r in query_rows]
    pq = per_query(ranked_ids, gold, ks=ks, map_k=map_k)
    map_key = f"MAP@{map_k}"
    everything = np.ones(len(gold), dtype=bool)
    out = _summary(pq, everything, map_key)
    if train_rows is not None:
        seen = seen_ids(train_rows)
        is_seen = np.array([all(g in seen for g in gs) for gs in gold], dtype=bool)
        out["seen"] = _summary(pq, is_seen, map_key)
        out["unseen"] = _summary(pq, ~is_seen, map_key)
    return out


def evaluate_embeddings(q_emb, p_emb, query_rows: Sequence[dict], corpus_ids: Sequence[str],
                        train_rows: Optional[Sequence[dict]] = None, ks: Iterable[int] = DEFAULT_KS,
                        map_k: int = 25) -> dict:
    """Rank the corpus for already-computed embeddings and score it (see :func:`score_rankings`)."""
    ks = list(ks)
    if len(query_rows) != np.asarray(q_emb).shape[0]:
        raise ValueError(f"evaluate_embeddings: {np.asarray(q_emb).shape[0]} query embeddings for "
                         f"{len(query_rows)} query rows")
    ranked, _ = rank_corpus(q_emb, p_emb, corpus_ids, max(ks + [map_k]))
    return score_rankings(ranked, query_rows, None, train_rows, ks, map_k)


def evaluate_embedder(embedder, query_rows: Sequence[dict], corpus_ids: Sequence[str],
                      corpus_texts: Sequence[str], train_rows: Optional[Sequence[dict]] = None,
                      ks: Iterable[int] = DEFAULT_KS, map_k: int = 25) -> dict:
    """Encode queries and corpus with an :class:`helpers.embed.embedder.Embedder` and score (the
    trainer calls this after every epoch with an Embedder wrapping its model)."""
    if len(corpus_ids) != len(corpus_texts):
        raise ValueError(f"evaluate_embedder: {len(corpus_ids)} corpus ids for {len(corpus_texts)} texts")
    q = embedder.encode_queries(list(query_rows))
    p = embedder.encode_corpus(list(corpus_texts))
    return evaluate_embeddings(q, p, query_rows, corpus_ids, train_rows, ks, map_k)


def metrics_rows(metrics: dict, label: str = "") -> list[dict]:
    """Flat rows (label, subset, n_queries, MAP@25, MRR, Recall@k...) for CSV / DataFrames."""
    rows = []
    for sub in SUBSETS:
        m = metrics if sub == "all" else metrics.get(sub)
        if m is None:
            continue
        vals = {k: v for k, v in m.items() if k == "n_queries" or _METRIC.match(k)}
        rows.append({"label": label, "subset": sub, **vals})
    return rows


def metrics_csv(rows: Sequence[dict]) -> str:
    cols = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
