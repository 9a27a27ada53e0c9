import csv
import json

import numpy as np
import pytest

from helpers.eval.compare import comparison_table, evaluate_models, model_specs
from helpers.common.io_utils import read_jsonl, write_jsonl
from tests.eval.eval_inputs import IDS, eval_files


def test_comparison_table_shape():
    m = {"MAP@25": 0.123456, **{f"Recall@{k}": k / 100 for k in range(1, 101)}}
    t = comparison_table({"base": m, "epoch 1": m})
    assert list(t[0]) == ["Model/Epoch", "MAP@25", "Recall@25", "Recall@50", "Recall@75", "Recall@100"]
    assert t[0]["MAP@25"] == 0.1235 and t[1]["Model/Epoch"] == "epoch 1"


# ---------- several models ----------

def test_model_specs_finds_epochs_in_order(tmp_path):
    for n in (10, 2, 1):
        (tmp_path / f"merged_model_lora_epoch_{n}").mkdir()
    (tmp_path / "merged_model_lora_epoch_3.tmp").mkdir()          # not an epoch folder
    specs = model_specs([{"label": "base", "path": "demo:smollm2-135m-instruct"}],
                        epoch_glob=str(tmp_path / "merged_model_lora_epoch_*"))
    assert [s["label"] for s in specs] == ["base", "epoch 1", "epoch 2", "epoch 10"]
    assert [s["epoch"] for s in specs] == [None, 1, 2, 10]
    assert all(s["class"] == "decoder-only-icl" for s in specs)
    # an epoch folder already listed by hand is not added twice; its epoch is read from the name
    specs = model_specs([str(tmp_path / "merged_model_lora_epoch_2")], epoch_glob=str(tmp_path / "*epoch_*"))
    assert [s["label"] for s in specs] == ["merged_model_lora_epoch_2", "epoch 1", "epoch 10"]
    assert specs[0]["epoch"] == 2
    with pytest.raises(ValueError, match="unique"):
        model_specs(["demo:x", "demo:x"])
    with pytest.raises(ValueError, match="no model"):
        model_specs([], epoch_glob=str(tmp_path / "nothing_*"))


@pytest.mark.integration
def test_evaluate_models_writes_comparison(tmp_path):
    d = eval_files(tmp_path)
    specs = model_specs([{"label": "minilm", "path": "demo:all-minilm-l6-v2"},
                         {"label": "minilm short", "path": "demo:all-minilm-l6-v2", "passage_max_len": 4}],
                        default_class="encoder-only-base")
    res = evaluate_models(specs, str(d / "test_queries.jsonl"), str(d / "corpus.jsonl"), str(tmp_path / "cmp"),
                          train_queries_file=str(d / "train_queries.jsonl"), devices="cpu", topk=8,
                          query_max_len=64, passage_max_len=32, reference_model="minilm")
    assert list(res) == ["minilm", "minilm short"]
    with open(tmp_path / "cmp" / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    # topk 8: only MAP@25 is compared per query; the reference's own row has no paired values
    assert [(r["reference"], r["verdict"] in ("better", "worse", "no difference", "too few queries")) for r in rows] == [
        ("", False)] * 3 + [("minilm", True)] * 3
    assert "dMAP@25_lo" in rows[0] and "dRecall@25" not in rows[0]
    assert [(r["label"], r["subset"]) for r in rows] == [
        (lab, sub) for lab in ("minilm", "minilm short") for sub in ("all", "seen", "unseen")]
    args = json.loads((tmp_path / "cmp" / "minilm_short" / "metrics.json").read_text())["args"]
    assert args["passage_max_len"] == 4 and args["query_max_len"] == 64
    with pytest.raises(ValueError, match="unknown keys"):
        evaluate_models([{"label": "x", "path": "demo:all-minilm-l6-v2", "class": "encoder-only-base", "bogus": 1}],
                        str(d / "test_queries.jsonl"), str(d / "corpus.jsonl"), str(tmp_path / "cmp2"))


# ---------- paired comparisons (a fake embedder: no model) ----------

class _FakeEmbedder:
    """Puts every query's gold at a chosen rank: "rank1" -> 1; "rank2" and "rank2b" -> 2 (two
    different rankings with the same gold rank). Passages are the identity."""

    def __init__(self, name):
        self.name = name.split(":", 1)[1]

    def encode_queries(self, rows):
        q = np.zeros((len(rows), len(IDS)), dtype=np.float32)
        for i, r in enumerate(rows):
            g = IDS.index(r["pos_ids"][0])
            q[i, g] = 1.0
            if self.name == "rank2":
                q[i, (g + 1) % len(IDS)] = 2.0
            elif self.name == "rank2b":
                q[i, (g + 3) % len(IDS)] = 2.0
        return q

    def encode_corpus(self, texts):
        return np.eye(len(texts), dtype=np.float32)


@pytest.fixture
def fake_models(monkeypatch, tmp_path):
    import helpers.eval.compare as cmp
    calls = []
    real = cmp.run_evaluation

    def run(args, embedder=None):
        calls.append(args.label)
        return real(args, embedder=_FakeEmbedder(args.model_name_or_path))
    (tmp_path / "model").mkdir()
    monkeypatch.setattr(cmp, "run_evaluation", run)       # what evaluate_models calls
    monkeypatch.setattr(cmp, "resolve_model", lambda p: str(tmp_path / "model"))   # reuse_key's model files
    return calls


def _cmp(tmp_path, **kw):
    d = tmp_path / "data"
    specs = [{"label": "base", "path": "fake:rank2", "class": "encoder-only-base"},
             {"label": "good", "path": "fake:rank1", "class": "encoder-only-base"},
             {"label": "same", "path": "fake:rank2b", "class": "encoder-only-base"}]
    return evaluate_models(specs, str(d / "test_queries.jsonl"), str(d / "corpus.jsonl"), str(tmp_path / "cmp"),
                           train_queries_file=str(d / "train_queries.jsonl"), **kw)


def _csv_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_paired_comparison_against_reference(tmp_path, fake_models):
    eval_files(tmp_path)
    with pytest.raises(ValueError, match=r"reference_model 'nope' is not one of the models: 'base', 'good', 'same'"):
        _cmp(tmp_path, reference_model="nope")
    assert fake_models == []                                   # checked before any model runs
    res = _cmp(tmp_path, reference_model="base", n_resamples=200, bootstrap_seed=1, min_queries=1)
    assert fake_models == ["base", "good", "same"]
    pq = read_jsonl(tmp_path / "cmp" / "base" / "per_query.jsonl")
    assert [(r["query_id"], r["rank"], r["seen"], r["AP@25"]) for r in pq] == [
        ("1_A", 2, True, 0.5), ("2_B", 2, False, 0.5), ("3_C", 2, True, 0.5)]
    assert {"Recall@25", "Recall@100"} <= set(pq[0])
    rows = _csv_rows(tmp_path / "cmp" / "comparison.csv")
    assert list(rows[0]) == (["epoch", "label", "subset", "n_queries", "MAP@25"]
                             + [f"Recall@{k}" for k in range(1, 101)] + ["MRR", "MAP@25_lo", "MAP@25_hi", "reference"]
                             + [f"d{m}{s}" for m in ("MAP@25", "Recall@25", "Recall@100") for s in ("", "_lo", "_hi")]
                             + ["better", "worse", "same", "significant", "verdict"])
    by = {(r["label"], r["subset"]): r for r in rows}
    assert len(rows) == 9
    for sub in ("all", "seen", "unseen"):
        ref = by[("base", sub)]
        assert ref["reference"] == "" and ref["dMAP@25"] == "" and ref["verdict"] == ""
        assert (float(ref["MAP@25_lo"]), float(ref["MAP@25_hi"])) == (0.5, 0.5)
        good = by[("good", sub)]
        assert good["reference"] == "base"
        assert [float(good[c]) for c in ("dMAP@25", "dMAP@25_lo", "dMAP@25_hi", "better", "worse", "same")] == [
            0.5, 0.5, 0.5, 1.0, 0.0, 0.0]
        assert good["significant"] == "True" and good["verdict"] == "better"
        assert float(good["dRecall@100"]) == 0.0
        same = by[("same", sub)]
        assert [float(same[c]) for c in ("dMAP@25", "dMAP@25_lo", "dMAP@25_hi", "same")] == [0, 0, 0, 1]
        assert same["significant"] == "False" and same["verdict"] == "no difference"
    assert by[("good", "seen")]["n_queries"] == "2" and res["good"]["paired"]["unseen"]["MAP@25"]["n"] == 1
    t = comparison_table(res)
    assert list(t[1]) == ["Model/Epoch", "MAP@25", "MAP@25 95% CI", "Recall@25", "Recall@50", "Recall@75",
                          "Recall@100", "dMAP@25", "dMAP@25 95% CI", "dRecall@25", "dRecall@25 95% CI",
                          "dRecall@100", "dRecall@100 95% CI", "better", "worse", "same", "verdict"]
    assert t[0]["verdict"] == "reference" and t[0]["dMAP@25"] is None
    assert t[1]["dMAP@25"] == 0.5 and t[1]["dMAP@25 95% CI"] == "[+0.5000, +0.5000]" and t[1]["verdict"] == "better"
    assert t[2]["verdict"] == "no difference" and t[0]["MAP@25 95% CI"] == "[0.5000, 0.5000]"
    assert comparison_table(res, subset="unseen")[1]["dMAP@25"] == 0.5
    comp = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert comp["good"]["paired"]["all"]["MAP@25"]["verdict"] == "better"
    from helpers.eval.plots import plot_map_with_intervals
    for sub in ("all", "unseen"):
        fig = plot_map_with_intervals(res, reference="base", path=tmp_path / f"map_{sub}.png", subset=sub)
        assert (tmp_path / f"map_{sub}.png").stat().st_size > 2000
        assert [t.get_text() for t in fig.axes[0].texts] == ["Δ+0.500*", "Δ+0.000"]


def test_no_reference_no_paired_columns(tmp_path, fake_models):
    eval_files(tmp_path)
    res = _cmp(tmp_path, n_resamples=50)
    cols = list(_csv_rows(tmp_path / "cmp" / "comparison.csv")[0])
    assert cols[-3:] == ["MRR", "MAP@25_lo", "MAP@25_hi"]
    assert "paired" not in res["good"] and res["good"]["intervals"]["seen"]["MAP@25"]["mean"] == 1.0
    assert "verdict" not in comparison_table(res)[0]


def test_reuse_keeps_paired_results_and_checks_query_sets(tmp_path, fake_models):
    eval_files(tmp_path)
    first = _cmp(tmp_path, reference_model="base", reuse_existing=True)
    (tmp_path / "cmp" / "good" / "per_query.jsonl").unlink()         # a folder written before per_query.jsonl
    again = _cmp(tmp_path, reference_model="base", reuse_existing=True)
    assert fake_models == ["base", "good", "same"]                    # nothing evaluated the second time
    assert again["good"]["paired"] == first["good"]["paired"]
    assert read_jsonl(tmp_path / "cmp" / "good" / "per_query.jsonl")[0]["rank"] == 1
    pq = read_jsonl(tmp_path / "cmp" / "good" / "per_query.jsonl")
    write_jsonl(tmp_path / "cmp" / "good" / "per_query.jsonl", pq[:2])
    with pytest.raises(ValueError, match=r"cannot pair 'good' with 'base'.*1 only in 'base' \(e\.g\. '3_C'\)"):
        _cmp(tmp_path, reference_model="base", reuse_existing=True)


def test_labels_sharing_a_folder_are_refused(tmp_path, fake_models):
    d = eval_files(tmp_path)
    with pytest.raises(ValueError, match="share an output folder"):
        evaluate_models([{"label": "epoch 1", "path": "fake:rank1", "class": "encoder-only-base"},
                         {"label": "epoch_1", "path": "fake:rank2", "class": "encoder-only-base"}],
                        str(d / "test_queries.jsonl"), str(d / "corpus.jsonl"), str(tmp_path / "cmp"))
    assert fake_models == []


def test_too_few_queries_no_verdict_in_every_subset(tmp_path, fake_models):
    """Issue 27, item 8: 3 queries (2 seen, 1 unseen) are below the minimum of 20: no better/worse."""
    eval_files(tmp_path)
    res = _cmp(tmp_path, reference_model="base", n_resamples=50)
    by = {(r["label"], r["subset"]): r for r in _csv_rows(tmp_path / "cmp" / "comparison.csv")}
    for sub in ("all", "seen", "unseen"):
        for label in ("good", "same"):
            assert by[(label, sub)]["verdict"] == "too few queries" and by[(label, sub)]["significant"] == "False"
        assert float(by[("good", sub)]["dMAP@25"]) == 0.5          # the difference is still shown
        assert comparison_table(res, subset=sub)[1]["verdict"] == "too few queries"
    assert comparison_table(res)[0]["verdict"] == "reference"
    from helpers.eval.plots import plot_map_with_intervals
    fig = plot_map_with_intervals(res, reference="base", path=tmp_path / "map.png")
    assert [t.get_text() for t in fig.axes[0].texts] == ["Δ+0.500", "Δ+0.000"]     # no significance star


def test_an_optional_model_that_does_not_exist_is_left_out_with_a_warning(tmp_path, caplog):
    from helpers.eval.compare import model_specs
    (tmp_path / "ours").mkdir()
    specs = model_specs([{"label": "ours", "path": str(tmp_path / "ours")},
                         {"label": "st", "path": str(tmp_path / "st"), "optional": True}])
    assert [m["label"] for m in specs] == ["ours"] and "optional" not in specs[0]
    assert "model 'st' skipped" in caplog.text
    (tmp_path / "st").mkdir()
    assert [m["label"] for m in model_specs([{"label": "st", "path": str(tmp_path / "st"), "optional": True}])] == ["st"]


class _KnowsGold:
    """A reranker that scores the gold misconception of each test query (by its text) 1, else 0."""
    loads = 0

    def __init__(self, gold_by_query):
        type(self).loads += 1
        self.gold = gold_by_query

    def score_groups(self, queries, passages):
        return [[1.0 if p == self.gold[q] else 0.0 for p in g] for q, g in zip(queries, passages)]


def test_a_reranker_block_adds_a_cascade_row_per_chosen_model(tmp_path, fake_models, monkeypatch):
    import helpers.rerank.args as ra
    from helpers.eval.cascade import cascade_table
    from tests.eval.eval_inputs import CORPUS
    d = eval_files(tmp_path)
    gold = {r["query"]: CORPUS[IDS.index(r["pos_ids"][0])] for r in read_jsonl(d / "test_queries.jsonl")}
    monkeypatch.setattr(ra, "build_reranker", lambda stage: _KnowsGold(gold))
    (tmp_path / "rr").mkdir()
    (tmp_path / "rr" / "config.json").write_text("{}")
    block = {"reranker_name_or_path": str(tmp_path / "rr"), "reranker_model_class": "encoder-only-base", "top_k": 5}
    with pytest.raises(ValueError, match=r"rerank_models \['nope'\] are not among the models"):
        _cmp(tmp_path, reranker=block, rerank_models=["nope"])
    with pytest.raises(FileNotFoundError):          # a missing reranker fails before any model runs
        _cmp(tmp_path, reranker={**block, "reranker_name_or_path": str(tmp_path / "missing")})
    assert fake_models == []
    _KnowsGold.loads = 0
    res = _cmp(tmp_path, reranker=block, rerank_models=["base", "same"], reference_model="base + reranker top 5",
               rerank_sweep_top_k=[1, 5], n_resamples=50, min_queries=1, reuse_existing=True)
    assert _KnowsGold.loads == 1                                   # one reranker for both cascades
    assert list(res) == ["base", "good", "same", "base + reranker top 5", "same + reranker top 5"]
    casc = res["base + reranker top 5"]
    assert casc["MAP@25"] == 1.0 and casc["cascade"]["embedder MAP@25"] == 0.5 and casc["cascade"]["pairs"] == 15
    assert casc["paired"]["reference"] is None and res["base"]["paired"]["all"]["MAP@25"]["mean_diff"] == -0.5
    rows = cascade_table(res)
    assert [(r["embedder"], r["k"], r["difference"], r["embedder Recall@k"]) for r in rows] == [
        ("base", 5, 0.5, 1.0), ("same", 5, 0.5, 1.0)]
    labels = {r["label"] for r in _csv_rows(tmp_path / "cmp" / "comparison.csv")}
    assert "same + reranker top 5" in labels
    assert (tmp_path / "cmp" / "base_reranker_top_5" / "sweep.png").is_file()
    _KnowsGold.loads = 0
    _cmp(tmp_path, reranker=block, rerank_models=["base", "same"], rerank_sweep_top_k=[1, 5], n_resamples=50,
         reuse_existing=True)
    assert _KnowsGold.loads == 0                                   # reused: nothing scored, nothing loaded
    assert _cmp(tmp_path, reranker={**block, "reranker_name_or_path": ""}).keys() == {"base", "good", "same"}
