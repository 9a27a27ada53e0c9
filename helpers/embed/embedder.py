"""Embedders with FlagEmbedding's semantics: decoder-only-icl, decoder-only-base, encoder-only-base.

* The base model (``AutoModel``), never the language-model head; right padding; pad token set
  when missing (EOS, else UNK).
* Queries: instruction (a row's ``prompt`` overrides the global one where the class uses row
  prompts: decoders by default, encoders when ``use_row_prompts``), the ICL suffix and
  optional in-context examples (decoder-only-icl), FlagEmbedding's truncation rule
  (:mod:`helpers.data.formatting`). Passages: plain text.
* EOS rule: when the tokenizer is meant to append EOS (attribute ``add_eos_token`` or the key in
  tokenizer_config.json, which transformers 5 does not apply on load) and does not do it
  itself, the EOS id is appended once; never twice.
* Length-sorted batches, tqdm, CUDA out-of-memory -> the batch is retried at 3/4 size; several
  devices -> one worker thread and one model replica per device.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from helpers.common.devices import dtype_for, parse_devices
from helpers.data.formatting import (describe_instruction, examples_prefix, instructed_query, row_instruction,
                                select_examples, tokenize_icl_queries, tokenize_texts, uses_row_prompts)
from helpers.common.models import placement_kwargs, resolve_model
from helpers.common.tensors import pad
from helpers.embed.cache import EmbeddingCache
from helpers.embed.pooling import pool
from helpers.embed.prefix import PrefixSharing
from helpers.common.prompts import ICL_EXAMPLE_FORMAT, ICL_QUERY_FORMAT, ICL_SUFFIX, unescape

log = logging.getLogger(__name__)

MODEL_CLASSES = ("decoder-only-icl", "decoder-only-base", "encoder-only-base")
# FlagEmbedding's default query_instruction_format per class
DEFAULT_QUERY_FORMAT = {"decoder-only-icl": ICL_QUERY_FORMAT,
                        "decoder-only-base": "Instruct: {}\nQuery: {}",
                        "encoder-only-base": "{}{}"}


# ----------------------------------------------------------------------------- loading
def _load_tokenizer(path: str, trust_remote_code: bool):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        if tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        elif tok.unk_token is not None:
            tok.pad_token = tok.unk_token
        else:
            raise ValueError(f"tokenizer of {path!r} has no pad, eos or unk token to pad with")
    tok.padding_side = "right"   # last-token pooling finds the last real token either way
    return tok


def is_adapter_folder(path) -> bool:
    """A LoRA adapter folder: adapter_config.json and no config.json."""
    return (Path(path) / "adapter_config.json").exists() and not (Path(path) / "config.json").exists()


def adapter_chain(model_name_or_path: str, base_model: Optional[str] = None) -> tuple[str, list[str]]:
    """``(base folder, adapter folders in merge order)`` for a model folder or an adapter folder.

    An adapter's base (``base_model_name_or_path`` of adapter_config.json) may itself be an
    adapter folder (round 2 trained from round 1's ``lora_epoch_n``): followed down to a model.
    ``base_model`` replaces the model folder at the bottom of the chain (the adapter was trained
    on a base at another path, e.g. another Kaggle session's /kaggle/input/...): every base named
    in the chain that is not an existing adapter folder is taken to be that model."""
    path, adapters, seen = resolve_model(model_name_or_path), [], set()
    while is_adapter_folder(path):
        if Path(path).resolve() in seen:
            raise ValueError(f"adapter {adapters[0]!r}: its chain of base models loops at {path!r}")
        seen.add(Path(path).resolve())
        adapters.append(path)
        cfg = Path(path) / "adapter_config.json"
        base = json.loads(cfg.read_text(encoding="utf-8")).get("base_model_name_or_path")
        if base_model and not (base and is_adapter_folder(base)):
            return resolve_model(base_model), adapters[::-1]
        if not base:
            raise ValueError(f"{cfg}: no base_model_name_or_path, so the adapter's base model is unknown")
        path = resolve_model(base)
    return path, adapters[::-1]


def load_base_model(model_name_or_path: str, dtype="auto", trust_remote_code: bool = False,
                    quantization_config=None, device_map=None, base_model: Optional[str] = None):
    """``AutoModel`` of a model folder, or of an adapter folder: its base with the adapter(s) merged.

    Loaded where ``from_pretrained`` puts it (CPU unless ``device_map``), in ``dtype`` ("auto": the
    stored precision); each adapter of :func:`adapter_chain` is merged in turn. A merged model's
    ``name_or_path`` is the adapter folder, so an adapter trained on it names that folder as its
    base (and loads onto the same weights)."""
    from transformers import AutoModel
    base_path, adapters = adapter_chain(model_name_or_path, base_model)
    kwargs = dict(dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True)
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    if device_map is not None:
        kwargs["device_map"] = device_map
        if isinstance(device_map, dict) and len(device_map) == 1:
            kwargs.update(placement_kwargs(next(iter(device_map.values()))))
    model = AutoModel.from_pretrained(base_path, **kwargs)
    if adapters:
        from peft import PeftModel
        for adapter in adapters:
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
            log.info("merged adapter %s", adapter)
        model.name_or_path = adapters[-1]
    return model


def load_embedding_model(model_name_or_path: str, model_class: str = "decoder-only-icl",
                         device: str = "cpu", dtype: Optional[torch.dtype] = None,
                         load_in_4bit: bool = False, trust_remote_code: bool = False,
                         base_model: Optional[str] = None):
    """Load the base model (``AutoModel``) and its tokenizer -> ``(model, tokenizer)``.

    ``model_name_or_path``: ``demo:<alias>``, a Hugging Face folder, or a LoRA adapter folder
    (adapter_config.json; merged into its base). ``dtype`` defaults by hardware
    (:func:`helpers.common.devices.dtype_for`). ``load_in_4bit`` quantizes the base with bitsandbytes
    (CUDA only). safetensors only. On CUDA the weights load straight onto ``device``
    (:func:`helpers.common.models.placement_kwargs`: no full copy in host RAM first).
    ``base_model``: the base of an adapter folder at another path (:func:`adapter_chain`).
    """
    if model_class not in MODEL_CLASSES:
        raise ValueError(f"embedder_model_class {model_class!r} unknown; choose one of {MODEL_CLASSES}")
    device = str(device)
    dtype = dtype or dtype_for(device)
    base_path, adapters = adapter_chain(model_name_or_path, base_model)
    # the tokenizer of the outermost folder that has one (adapters are saved with theirs)
    tok_path = next((f for f in adapters[::-1] + [base_path]
                     if any((Path(f) / t).exists() for t in ("tokenizer.json", "tokenizer_config.json"))),
                    base_path)
    tok = _load_tokenizer(tok_path, trust_remote_code)
    quant = None
    device_map = placement_kwargs(device).get("device_map")   # CUDA: straight onto the GPU
    if load_in_4bit:
        if not device.startswith("cuda"):
            raise ValueError("load_in_4bit needs a CUDA device (bitsandbytes); got " + device)
        from transformers import BitsAndBytesConfig
        quant = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
        device_map = {"": device}
    model = load_base_model(model_name_or_path, dtype, trust_remote_code, quant, device_map, base_model)
    if device_map is None:
        model.to(device)
    model.eval()
    tok.name_or_path_for_eos = tok_path   # where tokenizer_config.json is, for the EOS rule
    return model, tok


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


def wants_eos(tokenizer) -> bool:
    """True when the tokenizer is meant to end every text with EOS (attribute or config key)."""
    if getattr(tokenizer, "add_eos_token", False) or tokenizer.init_kwargs.get("add_eos_token"):
        return True
    where = getattr(tokenizer, "name_or_path_for_eos", None) or getattr(tokenizer, "name_or_path", None)
    cfg = Path(str(where)) / "tokenizer_config.json" if where else None
    if cfg is not None and cfg.is_file():
        try:
            return bool(json.loads(cfg.read_text(encoding="utf-8")).get("add_eos_token", False))
        except (OSError, json.JSONDecodeError):
            return False
    return False


def tokenizer_appends_eos(tokenizer) -> bool:
    """Whether tokenizing with special tokens already ends a text with EOS (post-processor)."""
    if tokenizer.eos_token_id is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[-1] == tokenizer.eos_token_id


def manual_eos(tokenizer) -> bool:
    """Append EOS ourselves: meant to, and the tokenizer does not do it itself."""
    return wants_eos(tokenizer) and tokenizer.eos_token_id is not None and not tokenizer_appends_eos(tokenizer)


# ----------------------------------------------------------------------------- config
@dataclass
class EmbedderConfig:
    model_name_or_path: str = "demo:smollm2-135m-instruct"
    model_class: str = "decoder-only-icl"            # decoder-only-icl | decoder-only-base | encoder-only-base
    pooling_method: Optional[str] = None             # last_token | mean | cls; None: class default
    query_instruction_for_retrieval: Optional[str] = None   # global instruction (None: none)
    use_row_prompts: Optional[bool] = None           # rows' "prompt" overrides it; None: class default
    query_instruction_format: Optional[str] = None   # None: class default; literal \n = newline
    add_examples_for_task: bool = False              # ICL examples (decoder-only-icl only)
    examples_file: Optional[str] = None              # examples.json of the data stage
    examples_number: int = 1                         # examples per query
    examples_instruction_format: str = ICL_EXAMPLE_FORMAT
    examples_seed: int = 0
    suffix: str = ICL_SUFFIX                          # ICL query suffix
    query_max_length: int = 512
    passage_max_length: int = 512
    batch_size: int = 64
    devices: Optional[object] = None                 # "cpu", "cuda:0", "0,1", list; None: auto
    use_fp16: bool = True                             # half precision on CUDA (bf16 from cc 8)
    load_in_4bit: bool = False
    base_model: Optional[str] = None                 # base of an adapter folder at another path (adapter_chain)
    normalize: bool = True
    trust_remote_code: bool = False
    show_progress: bool = True
    share_prefix: bool = True                        # decoders: rows' common prefix runs once (helpers.embed.prefix)
    embedding_cache: Optional[str] = None            # folder of computed embeddings (helpers.embed.cache)

    def __post_init__(self):
        if self.model_class not in MODEL_CLASSES:
            raise ValueError(f"embedder_model_class {self.model_class!r} unknown; choose one of {MODEL_CLASSES}")
        if self.query_instruction_format is None:
            self.query_instruction_format = DEFAULT_QUERY_FORMAT[self.model_class]
        self.query_instruction_format = unescape(self.query_instruction_format)
        self.examples_instruction_format = unescape(self.examples_instruction_format)
        self.suffix = unescape(self.suffix)
        self.use_row_prompts = uses_row_prompts(self.model_class, self.use_row_prompts)
        decoder = self.model_class.startswith("decoder")
        if self.pooling_method is None:
            self.pooling_method = "last_token" if decoder else None   # encoder: resolved at load
        if decoder and self.pooling_method != "last_token":
            raise ValueError(f"pooling_method {self.pooling_method!r}: decoder-only embedders pool "
                             "the last token (pooling_method last_token), as FlagEmbedding requires")
        if self.add_examples_for_task and self.model_class != "decoder-only-icl":
            raise ValueError("add_examples_for_task needs embedder_model_class decoder-only-icl")
        if self.add_examples_for_task and not self.examples_file:
            raise ValueError("add_examples_for_task is on but no examples_file is given")
        for name in ("query_max_length", "passage_max_length", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


def _encoder_pooling_default(path: str) -> str:
    """sentence-transformers folders say their pooling in 1_Pooling/config.json; else cls."""
    cfg = Path(path) / "1_Pooling" / "config.json"
    if cfg.is_file():
        c = json.loads(cfg.read_text())
        if c.get("pooling_mode_mean_tokens"):
            return "mean"
        if c.get("pooling_mode_lasttoken"):
            return "last_token"
    return "cls"


def check_memory(config: EmbedderConfig, devices) -> Optional[dict]:
    """:func:`helpers.common.memory.check_stage` for an embedder about to be loaded (mining,
    evaluation, submission): nothing on CPU; on CUDA the plan is printed and settings that cannot
    fit one GPU are refused before the model loads."""
    from helpers.common.memory import check_stage
    if not any(str(d).startswith("cuda") for d in devices):
        return None
    c = config
    base_path, _ = adapter_chain(c.model_name_or_path, c.base_model)
    return check_stage("mine", dict(embedder_batch_size=c.batch_size, query_max_len=c.query_max_length,
                                    passage_max_len=c.passage_max_length,
                                    load_in_4bit=c.load_in_4bit, use_fp16=c.use_fp16),
                       devices, model=base_path)


# ----------------------------------------------------------------------------- embedder
class Embedder:
    """``Embedder(config)`` loads the model; ``Embedder(config, model, tokenizer)`` wraps an
    already-loaded base model (e.g. the trainer's, evaluated in training; its train/eval mode
    is restored after encoding)."""

    def __init__(self, config: EmbedderConfig, model=None, tokenizer=None):
        self.config = config
        self._replicas: dict[str, torch.nn.Module] = {}
        self._prefix: dict[str, PrefixSharing] = {}      # per replica: checked once on its first batch
        self._dtype = None
        if model is None:
            self.devices = parse_devices(config.devices)
            check_memory(config, self.devices)      # CUDA: print the plan, refuse what cannot fit
            dtype = dtype_for(self.devices[0], config.use_fp16)
            model, tokenizer = load_embedding_model(
                config.model_name_or_path, config.model_class, self.devices[0], dtype,
                config.load_in_4bit, config.trust_remote_code, config.base_model)
            self._dtype = dtype
        else:
            if tokenizer is None:
                raise ValueError("Embedder(config, model, tokenizer): a model needs its tokenizer")
            self.devices = [str(next(model.parameters()).device)]
        self.model, self.tokenizer = model, tokenizer
        self._replicas[self.devices[0]] = model
        if config.pooling_method is None:
            config.pooling_method = _encoder_pooling_default(resolve_model(config.model_name_or_path))
        self.cache = None           # only for a model loaded here from its files
        if config.embedding_cache and self._dtype is not None:
            base, adapters = adapter_chain(config.model_name_or_path, config.base_model)
            self.cache = EmbeddingCache(config.embedding_cache, [base, *adapters], dict(
                model_class=config.model_class, pooling=config.pooling_method, normalize=config.normalize,
                dtype=str(self._dtype), load_in_4bit=config.load_in_4bit,
                device=torch.device(self.devices[0]).type))
        self.append_eos = manual_eos(tokenizer)
        self.examples = None
        if config.add_examples_for_task:
            self.examples = json.loads(Path(config.examples_file).read_text(encoding="utf-8"))
        log.info("embedder %s (%s, pooling %s) on %s; append EOS: %s", config.model_name_or_path,
                 config.model_class, config.pooling_method, ",".join(self.devices), self.append_eos)

    # ------------------------------------------------------------------ text -> token ids
    def query_inputs(self, rows: Sequence) -> tuple[list[str], list[str]]:
        """(instructed query texts, examples prefixes) for rows (dicts, or plain strings)."""
        c = self.config
        texts, prefixes = [], []
        for r in rows:
            r = {"query": r} if isinstance(r, str) else r
            instr = row_instruction(r, c.query_instruction_for_retrieval, c.use_row_prompts)
            texts.append(instructed_query(r["query"], instr, c.query_instruction_format))
            prefix = ""
            if self.examples is not None:
                ex = select_examples(r, self.examples, c.examples_number, c.examples_seed)
                prefix = examples_prefix(ex, instr, c.examples_instruction_format)
            prefixes.append(prefix)
        return texts, prefixes

    def tokenize_queries(self, rows: Sequence) -> list[list[int]]:
        c = self.config
        texts, prefixes = self.query_inputs(rows)
        if c.model_class == "decoder-only-icl":
            return tokenize_icl_queries(self.tokenizer, texts, c.query_max_length, prefixes,
                                        c.suffix, self.append_eos)
        return tokenize_texts(self.tokenizer, texts, c.query_max_length, self.append_eos)

    def tokenize_passages(self, texts: Sequence[str]) -> list[list[int]]:
        return tokenize_texts(self.tokenizer, list(texts), self.config.passage_max_length, self.append_eos)

    # ------------------------------------------------------------------ public encoding
    def encode_queries(self, rows: Sequence) -> np.ndarray:
        """Rows of the query contract (``query``, optional ``prompt``, ids for examples)."""
        log.info(describe_instruction(rows, self.config.query_instruction_for_retrieval, self.config.use_row_prompts))
        return self.encode_ids(self.tokenize_queries(rows), "queries")

    def encode_corpus(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_ids(self.tokenize_passages(texts), "passages")

    # ------------------------------------------------------------------ batching
    def _replica(self, device: str):
        if device not in self._replicas:
            model, _ = load_embedding_model(self.config.model_name_or_path, self.config.model_class,
                                            device, self._dtype, self.config.load_in_4bit,
                                            self.config.trust_remote_code, self.config.base_model)
            self._replicas[device] = model
        return self._replicas[device]

    def _forward(self, model, batch: list[list[int]], device: str) -> torch.Tensor:
        ids, mask = pad(batch, self.tokenizer.pad_token_id, "right")
        c = self.config
        if device not in self._prefix:
            self._prefix[device] = PrefixSharing(c.share_prefix and c.model_class.startswith("decoder"))
        return pooled_embeddings(model, ids.to(device), mask.to(device), c.pooling_method, c.normalize,
                                 self._prefix[device]).cpu()

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

    def _encode_ids(self, inputs: list[list[int]], what: str) -> np.ndarray:
        n = len(inputs)
        t0 = time.perf_counter()
        order = np.argsort([-len(x) for x in inputs], kind="stable")
        sorted_inputs = [inputs[i] for i in order]
        results: list[Optional[torch.Tensor]] = [None] * n
        lock = threading.Lock()
        cursor = [0]
        bar = tqdm(total=n, desc=f"embed {what}", disable=not self.config.show_progress, leave=False)

        def take(k):
            with lock:
                s = cursor[0]
                cursor[0] = min(s + k, n)
                return s, cursor[0]

        def worker(device):
            model = self._replica(device)
            was_training = model.training
            model.eval()
            bs, pending = self.config.batch_size, []
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
