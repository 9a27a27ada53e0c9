"""Paired comparisons of two retrieval models over the same queries (numpy only, no I/O).

Per-query values (AP@25, Recall@25, Recall@100, ...) of a model are compared with a reference
model's on the *same* queries: pairing is by ``query_id``, never by row order. The difference is
``b - a`` (``a``: the reference, ``b``: the model compared with it), its mean over queries, and a
paired bootstrap percentile interval: resample the queries with replacement ``n_resamples``
times (seeded, :func:`numpy.random.default_rng`), take the mean difference of each resample, and
report the ``alpha / 2`` and ``1 - alpha / 2`` quantiles. An interval that contains 0 means "no
difference" at that level. Every model's own mean gets the same kind of interval
(:func:`bootstrap_mean`); with the same seed and the same queries the resamples are the same
for every model, so intervals of different models are drawn from the same resampled query sets.

Below :data:`MIN_QUERIES` paired queries the interval is still reported but there is no verdict:
one query (or a few with the same difference) gives a zero-width interval that would read as a
certain "better" / "worse"; the verdict is then "too few queries" and ``significant`` is False.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

MIN_QUERIES = 20      # fewer paired queries: "too few queries", no better / worse verdict
TOO_FEW = "too few queries"
_CHUNK = 256          # resamples drawn per block (bounds memory; the stream does not depend on it)


def per_query_from_ranks(ranks, map_k: int = 25, ks: Sequence[int] = (25, 100)) -> dict:
    """Per-query vectors from the 1-based rank of the (single) gold id; 0 or None: not ranked.

    ``{"MAP@25": AP@25 = 1/rank if rank <= map_k else 0, "Recall@k": 1.0 if rank <= k else 0.0}``
    (with one gold id per query AP@k is 1/rank within k and Recall@k is a hit).
    """
    r = np.array([0 if x is None else x for x in ranks], dtype=np.int64)
    if (r < 0).any():
        raise ValueError("per_query_from_ranks: ranks are 1-based (0 or None: not ranked)")
    found = r > 0
    out = {f"MAP@{map_k}": np.where(found & (r <= map_k), 1.0 / np.maximum(r, 1), 0.0)}
    out.update({f"Recall@{k}": (found & (r <= k)).astype(np.float64) for k in ks})
    return out


def align(a: Mapping[str, float], b: Mapping[str, float], label_a: str = "a", label_b: str = "b"):
    """Pair two ``{query_id: value}`` mappings -> (sorted ids, a values, b values).

    Different query sets are an error naming both labels and a few of the ids that differ.
    """
    ka, kb = set(a), set(b)
    if ka != kb:
        only_a, only_b = sorted(ka - kb), sorted(kb - ka)
        parts = [f"{len(x)} only in {lab!r} (e.g. {', '.join(map(repr, x[:3]))})"
                 for x, lab in ((only_b, label_b), (only_a, label_a)) if x]
        raise ValueError(f"cannot pair {label_b!r} with {label_a!r}: their query sets differ: {'; '.join(parts)}")
    ids = sorted(ka)
    return ids, np.array([a[i] for i in ids], dtype=np.float64), np.array([b[i] for i in ids], dtype=np.float64)


def _vector(x, what: str) -> np.ndarray:
    v = np.asarray(x, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"{what}: expected a 1-d vector of per-query values, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"{what}: contains NaN or infinity")
    return v


def _check(n: int, n_resamples: int, alpha: float, what: str) -> None:
    if n == 0:
        raise ValueError(f"{what}: no queries")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ValueError(f"{what}: n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"{what}: alpha must be in (0, 1), got {alpha!r}")


def resample_means(x, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """Means of ``n_resamples`` bootstrap resamples (with replacement, same size) of ``x``."""
    x = _vector(x, "resample_means")
    _check(len(x), n_resamples, 0.05, "resample_means")
    rng = np.random.default_rng(seed)
    n = len(x)
    out = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, _CHUNK):
        stop = min(start + _CHUNK, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = x[idx].mean(axis=1)
    return out


def _interval(means: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_mean(x, n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """A model's own mean with its bootstrap percentile interval: ``{mean, lo, hi, n}``."""
    x = _vector(x, "bootstrap_mean")
    _check(len(x), n_resamples, alpha, "bootstrap_mean")
    lo, hi = _interval(resample_means(x, n_resamples, seed), alpha)
    return {"mean": float(x.mean()), "lo": lo, "hi": hi, "n": int(len(x))}


def verdict(lo: float, hi: float, n: int | None = None, min_queries: int = MIN_QUERIES) -> str:
    """"better" when the whole interval is above 0, "worse" below 0, else "no difference";
    "too few queries" when ``n`` (the number of paired queries) is below ``min_queries``."""
    if n is not None and n < min_queries:
        return TOO_FEW
    return "better" if lo > 0 else "worse" if hi < 0 else "no difference"


def paired_bootstrap(a, b, n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05, *,
                     label_a: str = "a", label_b: str = "b", min_queries: int = MIN_QUERIES) -> dict:
    """Paired bootstrap of ``b - a`` over queries.

    ``a``, ``b``: per-query values, either ``{query_id: value}`` mappings (paired by id; the
    query sets must be equal) or equal-length vectors already in the same query order.
    Returns ``{mean_diff, lo, hi, better, worse, same, n, significant, verdict}``: ``better`` /
    ``worse`` / ``same`` are the shares of queries where ``b > a`` / ``b < a`` / ``b == a``;
    ``significant`` is False when ``[lo, hi]`` contains 0 or there are fewer than ``min_queries``
    queries (``verdict`` then "too few queries").
    """
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
            raise ValueError("paired_bootstrap: pass two {query_id: value} mappings or two vectors, not one of each")
        _, a, b = align(a, b, label_a, label_b)
    a, b = _vector(a, f"paired_bootstrap ({label_a})"), _vector(b, f"paired_bootstrap ({label_b})")
    if a.shape != b.shape:
        raise ValueError(f"paired_bootstrap: {len(a)} values for {label_a!r} but {len(b)} for {label_b!r}")
    _check(len(a), n_resamples, alpha, "paired_bootstrap")
    d = b - a
    lo, hi = _interval(resample_means(d, n_resamples, seed), alpha)
    n = len(d)
    v = verdict(lo, hi, n, min_queries)
    return {"mean_diff": float(d.mean()), "lo": lo, "hi": hi,
            "better": float((d > 0).sum() / n), "worse": float((d < 0).sum() / n), "same": float((d == 0).sum() / n),
            "n": int(n), "min_queries": int(min_queries), "significant": v in ("better", "worse"), "verdict": v}
