"""Stage 03: LoRA fine-tuning of the embedder with contrastive loss + knowledge distillation.

``python -m helpers.train.kd_finetune --model_name_or_path ... --train_data scored_train.jsonl
--eval_data scored_test.jsonl --corpus_file corpus.jsonl --output_dir ...`` (FlagEmbedding's flag
names). After every epoch: eval_loss on ``eval_data`` (fixed seed), MAP@25 and
Recall@25/50/75/100 of the eval queries against the whole corpus, the adapter in
``lora_epoch_{n}``, the merged model in ``merged_model_lora_epoch_{n}`` (merged into a freshly
loaded, unquantized base), a row in ``metrics.jsonl``. Several devices (``--devices 0,1``):
re-launched under torchrun, one process per device.

On Kaggle (``KAGGLE_KERNEL_RUN_TYPE`` set) only the adapters are saved per epoch and the chosen
epoch (``--merge_epoch best``: highest MAP@25) is merged once at the end (``--merge_every_epoch``):
a merged 7B model is 14 GB and /kaggle/working holds 20 GB. Free disk is checked before every
large write. Merge any epoch later with

    python -m helpers.train.kd_finetune merge --output_dir DIR [--epoch best|last|N] [--base_model PATH]

A deadline (``--deadline`` unix time, or ``$EEDI_DEADLINE`` as ``run_all.py --time_budget`` sets
it) stops training after the last epoch that ends before it, by the measured epoch time; the run
resumes from there (``overwrite_output_dir`` False).
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from helpers.common.cli import arg
from helpers.common.devices import check_devices, dtype_for, parse_devices
from helpers.embed.prefix import PrefixSharing
from helpers.common.tensors import chunk_overhead, in_length_chunks
from helpers.embed.embedder import DEFAULT_QUERY_FORMAT, MODEL_CLASSES, Embedder, EmbedderConfig, \
    _encoder_pooling_default, load_embedding_model, manual_eos, pooled_embeddings
from helpers.data.formatting import describe_instruction, uses_row_prompts
from helpers.common.cli import flag_aliases
from helpers.common.io_utils import check_free_disk, check_writable, load_corpus, validate_queries
from helpers.train.launch import dataclass_argv, inside_torchrun, launch
from helpers.train.losses import EmbedderLoss, TeacherEntropyMeter, loss_weights, warn_if_saturated
from helpers.eval.retrieval import evaluate_embedder
from helpers.common.models import resolve_model
from helpers.common.prompts import ICL_EXAMPLE_FORMAT
from helpers.embed.args import EmbedderArgs
from helpers.common.io_utils import save_dir_atomic
from helpers.common.memory import checkpointing_rule
from helpers.train.loop import TrainConfig, add_lora, dist_info, fit, init_distributed
from helpers.train.groups import GroupBatches, GroupDataConfig, load_group_rows

log = logging.getLogger(__name__)
EPOCH_KS = (25, 50, 75, 100)          # Recall@k reported after every epoch (the reference table's)


@dataclass(kw_only=True)
class KDArgs(EmbedderArgs):
    """Training flags (FlagEmbedding's names) on top of the embedder block, which also builds the
    per-epoch evaluation's embedder (:meth:`embedder_config`): the student is evaluated as 04 and
    mining embed it. ``use_fp16`` is mixed precision here (fp16 + GradScaler below cc 8, bf16 from 8)."""
    model_name_or_path: str = arg("demo:smollm2-135m-instruct", "student: demo:<alias>, a HF folder or a LoRA "
                                  "adapter folder (a previous round's lora_epoch_n: trained on top of it)")
    embedder_batch_size: int = arg(32, "texts per forward pass of the per-epoch corpus/query embedding")
    devices: Optional[str] = arg(None, "cpu | cuda:0 | 0,1 (several: torchrun); None: cuda:0 or cpu")
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
    temperature: float = arg(0.02, "student scores = q.p / temperature (FlagEmbedding's name; the teacher's is "
                             "teacher_temperature)")
    train_group_size: int = arg(8, "1 positive + (train_group_size - 1) negatives per query")
    knowledge_distillation: bool = arg(True, "distill pos_scores/neg_scores; False: hard negatives only")
    kd_loss_type: str = arg("kl_div", "kl_div (added to InfoNCE) | m3_kd_loss (alone)")
    teacher_temperature: float = arg(1.0, "teacher targets = softmax(scores / teacher_temperature) (FlagEmbedding: 1); "
                                     "a warning names the groups whose spread saturates it")
    kd_weight: float = arg(1.0, "loss = kd_weight * KD + infonce_weight * InfoNCE (with teacher scores)")
    infonce_weight: Optional[float] = arg(None, "weight of InfoNCE beside KD; None: FlagEmbedding's (1 with kl_div, "
                                          "0 with m3_kd_loss)")
    drop_suspect_negatives: bool = arg(True, "drop negatives marked neg_suspect by 02's teacher_filter mark (at least "
                                       "one kept per query, the lowest-scored); False: train on them")
    negatives_cross_device: bool = arg(False, "share in-batch negatives across devices (DDP)")
    gradient_checkpointing: Optional[bool] = arg(None, "recompute activations in backward (less memory, ~1 more forward "
                                                 "of time); None: auto, on only where one step's activations would not "
                                                 "fit in half the free device memory (logged)")
    warmup_ratio: float = arg(0.1, "share of steps with linear warmup (then linear decay)")
    max_grad_norm: float = arg(1.0, "gradient clipping (0: off)")
    max_nonfinite_steps: int = arg(8, "a non-finite loss skips its optimizer step (logged, counted); stop after this many in a row")
    weight_decay: float = arg(0.0, "AdamW weight decay")
    seed: int = arg(42, "seed of sampling, shuffling, dropout and the eval batches")
    max_examples: int = arg(5, "decoder-only-icl: 0..max_examples in-batch examples per training query")
    example_query_max_len: int = arg(64, "tokens of an example's query")
    example_passage_max_len: int = arg(96, "tokens of an example's response")
    save_merged_lora_model: bool = arg(True, "write merged models (merged_model_lora_epoch_{n}); False: adapters only")
    merge_every_epoch: Optional[bool] = arg(None, "merge after every epoch; False: only --merge_epoch, once, at the end; "
                                            "None: auto (False on Kaggle, where a merged 7B is 14 GB of its 20 GB, else True)")
    merge_epoch: str = arg("best", "the epoch merged at the end when not every epoch is: best (highest MAP@25, else "
                           "the last), last, or a number")
    deadline: Optional[float] = arg(None, "unix time: stop after the last epoch that ends before it (measured epoch "
                                    "time; resume later); None: $EEDI_DEADLINE (run_all.py --time_budget), else none")
    logging_steps: int = arg(1, "log the loss every n optimizer steps")
    overwrite_output_dir: bool = arg(False, "start over instead of resuming output_dir")
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
        if str(self.merge_epoch) not in ("best", "last") and not str(self.merge_epoch).isdigit():
            raise ValueError(f"merge_epoch {self.merge_epoch!r}: best, last or an epoch number")
        loss_weights(self.kd_loss_type, self.kd_weight, self.infonce_weight)
        if not self.normalize_embeddings:
            raise ValueError("normalize_embeddings False is not supported in training: the loss scores "
                             "L2-normalised embeddings (q.p / temperature)")
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
            icl_suffix_str=self.icl_suffix_str, group_by_length=self.group_by_length,
            drop_suspect_negatives=self.drop_suspect_negatives)

    def embedder_config(self, pooling: Optional[str] = None) -> EmbedderConfig:
        """The inference embedder of this student, from the shared embedder block: the per-epoch
        evaluation wraps the model in training with it (so no devices or 4-bit of its own), and
        it is what mining, 04_eval and the submission build from the same flags."""
        return super().embedder_config(pooling_method=pooling or self.pooling_method, devices=None,
                                       load_in_4bit=False, show_progress=self.show_progress)


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


def encode(model, inputs: dict, pooling: str, buckets: bool = False, overhead: int = 256,
           prefix: Optional[PrefixSharing] = None) -> torch.Tensor:
    """Normalised pooled embeddings of a padded batch. ``buckets``: the rows run in length-sorted
    chunks, each cut to its own longest row (:func:`helpers.common.tensors.in_length_chunks`);
    the same ids and masks, so the same embeddings (left or right padding). ``prefix``: each
    forward may run its rows' common prefix once (:mod:`helpers.embed.prefix`)."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    if not buckets:
        return pooled_embeddings(model, ids, mask, pooling, prefix=prefix)
    # rows are normalised one by one: chunking does not change them
    return in_length_chunks(lambda input_ids, attention_mask: pooled_embeddings(
        model, input_ids, attention_mask, pooling, prefix=prefix), {"input_ids": ids, "attention_mask": mask}, overhead)


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
                  pooling: Optional[str] = None, base_model: Optional[str] = None) -> None:
    """Merge ``adapter_dir`` into a freshly loaded base in its stored (unquantized) precision, on CPU.

    ``base_name`` may itself be an adapter folder (a student that was a previous round's
    ``lora_epoch_n``): its own adapter(s) are merged into their base first, as the trainer loaded it."""
    from peft import PeftModel

    from helpers.embed.embedder import load_base_model
    from helpers.common.memory import stored_bytes
    check_free_disk(Path(target).parent, stored_bytes(base_model or base_name), f"the merged model {Path(target).name}")
    base = load_base_model(base_name, dtype="auto", trust_remote_code=trust_remote_code, base_model=base_model)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()

    def save(tmp):
        merged.save_pretrained(str(tmp), safe_serialization=True)
        save_tokenizer(tok, tmp, add_eos, pooling)
    save_dir_atomic(Path(target), save)


def merge_every_epoch(value: Optional[bool]) -> bool:
    """``merge_every_epoch`` None = auto: not on Kaggle (``KAGGLE_KERNEL_RUN_TYPE``), yes elsewhere."""
    if value is not None:
        return bool(value)
    from helpers.kaggle.env import on_kaggle
    return not on_kaggle()


def choose_epoch(rows: list[dict], which="best") -> Optional[int]:
    """The epoch to merge: ``best`` (highest MAP@25; the last when no row has it), ``last``, or a number."""
    done = [r for r in rows if r.get("epoch") is not None]
    if not done:
        return None
    which = str(which)
    if which.isdigit():
        n = int(which)
        if n not in {int(r["epoch"]) for r in done}:
            raise ValueError(f"merge_epoch {n}: not a finished epoch (done: {sorted(int(r['epoch']) for r in done)})")
        return n
    scored = [r for r in done if r.get("MAP@25") is not None]
    if which == "best" and scored:
        return int(max(scored, key=lambda r: (r["MAP@25"], -int(r["epoch"])))["epoch"])
    return max(int(r["epoch"]) for r in done)


def merge_run_epoch(output_dir, epoch="best", base_model: Optional[str] = None, target=None,
                    trust_remote_code: bool = False) -> Path:
    """Merge one epoch's adapter of a finished (or stopped) run into ``merged_model_lora_epoch_{n}``.

    ``epoch``: best / last / a number (:func:`choose_epoch` over ``metrics.jsonl``); ``base_model``:
    the base model folder (default: the adapter's ``base_model_name_or_path``; give it when the
    base sits at another path in this session). The tokenizer (with its EOS rule) and the pooling
    file come from the adapter folder. Free disk is checked first. -> the merged folder."""
    from transformers import AutoTokenizer

    from helpers.common.io_utils import read_jsonl
    out = Path(output_dir)
    metrics = out / "metrics.jsonl"
    rows = read_jsonl(metrics) if metrics.exists() else []
    n = int(epoch) if str(epoch).isdigit() and not rows else choose_epoch(rows, epoch)
    if n is None:
        raise FileNotFoundError(f"{metrics}: no finished epoch to merge")
    adapter = out / f"lora_epoch_{n}"
    if not (adapter / "adapter_config.json").exists():
        raise FileNotFoundError(f"{adapter}: no adapter_config.json (is {out} a kd_finetune output_dir?)")
    base = base_model or json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
    tok = AutoTokenizer.from_pretrained(str(adapter), trust_remote_code=trust_remote_code)
    cfg = adapter / "tokenizer_config.json"
    add_eos = cfg.exists() and bool(json.loads(cfg.read_text(encoding="utf-8")).get("add_eos_token"))
    pooling = None
    pool_cfg = adapter / "1_Pooling" / "config.json"
    if pool_cfg.exists():
        on = [k for k, v in json.loads(pool_cfg.read_text(encoding="utf-8")).items() if v]
        pooling = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                   "pooling_mode_lasttoken": "last_token"}.get(on[0] if on else "")
    target = Path(target) if target else out / f"merged_model_lora_epoch_{n}"
    log.info("merging %s into %s -> %s", adapter, base, target)
    merge_adapter(base, adapter, target, tok, add_eos, trust_remote_code, pooling)
    return target


class DeadlineReached(Exception):
    """Raised between epochs when the next one would end after the deadline."""


def deadline_of(args: KDArgs) -> Optional[float]:
    """``args.deadline``, else ``$EEDI_DEADLINE`` (unix time), else None."""
    if args.deadline is not None:
        return float(args.deadline)
    env = os.environ.get("EEDI_DEADLINE")
    return float(env) if env else None


def epoch_guard(batches: Callable, deadline: Optional[float], past_seconds: list[float],
                agree: Callable[[bool], bool] = lambda stop: stop, clock: Callable[[], float] = time.time):
    """``batches`` wrapped so that asking for epoch e's batches raises :class:`DeadlineReached`
    when e would end after ``deadline``. An epoch's cost is the time between two calls (training,
    evaluation, saving: the trainer asks once per epoch), or, before one is measured, the longest
    of ``past_seconds`` (earlier sessions' epochs); with neither, the epoch runs unless the deadline
    has passed. ``agree(stop)``
    gives every rank the same answer (an all-reduce under DDP)."""
    last = [None]
    state = {"epoch_seconds": None}

    def guarded(epoch):
        now = clock()
        if last[0] is not None:
            state["epoch_seconds"] = now - last[0]
        est = state["epoch_seconds"] or (max(past_seconds) if past_seconds else None)
        if deadline is not None and agree(now >= deadline or (est is not None and now + est > deadline)):
            if est is None:
                raise DeadlineReached(f"the deadline passed {now - deadline:.0f} s ago: stopped after epoch {epoch - 1}")
            raise DeadlineReached(f"epoch {epoch} would end about {now + est - deadline:.0f} s after the "
                                  f"deadline (an epoch takes about {est:.0f} s): stopped after epoch {epoch - 1}")
        last[0] = now
        return batches(epoch)
    guarded.state = state
    return guarded


def stop_report(output_dir, epochs_done: int, epochs: int, reason: str) -> None:
    """Tell run_all.py (``$EEDI_STOP_REPORT``) and the folder (``stopped.json``) that training stopped early."""
    rec = {"stage": "kd_finetune", "output_dir": str(output_dir), "epochs_done": epochs_done,
           "num_train_epochs": epochs, "reason": reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    Path(output_dir, "stopped.json").write_text(json.dumps(rec, indent=2), encoding="utf-8")
    if os.environ.get("EEDI_STOP_REPORT"):
        with open(os.environ["EEDI_STOP_REPORT"], "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")


def check_memory(args: KDArgs, devices: list[str]) -> Optional[dict]:
    """The memory plan of this training on CUDA (printed; refused when it cannot fit); CPU: nothing."""
    if not any(str(d).startswith("cuda") for d in devices):
        return None
    from helpers.embed.embedder import adapter_chain
    from helpers.common.memory import check_stage
    base, _ = adapter_chain(args.model_name_or_path)
    return check_stage("train", args, devices, model=base)


def retrieval_eval(model, tok, args: KDArgs, rows, corpus_ids, corpus_texts, pooling: str) -> dict:
    """The epoch's MAP@25 / Recall@k: the evaluation stage's own code on an Embedder around the model."""
    emb = Embedder(args.embedder_config(pooling), model, tok)
    m = evaluate_embedder(emb, rows, corpus_ids, corpus_texts, ks=EPOCH_KS)
    return {k: m[k] for k in ("MAP@25", *(f"Recall@{k}" for k in EPOCH_KS)) if k in m}


def kd_finetune(args: KDArgs, on_log: Optional[Callable[[dict], None]] = None, echo=None) -> list[dict]:
    """Train (in process, or under torchrun when several devices are given) -> metrics rows."""
    args.devices = check_devices(args.devices, stage="kd_finetune")   # before anything is loaded
    devices = parse_devices(args.devices)
    check_memory(args, devices)        # CUDA: the plan, printed; what cannot fit stops before any load
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
    if args.knowledge_distillation and rank == 0:    # once, before any model loads
        warn_if_saturated([r["pos_scores"] + r["neg_scores"] for r in train_rows], args.teacher_temperature,
                          what=f"{args.train_data} (per query, all its scored passages)")
    eval_rows = load_group_rows(args.eval_data, dcfg) if args.eval_data else None
    corpus_ids, corpus_texts = load_corpus(args.corpus_file) if args.corpus_file else (None, None)
    if eval_rows is not None and corpus_ids is not None:    # gold ids absent would score 0 silently
        validate_queries(eval_rows, args.eval_data, corpus_ids=set(corpus_ids))
    dtype = dtype_for(device, args.use_fp16)
    model, tok = load_embedding_model(args.model_name_or_path, args.embedder_model_class, device, dtype,
                                      args.load_in_4bit, args.trust_remote_code, base_model=args.base_model)
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
        weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm, seed=args.seed, fp16=args.use_fp16,
        gradient_checkpointing=gc, use_lora=args.use_lora, lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        target_modules=tuple(t.strip() for t in (args.target_modules or "").split(",") if t.strip()),
        logging_steps=args.logging_steps, overwrite_output_dir=args.overwrite_output_dir,
        show_progress=args.show_progress, max_nonfinite_steps=args.max_nonfinite_steps,
        resume_keys={k: v for k, v in asdict(args).items() if k not in (
            "num_train_epochs", "output_dir", "overwrite_output_dir", "show_progress", "devices",
            "embedder_batch_size", "logging_steps", "max_nonfinite_steps", "save_merged_lora_model", "merge_every_epoch", "merge_epoch",
            "deadline",
            # speed/memory only (the same maths; share_prefix draws the prefix's dropout mask once
            # per batch): a run may resume with other values; embedding_cache is not used in training
            "gradient_checkpointing", "length_buckets", "share_prefix", "embedding_cache")
            # new fields, kept out at their defaults so that older runs still resume
            and not (k, v) in (("use_lora", True), ("group_by_length", False), ("kd_weight", 1.0),
                               ("infonce_weight", None), ("drop_suspect_negatives", True),
                               ("normalize_embeddings", True), ("base_model", None),
                               ("examples_instruction_format", ICL_EXAMPLE_FORMAT))} | {"world_size": world})
    model = add_lora(model, tcfg)
    if args.negatives_cross_device and world == 1:
        log.info("negatives_cross_device has no effect on one device")
    weights = dict(kd_weight=args.kd_weight, infonce_weight=args.infonce_weight)
    loss = EmbedderLoss(temperature=args.temperature, kd_loss_type=args.kd_loss_type,
                        teacher_temperature=args.teacher_temperature,
                        negatives_cross_device=args.negatives_cross_device, world_size=world, rank=rank, **weights)
    eval_loss_fn = EmbedderLoss(temperature=args.temperature, kd_loss_type=args.kd_loss_type,
                                teacher_temperature=args.teacher_temperature, **weights)
    log.info("loss: %s", f"{loss.kd_w:g} * {args.kd_loss_type} + {loss.nce_w:g} * InfoNCE (student temperature "
             f"{args.temperature:g}, teacher temperature {args.teacher_temperature:g})"
             if args.knowledge_distillation else f"InfoNCE (temperature {args.temperature:g})")
    entropy = TeacherEntropyMeter(args.teacher_temperature)    # this epoch's training groups (rank 0's)

    overhead = chunk_overhead(device)

    prefix = PrefixSharing(args.share_prefix and args.decoder)   # checked on the first batch's queries

    def enc(m, inputs):
        return encode(m, inputs, pooling, args.length_buckets, overhead, prefix)

    def loss_fn(m, batch):
        entropy.update(batch.get("teacher_scores"), batch["queries"]["input_ids"].shape[0], G)
        return loss(enc(m, batch["queries"]), enc(m, batch["passages"]), batch.get("teacher_scores"))

    def eval_fn(m, batch):
        return eval_loss_fn(enc(m, batch["queries"]), enc(m, batch["passages"]), batch.get("teacher_scores"))

    train_b = GroupBatches(train_rows, tok, dcfg, args.per_device_train_batch_size, args.seed, world, rank)
    eval_b = GroupBatches(eval_rows, tok, dcfg, args.per_device_train_batch_size, args.seed,
                          train=False) if eval_rows else None
    log.info("train: %d queries, %d batches/epoch/device; eval: %d queries; corpus: %s passages",
             len(train_rows), len(train_b), len(eval_rows or []), len(corpus_ids) if corpus_ids else "no")

    merge_each = merge_every_epoch(args.merge_every_epoch)
    out_dir = Path(args.output_dir)
    log.info("merged models: %s", "none (save_merged_lora_model False)" if not args.save_merged_lora_model else
             "after every epoch" if merge_each or not args.use_lora else
             f"epoch {args.merge_epoch!r} only, at the end (adapters every epoch)")
    from helpers.common.io_utils import read_jsonl
    past = read_jsonl(out_dir / "metrics.jsonl") \
        if (out_dir / "metrics.jsonl").exists() and not args.overwrite_output_dir else []
    if rank == 0:                     # the whole run's writes, checked before the first step
        from helpers.common.memory import stored_bytes
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        left = max(0, args.num_train_epochs - len(past))
        merged = stored_bytes(args.model_name_or_path) if args.use_lora else n_train * 4
        need = left * n_train * 4 + 3 * n_train * 4 + (
            0 if not args.save_merged_lora_model else left * merged if merge_each or not args.use_lora else merged)
        if left:
            check_free_disk(out_dir, need, f"{left} epoch(s) of adapters, the training state"
                            + (" and the merged model(s)" if args.save_merged_lora_model else ""))

    def epoch_end(epoch, m, adapter_dir):
        out = entropy.result()          # teacher_entropy, teacher_entropy_rel of this epoch's groups
        entropy.reset()
        if corpus_ids is not None:
            t = time.time()
            out.update(retrieval_eval(m, tok, args, eval_rows, corpus_ids, corpus_texts, pooling))
            out["eval_seconds"] = round(time.time() - t, 2)
        if args.save_merged_lora_model and not args.use_lora:     # full fine-tuning: the model itself
            def save(tmp):
                m.save_pretrained(str(tmp), safe_serialization=True)
                save_tokenizer(tok, tmp, args.decoder, pooling)
            check_free_disk(out_dir, sum(p.numel() * p.element_size() for p in m.parameters()),
                            f"the model of epoch {epoch}")
            save_dir_atomic(Path(args.output_dir) / f"merged_model_lora_epoch_{epoch}", save)
        elif args.save_merged_lora_model and merge_each:
            merge_adapter(args.model_name_or_path, adapter_dir,
                          Path(args.output_dir) / f"merged_model_lora_epoch_{epoch}", tok, args.decoder,
                          args.trust_remote_code, pooling, args.base_model)
        return out

    deadline = deadline_of(args)
    def agree(stop):                                            # every rank stops, or none
        if world == 1:
            return stop
        import torch.distributed as dist
        t = torch.tensor([1 if stop else 0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())
    batches = epoch_guard(train_b, deadline, [float(r.get("train_seconds") or 0) + float(r.get("eval_seconds") or 0)
                                              for r in past], agree)
    if deadline is not None:
        log.info("deadline %s (in %.0f s): training stops after the last epoch that ends before it",
                 time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(deadline)), deadline - time.time())
    stopped = None
    try:
        rows = fit(model, loss_fn, batches, len(train_b), tcfg, device,
                   eval_batches=(lambda: eval_b(0)) if eval_b else None, epoch_end=epoch_end,
                   save_extra=lambda d: save_tokenizer(tok, d, args.decoder, pooling), on_log=on_log,
                   eval_loss_fn=eval_fn)
    except DeadlineReached as e:
        stopped = str(e)
        rows = [{k: v for k, v in r.items() if k != "__line__"} for r in read_jsonl(out_dir / "metrics.jsonl")] \
            if (out_dir / "metrics.jsonl").exists() else []
        if rank == 0:
            log.warning("time budget: %s; run again with the same output_dir to resume", stopped)
            stop_report(out_dir, len(rows), args.num_train_epochs, stopped)
    if world > 1:
        import torch.distributed as dist
        dist.destroy_process_group()
    if rank == 0 and stopped is None and args.save_merged_lora_model and args.use_lora and not merge_each:
        n = choose_epoch(rows, args.merge_epoch)
        target = out_dir / f"merged_model_lora_epoch_{n}"
        if n is not None and not (target / "config.json").exists():
            del model, batches, train_b                          # free the GPU before the CPU merge
            import gc
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            log.info("merging epoch %d (merge_epoch %r) -> %s", n, args.merge_epoch, target)
            merge_adapter(args.model_name_or_path, out_dir / f"lora_epoch_{n}", target, tok, args.decoder,
                          args.trust_remote_code, pooling, args.base_model)
    if rank == 0 and stopped is None and (out_dir / "stopped.json").exists():
        (out_dir / "stopped.json").unlink()
    if rank == 0:
        log.info("kd_finetune %s in %.1f s -> %s", "stopped" if stopped else "done", time.time() - t0, args.output_dir)
    return rows


def build_parser():
    """KDArgs' flags plus FlagEmbedding's fine-tuning flags (``helpers.train.seed_flags``): mapped onto
    KDArgs, or accepted with no effect and named in one warning; ``parse_args`` -> KDArgs' fields."""
    from helpers.train.seed_flags import EMBEDDER_FLAGS, seed_parser
    return seed_parser(KDArgs, __doc__, prog="python -m helpers.train.kd_finetune",
                       aliases={"save_merged_lora_model": ["--save_merged"], **flag_aliases()}, table=EMBEDDER_FLAGS)


def merge_main(argv=None) -> None:
    """``python -m helpers.train.kd_finetune merge --output_dir DIR [--epoch best|last|N] [--base_model PATH]``"""
    import argparse
    p = argparse.ArgumentParser(prog="python -m helpers.train.kd_finetune merge",
                                description="Merge one epoch's LoRA adapter of a kd_finetune run into a full model "
                                            "(merged_model_lora_epoch_{n}), after a free-disk check.")
    p.add_argument("--output_dir", required=True, help="the run's output_dir (lora_epoch_{n}, metrics.jsonl)")
    p.add_argument("--epoch", default="best", help="best (highest MAP@25), last, or an epoch number")
    p.add_argument("--base_model", default=None, help="base model folder (default: the adapter's own base path)")
    p.add_argument("--target", default=None, help="where to write (default: OUTPUT_DIR/merged_model_lora_epoch_{n})")
    p.add_argument("--trust_remote_code", action="store_true")
    a = p.parse_args(argv)
    print(merge_run_epoch(a.output_dir, a.epoch, a.base_model, a.target, a.trust_remote_code))


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import sys
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["merge"]:
        return merge_main(argv[1:])
    a = build_parser().parse_args(argv)     # a pasted seed command: its flags mapped, one warning
    rows = kd_finetune(KDArgs(**vars(a)))
    rank, _, _ = dist_info()
    if rank == 0:
        for r in rows:
            print(json.dumps(r))


if __name__ == "__main__":
    from helpers.common.cli import run
    run(main)
