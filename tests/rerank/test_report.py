"""Notebook 02's report: score histograms and the teacher filter's suspects."""
import matplotlib

matplotlib.use("Agg")

from helpers.rerank.filters import apply_teacher_filter  # noqa: E402
from helpers.rerank.report import score_histograms_figure, suspect_counts, suspect_examples, suspect_reports  # noqa: E402


def _row(i, pos, negs):
    return {"query_id": f"q{i}", "query": f"query {i} " + "x" * 300, "pos": [f"gold {i}"], "pos_ids": [f"p{i}"],
            "neg": [f"neg {i}.{j}" for j in range(len(negs))], "neg_ids": [f"n{i}.{j}" for j in range(len(negs))],
            "pos_scores": [pos], "neg_scores": negs}


TRAIN = [_row(0, 1.0, [2.0, 0.5, 1.5]), _row(1, 3.0, [0.0, 1.0, 2.0])]     # 2 suspects, then 0
TEST = [_row(2, 0.0, [0.1, -1.0, 0.2])]                                     # 2 suspects


def test_score_histograms_one_panel_a_file():
    fig = score_histograms_figure({"train": TRAIN, "test": TEST})
    assert len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == ["train: teacher scores, positives vs negatives",
                                                   "test: teacher scores, positives vs negatives"]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["negatives (6)", "positives (2)"]
    assert len(score_histograms_figure({"train": TRAIN}).axes) == 1        # one file: one panel


def test_suspect_reports_use_the_written_report_when_the_filter_ran():
    written = apply_teacher_filter(TRAIN, "mark", 0.0)[1]
    reports = suspect_reports({"train": {"teacher_filter_report": written}}, {"train": TRAIN}, "mark", 0.0, 5)
    assert reports["train"] is written


def test_suspect_reports_without_the_filter_show_what_the_margin_would_flag():
    summaries = {"train": {"teacher_filter_report": apply_teacher_filter(TRAIN, "none")[1]}, "test": {}}
    reports = suspect_reports(summaries, {"train": TRAIN, "test": TEST}, "none", 0.0, 1)
    assert [r["flagged"] for r in reports.values()] == [2, 2]
    assert reports["train"]["flagged_per_query"] == [2, 0] and len(reports["train"]["examples"]) == 1
    assert TRAIN[0].get("neg_suspect") is None                              # the rows are not changed


def test_suspect_counts_and_examples():
    reports = suspect_reports({"train": {}, "test": {}}, {"train": TRAIN, "test": TEST}, "none", 0.0, 5)
    counts = suspect_counts(reports)
    assert counts.columns.name == "suspects per query"
    assert list(counts.index) == ["train", "test"] and list(counts.columns) == [0, 2, "total"]
    assert counts.loc["train"].tolist() == [1, 1, 2] and counts.loc["test"].tolist() == [0, 1, 2]
    ex = suspect_examples(reports, 1)
    assert list(ex.columns) == ["split", "query_id", "query", "positive", "pos_score", "suspect negative", "neg_score"]
    assert ex["split"].tolist() == ["train", "test"] and ex["query_id"].tolist() == ["q0", "q2"]
    assert ex.loc[0, "suspect negative"] == "neg 0.0" and ex.loc[0, "neg_score"] == 2.0 and len(ex.loc[0, "query"]) == 200
    assert len(suspect_examples(reports, 5)) == 4
