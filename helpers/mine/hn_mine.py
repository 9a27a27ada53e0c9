"""Stage 01: hard-negative mining, FlagEmbedding's ``hn_mine`` flags and meaning.

    python -m helpers.mine.hn_mine --embedder_name_or_path demo:smollm2-135m-instruct \\
        --embedder_model_class decoder-only-icl --pooling_method last_token \\
        --input_file model_output/demo/data/train_queries.jsonl \\
        --output_file model_output/demo/mined/train_mined.jsonl \\
        --candidate_pool model_output/demo/data/corpus.jsonl \\
        --range_for_sampling 2-100 --negative_number 15 --devices cpu --shuffle_data True \\
        --query_instruction_for_retrieval "Given a multiple choice math question ..." \\
        --query_instruction_format '<instruct>{}\\n<query>{}' --examples_for_task None \\
        --batch_size 64 --embedder_query_max_length 1024 --embedder_passage_max_length 512

FlagEmbedding's spellings above are accepted; ours (the embedder block every stage shares,
:mod:`helpers.embed.args`) are ``--model_name_or_path``, ``--embedder_batch_size``,
``--query_max_len`` and ``--passage_max_len``.

Differences from FlagEmbedding, all deliberate: identity by id (``pos_ids``), a seeded
generator (``--seed``), ``--pooling_method`` and ``--query_instruction_format`` default to the
model class's own; a row's ``prompt`` overrides ``--query_instruction_for_retrieval`` for
decoders (``--use_row_prompts``: encoders do not read row prompts unless asked); in-context
examples come per query from examples.json (same construct, then subject, then any).

Positive-aware mining (off by default): ``--relative_margin`` / ``--absolute_margin`` /
``--max_score`` drop range candidates that score too close to the query's lowest positive (or
above a ceiling), ``--sampling top`` takes the best-ranked survivors instead of a random sample;
the stats count what each filter removed (rules: :mod:`helpers.mine.mining`).
"""
from __future__ import annotations

import hashlib
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from helpers.common.cli import dataclass_parser, field_kwargs, str2bool
from helpers.common.devices import check_devices, parse_devices
from helpers.embed.args import EmbedderArgs
from helpers.embed.args import MODEL_CLASSES
from helpers.embed.embedder import Embedder
from helpers.embed.loading import check_memory
from helpers.common.cli import flag_aliases
from helpers.common.io_utils import check_writable, load_corpus, read_jsonl, validate_queries, write_jsonl
from helpers.eval.retrieval import score_rankings
from helpers.eval.metrics import ids_from_indices
from helpers.common.models import resolve_model
from helpers.mine.mining import (SAMPLING, MiningStats, check_filters, check_positive_texts, corpus_from_queries,
                                 parse_range, sample_negatives, shuffle_rows)
from helpers.embed.search import search

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class HnMineArgs(EmbedderArgs):
    """Mining flags on top of the embedder block (FlagEmbedding's hn_mine names, its other
    spellings accepted: ``--embedder_name_or_path``, ``--batch_size``, ``--embedder_query_max_length``)."""
    input_file: str = field(metadata={"help": "queries JSONL (query, pos, pos_ids, ...) to mine negatives for"})
    output_file: str = field(metadata={"help": "mined JSONL: the input rows with neg/neg_ids filled"})
    candidate_pool: Optional[str] = field(default=None, metadata={
        "help": "corpus JSONL {id, text}; default: every pos/neg of the input, by id"})
    range_for_sampling: str = field(default="10-210", metadata={"help": "sample from the 0-based slice [a:b] of the ranking"})
    negative_number: int = field(default=15, metadata={"help": "negatives per query"})
    relative_margin: Optional[float] = field(default=None, metadata={
        "help": "keep a candidate only if its similarity < s_pos - |s_pos| * margin, s_pos being the lowest "
                "positive similarity of the query (0.05: NV-Retriever's TopK-PercPos); None: off"})
    absolute_margin: Optional[float] = field(default=None, metadata={
        "help": "keep a candidate only if its similarity < s_pos - margin (s_pos: the lowest positive similarity); "
                "None: off"})
    max_score: Optional[float] = field(default=None, metadata={
        "help": "keep a candidate only if its similarity < max_score; None: off"})
    sampling: str = field(default="random", metadata={
        "help": "random: a seeded sample of the range's survivors | top: the highest-ranked survivors, in order"})
    shuffle_data: bool = field(default=False, metadata={"help": "shuffle the output rows (seeded)"})
    use_gpu_for_searching: Optional[bool] = field(default=None, metadata={
        "help": "faiss GPU index (default: when faiss has GPU support and CUDA is there)"})
    seed: int = field(default=42, metadata={"help": "seed of the sampling, top-up, examples and shuffle"})
    overwrite: bool = field(default=True, metadata={"help": "replace an existing output_file (False: refuse)"})
    max_queries: Optional[int] = field(default=None, metadata={
        "help": "mine only a seeded sample of this many queries (input order kept); default: all"})
    keep_scores: bool = field(default=False, metadata={
        "help": "also write pos_embedder_scores / neg_embedder_scores: this model's similarity of each "
                "positive and negative (aligned with pos / neg), which a fused teacher reads (stage 02's "
                "--fusion_alpha); False: FlagEmbedding's fields only"})

    def embedder(self) -> Embedder:
        """The mining embedder of these flags (loads the model); in-context examples drawn with ``seed``."""
        return Embedder(self, examples_seed=self.seed)


@dataclass
class MineResult:
    rows: list                 # mined rows, in output order
    neg_ranks: list            # per row, the 0-based rank of each negative (-1: top-up)
    pos_sim: np.ndarray        # per row (output order), similarity of the first positive
    neg_sim: list              # per row, similarity of each negative
    stats: dict


def _load_inputs(args: HnMineArgs):
    rows = read_jsonl(args.input_file)
    if args.candidate_pool:
        corpus_ids, corpus_texts = load_corpus(args.candidate_pool)
    else:
        validate_queries(rows, args.input_file)
        corpus_ids, corpus_texts = corpus_from_queries(rows, args.input_file)
    validate_queries(rows, args.input_file, corpus_ids=set(corpus_ids))
    if args.max_queries is not None:
        if args.max_queries < 1:
            raise ValueError(f"max_queries must be at least 1, got {args.max_queries}")
        if args.max_queries < len(rows):
            keep = sorted(random.Random(args.seed).sample(range(len(rows)), args.max_queries))
            log.info("max_queries %d: mining a seeded sample of %d of %d queries", args.max_queries,
                     len(keep), len(rows))
            rows = [rows[i] for i in keep]
    return rows, corpus_ids, corpus_texts


def hn_mine(args: HnMineArgs, embedder: Optional[Embedder] = None,
            corpus_cache: Optional[dict] = None) -> MineResult:
    """Mine ``args.input_file`` into ``args.output_file``; everything is checked before the model
    runs and the output is written atomically. Pass ``embedder`` (and a ``corpus_cache`` dict)
    to mine several files with one model and one corpus encoding."""
    args.devices = check_devices(args.devices, stage="hn_mine")   # before anything is read or loaded
    t0 = time.time()
    a, b = parse_range(args.range_for_sampling)
    if args.negative_number < 0:
        raise ValueError(f"negative_number must be >= 0, got {args.negative_number}")
    check_filters(args.relative_margin, args.absolute_margin, args.max_score, args.sampling)
    out = Path(args.output_file)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists and overwrite is False")
    if embedder is None:     # model name and class checked before any input is read
        resolve_model(args.model_name_or_path)
        check_memory(args, parse_devices(args.devices))   # CUDA: the memory plan, before any input or model
    check_writable(out)
    rows, corpus_ids, corpus_texts = _load_inputs(args)
    if args.negative_number > len(corpus_ids) - 1:
        src = args.candidate_pool or f"{args.input_file} (its pos/neg, no candidate_pool given)"
        raise ValueError(f"negative_number {args.negative_number} is larger than the corpus allows: {src} "
                         f"has {len(corpus_ids)} passages, so at most {len(corpus_ids) - 1} negatives per query")
    check_positive_texts(rows, corpus_ids, corpus_texts, args.input_file)
    log.info("hn_mine %s: %d queries, corpus %d passages (%s), range [%d:%d], %d negatives, seed %d, "
             "sampling %s, filters: relative_margin %s, absolute_margin %s, max_score %s",
             args.input_file, len(rows), len(corpus_ids), args.candidate_pool or "pos/neg of the input",
             a, b, args.negative_number, args.seed, args.sampling, args.relative_margin, args.absolute_margin,
             args.max_score)
    if embedder is None:
        embedder = args.embedder()
    t1 = time.time()
    key = hashlib.sha1("\x00".join(corpus_texts).encode("utf-8")).hexdigest()
    if corpus_cache is not None and key in corpus_cache:
        p_emb = corpus_cache[key]
    else:
        p_emb = embedder.encode_corpus(corpus_texts)
        if corpus_cache is not None:
            corpus_cache[key] = p_emb
    t2 = time.time()
    q_emb = embedder.encode_queries(rows)
    t3 = time.time()
    topk = max(b, 100)
    scores, indices = search(q_emb, p_emb, topk, use_gpu=args.use_gpu_for_searching)
    id_to_idx = {c: i for i, c in enumerate(corpus_ids)}
    pos_scores = [[float(q_emb[i] @ p_emb[id_to_idx[p]]) for p in r["pos_ids"]] for i, r in enumerate(rows)]
    mstats = MiningStats()
    mined, ranks = sample_negatives(rows, indices, corpus_ids, corpus_texts, (a, b),
                                    args.negative_number, args.seed, scores=scores, pos_scores=pos_scores,
                                    relative_margin=args.relative_margin, absolute_margin=args.absolute_margin,
                                    max_score=args.max_score, sampling=args.sampling, stats=mstats)
    pos_sim = np.array([s[0] for s in pos_scores], dtype=np.float32)      # mined[i] is rows[i]: its first positive
    neg_sim = [[float(q_emb[i] @ p_emb[id_to_idx[n]]) for n in r["neg_ids"]] for i, r in enumerate(mined)]
    if args.keep_scores:
        for i, r in enumerate(mined):
            r["pos_embedder_scores"] = [round(s, 6) for s in pos_scores[i]]
            r["neg_embedder_scores"] = [round(s, 6) for s in neg_sim[i]]
    metrics = score_rankings(ids_from_indices(indices, corpus_ids), rows, ks=(25, 50, 75, 100))
    order = list(range(len(mined)))
    if args.shuffle_data:
        order = shuffle_rows(order, args.seed)
    mined = [mined[i] for i in order]
    ranks = [ranks[i] for i in order]
    pos_sim = pos_sim[order]
    neg_sim = [neg_sim[i] for i in order]
    write_jsonl(out, mined)
    n_tok = sum(len(r) for r in ranks)
    stats = {
        "input_file": str(args.input_file), "output_file": str(out), "queries": len(rows),
        "corpus": len(corpus_ids), "range_for_sampling": f"{a}-{b}", "negative_number": args.negative_number,
        "sampling": args.sampling, "relative_margin": args.relative_margin, "absolute_margin": args.absolute_margin,
        "max_score": args.max_score, **mstats.as_dict(),
        "negatives_from_range": sum(1 for rs in ranks for r in rs if r >= 0),
        "negatives_topped_up": sum(1 for rs in ranks for r in rs if r < 0), "negatives_total": n_tok,
        "embedder_metrics": metrics, "load_s": round(t1 - t0, 2),
        "corpus_s": round(t2 - t1, 2), "queries_s": round(t3 - t2, 2), "total_s": round(time.time() - t0, 2),
    }
    log.info("mined %d queries -> %s in %.1fs (corpus %.1fs, queries %.1fs); embedder MAP@25 %.4f",
             len(rows), out, stats["total_s"], stats["corpus_s"], stats["queries_s"], metrics.get("MAP@25", float("nan")))
    return MineResult(mined, ranks, pos_sim, neg_sim, stats)


# ----------------------------------------------------------------------------- command line
ALIASES = {**flag_aliases(), "embedder_batch_size": ["--batch_size"]}     # FlagEmbedding hn_mine's name


def build_parser():
    # FlagEmbedding's hn_mine takes several devices as separate values: --devices cuda:0 cuda:1
    return dataclass_parser(HnMineArgs, __doc__, prog="python -m helpers.mine.hn_mine", aliases=ALIASES,
                            choices={"embedder_model_class": MODEL_CLASSES, "sampling": SAMPLING},
                            overrides={"devices": field_kwargs(None, Optional[list])})


def parse_args(argv=None) -> HnMineArgs:
    """The command line; also the seed's ``--add_examples_for_task True|False`` switch (True: the
    ``examples.json`` beside ``--input_file`` unless ``--examples_for_task`` names one)."""
    p = build_parser()
    p.add_argument("--add_examples_for_task", type=str2bool, nargs="?", const=True, default=None,
                   help="The seed's switch: True takes the examples.json beside --input_file when "
                        "--examples_for_task is not given; False: no in-context examples.")
    ns = vars(p.parse_args(argv))
    add = ns.pop("add_examples_for_task")
    if add is False and ns["examples_for_task"]:
        raise ValueError("--add_examples_for_task False contradicts --examples_for_task "
                         f"{ns['examples_for_task']!r}: give one of them")
    if add and not ns["examples_for_task"]:
        ex = Path(ns["input_file"]).parent / "examples.json"
        if not ex.is_file():
            raise ValueError(f"--add_examples_for_task True: no --examples_for_task given and {ex} does not exist")
        ns["examples_for_task"] = str(ex)
    return HnMineArgs(**ns)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    log.info("arguments: %s", args)
    res = hn_mine(args)     # bad input: helpers.common.cli prints one 'error:' line
    for k, v in res.stats.items():
        print(f"{k:24s} {v}")


if __name__ == "__main__":
    from helpers.common.cli import run
    run(main)
