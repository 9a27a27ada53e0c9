"""Exact inner-product top-k search: faiss (GPU index when it can) or torch.

Tie rule (both backends): equal scores are ranked by the lower passage index first. faiss does
not promise an order among ties, so its rows are re-sorted by (-score, index); a row whose k-th
score ties with the last score faiss returned (so a lower-indexed tie might lie beyond) is
recomputed exactly with torch. The GPU index keeps fp32 (FlagEmbedding's uses fp16 storage).
"""
from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger(__name__)


def _check(query_emb, passage_emb, topk):
    q = np.ascontiguousarray(np.asarray(query_emb, dtype=np.float32))
    p = np.ascontiguousarray(np.asarray(passage_emb, dtype=np.float32))
    if q.ndim != 2 or p.ndim != 2 or q.shape[1] != p.shape[1]:
        raise ValueError(f"search: query_emb {q.shape} and passage_emb {p.shape} must be "
                         "[n_queries, dim] and [n_passages, dim] with the same dim")
    if int(topk) < 1:
        raise ValueError(f"search: topk must be at least 1, got {topk}")
    return q, p, min(int(topk), p.shape[0])


def search_torch(query_emb, passage_emb, topk: int, batch_size: int = 1024, device=None):
    """Exact search with a stable sort: ties -> lower index first."""
    q, p, k = _check(query_emb, passage_emb, topk)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    P = torch.from_numpy(p).to(device)
    scores, indices = [], []
    for s in range(0, q.shape[0], batch_size):
        Q = torch.from_numpy(q[s:s + batch_size]).to(device)
        sim = Q @ P.T
        val, idx = torch.sort(sim, dim=1, descending=True, stable=True)
        scores.append(val[:, :k].cpu().numpy())
        indices.append(idx[:, :k].cpu().numpy())
    return np.concatenate(scores).astype(np.float32), np.concatenate(indices).astype(np.int64)


_SAID_NO_FAISS = False      # the torch fallback is logged once per process


def _faiss():
    try:
        import faiss
        return faiss
    except ImportError:
        return None


def search_faiss(query_emb, passage_emb, topk: int, use_gpu=None, batch_size: int = 1024):
    faiss = _faiss()
    if faiss is None:
        raise ImportError("search backend faiss: faiss is not installed (pip install faiss-cpu or "
                          "faiss-gpu-cu12), or use backend auto/torch: exact search without it")
    q, p, k = _check(query_emb, passage_emb, topk)
    index = faiss.IndexFlatIP(p.shape[1])
    if use_gpu is None:
        use_gpu = hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0 and torch.cuda.is_available()
    if use_gpu:
        co = faiss.GpuMultipleClonerOptions()
        co.shard = True
        index = faiss.index_cpu_to_all_gpus(index, co=co)
    index.add(p)
    k_extra = min(p.shape[0], k + 8)
    scores, indices = [], []
    for s in range(0, q.shape[0], batch_size):
        D, I = index.search(q[s:s + batch_size], k_extra)
        order = np.lexsort((I, -D), axis=1)          # by -score, then index
        D = np.take_along_axis(D, order, 1)
        I = np.take_along_axis(I, order, 1)
        # a tie straddling what faiss returned: redo those rows exactly
        unsure = np.nonzero((D[:, k - 1] == D[:, -1]) & (k_extra < p.shape[0]))[0]
        if len(unsure):
            ds, is_ = search_torch(q[s:s + batch_size][unsure], p, k, device="cpu")
            D[unsure, :k], I[unsure, :k] = ds, is_
        scores.append(D[:, :k])
        indices.append(I[:, :k])
    return np.concatenate(scores).astype(np.float32), np.concatenate(indices).astype(np.int64)


def search(query_emb, passage_emb, topk: int, backend: str = "auto", use_gpu=None):
    """Top-``topk`` passages by inner product -> ``(scores, indices)``, both ``[n_queries, k]``
    with ``k = min(topk, n_passages)``, best first, ties by lower index.

    ``backend``: ``auto`` (faiss when installed, else torch), ``faiss`` or ``torch``.
    ``use_gpu`` (faiss): None = a GPU index when faiss has GPU support and CUDA is there.
    """
    if backend not in ("auto", "faiss", "torch"):
        raise ValueError(f"search backend {backend!r}: choose auto, faiss or torch")
    if backend == "auto" and _faiss() is None:
        global _SAID_NO_FAISS
        if not _SAID_NO_FAISS:
            log.info("faiss is not installed: exact torch search (same rankings; fast enough for a corpus "
                     "of a few thousand passages)")
            _SAID_NO_FAISS = True
        return search_torch(query_emb, passage_emb, topk)
    if backend == "torch":
        return search_torch(query_emb, passage_emb, topk)
    return search_faiss(query_emb, passage_emb, topk, use_gpu=use_gpu)
