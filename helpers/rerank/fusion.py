"""Score fusion: a reranker's scores interpolated with an embedder's, one rule for every stage.

``fuse(reranker, embedder, alpha) = alpha * z(reranker) + (1 - alpha) * z(embedder)``, each list
z-normalised over the candidates it is given (mean 0, standard deviation 1; a constant list, or a
single score, is all 0). ``alpha`` 1 is the reranker's order, 0 the embedder's.

Two users, the same function:

- the cascade (:mod:`helpers.eval.cascade`) sorts an embedder's top k by it (``alpha``);
- stage 02 (:mod:`helpers.rerank.add_reranker_score`, ``--fusion_alpha``) writes it as the
  teacher's score of a mined group (the positives and negatives of one query), from the reranker's
  scores and the mining model's (``pos_embedder_scores`` / ``neg_embedder_scores``, written by
  ``hn_mine --keep_scores True``). The raw reranker scores stay in the row as
  ``pos_reranker_scores`` / ``neg_reranker_scores``.

Why a fused teacher: on eedi_dev a MiniLM cross-encoder a CPU can train re-orders its student's
top 25 worse than the student (README, issue 29), but fused at 0.5 it re-orders them better
(+0.013 [+0.001, +0.024] MAP@25): the two make different mistakes. A fused teacher is part
student, so its KD run is read beside a self-distillation control (``alpha`` 0).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from helpers.common.io_utils import InputError

EMBEDDER_FIELDS = ("pos_embedder_scores", "neg_embedder_scores")
RAW_FIELDS = ("pos_reranker_scores", "neg_reranker_scores")


def zscore(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    sd = x.std() if len(x) else 0.0
    return np.zeros_like(x) if sd == 0 or len(x) < 2 else (x - x.mean()) / sd


def check_alpha(alpha: Optional[float], name: str = "alpha") -> None:
    if alpha is None:
        return
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) \
            or not 0 <= alpha <= 1:
        raise ValueError(f"{name} must be a number in [0, 1] (the reranker's weight) or None, got {alpha!r}")


def fuse(reranker_scores: Sequence[float], embedder_scores: Sequence[float], alpha: float) -> np.ndarray:
    """``alpha * z(reranker) + (1 - alpha) * z(embedder)`` over the same candidates, in their order."""
    if len(reranker_scores) != len(embedder_scores):
        raise ValueError(f"fuse: {len(reranker_scores)} reranker scores but {len(embedder_scores)} embedder scores")
    return alpha * zscore(reranker_scores) + (1 - alpha) * zscore(embedder_scores)


def check_embedder_scores(rows: Sequence[dict], path) -> None:
    """Every row carries the mining model's scores, aligned with ``pos`` / ``neg`` (file, line, field)."""
    for r in rows:
        for field, texts in zip(EMBEDDER_FIELDS, ("pos", "neg")):
            v = r.get(field)
            if v is None:
                raise InputError(path, r.get("__line__"), field, "missing: a fused teacher (fusion_alpha) needs the "
                                 "mining model's scores; mine with keep_scores True")
            if not isinstance(v, list) or len(v) != len(r[texts]) or not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v):
                raise InputError(path, r.get("__line__"), field, f"expected {len(r[texts])} finite numbers "
                                 f"aligned with {texts}")


def fuse_rows(rows: Sequence[dict], alpha: float) -> None:
    """In place: ``pos_scores`` / ``neg_scores`` become the fusion over each row's group (positives
    and negatives together); the reranker's own scores move to ``pos_reranker_scores`` /
    ``neg_reranker_scores``. Scores are rounded to 6 decimals (the file is JSON)."""
    (emb_pos, emb_neg), (raw_pos, raw_neg) = EMBEDDER_FIELDS, RAW_FIELDS
    for r in rows:
        n_pos = len(r["pos_scores"])
        f = fuse(list(r["pos_scores"]) + list(r["neg_scores"]), list(r[emb_pos]) + list(r[emb_neg]), alpha)
        r[raw_pos], r[raw_neg] = r["pos_scores"], r["neg_scores"]
        r["pos_scores"] = [round(float(x), 6) for x in f[:n_pos]]
        r["neg_scores"] = [round(float(x), 6) for x in f[n_pos:]]
