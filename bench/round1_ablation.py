"""Round 1 on real data, one change at a time, against sentence-transformers' MNRL (issue 28).

    python bench/round1_ablation.py --run_dir model_output/eedi_dev [--only base,full_t05] [--list]

Needs a run folder with ``data/`` (00_prepare_data) and ``mined_r0/`` (01_mine_hn with the zero-shot
student), e.g. ``python run_all.py --profile eedi_cpu --var data_dir=../shared/eedi_dev --run_name
eedi_dev --only prepare,zero_shot,mine_r0``. Every variant trains one epoch on ``mined_r0/train_mined.jsonl``
in its own process (``python -m helpers.train.kd_finetune`` or ``bench/st_mnrl.py``), is evaluated by
the same code on ``data/test_queries.jsonl`` (MAP@25, Recall@25/100), and is compared with the
reference (sentence-transformers with one mined negative) and with ``base`` (the profile's round 1)
by a paired bootstrap over the test queries. Results append to ``<run_dir>/ablation/results.jsonl``
(a finished variant is not trained again; ``--redo`` trains it again) and the table is printed.
Train time is the wall time of the training process (model load included), on whatever machine and
load it ran: compare times within one table only.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STUDENT = "demo:all-minilm-l6-v2"
REFERENCE = "st_hn"
# The profile's round 1 (configs/eedi_cpu.yaml, train_r1) as it was when issue 28 was filed.
BASE = {"learning_rate": 2e-4, "use_lora": True, "lora_rank": 32, "lora_alpha": 64, "temperature": 0.02,
        "train_group_size": 8, "per_device_train_batch_size": 32, "num_train_epochs": 1, "warmup_ratio": 0.1}
FULL = {"use_lora": False, "learning_rate": 2e-5}
# name -> (what changes, overrides of BASE); "st:" variants are sentence-transformers runs.
VARIANTS = {
    "st_hn": ("sentence-transformers MNRL, full, lr 2e-5, scale 20, batch 32, + 1 mined negative", "st:1"),
    "st_inbatch": ("sentence-transformers MNRL, same, in-batch negatives only", "st:0"),
    "base": ("ours, the profile's round 1: LoRA r32 (query, value), lr 2e-4, temperature 0.02, group 8", {}),
    "lora_t05": ("base, temperature 0.05", {"temperature": 0.05}),
    "full": ("base, full fine-tuning at lr 2e-5", FULL),
    "full_t05": ("full, temperature 0.05", {**FULL, "temperature": 0.05}),
    "full_t05_g2": ("full_t05, group 2 (1 mined negative: ST's batch)", {**FULL, "temperature": 0.05,
                                                                          "train_group_size": 2}),
    "full_t05_mask": ("full_t05, in-batch false negatives masked", {**FULL, "temperature": 0.05,
                                                                     "mask_false_negatives": True}),
    "full_t05_mask_lr5e-5": ("full_t05_mask, lr 5e-5", {**FULL, "temperature": 0.05, "mask_false_negatives": True,
                                                         "learning_rate": 5e-5}),
    "full_t05_mask_w0": ("full_t05_mask, no warmup", {**FULL, "temperature": 0.05, "mask_false_negatives": True,
                                                      "warmup_ratio": 0.0}),
    "full_t05_mask_e2": ("full_t05_mask, 2 epochs", {**FULL, "temperature": 0.05, "mask_false_negatives": True,
                                                     "num_train_epochs": 2}),
    "full_t05_lr5e-5": ("full_t05, lr 5e-5", {**FULL, "temperature": 0.05, "learning_rate": 5e-5}),
    "full_t05_lr1e-4": ("full_t05, lr 1e-4", {**FULL, "temperature": 0.05, "learning_rate": 1e-4}),
    "full_t05_lr2e-4": ("full_t05, lr 2e-4", {**FULL, "temperature": 0.05, "learning_rate": 2e-4}),
    # round 2: negatives mined again with a round-1 model, one more epoch from it (hard negatives only)
    "r2_full_t05": ("round 2 from full_t05: re-mined with it (ranks 2-100, 7), one more epoch, same settings",
                    {**FULL, "temperature": 0.05, "start": "full_t05"}),
    "r2_full_t05_lr5e-5": ("round 2 from full_t05_lr5e-5, the same way, same settings",
                           {**FULL, "temperature": 0.05, "learning_rate": 5e-5, "start": "full_t05_lr5e-5"}),
    "r2_full_t05_lr1e-4": ("round 2 from full_t05_lr1e-4, the same way, same settings",
                           {**FULL, "temperature": 0.05, "learning_rate": 1e-4, "start": "full_t05_lr1e-4"}),
    # round 2 with knowledge distillation (issue 29): the same start, mined file, steps and seed as
    # r2_full_t05_lr5e-5 (the HN-only control), the mined file scored by --teacher (bench/teacher_search.py)
    "r2kd": ("round 2 KD from full_t05_lr5e-5: FlagEmbedding's kl_div over the group + InfoNCE, teacher T 1",
             {**FULL, "temperature": 0.05, "learning_rate": 5e-5, "start": "full_t05_lr5e-5", "reuse_mined":
              "r2_full_t05_lr5e-5", "knowledge_distillation": True}),
    "r2kd_1st": ("r2kd the 1st-place way: KD over the whole in-batch row (other groups at the file's 5th percentile "
                 "of negative scores), false negatives masked by id, no two queries of a misconception in a batch",
                 {**FULL, "temperature": 0.05, "learning_rate": 5e-5, "start": "full_t05_lr5e-5", "reuse_mined":
                  "r2_full_t05_lr5e-5", "knowledge_distillation": True, "kd_in_batch_score": "p5",
                  "mask_false_negatives": True, "no_duplicate_positives": True}),
    "r2kd_margin": ("r2kd with margin-MSE instead of kl_div (+ InfoNCE)",
                    {**FULL, "temperature": 0.05, "learning_rate": 5e-5, "start": "full_t05_lr5e-5", "reuse_mined":
                     "r2_full_t05_lr5e-5", "knowledge_distillation": True, "kd_loss_type": "margin_mse"}),
    # the fused teacher (helpers/rerank/fusion.py): 0.5 * z(teacher) + 0.5 * z(round-1 student) per group; it
    # re-orders the student's top 25 better than the student, where the teacher alone is worse (README)
    "r2kd_fused": ("r2kd, the teacher fused with the round-1 student (alpha 0.5)",
                   {**FULL, "temperature": 0.05, "learning_rate": 5e-5, "start": "full_t05_lr5e-5", "reuse_mined":
                    "r2_full_t05_lr5e-5", "knowledge_distillation": True, "fusion_alpha": 0.5}),
    "r2kd_self": ("r2kd_fused's control: alpha 0, the round-1 student's own scores (self-distillation)",
                  {**FULL, "temperature": 0.05, "learning_rate": 5e-5, "start": "full_t05_lr5e-5", "reuse_mined":
                   "r2_full_t05_lr5e-5", "knowledge_distillation": True, "fusion_alpha": 0.0}),
    "r2kd_fused_t025": ("r2kd_fused at teacher temperature 0.25 (its p(positive) on the KD groups 0.61, the student's 0.51)",
                        {**FULL, "temperature": 0.05, "learning_rate": 5e-5, "start": "full_t05_lr5e-5", "reuse_mined":
                         "r2_full_t05_lr5e-5", "knowledge_distillation": True, "fusion_alpha": 0.5,
                         "teacher_temperature": 0.25}),
    # the 1st-place batching: each query pulls in up to 3 queries whose positive is one of its mined negatives
    "r2kd_1st_hnq": ("r2kd_1st + hard_negative_queries 3 (the 1st-place batching)",
                     {**FULL, "temperature": 0.05, "learning_rate": 5e-5, "start": "full_t05_lr5e-5", "reuse_mined":
                      "r2_full_t05_lr5e-5", "knowledge_distillation": True, "kd_in_batch_score": "p5",
                      "mask_false_negatives": True, "no_duplicate_positives": True, "hard_negative_queries": 3}),
    "r2_hnq": ("round 2 HN-only + hard_negative_queries 3 (the batching alone, no teacher)",
               {**FULL, "temperature": 0.05, "learning_rate": 5e-5, "start": "full_t05_lr5e-5", "reuse_mined":
                "r2_full_t05_lr5e-5", "knowledge_distillation": False, "hard_negative_queries": 3}),
    # the KD mechanism's control: a teacher that does know more on the KD groups, a better bi-encoder (round 1 at
    # lr 1e-4: top-1 0.723 on the groups vs the student's 0.674), its cosines at the student's temperature
    "r2kd_bi": ("r2kd, the teacher a better bi-encoder (full_t05_lr1e-4's cosines, teacher temperature 0.05)",
                {**FULL, "temperature": 0.05, "learning_rate": 5e-5, "start": "full_t05_lr5e-5", "reuse_mined":
                 "r2_full_t05_lr5e-5", "knowledge_distillation": True, "bi_teacher": "full_t05_lr1e-4",
                 "teacher_temperature": 0.05}),
}
TEACHER = {"path": None}        # --teacher: a reranker folder (a train_reranker output stands for its last epoch)


def mine_command(model: Path, run_dir: Path, out: Path, keep_scores: bool = False) -> list[str]:
    """The profile's mining (configs/eedi_cpu.yaml, mine_r2) with a round-1 model, train queries only;
    ``keep_scores``: the same file plus the model's own scores (``mined_scores/``, for a fused teacher)."""
    flags = {"model_name_or_path": str(model), "embedder_model_class": "encoder-only-base",
             "input_file": str(run_dir / "data" / "train_queries.jsonl"),
             "candidate_pool": str(run_dir / "data" / "corpus.jsonl"),
             "output_file": str(out / ("mined_scores" if keep_scores else "mined") / "train_mined.jsonl"),
             "range_for_sampling": "2-100", "negative_number": 7, "shuffle_data": True, "embedder_batch_size": 64,
             "query_max_len": 256, "passage_max_len": 64, "seed": 42, "overwrite": True, "keep_scores": keep_scores}
    cmd = [sys.executable, "-m", "helpers.mine.hn_mine"]
    for k, v in flags.items():
        cmd += [f"--{k}", str(v)]
    return cmd


def scored_file(run_dir: Path, out: Path, alpha=None, bi=None) -> Path:
    """Shared by the KD variants: the control's mined file scored once per teacher (by folder name);
    a fused teacher (``alpha``) and a bi-encoder teacher (``bi``: a variant's name) have their own file."""
    name = f"bi_{bi}" if bi else "_".join(Path(str(TEACHER["path"])).parts[-2:]) + ("" if alpha is None else f"_fused{alpha:g}")
    return run_dir / "ablation" / "scored" / name / "train_scored.jsonl"


def bi_teacher_scores(run_dir: Path, mined: Path, variant: str, dst: Path) -> None:
    """The mined file with ``pos_scores`` / ``neg_scores`` = the cosines of another bi-encoder (a round-1
    variant), embedded as evaluation embeds (query 256 / passage 64 tokens)."""
    from helpers.common.io_utils import load_corpus, read_jsonl, write_jsonl
    from helpers.embed.args import EmbedderArgs
    from helpers.embed.embedder import Embedder
    rows = read_jsonl(mined)
    ids, texts = load_corpus(run_dir / "data" / "corpus.jsonl")
    at = {c: i for i, c in enumerate(ids)}
    e = Embedder(EmbedderArgs(model_name_or_path=str(model_path(VARIANTS[variant][1], run_dir / "ablation" / variant)),
                              embedder_model_class="encoder-only-base", query_max_len=256, passage_max_len=64,
                              embedder_batch_size=64, devices="cpu"))
    p_emb, q_emb = e.encode_corpus(texts), e.encode_queries(rows)
    for q, r in zip(q_emb, rows):
        r.pop("__line__", None)
        r["pos_scores"] = [round(float(q @ p_emb[at[i]]), 6) for i in r["pos_ids"]]
        r["neg_scores"] = [round(float(q @ p_emb[at[i]]), 6) for i in r["neg_ids"]]
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(dst, rows)


def score_command(spec: dict, run_dir: Path, out: Path) -> list[str]:
    """The control's mined file scored by the teacher (stage 02's command); fused: the same file mined
    again with the model's scores kept (seeded: the same negatives), stage 02 with --fusion_alpha."""
    alpha = spec.get("fusion_alpha")
    mined = run_dir / "ablation" / spec["reuse_mined"] / ("mined" if alpha is None else "mined_scores") / "train_mined.jsonl"
    cmd = [sys.executable, "-m", "helpers.rerank.add_reranker_score", "--input_file", str(mined),
           "--output_file", str(scored_file(run_dir, out, alpha)), "--reranker_name_or_path", str(TEACHER["path"]),
           "--reranker_model_class", "encoder-only-base", "--reranker_max_length", "192",
           "--reranker_batch_size", "64", "--overwrite", "True"]
    return cmd + ([] if alpha is None else ["--fusion_alpha", str(alpha)])


def refuse(src: Path, dst: Path, alpha: float) -> None:
    """A fused scored file at another ``alpha``, from one that kept the reranker's raw scores (no rescoring)."""
    from helpers.common.io_utils import read_jsonl, write_jsonl
    from helpers.rerank.fusion import RAW_FIELDS, fuse_rows
    rows = read_jsonl(src)
    for r in rows:
        r.pop("__line__", None)
        r["pos_scores"], r["neg_scores"] = r.pop(RAW_FIELDS[0]), r.pop(RAW_FIELDS[1])
    fuse_rows(rows, alpha)
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(dst, rows)


def percentile_neg_score(path: Path, q: float = 5) -> float:
    import numpy as np
    scores = [s for line in path.read_text().splitlines() if line.strip() for s in json.loads(line)["neg_scores"]]
    return round(float(np.percentile(scores, q)), 4)


def train_command(name: str, spec, run_dir: Path, out: Path) -> list[str]:
    train = run_dir / "mined_r0" / "train_mined.jsonl"
    if isinstance(spec, dict) and "start" in spec:         # round 2: from a round-1 variant, on its own mining
        spec = dict(spec)
        start = spec.pop("start")
        train = out / "mined" / "train_mined.jsonl"
        if spec.pop("reuse_mined", None):                  # KD: the control's mined file, scored by the teacher
            train = scored_file(run_dir, out, spec.pop("fusion_alpha", None), spec.pop("bi_teacher", None))
            if spec.get("kd_in_batch_score") == "p5":
                spec["kd_in_batch_score"] = percentile_neg_score(train) if train.exists() else 0.0
        spec["model_name_or_path"] = str(model_path(VARIANTS[start][1], run_dir / "ablation" / start))
    if isinstance(spec, str):
        return [sys.executable, str(ROOT / "bench" / "st_mnrl.py"), "--train_data", str(train),
                "--output_dir", str(out / "model"), "--hard_negatives", spec.split(":")[1], "--model", STUDENT]
    flags = {**BASE, "model_name_or_path": STUDENT, "knowledge_distillation": False, **spec,
             "embedder_model_class": "encoder-only-base", "train_data": str(train), "output_dir": str(out / "train"),
             "query_max_len": 256, "passage_max_len": 64, "seed": 42, "overwrite_output_dir": True,
             "show_progress": False, "logging_steps": 20}
    cmd = [sys.executable, "-m", "helpers.train.kd_finetune"]
    for k, v in flags.items():
        cmd += [f"--{k}", str(v)]
    return cmd


def model_path(spec, out: Path) -> Path:
    if isinstance(spec, str):
        return out / "model"
    epochs = {**BASE, **{k: v for k, v in spec.items() if k not in ("start", "reuse_mined", "fusion_alpha", "bi_teacher")}}["num_train_epochs"]
    return out / "train" / f"merged_model_lora_epoch_{epochs}"


def evaluate(path: Path, run_dir: Path, out: Path) -> dict:
    from helpers.eval.evaluate import EvalArgs, run_evaluation
    args = EvalArgs(model_name_or_path=str(path), embedder_model_class="encoder-only-base",
                    queries_file=str(run_dir / "data" / "test_queries.jsonl"),
                    corpus_file=str(run_dir / "data" / "corpus.jsonl"),
                    train_queries_file=str(run_dir / "data" / "train_queries.jsonl"),
                    output_dir=str(out / "eval"), query_max_len=256, passage_max_len=64, embedder_batch_size=64,
                    label=path.parent.name)
    return run_evaluation(args)


def per_query(out: Path) -> dict:
    rows = [json.loads(x) for x in (out / "eval" / "per_query.jsonl").read_text().splitlines() if x.strip()]
    return {r["query_id"]: r["AP@25"] for r in rows}


def table(results: dict, run_dir: Path) -> str:
    from helpers.eval.paired import paired_bootstrap
    pq = {n: per_query(run_dir / "ablation" / n) for n in results}
    lines = ["| variant | what changes | MAP@25 | R@25 | R@100 | train s | minus ST+HN [95%] | minus base (KD: minus "
             "r2_full_t05_lr5e-5, its HN-only control) [95%] |",
             "|---|---|---:|---:|---:|---:|---|---|"]
    for n, r in results.items():
        cells = []
        for ref in (REFERENCE, "r2_full_t05_lr5e-5" if n.startswith(("r2kd", "r2_hnq")) else "base"):
            if ref not in pq or ref == n:
                cells.append("")
                continue
            b = paired_bootstrap(pq[ref], pq[n], n_resamples=2000, label_a=ref, label_b=n)
            cells.append(f"{b['mean_diff']:+.4f} [{b['lo']:+.4f}, {b['hi']:+.4f}] {b['verdict']}")
        lines.append(f"| {n} | {VARIANTS[n][0]} | {r['MAP@25']:.4f} | {r['Recall@25']:.3f} | {r['Recall@100']:.3f} "
                     f"| {r['train_seconds']:.0f} | {cells[0]} | {cells[1]} |")
    n_q = len(next(iter(pq.values()))) if pq else 0
    return "\n".join(lines) + f"\n\n{n_q} test queries; paired bootstrap (2,000 resamples) of per-query AP@25."


def pick(only, variants: dict):
    """The variants named by ``--only`` (default: all, in table order); None (with an error line) for unknown ones."""
    names = only.split(",") if only else list(variants)
    unknown = [n for n in names if n not in variants]
    if unknown:
        print(f"error: unknown variant(s) {unknown}; known: {', '.join(variants)}")
        return None
    return names


def read_results(log: Path) -> dict:
    """``{variant: result row}`` of a results.jsonl (the last row of a variant wins); its folder made."""
    log.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if log.exists():
        for line in log.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[r["variant"]] = r
    return done


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run_dir", default="model_output/eedi_dev")
    p.add_argument("--only", help="comma-separated variants (default: all, in table order)")
    p.add_argument("--redo", action="store_true", help="train the chosen variants again")
    p.add_argument("--list", action="store_true")
    p.add_argument("--teacher", help="the reranker that scores the KD variants' file (e.g. "
                   "model_output/eedi_dev/teacher_search/t_all/model)")
    p.add_argument("--bi_scores", metavar="VARIANT", help="only write the round-2 control's mined file scored by "
                   "VARIANT's cosines (ablation/scored/bi_VARIANT/, for bench/kd_groups.py) and stop")
    a = p.parse_args(argv)
    TEACHER["path"] = a.teacher
    if a.bi_scores:
        run_dir, ctrl = Path(a.run_dir), "r2_full_t05_lr5e-5"
        dst = scored_file(run_dir, run_dir / "ablation", bi=a.bi_scores)
        bi_teacher_scores(run_dir, run_dir / "ablation" / ctrl / "mined" / "train_mined.jsonl", a.bi_scores, dst)
        print(dst)
        return 0
    if a.list:
        for n, (what, spec) in VARIANTS.items():
            print(f"{n:22s} {what}")
        return 0
    run_dir = Path(a.run_dir)
    for need in ("data/test_queries.jsonl", "data/corpus.jsonl", "mined_r0/train_mined.jsonl"):
        if not (run_dir / need).exists():
            print(f"error: {run_dir / need} does not exist (see this script's help for the run that makes it)")
            return 2
    names = pick(a.only, VARIANTS)
    if names is None:
        return 2
    log = run_dir / "ablation" / "results.jsonl"
    done = read_results(log)
    for n in names:
        if n in done and not a.redo:
            continue
        what, spec = VARIANTS[n]
        out = run_dir / "ablation" / n
        cmd = train_command(n, spec, run_dir, out)
        print(f"=== {n}: {what}\n{' '.join(cmd)}", flush=True)
        t0 = time.time()
        with open(out.parent / f"{n}.log", "w") as f:
            rc = 0
            if isinstance(spec, dict) and "start" in spec:
                start_model = model_path(VARIANTS[spec["start"]][1], run_dir / "ablation" / spec["start"])
                if not start_model.is_dir():
                    print(f"{n}: run {spec['start']} first ({start_model} does not exist)")
                    return 2
                if spec.get("bi_teacher"):
                    if not scored_file(run_dir, out, bi=spec["bi_teacher"]).exists():
                        bi_teacher_scores(run_dir, run_dir / "ablation" / spec["reuse_mined"] / "mined" / "train_mined.jsonl",
                                          spec["bi_teacher"], scored_file(run_dir, out, bi=spec["bi_teacher"]))
                    cmd = train_command(n, spec, run_dir, out)
                elif spec.get("reuse_mined"):
                    if not TEACHER["path"]:
                        print(f"{n}: a KD variant needs --teacher")
                        return 2
                    alpha = spec.get("fusion_alpha")
                    if alpha is not None and not (run_dir / "ablation" / spec["reuse_mined"] / "mined_scores").is_dir():
                        rc = subprocess.run(mine_command(start_model, run_dir, run_dir / "ablation" / spec["reuse_mined"],
                                                         keep_scores=True), cwd=ROOT, stdout=f,
                                            stderr=subprocess.STDOUT).returncode
                    other = [scored_file(run_dir, out, x) for x in (0.5, 0.0) if x != alpha]
                    if not rc and not scored_file(run_dir, out, alpha).exists():
                        if alpha is not None and other[0].exists():
                            refuse(other[0], scored_file(run_dir, out, alpha), alpha)
                        else:
                            rc = subprocess.run(score_command(spec, run_dir, out), cwd=ROOT, stdout=f,
                                                stderr=subprocess.STDOUT).returncode
                    cmd = train_command(n, spec, run_dir, out)     # the fill score is read from the scored file
                else:
                    rc = subprocess.run(mine_command(start_model, run_dir, out), cwd=ROOT, stdout=f,
                                        stderr=subprocess.STDOUT).returncode
            rc = rc or subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
        seconds = time.time() - t0
        if rc:
            print(f"{n}: training failed (exit {rc}), see {out.parent / f'{n}.log'}")
            return rc
        if isinstance(spec, str):          # a reused sentence-transformers model: the time it took to make
            seconds = json.loads((out / "model" / "st_run.json").read_text()).get("process_seconds", seconds)
        m = evaluate(model_path(spec, out), run_dir, out)
        r = {"variant": n, "train_seconds": round(seconds, 1), **{k: m[k] for k in ("MAP@25", "Recall@25", "Recall@100")}}
        if isinstance(spec, dict) and spec.get("reuse_mined"):
            r["teacher"] = f"bi-encoder {spec['bi_teacher']}" if spec.get("bi_teacher") else TEACHER["path"]
            if spec.get("fusion_alpha") is not None:       # 0: the student's own scores, the teacher's weight 0
                r["fusion_alpha"] = spec["fusion_alpha"]
        done[n] = r
        with open(log, "a") as f:
            f.write(json.dumps(r) + "\n")
        print(json.dumps(r), flush=True)
    print(table({n: done[n] for n in VARIANTS if n in done}, run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
