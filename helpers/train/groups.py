"""Training groups for the embedder: 1 positive + (train_group_size - 1) sampled negatives.

FlagEmbedding semantics: one positive chosen at random, negatives sampled without repetition
from ``neg`` (with repetition when there are too few, logged once per file), teacher scores
carried in the same order; batches of ``per_device_train_batch_size`` queries per device (the
last incomplete global batch is dropped for training, kept for evaluation); for
``decoder-only-icl`` every query ends with the ICL suffix (with or without examples) and, when
examples are on, gets 0..``max_examples`` other (query, positive) pairs of its batch as
in-context examples, as many as fit beside the whole query. Query token ids come from the
embedder's own functions (:mod:`helpers.data.formatting`), so a query is the same ids in training as
at inference. Decoder models see EOS at the end of every text (appended once). Everything is seeded by (seed, epoch, step, rank): a batch is the same
whichever batches were built before it, which makes resuming exact.

Negatives that 02's teacher filter marked (``neg_suspect``, ``teacher_filter mark``) are dropped
when the file is loaded (``drop_suspect_negatives``, on by default; at least one negative stays
per row, the lowest-scored, as with ``teacher_filter drop``); with it off they are trained on.
"""
from __future__ import annotations

import hashlib
import logging
import math
import random
from typing import Optional

import torch

from helpers.data.formatting import (instructed_query, join_examples, row_instruction, tokenize_icl_queries,
                                tokenize_texts)
from helpers.common.io_utils import InputError, read_jsonl, validate_queries
from helpers.common.tensors import pad
from helpers.common.prompts import unescape
from helpers.rerank.filters import SUSPECT_FIELD, drop_marked

log = logging.getLogger(__name__)


LENGTH_WINDOW = 64        # group_by_length: batches of similar length within shuffled windows of this many


def load_group_rows(path, args) -> list[dict]:
    """Read and check a mined (and, with KD, scored) query file for a training run of ``args``
    (:class:`~helpers.train.kd_finetune.KDArgs`: train_group_size, knowledge_distillation, drop_suspect_negatives)."""
    rows = read_jsonl(path)
    try:
        validate_queries(rows, path, need_neg=args.train_group_size > 1,
                         need_scores=args.knowledge_distillation)
    except InputError as e:
        if args.knowledge_distillation and e.field in ("pos_scores", "neg_scores") and str(e).endswith(": missing"):
            raise InputError(path, e.line, e.field, str(e).split(": ", 1)[-1] + ". knowledge_distillation "
                             "needs a scored file (02_reranker_score); or set knowledge_distillation "
                             "False to train on hard negatives only") from None
        raise
    if args.train_group_size < 1:
        raise ValueError(f"train_group_size must be >= 1, got {args.train_group_size}")
    marked = sum(1 for r in rows if SUSPECT_FIELD in r)
    if marked and args.drop_suspect_negatives:
        dropped, total = 0, sum(len(r["neg"]) for r in rows)
        for i, r in enumerate(rows):
            try:
                rows[i], n = drop_marked(r)
            except ValueError as e:
                raise InputError(path, r.get("__line__"), SUSPECT_FIELD, str(e)) from None
            dropped += n
        log.info("%s: dropped %d of %d negatives marked %s (teacher filter) in %d marked queries",
                 path, dropped, total, SUSPECT_FIELD, marked)
    elif marked:
        log.info("%s: %d queries carry %s marks; drop_suspect_negatives is off, so they are trained on",
                 path, marked, SUSPECT_FIELD)
    need = args.train_group_size - 1
    short = 0
    for r in rows:
        if need and not r["neg"]:
            raise InputError(path, r["__line__"], "neg", f"empty, but train_group_size "
                             f"{args.train_group_size} needs {need} negatives per query (run 01_mine_hn)")
        short += len(r["neg"]) < need
    if short:
        log.warning("%s: %d of %d queries have fewer than %d negatives; their negatives are sampled "
                    "with repetition (as FlagEmbedding)", path, short, len(rows), need)
    return rows


def sample_group(row: dict, group_size: int, rng: random.Random, with_scores: bool):
    """-> (passages [pos, neg...], teacher scores or None), FlagEmbedding's sampling rule."""
    pi = rng.randrange(len(row["pos"]))
    need = group_size - 1
    idx = list(range(len(row["neg"])))
    if need and len(idx) < need:
        idx = idx * math.ceil(need / len(idx))
    ni = rng.sample(idx, need) if need else []
    passages = [row["pos"][pi]] + [row["neg"][i] for i in ni]
    scores = None
    if with_scores:
        scores = [float(row["pos_scores"][pi])] + [float(row["neg_scores"][i]) for i in ni]
    return passages, scores


def no_duplicate_cut(order: list[int], keys: list, g: int, n_batches: int) -> tuple[list[list[int]], int]:
    """``n_batches`` batches of ``g`` rows from ``order`` in which no two rows share a key (a row's
    positive ids): each batch takes the first rows of the pool that clash with nothing in it; a row
    that clashes waits for a later batch (sentence-transformers' NO_DUPLICATES, by id). A batch that
    cannot be filled without a clash takes the next waiting rows anyway: -> (batches, how many did)."""
    pool, out, forced = list(order), [], 0
    for _ in range(n_batches):
        batch, seen, rest = [], set(), []
        for i in pool:
            if len(batch) < g and not (keys[i] & seen):
                batch.append(i)
                seen |= keys[i]
            else:
                rest.append(i)
        if len(batch) < g:
            need = g - len(batch)
            batch, rest, forced = batch + rest[:need], rest[need:], forced + 1
        out.append(batch)
        pool = rest
    return out, forced


def hard_negative_cut(order: list[int], pos_keys: list, neg_ids: list, g: int, n_batches: int, per_row: int,
                      no_duplicates: bool = False) -> tuple[list[list[int]], int]:
    """``n_batches`` batches of ``g`` rows in which each row brings in up to ``per_row`` rows whose
    positive is one of its negatives (the 1st-place Eedi solution's batching: a query's hard negative
    is then another in-batch query's positive, so the in-batch negatives are hard too).

    Seeds are taken in ``order``; after each seed, for its first ``per_row`` negative ids, the first
    unused row (in ``order``) whose positive ids hold that id joins the batch, while there is room.
    Every row is used at most once; the rows left over when the batches are full are dropped, as
    ``drop_last`` drops the remainder. ``no_duplicates``: a row whose positives clash with the batch's
    is not taken (a seed waits for a later batch); a batch that cannot be filled otherwise takes the
    next unused rows anyway -> (batches, how many did)."""
    by_pos: dict = {}          # positive id -> rows holding it, in ``order``
    for i in order:
        for pid in pos_keys[i]:
            by_pos.setdefault(pid, []).append(i)
    used, out, forced, start = set(), [], 0, 0
    for _ in range(n_batches):
        batch, seen = [], set()

        def take(i):
            batch.append(i)
            used.add(i)
            seen.update(pos_keys[i])
        for i in order[start:]:
            if len(batch) >= g:
                break
            if i in used or (no_duplicates and pos_keys[i] & seen):
                continue
            take(i)
            for nid in list(neg_ids[i])[:per_row]:
                if len(batch) >= g:
                    break
                mate = next((j for j in by_pos.get(nid, ()) if j not in used
                             and not (no_duplicates and pos_keys[j] & seen)), None)
                if mate is not None:
                    take(mate)
        if len(batch) < g:                          # only clashing rows left: take them anyway
            rest = [i for i in order[start:] if i not in used][:g - len(batch)]
            for i in rest:
                take(i)
            forced += 1
        while start < len(order) and order[start] in used:
            start += 1
        out.append(batch)
    return out, forced


def batch_indices(n: int, batch_size: int, seed: int, epoch: int, world_size: int = 1,
                  shuffle: bool = True, drop_last: bool = True, lengths: Optional[list[int]] = None,
                  window: int = 64, keys: Optional[list] = None,
                  hard_negatives: Optional[tuple[list, int]] = None) -> list[list[int]]:
    """Global batches (batch_size x world_size rows each) of one epoch, seeded by (seed, epoch).

    ``lengths`` (length grouping, training only): the shuffled order (the same rows as without it,
    the same dropped remainder) is cut into windows of ``window`` global batches; inside a window
    the rows are sorted by length (ties: shuffled order) and cut into batches, and then all batches
    of the epoch are shuffled (seeded). Every row is still seen once per epoch and each batch is
    still a random draw of rows (of one length band), but queries of similar length are now each
    other's in-batch negatives more often (on Eedi: often the other wrong answers of the same
    question), so the InfoNCE term sees other negatives than with plain shuffling.

    ``keys`` (training only; a frozenset per row, its positive ids): no two rows of a global batch share
    a key (:func:`no_duplicate_cut`); the number of batches is the same as without it.

    ``hard_negatives`` (training only; ``(each row's negative ids, per_row)``, with ``keys``: each row's
    positive ids): each row pulls up to ``per_row`` rows whose positive is one of its negatives into
    its batch (:func:`hard_negative_cut`); the same number of batches. Not combined with ``lengths``."""
    order = list(range(n))
    if shuffle:
        random.Random(f"{seed}-{epoch}").shuffle(order)
    g = batch_size * world_size
    if hard_negatives is not None and shuffle and drop_last:
        neg_ids, per_row = hard_negatives
        out, forced = hard_negative_cut(order, keys, neg_ids, g, n // g, per_row, no_duplicates=True)
        if forced:
            log.info("epoch %d: %d of %d batches hold two queries with a shared positive (no other rows left)",
                     epoch, forced, len(out))
        return out
    if keys is not None and shuffle and drop_last:
        if lengths is not None:          # the length-sorted order within windows, then cut without duplicates
            order = [i for b in batch_indices(n, batch_size, seed, epoch, world_size, shuffle, drop_last, lengths,
                                              window) for i in b] + order[n // g * g:]
        out, forced = no_duplicate_cut(order, keys, g, n // g)
        if forced:
            log.info("epoch %d: %d of %d batches hold two queries with a shared positive (no other rows left)",
                     epoch, forced, len(out))
        return out
    if lengths is not None and shuffle:
        if drop_last:
            order = order[:n // g * g]
        out = []
        for w in range(0, len(order), g * max(1, window)):
            part = sorted(order[w:w + g * max(1, window)], key=lambda i: lengths[i])
            out.extend(part[i:i + g] for i in range(0, len(part), g))
        random.Random(f"{seed}-{epoch}-length-batches").shuffle(out)
        return out
    out = [order[i:i + g] for i in range(0, n, g)]
    if drop_last and out and len(out[-1]) < g:
        out.pop()
    return out


def text_key(text: str) -> int:
    """A signed 64-bit key of a passage text: equal texts, equal keys (in-batch false negatives)."""
    return int.from_bytes(hashlib.blake2b(text.strip().encode("utf-8"), digest_size=8).digest(), "big", signed=True)


def pad_batch(ids: list[list[int]], pad_id: int, left: bool) -> dict:
    """A model's keyword inputs for id lists padded to the longest (never to max length)."""
    input_ids, mask = pad(ids, pad_id, "left" if left else "right")
    return {"input_ids": input_ids, "attention_mask": mask}


def _cut(tokenizer, text: str, n: int) -> str:
    return tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:n])


class GroupBatches:
    """``batches(epoch)`` yields this rank's tokenized batches; ``len(batches)`` per epoch.

    ``args``: the student's :class:`~helpers.train.kd_finetune.KDArgs`, read as they are (group
    size, lengths, instruction, in-context examples, KD); ``append_eos``: decoders, once the
    tokenizer is known (:func:`helpers.train.kd_finetune.training_tokenizer`)."""

    def __init__(self, rows, tokenizer, args, batch_size: int, seed: int,
                 world_size: int = 1, rank: int = 0, train: bool = True, append_eos: bool = True,
                 length_window: int = LENGTH_WINDOW):
        if batch_size < 1:
            raise ValueError(f"per_device_train_batch_size must be >= 1, got {batch_size}")
        self.rows, self.tok, self.args, self.append_eos = rows, tokenizer, args, append_eos
        self.use_examples = args.icl and args.max_examples > 0     # in-batch in-context examples
        self.length_window = length_window
        self.batch_size, self.seed, self.world, self.rank, self.train = batch_size, seed, world_size, rank, train
        self.left = getattr(tokenizer, "padding_side", "right") == "left"
        if len(self) == 0:
            raise ValueError(f"{len(rows)} queries make no full batch of {batch_size} x "
                             f"{world_size} device(s); lower per_device_train_batch_size")

    def __len__(self):
        return len(batch_indices(len(self.rows), self.batch_size, self.seed, 0, self.world,
                                 self.train, self.train))      # no_duplicate_positives keeps this number

    def keys(self) -> Optional[list]:
        """Each row's positive ids (frozenset), for batches without shared positives (also the index
        of hard-negative batching); None when both are off."""
        if not (self.train and (getattr(self.args, "no_duplicate_positives", False) or self.hard_negatives())):
            return None
        return [frozenset(r.get("pos_ids") or r["pos"]) for r in self.rows]

    def hard_negatives(self) -> Optional[tuple[list, int]]:
        """``(each row's negative ids, hard_negative_queries)`` when that option is on (training)."""
        k = int(getattr(self.args, "hard_negative_queries", 0) or 0)
        if not (self.train and k > 0):
            return None
        return [r.get("neg_ids") or r["neg"] for r in self.rows], k

    def lengths(self) -> Optional[list[int]]:
        """Token length of each row's instructed query (no examples), for length grouping; None when off."""
        if not (self.train and self.args.group_by_length):
            return None
        if getattr(self, "_lengths", None) is None:
            c = self.args
            qs = [instructed_query(r["query"], row_instruction(r, c.query_instruction_for_retrieval, c.row_prompts),
                                   c.query_instruction_format) for r in self.rows]
            self._lengths = [len(x) for x in self.tok(qs, add_special_tokens=False)["input_ids"]]
        return self._lengths

    def __call__(self, epoch: int):
        for step, idx in enumerate(batch_indices(len(self.rows), self.batch_size, self.seed, epoch,
                                                 self.world, self.train, self.train, self.lengths(),
                                                 self.length_window, self.keys(), self.hard_negatives())):
            local = idx[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
            if not local:
                continue
            rng = random.Random(f"{self.seed}-{epoch}-{step}-{self.rank}")
            yield self.build([self.rows[i] for i in local], rng)

    def texts(self, rows: list[dict], rng: random.Random):
        """(instructed query texts, their examples prefixes, passage texts, flat teacher scores
        or None) of one batch. The prefixes are ``""`` without in-context examples."""
        c = self.args
        queries, passages, scores, pairs = [], [], [], []
        for r in rows:
            q = instructed_query(r["query"], row_instruction(r, c.query_instruction_for_retrieval, c.row_prompts),
                                 c.query_instruction_format)
            ps, sc = sample_group(r, c.train_group_size, rng, c.knowledge_distillation)
            queries.append(q)
            passages.extend(ps)
            if sc is not None:
                scores.extend(sc)
            if self.use_examples:
                pairs.append(unescape(c.icl_suffix_str).join(
                    (_cut(self.tok, q, c.example_query_max_len), _cut(self.tok, ps[0], c.example_passage_max_len))))
        prefixes = [""] * len(queries)
        if self.use_examples:
            lengths = [len(x) for x in self._query_ids(queries, prefixes)]
            prefixes = [self._examples_prefix(i, lengths[i], pairs, rng) for i in range(len(queries))]
        return queries, prefixes, passages, (scores if c.knowledge_distillation else None)

    def _examples_prefix(self, i: int, query_len: int, pairs: list[str], rng: random.Random) -> str:
        """0..max_examples other queries of the batch (with their positives) as in-context
        examples of query ``i``, FlagEmbedding's draw. Examples are dropped (from the last) until
        the query, at its own length ``query_len``, fits ``query_max_len`` with them: an example
        never cuts the query (FlagEmbedding budgets ``query_max_len - 512`` and then truncates
        the end of the query, which on Eedi is the wrong-answer line)."""
        c = self.args
        k = rng.randint(0, c.max_examples)
        if k == 0 or len(pairs) < 2:
            return ""
        pick = [j for j in rng.sample(range(len(pairs)), min(k + 1, len(pairs))) if j != i][:k]
        room = c.query_max_len - query_len
        while pick and len(self.tok(join_examples([pairs[j] for j in pick]), add_special_tokens=False)["input_ids"]) > room:
            pick.pop()
        return join_examples([pairs[j] for j in pick])

    def _query_ids(self, queries: list[str], prefixes: list[str]) -> list[list[int]]:
        """Query token ids, by the embedder's own functions (so training = inference)."""
        c = self.args
        if c.icl:
            return tokenize_icl_queries(self.tok, queries, c.query_max_len, prefixes,
                                        unescape(c.icl_suffix_str), append_eos=self.append_eos)
        return tokenize_texts(self.tok, queries, c.query_max_len, append_eos=self.append_eos)

    def build(self, rows: list[dict], rng: random.Random) -> dict:
        c = self.args
        queries, prefixes, passages, scores = self.texts(rows, rng)
        q_ids = self._query_ids(queries, prefixes)
        p_ids = tokenize_texts(self.tok, passages, c.passage_max_len, append_eos=self.append_eos)
        pad = self.tok.pad_token_id
        out = {"queries": pad_batch(q_ids, pad, self.left), "passages": pad_batch(p_ids, pad, self.left),
               "passage_keys": torch.tensor([text_key(t) for t in passages], dtype=torch.int64)}
        if scores is not None:
            out["teacher_scores"] = torch.tensor(scores, dtype=torch.float32)
        return out
