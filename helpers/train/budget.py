"""The time budget, training's half and run_all's half of one protocol.

``run_all.py --time_budget`` sets ``$EEDI_DEADLINE`` (unix time) and ``$EEDI_STOP_REPORT`` (a JSONL
file) for the notebooks it runs. A trainer reads the deadline (:func:`deadline_of`; its own
``deadline`` argument wins), asks for each epoch's batches through :func:`epoch_guard`, which
raises :class:`DeadlineReached` when the epoch would end after the deadline, and then records
why it stopped (:func:`stop_report`: ``stopped.json`` in its folder and a line in the report);
run_all reads the report (:func:`read_stop_reports`) and stops the chain with a continue command.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Optional

from helpers.common.io_utils import write_json

DEADLINE_ENV, REPORT_ENV = "EEDI_DEADLINE", "EEDI_STOP_REPORT"     # the protocol's two variables


class DeadlineReached(Exception):
    """Raised between epochs when the next one would end after the deadline."""


def deadline_of(args) -> Optional[float]:
    """``args.deadline``, else ``$EEDI_DEADLINE`` (unix time), else None."""
    if args.deadline is not None:
        return float(args.deadline)
    env = os.environ.get(DEADLINE_ENV)
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


def stop_report(output_dir, epochs_done: int, epochs: int, reason: str, stage: str = "kd_finetune") -> None:
    """Tell run_all.py (``$EEDI_STOP_REPORT``) and the folder (``stopped.json``) that training stopped early."""
    rec = {"stage": stage, "output_dir": str(output_dir), "epochs_done": epochs_done,
           "num_train_epochs": epochs, "reason": reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(Path(output_dir, "stopped.json"), rec)      # temp file, fsync, rename, fsync dir
    if os.environ.get(REPORT_ENV):
        with open(os.environ[REPORT_ENV], "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())


# ----------------------------------------------------------------------------- run_all's half


class budget_env:
    """``with budget_env(deadline, report):`` the notebooks' kernels (and torchrun) started inside
    inherit ``$EEDI_DEADLINE`` and ``$EEDI_STOP_REPORT``; the old values come back on exit, and the
    report file is removed. ``deadline`` None: nothing is set."""

    def __init__(self, deadline: Optional[float], report: Path):
        self.deadline, self.report = deadline, Path(report)

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in (DEADLINE_ENV, REPORT_ENV)}
        if self.deadline is not None:
            os.environ[DEADLINE_ENV], os.environ[REPORT_ENV] = repr(self.deadline), str(self.report)
        return self

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self.report.unlink(missing_ok=True)
        return False


def read_stop_report(report: Path) -> Optional[dict]:
    """The last stop a step recorded in ``report`` (:func:`stop_report`), or None when it ran to the end."""
    report = Path(report)
    text = report.read_text(encoding="utf-8").strip() if report.exists() else ""
    return json.loads(text.splitlines()[-1]) if text else None
