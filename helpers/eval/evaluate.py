r"""Stage 04: evaluate an embedder on the test queries -> rankings, MAP@25, Recall@1..100, MRR.

    python -m helpers.eval.evaluate --model_name_or_path M --embedder_model_class decoder-only-icl \
        --queries_file D/test_queries.jsonl --corpus_file D/corpus.jsonl \
        [--train_queries_file D/train_queries.jsonl] --output_dir RUN/eval/base

The model is a ``demo:<alias>``, a Hugging Face folder (a merged model), or a LoRA adapter folder
(``adapter_config.json``: loaded on its base and merged, by :mod:`helpers.embed.loading`).
Queries are encoded with their instruction (a row's ``prompt`` wins where ``use_row_prompts``: by
default for decoders, not for encoders), the whole corpus without,
ranked by inner product (:func:`helpers.embed.search.search`; ties: lower corpus position first).

Seen/unseen: a test query is *seen* when every gold id of it is a ``pos_ids`` of the train split,
else *unseen* (the competition's hidden test was mostly unseen).

Writes ``rankings.jsonl``, ``per_query.jsonl`` (per query: gold rank, seen, AP@25, Recall@25,
Recall@100: what paired comparisons need), ``metrics.json`` and ``metrics.csv`` (one row per
subset: all, seen, unseen) under ``output_dir``; each file atomically replaced.

Several models side by side, with intervals and paired differences: :mod:`helpers.eval.compare`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from helpers.common.cli import build_parser
from helpers.common.devices import check_devices
from helpers.common.io_utils import atomic_path, check_writable, load_corpus, read_jsonl, validate_queries, write_json, write_jsonl
from helpers.common.models import resolve_model
from helpers.embed.args import EmbedderArgs
from helpers.eval.metrics import per_query
from helpers.eval.retrieval import metrics_csv, metrics_rows, rank_corpus, score_rankings, seen_ids

log = logging.getLogger(__name__)

PAIRED_KS = (25, 100)      # Recall@k kept per query (where k <= topk) for paired comparisons


@dataclass(kw_only=True)
class EvalArgs(EmbedderArgs):
    queries_file: str = field(metadata={"help": "test queries JSONL (query contract; pos_ids are the gold)"})
    corpus_file: str = field(metadata={"help": "corpus.jsonl ({id, text})"})
    output_dir: str = field(metadata={"help": "rankings.jsonl, metrics.json, metrics.csv go here"})
    train_queries_file: Optional[str] = field(default=None, metadata={
        "help": "train queries JSONL: enables the seen/unseen split"})
    label: Optional[str] = field(default=None, metadata={"help": "name in tables and plots (default: the model folder name)"})
    topk: int = field(default=100, metadata={"help": "Recall@1..topk; rankings saved to depth max(topk, map_k)"})
    map_k: int = field(default=25, metadata={"help": "k of MAP@k"})


def default_label(model_name_or_path: str) -> str:
    s = str(model_name_or_path).rstrip("/")
    return s.split(":", 1)[1] if s.startswith("demo:") else Path(s).name


def run_evaluation(args: EvalArgs, embedder=None) -> dict:
    """Validate inputs, encode, rank, score, write; returns the metrics (with ``label``).

    ``embedder``: an already-loaded :class:`helpers.embed.embedder.Embedder` to use instead of loading
    one from the arguments (its own configuration then decides how texts are encoded).
    """
    args.devices = check_devices(args.devices, stage="evaluate")   # before anything is read or loaded
    t0 = time.time()
    out = Path(args.output_dir)
    label = args.label or default_label(args.model_name_or_path)
    if args.topk < 1 or args.map_k < 1:
        raise ValueError(f"topk ({args.topk}) and map_k ({args.map_k}) must be at least 1")
    if embedder is None:
        resolve_model(args.model_name_or_path)   # a missing model folder fails first, nothing written
    check_writable(out / "metrics.json")
    corpus_ids, corpus_texts = load_corpus(args.corpus_file)
    rows = read_jsonl(args.queries_file)
    validate_queries(rows, args.queries_file, corpus_ids=set(corpus_ids))
    train = None
    if args.train_queries_file:
        train = read_jsonl(args.train_queries_file)
        validate_queries(train, args.train_queries_file, corpus_ids=set(corpus_ids))
    log.info("evaluate %s (%s): %d queries, %d passages, top %d", label, args.model_name_or_path,
             len(rows), len(corpus_ids), args.topk)
    if embedder is None:
        from helpers.embed.embedder import Embedder
        embedder = Embedder(args)
    t1 = time.time()
    q = embedder.encode_queries(rows)
    p = embedder.encode_corpus(corpus_texts)
    t2 = time.time()
    ranked, scores = rank_corpus(q, p, corpus_ids, max(args.topk, args.map_k))
    metrics = score_rankings(ranked, rows, corpus_ids, train, range(1, args.topk + 1), args.map_k)
    pq = per_query(ranked, [r["pos_ids"] for r in rows], ks=[k for k in PAIRED_KS if k <= args.topk],
                   map_k=args.map_k)
    gold_rank = pq["rank"]
    seen = seen_ids(train) if train is not None else None
    metrics = {"label": label, "model_name_or_path": args.model_name_or_path, **metrics,
               "encode_seconds": round(t2 - t1, 2), "n_passages": len(corpus_ids)}
    write_jsonl(out / "rankings.jsonl", [
        {"query_id": r["query_id"], "pos_ids": r["pos_ids"], "rank": int(gr) or None,
         "seen": None if seen is None else all(g in seen for g in r["pos_ids"]),
         "ranked_ids": ids, "scores": [round(float(s), 6) for s in sc]}
        for r, ids, sc, gr in zip(rows, ranked, scores, gold_rank)])
    write_jsonl(out / "per_query.jsonl", per_query_rows(
        rows, pq, [None if seen is None else all(g in seen for g in r["pos_ids"]) for r in rows]))
    with atomic_path(out / "metrics.csv") as tmp:
        tmp.write_text(metrics_csv(metrics_rows(metrics, label)), encoding="utf-8")
    write_json(out / "metrics.json", {**metrics, "args": asdict(args)})
    log.info("%s: MAP@%d %.4f, Recall@%d %.4f, MRR %.4f (encode %.1fs, total %.1fs) -> %s", label, args.map_k,
             metrics[f"MAP@{args.map_k}"], args.topk, metrics[f"Recall@{args.topk}"], metrics["MRR"], t2 - t1,
             time.time() - t0, out)
    return metrics


def per_query_rows(query_rows: Sequence[dict], pq: dict, seen_flags: Sequence[Optional[bool]]) -> list[dict]:
    """Rows of ``per_query.jsonl``: ``{query_id, rank (1-based, None: not ranked), seen,
    "AP@25", "Recall@25", "Recall@100"}`` from :func:`helpers.eval.metrics.per_query` arrays."""
    keys = [k for k in pq if k.startswith(("MAP@", "Recall@"))]
    return [{"query_id": r["query_id"], "rank": int(pq["rank"][i]) or None, "seen": seen_flags[i],
             **{("AP@" + k[4:] if k.startswith("MAP@") else k): float(pq[k][i]) for k in keys}}
            for i, r in enumerate(query_rows)]


# ----------------------------------------------------------------------------- command line
def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    a = build_parser(EvalArgs, __doc__).parse_args(argv)
    m = run_evaluation(EvalArgs(**vars(a)))
    for k in ["n_queries", f"MAP@{a.map_k}", "Recall@1", "Recall@25", "Recall@50", "Recall@75", "Recall@100", "MRR"]:
        if k in m:
            print(f"{k:12s} {m[k]}")
    for sub in ("seen", "unseen"):
        if sub in m:
            print(f"{sub:12s} n={m[sub]['n_queries']} MAP@{a.map_k}={m[sub].get(f'MAP@{a.map_k}')}")


if __name__ == "__main__":
    from helpers.common.cli import run
    run(main)
