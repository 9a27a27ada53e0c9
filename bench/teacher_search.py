"""A teacher that knows more than its student, on real data (issue 29, part 1).

    python bench/teacher_search.py --run_dir model_output/eedi_dev [--only t_s25] [--list]

The student is round 1 at the encoder defaults (``bench/round1_ablation.py``'s ``full_t05_lr5e-5``:
MiniLM, full fine-tuning, lr 5e-5, temperature 0.05); run that variant first. Each teacher variant is
a MiniLM cross-encoder trained by ``python -m helpers.train.train_reranker`` in its own process, then
asked the question that matters (``python -m helpers.eval.rerank_eval``): re-ordering the student's
own top 25 of the test queries, is MAP@25 higher than the student's, by a paired bootstrap interval
over the queries? A variant that trains on "the student's top 25" first mines the train queries with
the student (``range_for_sampling 0-25``, positives dropped, 7 negatives sampled), so the teacher
learns on negatives like the ones it will re-order. Results append to
``<run_dir>/teacher_search/results.jsonl`` (a finished variant is not run again; ``--redo`` runs it
again) and the table is printed. Times are wall times of the processes on whatever machine and load
they ran: compare them within one table only.
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

from round1_ablation import pick, read_results  # noqa: E402  (bench/ is the script's folder)

MINILM = "demo:all-minilm-l6-v2"
STUDENT_VARIANT = "full_t05_lr5e-5"         # round1_ablation's round 1 at the encoder defaults
# The profile's teacher (configs/eedi_cpu.yaml, train_teacher) as it was when issue 29 was filed.
PROFILE = {"init": "minilm", "negatives": "r0", "max_train_queries": 800, "num_train_epochs": 2,
           "learning_rate": 1e-4, "train_group_size": 8, "per_device_train_batch_size": 8, "max_len": 192}
# name -> (what changes, overrides of PROFILE)
VARIANTS = {
    "t_profile": ("the profile's teacher: MiniLM, zero-shot negatives (ranks 2-100), 800 queries, 2 epochs", {}),
    "t_all": ("the profile's teacher on all train queries, 1 epoch",
              {"max_train_queries": None, "num_train_epochs": 1}),
    "t_s25": ("initialised from the round-1 student, negatives from its top 25, all train queries, 1 epoch",
              {"init": "student", "negatives": "s25", "max_train_queries": None, "num_train_epochs": 1}),
    "t_m25": ("t_s25 initialised from MiniLM instead of the student",
              {"init": "minilm", "negatives": "s25", "max_train_queries": None, "num_train_epochs": 1}),
    "t_s25_e2": ("t_s25, 2 epochs", {"init": "student", "negatives": "s25", "max_train_queries": None,
                                     "num_train_epochs": 2}),
    "t_s25_lr5e-5": ("t_s25, lr 5e-5", {"init": "student", "negatives": "s25", "max_train_queries": None,
                                        "num_train_epochs": 1, "learning_rate": 5e-5}),
}


def student_dir(run_dir: Path) -> Path:
    return run_dir / "ablation" / STUDENT_VARIANT


def flags_cmd(module: str, flags: dict) -> list[str]:
    cmd = [sys.executable, "-m", module]
    for k, v in flags.items():
        if v is not None:                 # None: the stage's default (e.g. all train queries)
            cmd += [f"--{k}", str(v)]
    return cmd


def mine_command(run_dir: Path) -> list[str]:
    """The train queries mined with the round-1 student, from its own top 25."""
    return flags_cmd("helpers.mine.hn_mine", {
        "model_name_or_path": str(student_dir(run_dir) / "train" / "merged_model_lora_epoch_1"),
        "embedder_model_class": "encoder-only-base", "input_file": str(run_dir / "data" / "train_queries.jsonl"),
        "candidate_pool": str(run_dir / "data" / "corpus.jsonl"), "output_file": str(s25_file(run_dir)),
        "range_for_sampling": "0-25", "negative_number": 7, "shuffle_data": True, "embedder_batch_size": 64,
        "query_max_len": 256, "passage_max_len": 64, "seed": 42, "overwrite": True})


def s25_file(run_dir: Path) -> Path:
    return run_dir / "teacher_search" / "mined_s25" / "train_mined.jsonl"


def train_command(spec: dict, run_dir: Path, out: Path) -> list[str]:
    s = {**PROFILE, **spec}
    init = {"minilm": MINILM, "student": str(student_dir(run_dir) / "train" / "merged_model_lora_epoch_1")}[s.pop("init")]
    data = {"r0": run_dir / "mined_r0" / "train_mined.jsonl", "s25": s25_file(run_dir)}[s.pop("negatives")]
    return flags_cmd("helpers.train.train_reranker", {
        **s, "model_name_or_path": init, "reranker_model_class": "encoder-only-base", "use_lora": False,
        "train_data": str(data), "output_dir": str(out / "model"), "overwrite_output_dir": True, "seed": 42,
        "show_progress": False, "logging_steps": 50})


def rerank_command(run_dir: Path, out: Path) -> list[str]:
    return flags_cmd("helpers.eval.rerank_eval", {
        "rankings_file": str(student_dir(run_dir) / "eval" / "rankings.jsonl"),
        "queries_file": str(run_dir / "data" / "test_queries.jsonl"),
        "corpus_file": str(run_dir / "data" / "corpus.jsonl"), "reranker_name_or_path": str(out / "model"),
        "reranker_model_class": "encoder-only-base", "reranker_max_length": 192, "reranker_batch_size": 64,
        "top_k": 25, "n_resamples": 2000, "output_file": str(out / "rerank_eval.json")})


def table(results: dict) -> str:
    lines = ["| teacher | what changes | train s | student MAP@25 | reranked MAP@25 | reranked - student [95%] |",
             "|---|---|---:|---:|---:|---|"]
    for n, r in results.items():
        d = r["diff"]
        lines.append(f"| {n} | {VARIANTS[n][0]} | {r['train_seconds']:.0f} | {r['student']:.4f} | {r['reranked']:.4f} "
                     f"| {d['mean_diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}] {d['verdict']} |")
    n_q = next(iter(results.values()))["n_queries"] if results else 0
    return "\n".join(lines) + f"\n\n{n_q} test queries, the student's top 25 re-ordered; paired bootstrap (2,000 resamples) of per-query AP@25."


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run_dir", default="model_output/eedi_dev")
    p.add_argument("--only", help="comma-separated variants (default: all, in table order)")
    p.add_argument("--redo", action="store_true", help="run the chosen variants again")
    p.add_argument("--list", action="store_true")
    a = p.parse_args(argv)
    if a.list:
        for n, (what, _) in VARIANTS.items():
            print(f"{n:16s} {what}")
        return 0
    run_dir = Path(a.run_dir)
    for need in ("data/test_queries.jsonl", "data/corpus.jsonl", "mined_r0/train_mined.jsonl",
                 f"ablation/{STUDENT_VARIANT}/eval/rankings.jsonl"):
        if not (run_dir / need).exists():
            print(f"error: {run_dir / need} does not exist (run bench/round1_ablation.py --only {STUDENT_VARIANT} "
                  "after the profile's prepare, zero_shot and mine_r0 steps)")
            return 2
    names = pick(a.only, VARIANTS)
    if names is None:
        return 2
    log = run_dir / "teacher_search" / "results.jsonl"
    done = read_results(log)
    for n in names:
        if n in done and not a.redo:
            continue
        what, spec = VARIANTS[n]
        out = run_dir / "teacher_search" / n
        out.mkdir(parents=True, exist_ok=True)
        print(f"=== {n}: {what}", flush=True)
        with open(out / "run.log", "w") as f:
            rc = 0
            if spec.get("negatives") == "s25" and not s25_file(run_dir).exists():
                rc = subprocess.run(mine_command(run_dir), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
            t0 = time.time()
            cmd = train_command(spec, run_dir, out)
            f.write(" ".join(cmd) + "\n")
            f.flush()
            rc = rc or subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
            seconds = time.time() - t0
            t1 = time.time()
            rc = rc or subprocess.run(rerank_command(run_dir, out), cwd=ROOT, stdout=f,
                                      stderr=subprocess.STDOUT).returncode
        if rc:
            print(f"{n}: failed (exit {rc}), see {out / 'run.log'}")
            return rc
        rep = json.loads((out / "rerank_eval.json").read_text())
        r = {"variant": n, "train_seconds": round(seconds, 1), "rerank_seconds": round(time.time() - t1, 1),
             "n_queries": rep["n_queries"], "student": rep["bi-encoder"]["MAP@25"],
             "reranked": rep["reranked"]["MAP@25"], "diff": rep["reranked - bi-encoder"]["MAP@25"]}
        done[n] = r
        with open(log, "a") as f:
            f.write(json.dumps(r) + "\n")
        print(json.dumps(r), flush=True)
    print(table({n: done[n] for n in VARIANTS if n in done}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
