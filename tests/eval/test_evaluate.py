import csv
import json

import numpy as np
import pytest

from helpers.eval.evaluate import EvalArgs, main, run_evaluation
from helpers.common.io_utils import InputError, read_jsonl, write_jsonl
from helpers.eval.metrics import retrieval_metrics
from tests.eval.eval_inputs import IDS, eval_files, query_row


# ---------- the stage ----------

def _args(tmp_path, d, model="demo:all-minilm-l6-v2", **kw):
    return EvalArgs(model_name_or_path=model, embedder_model_class="encoder-only-base",
                    queries_file=str(d / "test_queries.jsonl"), corpus_file=str(d / "corpus.jsonl"),
                    train_queries_file=str(d / "train_queries.jsonl"), output_dir=str(tmp_path / "out"),
                    query_max_len=64, passage_max_len=32, embedder_batch_size=8,
                    devices="cpu", **kw)


def test_missing_model_folder_fails_first(tmp_path):
    d = eval_files(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        run_evaluation(_args(tmp_path, d, model=str(tmp_path / "nope")))
    assert not (tmp_path / "out").exists()


def test_gold_id_absent_from_corpus(tmp_path):
    bad = query_row("1_A", "100")
    bad["pos_ids"] = ["999"]
    d = eval_files(tmp_path, [bad])
    with pytest.raises(InputError, match=r"line 1, field 'pos_ids': id '999' is not in the corpus"):
        run_evaluation(_args(tmp_path, d))
    assert not list((tmp_path / "out").glob("*"))


@pytest.mark.integration
def test_stage_with_small_model(tmp_path, capsys):
    d = eval_files(tmp_path)
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
    d = eval_files(tmp_path)
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
def test_notebook_runs_and_writes_everything(tmp_path, repo_root, tiny_bert_cross_encoder_dir):
    import os
    import papermill as pm
    from helpers.common.models import resolve_model
    d = eval_files(tmp_path)
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
                        submission_file=str(tmp_path / "submission.csv"),
                        reranker={"reranker_name_or_path": tiny_bert_cross_encoder_dir,   # the cascade, and its submission
                                  "reranker_model_class": "encoder-only-base", "reranker_max_length": 64, "top_k": 5},
                        rerank_models=["base"], rerank_sweep_top_k=[2, 5], submission_model="base + reranker top 5"))
    for name in ("recall_curves.png", "map_by_epoch.png", "seen_unseen.png", "training_by_epoch.png", "comparison.csv",
                 "map_intervals.png", "base/metrics.json", "epoch_1/rankings.jsonl", "epoch_1/per_query.jsonl"):
        assert (out / name).stat().st_size > 0, name
    import csv
    comp = list(csv.DictReader((out / "comparison.csv").open()))
    epoch = [r for r in comp if r["label"] == "epoch 1" and r["subset"] == "all"][0]
    assert epoch["reference"] == "base" and float(epoch["dMAP@25"]) == 0.0     # the same model
    casc = [r for r in comp if r["label"] == "base + reranker top 5" and r["subset"] == "all"][0]
    assert casc["reference"] == "base" and float(casc["dMAP@25_lo"]) <= float(casc["dMAP@25"]) <= float(casc["dMAP@25_hi"])
    sweep = list(csv.DictReader((out / "base_reranker_top_5" / "sweep.csv").open()))
    assert [int(r["top_k"]) for r in sweep] == [2, 5] and all(float(r["seconds"]) >= 0 for r in sweep)
    assert (out / "base_reranker_top_5" / "sweep.png").stat().st_size > 1000
    nb = (tmp_path / "04_eval.out.ipynb").read_text()
    assert "reranker" in nb and "embedder Recall@k" in nb                  # the cascade table was shown
    lines = (tmp_path / "submission.csv").read_text().splitlines()
    assert lines[0] == "QuestionId_Answer,MisconceptionId"
    assert sorted(x.split(",")[0] for x in lines[1:]) == ["5_A", "5_C", "5_D", "6_A", "6_B", "6_C"]
    assert all(len(set(x.split(",")[1].split(" "))) == 25 for x in lines[1:])

