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
each group's scores with the positive, index 0, as the target. Each pair is laid out exactly as
the scoring stage lays it out: for an LLM :class:`helpers.rerank.inputs.DecoderLayout` (``[bos] A:
query \n B: passage \n prompt``, same truncation) scored by the "Yes" logit at its last real token
(:class:`helpers.rerank.paths` head); for a cross-encoder the (query, passage) text pair in the
tokenizer's template, the passage truncated first (:class:`helpers.rerank.inputs.EncoderLayout`),
scored by the head's logit (:func:`helpers.rerank.reranker.cross_encoder_scores`). Sampling and batching
are the embedder trainer's (:mod:`helpers.train.groups`), the loop is :func:`helpers.train.loop.fit`
(schedule, clipping, per-epoch ``lora_epoch_{n}``, resume). With ``eval_data`` (a mined file),
every epoch scores each eval query's whole group and logs the positive's top-1 rate and MAP in
its group.

An LLM adapter loads in the scoring stage with ``python -m helpers.rerank.add_reranker_score
--peft_adapter <output_dir>/lora_epoch_{n}``; a cross-encoder is saved whole after every epoch as
``<output_dir>/model_epoch_{n}`` (``--reranker_name_or_path`` of the scoring stage, with
``--reranker_model_class encoder-only-base``). Use the same instructions and max lengths there.
"""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

from helpers.common.cli import arg
from helpers.common.devices import check_devices, dtype_for, parse_devices
from helpers.common.io_utils import InputError, check_writable, read_jsonl, validate_queries
from helpers.common.prompts import RERANK_PROMPT, unescape
from helpers.common.tensors import chunk_overhead, in_length_chunks, pad
from helpers.rerank.inputs import DecoderLayout, format_text
from helpers.rerank.paths import PrefixPath
from helpers.rerank.paths import _Head as YesHead
from helpers.rerank.stats import group_rank_stats
from helpers.common.io_utils import save_dir_atomic
from helpers.train.loop import TrainConfig, add_lora, fit
from helpers.train.groups import batch_indices, sample_group

log = logging.getLogger(__name__)

RERANKER_CLASSES = ("decoder-only-base", "encoder-only-base")


@dataclass
class RerankerTrainArgs:
    model_name_or_path: str = arg("demo:gemma-3-270m", "base model: demo:<alias> or a HF folder")
    reranker_model_class: str = arg("decoder-only-base", "decoder-only-base (LLM 'Yes' logit) | "
                                    "encoder-only-base (cross-encoder: a one-logit classification head)")
    use_lora: bool = arg(True, "False: full fine-tuning of every weight (encoder-only-base)")
    train_data: str = arg("model_output/teacher/train_mined.jsonl", "mined train queries (query, pos, neg)")
    eval_data: Optional[str] = arg(None, "mined queries scored after every epoch (group top-1 / MAP); None: none")
    output_dir: str = arg("model_output/teacher", "lora_epoch_{n} adapters, metrics.jsonl")
    query_instruction_for_rerank: Optional[str] = arg("A: ", "query instruction (as the scoring stage)")
    query_instruction_format: str = arg("{}{}", "format(instruction, query)")
    passage_instruction_for_rerank: Optional[str] = arg("B: ", "passage instruction")
    passage_instruction_format: str = arg("{}{}", "format(instruction, passage)")
    prompt: str = arg(RERANK_PROMPT, "prompt after the pair (as the scoring stage)")
    max_len: int = arg(384, "max tokens of the pair = the scoring stage's --reranker_max_length")
    query_max_len: Optional[int] = arg(None, "max query tokens = --reranker_query_max_length (None: max_len*3//4)")
    train_group_size: int = arg(8, "1 positive + (train_group_size - 1) negatives per query")
    per_device_train_batch_size: int = arg(2, "queries per step (each gives train_group_size pairs)")
    gradient_accumulation_steps: int = arg(1, "micro-batches per optimizer step")
    max_train_queries: Optional[int] = arg(None, "use a seeded sample of this many train queries; None: all")
    learning_rate: float = arg(2e-4, "AdamW learning rate")
    num_train_epochs: int = arg(1, "epochs")
    warmup_ratio: float = arg(0.1, "linear warmup share, then linear decay")
    max_grad_norm: float = arg(1.0, "gradient clipping (0: off)")
    max_nonfinite_steps: int = arg(8, "a non-finite loss skips its optimizer step (logged, counted); stop after this many in a row")
    weight_decay: float = arg(0.0, "AdamW weight decay")
    lora_rank: int = arg(8, "LoRA r")
    lora_alpha: float = arg(16, "LoRA alpha")
    lora_dropout: float = arg(0.05, "LoRA dropout")
    target_modules: Optional[str] = arg(None, "LoRA target modules, comma-separated; None: q,k,v,o_proj for "
                                        "an LLM, the architecture's for an encoder (helpers.train.loop.resolve_target_modules)")
    lora_last_layers: Optional[int] = arg(None, "LoRA only in the last n decoder layers (smaller, faster); None: all")
    gradient_checkpointing: bool = arg(False, "recompute activations in backward")
    length_buckets: bool = arg(True, "run each batch's pairs in length-sorted chunks, each padded to its own "
                               "longest (same scores and loss; less padding)")
    use_fp16: bool = arg(True, "mixed precision on CUDA (bf16 from cc 8); CPU: fp32 (also --fp16)")
    seed: int = arg(42, "seed of sampling, batching, LoRA init and dropout")
    eval_batch_size: int = arg(16, "pairs per forward pass when scoring eval_data")
    devices: Optional[str] = arg(None, "cpu | cuda:0 (one device); None: cuda:0 or cpu")
    overwrite_output_dir: bool = arg(False, "start over instead of resuming output_dir")
    trust_remote_code: bool = arg(False, "allow model code from the model folder")
    show_progress: bool = arg(True, "tqdm bars")

    def __post_init__(self):
        for k in ("max_len", "train_group_size", "per_device_train_batch_size", "num_train_epochs",
                  "gradient_accumulation_steps", "lora_rank", "eval_batch_size"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be at least 1, got {getattr(self, k)}")
        if self.train_group_size < 2:
            raise ValueError("train_group_size must be at least 2 (a positive and a negative)")
        for k in ("max_train_queries", "lora_last_layers", "query_max_len"):
            if getattr(self, k) is not None and int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be at least 1 or None, got {getattr(self, k)}")
        if self.target_modules is None and self.reranker_model_class == "decoder-only-base":
            self.target_modules = "q_proj,k_proj,v_proj,o_proj"
        if self.reranker_model_class not in RERANKER_CLASSES:
            raise ValueError(f"reranker_model_class {self.reranker_model_class!r}: choose one of "
                             f"{', '.join(RERANKER_CLASSES)}")
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
    if not torch.isfinite(scores).all():
        raise FloatingPointError("group_ce_loss: scores hold NaN or infinity")
    target = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    return torch.nn.functional.cross_entropy(scores.float(), target)


class PairBatches:
    """``batches(epoch)`` -> padded pair batches: ``{"input_ids", "attention_mask", "group_size"}``."""

    def __init__(self, rows, layout: DecoderLayout, args: RerankerTrainArgs, pad_id: int, side: str):
        self.rows, self.layout, self.a, self.pad_id, self.side = rows, layout, args, pad_id, side

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
        qs, ps = self.texts(rows, rng)
        prefixes, suffixes = self.layout.encode(qs, ps)
        seqs = [list(pre) + list(s) for pre, ss in zip(prefixes, suffixes) for s in ss]
        ids, mask = pad(seqs, self.pad_id, self.side, multiple_of=8)
        return {"input_ids": ids, "attention_mask": mask, "group_size": self.a.train_group_size}

    def __call__(self, epoch: int):
        for step, idx in enumerate(batch_indices(len(self.rows), self.a.per_device_train_batch_size,
                                                 self.a.seed, epoch)):
            rng = random.Random(f"{self.a.seed}-{epoch}-{step}")
            yield self.build([self.rows[i] for i in idx], rng)


class EncoderPairBatches(PairBatches):
    """Cross-encoder groups: query and passage as a text pair in the tokenizer's own template
    (:class:`helpers.rerank.inputs.EncoderLayout`, the passage truncated first), padded as the
    scoring stage pads them (:func:`helpers.rerank.reranker.cross_encoder_inputs`)."""

    def __init__(self, rows, layout, args: RerankerTrainArgs, tokenizer):
        super().__init__(rows, layout, args, tokenizer.pad_token_id or 0, "right")
        self.tok = tokenizer

    def build(self, rows, rng) -> dict:
        from helpers.rerank.reranker import cross_encoder_inputs
        qs, ps = self.texts(rows, rng)
        items = [it for group in self.layout.encode(qs, ps) for it in group]
        return {**cross_encoder_inputs(items, self.tok, self.pad_id), "group_size": self.a.train_group_size}


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


def _group_texts(rows, args):
    qs = [format_text(args.query_instruction_for_rerank, unescape(args.query_instruction_format), r["query"])
          for r in rows]
    ps = [[format_text(args.passage_instruction_for_rerank, unescape(args.passage_instruction_format), p)
           for p in r["pos"] + r["neg"]] for r in rows]
    return qs, ps


def score_rows_encoder(model, tok, layout, rows, args, device) -> list[list[float]]:
    """Every row's [pos..., neg...] scored by the cross-encoder as the scoring stage would."""
    from helpers.rerank.reranker import cross_encoder_scores
    qs, ps = _group_texts(rows, args)
    with torch.no_grad():
        return cross_encoder_scores(model, tok, layout, qs, ps, device, args.eval_batch_size,
                                    show_progress=args.show_progress)


def score_rows(lm, layout, rows, args, device, yes_id, pad_id, side) -> list[list[float]]:
    """Every row's [pos..., neg...] scored by the (LoRA) model as the scoring stage would."""
    qs, ps = _group_texts(rows, args)
    prefixes, suffixes = layout.encode(qs, ps)
    path = PrefixPath(lm, device, yes_id, pad_id, side, args.eval_batch_size)
    return path.run(prefixes, suffixes, progress=args.show_progress)


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


def _train_config(args: RerankerTrainArgs, layers=None) -> TrainConfig:
    return TrainConfig(
        output_dir=args.output_dir, learning_rate=args.learning_rate, num_train_epochs=args.num_train_epochs,
        gradient_accumulation_steps=args.gradient_accumulation_steps, warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm, seed=args.seed, fp16=args.use_fp16,
        gradient_checkpointing=args.gradient_checkpointing, lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        target_modules=tuple(t.strip() for t in (args.target_modules or "").split(",") if t.strip()),
        layers_to_transform=layers, overwrite_output_dir=args.overwrite_output_dir,
        show_progress=args.show_progress, max_nonfinite_steps=args.max_nonfinite_steps,
        resume_keys={k: v for k, v in asdict(args).items() if k not in (
            "num_train_epochs", "output_dir", "overwrite_output_dir", "show_progress", "devices",
            "eval_batch_size", "eval_data", "max_nonfinite_steps", "length_buckets")})


def pair_scores(score, inputs: dict, args: RerankerTrainArgs, device) -> torch.Tensor:
    """``score(**inputs)`` -> one score per pair; with ``length_buckets`` the pairs run in
    length-sorted chunks (:func:`helpers.common.tensors.in_length_chunks`): the same scores."""
    if not args.length_buckets:
        return score(**inputs)
    return in_length_chunks(score, inputs, chunk_overhead(device))


def _log_steps(row):
    if row.get("kind") != "epoch" and row["step"] % 10 == 0:
        log.info("step %d: loss %.4f, lr %.2e", row["step"], row["loss"], row["lr"])


def _train_encoder(args: RerankerTrainArgs, path: str, tok, train_rows, eval_rows, device) -> list[dict]:
    """The cross-encoder teacher: ``AutoModelForSequenceClassification`` with one logit (a new,
    seeded head on a plain encoder), group cross-entropy, LoRA (head trained in full) or full
    fine-tuning. After every epoch the whole model (LoRA merged) is saved as
    ``model_epoch_{n}``, a folder the scoring stage loads with ``--reranker_model_class
    encoder-only-base``."""
    import copy

    from transformers import AutoModelForSequenceClassification
    from helpers.rerank.inputs import EncoderLayout
    torch.manual_seed(args.seed)                       # the new head's initialisation
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype=dtype_for(device, args.use_fp16), use_safetensors=True,
        trust_remote_code=args.trust_remote_code).to(device)
    if tok.pad_token is None:
        raise ValueError(f"{path}: the tokenizer has no pad token; a cross-encoder needs one")
    layout = EncoderLayout(tok, args.max_len, args.query_max_len)
    tcfg = _train_config(args)
    if args.use_lora:
        model = add_lora(model, tcfg, task_type="SEQ_CLS")     # peft trains the new head in full
    else:
        n = sum(p.numel() for p in model.parameters())
        log.info("full fine-tuning: %d trainable parameters", n)
    batches = EncoderPairBatches(train_rows, layout, args, tok)
    log.info("train: %d queries -> %d batches/epoch of %d x %d pairs (cross-encoder, %s)", len(train_rows),
             len(batches), args.per_device_train_batch_size, args.train_group_size,
             "LoRA" if args.use_lora else "full fine-tuning")

    def loss_fn(m, batch):
        kw = {k: v for k, v in batch.items() if k != "group_size"}
        return group_ce_loss(pair_scores(lambda **x: m(**x).logits.view(-1), kw, args, device), batch["group_size"])

    def plain(m):
        return copy.deepcopy(m).merge_and_unload() if args.use_lora else m

    def epoch_end(epoch, m, adapter_dir):
        was = m.training
        m.eval()
        try:
            whole = plain(m)
            out = {}
            if eval_rows is not None:
                t = time.time()
                out = {**eval_groups(eval_rows, score_rows_encoder(whole, tok, layout, eval_rows, args, device)),
                       "eval_seconds": round(time.time() - t, 2)}

            def save(tmp):
                whole.save_pretrained(str(tmp), safe_serialization=True)
                tok.save_pretrained(str(tmp))
            save_dir_atomic(Path(args.output_dir) / f"model_epoch_{epoch}", save)
            return out
        finally:
            m.train(was)

    return fit(model, loss_fn, batches, len(batches), tcfg, device, epoch_end=epoch_end,
               save_extra=(lambda d: write_base_name(d, args.model_name_or_path)) if args.use_lora else None,
               on_log=_log_steps)


def train_reranker(args: RerankerTrainArgs) -> list[dict]:
    """Train; returns the per-epoch metrics rows (also in ``output_dir/metrics.jsonl``)."""
    args.devices = check_devices(args.devices, stage="train_reranker")   # before anything is loaded
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from helpers.common.models import resolve_model
    t0 = time.time()
    log.info("train_reranker arguments: %s", json.dumps(asdict(args), ensure_ascii=False))
    devices = parse_devices(args.devices)
    if len(devices) > 1:
        raise ValueError(f"train_reranker runs on one device, got {devices}")
    device = devices[0]
    check_writable(Path(args.output_dir) / "metrics.jsonl")
    train_rows = load_rows(args.train_data, args, args.max_train_queries)
    eval_rows = load_rows(args.eval_data, args) if args.eval_data else None
    path = resolve_model(args.model_name_or_path)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=args.trust_remote_code)
    if args.encoder:
        rows = _train_encoder(args, path, tok, train_rows, eval_rows, device)
        log.info("train_reranker done in %.1f s -> %s", time.time() - t0, args.output_dir)
        return rows
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype_for(device, args.use_fp16), use_safetensors=True,
                                              trust_remote_code=args.trust_remote_code).to(device)
    layout = DecoderLayout(tok, args.max_len, args.query_max_len, unescape(args.prompt))
    yes_id = tok("Yes", add_special_tokens=False)["input_ids"][0]
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    side = getattr(tok, "padding_side", "left")
    n_layers = lm.config.get_text_config().num_hidden_layers
    layers = None
    if args.lora_last_layers:
        layers = tuple(range(max(0, n_layers - int(args.lora_last_layers)), n_layers))
    tcfg = _train_config(args, layers)
    model = add_lora(lm, tcfg)
    base = model.get_base_model()
    head = YesHead(base, device, yes_id, pad_id, side, args.per_device_train_batch_size)
    batches = PairBatches(train_rows, layout, args, pad_id, side)
    n_pairs = len(batches) * args.per_device_train_batch_size * args.train_group_size
    log.info("train: %d queries -> %d batches/epoch of %d x %d pairs (%d pairs/epoch); LoRA layers %s",
             len(train_rows), len(batches), args.per_device_train_batch_size, args.train_group_size, n_pairs,
             "all" if layers is None else f"{layers[0]}-{layers[-1]} of {n_layers}")

    def loss_fn(m, batch):
        kw = {k: batch[k] for k in ("input_ids", "attention_mask")}
        return group_ce_loss(pair_scores(lambda **x: head.score_full(x["input_ids"], x["attention_mask"]), kw,
                                         args, device), batch["group_size"])

    def epoch_end(epoch, m, adapter_dir):
        if eval_rows is None:
            return {}
        t = time.time()
        was = m.training
        m.eval()
        try:
            scores = score_rows(base, layout, eval_rows, args, device, yes_id, pad_id, side)
        finally:
            m.train(was)
        return {**eval_groups(eval_rows, scores), "eval_seconds": round(time.time() - t, 2)}

    rows = fit(model, loss_fn, batches, len(batches), tcfg, device, epoch_end=epoch_end,
               save_extra=lambda d: write_base_name(d, args.model_name_or_path), on_log=_log_steps)
    log.info("train_reranker done in %.1f s -> %s", time.time() - t0, args.output_dir)
    return rows


def main(argv=None) -> None:
    from helpers.common.cli import build_parser
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    a = build_parser(RerankerTrainArgs, __doc__).parse_args(argv)
    for r in train_reranker(RerankerTrainArgs(**vars(a))):
        print(json.dumps(r))


if __name__ == "__main__":
    from helpers.common.cli import run
    run(main)
