"""Fine-tune a teacher reranker: an LLM ("Yes" logit, ``decoder-only-base``, LoRA; the demo's
teacher) or a cross-encoder (``encoder-only-base``: a one-logit classification head on an encoder,
LoRA or full fine-tuning).

    python -m helpers.train.train_reranker --model_name_or_path demo:gemma-3-270m \
        --train_data mined_train.jsonl --output_dir model_output/teacher \
        --train_group_size 8 --max_len 128 --lora_rank 8 --target_modules q_proj,v_proj
    python -m helpers.train.train_reranker --reranker_model_class encoder-only-base \
        --model_name_or_path demo:all-minilm-l6-v2 --use_lora False --train_data ... --output_dir ...

FlagEmbedding's reranker fine-tuning objective: every query gives a group of 1 positive +
(``train_group_size`` - 1) negatives sampled from its ``neg``; the loss is the cross-entropy of
each group's scores with the positive, index 0, as the target.

One path for both classes; what differs is data (:data:`helpers.rerank.scorers.KINDS`: the Auto
class, peft's task type, whether a model is saved whole):

1. load through the scoring stage's loader (:func:`helpers.rerank.scorers.load_pair_model`): model,
   tokenizer, pair layout and scorer exactly as 02 builds them (an LLM: ``[bos] A: query \n B:
   passage \n prompt``, scored by the "Yes" logit at its last real token; a cross-encoder: the text
   pair in the tokenizer's template, the passage truncated first, scored by a one-logit head, new
   and seeded on a plain encoder);
2. LoRA (:func:`helpers.train.lora.add_lora`; a cross-encoder's head trained in full) or, for a
   cross-encoder, full fine-tuning;
3. pair batches (:class:`PairBatches`: sampling and batching of :mod:`helpers.train.groups`, the
   layout's pairs padded by the scorer), group cross-entropy over the scorer's outputs
   (:func:`pair_scores`: length-sorted chunks, same scores);
4. :func:`helpers.train.loop.fit` (schedule, clipping, per-epoch ``lora_epoch_{n}``, resume), with
   the checks around it (:mod:`helpers.train.guards`): free disk for the run's epochs before the first
   step, the memory plan on CUDA before loading (:func:`helpers.common.memory.check_stage`, the
   "train" estimate), and the time budget (``--deadline`` or ``$EEDI_DEADLINE``: stop after the last
   epoch that ends in time, ``stopped.json``, resume later).

After every epoch, with ``eval_data`` (a mined file), each eval query's whole group is scored by the
scoring stage's own reranker around the model in training (:func:`eval_scores`) and the positive's
top-1 rate and MAP in its group are logged.

One device only: several devices (DDP) are not implemented for the teacher; a list of several is
refused.

An LLM adapter loads in the scoring stage with ``python -m helpers.rerank.add_reranker_score
--peft_adapter <output_dir>/lora_epoch_{n}``; a cross-encoder is saved whole after every epoch as
``<output_dir>/model_epoch_{n}`` (``--reranker_name_or_path`` of the scoring stage, with
``--reranker_model_class encoder-only-base``). Use the same instructions and max lengths there.
"""
from __future__ import annotations

import copy
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import torch

from helpers.common.cli import arg, retune
from helpers.common.devices import check_devices, parse_devices
from helpers.common.io_utils import InputError, check_writable, read_jsonl, save_dir_atomic, validate_queries
from helpers.common.prompts import RERANK_PROMPT, unescape
from helpers.common.tensors import chunk_overhead, in_length_chunks
from helpers.rerank.inputs import format_text
from helpers.rerank.scorers import kind_of, load_pair_model
from helpers.rerank.stats import group_rank_stats
from helpers.train.args import TrainArgs
from helpers.train.groups import batch_indices, sample_group
from helpers.train.guards import check_run_disk, fit_in_budget
from helpers.train.loop import past_rows
from helpers.train.lora import add_lora

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class RerankerTrainArgs(TrainArgs):
    """The teacher's stage: the training block (:class:`~helpers.train.args.TrainArgs`, with the
    defaults of a small LoRA teacher) and the scoring stage's pair layout."""
    model_name_or_path: str = arg("demo:gemma-3-270m", "base model: demo:<alias> or a HF folder")
    reranker_model_class: str = arg("decoder-only-base", "decoder-only-base (LLM 'Yes' logit) | "
                                    "encoder-only-base (cross-encoder: a one-logit classification head)")
    train_data: str = arg("model_output/teacher/train_mined.jsonl", "mined train queries (query, pos, neg)")
    eval_data: Optional[str] = arg(None, "mined queries scored after every epoch (group top-1 / MAP); None: none",
                                   resume=False)
    output_dir: str = retune(TrainArgs, "output_dir", "model_output/teacher")
    query_instruction_for_rerank: Optional[str] = arg("A: ", "query instruction (as the scoring stage)")
    query_instruction_format: str = arg("{}{}", "format(instruction, query)")
    passage_instruction_for_rerank: Optional[str] = arg("B: ", "passage instruction")
    passage_instruction_format: str = arg("{}{}", "format(instruction, passage)")
    prompt: str = arg(RERANK_PROMPT, "prompt after the pair (as the scoring stage)")
    max_len: int = arg(384, "max tokens of the pair = the scoring stage's --reranker_max_length")
    query_max_len: Optional[int] = arg(None, "max query tokens = --reranker_query_max_length (None: max_len*3//4)")
    per_device_train_batch_size: int = retune(TrainArgs, "per_device_train_batch_size", 2)
    max_train_queries: Optional[int] = arg(None, "use a seeded sample of this many train queries; None: all")
    learning_rate: float = retune(TrainArgs, "learning_rate", 2e-4)
    num_train_epochs: int = retune(TrainArgs, "num_train_epochs", 1)
    lora_rank: int = retune(TrainArgs, "lora_rank", 8)
    lora_alpha: float = retune(TrainArgs, "lora_alpha", 16)
    lora_dropout: float = retune(TrainArgs, "lora_dropout", 0.05)
    lora_last_layers: Optional[int] = arg(None, "LoRA only in the last n decoder layers (smaller, faster); None: all")
    gradient_checkpointing: Optional[bool] = retune(TrainArgs, "gradient_checkpointing", False)
    eval_batch_size: int = arg(16, "pairs per forward pass when scoring eval_data", resume=False)

    def __post_init__(self):
        super().__post_init__()
        for k in ("max_len", "eval_batch_size"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be at least 1, got {getattr(self, k)}")
        if self.train_group_size < 2:
            raise ValueError("train_group_size must be at least 2 (a positive and a negative)")
        for k in ("max_train_queries", "lora_last_layers", "query_max_len"):
            if getattr(self, k) is not None and int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be at least 1 or None, got {getattr(self, k)}")
        if self.target_modules is None and self.reranker_model_class == "decoder-only-base":
            self.target_modules = "q_proj,k_proj,v_proj,o_proj"
        kind_of(self.reranker_model_class)      # the scoring stage's classes, its error
        if not self.use_lora and self.reranker_model_class != "encoder-only-base":
            raise ValueError("use_lora False (full fine-tuning) is for encoder-only-base rerankers; "
                             "an LLM reranker trains LoRA adapters")

    @property
    def encoder(self) -> bool:
        return self.reranker_model_class == "encoder-only-base"


def group_ce_loss(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """Cross-entropy of each group's scores with index 0 (the positive) as the target.

    ``scores``: ``[B * group_size]`` (groups contiguous) or ``[B, group_size]``.
    """
    if scores.dim() == 1:
        if group_size < 2 or scores.numel() % group_size:
            raise ValueError(f"group_ce_loss: {scores.numel()} scores do not split into groups of {group_size}")
        scores = scores.view(-1, group_size)
    if scores.dim() != 2 or scores.shape[1] != group_size:
        raise ValueError(f"group_ce_loss: scores of shape {tuple(scores.shape)}, expected [B, {group_size}]")
    # non-finite scores (an fp16 overflow) give a NaN loss: fit() skips that step, as for the student
    target = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    return torch.nn.functional.cross_entropy(scores.float(), target)


class PairBatches:
    """``batches(epoch)`` -> padded pair batches ``{"input_ids", "attention_mask"[, "token_type_ids"],
    "group_size"}``: each query's group (positive first) laid out by the scoring stage's layout
    (``layout.pairs``) and padded by the scorer that scores it (``scorer.inputs``)."""

    def __init__(self, rows, layout, scorer, args: RerankerTrainArgs):
        self.rows, self.layout, self.scorer, self.a = rows, layout, scorer, args

    def __len__(self):
        return len(batch_indices(len(self.rows), self.a.per_device_train_batch_size, self.a.seed, 0))

    def texts(self, rows, rng):
        a = self.a
        qs, ps = [], []
        for r in rows:
            group, _ = sample_group(r, a.train_group_size, rng, with_scores=False)
            qs.append(format_text(a.query_instruction_for_rerank, unescape(a.query_instruction_format), r["query"]))
            ps.append([format_text(a.passage_instruction_for_rerank, unescape(a.passage_instruction_format), p)
                       for p in group])
        return qs, ps

    def build(self, rows, rng) -> dict:
        pairs = [it for group in self.layout.pairs(*self.texts(rows, rng)) for it in group]
        return {**self.scorer.inputs(pairs), "group_size": self.a.train_group_size}

    def __call__(self, epoch: int):
        for step, idx in enumerate(batch_indices(len(self.rows), self.a.per_device_train_batch_size,
                                                 self.a.seed, epoch)):
            rng = random.Random(f"{self.a.seed}-{epoch}-{step}")
            yield self.build([self.rows[i] for i in idx], rng)


def load_rows(path, args: RerankerTrainArgs, limit=None) -> list[dict]:
    rows = read_jsonl(path)
    validate_queries(rows, path, need_neg=True)
    for r in rows:
        if not r["neg"]:
            raise InputError(path, r["__line__"], "neg", "empty: every query needs negatives (run 01_mine_hn)")
    if limit is not None and limit < len(rows):
        keep = sorted(random.Random(args.seed).sample(range(len(rows)), int(limit)))
        rows = [rows[i] for i in keep]
    short = sum(len(r["neg"]) < args.train_group_size - 1 for r in rows)
    if short:
        log.warning("%s: %d of %d queries have fewer than %d negatives: sampled with repetition",
                    path, short, len(rows), args.train_group_size - 1)
    return rows


def eval_groups(rows, scores) -> dict:
    """Group top-1 / MAP (helpers.rerank.stats) and the mean group cross-entropy (first positive)."""
    scored = [dict(r, pos_scores=s[:len(r["pos"])], neg_scores=s[len(r["pos"]):]) for r, s in zip(rows, scores)]
    st = group_rank_stats(scored)
    ce = [float(torch.logsumexp(torch.tensor(s), 0) - s[0]) for s in scores]
    return {"group_top1": st["top1"], "group_map": st["map"], "group_size": st["groups_size_mean"],
            "group_ce": sum(ce) / len(ce)}


def trained_model(args: RerankerTrainArgs, epoch: int) -> dict:
    """The scoring stage's model arguments for epoch ``epoch`` of this training: a cross-encoder's
    ``model_epoch_{n}`` folder, or the base with the ``lora_epoch_{n}`` adapter of an LLM reranker."""
    if args.encoder:
        return dict(reranker_name_or_path=str(Path(args.output_dir) / f"model_epoch_{epoch}"))
    return dict(reranker_name_or_path=args.model_name_or_path,
                peft_adapter=str(Path(args.output_dir) / f"lora_epoch_{epoch}"))


def write_base_name(adapter_dir, base_name: str) -> None:
    """Record the base model as given (e.g. ``demo:gemma-3-270m``), not this machine's cache path."""
    cfg = Path(adapter_dir) / "adapter_config.json"
    d = json.loads(cfg.read_text(encoding="utf-8"))
    d["base_model_name_or_path"] = base_name
    cfg.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def pair_scores(score, inputs: dict, args: RerankerTrainArgs, device) -> torch.Tensor:
    """``score(**inputs)`` -> one score per pair; with ``length_buckets`` the pairs run in
    length-sorted chunks (:func:`helpers.common.tensors.in_length_chunks`): the same scores."""
    if not args.length_buckets:
        return score(**inputs)
    return in_length_chunks(score, inputs, chunk_overhead(device))


def _log_steps(row):
    if row.get("kind") != "epoch" and row["step"] % 10 == 0:
        log.info("step %d: loss %.4f, lr %.2e", row["step"], row["loss"], row["lr"])


def check_memory(args: RerankerTrainArgs, device: str):
    """The memory plan of this training on CUDA (printed; refused when it cannot fit); CPU: nothing.
    The student's "train" estimate with each pair as one text of ``max_len`` + the prompt."""
    from helpers.common.memory import PROMPT_TOKENS, check_stage
    p = dict(asdict(args), query_max_len=0, passage_max_len=args.max_len + PROMPT_TOKENS, load_in_4bit=False)
    return check_stage("train", p, [device], model=args.model_name_or_path)


def _last_layers(model, args: RerankerTrainArgs, decoder: bool):
    if not (decoder and args.lora_last_layers):
        return None
    n = model.config.get_text_config().num_hidden_layers
    return tuple(range(max(0, n - int(args.lora_last_layers)), n))


def train_reranker(args: RerankerTrainArgs) -> list[dict]:
    """Train; returns the per-epoch metrics rows (also in ``output_dir/metrics.jsonl``)."""
    args.devices = check_devices(args.devices, stage="train_reranker")   # before anything is loaded
    t0 = time.time()
    log.info("train_reranker arguments: %s", json.dumps(asdict(args), ensure_ascii=False))
    devices = parse_devices(args.devices)
    if len(devices) > 1:
        raise ValueError(f"train_reranker runs on one device, got {devices}")
    device = devices[0]
    check_memory(args, device)         # CUDA: the plan, printed; what cannot fit stops before any load
    out_dir = Path(args.output_dir)
    check_writable(out_dir / "metrics.jsonl")
    train_rows = load_rows(args.train_data, args, args.max_train_queries)
    eval_rows = load_rows(args.eval_data, args) if args.eval_data else None
    parts = load_pair_model(args.model_name_or_path, args.reranker_model_class, max_length=args.max_len,
                            query_max_length=args.query_max_len, prompt=unescape(args.prompt), device=device,
                            use_fp16=args.use_fp16, trust_remote_code=args.trust_remote_code, training=True,
                            seed=args.seed)
    layers = _last_layers(parts.model, args, parts.decoder)
    model = add_lora(parts.model, args, task_type=parts.kind.task_type, layers=layers)
    score = parts.scorer(model)
    batches = PairBatches(train_rows, parts.layout, score, args)
    log.info("train: %d queries -> %d batches/epoch of %d x %d pairs (%s, %s%s)", len(train_rows), len(batches),
             args.per_device_train_batch_size, args.train_group_size, args.reranker_model_class,
             "LoRA" if args.use_lora else "full fine-tuning",
             "" if layers is None else f", LoRA layers {layers[0]}-{layers[-1]}")

    def loss_fn(m, batch):
        kw = {k: v for k, v in batch.items() if k != "group_size"}
        return group_ce_loss(pair_scores(score, kw, args, device), batch["group_size"])

    def epoch_end(epoch, m, adapter_dir):
        was = m.training
        m.eval()
        try:
            scored = copy.deepcopy(m).merge_and_unload() if parts.kind.saved_whole and args.use_lora else m
            out = {}
            if eval_rows is not None:
                t = time.time()
                out = {**eval_groups(eval_rows, eval_scores(parts, scored, eval_rows, args, device)),
                       "eval_seconds": round(time.time() - t, 2)}
            if parts.kind.saved_whole:          # the scoring stage's --reranker_name_or_path

                def save(tmp):
                    scored.save_pretrained(str(tmp), safe_serialization=True)
                    parts.tokenizer.save_pretrained(str(tmp))
                save_dir_atomic(out_dir / f"model_epoch_{epoch}", save)
            return out
        finally:
            m.train(was)

    past = past_rows(out_dir, args.overwrite_output_dir)
    whole = sum(p.numel() * p.element_size() for p in model.parameters()) if parts.kind.saved_whole else 0
    check_run_disk(out_dir, model, args.num_train_epochs - len(past), whole,
                   "adapters" + (" and whole models" if whole else ""))
    rows, _ = fit_in_budget(model, loss_fn, batches, len(batches), args, device, stage="train_reranker", past=past,
                            inputs=[args.train_data, args.eval_data, parts.path],
                            epoch_end=epoch_end, on_log=_log_steps,
                            save_extra=(lambda d: write_base_name(d, args.model_name_or_path)) if args.use_lora else None)
    log.info("train_reranker done in %.1f s -> %s", time.time() - t0, args.output_dir)
    return rows


def eval_scores(parts, model, rows, args: RerankerTrainArgs, device) -> list[list[float]]:
    """Every row's [pos..., neg...] scored by ``model`` with the scoring stage's own reranker
    (:func:`helpers.rerank.reranker.load_reranker` around the model in training; its fast paths
    as in 02, without the self-check)."""
    from helpers.rerank.reranker import load_reranker
    rer = load_reranker(args.model_name_or_path, args.reranker_model_class, loaded=replace(parts, model=model),
                        devices=device, batch_size=args.eval_batch_size, max_length=args.max_len,
                        query_max_length=args.query_max_len, use_fp16=args.use_fp16,
                        query_instruction_for_rerank=args.query_instruction_for_rerank,
                        query_instruction_format=unescape(args.query_instruction_format),
                        passage_instruction_for_rerank=args.passage_instruction_for_rerank,
                        passage_instruction_format=unescape(args.passage_instruction_format),
                        check_fast_paths=False, show_progress=args.show_progress)
    return rer.score_groups([r["query"] for r in rows], [r["pos"] + r["neg"] for r in rows])


def main(argv=None) -> None:
    from helpers.common.cli import build_parser
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    a = build_parser(RerankerTrainArgs, __doc__).parse_args(argv)
    for r in train_reranker(RerankerTrainArgs(**vars(a))):
        print(json.dumps(r))


if __name__ == "__main__":
    from helpers.common.cli import run
    run(main)
