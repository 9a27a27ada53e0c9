"""What a trainer checks around :func:`helpers.train.loop.fit`: the disk a run will write, and the time budget.

:func:`check_run_disk` refuses a run whose epochs would not fit on the disk
(:func:`helpers.common.io_utils.check_free_disk`: each epoch's fp32 trainable weights plus what the
stage saves whole, and the training state, fp32 weights and AdamW's two moments); :func:`fit_in_budget` runs
``fit`` with the deadline (:mod:`helpers.train.budget`: ``--deadline`` or ``$EEDI_DEADLINE``) and,
stopped by it, records why (``stopped.json``, ``$EEDI_STOP_REPORT``) and returns the finished epochs.
Both trainers (:mod:`helpers.train.kd_finetune`, :mod:`helpers.train.train_reranker`) use both.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from helpers.common.io_utils import check_free_disk, exclusive_lock, remove_dir_atomic
from helpers.common.models import files_fingerprint
from helpers.train.budget import DeadlineReached, deadline_of, epoch_guard, stop_report
from helpers.train.distributed import dist_info
from helpers.train.lora import trainable_count
from helpers.train.loop import fit, past_rows

log = logging.getLogger(__name__)


def check_run_disk(output_dir, model, epochs_left: int, whole_bytes: int = 0, what: str = "",
                   once_bytes: int = 0) -> None:
    """Free disk for ``epochs_left`` epochs of the trainable weights (fp32), ``whole_bytes`` more
    an epoch (a model saved whole), ``once_bytes`` once (a model merged at the end), and the
    training state (weights and AdamW's moments, fp32)."""
    if epochs_left < 1:
        return
    n = trainable_count(model)
    need = epochs_left * (n * 4 + whole_bytes) + 3 * n * 4 + once_bytes
    check_free_disk(output_dir, need, f"{epochs_left} epoch(s) of {what or 'adapters'} and the training state")


RUN_FILES = ("metrics.jsonl", "training_state.pt", "loss_history.json")


def start_over(out: Path, inputs: Sequence) -> None:
    """``overwrite_output_dir``: the old run's folder goes whole (renamed aside, then deleted), so no
    epoch of it (beyond this run's count) is left for ``epoch_glob`` or the final merge to pick up.
    Refused for a folder that is not a training run's (none of its files) and for one that holds an
    input of this run."""
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not any((out / f).exists() for f in RUN_FILES) and not any(out.glob("*_epoch_*")):
        raise ValueError(f"overwrite_output_dir: {out} holds files but no training run (no {', '.join(RUN_FILES)}, "
                         "no *_epoch_* folder); not deleting it: choose an empty or new output_dir")
    root = out.resolve()
    inside = [str(p) for p in inputs if p and Path(str(p)).resolve().is_relative_to(root)]
    if inside:
        raise ValueError(f"overwrite_output_dir: {out} holds this run's input {inside[0]}; not deleting it")
    remove_dir_atomic(out)              # out is the old run whole, or gone: never half of it
    log.info("overwrite_output_dir: the previous run in %s removed", out)


def fit_in_budget(model, loss_fn, batches: Callable, num_batches: int, args, device, *, stage: str,
                  past: list[dict], agree: Callable[[bool], bool] = lambda stop: stop, inputs: Sequence = (),
                  **fit_kw) -> tuple[list[dict], Optional[str]]:
    """:func:`~helpers.train.loop.fit` under the deadline -> ``(rows, why it stopped or None)``.

    The deadline: :func:`~helpers.train.budget.deadline_of` ``args`` (its ``deadline``, else
    ``$EEDI_DEADLINE``); ``agree`` gives every rank the same stop decision. An epoch is started only when it would end before it (its time: the last
    epoch's, else the longest of ``past``). Stopped early: ``stopped.json`` in ``args.output_dir``
    and a line in ``$EEDI_STOP_REPORT`` (run_all.py); a run that finishes removes an old ``stopped.json``.
    ``inputs``: the data files and model folders of the run: a run resumes only from the same ones
    (:func:`helpers.common.models.files_fingerprint`: names, sizes, times); with ``overwrite_output_dir``
    the old folder is removed whole first (:func:`start_over`)."""
    out = Path(args.output_dir)
    fit_kw["run_keys"] = {**(fit_kw.get("run_keys") or {}), "inputs": files_fingerprint(inputs)}
    if dist_info()[0] != 0:
        return _fit_in_budget(model, loss_fn, batches, num_batches, args, device, stage, past, agree, fit_kw)
    with exclusive_lock(out, stage):         # rank 0 holds it: one run writes output_dir at a time
        if args.overwrite_output_dir:
            start_over(out, inputs)
        return _fit_in_budget(model, loss_fn, batches, num_batches, args, device, stage, past, agree, fit_kw)


def _fit_in_budget(model, loss_fn, batches, num_batches, args, device, stage, past, agree, fit_kw):
    out = Path(args.output_dir)
    deadline = deadline_of(args)
    seconds = [float(r.get("train_seconds") or 0) + float(r.get("eval_seconds") or 0) for r in past]
    guarded = epoch_guard(batches, deadline, seconds, agree)
    if deadline is not None:
        log.info("deadline %s (in %.0f s): training stops after the last epoch that ends before it",
                 time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(deadline)), deadline - time.time())
    try:
        rows = fit(model, loss_fn, guarded, num_batches, args, device, **fit_kw)
    except DeadlineReached as e:
        rows = past_rows(out)
        if dist_info()[0] == 0:                    # rank 0 alone writes
            log.warning("time budget: %s; run again with the same output_dir to resume", e)
            stop_report(out, len(rows), args.num_train_epochs, str(e), stage=stage)
        return rows, str(e)
    if dist_info()[0] == 0 and (out / "stopped.json").exists():
        os.remove(out / "stopped.json")
    return rows, None
