"""Token layout of FlagEmbedding's rerankers, rebuilt from token ids (no ``prepare_for_model``).

Decoder-only ("Yes"-logit) layout, as FlagEmbedding 1.4.2 ``BaseLLMReranker`` builds it:

- ``q`` = tokenizer(formatted query, no special tokens, truncated to ``query_max_length``);
  ``p`` = tokenizer(formatted passage, no special tokens, truncated to ``max_length``);
  ``sep`` = ids of ``"\\n"``; ``prompt`` = ids of the prompt.
- first part = ``[bos] + q`` (bos only when the tokenizer has one that differs from pad);
  second part = ``sep + p``, cut (from the tokenizer's truncation side, normally the end) so that
  both parts hold at most ``max_length + len(sep) + len(prompt)`` ids; then ``sep + prompt`` is
  appended. We return it as (prefix, suffix) = (first part, cut second part + sep + prompt): the
  prefix depends on the query only, which is what lets a query's key/value cache be shared.

Encoder-only (cross-encoder) layout: the tokenizer's own pair template (e.g. ``[CLS] q [SEP] p
[SEP]``), ``q`` and ``p`` truncated as above, then ``p`` cut so the whole holds ``max_length``.

Both layouts have ``pairs(queries, passages)``: per query, each of its pairs as the scorer of its
class (:mod:`helpers.rerank.scorers`) takes it in ``scorer.inputs``: a decoder pair is the id list
``prefix + suffix``, an encoder pair ``(ids, token_type_ids)``.
"""
from __future__ import annotations

from typing import Sequence


DEFAULT_PROMPT = ("Given a query A and a passage B, determine whether the passage contains an answer "
                  "to the query by providing a prediction of either 'Yes' or 'No'.")
SEP = "\n"


def format_text(instruction, fmt: str, text: str) -> str:
    """``fmt.format(instruction, text)``; the text unchanged when ``instruction`` is None."""
    return text if instruction is None else fmt.format(instruction, text)


def _ids(tokenizer, texts, max_length=None) -> list[list[int]]:
    kw = dict(truncation=True, max_length=max_length) if max_length is not None else {}
    return tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False, **kw)["input_ids"]


def cut_second(first: Sequence[int], second: Sequence[int], limit: int, side: str = "right") -> list[int]:
    """Truncate ``second`` only, so that ``len(first) + len(second) <= limit`` (transformers'
    ``only_second``; when ``second`` is shorter than the excess it becomes empty)."""
    n = len(first) + len(second) - limit
    second = list(second)
    if n <= 0:
        return second
    return second[:-n] if side == "right" else second[n:]


def decoder_bos(tokenizer):
    bos = tokenizer.bos_token_id
    return bos if bos is not None and bos != tokenizer.pad_token_id else None


class DecoderLayout:
    """Turns (formatted query, formatted passage) texts into (prefix, suffix) id lists."""

    def __init__(self, tokenizer, max_length: int, query_max_length=None, prompt=None):
        self.tok = tokenizer
        self.max_length = int(max_length)
        self.query_max_length = int(query_max_length) if query_max_length else self.max_length * 3 // 4
        self.prompt = DEFAULT_PROMPT if prompt is None else prompt
        self.sep_ids = _ids(tokenizer, [SEP])[0]
        self.prompt_ids = _ids(tokenizer, [self.prompt])[0]
        self.bos = decoder_bos(tokenizer)
        self.limit = self.max_length + len(self.sep_ids) + len(self.prompt_ids)
        self.side = getattr(tokenizer, "truncation_side", "right")

    def prefixes(self, queries: Sequence[str]) -> list[list[int]]:
        head = [self.bos] if self.bos is not None else []
        return [head + q for q in _ids(self.tok, queries, self.query_max_length)]

    def suffix(self, prefix: Sequence[int], passage_ids: Sequence[int]) -> list[int]:
        second = cut_second(prefix, self.sep_ids + list(passage_ids), self.limit, self.side)
        return second + self.sep_ids + self.prompt_ids

    def encode(self, queries: Sequence[str], passages: Sequence[Sequence[str]]):
        """Per query its prefix, and per query the list of its passages' suffixes."""
        prefixes = self.prefixes(queries)
        suffixes = []
        for pre, ps in zip(prefixes, passages):
            p_ids = _ids(self.tok, ps, self.max_length) if len(ps) else []
            suffixes.append([self.suffix(pre, p) for p in p_ids])
        return prefixes, suffixes

    def pairs(self, queries: Sequence[str], passages: Sequence[Sequence[str]]) -> list[list[list[int]]]:
        """Per query, the id list ``prefix + suffix`` of each of its passages (the plain path's pair)."""
        prefixes, suffixes = self.encode(queries, passages)
        return [[list(pre) + list(s) for s in ss] for pre, ss in zip(prefixes, suffixes)]


class EncoderLayout:
    """Cross-encoder pairs in the tokenizer's own special-token template."""

    def __init__(self, tokenizer, max_length: int, query_max_length=None):
        self.tok = tokenizer
        self.max_length = int(max_length)
        self.query_max_length = int(query_max_length) if query_max_length else self.max_length * 3 // 4
        self.side = getattr(tokenizer, "truncation_side", "right")
        self._learn_template()

    def _learn_template(self):
        a, b = "alpha", "beta"
        full = self.tok(a, b, add_special_tokens=True)
        ia, ib = _ids(self.tok, [a])[0], _ids(self.tok, [b])[0]
        ids = full["input_ids"]
        tt = full.get("token_type_ids", [0] * len(ids))
        i = next(k for k in range(len(ids)) if ids[k:k + len(ia)] == ia)
        j = next(k for k in range(i + len(ia), len(ids)) if ids[k:k + len(ib)] == ib)
        self.parts = (ids[:i], ids[i + len(ia):j], ids[j + len(ib):])
        self.types = (tt[:i], tt[i], tt[i + len(ia):j], tt[j], tt[j + len(ib):])
        self.n_special = sum(len(x) for x in self.parts)

    def encode_pair(self, q: Sequence[int], p: Sequence[int]) -> tuple[list[int], list[int]]:
        p = cut_second(list(q), list(p), self.max_length - self.n_special, self.side)
        s0, s1, s2 = self.parts
        t0, tq, t1, tp, t2 = self.types
        ids = s0 + list(q) + s1 + p + s2
        types = t0 + [tq] * len(q) + t1 + [tp] * len(p) + t2
        return ids, types

    def encode(self, queries: Sequence[str], passages: Sequence[Sequence[str]]):
        out = []
        for q, ps in zip(_ids(self.tok, queries, self.query_max_length), passages):
            p_ids = _ids(self.tok, ps, self.max_length) if len(ps) else []
            out.append([self.encode_pair(q, p) for p in p_ids])
        return out

    def pairs(self, queries: Sequence[str], passages: Sequence[Sequence[str]]):
        """Per query, ``(ids, token_type_ids)`` of each of its passages (:meth:`encode`)."""
        return self.encode(queries, passages)
