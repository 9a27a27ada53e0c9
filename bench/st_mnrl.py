"""sentence-transformers' MultipleNegativesRankingLoss on our mined file: the baseline a user compares with.

    python bench/st_mnrl.py --train_data RUN/mined_r0/train_mined.jsonl --output_dir RUN/st_mnrl_hn \
        [--hard_negatives 1] [--model demo:all-minilm-l6-v2] [--batch_size 32] [--learning_rate 2e-5]

What a sentence-transformers user writes for this task: full fine-tuning, ``SentenceTransformerTrainer``,
MNRL (scale 20 = temperature 0.05), batch 32, lr 2e-5, warmup 10%, one epoch, columns (anchor,
positive[, negative]) where the negative is the first mined negative of the row (our mining output,
shuffled ranks 2-100), texts exactly as our student sees them (encoder: the query text as is).
The model is saved as a sentence-transformers folder that ``04_eval`` loads like any other encoder.

sentence-transformers (and ``datasets``) are bench dependencies (``requirements-test.txt``), never
runtime ones: without them this prints one "skipped" line and exits 0, so a profile step that calls
it is skipped, and ``04_eval`` skips a model folder marked ``optional`` that does not exist.
A finished folder is reused when its ``st_run.json`` records the same inputs (file sizes and times,
settings); a changed input trains again.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

STARTED = time.time()        # the process's wall time (imports, load, train, save): what a user waits
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train_data", required=True, help="mined train queries (query, pos, neg)")
    p.add_argument("--output_dir", required=True, help="the trained sentence-transformers model goes here")
    p.add_argument("--model", default="demo:all-minilm-l6-v2", help="base model (a folder or demo:NAME)")
    p.add_argument("--hard_negatives", type=int, default=1, choices=(0, 1),
                   help="1: (anchor, positive, negative) with the row's first mined negative; 0: in-batch only")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--learning_rate", type=float, default=2e-5)
    p.add_argument("--scale", type=float, default=20.0, help="MNRL scale (1 / temperature)")
    p.add_argument("--warmup_ratio", type=float, default=0.1)
    p.add_argument("--epochs", type=float, default=1)
    p.add_argument("--max_seq_length", type=int, default=256)
    p.add_argument("--batch_sampler", default="batch_sampler", choices=("batch_sampler", "no_duplicates"),
                   help="no_duplicates: no text twice in a batch (sentence-transformers' false-negative guard)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return p


def inputs_key(a) -> dict:
    """What the trained folder was made from: a changed file or setting means train again."""
    from helpers.common.models import resolve_model
    st = os.stat(a.train_data)
    model = Path(resolve_model(a.model))
    files = sorted((f.name, f.stat().st_size) for f in model.iterdir() if f.is_file())
    settings = {k: v for k, v in vars(a).items() if k not in ("output_dir", "threads")}
    return {"train_data": [str(a.train_data), st.st_size, int(st.st_mtime)], "model_files": files, **settings}


def columns(rows: list[dict], hard_negatives: bool) -> dict:
    cols = {"anchor": [r["query"] for r in rows], "positive": [r["pos"][0] for r in rows]}
    if hard_negatives:
        missing = [r["__line__"] for r in rows if not r.get("neg")]
        if missing:
            raise ValueError(f"{len(missing)} rows have no mined negative (first at line {missing[0]})")
        cols["negative"] = [r["neg"][0] for r in rows]
    return cols


def train(a) -> dict:
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, \
        SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from helpers.common.io_utils import read_jsonl, save_dir_atomic, validate_queries, write_json
    from helpers.common.models import resolve_model
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = read_jsonl(a.train_data)
    validate_queries(rows, a.train_data, need_neg=bool(a.hard_negatives))
    cols = columns(rows, bool(a.hard_negatives))
    model = SentenceTransformer(resolve_model(a.model), device="cpu" if not torch.cuda.is_available() else None)
    model.max_seq_length = a.max_seq_length
    out = Path(a.output_dir)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out.parent / (out.name + ".trainer")), per_device_train_batch_size=a.batch_size,
        num_train_epochs=a.epochs, learning_rate=a.learning_rate, warmup_ratio=a.warmup_ratio,
        batch_sampler=a.batch_sampler, logging_steps=20, save_strategy="no", report_to="none", seed=a.seed,
        data_seed=a.seed, dataloader_drop_last=True, use_cpu=not torch.cuda.is_available())
    loss = MultipleNegativesRankingLoss(model, scale=a.scale)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_dict(cols), loss=loss)
    t0 = time.time()
    trainer.train()
    seconds = time.time() - t0
    save_dir_atomic(out, lambda tmp: model.save(str(tmp)))
    info = {"inputs": inputs_key(a), "train_seconds": round(seconds, 1),
            "process_seconds": round(time.time() - STARTED, 1), "queries": len(rows),
            "steps": trainer.state.global_step, "sentence_transformers": __import__("sentence_transformers").__version__}
    write_json(out / "st_run.json", info)
    return info


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    try:
        import datasets  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError as e:
        print(f"skipped: sentence-transformers side by side needs the bench extras of requirements-test.txt ({e})")
        return 0
    done = Path(a.output_dir) / "st_run.json"
    if done.exists() and json.loads(done.read_text()).get("inputs") == json.loads(json.dumps(inputs_key(a))):
        print(f"{a.output_dir}: already trained from the same inputs, reused")
        return 0
    info = train(a)
    print(json.dumps({k: v for k, v in info.items() if k != "inputs"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
