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

    python -m helpers.train.merge --output_dir DIR [--epoch best|last|N] [--base_model PATH]

(:mod:`helpers.train.merge`). A deadline (``--deadline`` unix time, or ``$EEDI_DEADLINE`` as
``run_all.py --time_budget`` sets it) stops training after the last epoch that ends before it, by
the measured epoch time (:mod:`helpers.train.budget`); the run resumes from there
(``overwrite_output_dir`` False). Several devices: :mod:`helpers.train.distributed`.

Why this file is over 400 lines: ``KDArgs`` is the stage's one declaration of its ~50 settings (each
with its help text, as the notebook and the command show them); the rest is the stage's driver
(load, loss, batches, per-epoch evaluation, merge), which the loop, losses, groups and merge modules
already keep small.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import torch

from helpers.common.cli import arg, flag_aliases, retune
from helpers.common.devices import check_devices, dtype_for, parse_devices
from helpers.common.io_utils import check_free_disk, check_writable, load_corpus, save_dir_atomic, \
    validate_queries
from helpers.common.memory import checkpointing_rule
from helpers.common.models import resolve_model
from helpers.common.tensors import chunk_overhead, in_length_chunks
from helpers.data.formatting import describe_instruction, uses_row_prompts
from helpers.embed.args import DEFAULT_QUERY_FORMAT, EmbedderArgs
from helpers.embed.embedder import Embedder
from helpers.embed.forward import pooled_embeddings
from helpers.data.formatting import load_examples
from helpers.embed.loading import (adapter_chain, check_memory, _encoder_pooling_default, load_embedding_model, manual_eos,
                                   save_tokenizer)
from helpers.embed.prefix import PrefixSharing
from helpers.eval.retrieval import evaluate_embedder, evaluate_embeddings
from helpers.train.args import TrainArgs
from helpers.train.guards import check_run_disk, fit_in_budget
from helpers.train.lora import add_lora, trainable_count
from helpers.train.loop import past_rows
from helpers.train.distributed import (agree, all_gather_object, all_gather_tensors, dataclass_argv, dist_info,
                                      init_distributed, inside_torchrun, interleave, launch, rank_device)
from helpers.train.groups import GroupBatches, load_group_rows
from helpers.train.losses import (EmbedderLoss, TeacherEntropyMeter, auto_teacher_temperature, loss_weights,
                                  warn_if_saturated)
from helpers.train.merge import (CHOSEN_ADAPTER, choose_adapter, choose_epoch, merge_adapter, merge_every_epoch,
                                 merged_is_current)

log = logging.getLogger(__name__)
EPOCH_KS = (25, 50, 75, 100)          # Recall@k reported after every epoch (the reference table's)


# The student's settings that depend on its class when left None. Decoders (LLM students, LoRA) keep
# FlagEmbedding's. Encoders (a 22M-parameter MiniLM) get what won on real data: full fine-tuning at
# lr 5e-5, temperature 0.05 (bench/README.md, "Round 1 against sentence-transformers": +0.069 MAP@25
# over LoRA r32 at lr 2e-4 / temperature 0.02, on 708 eedi_dev test queries).
CLASS_DEFAULTS = {"decoder": {"use_lora": True, "learning_rate": 1e-4, "temperature": 0.02},
                  "encoder": {"use_lora": False, "learning_rate": 5e-5, "temperature": 0.05}}


def class_defaults(embedder_model_class: str) -> dict:
    """The :data:`CLASS_DEFAULTS` of a student class."""
    return CLASS_DEFAULTS["decoder" if embedder_model_class.startswith("decoder") else "encoder"]


@dataclass(kw_only=True)
class KDArgs(EmbedderArgs, TrainArgs):
    """The student's stage: the embedder block (:class:`~helpers.embed.args.EmbedderArgs`, which
    also builds the per-epoch evaluation's :class:`~helpers.embed.embedder.Embedder`: the student is
    evaluated as 04 and mining embed it), the training block (:class:`~helpers.train.args.TrainArgs`,
    FlagEmbedding's defaults), and what only distillation has. ``use_fp16`` is mixed precision here
    (fp16 + GradScaler below cc 8, bf16 from 8)."""
    model_name_or_path: str = retune(EmbedderArgs, "model_name_or_path", "demo:smollm2-135m-instruct")
    embedder_batch_size: int = retune(EmbedderArgs, "embedder_batch_size", 32)
    output_dir: str = retune(TrainArgs, "output_dir", "model_output/demo/kd")
    use_lora: Optional[bool] = retune(TrainArgs, "use_lora", None, "None: by student class (decoders LoRA, "
                                      "encoders full fine-tuning: CLASS_DEFAULTS)")
    learning_rate: Optional[float] = retune(TrainArgs, "learning_rate", None, "None: by student class (decoders "
                                            "1e-4, FlagEmbedding's; encoders 5e-5: CLASS_DEFAULTS)")
    train_data: str = arg("model_output/demo/scored/train_scored.jsonl", "mined (and scored, for KD) train queries")
    eval_data: Optional[str] = arg(None, "scored test queries: eval_loss and retrieval metrics (None: no per-epoch evaluation)")
    corpus_file: Optional[str] = arg(None, "corpus for the per-epoch retrieval metrics (needs eval_data)")
    temperature: Optional[float] = arg(None, "student scores = q.p / temperature (FlagEmbedding's name; the teacher's "
                                       "is teacher_temperature); None: by student class (decoders 0.02, "
                                       "FlagEmbedding's; encoders 0.05: CLASS_DEFAULTS)", before=0.02)
    knowledge_distillation: bool = arg(True, "distill pos_scores/neg_scores; False: hard negatives only")
    kd_loss_type: str = arg("kl_div", "kl_div (added to InfoNCE) | m3_kd_loss (alone) | margin_mse (teacher margins "
                            "pos - neg, added to InfoNCE)")
    kd_in_batch_score: Optional[float] = arg(None, "kl_div over the whole in-batch row (the 1st-place Eedi KD): other "
                                             "groups' passages get this raw teacher score, a copy of one the teacher "
                                             "scored for the query keeps that score; None: the own group only "
                                             "(FlagEmbedding)", before=None)
    teacher_temperature: Union[float, str] = arg(1.0, "teacher targets = softmax(scores / teacher_temperature) "
                                                 "(FlagEmbedding: 1); auto: the temperature whose mean group entropy "
                                                 "is teacher_entropy_target x log(group size) on the train file "
                                                 "(logged); a warning names the groups whose spread saturates it")
    teacher_entropy_target: float = arg(0.5, "with teacher_temperature auto: the mean group entropy wanted, as a "
                                        "share of log(group size) (1: uniform targets, 0: one-hot)", before=0.5)
    kd_weight: float = arg(1.0, "loss = kd_weight * KD + infonce_weight * InfoNCE (with teacher scores)", before=1.0)
    infonce_weight: Optional[float] = arg(None, "weight of InfoNCE beside KD; None: FlagEmbedding's (1 with kl_div, "
                                          "0 with m3_kd_loss)", before=None)
    drop_suspect_negatives: bool = arg(True, "drop negatives marked neg_suspect by 02's teacher_filter mark (at least "
                                       "one kept per query, the lowest-scored); False: train on them", before=True)
    teacher_report: Optional[str] = arg(None, "rerank_eval.json (02a's, or helpers.eval.rerank_eval's: the teacher "
                                        "re-ordering its student's top k), read before a KD run: a teacher not "
                                        "better than its student is named in a warning, or stops the run "
                                        "(require_better_teacher)", resume=False)
    require_better_teacher: bool = arg(False, "with teacher_report: stop a KD run whose teacher does not re-order "
                                       "better than its student (interval above zero) instead of warning",
                                       resume=False)
    negatives_cross_device: bool = arg(False, "share in-batch negatives across devices (DDP)")
    mask_false_negatives: bool = arg(False, "in-batch passages with the text of a query's positive (another "
                                     "query of the same misconception) are not its negatives: masked out of "
                                     "the InfoNCE softmax", before=False)
    max_examples: int = arg(5, "decoder-only-icl: 0..max_examples in-batch examples per training query")
    example_query_max_len: int = arg(64, "tokens of an example's query")
    example_passage_max_len: int = arg(96, "tokens of an example's response")
    save_merged_lora_model: bool = arg(True, "write merged models (merged_model_lora_epoch_{n}); False: adapters only, "
                                       "the merge_epoch's copied to chosen_adapter (what 04/05 evaluate, unmerged)",
                                       resume=False)
    merge_every_epoch: Optional[bool] = arg(None, "merge after every epoch; False: only --merge_epoch, once, at the end; "
                                            "None: auto (False on Kaggle, where a merged 7B is 14 GB of its 20 GB, else True)",
                                            resume=False)
    merge_epoch: str = arg("best", "the epoch merged at the end when not every epoch is: best (highest MAP@25, else "
                           "the last), last, or a number", resume=False)
    no_duplicate_positives: bool = arg(False, "no two queries with a shared positive id in one batch (sentence-"
                                       "transformers' NO_DUPLICATES, by id); the number of batches stays the same",
                                       before=False)
    hard_negative_queries: int = arg(0, "pull up to this many queries per query into its batch whose positive is one "
                                     "of its negatives (by id; the 1st-place Eedi batching: in-batch negatives as hard "
                                     "as the mined ones); implies no two queries with a shared positive in a batch; "
                                     "0: off", before=0)
    group_by_length: bool = arg(False, "batches of similar query length within shuffled windows of 64 batches (less "
                                "padding; changes which queries are each other's in-batch negatives)", before=False)

    def __post_init__(self):
        super().__post_init__()     # the embedder block's checks (pooling, examples), then the training block's
        if int(self.hard_negative_queries) < 0:
            raise ValueError(f"hard_negative_queries must be >= 0, got {self.hard_negative_queries}")
        if self.hard_negative_queries and self.group_by_length:
            raise ValueError("hard_negative_queries and group_by_length both choose each batch's rows: use one")
        self.by_class = {k: v for k, v in class_defaults(self.embedder_model_class).items() if getattr(self, k) is None}
        for k, v in self.by_class.items():      # not a field: what was chosen for the log, once
            setattr(self, k, v)
        if self.query_instruction_format is None:
            self.query_instruction_format = DEFAULT_QUERY_FORMAT[self.embedder_model_class]
        if self.corpus_file and not self.eval_data:
            raise ValueError("corpus_file is given but eval_data is not: the retrieval metrics need both")
        if int(self.max_examples) < 0:
            raise ValueError(f"max_examples must be at least 0, got {self.max_examples}")
        if str(self.merge_epoch) not in ("best", "last") and not str(self.merge_epoch).isdigit():
            raise ValueError(f"merge_epoch {self.merge_epoch!r}: best, last or an epoch number")
        loss_weights(self.kd_loss_type, self.kd_weight, self.infonce_weight)
        if isinstance(self.teacher_temperature, str) and self.teacher_temperature != "auto":
            try:
                self.teacher_temperature = float(self.teacher_temperature)
            except ValueError:
                raise ValueError(f"teacher_temperature must be a number > 0 or auto, got {self.teacher_temperature!r}") from None
        if self.kd_in_batch_score is not None and self.kd_loss_type != "kl_div":
            raise ValueError(f"kd_in_batch_score works with kd_loss_type kl_div, not {self.kd_loss_type}")
        if not self.normalize_embeddings:
            raise ValueError("normalize_embeddings False is not supported in training: the loss scores "
                             "L2-normalised embeddings (q.p / temperature)")

    @property
    def icl(self) -> bool:
        return self.embedder_model_class == "decoder-only-icl"

    @property
    def row_prompts(self) -> bool:
        return uses_row_prompts(self.embedder_model_class, self.use_row_prompts)


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


def retrieval_eval(model, tok, args: KDArgs, rows, corpus_ids, corpus_texts, pooling: str,
                   rank: int = 0, world: int = 1, gather: Optional[Callable] = None) -> dict:
    """The epoch's MAP@25 / Recall@k: the evaluation stage's own code on an Embedder around the model.

    With ``world`` > 1 every rank embeds its share (queries and passages ``rank::world``) and
    ``gather(obj) -> [obj of rank 0, 1, ...]`` (default ``torch.distributed.all_gather_object``)
    brings them to rank 0, which ranks and scores; the other ranks return {}. The embeddings are the
    same rows in the same order as on one device (each text is embedded alone of the others)."""
    emb = Embedder(args, model, tok, pooling=pooling, show_progress=args.show_progress and rank == 0)
    if world <= 1:
        m = evaluate_embedder(emb, rows, corpus_ids, corpus_texts, ks=EPOCH_KS)
    else:
        mine = (emb.encode_queries(list(rows[rank::world])), emb.encode_corpus(list(corpus_texts[rank::world])))
        parts = (gather or all_gather_object)(mine)
        if rank != 0:
            return {}
        q, p = (interleave([part[i] for part in parts]) for i in (0, 1))
        m = evaluate_embeddings(q, p, rows, corpus_ids, ks=EPOCH_KS)
    return {k: m[k] for k in ("MAP@25", *(f"Recall@{k}" for k in EPOCH_KS)) if k in m}


def kd_finetune(args: KDArgs, on_log: Optional[Callable[[dict], None]] = None, echo=None) -> list[dict]:
    """Train (in process, or under torchrun when several devices are given) -> metrics rows."""
    args.devices = check_devices(args.devices, stage="kd_finetune")   # before anything is loaded
    if args.knowledge_distillation and args.teacher_report:     # every rank reads it alike: all stop or none
        from helpers.eval.rerank_eval import teacher_check
        better, line = teacher_check(args.teacher_report)
        if not better and args.require_better_teacher:
            raise ValueError(f"{line}: a teacher that knows no more than its student has nothing to distil "
                             "(require_better_teacher True); train a better teacher or set it False")
        (log.info if better else log.warning)("%s%s", line, "" if better else
                                               ": distilling from a teacher no better than its student")
    if getattr(args, "by_class", None):
        log.info("%s student: %s (the class defaults, kd_finetune.CLASS_DEFAULTS%s); set them to override",
                 args.embedder_model_class, ", ".join(f"{k} {v}" for k, v in args.by_class.items()),
                 ": FlagEmbedding's" if args.decoder else ": the winners on eedi_dev, bench/README.md")
    devices = parse_devices(args.devices)
    check_memory(args, devices, "train")   # CUDA: the plan, printed; what cannot fit stops before any load
    if len(devices) > 1 and not inside_torchrun():
        log.info("%d devices: launching torchrun", len(devices))
        launch("helpers.train.kd_finetune", dataclass_argv(args), devices, echo=echo)
        return past_rows(args.output_dir)
    return _train(args, devices, on_log)


def _train(args: KDArgs, devices: list[str], on_log=None) -> list[dict]:
    t0 = time.time()
    rank, world, local = dist_info()
    # under torchrun each process takes its local rank's device (CUDA_VISIBLE_DEVICES is remapped;
    # more ranks than GPUs share them round robin: EEDI_DDP_BACKEND=gloo, tools/gpu_check.sh)
    device = devices[0] if world == 1 or devices[0] == "cpu" else rank_device(local)
    init_distributed(device)
    log.info("kd_finetune arguments: %s", json.dumps(asdict(args), ensure_ascii=False))
    model_path = resolve_model(args.model_name_or_path)      # a missing model folder fails before any work
    check_writable(Path(args.output_dir) / "metrics.jsonl")
    train_rows = load_group_rows(args.train_data, args)
    log.info("train %s", describe_instruction(train_rows, args.query_instruction_for_retrieval, args.row_prompts))
    if args.teacher_temperature == "auto":       # every rank reads the same file: the same value
        G = args.train_group_size
        t = auto_teacher_temperature([(r["pos_scores"][:1] + r["neg_scores"])[:G] for r in train_rows]
                                     if args.knowledge_distillation else [[0.0, 1.0]], args.teacher_entropy_target)
        log.info("teacher_temperature auto: %.4g (mean group entropy %.2f of log %d on %s)", t,
                 args.teacher_entropy_target, G, args.train_data)
        args.teacher_temperature = t
    if args.knowledge_distillation and rank == 0:    # once, before any model loads
        warn_if_saturated([r["pos_scores"] + r["neg_scores"] for r in train_rows], args.teacher_temperature,
                          what=f"{args.train_data} (per query, all its scored passages)")
    eval_rows = load_group_rows(args.eval_data, args) if args.eval_data else None
    corpus_ids, corpus_texts = load_corpus(args.corpus_file) if args.corpus_file else (None, None)
    if eval_rows is not None and corpus_ids is not None:    # gold ids absent would score 0 silently
        validate_queries(eval_rows, args.eval_data, corpus_ids=set(corpus_ids))
    if args.examples_for_task:          # read by the per-epoch evaluation: checked before the model loads
        load_examples(args.examples_for_task)
    base_folder, adapters = adapter_chain(args.model_name_or_path, args.base_model)
    model_folders = [base_folder, *adapters]     # with the data files: what a resumed run must be made from
    dtype = dtype_for(device, args.use_fp16)
    model, tok = load_embedding_model(args.model_name_or_path, args.embedder_model_class, device, dtype,
                                      args.load_in_4bit, args.trust_remote_code, base_model=args.base_model,
                                      keep_last_adapter=False)      # our LoRA goes on a merged start
    append_eos = training_tokenizer(tok, args.decoder)
    pooling = args.pooling_method or ("last_token" if args.decoder else
                                      _encoder_pooling_default(model_path))
    log.info("pooling: %s", pooling)
    B, G = args.per_device_train_batch_size, args.train_group_size
    gc, why = checkpointing_rule(args.gradient_checkpointing, model, device,
                                 tokens=B * (args.query_max_len + G * args.passage_max_len),
                                 longest=args.query_max_len, texts=B, dtype=torch.float32 if args.use_lora is False
                                 else dtype)
    log.info("gradient checkpointing %s (%s)", "on" if gc else "off", why)
    model = add_lora(model, args, gradient_checkpointing=gc)
    if args.negatives_cross_device and world == 1:
        log.info("negatives_cross_device has no effect on one device")
    weights = dict(kd_weight=args.kd_weight, infonce_weight=args.infonce_weight)
    loss = EmbedderLoss(temperature=args.temperature, kd_loss_type=args.kd_loss_type,
                        teacher_temperature=args.teacher_temperature,
                        negatives_cross_device=args.negatives_cross_device,
                        mask_false_negatives=args.mask_false_negatives, kd_in_batch_score=args.kd_in_batch_score,
                        world_size=world, rank=rank, all_gather=all_gather_tensors if world > 1 else None, **weights)
    eval_loss_fn = EmbedderLoss(temperature=args.temperature, kd_loss_type=args.kd_loss_type,
                                teacher_temperature=args.teacher_temperature,
                                mask_false_negatives=args.mask_false_negatives,
                                kd_in_batch_score=args.kd_in_batch_score, **weights)
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
        return loss(enc(m, batch["queries"]), enc(m, batch["passages"]), batch.get("teacher_scores"),
                    batch["passage_keys"])

    def eval_fn(m, batch):
        return eval_loss_fn(enc(m, batch["queries"]), enc(m, batch["passages"]), batch.get("teacher_scores"),
                            batch["passage_keys"])

    train_b = GroupBatches(train_rows, tok, args, args.per_device_train_batch_size, args.seed, world, rank,
                           append_eos=append_eos)
    eval_b = GroupBatches(eval_rows, tok, args, args.per_device_train_batch_size, args.seed,
                          train=False, append_eos=append_eos) if eval_rows else None
    log.info("train: %d queries, %d batches/epoch/device; eval: %d queries; corpus: %s passages",
             len(train_rows), len(train_b), len(eval_rows or []), len(corpus_ids) if corpus_ids else "no")

    merge_each = merge_every_epoch(args.merge_every_epoch)
    out_dir = Path(args.output_dir)
    log.info("merged models: %s", "none (save_merged_lora_model False)" if not args.save_merged_lora_model else
             "after every epoch" if merge_each or not args.use_lora else
             f"epoch {args.merge_epoch!r} only, at the end (adapters every epoch)")
    past = past_rows(out_dir, args.overwrite_output_dir)
    if rank == 0:                     # the whole run's writes, checked before the first step
        from helpers.common.memory import stored_bytes
        left = max(0, args.num_train_epochs - len(past))
        merged = stored_bytes(args.model_name_or_path) if args.use_lora else trainable_count(model) * 4
        each = args.save_merged_lora_model and (merge_each or not args.use_lora)
        check_run_disk(out_dir, model, left, whole_bytes=merged if each else 0,
                       once_bytes=merged if args.save_merged_lora_model and not each else 0,
                       what="adapters" + (" and merged models" if args.save_merged_lora_model else ""))

    def epoch_eval(epoch, m):          # every rank embeds its share of the evaluation (none idles)
        t = time.time()
        out = retrieval_eval(m, tok, args, eval_rows, corpus_ids, corpus_texts, pooling, rank, world)
        return {**out, "eval_seconds": round(time.time() - t, 2)} if rank == 0 else {}

    def epoch_end(epoch, m, adapter_dir):
        out = entropy.result()          # teacher_entropy, teacher_entropy_rel of this epoch's groups
        entropy.reset()
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

    try:
        rows, stopped = fit_in_budget(
            model, loss_fn, train_b, len(train_b), args, device, stage="kd_finetune", past=past,
            agree=lambda stop: agree(stop, device, world), run_keys={"world_size": world},
            inputs=[args.train_data, args.eval_data, args.corpus_file, args.examples_for_task, *model_folders],
            eval_batches=(lambda: eval_b(0)) if eval_b else None, epoch_end=epoch_end,
            epoch_eval=epoch_eval if corpus_ids is not None else None,
            save_extra=lambda d: save_tokenizer(tok, d, args.decoder, pooling), on_log=on_log, eval_loss_fn=eval_fn)
    except torch.cuda.OutOfMemoryError as e:      # the plan's numbers and what would fit, not a bare CUDA error
        from helpers.common.memory import out_of_memory_advice
        raise MemoryError(out_of_memory_advice("train", args, [device] * world)) from e
    if world > 1:
        import torch.distributed as dist
        dist.destroy_process_group()
    if rank == 0 and stopped is None and args.save_merged_lora_model and args.use_lora and not merge_each:
        n = choose_epoch(rows, args.merge_epoch)
        target = out_dir / f"merged_model_lora_epoch_{n}"
        if n is not None and not merged_is_current(target, out_dir / f"lora_epoch_{n}"):
            del model, train_b                                   # free the GPU before the CPU merge
            import gc
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            log.info("merging epoch %d (merge_epoch %r) -> %s", n, args.merge_epoch, target)
            merge_adapter(args.model_name_or_path, out_dir / f"lora_epoch_{n}", target, tok, args.decoder,
                          args.trust_remote_code, pooling, args.base_model)
    if rank == 0 and stopped is None and not args.save_merged_lora_model and args.use_lora:
        n = choose_epoch(rows, args.merge_epoch)      # no merge: the chosen adapter is what 04 and 05 read
        if n is not None:
            choose_adapter(out_dir / f"lora_epoch_{n}", out_dir / CHOSEN_ADAPTER, n, args.merge_epoch)
    if rank == 0:
        log.info("kd_finetune %s in %.1f s -> %s", "stopped" if stopped else "done", time.time() - t0, args.output_dir)
    return rows


def build_parser():
    """KDArgs' flags plus FlagEmbedding's fine-tuning flags (``helpers.train.seed_flags``): mapped onto
    KDArgs, or accepted with no effect and named in one warning; ``parse_args`` -> KDArgs' fields."""
    from helpers.train.seed_flags import EMBEDDER_FLAGS, seed_parser
    return seed_parser(KDArgs, __doc__, prog="python -m helpers.train.kd_finetune",
                       aliases={"save_merged_lora_model": ["--save_merged"], **flag_aliases()}, table=EMBEDDER_FLAGS)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import sys
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["merge"]:          # the command's old spelling of python -m helpers.train.merge
        from helpers.train.merge import main as merge_main
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
