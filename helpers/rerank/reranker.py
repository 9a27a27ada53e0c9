"""Teacher rerankers with FlagEmbedding's semantics: an LLM scored by its "Yes" logit
(``decoder-only-base``, like bge-reranker-v2-gemma) and a cross-encoder with a classification
head (``encoder-only-base``, like bge-reranker-v2-m3).

The decoder has one plain path (FlagEmbedding's: full-vocabulary logits, batches in input order,
left padding to a multiple of 8) and three fast paths, each equal to it within float error:
``yes_only`` projects only the last real hidden state onto the "Yes" row of the output layer
(after final-logit soft-capping when the config has it), ``sort_by_length`` batches similar
lengths together, ``share_prefix`` runs each query's ``[bos] + q`` once and reuses its key/value
cache for all of its passages. A fast path that fails a self-check against the plain path on a
small probe (a model whose cache or head behaves differently) is switched off with a warning.
"""
from __future__ import annotations

import copy
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from helpers.common.devices import dtype_for, parse_devices
from helpers.common.tensors import last_real_index
from helpers.rerank.inputs import format_text
from helpers.rerank.scorers import (MODEL_CLASSES, CrossEncoderScorer, PairModel, auto_class, check_adapter,
                                    cross_encoder_inputs, load_pair_model)
from helpers.rerank.scorers import load_model as _load_model

log = logging.getLogger(__name__)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


class BaseReranker:
    """Shared: instruction formatting, grouping pairs by query, devices, normalisation.

    The model, tokenizer and pair layout come from :func:`helpers.rerank.scorers.load_pair_model`,
    or, with ``loaded``, from a :class:`~helpers.rerank.scorers.PairModel` already in memory (the
    teacher trainer scores its eval groups with a model in training this way)."""

    kind = "decoder-only-base"

    def __init__(self, model_name_or_path, use_fp16=True, query_instruction_for_rerank="A: ",
                 query_instruction_format="{}{}", passage_instruction_for_rerank="B: ",
                 passage_instruction_format="{}{}", max_length=512, query_max_length=None,
                 batch_size=16, devices=None, normalize=False, trust_remote_code=False,
                 peft_adapter=None, show_progress=True, prompt=None, padding_side=None,
                 loaded: Optional[PairModel] = None):
        from helpers.common.models import resolve_model
        if loaded is None:
            check_adapter(peft_adapter)          # before a GGUF base is converted
        self.path = loaded.path if loaded is not None else resolve_model(model_name_or_path)
        self.q_inst, self.q_fmt = query_instruction_for_rerank, query_instruction_format
        self.p_inst, self.p_fmt = passage_instruction_for_rerank, passage_instruction_format
        self.max_length, self.query_max_length = int(max_length), query_max_length
        if int(batch_size) < 1:
            raise ValueError(f"reranker_batch_size must be at least 1, got {batch_size}")
        self.batch_size, self.normalize = int(batch_size), bool(normalize)
        self.devices = parse_devices(devices)
        self.dtype = dtype_for(self.devices[0], use_fp16)
        self.show_progress = show_progress
        if loaded is None:
            loaded = load_pair_model(self.path, self.kind, max_length=self.max_length,
                                     query_max_length=query_max_length, prompt=prompt, padding_side=padding_side,
                                     device=self.devices[0], dtype=self.dtype, trust_remote_code=trust_remote_code,
                                     peft_adapter=peft_adapter)
        self.parts = loaded
        self.tokenizer, self.model, self.layout, self.pad_id = loaded.tokenizer, loaded.model, loaded.layout, loaded.pad_id
        self._load = (auto_class(loaded.kind), self.path, self.dtype, trust_remote_code, peft_adapter)
        self._replicas = None

    def replicas(self):
        """One model per device: the first as loaded; further CUDA devices load their own copy from
        the file straight onto the GPU (no copy through the first GPU or the host); CPU ones are copies."""
        if self._replicas is None:
            self._replicas = [(d, self.model.to(d) if i == 0 else _load_model(*self._load, device=d)
                               if d.startswith("cuda") else copy.deepcopy(self.model).to(d))
                              for i, d in enumerate(self.devices)]
        return self._replicas

    def score_groups(self, queries: Sequence[str], passages: Sequence[Sequence[str]]) -> list[list[float]]:
        """Scores of ``passages[i]`` against ``queries[i]``, raw (or sigmoid with ``normalize``)."""
        if len(queries) != len(passages):
            raise ValueError(f"{len(queries)} queries for {len(passages)} passage lists")
        qs = [format_text(self.q_inst, self.q_fmt, q) for q in queries]
        ps = [[format_text(self.p_inst, self.p_fmt, p) for p in group] for group in passages]
        reps = self.replicas()
        self._prepare(reps[0])        # once, before any worker starts: the workers only read settings
        if len(reps) == 1 or len(qs) < 2:
            out = self._score_on(reps[0], qs, ps)
        else:   # one worker per device, each on a contiguous block of queries
            k = len(reps)
            bounds = [round(i * len(qs) / k) for i in range(k + 1)]
            with ThreadPoolExecutor(k) as ex:
                parts = list(ex.map(lambda i: self._score_on(reps[i], qs[bounds[i]:bounds[i + 1]],
                                                             ps[bounds[i]:bounds[i + 1]]), range(k)))
            out = [g for part in parts for g in part]
        if self.normalize:
            out = [[sigmoid(s) for s in g] for g in out]
        return out

    def _prepare(self, rep) -> None:
        """Anything to settle on the first device before scoring starts (nothing here)."""

    def compute_score(self, pairs) -> list[float]:
        """FlagEmbedding's ``compute_score``: a list of (query, passage) pairs -> one score each."""
        if pairs and isinstance(pairs[0], str):
            pairs = [pairs]
        order, groups, index = [], [], {}
        for q, p in pairs:
            if q not in index:
                index[q] = len(groups)
                groups.append((q, []))
            order.append((index[q], len(groups[index[q]][1])))
            groups[index[q]][1].append(p)
        scores = self.score_groups([g[0] for g in groups], [g[1] for g in groups])
        return [scores[g][j] for g, j in order]


class LLMReranker(BaseReranker):
    """``decoder-only-base``: score = logit of the first token of "Yes" at the last real position."""

    def __init__(self, model_name_or_path, yes_only=True, sort_by_length=True, share_prefix=True,
                 check_fast_paths=True, **kw):
        super().__init__(model_name_or_path, **kw)
        self.yes_id, self.padding_side = self.parts.yes_id, self.parts.side
        self.fast = dict(yes_only=bool(yes_only), sort_by_length=bool(sort_by_length),
                         share_prefix=bool(share_prefix))
        self._checked = not check_fast_paths

    def _path(self, model, device, opts=None, batch_size=None):
        opts = self.fast if opts is None else opts
        return self.parts.scorer(model, device, self.batch_size if batch_size is None else batch_size,
                                 share_prefix=opts["share_prefix"], yes_only=opts["yes_only"],
                                 sort_by_length=opts["sort_by_length"])

    def _prepare(self, rep) -> None:
        """The fast paths' self-check, once per reranker, on the first device before the device
        workers start (run inside them, it changed settings another worker was reading)."""
        if not self._checked:
            self._self_check(rep)

    def _self_check(self, rep):
        """Compare each fast path with the plain path on a small probe; switch off what differs.
        Nothing shared changes until the end: the probe's batch size is passed, and the checked
        flags replace :attr:`fast` in one assignment."""
        self._checked = True
        if not (self.fast["yes_only"] or self.fast["share_prefix"]):
            return
        qs = ["A: probe query about fractions and their sum", "A: short probe",
              "A: " + "a much longer probe query that repeats itself " * 3]
        ps = [["B: adds numerators", "B: no"], ["B: a passage of several words here", "B: x", "B: y"],
              ["B: divides by the wrong number"]]
        pre, suf = self.layout.encode(qs, ps)
        probe_batch = 3                                  # several queries and lengths per batch
        plain = dict(yes_only=False, sort_by_length=False, share_prefix=False)
        ref = self._path(rep[1], rep[0], plain, probe_batch).run(pre, suf, progress=False)
        tol = 1e-3 if self.dtype == torch.float32 else 5e-2
        tol *= max(1.0, max(abs(x) for g in ref for x in g))
        fast = dict(self.fast)
        trial = dict(fast, share_prefix=False)
        for name in ("yes_only", "share_prefix"):
            trial[name] = fast[name]
            if not trial[name]:
                continue
            try:
                got = self._path(rep[1], rep[0], trial, probe_batch).run(pre, suf, progress=False)
                diff = max(abs(a - b) for ga, gb in zip(ref, got) for a, b in zip(ga, gb))
                ok, why = diff <= tol, f"differs from the plain path by {diff:.2e}"
            except Exception as e:  # a model whose cache or head does not fit the fast path
                ok, why = False, f"raised {type(e).__name__}: {e}"
            if not ok:
                log.warning("fast path %s %s for this model: switched off, falling back", name, why)
                trial[name] = fast[name] = False
        self.fast = fast
        log.info("fast paths after the self-check: %s", self.fast)

    def _score_on(self, rep, qs, ps):
        pre, suf = self.layout.encode(qs, ps)
        return self._path(rep[1], rep[0]).run(pre, suf, progress=self.show_progress)


class CrossEncoderReranker(BaseReranker):
    """``encoder-only-base``: score = the single logit of a sequence-classification head."""

    kind = "encoder-only-base"

    def __init__(self, model_name_or_path, sort_by_length=True, **kw):
        kw.setdefault("query_instruction_for_rerank", None)
        kw.setdefault("passage_instruction_for_rerank", None)
        super().__init__(model_name_or_path, **kw)
        self.sort_by_length = sort_by_length

    @torch.no_grad()
    def _score_on(self, rep, qs, ps):
        device, model = rep
        return cross_encoder_scores(model, self.tokenizer, self.layout, qs, ps, device, self.batch_size,
                                    self.sort_by_length, self.show_progress)


def cross_encoder_scores(model, tokenizer, layout, qs, ps, device, batch_size, sort_by_length=True,
                         show_progress=True) -> list[list[float]]:
    """The single logit of a sequence-classification head (:class:`~helpers.rerank.scorers.CrossEncoderScorer`)
    for every (query, passage) of each group."""
    score = CrossEncoderScorer(model, tokenizer, tokenizer.pad_token_id or 0)
    groups = layout.pairs(qs, ps)
    flat = [(g, j, item) for g, items in enumerate(groups) for j, item in enumerate(items)]
    if sort_by_length:
        flat.sort(key=lambda x: -len(x[2][0]))
    out = [[0.0] * len(items) for items in groups]
    starts = range(0, len(flat), batch_size)
    for s in tqdm(starts, desc="rerank", disable=not show_progress or len(starts) < 2):
        chunk = flat[s:s + batch_size]
        for (g, j, _), v in zip(chunk, score(**score.inputs([c[2] for c in chunk], device)).cpu().tolist()):
            out[g][j] = v
    return out


def load_reranker(reranker_name_or_path, reranker_model_class="decoder-only-base", **kw):
    """Build the reranker of ``reranker_model_class`` (FlagEmbedding's class names); ``loaded``
    (a :class:`~helpers.rerank.scorers.PairModel`): around that model instead of loading one."""
    if reranker_model_class == "decoder-only-base":
        return LLMReranker(reranker_name_or_path, **kw)
    if reranker_model_class == "encoder-only-base":
        for k in ("yes_only", "share_prefix", "check_fast_paths"):
            kw.pop(k, None)
        return CrossEncoderReranker(reranker_name_or_path, **kw)
    raise ValueError(f"reranker_model_class {reranker_model_class!r} is not supported; "
                     f"choose one of {', '.join(MODEL_CLASSES)}")


__all__ = ["LLMReranker", "CrossEncoderReranker", "load_reranker", "sigmoid", "last_real_index",
           "cross_encoder_inputs", "cross_encoder_scores"]
