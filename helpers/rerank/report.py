"""What notebook 02 shows beyond the summaries: the teacher's positive and negative scores side by
side, and the suspected false negatives of the teacher filter (counts per query and a few examples).
Inputs are :func:`helpers.rerank.add_reranker_score.score_files`'s ``(summaries, scored rows)``,
both by file name. No pyplot: the figure is a plain ``Figure``.
"""
from __future__ import annotations

from typing import Mapping

from helpers.rerank.filters import apply_teacher_filter
from helpers.rerank.stats import plot_score_histograms


def score_histograms_figure(scored: Mapping[str, list]):
    """One panel per file: histograms of its positive and its negative teacher scores."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6 * len(scored), 3.5))
    axes = fig.subplots(1, len(scored), squeeze=False)[0]
    for ax, (name, rows) in zip(axes, scored.items()):
        plot_score_histograms(rows, ax=ax, title=f"{name}: teacher scores, positives vs negatives")
    fig.tight_layout()
    return fig


def suspect_reports(summaries: Mapping[str, dict], scored: Mapping[str, list], teacher_filter: str,
                    margin: float, examples: int) -> dict:
    """The teacher filter's report of each file: the one the scoring wrote (filter on), or, with
    ``teacher_filter = "none"``, what ``margin`` would flag (the rows are not changed)."""
    return {name: (s["teacher_filter_report"] if teacher_filter != "none"
                   else apply_teacher_filter(scored[name], "mark", margin, examples=examples)[1])
            for name, s in summaries.items()}


def suspect_counts(reports: Mapping[str, dict]):
    """One row per file: how many queries have 0, 1, 2, ... suspects, and the total of suspects."""
    import pandas as pd
    counts = pd.DataFrame({name: pd.Series(r["flagged_per_query"], dtype=int).value_counts().sort_index()
                           for name, r in reports.items()}).fillna(0).astype(int)
    counts.index.name = "suspects per query"
    return counts.T.assign(total=[r["flagged"] for r in reports.values()])


def suspect_examples(reports: Mapping[str, dict], n: int):
    """Up to ``n`` suspects of each file beside their query and positive, with both scores."""
    import pandas as pd
    return pd.DataFrame([{"split": name, "query_id": e["query_id"], "query": e["query"][:200], "positive": e["pos"],
                          "pos_score": round(e["pos_score"], 3), "suspect negative": e["neg"],
                          "neg_score": round(e["neg_score"], 3)}
                         for name, r in reports.items() for e in r["examples"][:n]])
