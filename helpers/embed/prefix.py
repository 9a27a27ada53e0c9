"""Shared-prefix forward of a causal decoder: the tokens every row of a batch starts with run once.

Decoder-only-icl queries all begin with the same instruction ("<instruct>Given a multiple choice
math question ...\\n<query>Question:", 45 SmolLM2 tokens of a demo query's ~116). Under causal
attention those tokens' hidden states and keys/values do not depend on what follows, so they can
be computed for one row and shared: the prefix runs once (batch 1, with a key/value cache), the
cache is expanded to the batch, and only the rest of each row runs (positions continue from the
prefix, right padding). Last-token pooling then reads the same hidden state as the plain forward.
It is the same computation, under autograd too (the expanded keys/values send their gradients back
to the one prefix), except for training-time dropout: the prefix's LoRA dropout mask is drawn once
for the batch instead of once per row.

:class:`PrefixSharing` decides, once per model, by comparing the two forwards on a small probe of
the first batch that has a shared prefix (eval mode, no gradient); a model whose cache or mask
handling differs (an encoder, an older transformers, a sliding window) falls back to the plain
forward, with one warning. Not used under gradient checkpointing (no cache there).
"""
from __future__ import annotations

import inspect
import logging
from typing import Optional

import torch

from helpers.common.tensors import last_real_index

log = logging.getLogger(__name__)


def common_prefix_len(ids: torch.Tensor, mask: torch.Tensor) -> int:
    """Tokens every row starts with (real tokens, same ids), leaving each row one token after them."""
    limit = int(mask.long().sum(dim=1).min()) - 1
    if ids.shape[0] < 2 or limit <= 0:
        return 0
    same = (ids[:, :limit] == ids[:1, :limit]).all(dim=0) & mask[:, :limit].bool().all(dim=0)
    bad = (~same).nonzero()
    return int(bad[0]) if len(bad) else limit


def sliding_window(config) -> Optional[int]:
    """The attention window of a model config, when any of its layers slides (else None)."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    types = getattr(cfg, "layer_types", None) or []
    sliding = any("sliding" in t for t in types) or getattr(cfg, "use_sliding_window", False)
    return getattr(cfg, "sliding_window", None) if sliding or not types else None


def cache_kwarg(model) -> str:
    """The forward's name for the key/value cache: ``cache`` (transformers 5) or ``past_key_values``."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


def shared_prefix_last_hidden(model, ids: torch.Tensor, mask: torch.Tensor, p: int) -> torch.Tensor:
    """Last real token's hidden state [B, H] of right-padded ``ids``/``mask`` [B, T] whose rows all
    start with the same ``p`` real tokens: the prefix runs once, the rest against its cache."""
    from transformers import DynamicCache
    b, t = ids.shape
    name = cache_kwarg(model)
    cache = DynamicCache(config=model.config)
    model(input_ids=ids[:1, :p], attention_mask=mask[:1, :p], use_cache=True, **{name: cache})
    kv = [(layer.keys.expand(b, -1, -1, -1), layer.values.expand(b, -1, -1, -1)) for layer in cache.layers]
    rest = DynamicCache(ddp_cache_data=kv, config=model.config)
    pos = torch.arange(p, t, device=ids.device).unsqueeze(0).expand(b, -1)
    out = model(input_ids=ids[:, p:], attention_mask=mask, position_ids=pos, use_cache=True, **{name: rest})
    hidden = out.last_hidden_state
    return hidden[torch.arange(b, device=ids.device), last_real_index(mask[:, p:].long())]


class PrefixSharing:
    """Whether, and for which batches, a model's embedding forward shares the rows' common prefix.

    ``min_prefix``: shorter common prefixes run plainly (the extra forward costs more than it
    saves). :meth:`last_hidden` returns None where the plain forward is to be used."""

    def __init__(self, enabled: bool = True, min_prefix: int = 16, probe_rows: int = 2):
        self.enabled, self.min_prefix, self.probe_rows = enabled, min_prefix, probe_rows
        self.verdict: Optional[bool] = None      # None: not checked yet

    def prefix_len(self, model, ids: torch.Tensor, mask: torch.Tensor) -> int:
        if not self.enabled or self.verdict is False or ids.shape[0] < 2:
            return 0
        if any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules()):
            return 0
        p = common_prefix_len(ids, mask)
        window = sliding_window(model.config)
        if p < self.min_prefix or (window is not None and ids.shape[1] > window - 1):
            return 0
        return p

    def last_hidden(self, model, ids: torch.Tensor, mask: torch.Tensor) -> Optional[torch.Tensor]:
        p = self.prefix_len(model, ids, mask)
        if p == 0 or (self.verdict is None and not self._check(model, ids, mask, p)):
            return None
        return shared_prefix_last_hidden(model, ids, mask, p)

    def _check(self, model, ids, mask, p) -> bool:
        """Shared vs plain forward on the first ``probe_rows`` rows; False switches sharing off."""
        k = self.probe_rows
        cols = int(mask[:k].long().sum(dim=1).max())
        pi, pm = ids[:k, :cols], mask[:k, :cols]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model(input_ids=pi, attention_mask=pm, use_cache=False)
                ref = out.last_hidden_state[torch.arange(k, device=ids.device), last_real_index(pm.long())].float()
                got = shared_prefix_last_hidden(model, pi, pm, p).float()
            diff = float((ref - got).abs().max() / ref.abs().max().clamp(min=1e-6))
            tol = 1e-3 if next(model.parameters()).dtype == torch.float32 else 3e-2
            ok, why = diff <= tol, f"differs from the plain forward by {diff:.1e} (relative)"
        except Exception as e:      # a model whose forward takes no cache, or builds it otherwise
            ok, why = False, f"raised {type(e).__name__}: {e}"
        finally:
            model.train(was_training)
        self.verdict = ok
        if ok:
            log.info("shared-prefix forward on (%d common tokens in the first batch; %s)", p, why)
        else:
            log.warning("shared-prefix forward %s: switched off, plain forward", why)
        return ok
