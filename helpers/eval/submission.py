r"""Kaggle submission file: ``QuestionId_Answer,MisconceptionId`` with 25 space-separated ids.

    python -m helpers.eval.submission --model_name_or_path M --embedder_model_class C \
        --test_csv test.csv --misconception_csv misconception_mapping.csv --output_file submission.csv

One row per wrong answer of every test question (``{QuestionId}_{letter}``, the correct letter
left out), ids ranked best first by the embedder. The file is checked before it is renamed into
place: header, row set (every wrong answer of every ``test.csv`` question; a
``sample_submission.csv`` whose rows differ, as it may in Kaggle's hidden rerun, is a warning),
exactly ``k`` distinct integer ids per row, every id in the misconception mapping.
"""
from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

from helpers.data.eedi import LETTERS, build_queries, corpus_rows, load_misconceptions, load_questions
from helpers.embed.args import EmbedderArgs
from helpers.eval.retrieval import rank_corpus
from helpers.common.cli import build_parser, canonical_flags
from helpers.common.devices import check_devices
from helpers.common.io_utils import InputError, atomic_path, check_writable
from helpers.common.models import resolve_model
from helpers.common.prompts import QUERY_TEMPLATE, RETRIEVAL_INSTRUCTION, unescape

log = logging.getLogger(__name__)

HEADER = ("QuestionId_Answer", "MisconceptionId")


def expected_row_ids(questions: Sequence[dict]) -> list[str]:
    """``{QuestionId}_{letter}`` for every wrong answer, in question then letter order."""
    return [f"{q['QuestionId']}_{x}" for q in questions for x in LETTERS if x != q["CorrectAnswer"]]


def format_submission(row_ids: Sequence[str], ranked_ids: Sequence[Sequence[str]], k: int = 25) -> str:
    """CSV text: header, then ``row_id,id1 id2 ... idk`` (the first ``k`` of each ranking)."""
    if len(row_ids) != len(ranked_ids):
        raise ValueError(f"format_submission: {len(row_ids)} row ids for {len(ranked_ids)} rankings")
    lines = [",".join(HEADER)]
    for rid, ranked in zip(row_ids, ranked_ids):
        top = [str(x) for x in list(ranked)[:k]]
        if len(top) < k:
            raise ValueError(f"format_submission: row {rid}: only {len(top)} ids, need {k} "
                             "(is the corpus smaller than k?)")
        lines.append(f"{rid},{' '.join(top)}")
    return "\n".join(lines) + "\n"


def parse_submission(text: str, path="submission.csv") -> tuple[list[str], list[tuple[int, str, str]]]:
    """-> (header, [(line, row id, ids cell)]) with shape errors naming the line."""
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        raise InputError(path, None, None, "empty file")
    out = []
    for i, r in enumerate(rows[1:], 2):
        if not r:
            continue
        if len(r) != 2:
            raise InputError(path, i, None, f"{len(r)} cells, expected 2")
        out.append((i, r[0], r[1]))
    return [h.strip() for h in rows[0]], out


def validate_submission(text: str, expected_rows: Sequence[str] | None = None,
                        corpus_ids=None, k: int = 25, path="submission.csv") -> None:
    """Raise :class:`InputError` naming the line and column of the first problem."""
    header, rows = parse_submission(text, path)
    if tuple(header) != HEADER:
        raise InputError(path, 1, None, f"header {','.join(header)!r}, expected {','.join(HEADER)!r}")
    seen = {}
    for line, rid, cell in rows:
        if rid in seen:
            raise InputError(path, line, HEADER[0], f"duplicate row {rid!r} (first at line {seen[rid]})")
        seen[rid] = line
        ids = cell.split(" ")
        if len(ids) != k:
            raise InputError(path, line, HEADER[1], f"{len(ids)} ids, expected exactly {k} separated by single spaces")
        for x in ids:
            if not (x.isascii() and x.isdigit()) or str(int(x)) != x:
                raise InputError(path, line, HEADER[1], f"{x!r} is not a plain non-negative integer id")
            if corpus_ids is not None and x not in corpus_ids:
                raise InputError(path, line, HEADER[1], f"id {x} is not in the misconception mapping")
        if len(set(ids)) != k:
            dup = next(x for j, x in enumerate(ids) if x in ids[:j])
            raise InputError(path, line, HEADER[1], f"id {dup} appears more than once")
    if expected_rows is not None:
        want, got = set(expected_rows), set(seen)
        if want != got:
            missing, extra = sorted(want - got), sorted(got - want)
            raise InputError(path, None, HEADER[0], f"row set differs: {len(missing)} missing "
                             f"({', '.join(missing[:5])}), {len(extra)} unexpected ({', '.join(extra[:5])})")


def sample_row_ids(sample_submission) -> list[str]:
    """Row ids of Kaggle's ``sample_submission.csv`` (its header checked too)."""
    path = Path(sample_submission)
    if not path.exists():
        raise InputError(path, None, None, "file does not exist")
    header, rows = parse_submission(path.read_text(encoding="utf-8-sig"), path)
    if tuple(header) != HEADER:
        raise InputError(path, 1, None, f"header {','.join(header)!r}, expected {','.join(HEADER)!r}")
    return [rid for _, rid, _ in rows]


def write_submission(path, row_ids: Sequence[str], ranked_ids: Sequence[Sequence[str]], k: int = 25,
                     expected_rows: Sequence[str] | None = None, corpus_ids=None) -> str:
    """Format, validate, then write atomically; returns the text. Nothing is written on error."""
    text = format_submission(row_ids, ranked_ids, k)
    validate_submission(text, expected_rows if expected_rows is not None else row_ids,
                        set(corpus_ids) if corpus_ids is not None else None, k, path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    log.info("wrote %d rows x %d ids -> %s", len(row_ids), k, path)
    return text


# ----------------------------------------------------------------------------- the stage
@dataclass(kw_only=True)
class SubmissionArgs(EmbedderArgs):
    test_csv: str = field(metadata={"help": "Kaggle test.csv (no misconception columns needed)"})
    misconception_csv: str = field(metadata={"help": "misconception_mapping.csv (the corpus)"})
    output_file: str = field(default="submission.csv", metadata={"help": "where the submission is written"})
    sample_submission: Optional[str] = field(default=None, metadata={
        "help": "Kaggle sample_submission.csv: its header is checked; rows that differ from test.csv's are a warning"})
    query_template: Optional[str] = field(default=None, metadata={
        "help": "query text template (as the data stage); None or empty: the built-in one"})
    query_instruction: Optional[str] = field(default=None, metadata={
        "help": "retrieval instruction stored as each query's prompt (as the data stage); None or empty: the built-in one"})
    k: int = field(default=25, metadata={"help": "misconception ids per row"})
    reranker: Union[dict, str, None] = field(default=None, metadata={
        "help": "the second stage: a block of helpers.eval.cascade.RerankStage settings (reranker_name_or_path, "
                "reranker_model_class, top_k, ...; a dict, JSON or a .json file); None or no reranker_name_or_path: "
                "the embedder's ranking is written"})

    def __post_init__(self):        # None means the built-in text, as in the data stage
        super().__post_init__()
        self.query_template = self.query_template or QUERY_TEMPLATE
        self.query_instruction = self.query_instruction or RETRIEVAL_INSTRUCTION
        if isinstance(self.reranker, str):
            from helpers.eval.cascade import read_block
            self.reranker = read_block(self.reranker) if self.reranker.strip() else None

    def rerank_stage(self):
        """The reranker block as a :class:`helpers.eval.cascade.RerankStage` (None: no second stage);
        devices, fp16 and remote code follow the embedder's unless the block sets them."""
        from helpers.eval.cascade import stage_from
        return stage_from(self.reranker, devices=self.devices, use_fp16=self.use_fp16,
                          trust_remote_code=self.trust_remote_code)


def make_submission(args: SubmissionArgs, embedder=None, reranker=None) -> dict:
    """Queries from test.csv (every wrong answer), rank all misconceptions, write the file.

    With a reranker block (``args.reranker``), the embedder's first ``top_k`` ids of each row are
    re-ordered by the reranker (:func:`helpers.eval.cascade.rerank_order`, the rule the evaluation
    measured); the embedder is released before the reranker loads, and the time estimate and the
    memory plan are printed first. ``embedder`` / ``reranker``: loaded ones to use instead.
    Returns ``{"rows", "output_file", "queries", "written_by"}`` (the query rows, for a look in the notebook).
    """
    args.devices = check_devices(args.devices, stage="submission")   # before anything is read or loaded
    t0 = time.time()
    if args.k < 1:
        raise ValueError(f"k must be at least 1, got {args.k}")
    stage = args.rerank_stage()
    if embedder is None:
        resolve_model(args.model_name_or_path)      # a missing model folder fails before any work
    if stage is not None and reranker is None:
        from helpers.rerank.args import check_model_args
        check_model_args(stage)                     # so does a missing reranker
    check_writable(args.output_file)
    mapping = load_misconceptions(args.misconception_csv)
    corpus = corpus_rows(mapping)
    if len(corpus) < args.k:
        raise InputError(args.misconception_csv, None, None,
                         f"{len(corpus)} misconceptions, fewer than the {args.k} ids each row needs")
    questions = load_questions(args.test_csv, labelled=False)
    rows = build_queries(questions, None, unescape(args.query_template), args.query_instruction,
                         labelled_only=False)
    row_ids = [r["query_id"] for r in rows]
    expected = expected_row_ids(questions)
    if args.sample_submission:
        sample = sample_row_ids(args.sample_submission)
        if set(sample) != set(expected):
            missing, extra = sorted(set(sample) - set(expected)), sorted(set(expected) - set(sample))
            # Kaggle's rerun swaps in the hidden test.csv; the output is checked against it (below)
            log.warning("%s: rows differ from the wrong answers of %s: %d only in the sample (%s), %d only "
                        "in test.csv (%s); the submission follows test.csv", args.sample_submission,
                        args.test_csv, len(missing), ", ".join(missing[:5]), len(extra), ", ".join(extra[:5]))
    log.info("submission: %d questions -> %d rows; %d misconceptions; model %s", len(questions), len(rows),
             len(corpus), args.model_name_or_path)
    if embedder is None:
        from helpers.embed.embedder import Embedder
        embedder = Embedder(args)
    q = embedder.encode_queries(rows)
    p = embedder.encode_corpus([c["text"] for c in corpus])
    ids = [c["id"] for c in corpus]
    depth = max(args.k, stage.top_k) if stage is not None else args.k
    ranked, scores = rank_corpus(q, p, ids, min(depth, len(ids)))
    written_by = f"embedder {args.model_name_or_path}"
    if stage is not None:
        del embedder, q, p                          # the embedder's memory goes before the reranker loads
        from helpers.eval.rerank_submit import rerank_rows
        ranked = rerank_rows(stage, [r["query"] for r in rows], ranked, scores,
                             {c["id"]: c["text"] for c in corpus}, reranker)
        written_by += f" -> reranker {stage.reranker_name_or_path} on its top {stage.top_k}"
    write_submission(args.output_file, row_ids, ranked, args.k, expected, ids)
    log.info("submission by %s written in %.1fs -> %s", written_by, time.time() - t0, args.output_file)
    return {"rows": len(row_ids), "output_file": str(args.output_file), "queries": rows, "written_by": written_by}


def submission_spec(specs: Sequence[dict], label: Optional[str] = None, results: Optional[dict] = None) -> dict:
    """The model spec (of :func:`helpers.eval.compare.model_specs`) that submits: the one labelled
    ``label``; ``"best"``: the highest MAP@25 of ``results`` (``{label: metrics}`` of
    :func:`helpers.eval.compare.evaluate_models`; ties: the earlier); None (or empty): the last one
    (the latest epoch)."""
    if not label:
        return specs[-1]
    if label == "best":
        if not results:
            raise ValueError("submission_model 'best' needs the evaluated models' metrics")
        best = max(specs, key=lambda s: (results[s["label"]]["MAP@25"], -specs.index(s)))
        log.info("submission_model best: %s (MAP@25 %.4f)", best["label"], results[best["label"]]["MAP@25"])
        return best
    spec = next((s for s in specs if s["label"] == label), None)
    if spec is None:
        raise ValueError(f"submission_model {label!r} is not one of {[s['label'] for s in specs]}")
    return spec


def submit_with(spec: dict, test_csv: str, output_file: str, misconception_csv: Optional[str] = None,
                sample_submission: Optional[str] = None, **common) -> dict:
    """:func:`make_submission` for one model spec of :func:`helpers.eval.compare.model_specs`
    (``path``, ``class``, optional flags); ``misconception_csv`` defaults to the file beside
    ``test_csv``; ``common`` holds embedder flags (a spec's own keys win)."""
    from dataclasses import fields as dc_fields
    names = {f.name for f in dc_fields(SubmissionArgs)}
    kw = {k: v for k, v in canonical_flags({**canonical_flags(common), **spec}).items() if k in names}
    mapping = misconception_csv or str(Path(test_csv).parent / "misconception_mapping.csv")
    return make_submission(SubmissionArgs(**{**kw, "model_name_or_path": spec["path"],
                                             "embedder_model_class": spec["class"], "test_csv": test_csv,
                                             "misconception_csv": mapping, "output_file": output_file,
                                             "sample_submission": sample_submission}))


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    a = build_parser(SubmissionArgs, __doc__).parse_args(argv)
    out = make_submission(SubmissionArgs(**vars(a)))
    print(f"{out['rows']} rows -> {out['output_file']}")


if __name__ == "__main__":
    from helpers.common.cli import run
    run(main)
