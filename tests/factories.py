"""Builders of tiny inputs that several test modules share (one definition each); tiny models:
tests/fixtures/models.py."""
import csv
import json
import random
from pathlib import Path

from helpers.train.kd_finetune import KDArgs
from tests.fixtures.models import save_tiny_llama

# ----------------------------------------------------------------------------- Eedi CSV folders
HEADER = ["QuestionId", "ConstructId", "ConstructName", "SubjectId", "SubjectName", "CorrectAnswer",
          "QuestionText", "AnswerAText", "AnswerBText", "AnswerCText", "AnswerDText",
          "MisconceptionAId", "MisconceptionBId", "MisconceptionCId", "MisconceptionDId"]


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def tiny_input(d, n_questions=10, mutate=None):
    """A small valid Eedi-format input folder; ``mutate(rows)`` edits the train rows first."""
    d.mkdir(parents=True, exist_ok=True)
    write_csv(d / "misconception_mapping.csv", ["MisconceptionId", "MisconceptionName"],
              [[i, f"Misconception number {i}"] for i in range(20)])
    rows = []
    for q in range(n_questions):
        rows.append([q, 100 + q % 3, f"Construct {q % 3}", 7 + q % 2, f"Subject {q % 2}", "A",
                     f"  What is \\( {q}+1 \\)?\nThink.  ", str(q + 1), str(q), str(q + 2), "none",
                     "", f"{q % 20}.0", "", f"{(q + 5) % 20}.0"])
    if mutate:
        mutate(rows)
    write_csv(d / "train.csv", HEADER, rows)
    return d


# ----------------------------------------------------------------------------- mining inputs
def write_inputs(d: Path, n_corpus=40, n_queries=6):
    d.mkdir(parents=True, exist_ok=True)
    corpus = [{"id": str(100 + i), "text": f"misconception text {i}"} for i in range(n_corpus)]
    (d / "corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in corpus))
    rows = [{"query_id": f"{i}_A", "query": f"question {i}", "pos": [corpus[i]["text"]],
             "pos_ids": [corpus[i]["id"]], "neg": [], "neg_ids": [], "prompt": "Find it.",
             "question_id": str(i), "subject_id": "s", "construct_id": "c", "extra": i} for i in range(n_queries)]
    (d / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


# ----------------------------------------------------------------------------- kd_finetune inputs
WORDS = "apple river stone cloud maple tiger violet copper lemon harbor pencil falcon garden silver rocket candle".split()


def tiny_kd_folder(root: Path) -> Path:
    """A tiny decoder student and its data: ``model/`` (random 2-layer Llama, SmolLM2's tokenizer),
    ``corpus.jsonl`` (16 texts), mined + scored ``train.jsonl`` (8 rows) and ``test.jsonl`` (4 rows)."""
    save_tiny_llama(root / "model")
    corpus = [{"id": str(i), "text": f"{w} misconception about {WORDS[(i * 7) % 16]}"} for i, w in enumerate(WORDS)]
    (root / "corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in corpus))
    rng = random.Random(0)

    def rows(n, off):
        out = []
        for k in range(n):
            pid = (k + off) % 8                        # positives among ids 0..7
            negs = list(range(8, 14))                  # the same six negatives, shuffled per query
            rng.shuffle(negs)
            out.append({"query_id": f"q{k + off}", "query": f"question {k + off} about {WORDS[pid]}",
                        "pos": [corpus[pid]["text"]], "pos_ids": [str(pid)],
                        "neg": [corpus[i]["text"] for i in negs], "neg_ids": [str(i) for i in negs],
                        "prompt": "Find the misconception.", "question_id": str(k + off),
                        "subject_id": "1", "construct_id": "1", "pos_scores": [5.0],
                        # the teacher prefers lower ids among the negatives: nothing in the labels says so
                        "neg_scores": [float(16 - i) / 2 for i in negs]})
        return out
    for name, rs in (("train.jsonl", rows(8, 0)), ("test.jsonl", rows(4, 100))):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rs))
    return root


def kd_args(tiny, out, **kw) -> KDArgs:
    """KDArgs for a short run on :func:`tiny_kd_folder`; ``kw`` overrides."""
    base = dict(model_name_or_path=str(tiny / "model"), train_data=str(tiny / "train.jsonl"),
                eval_data=str(tiny / "test.jsonl"), corpus_file=str(tiny / "corpus.jsonl"),
                output_dir=str(out), num_train_epochs=2, per_device_train_batch_size=4, train_group_size=4,
                learning_rate=3e-3, lora_rank=8, lora_alpha=16, lora_dropout=0.0, query_max_len=64,
                passage_max_len=32, warmup_ratio=0.0, gradient_checkpointing=False, max_examples=0,
                show_progress=False, save_merged_lora_model=False, devices="cpu", embedder_batch_size=16)
    base.update(kw)
    return KDArgs(**base)
