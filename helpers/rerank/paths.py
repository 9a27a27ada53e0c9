"""How a decoder reranker turns (prefix, suffix) ids into "Yes" logits: the scorer, the plain path and
the shared-prefix path. Both paths return scores grouped like their input: ``out[g][j]`` is passage
``j`` of query ``g``.

- :class:`YesScorer`: the scorer of a decoder reranker (the common interface of
  :mod:`helpers.rerank.scorers`): ``scorer(input_ids, attention_mask) -> [N]`` "Yes" logits of a
  padded batch of pairs, ``scorer.inputs(pairs)`` pads ``prefix + suffix`` id lists as it expects
  (the tokenizer's pad id and side, to a multiple of 8). The teacher trainer scores its training
  batches with it; the two paths below are built on it.

- :class:`PlainPath`: each pair is ``prefix + suffix``; batches of ``batch_size`` in input order
  (or longest first with ``sort_by_length``), padded to a multiple of 8 like FlagEmbedding's
  collator. Score from the full-vocabulary logits (FlagEmbedding's way) or, with ``yes_only``,
  from the last real hidden state times the "Yes" row of the output layer.
- :class:`PrefixPath`: queries are packed into groups of at most ``batch_size`` pairs; each
  group's prefixes run once (one row per query) into a key/value cache; each batch of passages
  then runs only its suffix tokens against a copy of that cache, rows picked by query. The layout
  is ``pad | prefix | pad | suffix | pad`` with an explicit 2-D mask and positions counted over
  real tokens only, so left and right padding both work. Where a sliding-window layer could see
  a different window than in the plain path (padded length beyond the window), the group is
  scored by the plain path instead.
"""
from __future__ import annotations

import logging

import torch
from tqdm.auto import tqdm

from helpers.common.tensors import last_real_index, pad
from helpers.embed.prefix import sliding_window

log = logging.getLogger(__name__)


class YesScorer:
    """The "Yes" logit at the last real token of each pair (``model``: a causal LM, or a peft
    model around one: its base, LoRA layers in place, is used)."""

    def __init__(self, model, device, yes_id, pad_id, side, batch_size=1, yes_only=True,
                 sort_by_length=True):
        if hasattr(model, "get_base_model"):          # a peft model: the LM with its adapters in place
            model = model.get_base_model()
        self.model, self.device, self.yes_id = model, device, int(yes_id)
        self.pad_id, self.side, self.batch_size = pad_id, side, int(batch_size)
        self.yes_only, self.sort = yes_only, sort_by_length
        self.base = getattr(model, model.base_model_prefix)
        head = model.get_output_embeddings()
        self.w = head.weight[self.yes_id]
        self.b = head.bias[self.yes_id] if getattr(head, "bias", None) is not None else None
        self.cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)

    def yes_from_hidden(self, h: torch.Tensor) -> torch.Tensor:
        """[B, H] last hidden states -> [B] "Yes" logits, as the model's own head computes them."""
        s = h @ self.w
        if self.b is not None:
            s = s + self.b
        if self.cap is not None:
            s = torch.tanh(s / self.cap) * self.cap
        return s.float()

    def inputs(self, pairs, device="cpu") -> dict:
        """Pairs (``prefix + suffix`` id lists) padded into one batch as :meth:`score_full` expects."""
        ids, mask = pad([list(p) for p in pairs], self.pad_id, self.side, multiple_of=8)
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}

    def __call__(self, input_ids, attention_mask) -> torch.Tensor:
        """The common scorer interface: a padded batch of pairs -> ``[N]`` float scores."""
        return self.score_full(input_ids, attention_mask)

    def score_full(self, ids, mask) -> torch.Tensor:
        """Pairs padded into [B, L]: "Yes" logit at the last real position."""
        ids, mask = ids.to(self.device), mask.to(self.device)
        rows = torch.arange(ids.shape[0], device=self.device)
        last = last_real_index(mask)
        if self.yes_only:       # no key/value cache: nothing reuses it (the prefix path keeps its own)
            h = self.base(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            return self.yes_from_hidden(h[rows, last])
        logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        return logits[rows, last, self.yes_id].float()


class PlainPath(YesScorer):
    @torch.no_grad()
    def run(self, prefixes, suffixes, progress=True):
        items = [(g, j, list(prefixes[g]) + list(s)) for g, ss in enumerate(suffixes)
                 for j, s in enumerate(ss)]
        if self.sort:
            items.sort(key=lambda x: -len(x[2]))
        out = [[0.0] * len(ss) for ss in suffixes]
        starts = range(0, len(items), self.batch_size)
        for s in tqdm(starts, desc="rerank", disable=not progress or len(starts) < 2):
            chunk = items[s:s + self.batch_size]
            for (g, j, _), v in zip(chunk, self(**self.inputs([c[2] for c in chunk])).cpu().tolist()):
                out[g][j] = v
        return out


class PrefixPath(YesScorer):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.window = sliding_window(self.model.config)

    def _groups(self, prefixes, suffixes):
        order = [g for g in range(len(prefixes)) if len(suffixes[g])]
        if self.sort:
            order.sort(key=lambda g: -len(prefixes[g]))
        groups, cur, n = [], [], 0
        for g in order:
            if cur and n + len(suffixes[g]) > self.batch_size:
                groups.append(cur)
                cur, n = [], 0
            cur.append(g)
            n += len(suffixes[g])
        return groups + ([cur] if cur else [])

    @torch.no_grad()
    def run(self, prefixes, suffixes, progress=True):
        from transformers import DynamicCache
        out = [[0.0] * len(ss) for ss in suffixes]
        groups = self._groups(prefixes, suffixes)
        for group in tqdm(groups, desc="rerank", disable=not progress or len(groups) < 2):
            p_ids, p_mask = pad([prefixes[g] for g in group], self.pad_id, self.side)
            rows = [(k, j, s) for k, g in enumerate(group) for j, s in enumerate(suffixes[g])]
            if self.sort:
                rows.sort(key=lambda r: -len(r[2]))
            longest = max(len(r[2]) for r in rows)
            if self.window is not None and p_ids.shape[1] + longest > self.window - 1:
                log.debug("group beyond the sliding window (%d): plain path", self.window)
                sub = PlainPath(self.model, self.device, self.yes_id, self.pad_id, self.side,
                                self.batch_size, self.yes_only, self.sort)
                part = sub.run([prefixes[g] for g in group], [suffixes[g] for g in group], False)
                for k, g in enumerate(group):
                    out[g] = part[k]
                continue
            p_ids, p_mask = p_ids.to(self.device), p_mask.to(self.device)
            p_pos = (p_mask.cumsum(1) - 1).clamp(min=0)
            cache = DynamicCache(config=self.model.config)
            self.base(input_ids=p_ids, attention_mask=p_mask, position_ids=p_pos, cache=cache,
                      use_cache=True)
            kv = [(layer.keys, layer.values) for layer in cache.layers]
            p_len = p_mask.sum(1)
            for s in range(0, len(rows), self.batch_size):
                chunk = rows[s:s + self.batch_size]
                idx = torch.tensor([r[0] for r in chunk], device=self.device)
                s_ids, s_mask = pad([r[2] for r in chunk], self.pad_id, self.side)
                s_ids, s_mask = s_ids.to(self.device), s_mask.to(self.device)
                sub_cache = DynamicCache(ddp_cache_data=[(k[idx], v[idx]) for k, v in kv],
                                         config=self.model.config)
                pos = (p_len[idx, None] + s_mask.cumsum(1) - 1).clamp(min=0)
                h = self.base(input_ids=s_ids, attention_mask=torch.cat([p_mask[idx], s_mask], 1),
                              position_ids=pos, cache=sub_cache, use_cache=True).last_hidden_state
                h = h[torch.arange(len(chunk), device=self.device), last_real_index(s_mask)]
                if self.yes_only:
                    scores = self.yes_from_hidden(h)
                else:
                    logits = self.model.get_output_embeddings()(h)
                    if self.cap is not None:
                        logits = torch.tanh(logits / self.cap) * self.cap
                    scores = logits[:, self.yes_id].float()
                for (k, j, _), v in zip(chunk, scores.cpu().tolist()):
                    out[group[k]][j] = v
        return out
