"""Padding and the last real position: the one implementation every stage uses (embedding,
training batches, reranker scoring)."""
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
