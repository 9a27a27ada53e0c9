"""A reranker's settings, declared once: what the scoring stage (02), the teacher check (02a), the
evaluation's second stage (04) and the submission's (05) load a reranker with.

:class:`RerankerArgs` holds the model and how pairs are built and batched (FlagEmbedding's flag
names); :func:`build_reranker` loads it through :func:`helpers.rerank.reranker.load_reranker`
(exact token layout, length sorting, shared query prefix, the "Yes" row only), after the memory plan
(:func:`check_memory`, CUDA only) has had its say. Stages extend the dataclass with their own files.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from helpers.common.cli import check_types
from helpers.common.prompts import RERANK_PROMPT, unescape

log = logging.getLogger(__name__)


@dataclass
class RerankerArgs:
    reranker_name_or_path: str = field(default=None, metadata={"help": "Local HF folder or demo:<alias>; a "
                                       "train_reranker output folder stands for its last model_epoch_n."})
    reranker_model_class: str = field(default="decoder-only-base", metadata={
        "help": "decoder-only-base (LLM 'Yes' logit) or encoder-only-base (cross-encoder)."})
    query_instruction_for_rerank: Optional[str] = field(default="A: ", metadata={"help": "Query instruction."})
    query_instruction_format: str = field(default="{}{}", metadata={"help": "Format of instruction and query."})
    passage_instruction_for_rerank: Optional[str] = field(default="B: ", metadata={"help": "Passage instruction."})
    passage_instruction_format: str = field(default="{}{}", metadata={"help": "Format of instruction and passage."})
    prompt: Optional[str] = field(default=RERANK_PROMPT, metadata={"help": "Decoder prompt after the pair."})
    reranker_max_length: int = field(default=384, metadata={"help": "Max tokens of the pair (FlagEmbedding's rule)."})
    reranker_query_max_length: Optional[int] = field(default=None, metadata={
        "help": "Max query tokens; default max_length * 3 // 4."})
    use_fp16: bool = field(default=True, metadata={"help": "Half precision on GPU (fp16 below cc 8, else bf16); fp32 on CPU."})
    reranker_batch_size: int = field(default=16, metadata={"help": "Pairs per forward pass."})
    devices: Union[list, str, None] = field(default=None, metadata={"help": "Devices, e.g. cuda:0 cuda:1 (one worker each)."})
    normalize: bool = field(default=False, metadata={"help": "Apply a sigmoid to the scores."})
    peft_adapter: Optional[str] = field(default=None, metadata={"help": "LoRA adapter folder merged into the reranker."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom model code."})
    yes_only: bool = field(default=True, metadata={"help": "Fast path: project only onto the 'Yes' row."})
    sort_by_length: bool = field(default=True, metadata={"help": "Fast path: batch by length."})
    share_query_prefix: bool = field(default=True, metadata={"help": "Fast path: reuse each query's KV cache."})

    def __post_init__(self):
        check_types(self)
        self.reranker_name_or_path = last_epoch_model(self.reranker_name_or_path)


# FlagEmbedding's other names of these flags (its add_reranker_score / reranker scripts)
ALIASES = {"query_instruction_format": ["--query_instruction_format_for_rerank"],
           "passage_instruction_format": ["--passage_instruction_format_for_rerank"],
           "peft_adapter": ["--reranker_peft_path"]}


def reranker_spellings(block: dict) -> dict:
    """A reranker block (a dict of settings) with FlagEmbedding's spellings renamed to ours."""
    out = dict(block)
    for ours, others in ALIASES.items():
        for other in others:
            other = other.lstrip("-")
            if other in out:
                if ours in out and out[ours] != out[other]:
                    raise ValueError(f"reranker: {other} and {ours} are the same setting, given twice with different values")
                out[ours] = out.pop(other)
    return out


def last_epoch_model(path):
    """A train_reranker output folder (``model_epoch_1``, ``model_epoch_2``, ... and no model of its
    own) stands for its last epoch's model; anything else is returned as it is."""
    p = Path(str(path)) if path else None
    if p is None or not p.is_dir() or (p / "config.json").exists():
        return path
    epochs = sorted((int(d.name.rsplit("_", 1)[1]), d) for d in p.glob("model_epoch_*")
                    if d.name.rsplit("_", 1)[1].isdigit() and (d / "config.json").is_file())
    if not epochs:
        return path
    log.info("reranker %s: a training folder, scoring with its last epoch %s", path, epochs[-1][1].name)
    return str(epochs[-1][1])


def trained_on(reranker_path) -> Optional[str]:
    """The ``train_data`` a train_reranker model was trained on (``model_epoch_n`` or its folder), read
    from the folder's training state (the settings a run resumes with); None for a model not trained
    here (a pretrained reranker, a folder without its state)."""
    p = Path(str(reranker_path)) if reranker_path else None
    if p is None or not p.is_dir():
        return None
    for folder in (p, p.parent):
        state = folder / "training_state.pt"
        if state.is_file():
            import torch
            keys = torch.load(state, map_location="cpu", weights_only=True, mmap=True).get("resume_keys")
            return json.loads(keys).get("train_data") if keys else None
    return None


def check_not_trained_on(reranker_path, query_ids, queries_file) -> None:
    """Refuse to measure a teacher on queries it was trained on (a teacher trained in another run folder, on
    another split, would re-order its own training queries: a result that only looks good)."""
    train = trained_on(reranker_path)
    if train is None:
        return
    if not Path(train).is_file():
        log.warning("reranker %s was trained on %s, which no longer exists: cannot check that it never saw "
                    "the queries of %s", reranker_path, train, queries_file)
        return
    from helpers.common.io_utils import read_jsonl
    seen = {r.get("query_id") for r in read_jsonl(train)}
    both = sorted(set(query_ids) & seen)
    if both:
        raise ValueError(f"reranker {reranker_path} was trained on {train}, which holds {len(both)} of the "
                         f"{len(set(query_ids))} queries of {queries_file} it is asked to re-order (e.g. "
                         f"{', '.join(map(str, both[:3]))}): train the teacher on this run's train split (the same "
                         "prepare settings: data, split, test_fraction, seed)")


def check_model_args(a: RerankerArgs) -> None:
    """Class, adapter and model folder, checked before anything is loaded."""
    from helpers.common.models import resolve_model
    from helpers.rerank.scorers import MODEL_CLASSES, check_adapter
    if not a.reranker_name_or_path:
        raise ValueError("--reranker_name_or_path is required")
    if a.reranker_model_class not in MODEL_CLASSES:
        raise ValueError(f"--reranker_model_class {a.reranker_model_class!r} is not supported; "
                         f"choose one of {', '.join(MODEL_CLASSES)}")
    for name in ("reranker_max_length", "reranker_batch_size"):
        if int(getattr(a, name)) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(a, name)}")
    check_adapter(a.peft_adapter)                   # before the base is resolved (a GGUF is converted then)
    resolve_model(a.reranker_name_or_path)          # a missing model folder fails here, not after loading


def check_memory(args: RerankerArgs):
    """:func:`helpers.common.memory.check_stage` for the reranker on its devices (nothing on CPU)."""
    from helpers.common.devices import parse_devices
    from helpers.common.memory import check_stage
    return check_stage("score", args, parse_devices(args.devices))


def build_reranker(args: RerankerArgs):
    from helpers.rerank.reranker import load_reranker
    check_memory(args)
    return load_reranker(
        args.reranker_name_or_path, args.reranker_model_class, peft_adapter=args.peft_adapter,
        use_fp16=args.use_fp16, query_instruction_for_rerank=args.query_instruction_for_rerank,
        query_instruction_format=unescape(args.query_instruction_format),
        passage_instruction_for_rerank=args.passage_instruction_for_rerank,
        passage_instruction_format=unescape(args.passage_instruction_format),
        prompt=unescape(args.prompt), max_length=args.reranker_max_length,
        query_max_length=args.reranker_query_max_length, batch_size=args.reranker_batch_size,
        devices=args.devices, normalize=args.normalize, trust_remote_code=args.trust_remote_code,
        yes_only=args.yes_only, sort_by_length=args.sort_by_length, share_prefix=args.share_query_prefix)
