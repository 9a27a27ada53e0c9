"""configs/eedi_cpu_teacher.yaml then configs/eedi_cpu.yaml end to end on the real Eedi sample
(../shared/eedi_sample), at small sizes from the command line: every step runs, the KD ablation's two
round-2 trainings differ only in KD, the teacher (trained once, in its own run folder) is compared with
its student, and the comparison carries paired intervals."""
import csv
import json

import pytest

import run_all
from helpers.common.io_utils import read_jsonl

TEACHER_STEPS = ["prepare", "mine_r0", "train_teacher"]
STEPS = ["prepare", "zero_shot", "mine_r0", "st_mnrl_inbatch", "st_mnrl_hn", "train_r1", "eval_r1", "check_teacher",
         "mine_r2", "score", "train_hn_r2", "train_kd", "compare"]
SMALL = ["train_max_queries=32",                        # mining: a sample of the train queries
         "num_train_epochs=1", "per_device_train_batch_size=8", "train_group_size=4", "negative_number=3",
         "mine_r0.query_max_len=128"]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(1800)                      # both profiles through papermill
def test_eedi_cpu_chain_on_the_sample(shared_dir, tmp_path, capsys):
    data = ["--var", f"data_dir={shared_dir / 'eedi_sample'}", "--var", "train_file=train_sample.csv"]
    teacher = ["--profile", "configs/eedi_cpu_teacher.yaml", "--output_root", str(tmp_path), *data]
    for s in SMALL + ["max_train_queries=16", "max_len=128"]:
        teacher += ["--set", s]
    assert run_all.main(teacher) == 0, capsys.readouterr().err
    t_manifest = json.loads((tmp_path / "eedi_cpu_teacher" / "manifest.json").read_text())
    assert list(t_manifest["steps"]) == TEACHER_STEPS

    sets = SMALL + ["zero_shot.query_max_len=128", "mine_r2.query_max_len=128", "compare.query_max_len=128",
                    "eval_r1.query_max_len=128", "reranker_max_length=128", "train_r1.query_max_len=128",
                    "train_hn_r2.query_max_len=128", "train_kd.query_max_len=128", "top_k=10"]
    argv = ["--profile", "configs/eedi_cpu.yaml", "--output_root", str(tmp_path), "--run_name", "s", *data]
    for s in sets:
        argv += ["--set", s]
    assert run_all.main(argv) == 0, capsys.readouterr().err     # the teacher: {output_root}/eedi_cpu_teacher/teacher
    run = tmp_path / "s"
    manifest = json.loads((run / "manifest.json").read_text())
    assert list(manifest["steps"]) == STEPS and all(s["status"] == "done" for s in manifest["steps"].values())
    p_hn, p_kd = manifest["steps"]["train_hn_r2"]["parameters"], manifest["steps"]["train_kd"]["parameters"]
    assert {k for k in set(p_hn) | set(p_kd) if p_hn.get(k) != p_kd.get(k)} == {"knowledge_distillation", "output_dir"}

    # the teacher: trained on the train split only, compared with its student on the test split
    teacher = read_jsonl(tmp_path / "eedi_cpu_teacher" / "teacher" / "metrics.jsonl")
    assert teacher[0]["epoch"] == 1 and "group_map" in teacher[0]
    rer = json.loads((run / "teacher_check" / "rerank_eval.json").read_text())
    assert rer["n_queries"] == len(read_jsonl(run / "data" / "test_queries.jsonl"))
    assert {"lo", "hi", "verdict"} <= set(rer["reranked - bi-encoder"]["MAP@25"])
    assert rer["fusion_alpha"] == 0.5              # the fused teacher stage 02 writes, checked against round 1
    # the fused teacher: per group, 0.5 * z(cross-encoder) + 0.5 * z(round 1), the raw scores kept
    scored = read_jsonl(run / "scored" / "train_scored.jsonl")
    assert all(len(r["neg_scores"]) == len(r["neg"]) == len(r["neg_reranker_scores"]) == 3 for r in scored)
    assert all(abs(sum(r["pos_scores"] + r["neg_scores"])) < 1e-4 for r in scored)      # z-scores sum to 0

    with open(run / "eval" / "comparison.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["subset"] == "all"]
    assert [r["label"] for r in rows] == ["zero-shot", "round 1 (hard negatives)", "round 2 (hard negatives only)",
                                          "round 2 (KD)", "sentence-transformers MNRL",
                                          "sentence-transformers MNRL + 1 mined negative",
                                          "round 2 (KD) + reranker top 25 a0.5"]
    kd = rows[3]
    # the cascade: the teacher re-orders KD's top 25, paired against KD alone and against the reference
    casc = json.loads((run / "eval" / "comparison.json").read_text())["round 2 (KD) + reranker top 25 a0.5"]["cascade"]
    assert casc["embedder"] == "round 2 (KD)" and casc["alpha"] == 0.5 and casc["pairs"] == 25 * len(read_jsonl(run / "data" / "test_queries.jsonl"))
    assert rows[-1]["reference"] == "round 2 (hard negatives only)" and rows[-1]["dMAP@25_lo"] != ""
    # the side by side: sentence-transformers trained on the same mined file, paired against our round 2
    st = json.loads((run / "st_mnrl_hn" / "st_run.json").read_text())
    assert st["queries"] == 32 and st["steps"] >= 1 and rows[-2]["dMAP@25_lo"] != ""
    assert kd["reference"] == "round 2 (hard negatives only)" and kd["dMAP@25_lo"] != ""
    with open(run / "submission.csv", newline="") as f:
        sub = list(csv.reader(f))
    assert sub[0] == ["QuestionId_Answer", "MisconceptionId"] and len(sub) > 1
