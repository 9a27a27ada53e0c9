"""Notebook 02a's report: the training figure, the comparison's arguments, table and bars."""
import json
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

from helpers.train.reranker_report import (chance_group_map, read_loss_history, rerank_eval_settings,  # noqa: E402
                                           rerank_figure, rerank_table, training_figure)

HISTORY = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}, {"step": 3, "loss": 1.2}]
ROWS = [{"epoch": 1, "group_map": 0.4, "group_top1": 0.2}, {"epoch": 2, "group_map": 0.6, "group_top1": 0.5}]


def _diff(mean, lo, hi, verdict):
    return {"mean_diff": mean, "lo": lo, "hi": hi, "verdict": verdict}


RESULT = {"n_queries": 7, "top_k": 25, "bi-encoder": {"MAP@25": 0.3, "Recall@1": 0.2},
          "reranked": {"MAP@25": 0.5, "Recall@1": 0.4},
          "reranked - bi-encoder": {"MAP@25": _diff(0.2, 0.05, 0.35, "reranked better"),
                                    "Recall@1": _diff(0.2, -0.1, 0.5, "no clear difference")}}


def test_chance_group_map():
    assert chance_group_map(1) == 1.0
    assert chance_group_map(2) == pytest.approx(0.75)
    assert chance_group_map(16) == pytest.approx(0.2113, abs=1e-4)


def test_read_loss_history(tmp_path):
    (tmp_path / "loss_history.json").write_text(json.dumps(HISTORY))
    assert read_loss_history(tmp_path) == HISTORY


def test_training_figure_with_eval_groups():
    fig = training_figure(HISTORY, ROWS, group_size=8)
    loss_ax, eval_ax = fig.axes
    (loss,) = loss_ax.get_lines()
    assert list(loss.get_xdata()) == [1, 2, 3] and list(loss.get_ydata()) == [2.0, 1.5, 1.2]
    assert [t.get_text() for t in eval_ax.get_legend().get_texts()] == ["MAP in group", "top-1 in group", "chance (MAP)"]
    group_map, top1, chance = eval_ax.get_lines()
    assert list(group_map.get_ydata()) == [0.4, 0.6] and list(top1.get_ydata()) == [0.2, 0.5]
    assert chance.get_ydata()[0] == pytest.approx(chance_group_map(8))


def test_training_figure_without_eval_data_says_so():
    fig = training_figure(HISTORY, [{"epoch": 1, "train_loss": 1.0}], group_size=8)
    eval_ax = fig.axes[1]
    assert not eval_ax.axison and eval_ax.get_lines() == []
    assert [t.get_text() for t in eval_ax.texts] == ["no eval_data"]
    assert len(training_figure([], [], group_size=8).axes[0].get_lines()) == 1


@pytest.mark.parametrize("model_class", ["decoder-only-base", "encoder-only-base"])
def test_rerank_eval_settings_are_the_trained_model_and_its_lengths(tmp_path, model_class):
    from helpers.common.notebook import args_from
    from helpers.eval.rerank_eval import RerankEvalArgs
    from helpers.train.train_reranker import RerankerTrainArgs, trained_model
    args = RerankerTrainArgs(reranker_model_class=model_class, output_dir=str(tmp_path / "teacher"),
                             max_len=96, query_max_len=40, train_data="t.jsonl")
    got = rerank_eval_settings(args, 2)
    assert got == {"reranker_max_length": 96, "reranker_query_max_length": 40,
                   "output_file": str(tmp_path / "teacher" / "rerank_eval.json"), **trained_model(args, 2)}
    assert Path(got["reranker_name_or_path"]).name == "model_epoch_2" if model_class == "encoder-only-base" \
        else Path(got["peft_adapter"]).name == "lora_epoch_2"
    # what the notebook builds: its other parameters by field name, these from the training
    ev = args_from(RerankEvalArgs, {"rankings_file": "r.jsonl", "queries_file": "q.jsonl", "corpus_file": "c.jsonl",
                                    "top_k": 10, "max_len": 999, "reranker_model_class": model_class}, **got)
    assert ev.reranker_max_length == 96 and ev.top_k == 10 and ev.output_file == got["output_file"]


def test_rerank_table_one_row_a_metric():
    t = rerank_table(RESULT)
    assert list(t.index) == ["MAP@25", "Recall@1"]
    assert list(t.columns) == ["student order", "teacher order", "difference", "95% interval", "verdict"]
    assert t.loc["MAP@25", "95% interval"] == "[+0.0500, +0.3500]" and t.loc["Recall@1", "verdict"] == "no clear difference"
    assert t.loc["MAP@25", "teacher order"] == 0.5


def test_rerank_figure_bars():
    ax = rerank_figure(RESULT).axes[0]
    assert [p.get_height() for p in ax.patches] == [0.3, 0.5]
    assert ax.get_title() == "top 25 of 7 test queries re-ordered" and ax.get_ylabel() == "MAP@25"
