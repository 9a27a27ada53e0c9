"""Hard-negative sampling from a ranked list (FlagEmbedding's ``find_knn_neg``, made exact).

Same rules as FlagEmbedding: ``range_for_sampling a-b`` is the 0-based slice ``[a:b]`` of each
query's ranked list; candidates that are positives (or the query itself) are dropped; if more
than ``negative_number`` remain, that many are sampled at random, else all are kept and topped
up at random from the corpus.

Better than FlagEmbedding:
* identity by id: a candidate is a positive when its id is in ``pos_ids`` (a passage with the
  same text as a positive or as the query is dropped too: it is not a real negative);
* the top-up never yields a positive, a duplicate, the query, or a text already chosen;
* one seeded ``numpy.random.Generator`` (no ``set()`` order, no global ``random``): the output
  is byte-identical run to run whatever PYTHONHASHSEED is. Chosen negatives keep rank order.

Positive-aware filters (off by default; then the output is exactly FlagEmbedding's rule above).
They need the ranking's similarity scores and each query's positive similarities, and apply to
the candidates of the sampling range (after the exclusions above). With several positives the
LOWEST positive similarity ``s_pos`` is the reference (a candidate that looks closer than any
gold passage is suspect). A candidate with similarity ``s`` survives when all given filters hold:

* ``relative_margin m``: ``s < s_pos - |s_pos| * m`` (``= s_pos * (1 - m)`` for ``s_pos > 0``:
  NV-Retriever's TopK-PercPos, ``m = 0.05``);
* ``absolute_margin m``: ``s < s_pos - m``;
* ``max_score x``: ``s < x``.

``sampling``: ``random`` (the seeded draw above) or ``top`` (the highest-ranked survivors, in rank
order; no draw). Too few survivors: today's top-up rule (all survivors kept, then random corpus
passages), and a filtered-out candidate (any rank of the searched list that fails a filter) is
never a top-up one; passages beyond the searched depth are not checked. What each filter removed
is counted (:class:`MiningStats`) and logged.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)


def parse_range(spec) -> tuple[int, int]:
    """``"2-100"`` -> ``(2, 100)``; the slice ``[a:b]`` of the ranked list (0-based, b excluded)."""
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        a, b = spec
    else:
        parts = str(spec).strip().split("-")
        if len(parts) != 2:
            raise ValueError(f"range_for_sampling {spec!r}: expected 'a-b' (e.g. 2-100)")
        a, b = parts
    try:
        a, b = int(a), int(b)
    except (TypeError, ValueError):
        raise ValueError(f"range_for_sampling {spec!r}: a and b must be whole numbers (e.g. 2-100)") from None
    if a < 0 or b <= a:
        raise ValueError(f"range_for_sampling {spec!r}: need 0 <= a < b (the slice [a:b] of the ranking)")
    return a, b


def _topup(rng: np.random.Generator, n_corpus: int, need: int, banned: set, banned_text: set,
           texts: Sequence[str]) -> list[int]:
    """``need`` random corpus indices, distinct in index and text, outside ``banned`` (indices)
    and ``banned_text``; fewer only when the corpus has no more."""
    out: list[int] = []
    used_text = set(banned_text)

    def take(i):
        if i not in banned and texts[i] not in used_text:
            used_text.add(texts[i])
            out.append(i)

    # rejection sampling first (cheap for big corpora) ...
    for _ in range(4):
        for i in rng.integers(0, n_corpus, size=2 * (need - len(out)) + 8).tolist():
            if len(out) == need:
                break
            take(i)
        if len(out) == need:
            return out
    # ... then an exact draw from what is left
    pool, pool_text = [], set()
    for i in range(n_corpus):
        if i not in banned and texts[i] not in used_text and texts[i] not in pool_text:
            pool_text.add(texts[i])
            pool.append(i)
    k = min(need - len(out), len(pool))
    if k:
        out += [pool[j] for j in np.sort(rng.choice(len(pool), size=k, replace=False)).tolist()]
    return out


SAMPLING = ("random", "top")
FILTERS = ("relative_margin", "absolute_margin", "max_score")


@dataclass
class MiningStats:
    """What :func:`sample_negatives` did. ``removed[f]``: candidates of the sampling range that fail
    filter ``f`` (a candidate failing two filters counts under both); ``removed_any``: candidates
    removed by at least one filter; ``topped_up``: queries topped up at random; ``short``: queries
    left with fewer than ``negative_number`` negatives (the corpus has no more)."""
    queries: int = 0
    candidates: int = 0                 # candidates in the range after the positive/query/duplicate exclusions
    removed: dict = field(default_factory=lambda: {f: 0 for f in FILTERS})
    removed_any: int = 0
    topped_up: int = 0
    short: int = 0

    def as_dict(self) -> dict:
        """Flat stats (totals and per-query means) for hn_mine's stats."""
        n = max(1, self.queries)
        out = {"range_candidates": self.candidates}
        for f in FILTERS:
            out[f"removed_by_{f}"] = self.removed[f]
            out[f"removed_by_{f}_per_query"] = round(self.removed[f] / n, 4)
        out["removed_by_filters"] = self.removed_any
        out["removed_by_filters_per_query"] = round(self.removed_any / n, 4)
        out["queries_topped_up"] = self.topped_up
        return out


def check_filters(relative_margin=None, absolute_margin=None, max_score=None, sampling="random") -> None:
    """One clear error for a bad filter or sampling value."""
    if sampling not in SAMPLING:
        raise ValueError(f"sampling {sampling!r}: choose one of {', '.join(SAMPLING)}")
    for name, v in (("relative_margin", relative_margin), ("absolute_margin", absolute_margin),
                    ("max_score", max_score)):
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)):
            raise ValueError(f"{name} must be a number or None, got {v!r}")
    if relative_margin is not None and not 0 <= relative_margin < 1:
        raise ValueError(f"relative_margin must be in [0, 1) (0.05: keep scores below 95% of the positive's), "
                         f"got {relative_margin}")
    if absolute_margin is not None and absolute_margin < 0:
        raise ValueError(f"absolute_margin must be >= 0, got {absolute_margin}")


def failed_filters(s: float, pos_ref: Optional[float], relative_margin=None, absolute_margin=None,
                   max_score=None) -> list[str]:
    """The filters a candidate of similarity ``s`` fails (``pos_ref``: the lowest positive similarity)."""
    out = []
    if relative_margin is not None and not s < pos_ref - abs(pos_ref) * relative_margin:
        out.append("relative_margin")
    if absolute_margin is not None and not s < pos_ref - absolute_margin:
        out.append("absolute_margin")
    if max_score is not None and not s < max_score:
        out.append("max_score")
    return out


def sample_negatives(rows: list[dict], ranked: np.ndarray, corpus_ids: Sequence[str],
                     corpus_texts: Sequence[str], sample_range=(2, 100), negative_number: int = 15,
                     seed: int = 42, scores: Optional[np.ndarray] = None,
                     pos_scores: Optional[Sequence[Sequence[float]]] = None,
                     relative_margin: Optional[float] = None, absolute_margin: Optional[float] = None,
                     max_score: Optional[float] = None, sampling: str = "random",
                     stats: Optional[MiningStats] = None) -> tuple[list[dict], list[list[int]]]:
    """Fill ``neg``/``neg_ids`` of every row from its ranked corpus indices.

    ``ranked[i]`` holds corpus indices for ``rows[i]``, best first (-1 = none); ``scores[i]`` their
    similarities and ``pos_scores[i]`` the similarity of each positive of ``rows[i]`` (needed by
    the filters only; see the module docstring). Returns the new rows (copies) and, per row, the
    0-based rank of each negative (-1 for a top-up one); ``stats`` (a :class:`MiningStats`), when
    given, is filled in.
    """
    a, b = parse_range(sample_range)
    if negative_number < 0:
        raise ValueError(f"negative_number must be >= 0, got {negative_number}")
    if len(ranked) != len(rows):
        raise ValueError(f"sample_negatives: {len(ranked)} rankings for {len(rows)} rows")
    check_filters(relative_margin, absolute_margin, max_score, sampling)
    filtering = any(v is not None for v in (relative_margin, absolute_margin, max_score))
    need_pos = relative_margin is not None or absolute_margin is not None
    if filtering and (scores is None or len(scores) != len(rows) or (need_pos and (
            pos_scores is None or len(pos_scores) != len(rows)))):
        raise ValueError("sample_negatives: the filters need the ranking's scores (one row per query)"
                         + (" and the positives' scores" if need_pos else ""))
    st = stats if stats is not None else MiningStats()
    st.queries += len(rows)
    id_to_idx = {cid: i for i, cid in enumerate(corpus_ids)}
    rng = np.random.default_rng(seed)
    out_rows, out_ranks, short, topped = [], [], 0, 0
    for qi, (row, rank_list) in enumerate(zip(rows, ranked)):
        pos_ids = list(row["pos_ids"])
        banned = {id_to_idx[p] for p in pos_ids if p in id_to_idx}
        qid = row.get("query_id")
        if qid in id_to_idx:
            banned.add(id_to_idx[qid])
        banned_text = set(row.get("pos", [])) | {row["query"]}
        pos_ref = None
        if need_pos:
            if not len(pos_scores[qi]):
                raise ValueError(f"sample_negatives: row {qi} has no positive score for the margin filters")
            pos_ref = float(min(pos_scores[qi]))
        failed_idx, failed_text = set(), set()
        if filtering:              # every searched passage that fails a filter: never a top-up one
            for idx, s in zip(list(rank_list), list(scores[qi])):
                if int(idx) >= 0 and failed_filters(float(s), pos_ref, relative_margin, absolute_margin, max_score):
                    failed_idx.add(int(idx))
                    failed_text.add(corpus_texts[int(idx)])
        cand, cand_rank, seen_text = [], [], set()
        for r, idx in enumerate(list(rank_list)[a:b], start=a):
            idx = int(idx)
            if idx < 0:
                break
            t = corpus_texts[idx]
            if idx in banned or t in banned_text or t in seen_text:
                continue
            seen_text.add(t)
            st.candidates += 1
            if filtering:
                fails = failed_filters(float(scores[qi][r]), pos_ref, relative_margin, absolute_margin, max_score)
                for f in fails:
                    st.removed[f] += 1
                if fails:
                    st.removed_any += 1
                    continue
            cand.append(idx)
            cand_rank.append(r)
        if len(cand) > negative_number:
            if sampling == "top":
                pick = list(range(negative_number))
            else:
                pick = np.sort(rng.choice(len(cand), size=negative_number, replace=False))
            cand = [cand[j] for j in pick]
            cand_rank = [cand_rank[j] for j in pick]
        elif len(cand) < negative_number:
            extra = _topup(rng, len(corpus_ids), negative_number - len(cand),
                           banned | set(cand) | failed_idx, banned_text | seen_text | failed_text, corpus_texts)
            topped += 1
            if len(cand) + len(extra) < negative_number:
                short += 1
            cand += extra
            cand_rank += [-1] * len(extra)
        new = dict(row)
        new["neg"] = [corpus_texts[i] for i in cand]
        new["neg_ids"] = [corpus_ids[i] for i in cand]
        out_rows.append(new)
        out_ranks.append(cand_rank)
    st.topped_up += topped
    st.short += short
    if filtering:
        n = max(1, len(rows))
        log.info("filters (reference: the lowest positive similarity) removed %d of %d candidates in ranks "
                 "[%d:%d] (%.2f per query): %s", st.removed_any, st.candidates, a, b, st.removed_any / n,
                 ", ".join(f"{f} {v} removed ({v / n:.2f} per query)" for f, v in st.removed.items()
                           if {"relative_margin": relative_margin, "absolute_margin": absolute_margin,
                               "max_score": max_score}[f] is not None))
    if topped:
        log.info("%d of %d queries had fewer than %d candidates in ranks [%d:%d]%s and were topped up "
                 "at random", topped, len(rows), negative_number, a, b,
                 " left after the filters" if filtering else "")
    if short:
        log.warning("%d queries have fewer than %d negatives: the corpus has too few other passages",
                    short, negative_number)
    return out_rows, out_ranks


def shuffle_rows(rows: list, seed: int = 42) -> list:
    """Seeded permutation of the rows (``--shuffle_data``), independent of the sampling draws."""
    perm = np.random.default_rng([seed, 1]).permutation(len(rows))
    return [rows[i] for i in perm]


def corpus_from_queries(rows: list[dict], path) -> tuple[list[str], list[str]]:
    """No candidate pool: the corpus is every pos (and neg) of the input, by id, first seen first."""
    from helpers.common.io_utils import InputError
    ids, texts, where = [], [], {}
    for r in rows:
        for tf, idf in (("pos", "pos_ids"), ("neg", "neg_ids")):
            t_list, i_list = r.get(tf) or [], r.get(idf) or []
            if tf == "neg" and len(t_list) != len(i_list):
                raise InputError(path, r.get("__line__"), idf, f"{len(i_list)} ids for {len(t_list)} negatives")
            for t, i in zip(t_list, i_list):
                if i in where:
                    if texts[where[i]] != t:
                        raise InputError(path, r.get("__line__"), idf,
                                         f"id {i!r} has two different texts in the input")
                    continue
                where[i] = len(ids)
                ids.append(i)
                texts.append(t)
    return ids, texts


def check_positive_texts(rows: list[dict], corpus_ids, corpus_texts, path) -> int:
    """Count positives whose text differs from the corpus text of their id (logged, not fatal)."""
    text_of = dict(zip(corpus_ids, corpus_texts))
    bad = sum(1 for r in rows for t, i in zip(r["pos"], r["pos_ids"]) if text_of.get(i) != t)
    if bad:
        log.warning("%s: %d positives' texts differ from the corpus text of their id "
                    "(identity is by id)", path, bad)
    return bad
