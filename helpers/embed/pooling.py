"""Pooling of token hidden states into one vector per text: last_token, mean, cls."""
from __future__ import annotations

import torch

from helpers.common.tensors import last_real_index


def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hidden state of the last real token, for left or right padding (or none)."""
    if hidden.dim() != 3 or mask.shape != hidden.shape[:2]:
        raise ValueError(f"last_token_pool: hidden {tuple(hidden.shape)} and mask "
                         f"{tuple(mask.shape)} do not match (expected [B, T, H] and [B, T])")
    if bool((mask.long().sum(dim=1) == 0).any()):
        raise ValueError("last_token_pool: a row has no real token")
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last_real_index(mask.long())]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


def cls_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return hidden[:, 0]


POOLERS = {"last_token": last_token_pool, "mean": mean_pool, "cls": cls_pool}


def pool(hidden: torch.Tensor, mask: torch.Tensor, method: str) -> torch.Tensor:
    if method not in POOLERS:
        raise ValueError(f"pooling_method {method!r} unknown; choose one of {sorted(POOLERS)}")
    return POOLERS[method](hidden, mask)
