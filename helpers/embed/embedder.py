"""The embedder: texts -> token ids -> embeddings, with FlagEmbedding's semantics for the three
classes decoder-only-icl, decoder-only-base, encoder-only-base.

* Queries: instruction (a row's ``prompt`` overrides the global one where the class uses row
  prompts: decoders by default, encoders when ``use_row_prompts``), the ICL suffix and
  optional in-context examples (decoder-only-icl), FlagEmbedding's truncation rule
  (:mod:`helpers.data.formatting`). Passages: plain text. EOS appended per
  :func:`helpers.embed.loading.manual_eos`.
* Length-sorted batches, tqdm, CUDA out-of-memory -> the batch is retried at 3/4 size; several
  devices -> one worker thread and one model replica per device; embeddings already computed are
  read from the cache (:mod:`helpers.embed.cache`).
* The model and tokenizer come from :mod:`helpers.embed.loading`, the forward from
  :mod:`helpers.embed.forward`.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from helpers.common.devices import dtype_for, parse_devices
from helpers.data.formatting import (describe_instruction, examples_prefix, instructed_query, load_examples,
                                     row_instruction, select_examples, tokenize_icl_queries, tokenize_texts,
                                     uses_row_prompts)
from helpers.common.models import resolve_model
from helpers.common.tensors import pad
from helpers.embed.cache import EmbeddingCache
from helpers.embed.forward import pooled_embeddings
from helpers.embed.loading import _encoder_pooling_default, adapter_chain, check_memory, load_embedding_model, \
    manual_eos
from helpers.embed.prefix import PrefixSharing
from helpers.common.prompts import unescape
from helpers.embed.args import DEFAULT_QUERY_FORMAT, EmbedderArgs

log = logging.getLogger(__name__)


class Embedder:
    """``Embedder(args)`` loads the model of an :class:`~helpers.embed.args.EmbedderArgs` (any stage's
    arguments); ``Embedder(args, model, tokenizer)`` wraps an already-loaded base model (e.g. the
    trainer's, evaluated in training; its train/eval mode is restored after encoding). ``args`` is
    read, never changed: what the embedder resolves (pooling, formats) lives on the embedder.
    ``pooling`` overrides the args' (the trainer's resolved one); ``examples_seed`` seeds the choice
    of in-context examples."""

    def __init__(self, args: EmbedderArgs, model=None, tokenizer=None, *, pooling: Optional[str] = None,
                 show_progress: bool = True, examples_seed: int = 0):
        self.args = args
        self.model_class = args.embedder_model_class
        self.query_format = unescape(args.query_instruction_format or DEFAULT_QUERY_FORMAT[self.model_class])
        self.example_format = unescape(args.examples_instruction_format)
        self.suffix = unescape(args.icl_suffix_str)
        self.row_prompts = uses_row_prompts(self.model_class, args.use_row_prompts)
        self.show_progress, self.examples_seed = show_progress, examples_seed
        self.pooling = pooling or args.pooling_method or ("last_token" if args.decoder else None)
        self._replicas: dict[str, torch.nn.Module] = {}
        self._prefix: dict[str, PrefixSharing] = {}      # per replica: checked once on its first batch
        self._dtype = None
        # in-context examples read and checked before the model loads (a bad file costs no load)
        self.examples = load_examples(args.examples_for_task) if args.examples_for_task else None
        if model is None:
            self.devices = parse_devices(args.devices)
            check_memory(args, self.devices)      # CUDA: print the plan, refuse what cannot fit
            dtype = dtype_for(self.devices[0], args.use_fp16)
            model, tokenizer = load_embedding_model(
                args.model_name_or_path, self.model_class, self.devices[0], dtype,
                args.load_in_4bit, args.trust_remote_code, args.base_model)
            self._dtype = dtype
        else:
            if tokenizer is None:
                raise ValueError("Embedder(config, model, tokenizer): a model needs its tokenizer")
            self.devices = [str(next(model.parameters()).device)]
        self.model, self.tokenizer = model, tokenizer
        self._replicas[self.devices[0]] = model
        if self.pooling is None:
            self.pooling = _encoder_pooling_default(resolve_model(args.model_name_or_path))
        self.cache = None           # only for a model loaded here from its files
        if args.embedding_cache and self._dtype is not None:
            base, adapters = adapter_chain(args.model_name_or_path, args.base_model)
            self.cache = EmbeddingCache(args.embedding_cache, [base, *adapters], dict(
                model_class=self.model_class, pooling=self.pooling, normalize=args.normalize_embeddings,
                dtype=str(self._dtype), load_in_4bit=args.load_in_4bit,
                device=torch.device(self.devices[0]).type))
        self.append_eos = manual_eos(tokenizer)
        log.info("embedder %s (%s, pooling %s) on %s; append EOS: %s", args.model_name_or_path,
                 self.model_class, self.pooling, ",".join(self.devices), self.append_eos)

    # ------------------------------------------------------------------ text -> token ids
    def query_inputs(self, rows: Sequence) -> tuple[list[str], list[str]]:
        """(instructed query texts, examples prefixes) for rows (dicts, or plain strings)."""
        a = self.args
        texts, prefixes = [], []
        for r in rows:
            r = {"query": r} if isinstance(r, str) else r
            instr = row_instruction(r, a.query_instruction_for_retrieval, self.row_prompts)
            texts.append(instructed_query(r["query"], instr, self.query_format))
            prefix = ""
            if self.examples is not None:
                ex = select_examples(r, self.examples, a.examples_number, self.examples_seed)
                prefix = examples_prefix(ex, instr, self.example_format)
            prefixes.append(prefix)
        return texts, prefixes

    def tokenize_queries(self, rows: Sequence) -> list[list[int]]:
        texts, prefixes = self.query_inputs(rows)
        if self.model_class == "decoder-only-icl":
            return tokenize_icl_queries(self.tokenizer, texts, self.args.query_max_len, prefixes,
                                        self.suffix, self.append_eos)
        return tokenize_texts(self.tokenizer, texts, self.args.query_max_len, self.append_eos)

    def tokenize_passages(self, texts: Sequence[str]) -> list[list[int]]:
        return tokenize_texts(self.tokenizer, list(texts), self.args.passage_max_len, self.append_eos)

    # ------------------------------------------------------------------ public encoding
    def encode_queries(self, rows: Sequence) -> np.ndarray:
        """Rows of the query contract (``query``, optional ``prompt``, ids for examples)."""
        log.info(describe_instruction(rows, self.args.query_instruction_for_retrieval, self.row_prompts))
        return self.encode_ids(self.tokenize_queries(rows), "queries")

    def encode_corpus(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_ids(self.tokenize_passages(texts), "passages")

    # ------------------------------------------------------------------ batching
    def _replica(self, device: str):
        if device not in self._replicas:
            a = self.args
            model, _ = load_embedding_model(a.model_name_or_path, self.model_class, device, self._dtype,
                                            a.load_in_4bit, a.trust_remote_code, a.base_model)
            self._replicas[device] = model
        return self._replicas[device]

    def _forward(self, model, batch: list[list[int]], device: str) -> torch.Tensor:
        ids, mask = pad(batch, self.tokenizer.pad_token_id, "right")
        if device not in self._prefix:
            self._prefix[device] = PrefixSharing(self.args.share_prefix and self.args.decoder)
        return pooled_embeddings(model, ids.to(device), mask.to(device), self.pooling,
                                 self.args.normalize_embeddings, self._prefix[device]).cpu()

    def encode_ids(self, inputs: list[list[int]], what: str = "texts") -> np.ndarray:
        """Embed token-id lists: length-sorted batches over all devices, input order kept."""
        n = len(inputs)
        if n == 0:
            return np.zeros((0, 0), dtype=np.float32)
        if self.cache is None:
            return self._encode_ids(inputs, what)
        entry = self.cache.path(inputs)
        cached = self.cache.get(entry, n)
        if cached is not None:
            log.info("%d %s: embeddings from the cache %s", n, what, entry)
            return cached.astype(np.float32, copy=False)
        out = self._encode_ids(inputs, what)
        self.cache.put(entry, out)
        return out

    def _check_finite(self, emb: torch.Tensor, s: int, e: int, order, sorted_inputs, what: str, device: str):
        """Stop at the first batch holding a NaN or infinite value: ``torch.sort`` ranks NaN above
        everything, so one NaN passage would top every ranking and a NaN query would return corpus order."""
        finite = torch.isfinite(emb).all(dim=1)
        if bool(finite.all()):
            return
        bad = [j for j in range(e - s) if not bool(finite[j])]
        first = min(bad, key=lambda j: int(order[s + j]))
        value = "nan" if bool(torch.isnan(emb[first]).any()) else "inf"
        bs = max(1, self.args.embedder_batch_size)
        n = len(sorted_inputs)
        raise FloatingPointError(
            f"model {self.args.model_name_or_path}: non-finite embedding ({value}) in batch {s // bs + 1} of "
            f"{-(-n // bs)} of {what} (length-sorted positions {s}-{e - 1}, {len(bad)} bad rows, device {device}); "
            f"first bad row: {what}[{int(order[s + first])}] ({len(sorted_inputs[s + first])} tokens). "
            f"Check the model's weights, or try use_fp16 False (fp16 overflow)")

    def _encode_ids(self, inputs: list[list[int]], what: str) -> np.ndarray:
        n = len(inputs)
        t0 = time.perf_counter()
        order = np.argsort([-len(x) for x in inputs], kind="stable")
        sorted_inputs = [inputs[i] for i in order]
        results: list[Optional[torch.Tensor]] = [None] * n
        lock = threading.Lock()
        cursor = [0]
        bar = tqdm(total=n, desc=f"embed {what}", disable=not self.show_progress, leave=False)

        def take(k):
            with lock:
                s = cursor[0]
                cursor[0] = min(s + k, n)
                return s, cursor[0]

        def worker(device):
            model = self._replica(device)
            was_training = model.training
            model.eval()
            bs, pending = self.args.embedder_batch_size, []
            try:
                with torch.inference_mode():
                    while True:
                        s, e = pending.pop() if pending else take(bs)
                        if s >= e:
                            return
                        try:
                            emb = self._forward(model, sorted_inputs[s:e], device)
                        except torch.OutOfMemoryError:
                            if e - s == 1:
                                raise
                            bs = max(1, (e - s) * 3 // 4)
                            log.warning("out of memory on %s at batch %d: retrying at %d", device, e - s, bs)
                            if torch.cuda.is_available():
                                torch.cuda.empty_cache()
                            pending += [(s + bs, e), (s, s + bs)]
                            continue
                        self._check_finite(emb, s, e, order, sorted_inputs, what, device)
                        for j in range(s, e):
                            results[j] = emb[j - s]
                        with lock:
                            bar.update(e - s)
            finally:
                model.train(was_training)

        try:
            if len(self.devices) == 1:
                worker(self.devices[0])
            else:
                for d in self.devices[1:]:
                    self._replica(d)          # load replicas before starting the clock on work
                errors = []

                def run(d):
                    try:
                        worker(d)
                    except BaseException as ex:   # re-raised in the caller
                        errors.append(ex)
                threads = [threading.Thread(target=run, args=(d,)) for d in self.devices]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                if errors:
                    raise errors[0]
        finally:
            bar.close()
        emb = torch.stack(results).numpy()
        out = np.empty_like(emb)
        out[order] = emb
        dt = time.perf_counter() - t0
        log.info("embedded %d %s in %.1f s (%.1f/s, %d tokens)", n, what, dt, n / max(dt, 1e-9),
                 sum(len(x) for x in inputs))
        return out.astype(np.float32, copy=False)
