"""Stage 02: add teacher scores. ``python -m helpers.rerank.add_reranker_score --input_file ...``

Reads a mined file (queries with ``pos`` and ``neg``), scores every (query, positive) and
(query, negative) pair with the reranker and writes the same rows plus ``pos_scores`` /
``neg_scores`` (aligned with ``pos`` / ``neg``; the raw logit unless ``--normalize True``).
Flag names are FlagEmbedding's ``scripts/add_reranker_score.py`` ones. Progress is saved per
chunk of queries beside the output, so a killed run started again continues where it stopped
and writes the same bytes; the output file appears only when complete.

``--teacher_filter drop|mark`` (with ``--teacher_filter_margin``) flags negatives the teacher
scores above the best positive minus the margin (likely false negatives) and drops or marks them
(:mod:`helpers.rerank.filters`). It runs on the final rows, after every chunk is scored, so it
never enters the progress file: a run may resume under another filter setting.

``--fusion_alpha a`` writes a fused teacher, ``a * z(reranker) + (1 - a) * z(mining model)`` over
each query's group (:mod:`helpers.rerank.fusion`, the cascade's rule), from a file mined with
``--keep_scores True``; like the filter it runs on the final rows (before the filter).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from helpers.common.devices import check_devices

from helpers.common.cli import dataclass_parser, str2bool
from helpers.rerank.fusion import check_alpha, check_embedder_scores, fuse_rows
from helpers.rerank.filters import FILTER_MODES, apply_teacher_filter, check_filter, summary_line
from helpers.common.io_utils import InputError, check_writable, exclusive_lock, read_jsonl, write_jsonl
from helpers.rerank.args import ALIASES, RerankerArgs, build_reranker, check_memory, check_model_args
from helpers.rerank.progress import Progress, file_sha256, progress_path
from helpers.rerank.stats import teacher_vs_miner

log = logging.getLogger(__name__)


@dataclass
class ScoreArgs(RerankerArgs):
    """The reranker (:class:`~helpers.rerank.args.RerankerArgs`) and the files it scores."""
    input_file: str = field(default=None, metadata={"help": "Mined JSONL: query, pos, neg (+ ids, extra fields)."})
    output_file: str = field(default=None, metadata={"help": "Scored JSONL: the input rows plus pos_scores/neg_scores."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing output, stale progress or scores."})
    chunk_size: int = field(default=64, metadata={"help": "Queries per saved progress chunk."})
    teacher_filter: str = field(default="none", metadata={
        "help": "Suspected false negatives (teacher score > max positive score - margin): none | drop (removed "
                "from neg/neg_ids/neg_scores, at least one negative kept per row: the lowest-scored) | mark "
                "(kept, neg_suspect booleans added; training drops them unless told otherwise)."})
    teacher_filter_margin: float = field(default=0.0, metadata={
        "help": "Margin of the teacher filter in score units: 0 flags negatives above the best positive; "
                "larger flags more."})
    fusion_alpha: Optional[float] = field(default=None, metadata={
        "help": "A fused teacher: the written score is alpha * z(reranker) + (1 - alpha) * z(mining model) over "
                "each query's group, the cascade's fusion (helpers/rerank/fusion.py); the input must be mined "
                "with keep_scores True. The raw scores stay as pos_reranker_scores/neg_reranker_scores. "
                "None: the reranker's scores."})

    def score_settings(self) -> dict:
        """Everything that changes the scores (and so must match to resume); the filter does not."""
        skip = {"input_file", "output_file", "devices", "overwrite", "teacher_filter", "teacher_filter_margin",
                "fusion_alpha"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


def _check_args(a: ScoreArgs):
    for name in ("input_file", "output_file", "reranker_name_or_path"):
        if not getattr(a, name):
            raise ValueError(f"--{name} is required")
    if int(a.chunk_size) < 1:
        raise ValueError(f"--chunk_size must be at least 1, got {a.chunk_size}")
    if Path(a.input_file).resolve() == Path(a.output_file).resolve():
        raise ValueError("--output_file must differ from --input_file")
    check_filter(a.teacher_filter, a.teacher_filter_margin)
    check_alpha(a.fusion_alpha, "fusion_alpha")


def _check_model_args(a: ScoreArgs):
    check_model_args(a)


def check_rows(rows, path, overwrite=False):
    """The fields scoring needs: query, a non-empty pos list, a neg list, no scores yet."""
    for r in rows:
        line = r.get("__line__")
        if not isinstance(r.get("query"), str):
            raise InputError(path, line, "query", "missing or not a string")
        for name in ("pos", "neg"):
            if name not in r:
                raise InputError(path, line, name, "missing (run hard-negative mining first)" if name == "neg" else "missing")
            v = r[name]
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise InputError(path, line, name, f"expected a list of strings, got {type(v).__name__}")
            ids = r.get(name + "_ids")
            if ids is not None and (not isinstance(ids, list) or len(ids) != len(v)):
                raise InputError(path, line, name + "_ids", f"not aligned with {name}")
        if not r["pos"]:
            raise InputError(path, line, "pos", "empty: every query needs at least one positive")
        for name in ("pos_scores", "neg_scores"):
            if name in r and not overwrite:
                raise InputError(path, line, name, "scores already present; pass --overwrite True to replace them")


def check_finite_scores(part: list[dict], scores, args: ScoreArgs) -> None:
    """A NaN or infinite teacher score stops the stage, naming the query: JSON cannot hold it, and
    a NaN would poison the KD targets of the query's group."""
    for r, ss in zip(part, scores):
        for j, x in enumerate(ss):
            x = float(x)
            if not math.isfinite(x):
                name, k = ("pos_scores", j) if j < len(r["pos"]) else ("neg_scores", j - len(r["pos"]))
                raise FloatingPointError(
                    f"{args.input_file}, line {r.get('__line__')}, query_id {r.get('query_id')!r}: the reranker "
                    f"{args.reranker_name_or_path} gave a non-finite score ({x}) for {name}[{k}]; nothing of this "
                    f"chunk was recorded. Check the model, or try use_fp16 False (fp16 overflow)")


def add_reranker_score(args: ScoreArgs, reranker=None, load=None) -> dict:
    """Score ``args.input_file`` into ``args.output_file``; returns a small summary.

    ``reranker``: a loaded model to use; else ``load(args)`` (default :func:`build_reranker`) is
    called only when there are chunks left to score (a finished file needs no model).
    """
    args.devices = check_devices(args.devices, stage="add_reranker_score")   # before anything is loaded
    _check_args(args)
    with exclusive_lock(args.output_file, "add_reranker_score"):      # one scorer writes a progress file
        return _score(args, reranker, load)


def _score(args: ScoreArgs, reranker, load) -> dict:
    t0 = time.time()
    log.info("add_reranker_score arguments: %s", dataclasses.asdict(args))
    out = Path(args.output_file)
    rows = read_jsonl(args.input_file)
    check_rows(rows, args.input_file, args.overwrite)
    if args.fusion_alpha is not None:
        check_embedder_scores(rows, args.input_file)
    prog_path = progress_path(out)
    if out.exists() and not prog_path.exists() and not args.overwrite:
        raise ValueError(f"{out} exists; pass --overwrite True to replace it")
    check_writable(out)
    if reranker is None:       # model arguments checked before any progress file is written
        _check_model_args(args)
        check_memory(args)     # CUDA: the memory plan, printed; what cannot fit stops here
    n, c = len(rows), int(args.chunk_size)
    from helpers.common.models import files_fingerprint, resolve_model
    model_files = files_fingerprint([resolve_model(args.reranker_name_or_path), args.peft_adapter]) \
        if reranker is None else None      # a reranker handed in as an object: its caller's business
    header = dict(input_sha256=file_sha256(args.input_file), settings=args.score_settings(), n_queries=n,
                  model_files=model_files)   # a teacher trained again in the same folder: progress is stale
    progress = Progress(prog_path, header, overwrite=args.overwrite)
    todo = [i for i in range((n + c - 1) // c) if i not in progress.done]
    n_pairs = sum(len(r["pos"]) + len(r["neg"]) for r in rows)
    log.info("%d queries, %d pairs, %d chunks of %d queries (%d already done)",
             n, n_pairs, (n + c - 1) // c, c, (n + c - 1) // c - len(todo))
    t1 = time.time()
    if todo and reranker is None:
        reranker = (load or build_reranker)(args)
    for i in tqdm(todo, desc="chunks", unit="chunk", disable=len(todo) < 2):
        part = rows[i * c:(i + 1) * c]
        scores = reranker.score_groups([r["query"] for r in part], [r["pos"] + r["neg"] for r in part])
        check_finite_scores(part, scores, args)          # before the chunk is recorded as done
        progress.add(i, {"pos_scores": [s[:len(r["pos"])] for r, s in zip(part, scores)],
                         "neg_scores": [s[len(r["pos"]):] for r, s in zip(part, scores)]})
        log.debug("chunk %d/%d done", i + 1, (n + c - 1) // c)
    dt = time.time() - t1
    done_pairs = sum(len(r["pos"]) + len(r["neg"]) for i in todo for r in rows[i * c:(i + 1) * c])
    for i, rec in sorted(progress.done.items()):
        for r, ps, ns in zip(rows[i * c:(i + 1) * c], rec["pos_scores"], rec["neg_scores"]):
            r["pos_scores"], r["neg_scores"] = ps, ns
    if args.fusion_alpha is not None:           # like the filter, after every chunk: not in the progress file
        fuse_rows(rows, float(args.fusion_alpha))
        log.info("fused teacher: %g * z(reranker) + %g * z(mining model) over each group",
                 args.fusion_alpha, 1 - args.fusion_alpha)
    rows, report = apply_teacher_filter(rows, args.teacher_filter, args.teacher_filter_margin)
    if args.teacher_filter != "none":
        log.info("%s", summary_line(report))
    versus = teacher_vs_miner(rows)            # the groups KD trains on: is the teacher ahead of the miner?
    if versus:
        t, m = versus["teacher"]["top1"], versus["miner"]["top1"]
        (log.warning if t <= m else log.info)(
            "teacher top-1 on these groups %.3f vs the mining model's %.3f%s", t, m,
            ": the teacher is not ahead of the student on the groups KD trains on (README, issue 29: KD then "
            "does not win)" if t <= m else "")
    write_jsonl(out, rows)
    progress.remove()
    summary = dict(queries=n, pairs=n_pairs, scored_now=done_pairs, seconds=round(time.time() - t0, 2),
                   **({"teacher_top1": round(versus["teacher"]["top1"], 4), "miner_top1": round(versus["miner"]["top1"], 4)}
                      if versus else {}),
                   pairs_per_s=round(done_pairs / dt, 2) if dt > 0 and done_pairs else None,
                   output_file=str(out))
    if args.teacher_filter != "none":
        summary.update({f"teacher_filter_{k}": report[k] for k in
                        ("mode", "margin", "flagged", "queries_with_flagged", "dropped", "kept_to_keep_one")})
        summary["teacher_filter_flagged_per_query_mean"] = round(report["flagged"] / max(1, n), 4)
    log.info("wrote %s: %s", out, summary)
    summary["teacher_filter_report"] = report      # per query counts and examples (not logged)
    return summary


def score_files(jobs: dict) -> tuple[dict, dict]:
    """:func:`add_reranker_score` on several files (``{name: ScoreArgs}``, as notebook 02 runs
    train and test) with one model load, on the first file that has pairs left to score.
    Returns ``(summaries, scored rows)``, both by name."""
    loaded = {}

    def shared(args):
        if "model" not in loaded:
            loaded["model"] = build_reranker(args)
        return loaded["model"]

    summaries = {name: add_reranker_score(a, load=shared) for name, a in jobs.items()}
    return summaries, {name: read_jsonl(a.output_file) for name, a in jobs.items()}


def parse_args(argv=None) -> ScoreArgs:
    p = dataclass_parser(ScoreArgs, __doc__, prog="python -m helpers.rerank.add_reranker_score", aliases=ALIASES,
                         choices={"teacher_filter": FILTER_MODES})
    p.add_argument("--use_bf16", type=str2bool, nargs="?", const=True, default=False,
                   help="Accepted for FlagEmbedding compatibility: the dtype follows the GPU (see --use_fp16).")
    ns = vars(p.parse_args(argv))
    ns.pop("use_bf16")
    return ScoreArgs(**ns)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    add_reranker_score(parse_args(argv))     # bad input: helpers.common.cli prints one 'error:' line


if __name__ == "__main__":
    from helpers.common.cli import run
    run(main)
