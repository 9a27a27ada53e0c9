"""Does the teacher know better than the student? Rerank a bi-encoder's own top k with a reranker.

    python -m helpers.eval.rerank_eval --rankings_file RUN/eval/<model>/rankings.jsonl \\
        --queries_file D/test_queries.jsonl --corpus_file D/corpus.jsonl \\
        --reranker_name_or_path RUN/teacher/model_epoch_1 --reranker_model_class encoder-only-base \\
        --top_k 25 --output_file RUN/teacher/rerank_eval.json

For every query of ``rankings.jsonl`` (written by :mod:`helpers.eval.evaluate`), the first ``top_k``
passages of the bi-encoder's ranking are scored by the reranker and re-ordered by that score (ties
keep the bi-encoder's order); a gold passage outside the top k stays outside (rank None). Reported:
MAP@25 and Recall@k of the bi-encoder's order and of the reranked order, and the paired
difference reranked - bi-encoder with its bootstrap 95% interval over queries
(:func:`helpers.eval.paired.paired_bootstrap`). A teacher that does not beat its student here has
nothing to teach it. ``--fusion_alpha`` checks a fused teacher (stage 02's): the sort key is
``alpha * z(reranker) + (1 - alpha) * z(bi-encoder)`` (:mod:`helpers.rerank.fusion`).
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Optional

from helpers.rerank.args import RerankerArgs, build_reranker, check_not_trained_on
from helpers.common.cli import dataclass_parser
from helpers.common.io_utils import InputError, load_corpus, read_jsonl, validate_queries, write_json
from helpers.eval.cascade import rerank_order
from helpers.eval.paired import paired_bootstrap, per_query_from_ranks
from helpers.rerank.fusion import check_alpha

log = logging.getLogger(__name__)


@dataclass
class RerankEvalArgs(RerankerArgs):
    rankings_file: str = field(default=None, metadata={"help": "rankings.jsonl of helpers.eval.evaluate (query_id, ranked_ids)"})
    queries_file: str = field(default=None, metadata={"help": "the queries those rankings are of (query text, pos_ids)"})
    corpus_file: str = field(default=None, metadata={"help": "corpus.jsonl (id -> passage text)"})
    output_file: Optional[str] = field(default=None, metadata={"help": "the report (JSON); None: not written"})
    top_k: int = field(default=25, metadata={"help": "rerank the first top_k passages of each ranking"})
    n_resamples: int = field(default=1000, metadata={"help": "bootstrap resamples of the queries"})
    bootstrap_seed: int = field(default=0, metadata={"help": "seed of the resamples"})
    fusion_alpha: Optional[float] = field(default=None, metadata={
        "help": "check a fused teacher (stage 02's fusion_alpha): re-order by alpha * z(reranker) + (1 - alpha) * "
                "z(bi-encoder) over the top k, the bi-encoder's scores read from rankings_file; None: the reranker alone"})

    def __post_init__(self):
        super().__post_init__()         # types; a train_reranker folder stands for its last epoch
        for name in ("rankings_file", "queries_file", "corpus_file", "reranker_name_or_path"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required")
        if int(self.top_k) < 1:
            raise ValueError(f"top_k must be at least 1, got {self.top_k}")
        check_alpha(self.fusion_alpha, "fusion_alpha")


def rerank(ranked_ids: list[list[str]], queries: list[str], texts: dict, reranker, top_k: int,
           embedder_scores=None, alpha: Optional[float] = None) -> list[list[str]]:
    """Each ranking's first ``top_k`` ids re-ordered by the reranker's score, or its fusion with the
    bi-encoder's scores (``alpha``): the cascade's rule, :func:`helpers.eval.cascade.rerank_order`
    (ties keep the bi-encoder's order)."""
    heads = [ids[:top_k] for ids in ranked_ids]
    scores = reranker.score_groups(queries, [[texts[i] for i in h] for h in heads])
    emb = embedder_scores or [None] * len(heads)
    return [rerank_order(h, s, top_k, e, alpha) for h, s, e in zip(heads, scores, emb)]


def gold_rank(ids: list[str], gold: list[str]) -> Optional[int]:
    return next((k + 1 for k, i in enumerate(ids) if i in set(gold)), None)


def rerank_eval(args: RerankEvalArgs, reranker=None) -> dict:
    ids, texts = load_corpus(args.corpus_file)
    by_id = dict(zip(ids, texts))
    rows = {r["query_id"]: r for r in read_jsonl(args.queries_file)}
    validate_queries(list(rows.values()), args.queries_file, corpus_ids=set(ids))
    rankings = read_jsonl(args.rankings_file)
    for r in rankings:
        if r.get("query_id") not in rows:
            raise InputError(args.rankings_file, r.get("__line__"), "query_id",
                             f"{r.get('query_id')!r} is not a query of {args.queries_file}")
        bad = [i for i in r.get("ranked_ids", [])[:args.top_k] if i not in by_id]
        if bad:
            raise InputError(args.rankings_file, r["__line__"], "ranked_ids", f"ids not in the corpus: {bad[:3]}")
        if args.fusion_alpha is not None and len(r.get("scores") or []) < min(args.top_k, len(r["ranked_ids"])):
            raise InputError(args.rankings_file, r["__line__"], "scores", "a fused teacher (fusion_alpha) needs the "
                             "bi-encoder's score of each of the top k ids")
    qids = [r["query_id"] for r in rankings]
    check_not_trained_on(args.reranker_name_or_path, qids, args.queries_file)
    reranker = reranker or build_reranker(args)
    before = [r["ranked_ids"][:args.top_k] for r in rankings]
    emb = [r["scores"][:args.top_k] for r in rankings] if args.fusion_alpha is not None else None
    after = rerank(before, [rows[q]["query"] for q in qids], by_id, reranker, args.top_k, emb, args.fusion_alpha)
    gold = [rows[q]["pos_ids"] for q in qids]
    ks = tuple(k for k in (1, 5, 10, 25) if k <= args.top_k)
    out = {"n_queries": len(qids), "top_k": args.top_k, "reranker": args.reranker_name_or_path,
           "fusion_alpha": args.fusion_alpha}
    per = {}
    for name, lists in (("bi-encoder", before), ("reranked", after)):
        pq = per_query_from_ranks([gold_rank(l, g) for l, g in zip(lists, gold)], map_k=25, ks=ks)
        per[name] = {m: dict(zip(qids, v.tolist())) for m, v in pq.items()}
        out[name] = {m: float(v.mean()) for m, v in pq.items()}
    out["reranked - bi-encoder"] = {
        m: paired_bootstrap(per["bi-encoder"][m], per["reranked"][m], args.n_resamples, args.bootstrap_seed,
                            label_a="bi-encoder", label_b="reranked")
        for m in per["bi-encoder"]}
    if args.output_file:
        write_json(args.output_file, {**out, "args": asdict(args)})
    d = out["reranked - bi-encoder"]["MAP@25"]
    log.info("rerank top %d of %d queries: MAP@25 %.4f -> %.4f (difference %+.4f, 95%% interval [%+.4f, %+.4f]: %s)",
             args.top_k, len(qids), out["bi-encoder"]["MAP@25"], out["reranked"]["MAP@25"], d["mean_diff"],
             d["lo"], d["hi"], d["verdict"])
    return out


def teacher_check(report_path) -> tuple[bool, str]:
    """Does the teacher know more than its student? -> (better, one line with the numbers), from the
    ``rerank_eval.json`` of :func:`rerank_eval` (the teacher re-ordering the student's top k). Better
    means the paired MAP@k interval of reranked minus bi-encoder lies above zero."""
    from pathlib import Path
    path = Path(report_path)
    if not path.is_file():
        raise InputError(path, None, "teacher_report", "file does not exist (02a_train_reranker writes it "
                         "with rankings_file given; python -m helpers.eval.rerank_eval with --output_file)")
    rep = json.loads(path.read_text(encoding="utf-8"))
    diff = rep.get("reranked - bi-encoder", {})
    key = next((k for k in diff if k.startswith("MAP@")), None)
    if key is None:
        raise InputError(path, None, "reranked - bi-encoder", "no MAP@k comparison in the report")
    d = diff[key]
    better = d.get("verdict") == "better"
    fused = "" if rep.get("fusion_alpha") is None else f" fused with its student (alpha {rep['fusion_alpha']:g})"
    line = (f"teacher {rep.get('reranker')}{fused}: re-ordering its student's top {rep.get('top_k')} on "
            f"{rep.get('n_queries')} queries moves {key} {rep['bi-encoder'][key]:.4f} -> {rep['reranked'][key]:.4f}, "
            f"{d['mean_diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}], {d['verdict']}")
    return better, line


def build_parser():
    """The command line (also what ``run_all.py`` checks a profile's ``script`` step against)."""
    return dataclass_parser(RerankEvalArgs, __doc__, prog="python -m helpers.eval.rerank_eval")


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    a = build_parser().parse_args(argv)
    out = rerank_eval(RerankEvalArgs(**vars(a)))
    print(json.dumps({k: v for k, v in out.items() if k != "args"}, indent=1))


if __name__ == "__main__":
    from helpers.common.cli import run
    run(main)
