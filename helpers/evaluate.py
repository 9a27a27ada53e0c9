r"""Stage 04: evaluate an embedder on the test queries -> rankings, MAP@25, Recall@1..100, MRR.

    python -m helpers.evaluate --model_name_or_path M --embedder_model_class decoder-only-icl \
        --queries_file D/test_queries.jsonl --corpus_file D/corpus.jsonl \
        [--train_queries_file D/train_queries.jsonl] --output_dir RUN/eval/base

The model is a ``demo:<alias>``, a Hugging Face folder (a merged model), or a LoRA adapter folder
(``adapter_config.json``: loaded on its base and merged, by :mod:`helpers.embedder`).
Queries are encoded with their instruction (a row's ``prompt`` wins), the whole corpus without,
ranked by inner product (:func:`helpers.search.search`; ties: lower corpus position first).

Seen/unseen: a test query is *seen* when every gold id of it is a ``pos_ids`` of the train split,
else *unseen* (the competition's hidden test was mostly unseen).

Writes ``rankings.jsonl``, ``metrics.json`` and ``metrics.csv`` (one row per subset: all, seen,
unseen) under ``output_dir``; each file atomically replaced.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from .cli import dataclass_parser
from .io_utils import atomic_path, check_writable, load_corpus, read_jsonl, validate_queries, write_json, write_jsonl
from .metrics import ids_from_indices, per_query
from .models import resolve_model
from .search import search

log = logging.getLogger(__name__)

DEFAULT_KS = tuple(range(1, 101))
TABLE_KS = (25, 50, 75, 100)
SUBSETS = ("all", "seen", "unseen")
_METRIC = re.compile(r"^(MAP@\d+|Recall@\d+|MRR)$")


# ----------------------------------------------------------------------------- ranking and scoring
def rank_corpus(q_emb, p_emb, corpus_ids: Sequence[str], topk: int = 100):
    """-> (ranked ids [Q][k], scores [Q, k]); best first, ties by lower corpus position."""
    p = np.asarray(p_emb)
    if p.shape[0] != len(corpus_ids):
        raise ValueError(f"rank_corpus: {p.shape[0]} passage embeddings for {len(corpus_ids)} corpus ids")
    scores, idx = search(q_emb, p, topk)
    return ids_from_indices(idx, list(corpus_ids)), scores


def seen_ids(train_rows: Iterable[dict]) -> set:
    return {pid for r in train_rows for pid in r.get("pos_ids", [])}


def _summary(pq: dict, mask: np.ndarray, map_key: str) -> dict:
    out = {"n_queries": int(mask.sum())}
    if not mask.any():
        return out
    out[map_key] = float(pq[map_key][mask].mean())
    out.update({k: float(v[mask].mean()) for k, v in pq.items() if k.startswith("Recall@")})
    out["MRR"] = float(pq["RR"][mask].mean())
    return out


def score_rankings(ranked_ids: Sequence[Sequence[str]], query_rows: Sequence[dict],
                   corpus_ids: Optional[Iterable[str]] = None, train_rows: Optional[Sequence[dict]] = None,
                   ks: Iterable[int] = DEFAULT_KS, map_k: int = 25) -> dict:
    """Metrics of rankings against the rows' ``pos_ids``.

    Returns ``{"n_queries", "MAP@25", "Recall@k"..., "MRR"}`` and, with ``train_rows``, the
    same under ``"seen"`` and ``"unseen"`` (a subset with no query has only ``n_queries``).
    A ranked id that is not in ``corpus_ids`` is an error.
    """
    if len(ranked_ids) != len(query_rows):
        raise ValueError(f"score_rankings: {len(ranked_ids)} rankings for {len(query_rows)} queries")
    if corpus_ids is not None:
        cset = set(corpus_ids)
        for r, ranked in zip(query_rows, ranked_ids):
            for pid in ranked:
                if pid not in cset:
                    raise ValueError(f"ranking of query {r.get('query_id')!r}: id {pid!r} is not in the corpus")
    gold = [r["pos_ids"] for r in query_rows]
    pq = per_query(ranked_ids, gold, ks=ks, map_k=map_k)
    map_key = f"MAP@{map_k}"
    everything = np.ones(len(gold), dtype=bool)
    out = _summary(pq, everything, map_key)
    if train_rows is not None:
        seen = seen_ids(train_rows)
        is_seen = np.array([all(g in seen for g in gs) for gs in gold], dtype=bool)
        out["seen"] = _summary(pq, is_seen, map_key)
        out["unseen"] = _summary(pq, ~is_seen, map_key)
    return out


def evaluate_embeddings(q_emb, p_emb, query_rows: Sequence[dict], corpus_ids: Sequence[str],
                        train_rows: Optional[Sequence[dict]] = None, ks: Iterable[int] = DEFAULT_KS,
                        map_k: int = 25) -> dict:
    """Rank the corpus for already-computed embeddings and score it (see :func:`score_rankings`)."""
    ks = list(ks)
    if len(query_rows) != np.asarray(q_emb).shape[0]:
        raise ValueError(f"evaluate_embeddings: {np.asarray(q_emb).shape[0]} query embeddings for "
                         f"{len(query_rows)} query rows")
    ranked, _ = rank_corpus(q_emb, p_emb, corpus_ids, max(ks + [map_k]))
    return score_rankings(ranked, query_rows, None, train_rows, ks, map_k)


def evaluate_embedder(embedder, query_rows: Sequence[dict], corpus_ids: Sequence[str],
                      corpus_texts: Sequence[str], train_rows: Optional[Sequence[dict]] = None,
                      ks: Iterable[int] = DEFAULT_KS, map_k: int = 25) -> dict:
    """Encode queries and corpus with an :class:`helpers.embedder.Embedder` and score (the
    trainer calls this after every epoch with an Embedder wrapping its model)."""
    if len(corpus_ids) != len(corpus_texts):
        raise ValueError(f"evaluate_embedder: {len(corpus_ids)} corpus ids for {len(corpus_texts)} texts")
    q = embedder.encode_queries(list(query_rows))
    p = embedder.encode_corpus(list(corpus_texts))
    return evaluate_embeddings(q, p, query_rows, corpus_ids, train_rows, ks, map_k)


# ----------------------------------------------------------------------------- tables
def metrics_rows(metrics: dict, label: str = "") -> list[dict]:
    """Flat rows (label, subset, n_queries, MAP@25, MRR, Recall@k...) for CSV / DataFrames."""
    rows = []
    for sub in SUBSETS:
        m = metrics if sub == "all" else metrics.get(sub)
        if m is None:
            continue
        vals = {k: v for k, v in m.items() if k == "n_queries" or _METRIC.match(k)}
        rows.append({"label": label, "subset": sub, **vals})
    return rows


def metrics_csv(rows: Sequence[dict]) -> str:
    cols = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def comparison_table(results: dict, ks: Sequence[int] = TABLE_KS, map_k: int = 25, digits: int = 4) -> list[dict]:
    """The seed's table: one row per model/epoch: ``Model/Epoch | MAP@25 | Recall@25 | ...``."""
    out = []
    for label, m in results.items():
        row = {"Model/Epoch": label, f"MAP@{map_k}": m.get(f"MAP@{map_k}")}
        row.update({f"Recall@{k}": m.get(f"Recall@{k}") for k in ks})
        out.append({k: (round(v, digits) if isinstance(v, float) else v) for k, v in row.items()})
    return out


# ----------------------------------------------------------------------------- the stage
@dataclass(kw_only=True)
class EmbedderArgs:
    """Embedder flags shared by the evaluation and submission stages (FlagEmbedding's names)."""
    model_name_or_path: str = field(metadata={"help": "demo:<alias>, a HF folder, a merged model or a LoRA adapter folder"})
    embedder_model_class: str = field(default="decoder-only-icl", metadata={
        "help": "decoder-only-icl | decoder-only-base | encoder-only-base"})
    pooling_method: Optional[str] = field(default=None, metadata={"help": "last_token | mean | cls (default: by class)"})
    normalize_embeddings: bool = field(default=True, metadata={"help": "L2-normalise embeddings"})
    query_instruction_for_retrieval: Optional[str] = field(default=None, metadata={
        "help": "global instruction (a row's prompt overrides it)"})
    query_instruction_format_for_retrieval: Optional[str] = field(default=None, metadata={
        "help": "format of instruction + query (default by class, e.g. <instruct>{}\\n<query>{})"})
    examples_for_task: Optional[str] = field(default=None, metadata={
        "help": "examples.json of the data stage: in-context examples (decoder-only-icl)"})
    examples_number: int = field(default=1, metadata={"help": "in-context examples per query"})
    embedder_query_max_length: int = field(default=512, metadata={"help": "query tokens"})
    embedder_passage_max_length: int = field(default=512, metadata={"help": "passage tokens"})
    embedder_batch_size: int = field(default=64, metadata={"help": "texts per forward pass"})
    devices: Optional[str] = field(default=None, metadata={"help": "cpu, cuda:0, '0,1' (default: cuda:0 if any)"})
    use_fp16: bool = field(default=True, metadata={"help": "half precision on CUDA (bf16 from compute capability 8)"})
    trust_remote_code: bool = field(default=False, metadata={"help": "allow model code from the folder"})


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


def embedder_config(a: EmbedderArgs):
    """:class:`helpers.embedder.EmbedderConfig` from stage arguments (any :class:`EmbedderArgs`)."""
    from .embedder import EmbedderConfig
    return EmbedderConfig(
        model_name_or_path=a.model_name_or_path, model_class=a.embedder_model_class,
        pooling_method=a.pooling_method, normalize=a.normalize_embeddings,
        query_instruction_for_retrieval=a.query_instruction_for_retrieval,
        query_instruction_format=a.query_instruction_format_for_retrieval,
        add_examples_for_task=bool(a.examples_for_task), examples_file=a.examples_for_task,
        examples_number=a.examples_number, query_max_length=a.embedder_query_max_length,
        passage_max_length=a.embedder_passage_max_length, batch_size=a.embedder_batch_size,
        devices=a.devices, use_fp16=a.use_fp16, trust_remote_code=a.trust_remote_code)


def default_label(model_name_or_path: str) -> str:
    s = str(model_name_or_path).rstrip("/")
    return s.split(":", 1)[1] if s.startswith("demo:") else Path(s).name


def run_evaluation(args: EvalArgs, embedder=None) -> dict:
    """Validate inputs, encode, rank, score, write; returns the metrics (with ``label``).

    ``embedder``: an already-loaded :class:`helpers.embedder.Embedder` to use instead of loading
    one from the arguments (its own configuration then decides how texts are encoded).
    """
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
        from .embedder import Embedder
        embedder = Embedder(embedder_config(args))
    t1 = time.time()
    q = embedder.encode_queries(rows)
    p = embedder.encode_corpus(corpus_texts)
    t2 = time.time()
    ranked, scores = rank_corpus(q, p, corpus_ids, max(args.topk, args.map_k))
    metrics = score_rankings(ranked, rows, corpus_ids, train, range(1, args.topk + 1), args.map_k)
    gold_rank = per_query(ranked, [r["pos_ids"] for r in rows], ks=(1,), map_k=args.map_k)["rank"]
    seen = seen_ids(train) if train is not None else None
    metrics = {"label": label, "model_name_or_path": args.model_name_or_path, **metrics,
               "encode_seconds": round(t2 - t1, 2), "n_passages": len(corpus_ids)}
    write_jsonl(out / "rankings.jsonl", [
        {"query_id": r["query_id"], "pos_ids": r["pos_ids"], "rank": int(gr) or None,
         "seen": None if seen is None else all(g in seen for g in r["pos_ids"]),
         "ranked_ids": ids, "scores": [round(float(s), 6) for s in sc]}
        for r, ids, sc, gr in zip(rows, ranked, scores, gold_rank)])
    with atomic_path(out / "metrics.csv") as tmp:
        tmp.write_text(metrics_csv(metrics_rows(metrics, label)), encoding="utf-8")
    write_json(out / "metrics.json", {**metrics, "args": asdict(args)})
    log.info("%s: MAP@%d %.4f, Recall@%d %.4f, MRR %.4f (encode %.1fs, total %.1fs) -> %s", label, args.map_k,
             metrics[f"MAP@{args.map_k}"], args.topk, metrics[f"Recall@{args.topk}"], metrics["MRR"], t2 - t1,
             time.time() - t0, out)
    return metrics


# ----------------------------------------------------------------------------- several models
_EPOCH = re.compile(r"epoch_(\d+)$")


def model_specs(models: Sequence, epoch_glob: Optional[str] = None,
                default_class: str = "decoder-only-icl") -> list[dict]:
    """Normalise the models to compare: ``{"label", "path", "class", "epoch"}`` dicts.

    ``models``: dicts (``path`` required; ``label``, ``class``, ``epoch`` and any
    :class:`EvalArgs` field optional) or plain paths. ``epoch_glob`` (e.g.
    ``model_output/demo/kd/merged_model_lora_epoch_*``) adds every folder it matches, in epoch
    order, labelled ``epoch {n}``. Labels must be unique.
    """
    import glob
    out = []
    for m in models or []:
        m = {"path": m} if isinstance(m, str) else dict(m)
        if not m.get("path"):
            raise ValueError(f"model spec {m!r}: 'path' is required")
        m.setdefault("class", default_class)
        m.setdefault("label", default_label(m["path"]))
        if m.get("epoch") is None:
            hit = _EPOCH.search(str(m["path"]).rstrip("/"))
            m["epoch"] = int(hit.group(1)) if hit else None
        out.append(m)
    if epoch_glob:
        found = [p for p in glob.glob(epoch_glob) if Path(p).is_dir() and _EPOCH.search(p.rstrip("/"))]
        for p in sorted(found, key=lambda p: int(_EPOCH.search(p.rstrip("/")).group(1))):
            if any(Path(p).resolve() == Path(m["path"]).resolve() for m in out if not m["path"].startswith("demo:")):
                continue
            n = int(_EPOCH.search(p.rstrip("/")).group(1))
            out.append({"path": p, "class": default_class, "label": f"epoch {n}", "epoch": n})
    labels = [m["label"] for m in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ValueError(f"model labels must be unique, repeated: {', '.join(dup)}")
    if not out:
        raise ValueError("no model to evaluate (empty list and no epoch folder found)")
    return out


def _free_memory():
    import gc
    gc.collect()
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(label)).strip("_") or "model"


def reuse_key(args: EvalArgs) -> dict:
    """What must not change for a model's saved metrics to stand: the settings, the model's files
    (name, size, mtime) and the content of the data files."""
    import hashlib
    model = Path(resolve_model(args.model_name_or_path))
    files = sorted((str(f.relative_to(model)), f.stat().st_size, f.stat().st_mtime_ns)
                   for f in model.rglob("*") if f.is_file()) if model.is_dir() else []
    data = {k: hashlib.sha256(Path(v).read_bytes()).hexdigest() for k, v in
            (("queries", args.queries_file), ("corpus", args.corpus_file), ("train", args.train_queries_file)) if v}
    return json.loads(json.dumps({"args": asdict(args), "model_files": files, "data": data}))


def evaluate_models(specs: Sequence[dict], queries_file: str, corpus_file: str, output_dir: str,
                    train_queries_file: Optional[str] = None, reuse_existing: bool = False, **common) -> dict:
    """Run :func:`run_evaluation` for each spec (its own folder ``output_dir/<label>``); write
    ``comparison.csv`` and ``comparison.json``; returns ``{label: metrics}`` (with ``epoch``).

    ``common``: :class:`EvalArgs` fields for every model; a spec's own keys win.
    ``reuse_existing``: a model whose folder already holds metrics for the same settings, model
    files and data (``reuse_key.json``, see :func:`reuse_key`) is not evaluated again.
    """
    names = {f.name for f in fields(EvalArgs)}
    for s in specs:      # check every spec before the first (slow) model runs
        unknown = set(s) - names - {"path", "class", "label", "epoch"}
        if unknown:
            raise ValueError(f"model spec {s.get('label')!r}: unknown keys {sorted(unknown)}")
    results = {}
    for s in specs:
        kw = {**common, **{k: v for k, v in s.items() if k in names}}
        args = EvalArgs(**{**kw, "model_name_or_path": s["path"], "embedder_model_class": s["class"],
                           "label": s["label"], "queries_file": queries_file, "corpus_file": corpus_file,
                           "train_queries_file": train_queries_file,
                           "output_dir": str(Path(output_dir) / slug(s["label"]))})
        key_path = Path(args.output_dir) / "reuse_key.json"
        key = reuse_key(args) if reuse_existing else None
        if key is not None and key_path.exists() and (Path(args.output_dir) / "metrics.json").exists() \
                and json.loads(key_path.read_text(encoding="utf-8")) == key:
            m = json.loads((Path(args.output_dir) / "metrics.json").read_text(encoding="utf-8"))
            m.pop("args", None)
            log.info("%s: reusing the metrics in %s (same settings, model files and data)", s["label"], args.output_dir)
            results[s["label"]] = {**m, "epoch": s.get("epoch")}
            continue
        results[s["label"]] = {**run_evaluation(args), "epoch": s.get("epoch")}
        if key is not None:
            write_json(key_path, key)
        _free_memory()      # one model at a time: release the last one before loading the next
    rows = [{"epoch": m["epoch"], **r} for label, m in results.items() for r in metrics_rows(m, label)]
    with atomic_path(Path(output_dir) / "comparison.csv") as tmp:
        tmp.write_text(metrics_csv(rows), encoding="utf-8")
    write_json(Path(output_dir) / "comparison.json", results)
    return results


# ----------------------------------------------------------------------------- command line
def build_parser(cls, description: str):
    return dataclass_parser(cls, description)


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
    from helpers.cli import run
    run(main)
