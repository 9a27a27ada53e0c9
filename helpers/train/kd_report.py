"""What notebook 03 shows: the per-epoch table (Epoch | eval_loss | MAP@25 | Recall@25/50/75/100)
and the loss curve, drawn live while training runs in process, or from the files afterwards."""
from __future__ import annotations

import json
from pathlib import Path

from helpers.common.io_utils import read_jsonl

COLUMNS = ["epoch", "eval_loss", "MAP@25", "Recall@25", "Recall@50", "Recall@75", "Recall@100"]


def epoch_table(rows):
    """metrics.jsonl rows -> a DataFrame indexed by Epoch, the seed's columns (those present)."""
    import pandas as pd
    if not rows:
        return pd.DataFrame(columns=COLUMNS[1:])
    df = pd.DataFrame(rows)
    cols = [c for c in COLUMNS if c in df.columns] + [c for c in ("train_loss",) if c in df.columns]
    return df[cols].rename(columns={"epoch": "Epoch"}).set_index("Epoch").round(4)


def read_metrics(path) -> list[dict]:
    """The per-epoch rows of a ``metrics.jsonl`` (checked line by line; rows without an epoch left out)."""
    return [{k: v for k, v in r.items() if k != "__line__"} for r in read_jsonl(path) if r.get("epoch") is not None]


def read_run(output_dir) -> tuple[list[dict], list[dict]]:
    """(metrics rows, loss history) of a finished or running output_dir."""
    out = Path(output_dir)
    rows = read_metrics(out / "metrics.jsonl") if (out / "metrics.jsonl").exists() else []
    hist = json.loads((out / "loss_history.json").read_text()) if (out / "loss_history.json").exists() else []
    return rows, hist


def loss_figure(history, rows=()):
    """Training loss by optimizer step, eval_loss at each epoch's last step."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7, 3.2))
    ax = fig.subplots()
    if history:
        ax.plot([h["step"] for h in history], [h["loss"] for h in history], label="train loss", lw=1)
    ev = [r for r in rows if r.get("eval_loss") is not None]
    if ev:
        ax.plot([r["global_step"] for r in ev], [r["eval_loss"] for r in ev], "o-", label="eval_loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    return fig


class LiveReport:
    """``on_log`` for :func:`helpers.train.kd_finetune.kd_finetune`: redraws table and curve in place."""

    def __init__(self, every_steps: int = 5):
        self.history, self.rows, self.every = [], [], max(1, every_steps)
        self._handle = None

    def __call__(self, row: dict) -> None:
        if row.get("kind") == "epoch":
            self.rows.append({k: v for k, v in row.items() if k != "kind"})
        else:
            self.history.append(row)
            if len(self.history) % self.every:
                return
        self.show()

    def show(self):
        try:
            from IPython.display import display
        except ImportError:
            return
        items = [loss_figure(self.history, self.rows), epoch_table(self.rows)]
        if self._handle is None:
            self._handle = [display(x, display_id=True) for x in items]
        else:
            for h, x in zip(self._handle, items):
                h.update(x)
