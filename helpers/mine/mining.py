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
"""
from __future__ import annotations

import logging
from typing import Sequence

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


def sample_negatives(rows: list[dict], ranked: np.ndarray, corpus_ids: Sequence[str],
                     corpus_texts: Sequence[str], sample_range=(2, 100), negative_number: int = 15,
                     seed: int = 42) -> tuple[list[dict], list[list[int]]]:
    """Fill ``neg``/``neg_ids`` of every row from its ranked corpus indices.

    ``ranked[i]`` holds corpus indices for ``rows[i]``, best first (-1 = none). Returns the new
    rows (copies) and, per row, the 0-based rank of each negative (-1 for a top-up one).
    """
    a, b = parse_range(sample_range)
    if negative_number < 0:
        raise ValueError(f"negative_number must be >= 0, got {negative_number}")
    if len(ranked) != len(rows):
        raise ValueError(f"sample_negatives: {len(ranked)} rankings for {len(rows)} rows")
    id_to_idx = {cid: i for i, cid in enumerate(corpus_ids)}
    rng = np.random.default_rng(seed)
    out_rows, out_ranks, short, topped = [], [], 0, 0
    for row, rank_list in zip(rows, ranked):
        pos_ids = list(row["pos_ids"])
        banned = {id_to_idx[p] for p in pos_ids if p in id_to_idx}
        qid = row.get("query_id")
        if qid in id_to_idx:
            banned.add(id_to_idx[qid])
        banned_text = set(row.get("pos", [])) | {row["query"]}
        cand, cand_rank, seen_text = [], [], set()
        for r, idx in enumerate(list(rank_list)[a:b], start=a):
            idx = int(idx)
            if idx < 0:
                break
            t = corpus_texts[idx]
            if idx in banned or t in banned_text or t in seen_text:
                continue
            seen_text.add(t)
            cand.append(idx)
            cand_rank.append(r)
        if len(cand) > negative_number:
            pick = np.sort(rng.choice(len(cand), size=negative_number, replace=False))
            cand = [cand[j] for j in pick]
            cand_rank = [cand_rank[j] for j in pick]
        elif len(cand) < negative_number:
            extra = _topup(rng, len(corpus_ids), negative_number - len(cand),
                           banned | set(cand), banned_text | seen_text, corpus_texts)
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
    if topped:
        log.info("%d of %d queries had fewer than %d candidates in ranks [%d:%d] and were topped up "
                 "at random", topped, len(rows), negative_number, a, b)
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
