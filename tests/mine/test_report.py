"""Notebook 01's report: the summary table and the figure of where the negatives come from."""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from helpers.mine.hn_mine import MineResult  # noqa: E402
from helpers.mine.report import mean_negative_similarity, negatives_figure, sampled_ranks, summary_table  # noqa: E402


def _result(ranks, pos_sim, neg_sim, **stats):
    rows = [{"query_id": str(i)} for i in range(len(ranks))]
    return MineResult(rows, ranks, np.array(pos_sim, dtype=float), neg_sim,
                      {"queries": len(rows), **stats, "embedder_metrics": {"MAP@25": 0.5, "Recall@25": 0.75}})


TRAIN = _result([[3, 12, -1], [5, 7]], [0.9, 0.8], [[0.5, 0.4, 0.3], [0.85, 0.6]], top_ups=1)
TEST = _result([[20]], [0.7], [[0.2]], top_ups=0)


def test_summary_table_has_one_column_a_file_with_the_embedders_metrics_flattened():
    t = summary_table({"train": TRAIN, "test": TEST})
    assert list(t.columns) == ["train", "test"]
    assert set(t.index) == {"queries", "top_ups", "MAP@25", "Recall@25"}
    assert t.loc["queries", "train"] == 2 and t.loc["top_ups", "test"] == 0 and t.loc["MAP@25", "test"] == 0.5


def test_sampled_ranks_leave_out_top_ups_and_mean_similarity_is_nan_without_negatives():
    assert sampled_ranks(TRAIN) == [3, 12, 5, 7]
    r = _result([[1], []], [0.9, 0.8], [[0.5], []])
    m = mean_negative_similarity(r)
    assert m[0] == 0.5 and np.isnan(m[1])
    np.testing.assert_allclose(mean_negative_similarity(TRAIN), [0.4, 0.725])


def test_negatives_figure_draws_ranks_and_similarities_of_every_file():
    fig = negatives_figure({"train": TRAIN, "test": TEST}, "2-100")
    rank_ax, sim_ax = fig.axes
    assert "range 2-100" in rank_ax.get_title()
    assert [t.get_text() for t in rank_ax.get_legend().get_texts()] == ["train (4 negatives)", "test (1 negatives)"]
    assert len(rank_ax.containers) == 2                                    # one histogram a file
    assert [len(c.get_offsets()) for c in sim_ax.collections] == [2, 1]    # one point a query
    (diag,) = sim_ax.get_lines()                                           # from the lowest similarity to 1
    assert list(diag.get_xdata()) == [0.2, 1] and list(diag.get_ydata()) == [0.2, 1]
    assert sim_ax.get_xlabel() == "similarity to the positive"


def test_negatives_figure_of_rows_without_negatives_or_of_no_rows():
    (diag,) = negatives_figure({"train": _result([[]], [0.9], [[]])}, "0-10").axes[1].get_lines()
    assert list(diag.get_xdata()) == [0.9, 1]
    assert negatives_figure({"train": _result([], [], [])}, "0-10").axes[1].get_lines() == []
