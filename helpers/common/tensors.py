"""Padding, the last real position and length-sorted chunks of a padded batch: the one
implementation every stage uses (embedding, training batches, reranker scoring and training)."""
from __future__ import annotations

from typing import Sequence

import torch


def pad(seqs: Sequence[Sequence[int]], pad_id: int, side: str = "left", multiple_of=None):
    """Pad id lists into (ids [B, L], mask [B, L]) tensors on the CPU."""
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
    n = max(len(s) for s in seqs)
    if multiple_of:
        n = (n + multiple_of - 1) // multiple_of * multiple_of
    ids = torch.full((len(seqs), n), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        if not len(s):
            continue
        sl = slice(n - len(s), n) if side == "left" else slice(0, len(s))
        ids[i, sl] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def last_real_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row of a [B, L] mask (left or right padding, or both)."""
    n = mask.shape[1]
    return (n - 1 - torch.flip(mask, dims=[1]).argmax(dim=1)).long()


def length_chunks(lengths: list[int], overhead: int = 256) -> list[list[int]]:
    """Rows of a batch in chunks of similar length -> lists of row indices (longest first).

    Minimises the padded tokens (rows x longest, summed over chunks) plus ``overhead`` token
    equivalents per extra forward (exact dynamic programme over the length-sorted rows)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    L = [lengths[i] for i in order]
    n = len(L)
    best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for j in range(1, n + 1):             # best[j]: rows order[:j]; chunk order[i:j] pads to L[i]
        for i in range(j):
            c = best[i] + (j - i) * L[i] + (overhead if i else 0)
            if c < best[j]:
                best[j], cut[j] = c, i
    chunks, j = [], n
    while j > 0:
        chunks.append(order[cut[j]:j])
        j = cut[j]
    return chunks[::-1]


def chunk_overhead(device) -> int:
    """A forward's fixed cost in padded-token equivalents (:func:`length_chunks`): small on CPU,
    large on a GPU, where a small matmul wastes the chip."""
    return 256 if str(device) == "cpu" else 4096


def in_length_chunks(fn, inputs: dict, overhead: int = 256) -> torch.Tensor:
    """``fn(**inputs)`` for a padded batch, run as :func:`length_chunks` of its rows.

    ``inputs``: ``[B, L]`` tensors with an ``attention_mask`` (left or right padding); each chunk
    gets its rows cut to the columns any of them uses. ``fn`` returns one row per input row
    (``[b, ...]``); the rows come back in the batch's order. For a model whose rows do not see
    each other (attention masked, no batch statistics) the result is the unchunked one, up to
    float error, and so is its gradient."""
    mask = inputs["attention_mask"]
    if mask.dim() != 2:
        raise ValueError(f"in_length_chunks: attention_mask of shape {tuple(mask.shape)}, expected [B, L]")
    chunks = length_chunks(mask.sum(dim=1).tolist(), overhead) if mask.shape[0] > 1 else [[0]]
    if len(chunks) == 1:
        return fn(**inputs)
    parts, rows = [], []
    for idx in chunks:
        sel = torch.tensor(idx, device=mask.device)
        m = mask.index_select(0, sel)
        cols = m.any(dim=0).nonzero().flatten()
        lo, hi = (int(cols[0]), int(cols[-1]) + 1) if len(cols) else (0, 1)
        parts.append(fn(**{k: v.index_select(0, sel)[:, lo:hi] for k, v in inputs.items()}))
        rows.extend(idx)
    out = torch.cat(parts)
    inv = torch.empty(len(rows), dtype=torch.long, device=out.device)
    inv[torch.tensor(rows, device=out.device)] = torch.arange(len(rows), device=out.device)
    return out.index_select(0, inv)
