"""The one training loop: ``fit(model, loss_fn, batches, n, args)``; the model glue lives elsewhere.

``args`` is the stage's own arguments (a :class:`helpers.train.args.TrainArgs`), passed unchanged.

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
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch
from tqdm.auto import tqdm

from helpers.common.devices import dtype_for
from helpers.common.io_utils import atomic_path, read_jsonl, save_dir_atomic, write_json, write_jsonl
from helpers.train.args import TrainArgs, resume_keys, settings_diff
from helpers.train.distributed import agree, barrier, dist_info

log = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"


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


FAULT_ENV = "EEDI_FAULT_STEPS"     # "2:1e34,4:nan": multiply the loss of optimizer steps 2 and 4 (checks only)


def fault_steps(spec: Optional[str] = None) -> dict:
    """``$EEDI_FAULT_STEPS`` (or ``spec``) -> ``{optimizer step (1-based, whole run): loss factor}``:
    the GPU check's way to make one fp16 overflow (x1e34) or one NaN step in a real run."""
    spec = os.environ.get(FAULT_ENV, "") if spec is None else spec
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        step, sep, factor = part.partition(":")
        try:
            out[int(step)] = float(factor)
            if int(step) < 1 or not sep:
                raise ValueError
        except ValueError:
            raise ValueError(f"{FAULT_ENV}={spec!r}: expected step:factor pairs such as 2:1e34,4:nan "
                             "(steps from 1)") from None
    if out:
        log.warning("%s: the loss of optimizer step(s) %s is multiplied on purpose", FAULT_ENV,
                    ", ".join(f"{k} (x{v:g})" for k, v in sorted(out.items())))
    return out


def trainable_state(model) -> dict:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _resume_state(out: Path, args: TrainArgs, keys: dict):
    state_path = out / STATE_FILE
    if args.overwrite_output_dir or not state_path.exists():
        if not args.overwrite_output_dir and (out / "metrics.jsonl").exists():
            raise ValueError(f"{out} holds metrics.jsonl but no {STATE_FILE}: another run's output; "
                             "choose a new output_dir or set overwrite_output_dir True")
        return None
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    diff = settings_diff(json.loads(state["resume_keys"]), keys, type(args))
    if "inputs" in diff:
        raise ValueError(f"{out} holds a run made from other inputs (a data file or the model's files changed "
                         "since: name, size or time): resuming it would reuse a stale result; choose a new "
                         "output_dir or set overwrite_output_dir True")
    if diff:
        raise ValueError(f"{out} holds a run with other settings ({', '.join(diff)}): resuming it would "
                         "mix runs; choose a new output_dir or set overwrite_output_dir True")
    return state


def past_rows(output_dir, overwrite: bool = False) -> list[dict]:
    """The metrics rows of the epochs ``output_dir`` already holds ([] when it starts over)."""
    path = Path(output_dir) / "metrics.jsonl"
    if overwrite or not path.exists():
        return []
    return [{k: v for k, v in r.items() if k != "__line__"} for r in read_jsonl(path)]


# ----------------------------------------------------------------------------- fit
def fit(model, loss_fn: Callable, batches: Callable[[int], Iterable], num_batches: int,
        args: TrainArgs, device="cpu", eval_batches: Optional[Callable[[], Iterable]] = None,
        epoch_end: Optional[Callable[[int, object, Path], dict]] = None,
        save_extra: Optional[Callable[[Path], None]] = None,
        on_log: Optional[Callable[[dict], None]] = None,
        eval_loss_fn: Optional[Callable] = None, run_keys: Optional[dict] = None,
        epoch_eval: Optional[Callable[[int, object], dict]] = None) -> list[dict]:
    """Train ``model`` (already LoRA-wrapped and on ``device``) as ``args`` say; return the metrics rows.

    ``batches(epoch)`` yields this rank's batches (``num_batches`` of them); ``eval_batches()``
    the evaluation batches (loss without gradient, dropout off, seeded); ``epoch_end(epoch,
    model, adapter_dir) -> dict`` extra metrics (rank 0); ``epoch_eval(epoch, model) -> dict``:
    evaluation work every rank takes part in (the per-epoch retrieval metrics, each rank embedding
    its share: no rank idles), called on every rank after the epoch's steps, rank 0's dict kept; ``save_extra(dir)`` adds files (the
    tokenizer) to each adapter folder; ``on_log(row)`` sees every loss/metrics row (live plots);
    ``eval_loss_fn`` (default ``loss_fn``) is the loss for evaluation, which runs on rank 0 alone
    and so must not use collectives (no cross-device gather). A run resumes only with the same
    :func:`~helpers.train.args.resume_keys` of ``args``, plus ``run_keys`` (what the stage derives,
    e.g. the number of devices).
    """
    rank, world, local = dist_info()
    out = Path(args.output_dir)
    device = torch.device(device)
    if num_batches < 1:
        raise ValueError("no training batches")
    accum = max(1, int(args.gradient_accumulation_steps))
    steps_per_epoch = math.ceil(num_batches / accum)
    total = steps_per_epoch * args.num_train_epochs
    warmup = math.ceil(total * args.warmup_ratio)
    compute = dtype_for(device, args.use_fp16)
    autocast = compute != torch.float32
    scaler = torch.amp.GradScaler(device.type, enabled=compute == torch.float16)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (add LoRA first: add_lora)")
    opt = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    sched = linear_schedule(opt, warmup, total)
    module = _LossModule(model, loss_fn)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        module = DDP(module, device_ids=[local] if device.type == "cuda" else None)

    keys = {**resume_keys(args), **(run_keys or {})}
    state = _resume_state(out, args, keys)
    start_epoch, step, history = 0, 0, []
    nonfinite_run, skipped = 0, {}       # skipped optimizer steps: in a row; per epoch
    faults = fault_steps()
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
            rows = [r for r in past_rows(out) if r["epoch"] <= start_epoch]
        history = json.loads(state["history"])
        if rank == 0:     # a kill may have come between the state and these two files
            write_jsonl(out / "metrics.jsonl", rows)
            write_json(out / "loss_history.json", history)
        log.info("resuming %s after epoch %d (global step %d)", out, start_epoch, step)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        log.info("training: %d batches/epoch/device x %d device(s), accumulation %d -> %d optimizer "
                 "steps (%d warmup), %s compute", num_batches, world, accum, total, warmup, compute)

    for epoch in range(start_epoch + 1, args.num_train_epochs + 1):
        torch.manual_seed(args.seed + epoch)
        model.train()
        t0, seen, run_loss, n_loss = time.perf_counter(), 0, 0.0, 0
        bar = tqdm(total=num_batches, desc=f"epoch {epoch}/{args.num_train_epochs}",
                   disable=not args.show_progress or rank != 0, leave=False)
        opt.zero_grad(set_to_none=True)
        bad = None                       # why this optimizer step is skipped (None: it is not)
        for i, batch in enumerate(batches(epoch)):
            last = (i + 1) % accum == 0 or i + 1 == num_batches
            sync = module.no_sync() if (world > 1 and not last) else _null()
            with sync:
                with torch.autocast(device.type, dtype=compute, enabled=autocast):
                    loss = module(to_device(batch, device))
                if step + 1 in faults:        # $EEDI_FAULT_STEPS: a bad step on purpose (tools/gpu_check.sh)
                    loss = loss * faults[step + 1]
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
                if agree(bad is not None, device, world) and bad is None:    # every rank skips it
                    bad = "loss on another rank"
                gnorm, overflow = None, False
                if bad is None:
                    scaler.unscale_(opt)
                    gnorm = _grad_norm(params, args.max_grad_norm, scaler.is_enabled())
                    if gnorm is not None and not math.isfinite(gnorm):
                        # an fp16 overflow (GradScaler would skip it silently) or a real blow-up: counted either way
                        bad = f"gradient norm {gnorm} at epoch {epoch}, batch {i + 1}"
                        gnorm = None
                        # with a loss scale of 1 or more, the scaler backing off explains an overflow (it
                        # calibrates so at the start of every fp16 run): not a step towards stopping
                        overflow = scaler.is_enabled() and scaler.get_scale() >= 1.0
                if bad is None:
                    scaler.step(opt)
                    scaler.update()
                    nonfinite_run = 0
                else:          # skipped as GradScaler skips an overflowing step
                    nonfinite_run += 0 if overflow else 1
                    skipped[epoch] = skipped.get(epoch, 0) + 1
                    if scaler.is_enabled():
                        scaler.update(scaler.get_scale() * scaler.get_backoff_factor())
                    if rank == 0:
                        log.warning("non-finite %s: optimizer step %d skipped (%s, %d this epoch; "
                                    "max_nonfinite_steps %d)", bad, step + 1,
                                    f"fp16 loss scale backed off to {scaler.get_scale():g}" if overflow
                                    else f"{nonfinite_run} in a row", skipped[epoch], args.max_nonfinite_steps)
                    if nonfinite_run >= max(1, int(args.max_nonfinite_steps)):
                        raise FloatingPointError(
                            f"{nonfinite_run} optimizer steps in a row had a non-finite loss or gradient (the last: "
                            f"{bad}); stopping (max_nonfinite_steps={args.max_nonfinite_steps}). Lower the "
                            "learning_rate, check the teacher scores for nan/inf, or use fp32 to find the cause")
                    bad = None
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                if n_loss and (step % max(1, args.logging_steps) == 0 or i + 1 == num_batches):
                    row = {"epoch": epoch, "step": step, "loss": run_loss / n_loss,
                           "lr": sched.get_last_lr()[0],
                           "grad_norm": gnorm}
                    history.append(row)
                    run_loss, n_loss = 0.0, 0
                    bar.set_postfix(loss=f"{row['loss']:.4f}")
                    if rank == 0 and on_log:
                        on_log(row)
        bar.close()
        if seen != num_batches:
            raise RuntimeError(f"epoch {epoch}: {seen} batches, expected {num_batches}")
        train_time = time.perf_counter() - t0
        shared = epoch_eval(epoch, model) if epoch_eval is not None else {}
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
                                                     args.seed)
            metrics.update(shared or {})
            if epoch_end is not None:
                metrics.update(epoch_end(epoch, model, adapter_dir) or {})
            rows.append(metrics)
            # the state (which also holds the rows) first: a kill between the two writes leaves a
            # state that resumes and rewrites metrics.jsonl, never metrics.jsonl without a state
            _save_state(out, model, opt, sched, scaler, epoch, step, history, keys, rows)
            write_jsonl(out / "metrics.jsonl", rows)
            write_json(out / "loss_history.json", history)
            log.info("epoch %d: %s", epoch, {k: (round(v, 4) if isinstance(v, float) else v)
                                             for k, v in metrics.items()})
            if on_log:
                on_log(dict(metrics, kind="epoch"))
        barrier()
    if state is not None and start_epoch >= args.num_train_epochs:
        log.info("%s: all %d epochs already done; nothing to train", out, args.num_train_epochs)
    return rows


def _grad_norm(params, max_norm: float, scaled: bool) -> Optional[float]:
    """The gradients' total norm (clipped to ``max_norm`` when it is above 0); without clipping it
    is measured only under a GradScaler, to see an fp16 overflow. None: not measured."""
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    if scaled:
        return float(torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]))
    return None


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _save_state(out, model, opt, sched, scaler, epoch, step, history, keys: dict, rows=()):
    with atomic_path(out / STATE_FILE) as tmp:
        torch.save({"epoch": epoch, "global_step": step, "trainable": trainable_state(model),
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "scaler": scaler.state_dict(), "history": json.dumps(history),
                    "metrics": json.dumps(list(rows)),
                    "resume_keys": json.dumps(keys, default=str)}, tmp)


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
