"""Retrieve, then rerank: the ordering rule on constructed scores, the k < 25 rule of the written
file, fusion, the band timing, the stage block, a cascade folder that a comparison reads, reuse."""
import json

import numpy as np
import pytest

from helpers.common.io_utils import read_jsonl, write_jsonl
from helpers.eval.cascade import (RerankStage, cascade_label, cascade_table, read_block, rerank_order, run_cascade,
                                  score_in_bands, stage_from)
from helpers.rerank.fusion import zscore


class GoldFirst:
    """Scores 1 for passages whose text starts with 'gold', else 0; counts what it was asked."""
    def __init__(self):
        self.calls = []

    def score_groups(self, queries, passages):
        self.calls.append([len(g) for g in passages])
        return [[1.0 if p.startswith("gold") else 0.0 for p in g] for g in passages]


class Refuse:
    def score_groups(self, queries, passages):
        raise AssertionError("the reranker was asked to score")


# ---------- the rule ----------
def test_rerank_order_resorts_the_top_k_and_keeps_the_rest():
    ids = [f"p{i}" for i in range(30)]
    scores = [0.0] * 30
    scores[7] = 5.0                                   # rank 8 has the best reranker score
    assert rerank_order(ids, scores, 10)[:11] == ["p7", "p0", "p1", "p2", "p3", "p4", "p5", "p6", "p8", "p9", "p10"]
    # k < 25: the written top 25 is the re-ordered top k, then the embedder's ranks k+1..25
    out = rerank_order(ids, [0.0, 1.0, 2.0] + [9.0] * 27, 3)
    assert out[:25] == ["p2", "p1", "p0"] + ids[3:25]
    # a candidate beyond k never enters, whatever its score
    assert rerank_order(ids, scores, 5)[:5] == ids[:5]
    # ties keep the embedder's order
    assert rerank_order(["a", "b", "c"], [1.0, 1.0, 1.0], 3) == ["a", "b", "c"]
    # k above the list: the whole list
    assert rerank_order(["a", "b"], [0.0, 1.0], 25) == ["b", "a"]
    with pytest.raises(ValueError, match="2 reranker scores for the top 3"):
        rerank_order(["a", "b", "c"], [0.0, 1.0], 3)


def test_fusion_weighs_z_scores():
    ids = ["a", "b", "c"]
    emb = [0.9, 0.5, 0.1]
    rer = [0.0, 0.1, 10.0]
    assert rerank_order(ids, rer, 3, emb, alpha=1.0) == ["c", "b", "a"]      # reranker alone
    assert rerank_order(ids, rer, 3, emb, alpha=0.0) == ["a", "b", "c"]      # embedder alone
    z_r, z_e = zscore(rer), zscore(emb)
    want = sorted(range(3), key=lambda j: -(0.3 * z_r[j] + 0.7 * z_e[j]))
    assert rerank_order(ids, rer, 3, emb, alpha=0.3) == [ids[j] for j in want]
    assert zscore([2.0, 2.0]).tolist() == [0.0, 0.0] and zscore([1.0]).tolist() == [0.0]
    with pytest.raises(ValueError, match="needs the embedder's scores"):
        rerank_order(ids, rer, 3, None, alpha=0.5)


def test_score_in_bands_scores_each_candidate_once_and_times_every_k():
    r = GoldFirst()
    texts = {f"p{i}": ("gold" if i == 12 else "x") for i in range(40)}
    ranked = [[f"p{i}" for i in range(40)], [f"p{i}" for i in range(8)]]
    scores, secs = score_in_bands(r, ["q1", "q2"], ranked, texts, [25, 10])
    assert [len(s) for s in scores] == [25, 8]
    assert scores[0][12] == 1.0 and sum(scores[0]) == 1.0
    assert r.calls == [[10, 8], [15]]                  # band 1-10 for both, 11-25 for the one that has it
    assert list(secs) == [10, 25] and secs[25] >= secs[10] >= 0


# ---------- the block ----------
def test_stage_block():
    assert stage_from(None) is None and stage_from({}) is None
    assert stage_from({"reranker_name_or_path": "", "top_k": 10}) is None           # a blank profile var: no reranker
    s = stage_from({"reranker_name_or_path": "m", "top_k": 10, "query_instruction_format_for_rerank": "{}: {}"},
                   devices="cpu", use_fp16=None)
    assert (s.top_k, s.devices, s.query_instruction_format, s.use_fp16) == (10, "cpu", "{}: {}", True)
    assert stage_from({"reranker_name_or_path": "m", "devices": "cuda:1"}, devices="cuda:0").devices == "cuda:1"
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['topk'\]"):
        stage_from({"reranker_name_or_path": "m", "topk": 10})
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        stage_from({"reranker_name_or_path": "m", "top_k": 0})
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\]"):
        stage_from({"reranker_name_or_path": "m", "alpha": 2})
    with pytest.raises(ValueError, match="top_k=.* is str"):
        stage_from({"reranker_name_or_path": "m", "top_k": "10"})
    assert cascade_label("round 2", s) == "round 2 + reranker top 10"
    assert read_block('{"reranker_name_or_path": "m"}') == {"reranker_name_or_path": "m"}
    with pytest.raises(ValueError, match="neither JSON nor a .json file"):
        read_block("m")


# ---------- a cascade folder ----------
def _files(tmp_path, n=24, gold_at=3, outside=(5,)):
    """``n`` queries whose gold sits at rank ``gold_at`` of the embedder (rank 28 for ``outside``)."""
    corpus = [{"id": f"g{i}", "text": f"gold {i}"} for i in range(n)] + [{"id": f"o{j}", "text": f"other {j}"} for j in range(40)]
    queries, ranks = [], []
    for i in range(n):
        queries.append({"query_id": f"q{i}", "query": f"query {i}", "pos": [f"gold {i}"], "pos_ids": [f"g{i}"],
                        "neg": [], "neg_ids": [], "prompt": ""})
        ranked = [f"o{j}" for j in range(40)]
        ranked.insert(gold_at - 1 if i not in outside else 27, f"g{i}")
        ranks.append({"query_id": f"q{i}", "ranked_ids": ranked, "scores": [1.0 - 0.01 * j for j in range(41)]})
    write_jsonl(tmp_path / "corpus.jsonl", corpus)
    write_jsonl(tmp_path / "q.jsonl", queries)
    write_jsonl(tmp_path / "train.jsonl", queries[:3])
    emb = tmp_path / "eval" / "emb"
    write_jsonl(emb / "rankings.jsonl", ranks)
    (emb / "metrics.json").write_text(json.dumps({"label": "emb", "model_name_or_path": "m",
                                                  "args": {"map_k": 25, "topk": 41}}))
    model = tmp_path / "reranker"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    return emb, RerankStage(reranker_name_or_path=str(model), top_k=25)


def _run(tmp_path, emb, stage, reranker, **kw):
    return run_cascade(stage, emb, str(tmp_path / "q.jsonl"), str(tmp_path / "corpus.jsonl"), tmp_path / "eval" / "casc",
                       str(tmp_path / "train.jsonl"), label="emb + reranker top 25", reranker=reranker,
                       n_resamples=200, **kw)


def test_a_reranker_that_knows_the_gold_lifts_map_within_its_ceiling(tmp_path):
    emb, stage = _files(tmp_path)
    r = GoldFirst()
    m = _run(tmp_path, emb, stage, r, sweep_top_k=(2, 10, 25, 50), sweep_alpha=(0.5,))
    assert r.calls[0] == [2] * 24 and len(r.calls) == 3            # bands 1-2, 3-10, 11-25: 50 is past the 41 ids
    c = m["cascade"]
    assert c["embedder MAP@25"] == pytest.approx(23 / 24 / 3)
    assert m["MAP@25"] == pytest.approx(23 / 24)                   # gold to rank 1, except the one outside the top 25
    assert c["embedder Recall@25"] == pytest.approx(23 / 24)       # the ceiling
    assert c["diff"]["verdict"] == "better" and c["pairs"] == 24 * 25
    sweep = {(row["top_k"], row["alpha"]): row for row in m["sweep"]}
    assert set(sweep) == {(k, a) for k in (2, 10, 25) for a in (None, 0.5)}
    assert sweep[(2, None)]["MAP@25"] == pytest.approx(sweep[(2, None)]["embedder MAP@25"])   # k=2 cannot reach rank 3
    assert sweep[(2, None)]["verdict"] == "no difference"
    out = tmp_path / "eval" / "casc"
    for f in ("rankings.jsonl", "per_query.jsonl", "metrics.json", "metrics.csv", "sweep.csv", "sweep.json", "sweep.png"):
        assert (out / f).is_file(), f
    rows = read_jsonl(out / "rankings.jsonl")
    assert rows[0]["ranked_ids"][:4] == ["g0", "o0", "o1", "o2"] and len(rows[0]["ranked_ids"]) == 41
    pq = read_jsonl(out / "per_query.jsonl")
    assert [p["rank"] for p in pq[4:7]] == [1, 28, 1] and pq[0]["seen"] is True and pq[3]["seen"] is False
    table = cascade_table({"emb + reranker top 25": m, "emb": {"MAP@25": 0.3}})
    assert len(table) == 1 and table[0]["verdict"] == "better" and table[0]["k"] == 25


def test_the_cascade_refuses_a_reranker_trained_on_its_test_queries(tmp_path):
    import torch
    emb, stage = _files(tmp_path)
    write_jsonl(tmp_path / "teacher_train.jsonl", [{"query_id": "q5"}, {"query_id": "t1"}])
    torch.save({"resume_keys": json.dumps({"train_data": str(tmp_path / "teacher_train.jsonl")})},
               tmp_path / "reranker" / "training_state.pt")      # the reranker was trained here, on q5 among others
    with pytest.raises(ValueError, match=r"holds 1 of the 24 queries of .*q.jsonl.*\(e.g. q5\)"):
        _run(tmp_path, emb, stage, GoldFirst())


def test_the_cascade_is_reused_only_for_the_same_inputs(tmp_path):
    emb, stage = _files(tmp_path)
    first = _run(tmp_path, emb, stage, GoldFirst(), reuse_existing=True, sweep_top_k=(25,))
    again = _run(tmp_path, emb, stage, Refuse(), reuse_existing=True, sweep_top_k=(25,))
    assert again["MAP@25"] == first["MAP@25"]
    with pytest.raises(AssertionError, match="asked to score"):        # another k: computed again
        _run(tmp_path, emb, RerankStage(reranker_name_or_path=stage.reranker_name_or_path, top_k=10), Refuse(),
             reuse_existing=True, sweep_top_k=(25,))
    rows = read_jsonl(emb / "rankings.jsonl")                             # the embedder's rankings changed
    rows[0]["ranked_ids"] = rows[0]["ranked_ids"][::-1]
    write_jsonl(emb / "rankings.jsonl", rows)
    with pytest.raises(AssertionError, match="asked to score"):
        _run(tmp_path, emb, stage, Refuse(), reuse_existing=True, sweep_top_k=(25,))


def test_bad_rankings_name_the_file_and_line(tmp_path):
    from helpers.common.io_utils import InputError
    emb, stage = _files(tmp_path)
    rows = read_jsonl(emb / "rankings.jsonl")
    rows[2]["ranked_ids"][1] = "nope"
    write_jsonl(emb / "rankings.jsonl", rows)
    with pytest.raises(InputError, match=r"rankings.jsonl.*line 3.*ranked_ids"):
        _run(tmp_path, emb, stage, Refuse())
    with pytest.raises(ValueError, match="top_k 60 is more than the 41 ids"):
        _run(tmp_path, emb, RerankStage(reranker_name_or_path=stage.reranker_name_or_path, top_k=60), Refuse())
    assert not (tmp_path / "eval" / "casc" / "metrics.json").exists()


def test_non_finite_reranker_scores_stop_the_cascade(tmp_path):
    class Nan:
        def score_groups(self, queries, passages):
            return [[float("nan")] * len(g) for g in passages]
    emb, stage = _files(tmp_path)
    with pytest.raises(FloatingPointError, match="non-finite"):
        _run(tmp_path, emb, stage, Nan(), sweep_top_k=(25,))


def test_the_rerank_eval_of_the_teacher_follows_the_same_rule():
    from helpers.eval.rerank_eval import rerank
    texts = {f"p{i}": ("gold" if i in (3, 4) else "x") for i in range(6)}
    ids = [f"p{i}" for i in range(6)]
    assert rerank([ids], ["q"], texts, GoldFirst(), 5) == [rerank_order(ids[:5], [0, 0, 0, 1, 1], 5)]
    assert np.array_equal(zscore([1, 2, 3]), (np.array([1, 2, 3]) - 2) / np.std([1, 2, 3]))


def test_time_estimate_counts_tokens_and_the_shared_prefix():
    from helpers.eval.rerank_submit import time_estimate
    q, p = ["x" * 400], ["y" * 80]                       # 100 and 20 tokens
    dec = RerankStage(reranker_name_or_path="m", top_k=25, reranker_max_length=512)
    enc = RerankStage(reranker_name_or_path="m", reranker_model_class="encoder-only-base", top_k=25)
    kw = dict(device="cuda:0", params=2e9, gpu="Tesla T4")
    shared = time_estimate(dec, q, p, 1000, **kw)
    assert shared == pytest.approx(1000 * (100 + 25 * 60) * 2 * 2e9 / 16e12)        # the query once a row
    assert time_estimate(enc, q, p, 1000, **kw) == pytest.approx(1000 * 25 * 160 * 2 * 2e9 / 16e12)
    assert time_estimate(dec, q, p, 1000, device="cpu", params=2e9) is None
    assert time_estimate(dec, q, p, 1000, device="cuda:0", params=2e9, gpu="Mystery GPU") is None


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["decoder-only-base", "encoder-only-base"])
def test_the_cascade_scores_pairs_exactly_as_the_scoring_stage(tmp_path, kind, tiny_gemma_reranker_dir,
                                                               tiny_bert_cross_encoder_dir):
    """One implementation: the second stage's scores of (query, candidate) pairs are stage 02's scores
    of the same pairs (token layout, prompt, length sorting, shared prefix, "Yes" row)."""
    from helpers.rerank.add_reranker_score import ScoreArgs, add_reranker_score
    from helpers.rerank.args import build_reranker
    model = tiny_gemma_reranker_dir if kind == "decoder-only-base" else tiny_bert_cross_encoder_dir
    texts = {f"m{i}": f"misconception {i}: " + "adds the numerators " * (i % 3 + 1) for i in range(12)}
    queries = ["What is 1/2 + 1/3? Wrong answer: 2/5", "Area of a 2 by 3 rectangle? Wrong answer: 10"]
    ranked = [[f"m{i}" for i in range(12)], [f"m{(i * 5) % 12}" for i in range(12)]]
    rows = [{"query_id": f"q{k}", "query": q, "pos": [texts[r[0]]], "pos_ids": [r[0]],
             "neg": [texts[x] for x in r[1:10]], "neg_ids": r[1:10]} for k, (q, r) in enumerate(zip(queries, ranked))]
    write_jsonl(tmp_path / "mined.jsonl", rows)
    common = dict(reranker_name_or_path=model, reranker_model_class=kind, reranker_max_length=48,
                  reranker_batch_size=4, devices="cpu")
    add_reranker_score(ScoreArgs(**common, input_file=str(tmp_path / "mined.jsonl"),
                                 output_file=str(tmp_path / "scored.jsonl")))
    scored = read_jsonl(tmp_path / "scored.jsonl")
    stage = RerankStage(**common, top_k=10)
    got, _ = score_in_bands(build_reranker(stage), queries, ranked, texts, [4, 10])      # two bands
    for r, g in zip(scored, got):
        assert g == pytest.approx(r["pos_scores"] + r["neg_scores"], abs=1e-4)
