"""Reranking a bi-encoder's top k: re-ordered by the reranker, gold outside the top k stays out,
MAP@25 before and after with the paired interval."""
import json

import pytest

from helpers.common.io_utils import InputError
from helpers.eval.rerank_eval import RerankEvalArgs, gold_rank, rerank, rerank_eval


class GoldFirst:
    """A reranker that knows the gold: scores 1 for passages that start with 'gold', else 0."""
    def score_groups(self, queries, passages):
        return [[1.0 if p.startswith("gold") else 0.0 for p in g] for g in passages]


def files(tmp_path, n=6, gold_at=3, missing=(5,)):
    corpus = [{"id": f"g{i}", "text": f"gold {i}"} for i in range(n)] + [{"id": f"o{j}", "text": f"other {j}"} for j in range(30)]
    queries, rankings = [], []
    for i in range(n):
        queries.append({"query_id": f"q{i}", "query": f"query {i}", "pos": [f"gold {i}"], "pos_ids": [f"g{i}"],
                        "neg": [], "neg_ids": [], "prompt": "", "question_id": str(i), "subject_id": "s", "construct_id": "c"})
        ranked = [f"o{j}" for j in range(30)]
        ranked.insert(gold_at - 1 if i not in missing else 27, f"g{i}")     # rank gold_at, or 28 (outside top 25)
        rankings.append({"query_id": f"q{i}", "ranked_ids": ranked})
    for name, rows in (("corpus.jsonl", corpus), ("q.jsonl", queries), ("r.jsonl", rankings)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return RerankEvalArgs(rankings_file=str(tmp_path / "r.jsonl"), queries_file=str(tmp_path / "q.jsonl"),
                          corpus_file=str(tmp_path / "corpus.jsonl"), reranker_name_or_path="unused",
                          output_file=str(tmp_path / "out.json"), top_k=25, n_resamples=200)


def test_rerank_is_stable_and_keeps_the_top_k():
    texts = {"a": "gold", "b": "x", "c": "y", "d": "gold too"}
    assert rerank([["b", "a", "c", "d"]], ["q"], texts, GoldFirst(), 3) == [["a", "b", "c"]]
    assert gold_rank(["b", "a"], ["a"]) == 2 and gold_rank(["b"], ["a"]) is None


def test_a_teacher_that_knows_the_gold_lifts_map(tmp_path):
    out = rerank_eval(files(tmp_path), reranker=GoldFirst())
    assert out["n_queries"] == 6
    assert out["bi-encoder"]["MAP@25"] == pytest.approx(5 / 6 / 3)          # rank 3 for 5 queries, one outside
    assert out["reranked"]["MAP@25"] == pytest.approx(5 / 6)               # rank 1 for the same 5
    d = out["reranked - bi-encoder"]["MAP@25"]
    assert d["mean_diff"] == pytest.approx(5 / 6 - 5 / 18) and d["lo"] > 0
    assert d["verdict"] == "too few queries"                                 # 6 queries: below the minimum of 20
    assert d["same"] == pytest.approx(1 / 6)                                 # the gold outside the top 25
    assert json.loads((tmp_path / "out.json").read_text())["reranked"]["MAP@25"] == pytest.approx(5 / 6)


def test_enough_queries_give_a_verdict(tmp_path):
    d = rerank_eval(files(tmp_path, n=24), reranker=GoldFirst())["reranked - bi-encoder"]["MAP@25"]
    assert d["n"] == 24 and d["lo"] > 0 and d["verdict"] == "better" and d["significant"] is True


def test_unknown_query_in_rankings_names_file_line_field(tmp_path):
    a = files(tmp_path)
    with open(a.rankings_file, "a") as f:
        f.write(json.dumps({"query_id": "nope", "ranked_ids": []}) + "\n")
    with pytest.raises(InputError, match="r.jsonl.*line 7.*query_id"):
        rerank_eval(a, reranker=GoldFirst())


def test_a_teacher_training_folder_stands_for_its_last_epoch(tmp_path):
    """The teacher check reads a train_reranker output folder as stage 02 does (its last model_epoch_n)."""
    run = tmp_path / "teacher"
    for n in (1, 2):
        (run / f"model_epoch_{n}").mkdir(parents=True)
        (run / f"model_epoch_{n}" / "config.json").write_text("{}")
    a = files(tmp_path)
    a = RerankEvalArgs(rankings_file=a.rankings_file, queries_file=a.queries_file, corpus_file=a.corpus_file,
                       reranker_name_or_path=str(run))
    assert a.reranker_name_or_path == str(run / "model_epoch_2")
    with pytest.raises(ValueError, match="top_k=.* is str"):
        RerankEvalArgs(rankings_file="r", queries_file="q", corpus_file="c", reranker_name_or_path="m", top_k="5")


def test_a_fused_teacher_is_checked_with_the_bi_encoders_scores(tmp_path):
    """alpha 0 is the bi-encoder's own order; in between, a reranker that ranks the gold last can be
    outvoted by a bi-encoder that is sure of it; without scores in the rankings: file, line, field."""
    class GoldLast:
        def score_groups(self, queries, passages):
            return [[-1.0 if p.startswith("gold") else 0.0 for p in g] for g in passages]
    a = files(tmp_path, n=24)
    rows = [json.loads(x) for x in open(a.rankings_file)]
    with pytest.raises(InputError, match=r"r.jsonl.*line 1.*scores"):
        rerank_eval(RerankEvalArgs(**{**a.__dict__, "fusion_alpha": 0.5}), reranker=GoldLast())
    for r in rows:      # the bi-encoder is sure of the gold (rank 3, a score far above the rest)
        r["scores"] = [10.0 if i.startswith("g") else 1.0 - 0.01 * k for k, i in enumerate(r["ranked_ids"])]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    alone = rerank_eval(a, reranker=GoldLast())
    assert alone["reranked - bi-encoder"]["MAP@25"]["verdict"] == "worse"
    fused = rerank_eval(RerankEvalArgs(**{**a.__dict__, "fusion_alpha": 0.25}), reranker=GoldLast())
    assert fused["fusion_alpha"] == 0.25 and fused["reranked"]["MAP@25"] > fused["bi-encoder"]["MAP@25"]
    same = rerank_eval(RerankEvalArgs(**{**a.__dict__, "fusion_alpha": 0.0}), reranker=GoldLast())
    assert same["reranked"]["MAP@25"] > same["bi-encoder"]["MAP@25"]        # alpha 0: sorted by the bi-encoder's scores
    from helpers.eval.rerank_eval import teacher_check
    better, line = teacher_check(a.output_file)
    assert better is True and "fused with its student (alpha 0)" in line
    with pytest.raises(ValueError, match="fusion_alpha must be a number in"):
        RerankEvalArgs(**{**a.__dict__, "fusion_alpha": 2})


def trained_teacher(tmp_path, query_ids):
    """A train_reranker folder whose training state names the train file of ``query_ids``."""
    import torch
    train = tmp_path / "teacher_train.jsonl"
    train.write_text("".join(json.dumps({"query_id": q, "query": q, "pos": ["p"], "neg": ["n"]}) + "\n"
                             for q in query_ids))
    folder = tmp_path / "teacher"
    (folder / "model_epoch_1").mkdir(parents=True)
    (folder / "model_epoch_1" / "config.json").write_text("{}")
    torch.save({"resume_keys": json.dumps({"train_data": str(train), "seed": 42})}, folder / "training_state.pt")
    return folder, train


def test_a_teacher_is_never_measured_on_queries_it_was_trained_on(tmp_path, caplog):
    from helpers.rerank.args import check_not_trained_on, trained_on
    folder, train = trained_teacher(tmp_path, ["q1", "q7", "q9"])
    assert trained_on(folder) == trained_on(folder / "model_epoch_1") == str(train)
    assert trained_on(tmp_path) is None and trained_on("demo:all-minilm-l6-v2") is None   # not trained here
    check_not_trained_on(folder, ["q2", "q3"], "test.jsonl")                               # other queries: fine
    with pytest.raises(ValueError, match=r"trained on .*teacher_train.jsonl, which holds 2 of the 3 queries of "
                                         r"test.jsonl .*\(e.g. q1, q7\)"):
        check_not_trained_on(folder / "model_epoch_1", ["q1", "q2", "q7"], "test.jsonl")
    train.unlink()
    check_not_trained_on(folder, ["q1"], "test.jsonl")                                      # cannot check: says so
    assert "no longer exists: cannot check" in caplog.text


def test_rerank_eval_refuses_a_teacher_trained_on_its_test_queries(tmp_path):
    a = files(tmp_path)
    folder, _ = trained_teacher(tmp_path, ["q0", "x"])
    a.reranker_name_or_path = str(folder)
    with pytest.raises(ValueError, match="holds 1 of the 6 queries"):
        rerank_eval(a, reranker=GoldFirst())
