"""The one embedding forward, of training and of inference: padded token ids -> pooled embeddings.

The pooling itself is :mod:`helpers.embed.pooling`; the variant that runs a batch's common prefix
once is :mod:`helpers.embed.prefix` (called from here, the same hidden states).
"""
from __future__ import annotations

from typing import Optional

import torch

from helpers.embed.pooling import pool
from helpers.embed.prefix import PrefixSharing


def no_cache(model) -> dict:
    """``{"use_cache": False}`` for a model that keeps a key/value cache (its config has
    ``use_cache``): an embedding forward never reuses it, and a 7B model's cache for a batch of
    32 x 512 tokens is 2 GiB. Models without the flag get nothing (their forward may not take it)."""
    return {"use_cache": False} if hasattr(getattr(model, "config", None), "use_cache") else {}


def pooled_embeddings(model, ids: torch.Tensor, mask: torch.Tensor, pooling: str,
                      normalize: bool = True, prefix: Optional[PrefixSharing] = None) -> torch.Tensor:
    """The one embedding forward, of training and of inference: padded ids and mask [B, T] ->
    pooled fp32 embeddings [B, H], L2-normalised unless ``normalize`` is False. No KV cache, except
    that ``prefix`` (last-token pooling, right padding) may run the rows' common prefix once
    (:mod:`helpers.embed.prefix`: the same hidden states)."""
    emb = prefix.last_hidden(model, ids, mask) if prefix is not None and pooling == "last_token" else None
    if emb is None:
        out = model(input_ids=ids, attention_mask=mask, return_dict=True, **no_cache(model))
        hidden = getattr(out, "last_hidden_state", None)
        if hidden is None:
            raise ValueError("the model returned no last_hidden_state: give the base model "
                             "(AutoModel), not one with a language-model head")
        emb = pool(hidden, mask, pooling)
    emb = emb.float()
    return torch.nn.functional.normalize(emb, dim=-1) if normalize else emb
