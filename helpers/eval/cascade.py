r"""Retrieve, then rerank: the embedder's top k re-ordered by a reranker (the teacher).

    python -m helpers.eval.cascade --embedder_dir RUN/eval/<model> --queries_file D/test_queries.jsonl \
        --corpus_file D/corpus.jsonl --output_dir RUN/eval/<model>_reranked \
        --reranker '{"reranker_name_or_path": "RUN/teacher", "reranker_model_class": "encoder-only-base", "top_k": 25}'

The rule (the same here, in stage 04 and in the submission): the first ``top_k`` ids of the
embedder's ranking are scored by the reranker and sorted by that score, best first (ties keep the
embedder's order); the rest of the embedder's ranking follows unchanged. So the written top 25 is
the re-ordered top k followed by the embedder's ranks k+1..25 when k < 25, and the first 25 of the
re-ordered top k when k >= 25. With ``alpha`` the sort key is the fusion
``alpha * z(reranker) + (1 - alpha) * z(embedder)``, each score z-normalised over the query's k
candidates (mean 0, standard deviation 1; a constant list is all 0).

Scores come from :func:`helpers.rerank.args.build_reranker`, the loader of stage 02 (token layout,
length sorting, shared query prefix, "Yes" row only): one implementation.

:func:`run_cascade` reads the embedder's evaluation folder (``rankings.jsonl`` of
:mod:`helpers.eval.evaluate`), scores the first ``max(sweep_top_k)`` candidates once, in bands
(ranks 1-10, 11-25, ...: the time of every k is measured, not estimated), and writes, beside the
evaluation's own files (``rankings.jsonl``, ``per_query.jsonl``, ``metrics.json``/``.csv`` of the
chosen ``top_k``/``alpha``, so a comparison reads it as one more model), ``sweep.csv``/``sweep.json``
(MAP@25, its paired difference to the embedder alone with a bootstrap interval, the embedder's
Recall@k: the ceiling the reranker works under, and seconds, per k and alpha) and ``sweep.png``.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from helpers.common.io_utils import InputError, atomic_path, load_corpus, read_jsonl, validate_queries, write_json, write_jsonl
from helpers.eval.metrics import per_query
from helpers.eval.paired import paired_bootstrap
from helpers.rerank.fusion import check_alpha, fuse
from helpers.eval.retrieval import metrics_csv, metrics_rows, score_rankings, seen_ids
from helpers.rerank.args import RerankerArgs, reranker_spellings

log = logging.getLogger(__name__)

SWEEP_TOP_K = (10, 25, 50, 100)


@dataclass
class RerankStage(RerankerArgs):
    """The second stage: the reranker (:class:`~helpers.rerank.args.RerankerArgs`), how many of the
    embedder's candidates it re-orders, and the optional score fusion."""
    top_k: int = field(default=25, metadata={"help": "re-order the embedder's first top_k ids (the rest keep its order)"})
    alpha: Optional[float] = field(default=None, metadata={
        "help": "None: sort by the reranker's score; a weight in [0, 1]: alpha * z(reranker) + (1 - alpha) * z(embedder)"})

    def __post_init__(self):
        super().__post_init__()
        if int(self.top_k) < 1:
            raise ValueError(f"reranker top_k must be at least 1, got {self.top_k}")
        check_alpha(self.alpha, "reranker alpha")


def stage_from(block: Optional[dict], **defaults) -> Optional[RerankStage]:
    """The ``reranker`` block of a notebook or profile (a dict of :class:`RerankStage` fields) ->
    the stage, or None when there is no block or it names no model (``reranker_name_or_path``
    empty: a profile var left blank). ``defaults`` (e.g. the embedder's ``devices``) fill fields
    the block does not give. Unknown keys are one error listing the known ones."""
    if not block:
        return None
    if isinstance(block, RerankStage):
        return block
    if not isinstance(block, dict):
        raise ValueError(f"reranker: expected a dict of settings (reranker_name_or_path, top_k, ...), got {block!r}")
    block = reranker_spellings(block)
    names = {f.name for f in fields(RerankStage)}
    unknown = sorted(set(block) - names)
    if unknown:
        raise ValueError(f"reranker: unknown setting(s) {unknown}; known: {', '.join(sorted(names))}")
    if not block.get("reranker_name_or_path"):
        return None
    return RerankStage(**{**{k: v for k, v in defaults.items() if k in names and v is not None}, **block})


def cascade_label(embedder_label: str, stage: RerankStage) -> str:
    return f"{embedder_label} + reranker top {stage.top_k}" + ("" if stage.alpha is None else f" a{stage.alpha:g}")


# ----------------------------------------------------------------------------- the rule
def rerank_order(ranked_ids: Sequence[str], reranker_scores: Sequence[float], top_k: int,
                 embedder_scores: Optional[Sequence[float]] = None, alpha: Optional[float] = None) -> list[str]:
    """One query's cascade ranking: the first ``top_k`` of ``ranked_ids`` sorted by the reranker's
    score (or the fusion with ``alpha``), best first, ties in the embedder's order; then the rest of
    ``ranked_ids`` unchanged. ``reranker_scores[j]`` is the score of ``ranked_ids[j]`` (at least
    ``min(top_k, len(ranked_ids))`` of them)."""
    k = min(int(top_k), len(ranked_ids))
    if len(reranker_scores) < k:
        raise ValueError(f"rerank_order: {len(reranker_scores)} reranker scores for the top {k}")
    key = np.asarray(reranker_scores[:k], dtype=np.float64)
    if alpha is not None:
        if embedder_scores is None or len(embedder_scores) < k:
            raise ValueError("rerank_order: fusion (alpha) needs the embedder's scores of the top k")
        key = fuse(key, embedder_scores[:k], alpha)
    order = sorted(range(k), key=lambda j: -key[j])           # stable: ties keep the embedder's order
    return [ranked_ids[j] for j in order] + list(ranked_ids[k:])


def score_in_bands(reranker, queries: Sequence[str], ranked_ids: Sequence[Sequence[str]], texts: dict,
                   ks: Sequence[int]) -> tuple[list[list[float]], dict]:
    """Reranker scores of each query's first ``max(ks)`` candidates, scored band by band (ranks
    1..ks[0], ks[0]+1..ks[1], ...) -> (scores per query, ``{k: seconds to score the first k}``,
    measured). A decoder with a shared query prefix runs the prefix once per band."""
    ks = sorted(set(int(k) for k in ks))
    scores: list[list[float]] = [[] for _ in queries]
    seconds, total, prev = {}, 0.0, 0
    for k in tqdm(ks, desc="rerank bands", disable=len(ks) < 2):
        todo = [i for i, ids in enumerate(ranked_ids) if len(ids) > prev]
        t = time.time()
        if todo:
            got = reranker.score_groups([queries[i] for i in todo], [[texts[x] for x in ranked_ids[i][prev:k]] for i in todo])
            for i, g in zip(todo, got):
                scores[i].extend(float(s) for s in g)
        total += time.time() - t
        seconds[k], prev = round(total, 2), k
    bad = [(i, s) for i, g in enumerate(scores) for s in g if not np.isfinite(s)]
    if bad:
        raise FloatingPointError(f"the reranker gave a non-finite score ({bad[0][1]}) for query {bad[0][0]}; "
                                 "try use_fp16 False (fp16 overflow)")
    return scores, seconds


# ----------------------------------------------------------------------------- evaluation
def reuse_key(stage: RerankStage, embedder_dir, files: Sequence, sweep: dict) -> dict:
    """What must not change for a cascade folder's results to stand: the stage, the sweep, the
    reranker's files (name, size, mtime) and the content of the embedder's rankings and data."""
    import hashlib
    from helpers.common.models import files_fingerprint, resolve_model
    data = {str(Path(f).name): hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files if f}
    data["rankings"] = hashlib.sha256((Path(embedder_dir) / "rankings.jsonl").read_bytes()).hexdigest()
    model = files_fingerprint([resolve_model(stage.reranker_name_or_path), stage.peft_adapter])
    return json.loads(json.dumps({"stage": {k: v for k, v in asdict(stage).items() if k != "devices"},
                                  "sweep": sweep, "data": data, "model_files": model}))


def run_cascade(stage: RerankStage, embedder_dir, queries_file: str, corpus_file: str, output_dir,
                train_queries_file: Optional[str] = None, sweep_top_k: Sequence[int] = SWEEP_TOP_K,
                sweep_alpha: Sequence[float] = (), label: Optional[str] = None, reranker=None,
                reuse_existing: bool = False, n_resamples: int = 1000, bootstrap_seed: int = 0) -> dict:
    """Re-order the rankings of ``embedder_dir`` with the stage's reranker, sweep k (and alpha),
    write the chosen cascade as an evaluation folder in ``output_dir``; returns its metrics with a
    ``"cascade"`` entry (embedder, k, alpha, the embedder's MAP@25 and Recall@k, seconds, pairs, the
    paired difference to the embedder). ``reranker``: a loaded one (else :func:`build_reranker`,
    only when something is to be scored); ``reuse_existing``: a folder with the same
    :func:`reuse_key` is read back, not computed again."""
    from helpers.rerank.args import build_reranker, check_model_args, check_not_trained_on
    emb_dir, out = Path(embedder_dir), Path(output_dir)
    if not (emb_dir / "rankings.jsonl").is_file():
        raise FileNotFoundError(f"{emb_dir}: no rankings.jsonl (evaluate the embedder first: helpers.eval.evaluate)")
    emb_metrics = json.loads((emb_dir / "metrics.json").read_text(encoding="utf-8"))
    ev_args = emb_metrics.get("args", {})
    map_k, topk = int(ev_args.get("map_k", 25)), int(ev_args.get("topk", 100))
    ranks = read_jsonl(emb_dir / "rankings.jsonl")
    depth = min(len(r["ranked_ids"]) for r in ranks)
    ks = sorted({int(k) for k in sweep_top_k} | {int(stage.top_k)})
    if any(k > depth for k in ks):
        log.warning("rankings of %s hold %d ids per query: sweep k above that (%s) left out", emb_dir, depth,
                    [k for k in ks if k > depth])
        ks = [k for k in ks if k <= depth] or [depth]
    if stage.top_k > depth:
        raise ValueError(f"reranker top_k {stage.top_k} is more than the {depth} ids per query in {emb_dir}/rankings.jsonl "
                         f"(evaluate with a larger topk)")
    alphas = [None] + sorted({float(a) for a in sweep_alpha} | ({float(stage.alpha)} if stage.alpha is not None else set()))
    sweep_settings = {"top_k": ks, "alpha": alphas[1:], "n_resamples": n_resamples, "seed": bootstrap_seed}
    key_path = out / "reuse_key.json"
    if reranker is None:
        check_model_args(stage)
    key = reuse_key(stage, emb_dir, [queries_file, corpus_file, train_queries_file], sweep_settings) if reuse_existing else None
    if key is not None and key_path.exists() and (out / "metrics.json").exists() \
            and json.loads(key_path.read_text(encoding="utf-8")) == key:
        log.info("%s: reusing the cascade in %s (same reranker, rankings, data and sweep)", label, out)
        m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        m.pop("args", None)
        return m

    ids, texts = load_corpus(corpus_file)
    by_id = dict(zip(ids, texts))
    rows = {r["query_id"]: r for r in read_jsonl(queries_file)}
    validate_queries(list(rows.values()), queries_file, corpus_ids=set(ids))
    for r in ranks:
        if r.get("query_id") not in rows:
            raise InputError(emb_dir / "rankings.jsonl", r.get("__line__"), "query_id",
                             f"{r.get('query_id')!r} is not a query of {queries_file}")
        bad = [i for i in r["ranked_ids"][:ks[-1]] if i not in by_id]
        if bad:
            raise InputError(emb_dir / "rankings.jsonl", r["__line__"], "ranked_ids", f"ids not in the corpus: {bad[:3]}")
    qrows = [rows[r["query_id"]] for r in ranks]
    ranked = [r["ranked_ids"] for r in ranks]
    emb_scores = [r.get("scores") for r in ranks]
    if len(alphas) > 1 and any(s is None for s in emb_scores):
        raise InputError(emb_dir / "rankings.jsonl", None, "scores", "fusion (alpha) needs the embedder's scores")
    n_pairs = sum(min(len(x), ks[-1]) for x in ranked)
    log.info("rerank %s: %d queries, top %s (%d pairs at k=%d) with %s", label or emb_dir, len(ranked), ks, n_pairs,
             ks[-1], stage.reranker_name_or_path)
    check_not_trained_on(stage.reranker_name_or_path, [r["query_id"] for r in qrows], queries_file)
    reranker = reranker or build_reranker(stage)
    scores, seconds = score_in_bands(reranker, [r["query"] for r in qrows], ranked, by_id, ks)

    gold = [r["pos_ids"] for r in qrows]
    qids = [r["query_id"] for r in qrows]
    base = per_query(ranked, gold, ks=ks, map_k=map_k)
    key_map = f"MAP@{map_k}"
    sweep, chosen = [], None
    for k in ks:
        for a in alphas:
            lists = [rerank_order(x, s, k, e, a) for x, s, e in zip(ranked, scores, emb_scores)]
            pq = per_query(lists, gold, ks=[k], map_k=map_k)
            d = paired_bootstrap(base[key_map], pq[key_map], n_resamples, bootstrap_seed,
                                 label_a="embedder", label_b=f"reranked top {k}")
            sweep.append({"top_k": k, "alpha": a, key_map: float(pq[key_map].mean()),
                          f"embedder {key_map}": float(base[key_map].mean()), "diff": d["mean_diff"], "lo": d["lo"],
                          "hi": d["hi"], "verdict": d["verdict"], "embedder Recall@k": float(base[f"Recall@{k}"].mean()),
                          "pairs": sum(min(len(x), k) for x in ranked), "seconds": seconds[k]})
            if k == stage.top_k and a == (None if stage.alpha is None else float(stage.alpha)):
                chosen = (lists, d, sweep[-1])
    lists, d, row = chosen
    train = read_jsonl(train_queries_file) if train_queries_file else None
    metrics = score_rankings(lists, qrows, ids, train, range(1, min(topk, depth) + 1), map_k)
    metrics = {"label": label, "model_name_or_path": f"{emb_metrics.get('model_name_or_path')} -> {stage.reranker_name_or_path}",
               **metrics, "cascade": {"embedder": emb_metrics.get("label"), "embedder_dir": str(emb_dir),
                                      "reranker": stage.reranker_name_or_path, "top_k": stage.top_k,
                                      "alpha": stage.alpha, f"embedder {key_map}": row[f"embedder {key_map}"],
                                      f"embedder Recall@{stage.top_k}": row["embedder Recall@k"],
                                      "seconds": row["seconds"], "pairs": row["pairs"], "diff": d}}
    seen = seen_ids(train) if train is not None else None
    flags = [None if seen is None else all(g in seen for g in gs) for gs in gold]
    pq = per_query(lists, gold, ks=[k for k in (25, 100) if k <= min(topk, depth)], map_k=map_k)
    from helpers.eval.evaluate import per_query_rows
    write_jsonl(out / "rankings.jsonl", [
        {"query_id": q, "pos_ids": g, "rank": int(gr) or None, "seen": s, "ranked_ids": x}
        for q, g, x, gr, s in zip(qids, gold, lists, pq["rank"], flags)])
    write_jsonl(out / "per_query.jsonl", per_query_rows(qrows, pq, flags))
    with atomic_path(out / "sweep.csv") as tmp:
        tmp.write_text(metrics_csv(sweep), encoding="utf-8")
    write_json(out / "sweep.json", sweep)
    from helpers.eval.plots import plot_rerank_sweep
    plot_rerank_sweep(sweep, path=out / "sweep.png", title=f"{label or emb_dir}: rerank the top k")
    with atomic_path(out / "metrics.csv") as tmp:
        tmp.write_text(metrics_csv(metrics_rows(metrics, label or "")), encoding="utf-8")
    write_json(out / "metrics.json", {**metrics, "sweep": sweep, "args": {"stage": asdict(stage), **sweep_settings,
                                                                          "map_k": map_k, "topk": min(topk, depth)}})
    if key is not None:
        write_json(key_path, key)
    log.info("%s: MAP@%d %.4f -> %.4f with the reranker on the top %d (%+.4f [%+.4f, %+.4f], %s; embedder Recall@%d "
             "%.3f; %d pairs in %.1fs)", label or emb_dir, map_k, row[f"embedder {key_map}"], row[key_map], stage.top_k,
             d["mean_diff"], d["lo"], d["hi"], d["verdict"], stage.top_k, row["embedder Recall@k"], row["pairs"],
             row["seconds"])
    return {**metrics, "sweep": sweep}


def cascade_table(results: dict, digits: int = 4) -> list[dict]:
    """One row per cascade of ``results`` (``{label: metrics}``; the ones with a ``"cascade"``
    entry): embedder alone, with the reranker, the paired difference with its interval and
    verdict, the embedder's Recall@k (the ceiling), k, alpha and the second stage's seconds."""
    out = []
    for label, m in results.items():
        c = m.get("cascade")
        if not c:
            continue
        d, k = c["diff"], c["top_k"]
        key = next(x for x in c if x.startswith("embedder MAP@"))
        out.append({"cascade": label, "embedder": c["embedder"], "k": k, "alpha": c["alpha"],
                    "embedder MAP@25": round(c[key], digits), "cascade MAP@25": round(m[key.split(" ", 1)[1]], digits),
                    "difference": round(d["mean_diff"], digits), "95% CI": f"[{d['lo']:+.{digits}f}, {d['hi']:+.{digits}f}]",
                    "verdict": d["verdict"], "embedder Recall@k": round(c[f"embedder Recall@{k}"], digits),
                    "pairs": c["pairs"], "seconds": c["seconds"]})
    return out


def cascade_specs(results: dict, specs: Sequence[dict], block: Optional[dict]) -> list[dict]:
    """Model specs (of :func:`helpers.eval.compare.model_specs`) for the cascade rows of ``results``:
    the embedder's spec with the reranker ``block`` (its ``top_k`` / ``alpha`` as measured), so
    :func:`helpers.eval.submission.submit_with` can submit a cascade by its label."""
    by_label = {s["label"]: s for s in specs}
    out = []
    for label, m in results.items():
        c = m.get("cascade")
        if c and c["embedder"] in by_label:
            out.append({**by_label[c["embedder"]], "label": label, "epoch": None,
                        "reranker": {**(block or {}), "top_k": c["top_k"], "alpha": c["alpha"]}})
    return out


# ----------------------------------------------------------------------------- command line
@dataclass
class CascadeArgs:
    embedder_dir: str = field(default=None, metadata={"help": "an evaluation folder of helpers.eval.evaluate (rankings.jsonl, metrics.json)"})
    queries_file: str = field(default=None, metadata={"help": "the queries those rankings are of (query text, pos_ids)"})
    corpus_file: str = field(default=None, metadata={"help": "corpus.jsonl (id -> passage text)"})
    output_dir: str = field(default=None, metadata={"help": "the cascade's evaluation folder (rankings, metrics, sweep)"})
    reranker: str = field(default=None, metadata={"help": "the reranker block: JSON of RerankStage fields, or a .json file holding it"})
    train_queries_file: Optional[str] = field(default=None, metadata={"help": "train queries: the seen/unseen split"})
    sweep_top_k: str = field(default="10,25,50,100", metadata={"help": "k values of the sweep (comma-separated)"})
    sweep_alpha: str = field(default="", metadata={"help": "fusion weights of the sweep (comma-separated; empty: reranker alone)"})
    label: Optional[str] = field(default=None, metadata={"help": "name in tables (default: from the embedder's)"})
    n_resamples: int = field(default=1000, metadata={"help": "bootstrap resamples of the queries"})
    bootstrap_seed: int = field(default=0, metadata={"help": "seed of the resamples"})


def read_block(text: str) -> dict:
    """``--reranker``: inline JSON, or a .json file holding the block."""
    p = Path(text)
    if p.suffix == ".json" and p.is_file():
        text = p.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--reranker: neither JSON nor a .json file ({e})") from None


def main(argv=None) -> None:
    from helpers.common.cli import dataclass_parser
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    a = CascadeArgs(**vars(dataclass_parser(CascadeArgs, __doc__, prog="python -m helpers.eval.cascade").parse_args(argv)))
    for name in ("embedder_dir", "queries_file", "corpus_file", "output_dir", "reranker"):
        if not getattr(a, name):
            raise ValueError(f"--{name} is required")
    stage = stage_from(read_block(a.reranker))
    if stage is None:
        raise ValueError("--reranker: the block names no reranker_name_or_path")
    nums = lambda s, f: [f(x) for x in str(s).split(",") if x.strip()]     # noqa: E731
    label = a.label or cascade_label(json.loads((Path(a.embedder_dir) / "metrics.json").read_text())["label"], stage)
    m = run_cascade(stage, a.embedder_dir, a.queries_file, a.corpus_file, a.output_dir, a.train_queries_file,
                    nums(a.sweep_top_k, int), nums(a.sweep_alpha, float), label=label, n_resamples=a.n_resamples,
                    bootstrap_seed=a.bootstrap_seed)
    print(metrics_csv(m["sweep"]))


if __name__ == "__main__":
    from helpers.common.cli import run
    run(main)
