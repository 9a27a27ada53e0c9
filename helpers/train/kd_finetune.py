"""Stage 03: LoRA fine-tuning of the embedder with contrastive loss + knowledge distillation.

``python -m helpers.train.kd_finetune --model_name_or_path ... --train_data scored_train.jsonl
--eval_data scored_test.jsonl --corpus_file corpus.jsonl --output_dir ...`` (FlagEmbedding's flag
names). After every epoch: eval_loss on ``eval_data`` (fixed seed), MAP@25 and
Recall@25/50/75/100 of the eval queries against the whole corpus, the adapter in
``lora_epoch_{n}``, the merged model in ``merged_model_lora_epoch_{n}`` (merged into a freshly
loaded, unquantized base), a row in ``metrics.jsonl``. Several devices (``--devices 0,1``):
re-launched under torchrun, one process per device.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from helpers.common.cli import arg
from helpers.common.devices import dtype_for, parse_devices
from helpers.embed.embedder import DEFAULT_QUERY_FORMAT, MODEL_CLASSES, Embedder, EmbedderConfig, \
    _encoder_pooling_default, load_embedding_model, manual_eos
from helpers.data.formatting import describe_instruction, uses_row_prompts
from helpers.common.cli import flag_aliases
from helpers.common.io_utils import check_writable, load_corpus, validate_queries
from helpers.train.launch import dataclass_argv, inside_torchrun, launch
from helpers.train.losses import EmbedderLoss
from helpers.eval.metrics import retrieval_metrics
from helpers.common.models import resolve_model
from helpers.embed.pooling import pool
from helpers.common.prompts import ICL_SUFFIX
from helpers.embed.search import search
from helpers.train.loop import DEFAULT_TARGETS, TrainConfig, add_lora, checkpointing_rule, dist_info, fit, \
    init_distributed, save_dir_atomic
from helpers.train.groups import GroupBatches, GroupDataConfig, load_group_rows

log = logging.getLogger(__name__)


@dataclass
class KDArgs:
    model_name_or_path: str = arg("demo:smollm2-135m-instruct", "student: demo:<alias> or a HF folder")
    embedder_model_class: str = arg("decoder-only-icl", "decoder-only-icl | decoder-only-base | encoder-only-base")
    train_data: str = arg("model_output/demo/scored/train_scored.jsonl", "mined (and scored, for KD) train queries")
    eval_data: Optional[str] = arg(None, "scored test queries: eval_loss and retrieval metrics (None: no per-epoch evaluation)")
    corpus_file: Optional[str] = arg(None, "corpus for the per-epoch retrieval metrics (needs eval_data)")
    output_dir: str = arg("model_output/demo/kd", "adapters, merged models, metrics.jsonl")
    learning_rate: float = arg(1e-4, "AdamW learning rate")
    num_train_epochs: int = arg(5, "epochs")
    per_device_train_batch_size: int = arg(8, "queries per device per step")
    gradient_accumulation_steps: int = arg(1, "micro-batches per optimizer step")
    lora_rank: int = arg(64, "LoRA r")
    lora_alpha: float = arg(32, "LoRA alpha")
    lora_dropout: float = arg(0.1, "LoRA dropout")
    target_modules: Optional[str] = arg(None, "LoRA target modules, comma-separated; None: the architecture's "
                                        "(decoders: q/k/v/o/gate/up/down_proj), logged")
    temperature: float = arg(0.02, "scores = q.p / temperature")
    train_group_size: int = arg(8, "1 positive + (train_group_size - 1) negatives per query")
    knowledge_distillation: bool = arg(True, "distill pos_scores/neg_scores; False: hard negatives only")
    kd_loss_type: str = arg("kl_div", "kl_div (added to InfoNCE) | m3_kd_loss (alone)")
    teacher_temperature: float = arg(1.0, "teacher targets = softmax(scores / teacher_temperature)")
    negatives_cross_device: bool = arg(False, "share in-batch negatives across devices (DDP)")
    query_max_len: int = arg(512, "query tokens (incl. examples, suffix, EOS)")
    passage_max_len: int = arg(512, "passage tokens (incl. EOS)")
    gradient_checkpointing: Optional[bool] = arg(None, "recompute activations in backward (less memory, ~1 more forward "
                                                 "of time); None: auto, on only where one step's activations would not "
                                                 "fit in half the free device memory (logged)")
    fp16: bool = arg(True, "mixed precision on CUDA: fp16 + GradScaler below cc 8, bf16 from 8; CPU: fp32")
    warmup_ratio: float = arg(0.1, "share of steps with linear warmup (then linear decay)")
    max_grad_norm: float = arg(1.0, "gradient clipping (0: off)")
    weight_decay: float = arg(0.0, "AdamW weight decay")
    seed: int = arg(42, "seed of sampling, shuffling, dropout and the eval batches")
    load_in_4bit: bool = arg(False, "QLoRA: 4-bit base (bitsandbytes, CUDA); LoRA weights stay fp32")
    pooling_method: Optional[str] = arg(None, "last_token | mean | cls; None: last_token for decoders, the folder's own (or cls) for encoders")
    query_instruction_for_retrieval: Optional[str] = arg(None, "global instruction; None: none (rows' prompts still apply where use_row_prompts)")
    use_row_prompts: Optional[bool] = arg(None, "a row's prompt overrides the global instruction; None: the class default (decoders yes, encoders no)")
    query_instruction_format: Optional[str] = arg(None, "None: class default (<instruct>{}\\n<query>{} for icl)")
    max_examples: int = arg(5, "decoder-only-icl: 0..max_examples in-batch examples per training query")
    example_query_max_len: int = arg(64, "tokens of an example's query")
    example_passage_max_len: int = arg(96, "tokens of an example's response")
    icl_suffix_str: str = arg(ICL_SUFFIX, "ICL query suffix")
    eval_examples_for_task: Optional[str] = arg(None, "examples.json: in-context examples in the per-epoch retrieval eval (decoder-only-icl), as 04_eval's examples_for_task; None: none")
    eval_examples_number: int = arg(1, "in-context examples per eval query (same construct first, as the seed's evaluation)")
    save_merged_lora_model: bool = arg(True, "write merged_model_lora_epoch_{n} after every epoch")
    eval_batch_size: int = arg(32, "batch size of the per-epoch corpus/query embedding")
    devices: Optional[str] = arg(None, "cpu | cuda:0 | 0,1 (several: torchrun); None: cuda:0 or cpu")
    logging_steps: int = arg(1, "log the loss every n optimizer steps")
    overwrite_output_dir: bool = arg(False, "start over instead of resuming output_dir")
    trust_remote_code: bool = arg(False, "allow model code from the model folder")
    show_progress: bool = arg(True, "tqdm bars")
    use_lora: bool = arg(True, "False: full fine-tuning (every weight trained, fp32 master weights; merged_model_* is the model)")
    group_by_length: bool = arg(False, "batches of similar query length within shuffled windows of 64 batches (less "
                                "padding; changes which queries are each other's in-batch negatives)")
    length_buckets: bool = arg(True, "run each batch's texts in length-sorted chunks, each padded to its own longest "
                               "(same embeddings and loss; less padding)")

    def __post_init__(self):
        if self.embedder_model_class not in MODEL_CLASSES:
            raise ValueError(f"embedder_model_class {self.embedder_model_class!r}: choose one of {MODEL_CLASSES}")
        if self.query_instruction_format is None:
            self.query_instruction_format = DEFAULT_QUERY_FORMAT[self.embedder_model_class]
        if isinstance(self.target_modules, (list, tuple)):
            self.target_modules = ",".join(self.target_modules)
        self.target_modules = self.target_modules or None
        for k in ("num_train_epochs", "per_device_train_batch_size", "train_group_size",
                  "query_max_len", "passage_max_len", "gradient_accumulation_steps"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be at least 1, got {getattr(self, k)}")
        if self.corpus_file and not self.eval_data:
            raise ValueError("corpus_file is given but eval_data is not: the retrieval metrics need both")
        if int(self.max_examples) < 0:
            raise ValueError(f"max_examples must be at least 0, got {self.max_examples}")
        self.embedder_config()          # the inference side's checks (pooling, examples) up front

    @property
    def decoder(self) -> bool:
        return self.embedder_model_class.startswith("decoder")

    @property
    def icl(self) -> bool:
        return self.embedder_model_class == "decoder-only-icl"

    @property
    def row_prompts(self) -> bool:
        return uses_row_prompts(self.embedder_model_class, self.use_row_prompts)

    def group_data_config(self) -> GroupDataConfig:
        """How training queries and groups are built (``append_eos`` is set once the tokenizer is known)."""
        return GroupDataConfig(
            train_group_size=self.train_group_size, query_max_len=self.query_max_len,
            passage_max_len=self.passage_max_len, knowledge_distillation=self.knowledge_distillation,
            query_instruction_for_retrieval=self.query_instruction_for_retrieval,
            query_instruction_format=self.query_instruction_format, use_row_prompts=self.row_prompts,
            icl=self.icl, use_examples=self.icl and self.max_examples > 0, max_examples=self.max_examples,
            example_query_max_len=self.example_query_max_len, example_passage_max_len=self.example_passage_max_len,
            icl_suffix_str=self.icl_suffix_str, group_by_length=self.group_by_length)

    def embedder_config(self, pooling: Optional[str] = None) -> EmbedderConfig:
        """The inference embedder of this student: the per-epoch evaluation uses it, and it is
        what mining and 04_eval build from the same flags (same instruction rule, lengths, suffix)."""
        return EmbedderConfig(
            model_name_or_path=self.model_name_or_path, model_class=self.embedder_model_class,
            pooling_method=pooling or self.pooling_method,
            query_instruction_for_retrieval=self.query_instruction_for_retrieval,
            use_row_prompts=self.use_row_prompts, query_instruction_format=self.query_instruction_format,
            suffix=self.icl_suffix_str, query_max_length=self.query_max_len,
            passage_max_length=self.passage_max_len, batch_size=self.eval_batch_size,
            add_examples_for_task=bool(self.eval_examples_for_task), examples_file=self.eval_examples_for_task,
            examples_number=self.eval_examples_number, show_progress=self.show_progress)


def training_tokenizer(tok, decoder: bool) -> bool:
    """Make ``tok`` end every text with EOS for a decoder (FlagEmbedding's ``add_eos_token``,
    saved with the model so inference appends it too) -> whether we append it ourselves."""
    if decoder:
        try:
            tok.add_eos_token = True           # transformers 5 fast tokenizers append it themselves
        except (AttributeError, ValueError):
            pass
        tok.init_kwargs["add_eos_token"] = True
    return decoder and manual_eos(tok)


def length_chunks(lengths: list[int], overhead: int = 256) -> list[list[int]]:
    """Rows of a batch in chunks of similar length -> lists of row indices (longest first).

    Minimises the padded tokens (rows x longest, summed over chunks) plus ``overhead`` token
    equivalents per extra forward (exact dynamic programme over the length-sorted rows)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    L = [lengths[i] for i in order]
    n = len(L)
    best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for j in range(1, n + 1):             # best[j]: rows order[:j]; chunk order[i:j] pads to L[i]
        for i in range(j):
            c = best[i] + (j - i) * L[i] + (overhead if i else 0)
            if c < best[j]:
                best[j], cut[j] = c, i
    chunks, j = [], n
    while j > 0:
        chunks.append(order[cut[j]:j])
        j = cut[j]
    return chunks[::-1]


def encode(model, inputs: dict, pooling: str, buckets: bool = False, overhead: int = 256) -> torch.Tensor:
    """Normalised pooled embeddings of a padded batch. ``buckets``: the rows run in length-sorted
    chunks (:func:`length_chunks`), each cut to its own longest row; the same ids and masks, so the
    same embeddings (left or right padding)."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    if not buckets or ids.shape[0] < 2:
        out = model(input_ids=ids, attention_mask=mask, return_dict=True)
        return torch.nn.functional.normalize(pool(out.last_hidden_state, mask, pooling).float(), dim=-1)
    chunks = length_chunks(mask.sum(dim=1).tolist(), overhead)
    parts, rows = [], []
    for idx in chunks:
        sel = torch.tensor(idx, device=ids.device)
        m = mask.index_select(0, sel)
        cols = m.any(dim=0).nonzero().flatten()
        lo, hi = int(cols[0]), int(cols[-1]) + 1
        m = m[:, lo:hi]
        out = model(input_ids=ids.index_select(0, sel)[:, lo:hi], attention_mask=m, return_dict=True)
        parts.append(pool(out.last_hidden_state, m, pooling).float())
        rows.extend(idx)
    emb = torch.cat(parts)
    inv = torch.empty(len(rows), dtype=torch.long, device=emb.device)
    inv[torch.tensor(rows, device=emb.device)] = torch.arange(len(rows), device=emb.device)
    return torch.nn.functional.normalize(emb.index_select(0, inv), dim=-1)


def save_tokenizer(tok, path, add_eos: bool, pooling: Optional[str] = None) -> None:
    """Save the tokenizer; decoders get ``add_eos_token: true`` so inference appends EOS too.

    Encoders also get ``1_Pooling/config.json`` (sentence-transformers' pooling file) naming the
    pooling they were trained with, so the embedder pools them the same way at inference."""
    tok.save_pretrained(str(path))
    if pooling and not add_eos:
        modes = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token",
                 "last_token": "pooling_mode_lasttoken"}
        (Path(path) / "1_Pooling").mkdir(exist_ok=True)
        (Path(path) / "1_Pooling" / "config.json").write_text(
            json.dumps({k: k == modes[pooling] for k in modes.values()}, indent=2), encoding="utf-8")
    if add_eos:
        cfg = Path(path) / "tokenizer_config.json"
        d = json.loads(cfg.read_text(encoding="utf-8"))
        d["add_eos_token"] = True
        cfg.write_text(json.dumps(d, ensure_ascii=False, indent=2), encoding="utf-8")


def merge_adapter(base_name: str, adapter_dir, target, tok, add_eos: bool, trust_remote_code=False,
                  pooling: Optional[str] = None) -> None:
    """Merge ``adapter_dir`` into a freshly loaded base in its stored (unquantized) precision, on CPU.

    ``base_name`` may itself be an adapter folder (a student that was a previous round's
    ``lora_epoch_n``): its own adapter(s) are merged into their base first, as the trainer loaded it."""
    from peft import PeftModel

    from helpers.embed.embedder import load_base_model
    base = load_base_model(base_name, dtype="auto", trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()

    def save(tmp):
        merged.save_pretrained(str(tmp), safe_serialization=True)
        save_tokenizer(tok, tmp, add_eos, pooling)
    save_dir_atomic(Path(target), save)


def retrieval_eval(model, tok, args: KDArgs, rows, corpus_ids, corpus_texts, pooling: str) -> dict:
    emb = Embedder(args.embedder_config(pooling), model, tok)
    q, p = emb.encode_queries(rows), emb.encode_corpus(corpus_texts)
    _, idx = search(q, p, topk=100)
    ranked = [[corpus_ids[j] for j in r] for r in idx]
    m = retrieval_metrics(ranked, [r["pos_ids"] for r in rows])
    return {k: m[k] for k in ("MAP@25", "Recall@25", "Recall@50", "Recall@75", "Recall@100") if k in m}


def kd_finetune(args: KDArgs, on_log: Optional[Callable[[dict], None]] = None, echo=None) -> list[dict]:
    """Train (in process, or under torchrun when several devices are given) -> metrics rows."""
    devices = parse_devices(args.devices)
    if len(devices) > 1 and not inside_torchrun():
        log.info("%d devices: launching torchrun", len(devices))
        launch("helpers.train.kd_finetune", dataclass_argv(args), devices, echo=echo)
        from helpers.common.io_utils import read_jsonl
        return [{k: v for k, v in r.items() if k != "__line__"}
                for r in read_jsonl(Path(args.output_dir) / "metrics.jsonl")]
    return _train(args, devices, on_log)


def _train(args: KDArgs, devices: list[str], on_log=None) -> list[dict]:
    t0 = time.time()
    rank, world, local = dist_info()
    # under torchrun each process takes its local rank's device (CUDA_VISIBLE_DEVICES is remapped)
    device = devices[0] if world == 1 or devices[0] == "cpu" else f"cuda:{local}"
    init_distributed(device)
    log.info("kd_finetune arguments: %s", json.dumps(asdict(args), ensure_ascii=False))
    resolve_model(args.model_name_or_path)      # a missing model folder fails before any work
    check_writable(Path(args.output_dir) / "metrics.jsonl")
    dcfg = args.group_data_config()
    train_rows = load_group_rows(args.train_data, dcfg)
    log.info("train %s", describe_instruction(train_rows, args.query_instruction_for_retrieval, args.row_prompts))
    eval_rows = load_group_rows(args.eval_data, dcfg) if args.eval_data else None
    corpus_ids, corpus_texts = load_corpus(args.corpus_file) if args.corpus_file else (None, None)
    if eval_rows is not None and corpus_ids is not None:    # gold ids absent would score 0 silently
        validate_queries(eval_rows, args.eval_data, corpus_ids=set(corpus_ids))
    dtype = dtype_for(device, args.fp16)
    model, tok = load_embedding_model(args.model_name_or_path, args.embedder_model_class, device, dtype,
                                      args.load_in_4bit, args.trust_remote_code)
    dcfg.append_eos = training_tokenizer(tok, args.decoder)
    pooling = args.embedder_config().pooling_method or _encoder_pooling_default(resolve_model(args.model_name_or_path))
    log.info("pooling: %s", pooling)
    B, G = args.per_device_train_batch_size, args.train_group_size
    gc, why = checkpointing_rule(args.gradient_checkpointing, model, device,
                                 tokens=B * (args.query_max_len + G * args.passage_max_len),
                                 longest=args.query_max_len, texts=B, dtype=torch.float32 if args.use_lora is False
                                 else dtype)
    log.info("gradient checkpointing %s (%s)", "on" if gc else "off", why)
    tcfg = TrainConfig(
        output_dir=args.output_dir, learning_rate=args.learning_rate, num_train_epochs=args.num_train_epochs,
        gradient_accumulation_steps=args.gradient_accumulation_steps, warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm, seed=args.seed, fp16=args.fp16,
        gradient_checkpointing=gc, use_lora=args.use_lora, lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        target_modules=tuple(t.strip() for t in (args.target_modules or "").split(",") if t.strip()),
        logging_steps=args.logging_steps, overwrite_output_dir=args.overwrite_output_dir,
        show_progress=args.show_progress,
        resume_keys={k: v for k, v in asdict(args).items() if k not in (
            "num_train_epochs", "output_dir", "overwrite_output_dir", "show_progress", "devices",
            "eval_batch_size", "logging_steps", "save_merged_lora_model",
            # speed/memory only (same results): a run may resume with other values
            "gradient_checkpointing", "length_buckets")
            # new fields, kept out at their defaults so that older runs still resume
            and not (k, v) in (("use_lora", True), ("group_by_length", False))} | {"world_size": world})
    model = add_lora(model, tcfg)
    if args.negatives_cross_device and world == 1:
        log.info("negatives_cross_device has no effect on one device")
    loss = EmbedderLoss(temperature=args.temperature, kd_loss_type=args.kd_loss_type,
                        teacher_temperature=args.teacher_temperature,
                        negatives_cross_device=args.negatives_cross_device, world_size=world, rank=rank)
    eval_loss_fn = EmbedderLoss(temperature=args.temperature, kd_loss_type=args.kd_loss_type,
                                teacher_temperature=args.teacher_temperature)

    overhead = 256 if str(device) == "cpu" else 4096     # a forward's fixed cost, in padded tokens

    def enc(m, inputs):
        return encode(m, inputs, pooling, args.length_buckets, overhead)

    def loss_fn(m, batch):
        return loss(enc(m, batch["queries"]), enc(m, batch["passages"]), batch.get("teacher_scores"))

    def eval_fn(m, batch):
        return eval_loss_fn(enc(m, batch["queries"]), enc(m, batch["passages"]), batch.get("teacher_scores"))

    train_b = GroupBatches(train_rows, tok, dcfg, args.per_device_train_batch_size, args.seed, world, rank)
    eval_b = GroupBatches(eval_rows, tok, dcfg, args.per_device_train_batch_size, args.seed,
                          train=False) if eval_rows else None
    log.info("train: %d queries, %d batches/epoch/device; eval: %d queries; corpus: %s passages",
             len(train_rows), len(train_b), len(eval_rows or []), len(corpus_ids) if corpus_ids else "no")

    def epoch_end(epoch, m, adapter_dir):
        out = {}
        if corpus_ids is not None:
            t = time.time()
            out.update(retrieval_eval(m, tok, args, eval_rows, corpus_ids, corpus_texts, pooling))
            out["eval_seconds"] = round(time.time() - t, 2)
        if args.save_merged_lora_model and not args.use_lora:     # full fine-tuning: the model itself
            def save(tmp):
                m.save_pretrained(str(tmp), safe_serialization=True)
                save_tokenizer(tok, tmp, args.decoder, pooling)
            save_dir_atomic(Path(args.output_dir) / f"merged_model_lora_epoch_{epoch}", save)
        elif args.save_merged_lora_model:
            merge_adapter(args.model_name_or_path, adapter_dir,
                          Path(args.output_dir) / f"merged_model_lora_epoch_{epoch}", tok, args.decoder,
                          args.trust_remote_code, pooling)
        return out

    rows = fit(model, loss_fn, train_b, len(train_b), tcfg, device,
               eval_batches=(lambda: eval_b(0)) if eval_b else None, epoch_end=epoch_end,
               save_extra=lambda d: save_tokenizer(tok, d, args.decoder, pooling), on_log=on_log,
               eval_loss_fn=eval_fn)
    if rank == 0:
        log.info("kd_finetune done in %.1f s -> %s", time.time() - t0, args.output_dir)
    if world > 1:
        import torch.distributed as dist
        dist.destroy_process_group()
    return rows


def build_parser():
    """KDArgs' flags plus FlagEmbedding's fine-tuning flags (``helpers.train.seed_flags``): mapped onto
    KDArgs, or accepted with no effect and named in one warning; ``parse_args`` -> KDArgs' fields."""
    from helpers.train.seed_flags import EMBEDDER_FLAGS, seed_parser
    return seed_parser(KDArgs, __doc__, prog="python -m helpers.train.kd_finetune",
                       aliases={"save_merged_lora_model": ["--save_merged"], **flag_aliases()}, table=EMBEDDER_FLAGS)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    a = build_parser().parse_args(argv)     # a pasted seed command: its flags mapped, one warning
    rows = kd_finetune(KDArgs(**vars(a)))
    rank, _, _ = dist_info()
    if rank == 0:
        for r in rows:
            print(json.dumps(r))


if __name__ == "__main__":
    from helpers.common.cli import run
    run(main)
