import csv
import json

import numpy as np
import pytest

from helpers.eval.evaluate import (EvalArgs, comparison_table, evaluate_embeddings, main, metrics_rows, rank_corpus,
                              run_evaluation, score_rankings)
from helpers.common.io_utils import InputError, read_jsonl, write_jsonl
from helpers.eval.metrics import retrieval_metrics

CORPUS = ["Adds the numerators and the denominators of fractions", "Thinks a triangle's angles sum to 360",
          "Confuses area and perimeter", "Believes multiplying always makes a number bigger",
          "Does not understand place value after the decimal point", "Thinks the mean is the middle value",
          "Forgets to change the sign when moving a term", "Believes a negative times a negative is negative"]
IDS = [str(100 + i) for i in range(len(CORPUS))]


def _row(qid, gold, text="q"):
    return {"query_id": qid, "query": text, "pos": [CORPUS[IDS.index(gold)]], "pos_ids": [gold],
            "neg": [], "neg_ids": [], "prompt": "Find the misconception."}


# ---------- plain arrays ----------

def test_evaluate_embeddings_known_ranks_and_seen_split():
    p = np.eye(4, dtype=np.float32)
    # query 0 -> passage 2 best (gold rank 1); query 1 -> order 0,1,2,3 (gold "3" rank 4);
    # query 2: all scores tie -> corpus order (gold "1" rank 2)
    q = np.array([[0.1, 0.2, 0.9, 0.0], [0.4, 0.3, 0.2, 0.1], [0.5, 0.5, 0.5, 0.5]], dtype=np.float32)
    ids = ["0", "1", "2", "3"]
    rows = [{"query_id": "a", "pos_ids": ["2"]}, {"query_id": "b", "pos_ids": ["3"]},
            {"query_id": "c", "pos_ids": ["1"]}]
    train = [{"pos_ids": ["2"]}, {"pos_ids": ["1"]}]
    m = evaluate_embeddings(q, p, rows, ids, train_rows=train, ks=(1, 2, 4), map_k=25)
    assert m["n_queries"] == 3
    assert m["MAP@25"] == pytest.approx((1 + 1 / 4 + 1 / 2) / 3)
    assert (m["Recall@1"], m["Recall@2"], m["Recall@4"]) == pytest.approx((1 / 3, 2 / 3, 1.0))
    assert m["seen"]["n_queries"] == 2 and m["seen"]["MAP@25"] == pytest.approx(0.75)
    assert m["unseen"]["n_queries"] == 1 and m["unseen"]["MAP@25"] == pytest.approx(0.25)
    ranked, scores = rank_corpus(q, p, ids, topk=4)
    assert ranked[2] == ["0", "1", "2", "3"]                  # tie rule: corpus order
    assert scores.shape == (3, 4)


def test_score_rankings_rejects_id_absent_from_corpus():
    rows = [{"query_id": "a", "pos_ids": ["1"]}]
    with pytest.raises(ValueError, match="'9' is not in the corpus"):
        score_rankings([["1", "9"]], rows, corpus_ids=["1", "2"])
    with pytest.raises(ValueError, match="1 rankings for 2"):
        score_rankings([["1"]], rows * 2)


def test_empty_subset_has_only_count():
    m = score_rankings([["1", "2"]], [{"query_id": "a", "pos_ids": ["1"]}], train_rows=[{"pos_ids": ["1"]}],
                       ks=(1,))
    assert m["unseen"] == {"n_queries": 0}
    rows = metrics_rows(m, "x")
    assert [r["subset"] for r in rows] == ["all", "seen", "unseen"]


def test_comparison_table_shape():
    m = {"MAP@25": 0.123456, **{f"Recall@{k}": k / 100 for k in range(1, 101)}}
    t = comparison_table({"base": m, "epoch 1": m})
    assert list(t[0]) == ["Model/Epoch", "MAP@25", "Recall@25", "Recall@50", "Recall@75", "Recall@100"]
    assert t[0]["MAP@25"] == 0.1235 and t[1]["Model/Epoch"] == "epoch 1"


# ---------- the stage ----------

def _files(tmp_path, queries=None):
    d = tmp_path / "data"
    write_jsonl(d / "corpus.jsonl", [{"id": i, "text": t} for i, t in zip(IDS, CORPUS)])
    queries = queries or [_row("1_A", "100", "What is 1/2 + 1/3? Wrong answer: 2/5"),
                          _row("2_B", "102", "Area of a 2 by 3 rectangle? Wrong answer: 10"),
                          _row("3_C", "107", "What is -2 times -3? Wrong answer: -6")]
    write_jsonl(d / "test_queries.jsonl", queries)
    write_jsonl(d / "train_queries.jsonl", [_row("9_A", "100"), _row("9_B", "107")])
    return d


def _args(tmp_path, d, model="demo:all-minilm-l6-v2", **kw):
    return EvalArgs(model_name_or_path=model, embedder_model_class="encoder-only-base",
                    queries_file=str(d / "test_queries.jsonl"), corpus_file=str(d / "corpus.jsonl"),
                    train_queries_file=str(d / "train_queries.jsonl"), output_dir=str(tmp_path / "out"),
                    query_max_len=64, passage_max_len=32, embedder_batch_size=8,
                    devices="cpu", **kw)


def test_missing_model_folder_fails_first(tmp_path):
    d = _files(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        run_evaluation(_args(tmp_path, d, model=str(tmp_path / "nope")))
    assert not (tmp_path / "out").exists()


def test_gold_id_absent_from_corpus(tmp_path):
    bad = _row("1_A", "100")
    bad["pos_ids"] = ["999"]
    d = _files(tmp_path, [bad])
    with pytest.raises(InputError, match=r"line 1, field 'pos_ids': id '999' is not in the corpus"):
        run_evaluation(_args(tmp_path, d))
    assert not list((tmp_path / "out").glob("*"))


@pytest.mark.integration
def test_stage_with_small_model(tmp_path, capsys):
    d = _files(tmp_path)
    argv = ["--model_name_or_path", "demo:all-minilm-l6-v2", "--embedder_model_class", "encoder-only-base",
            "--queries_file", str(d / "test_queries.jsonl"), "--corpus_file", str(d / "corpus.jsonl"),
            "--train_queries_file", str(d / "train_queries.jsonl"), "--output_dir", str(tmp_path / "out"),
            "--embedder_query_max_length", "64", "--embedder_passage_max_length", "32", "--devices", "cpu",
            "--use_fp16", "False", "--topk", "5", "--label", "minilm"]
    main(argv)
    out = tmp_path / "out"
    m = json.loads((out / "metrics.json").read_text())
    assert m["label"] == "minilm" and m["n_queries"] == 3 and m["args"]["use_fp16"] is False
    assert [f"Recall@{k}" for k in range(1, 6)] == [k for k in m if k.startswith("Recall@")]
    assert m["seen"]["n_queries"] == 2 and m["unseen"]["n_queries"] == 1
    ranks = read_jsonl(out / "rankings.jsonl")
    assert [r["query_id"] for r in ranks] == ["1_A", "2_B", "3_C"]
    # depth max(topk, map_k) = 25, capped at the corpus size
    assert all(len(r["ranked_ids"]) == 8 and set(r["ranked_ids"]) == set(IDS) for r in ranks)
    assert all(r["scores"] == sorted(r["scores"], reverse=True) for r in ranks)
    assert [r["seen"] for r in ranks] == [True, False, True]
    # metrics.json agrees with an independent recomputation from the saved rankings
    again = retrieval_metrics([r["ranked_ids"] for r in ranks], [r["pos_ids"] for r in ranks], ks=(1, 5))
    assert m["MAP@25"] == pytest.approx(again["MAP@25"]) and m["Recall@5"] == pytest.approx(again["Recall@5"])
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["subset"] for r in rows] == ["all", "seen", "unseen"]
    assert float(rows[0]["MAP@25"]) == pytest.approx(m["MAP@25"])
    assert "MAP@25" in capsys.readouterr().out


@pytest.mark.integration
def test_lora_adapter_folder_equals_merged_model(tmp_path):
    """An adapter folder (adapter_config.json) is loaded on its base; same metrics as the merged model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoTokenizer

    from helpers.common.models import resolve_model
    base = resolve_model("demo:all-minilm-l6-v2")
    torch.manual_seed(0)
    model = get_peft_model(AutoModel.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], init_lora_weights=False))
    model.save_pretrained(tmp_path / "adapter")
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == base
    merged = model.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp_path / "merged")
    d = _files(tmp_path)
    res, scores = {}, {}
    for name, model in [("adapter", str(tmp_path / "adapter")), ("merged", str(tmp_path / "merged")),
                        ("base", "demo:all-minilm-l6-v2")]:
        args = _args(tmp_path, d, model=model, pooling_method="mean", topk=8)
        args.output_dir = str(tmp_path / name)
        res[name] = run_evaluation(args)
        ranks = {r["query_id"]: r for r in read_jsonl(tmp_path / name / "rankings.jsonl")}
        scores[name] = np.array([dict(zip(r["ranked_ids"], r["scores"]))[i] for r in ranks.values() for i in IDS])
    assert res["adapter"]["label"] == "adapter" and res["base"]["label"] == "all-minilm-l6-v2"
    np.testing.assert_allclose(scores["adapter"], scores["merged"], atol=1e-4)
    assert np.abs(scores["adapter"] - scores["base"]).max() > 1e-3     # the adapter was really applied
    for k in ("MAP@25", "MRR", "Recall@1", "Recall@3"):
        assert res["adapter"][k] == pytest.approx(res["merged"][k])


# ---------- several models ----------

def test_model_specs_finds_epochs_in_order(tmp_path):
    from helpers.eval.evaluate import model_specs
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
    from helpers.eval.evaluate import evaluate_models, model_specs
    d = _files(tmp_path)
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
    assert [(r["reference"], r["verdict"] in ("better", "worse", "no difference")) for r in rows] == [
        ("", False)] * 3 + [("minilm", True)] * 3
    assert "dMAP@25_lo" in rows[0] and "dRecall@25" not in rows[0]
    assert [(r["label"], r["subset"]) for r in rows] == [
        (lab, sub) for lab in ("minilm", "minilm short") for sub in ("all", "seen", "unseen")]
    args = json.loads((tmp_path / "cmp" / "minilm_short" / "metrics.json").read_text())["args"]
    assert args["passage_max_len"] == 4 and args["query_max_len"] == 64
    with pytest.raises(ValueError, match="unknown keys"):
        evaluate_models([{"label": "x", "path": "demo:all-minilm-l6-v2", "class": "encoder-only-base", "bogus": 1}],
                        str(d / "test_queries.jsonl"), str(d / "corpus.jsonl"), str(tmp_path / "cmp2"))


# ---------- the notebook ----------

def _tiny_kaggle_files(d, n=30):
    """A synthetic test.csv (2 questions) and a mapping of n misconceptions (our own text)."""
    import csv as _csv
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "misconception_mapping.csv", "w", newline="") as f:
        w = _csv.writer(f)
        w.writerow(["MisconceptionId", "MisconceptionName"])
        for i in range(n):
            w.writerow([i, f"Misconception number {i} about {'fractions' if i % 2 else 'angles'}"])
    cols = ["QuestionId", "ConstructId", "ConstructName", "SubjectId", "SubjectName", "CorrectAnswer",
            "QuestionText", "AnswerAText", "AnswerBText", "AnswerCText", "AnswerDText"]
    with open(d / "test.csv", "w", newline="") as f:
        w = _csv.writer(f)
        w.writerow(cols)
        w.writerow([5, 1, "Add fractions", 2, "Fractions", "B", "1/2 + 1/4 = ?", "2/6", "3/4", "1/8", "2/4"])
        w.writerow([6, 3, "Angles in a triangle", 4, "Angles", "D", "Sum of angles?", "360", "90", "270", "180"])
    return d / "test.csv", d / "misconception_mapping.csv"


@pytest.mark.integration
def test_notebook_runs_and_writes_everything(tmp_path, repo_root):
    import os
    import papermill as pm
    from helpers.common.models import resolve_model
    d = _files(tmp_path)
    kd = tmp_path / "kd"
    kd.mkdir()
    os.symlink(resolve_model("demo:all-minilm-l6-v2"), kd / "merged_model_lora_epoch_1")   # stands in for a trained epoch
    test_csv, mapping = _tiny_kaggle_files(tmp_path / "kaggle")
    write_jsonl(kd / "metrics.jsonl", [{"epoch": 1, "eval_loss": 2.0, "MAP@25": 0.1, "Recall@25": 0.4},
                                       {"epoch": 2, "eval_loss": 1.5, "MAP@25": 0.2, "Recall@25": 0.5}])
    out = tmp_path / "eval"
    pm.execute_notebook(
        str(repo_root / "notebooks" / "04_eval.ipynb"), str(tmp_path / "04_eval.out.ipynb"), cwd=str(repo_root),
        kernel_name="python3", progress_bar=False,
        parameters=dict(models=[{"label": "base", "path": "demo:all-minilm-l6-v2", "class": "encoder-only-base"}],
                        epoch_glob=str(kd / "merged_model_lora_epoch_*"), epoch_model_class="encoder-only-base",
                        queries_file=str(d / "test_queries.jsonl"), corpus_file=str(d / "corpus.jsonl"),
                        train_queries_file=str(d / "train_queries.jsonl"), output_dir=str(out),
                        query_max_len=64, passage_max_len=32, embedder_batch_size=16,
                        devices="cpu",
                        training_metrics_file=str(kd / "metrics.jsonl"), reference_model="base",
                        n_resamples=200, test_csv=str(test_csv), sample_submission=None,
                        submission_file=str(tmp_path / "submission.csv")))
    for name in ("recall_curves.png", "map_by_epoch.png", "seen_unseen.png", "training_by_epoch.png", "comparison.csv",
                 "map_intervals.png", "base/metrics.json", "epoch_1/rankings.jsonl", "epoch_1/per_query.jsonl"):
        assert (out / name).stat().st_size > 0, name
    import csv
    comp = list(csv.DictReader((out / "comparison.csv").open()))
    epoch = [r for r in comp if r["label"] == "epoch 1" and r["subset"] == "all"][0]
    assert epoch["reference"] == "base" and float(epoch["dMAP@25"]) == 0.0     # the same model
    lines = (tmp_path / "submission.csv").read_text().splitlines()
    assert lines[0] == "QuestionId_Answer,MisconceptionId"
    assert sorted(x.split(",")[0] for x in lines[1:]) == ["5_A", "5_C", "5_D", "6_A", "6_B", "6_C"]
    assert all(len(set(x.split(",")[1].split(" "))) == 25 for x in lines[1:])


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
    import helpers.eval.evaluate as ev
    calls = []
    real = ev.run_evaluation

    def run(args, embedder=None):
        calls.append(args.label)
        return real(args, embedder=_FakeEmbedder(args.model_name_or_path))
    (tmp_path / "model").mkdir()
    monkeypatch.setattr(ev, "run_evaluation", run)
    monkeypatch.setattr(ev, "resolve_model", lambda p: str(tmp_path / "model"))
    return calls


def _cmp(tmp_path, **kw):
    from helpers.eval.evaluate import evaluate_models
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
    _files(tmp_path)
    with pytest.raises(ValueError, match=r"reference_model 'nope' is not one of the models: 'base', 'good', 'same'"):
        _cmp(tmp_path, reference_model="nope")
    assert fake_models == []                                   # checked before any model runs
    res = _cmp(tmp_path, reference_model="base", n_resamples=200, bootstrap_seed=1)
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
    _files(tmp_path)
    res = _cmp(tmp_path, n_resamples=50)
    cols = list(_csv_rows(tmp_path / "cmp" / "comparison.csv")[0])
    assert cols[-3:] == ["MRR", "MAP@25_lo", "MAP@25_hi"]
    assert "paired" not in res["good"] and res["good"]["intervals"]["seen"]["MAP@25"]["mean"] == 1.0
    assert "verdict" not in comparison_table(res)[0]


def test_reuse_keeps_paired_results_and_checks_query_sets(tmp_path, fake_models):
    _files(tmp_path)
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
    from helpers.eval.evaluate import evaluate_models
    d = _files(tmp_path)
    with pytest.raises(ValueError, match="share an output folder"):
        evaluate_models([{"label": "epoch 1", "path": "fake:rank1", "class": "encoder-only-base"},
                         {"label": "epoch_1", "path": "fake:rank2", "class": "encoder-only-base"}],
                        str(d / "test_queries.jsonl"), str(d / "corpus.jsonl"), str(tmp_path / "cmp"))
    assert fake_models == []
