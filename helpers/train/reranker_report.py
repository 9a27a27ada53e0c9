"""What notebook 02a shows: the teacher's training loss and its group metrics on the eval groups by
epoch, and whether the trained teacher re-orders the student's own top k better than the student
(:mod:`helpers.eval.rerank_eval`): that comparison's arguments derived from the training, its table
and its MAP@25 bars. No pyplot: figures are plain ``Figure`` objects.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:                      # the trainer imports torch: loaded only to derive arguments
    from helpers.train.train_reranker import RerankerTrainArgs


def read_loss_history(output_dir) -> list[dict]:
    """The training's ``loss_history.json`` (``[{"step", "loss", ...}, ...]``)."""
    return json.loads((Path(output_dir) / "loss_history.json").read_text())


def chance_group_map(group_size: int) -> float:
    """Expected 1/rank of one positive placed at random in a group of ``group_size`` passages."""
    return sum(1 / k for k in range(1, group_size + 1)) / group_size


def training_figure(history: Sequence[dict], rows: Sequence[dict], group_size: int):
    """Left: group cross-entropy by step. Right: MAP and top-1 of the positive in its eval group by
    epoch, with chance MAP for ``group_size`` (a note instead when there was no eval_data)."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(11, 3.5))
    ax = fig.subplots(1, 2)
    ax[0].plot([h["step"] for h in history], [h["loss"] for h in history])
    ax[0].set_xlabel("step")
    ax[0].set_title("group cross-entropy (train)")
    if rows and "group_map" in rows[-1]:
        ax[1].plot([r["epoch"] for r in rows], [r["group_map"] for r in rows], "o-", label="MAP in group")
        ax[1].plot([r["epoch"] for r in rows], [r["group_top1"] for r in rows], "s-", label="top-1 in group")
        ax[1].axhline(chance_group_map(group_size), ls="--", c="k", lw=0.8, label="chance (MAP)")
        ax[1].set_xlabel("epoch")
        ax[1].legend()
        ax[1].set_title("teacher on the eval groups")
    else:
        ax[1].axis("off")
        ax[1].text(0.5, 0.5, "no eval_data", ha="center")
    fig.tight_layout()
    return fig


def rerank_eval_settings(args: RerankerTrainArgs, epoch: int) -> dict:
    """The :class:`helpers.eval.rerank_eval.RerankEvalArgs` fields that come from this training:
    the model of ``epoch`` (as the scoring stage 02 would load it), the pair lengths it was trained
    with, and ``output_dir/rerank_eval.json`` for the result. The notebook adds its other
    parameters by field name (``args_from(RerankEvalArgs, globals(), **rerank_eval_settings(...))``)."""
    from helpers.train.train_reranker import trained_model
    return dict(reranker_max_length=args.max_len, reranker_query_max_length=args.query_max_len,
                output_file=str(Path(args.output_dir) / "rerank_eval.json"), **trained_model(args, epoch))


def rerank_table(result: dict):
    """One row per metric: the student's order, the teacher's order, their paired difference with
    its 95% interval, and the verdict (``result``: :func:`helpers.eval.rerank_eval.rerank_eval`'s)."""
    import pandas as pd
    d = result["reranked - bi-encoder"]
    return pd.DataFrame({m: {"student order": result["bi-encoder"][m], "teacher order": result["reranked"][m],
                             "difference": d[m]["mean_diff"], "95% interval": f"[{d[m]['lo']:+.4f}, {d[m]['hi']:+.4f}]",
                             "verdict": d[m]["verdict"]} for m in result["bi-encoder"]}).T


def rerank_figure(result: dict):
    """MAP@25 of the student's order and of the teacher's re-ordering of its top k."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    ax.bar(["student order", "teacher order"], [result["bi-encoder"]["MAP@25"], result["reranked"]["MAP@25"]],
           color=["tab:blue", "tab:orange"])
    ax.set_ylabel("MAP@25")
    ax.set_title(f"top {result['top_k']} of {result['n_queries']} test queries re-ordered")
    fig.tight_layout()
    return fig
