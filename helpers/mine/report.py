"""What notebook 01 shows: the mining summary of each mined file (with how well the mining embedder
itself retrieves the gold misconception), and where the sampled negatives come from and how hard
they are. Inputs are the :class:`helpers.mine.hn_mine.MineResult` of each file, by name
(``{"train": ..., "test": ...}``). No pyplot: the figure is a plain ``Figure``.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np


def summary_table(results: Mapping):
    """One column per mined file: its mining counts and the embedder's own retrieval metrics."""
    import pandas as pd
    return pd.DataFrame({name: {**{k: v for k, v in r.stats.items() if k != "embedder_metrics"},
                                **r.stats["embedder_metrics"]}
                         for name, r in results.items()})


def sampled_ranks(result) -> list[int]:
    """0-based ranks of every sampled negative of one file (top-ups, rank -1, left out)."""
    return [k for rs in result.neg_ranks for k in rs if k >= 0]


def mean_negative_similarity(result) -> np.ndarray:
    """Per row, the mean similarity of the query to its negatives (NaN for a row without any)."""
    return np.array([np.mean(s) if s else np.nan for s in result.neg_sim], dtype=float)


def negatives_figure(results: Mapping, range_for_sampling: str):
    """Left: histogram of the sampled negatives' ranks, one per file. Right: each query's similarity
    to its positive against the mean similarity to its negatives, with the diagonal (above it: the
    negatives look closer than the gold passage)."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(11, 3.5))
    ax = fig.subplots(1, 2)
    for name, r in results.items():
        ranks = sampled_ranks(r)
        ax[0].hist(ranks, bins=30, alpha=0.6, label=f"{name} ({len(ranks)} negatives)")
        ax[1].scatter(r.pos_sim, mean_negative_similarity(r), s=8, alpha=0.6, label=name)
    ax[0].set_title(f"rank of sampled negatives (range {range_for_sampling})")
    ax[0].set_xlabel("rank (0-based)")
    ax[0].legend()
    sims = [float(np.min(r.pos_sim)) for r in results.values() if len(r.pos_sim)]
    sims += [min(s) for r in results.values() for s in r.neg_sim if s]
    if sims:
        lo = min(sims)
        ax[1].plot([lo, 1], [lo, 1], "k--", lw=0.8)
    ax[1].set_xlabel("similarity to the positive")
    ax[1].set_ylabel("mean similarity to its negatives")
    ax[1].set_title("positive vs negatives (above the line: negatives look closer)")
    ax[1].legend()
    fig.tight_layout()
    return fig
