"""A generic LoRA training loop: ``fit(model, loss_fn, batches, cfg)``; the model glue lives elsewhere.

``loss_fn(model, batch) -> scalar tensor`` is called inside one ``forward`` of a small wrapper
module, so DDP (torchrun) syncs gradients however many times ``loss_fn`` calls the model. The
loop does: AdamW on the trainable (LoRA) weights, kept in fp32; mixed precision by hardware
(:func:`helpers.common.devices.dtype_for`: bf16 from compute capability 8, fp16 with a GradScaler
below, fp32 on CPU); gradient accumulation; linear warmup (``warmup_ratio``) then linear decay;
``max_grad_norm`` clipping; a seeded epoch (``seed + epoch``) so an epoch's result does not depend
on where the run started. After every epoch (rank 0 only, others wait): the adapter is saved to
``lora_epoch_{n}``, ``eval_batches`` give ``eval_loss``, ``epoch_end`` adds metrics, a row goes to
``metrics.jsonl`` and the training state to ``training_state.pt``. A run started again resumes
after the last finished epoch; one whose epochs are all done returns its metrics.

One bad batch does not end a long run: an optimizer step whose loss is non-finite on any rank (or,
without a GradScaler, whose gradient norm is) is skipped as GradScaler skips an overflowing step:
no optimizer update, gradients zeroed, the fp16 loss scale backed off, the scheduler advanced as
after any GradScaler-skipped step (the schedule keeps its length). Each skip is logged and counted
(``skipped_steps`` in the epoch's metrics row); ``max_nonfinite_steps`` skips in a row stop the run
with FloatingPointError.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch
from tqdm.auto import tqdm

from helpers.common.cli import canonical_flags
from helpers.common.devices import dtype_for
from helpers.common.io_utils import atomic_path, read_jsonl, save_dir_atomic, write_json, write_jsonl

log = logging.getLogger(__name__)

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
STATE_FILE = "training_state.pt"


@dataclass
class TrainConfig:
    output_dir: str = "model_output/kd"
    learning_rate: float = 1e-4
    num_train_epochs: int = 5
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 42
    fp16: bool = True                   # mixed precision on CUDA (bf16 from cc 8); CPU: fp32
    gradient_checkpointing: bool = True   # the kd stage resolves None (auto) first: checkpointing_rule
    lora_rank: int = 64
    lora_alpha: float = 32
    lora_dropout: float = 0.1
    target_modules: tuple = DEFAULT_TARGETS
    layers_to_transform: Optional[tuple] = None   # LoRA only in these layer indices (None: all)
    logging_steps: int = 1
    overwrite_output_dir: bool = False
    show_progress: bool = True
    resume_keys: dict = field(default_factory=dict)   # what must match to resume (data, model...)
    use_lora: bool = True               # False: full fine-tuning (every weight trained, kept in fp32)
    fast_lora: bool = True              # fused LoRA forward/backward on CPU (helpers.train.fast_lora)
    max_nonfinite_steps: int = 8        # a non-finite loss skips its optimizer step; stop after this many in a row


# ----------------------------------------------------------------------------- distributed
def dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(device: str) -> None:
    import torch.distributed as dist
    _, world, local = dist_info()
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        # rank 0 evaluates and merges alone after every epoch while the others wait: long timeout
        import datetime
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=2))


def barrier() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# ----------------------------------------------------------------------------- LoRA
# Fused decoder projections (Phi-3: qkv_proj, gate_up_proj), adapted with DEFAULT_TARGETS when auto.
_FUSED_TARGETS = ("qkv_proj", "gate_up_proj")
# Modules never adapted when the targets are chosen automatically: output heads.
HEAD_NAMES = frozenset({"lm_head", "embed_out", "score", "classifier", "pooler", "cls", "qa_outputs",
                        "head", "heads", "output_projection"})


def _is_linear(m) -> bool:
    # nn.Linear, bitsandbytes' Linear4bit/Linear8bitLt, and GPT-2-style Conv1D (peft adapts all three)
    name = type(m).__name__
    return isinstance(m, torch.nn.Linear) or name.startswith("Linear") or name == "Conv1D"


def linear_names(model) -> set[str]:
    return {n.split(".")[-1] for n, m in model.named_modules() if _is_linear(m)}


def _peft_lora_mapping() -> dict:
    """peft's default LoRA targets by ``config.model_type`` ({} when this peft has none)."""
    for where in ("peft.utils.constants", "peft.utils", "peft.utils.other"):
        try:
            mod = __import__(where, fromlist=["_"])
        except ImportError:
            continue
        mapping = getattr(mod, "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING", None)
        if isinstance(mapping, dict):
            return mapping
    return {}


def _model_types(model) -> list[str]:
    cfg = getattr(model, "config", None)
    types = [getattr(cfg, "model_type", None)]
    get_text = getattr(cfg, "get_text_config", None)
    if callable(get_text):
        try:
            types.append(getattr(get_text(), "model_type", None))
        except Exception:   # configs without a text part
            pass
    return [t for t in dict.fromkeys(types) if t]


def resolve_target_modules(model, requested=None) -> tuple[list[str], str]:
    """LoRA target modules for ``model`` -> ``(targets, reason)``; ValueError when there are none.

    ``requested`` (names of linear layers, matched on the last part of a module's name): those
    present in the model, in the given order; ``"all-linear"`` alone means every linear layer but
    the output heads. Empty or None: automatic, by architecture: a decoder (a model with any of
    :data:`DEFAULT_TARGETS`) gets those it has; otherwise peft's defaults for its
    ``config.model_type`` (BERT: query, value); otherwise every linear layer but the output heads
    (:data:`HEAD_NAMES`; a head's leaf name shared with body layers, e.g. ``dense``, makes the
    targets full module names).
    """
    present = linear_names(model)
    if isinstance(requested, str):
        requested = requested.split(",")
    requested = list(dict.fromkeys(t.strip() for t in (requested or ()) if t and t.strip()))
    if requested == ["all-linear"]:
        return _all_linear_but_heads(model, "requested all-linear")
    if requested:
        targets = [t for t in requested if t in present]
        if not targets:
            raise ValueError(f"target_modules {requested}: none is a linear layer of this model; "
                             f"its linear layers are {sorted(present)}")
        missing = [t for t in requested if t not in present]
        return targets, "as requested" + (f"; not in this model: {missing}" if missing else "")
    decoder = [t for t in DEFAULT_TARGETS + _FUSED_TARGETS if t in present]
    if decoder and not getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return decoder, "auto: a decoder, the project's DEFAULT_TARGETS it has"
    types = _model_types(model)
    mapping = _peft_lora_mapping()
    for mt in types:
        known = mapping.get(mt) or ()
        targets = [t for t in ([known] if isinstance(known, str) else known) if t in present]
        if targets:
            return targets, f"auto: peft's LoRA default for model_type {mt!r}"
    return _all_linear_but_heads(model, f"auto: peft has no LoRA default for model_type "
                                        f"{'/'.join(types) or '?'}")


def _all_linear_but_heads(model, why: str) -> tuple[list[str], str]:
    linear = [n for n, m in model.named_modules() if _is_linear(m)]
    body = [n for n in linear if not HEAD_NAMES.intersection(n.split("."))]
    if not body:
        raise ValueError(f"no LoRA target ({why}): every linear layer of this model is an output "
                         f"head: {sorted(linear)}")
    leaves = list(dict.fromkeys(n.split(".")[-1] for n in body))
    in_body = set(body)
    head_leaves = {n.split(".")[-1] for n in linear if n not in in_body}
    why += ", so every linear layer but the output heads"
    if head_leaves.intersection(leaves):          # e.g. BERT-like "dense" in the layers and the pooler
        return body, why + " (full module names: a head shares a layer name)"
    return leaves, why


def add_lora(model, cfg: TrainConfig, task_type=None):
    """Wrap ``model`` with LoRA adapters; LoRA weights in fp32; gradient checkpointing as configured.

    ``cfg.target_modules`` empty (or None): chosen by architecture (:func:`resolve_target_modules`),
    logged with the reason. ``cfg.use_lora`` False: no adapters, full fine-tuning (every weight
    trainable, in fp32; mixed precision comes from autocast as for LoRA)."""
    if not cfg.use_lora:
        return _full_finetuning(model, cfg)
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    targets, reason = resolve_target_modules(model, cfg.target_modules)
    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if hasattr(getattr(model, "config", None), "use_cache"):
        model.config.use_cache = False
    lcfg = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type=task_type, bias="none",
                      layers_to_transform=list(cfg.layers_to_transform) if cfg.layers_to_transform else None)
    torch.manual_seed(cfg.seed)                 # LoRA A matrices are drawn from the global RNG
    model = get_peft_model(model, lcfg)
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    n_fast = 0
    if cfg.fast_lora:
        from helpers.train import fast_lora
        n_fast = fast_lora.enable(model)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    log.info("LoRA r=%d alpha=%s on %s (%s): %d trainable of %d parameters (%.2f%%)%s", cfg.lora_rank,
             cfg.lora_alpha, _short(targets), reason, n_train, n_all, 100 * n_train / max(n_all, 1),
             f"; fused CPU forward/backward on {n_fast} layers" if n_fast else "")
    return model


def _full_finetuning(model, cfg: TrainConfig):
    if getattr(model, "is_loaded_in_4bit", False):
        raise ValueError("full fine-tuning (use_lora False) of a 4-bit base is not possible; use LoRA (QLoRA)")
    model.float()                                # fp32 master weights; autocast gives bf16/fp16 compute
    for p in model.parameters():
        p.requires_grad_(True)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(getattr(model, "config", None), "use_cache"):
        model.config.use_cache = False
    log.info("full fine-tuning: all %d parameters trainable (fp32)", sum(p.numel() for p in model.parameters()))
    return model


def _short(names, keep: int = 8) -> str:
    names = list(names)
    return str(names) if len(names) <= keep else f"{names[:keep]}... ({len(names)} modules)"


# ----------------------------------------------------------------------------- loop pieces
class _LossModule(torch.nn.Module):
    def __init__(self, model, loss_fn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch):
        return self.loss_fn(self.model, batch)


def to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def linear_schedule(optimizer, warmup: int, total: int):
    def f(step):
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, f)


def trainable_state(model) -> dict:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _resume_state(out: Path, cfg: TrainConfig, rank: int):
    state_path = out / STATE_FILE
    if cfg.overwrite_output_dir or not state_path.exists():
        if not cfg.overwrite_output_dir and (out / "metrics.jsonl").exists():
            raise ValueError(f"{out} holds metrics.jsonl but no {STATE_FILE}: another run's output; "
                             "choose a new output_dir or set overwrite_output_dir True")
        return None
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    saved = canonical_flags(json.loads(state["resume_keys"]))   # a run saved under older flag names still resumes
    now = json.loads(json.dumps(cfg.resume_keys, default=str))
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if diff:
        raise ValueError(f"{out} holds a run with other settings ({', '.join(diff)}): resuming it would "
                         "mix runs; choose a new output_dir or set overwrite_output_dir True")
    return state


# ----------------------------------------------------------------------------- fit
def fit(model, loss_fn: Callable, batches: Callable[[int], Iterable], num_batches: int,
        cfg: TrainConfig, device="cpu", eval_batches: Optional[Callable[[], Iterable]] = None,
        epoch_end: Optional[Callable[[int, object, Path], dict]] = None,
        save_extra: Optional[Callable[[Path], None]] = None,
        on_log: Optional[Callable[[dict], None]] = None,
        eval_loss_fn: Optional[Callable] = None) -> list[dict]:
    """Train ``model`` (already LoRA-wrapped and on ``device``); return the metrics rows.

    ``batches(epoch)`` yields this rank's batches (``num_batches`` of them); ``eval_batches()``
    the evaluation batches (loss without gradient, dropout off, seeded); ``epoch_end(epoch,
    model, adapter_dir) -> dict`` extra metrics (rank 0); ``save_extra(dir)`` adds files (the
    tokenizer) to each adapter folder; ``on_log(row)`` sees every loss/metrics row (live plots);
    ``eval_loss_fn`` (default ``loss_fn``) is the loss for evaluation, which runs on rank 0 alone
    and so must not use collectives (no cross-device gather).
    """
    rank, world, local = dist_info()
    out = Path(cfg.output_dir)
    device = torch.device(device)
    if num_batches < 1:
        raise ValueError("no training batches")
    accum = max(1, int(cfg.gradient_accumulation_steps))
    steps_per_epoch = math.ceil(num_batches / accum)
    total = steps_per_epoch * cfg.num_train_epochs
    warmup = math.ceil(total * cfg.warmup_ratio)
    compute = dtype_for(device, cfg.fp16)
    autocast = compute != torch.float32
    scaler = torch.amp.GradScaler(device.type, enabled=compute == torch.float16)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (add LoRA first: add_lora)")
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = linear_schedule(opt, warmup, total)
    module = _LossModule(model, loss_fn)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        module = DDP(module, device_ids=[local] if device.type == "cuda" else None)

    state = _resume_state(out, cfg, rank)
    start_epoch, step, history = 0, 0, []
    nonfinite_run, skipped = 0, {}       # skipped optimizer steps: in a row; per epoch
    rows = []
    if state is not None:
        start_epoch, step = int(state["epoch"]), int(state["global_step"])
        cur = dict(model.named_parameters())
        for n, t in state["trainable"].items():
            cur[n].data.copy_(t.to(cur[n].device, cur[n].dtype))
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if "metrics" in state:
            rows = json.loads(state["metrics"])
        else:     # a state written before the rows were kept in it
            rows = [r for r in read_jsonl(out / "metrics.jsonl") if r["epoch"] <= start_epoch] \
                if (out / "metrics.jsonl").exists() else []
            rows = [{k: v for k, v in r.items() if k != "__line__"} for r in rows]
        history = json.loads(state["history"])
        if rank == 0:     # a kill may have come between the state and these two files
            write_jsonl(out / "metrics.jsonl", rows)
            write_json(out / "loss_history.json", history)
        log.info("resuming %s after epoch %d (global step %d)", out, start_epoch, step)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        log.info("training: %d batches/epoch/device x %d device(s), accumulation %d -> %d optimizer "
                 "steps (%d warmup), %s compute", num_batches, world, accum, total, warmup, compute)

    for epoch in range(start_epoch + 1, cfg.num_train_epochs + 1):
        torch.manual_seed(cfg.seed + epoch)
        model.train()
        t0, seen, run_loss, n_loss = time.perf_counter(), 0, 0.0, 0
        bar = tqdm(total=num_batches, desc=f"epoch {epoch}/{cfg.num_train_epochs}",
                   disable=not cfg.show_progress or rank != 0, leave=False)
        opt.zero_grad(set_to_none=True)
        bad = None                       # why this optimizer step is skipped (None: it is not)
        for i, batch in enumerate(batches(epoch)):
            last = (i + 1) % accum == 0 or i + 1 == num_batches
            sync = module.no_sync() if (world > 1 and not last) else _null()
            with sync:
                with torch.autocast(device.type, dtype=compute, enabled=autocast):
                    loss = module(to_device(batch, device))
                group = accum if i < (num_batches // accum) * accum else num_batches - (num_batches // accum) * accum
                scaled = scaler.scale(loss / group)
                if scaled.requires_grad:      # always: under DDP every rank must join the gradient sync
                    scaled.backward()
            value = loss.item()
            if math.isfinite(value):
                run_loss += value
                n_loss += 1
            elif bad is None:
                bad = f"loss {value} at epoch {epoch}, batch {i + 1}"
            seen += 1
            bar.update(1)
            if last:
                bad = _agree_bad(bad, world, device)
                gnorm = None
                if bad is None:
                    scaler.unscale_(opt)
                    gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm) if cfg.max_grad_norm > 0 else None
                    if gnorm is not None and not scaler.is_enabled() and not torch.isfinite(gnorm):
                        bad = f"gradient norm {float(gnorm)} at epoch {epoch}, batch {i + 1}"   # no scaler to catch it
                if bad is None:
                    scaler.step(opt)
                    scaler.update()
                    nonfinite_run = 0
                else:          # skipped as GradScaler skips an overflowing step
                    nonfinite_run += 1
                    skipped[epoch] = skipped.get(epoch, 0) + 1
                    if scaler.is_enabled():
                        scaler.update(scaler.get_scale() * scaler.get_backoff_factor())
                    if rank == 0:
                        log.warning("non-finite %s: optimizer step %d skipped (%d in a row, %d this epoch; "
                                    "max_nonfinite_steps %d)", bad, step + 1, nonfinite_run, skipped[epoch],
                                    cfg.max_nonfinite_steps)
                    if nonfinite_run >= max(1, int(cfg.max_nonfinite_steps)):
                        raise FloatingPointError(
                            f"{nonfinite_run} optimizer steps in a row had a non-finite loss or gradient (the last: "
                            f"{bad}); stopping (max_nonfinite_steps={cfg.max_nonfinite_steps}). Lower the "
                            "learning_rate, check the teacher scores for nan/inf, or use fp32 to find the cause")
                    bad = None
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                if n_loss and (step % max(1, cfg.logging_steps) == 0 or i + 1 == num_batches):
                    row = {"epoch": epoch, "step": step, "loss": run_loss / n_loss,
                           "lr": sched.get_last_lr()[0],
                           "grad_norm": float(gnorm) if gnorm is not None else None}
                    history.append(row)
                    run_loss, n_loss = 0.0, 0
                    bar.set_postfix(loss=f"{row['loss']:.4f}")
                    if rank == 0 and on_log:
                        on_log(row)
        bar.close()
        if seen != num_batches:
            raise RuntimeError(f"epoch {epoch}: {seen} batches, expected {num_batches}")
        train_time = time.perf_counter() - t0
        if rank == 0:
            metrics = {"epoch": epoch, "global_step": step,
                       "train_loss": sum(h["loss"] for h in history if h["epoch"] == epoch)
                       / max(1, sum(1 for h in history if h["epoch"] == epoch)),
                       "train_seconds": round(train_time, 2)}
            if skipped.get(epoch):
                metrics["skipped_steps"] = skipped[epoch]
            adapter_dir = out / f"lora_epoch_{epoch}"

            def save(tmp):
                model.save_pretrained(str(tmp), safe_serialization=True)
                if save_extra:
                    save_extra(tmp)
            save_dir_atomic(adapter_dir, save)
            if eval_batches is not None:
                metrics["eval_loss"] = evaluate_loss(model, eval_loss_fn or loss_fn, eval_batches, device, compute,
                                                     cfg.seed)
            if epoch_end is not None:
                metrics.update(epoch_end(epoch, model, adapter_dir) or {})
            rows.append(metrics)
            # the state (which also holds the rows) first: a kill between the two writes leaves a
            # state that resumes and rewrites metrics.jsonl, never metrics.jsonl without a state
            _save_state(out, model, opt, sched, scaler, epoch, step, history, cfg, rows)
            write_jsonl(out / "metrics.jsonl", rows)
            write_json(out / "loss_history.json", history)
            log.info("epoch %d: %s", epoch, {k: (round(v, 4) if isinstance(v, float) else v)
                                             for k, v in metrics.items()})
            if on_log:
                on_log(dict(metrics, kind="epoch"))
        barrier()
    if state is not None and start_epoch >= cfg.num_train_epochs:
        log.info("%s: all %d epochs already done; nothing to train", out, cfg.num_train_epochs)
    return rows


def _agree_bad(bad: Optional[str], world: int, device) -> Optional[str]:
    """Under DDP every rank skips the step when any rank saw a non-finite loss."""
    import torch.distributed as dist
    if world <= 1 or not (dist.is_available() and dist.is_initialized()):
        return bad
    flag = torch.tensor([0.0 if bad is None else 1.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bad if bad is not None else ("loss on another rank" if flag.item() > 0 else None)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _save_state(out, model, opt, sched, scaler, epoch, step, history, cfg, rows=()):
    with atomic_path(out / STATE_FILE) as tmp:
        torch.save({"epoch": epoch, "global_step": step, "trainable": trainable_state(model),
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "scaler": scaler.state_dict(), "history": json.dumps(history),
                    "metrics": json.dumps(list(rows)),
                    "resume_keys": json.dumps(cfg.resume_keys, default=str)}, tmp)


@torch.no_grad()
def evaluate_loss(model, loss_fn, eval_batches, device, compute=torch.float32, seed=0) -> float:
    """Mean loss over ``eval_batches()`` weighted by batch size, dropout off, seeded."""
    was = model.training
    model.eval()
    torch.manual_seed(seed)
    total, n = 0.0, 0
    try:
        for batch in eval_batches():
            with torch.autocast(torch.device(device).type, dtype=compute, enabled=compute != torch.float32):
                loss = loss_fn(model, to_device(batch, device))
            w = _batch_len(batch)
            total += float(loss) * w
            n += w
    finally:
        model.train(was)
    return total / max(n, 1)


def _batch_len(batch) -> int:
    if isinstance(batch, dict):
        for v in batch.values():
            if isinstance(v, torch.Tensor):
                return int(v.shape[0])
            if isinstance(v, dict):
                return _batch_len(v)
    return 1
