"""Stage 00: Eedi CSVs -> corpus.jsonl, train/test_queries.jsonl, examples.json, stats.json.

    python -m helpers.data.prepare_data --input_dir DIR --output_dir DIR --split question \
        --test_fraction 0.2 --seed 42
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from helpers.common.cli import check_types, dataclass_parser
from helpers.data.eedi import build_queries, corpus_rows, load_misconceptions, load_questions
from helpers.common.io_utils import check_writable, remove_durably, write_json, write_jsonl
from helpers.common.prompts import QUERY_TEMPLATE, RETRIEVAL_INSTRUCTION, unescape
from helpers.data.splits import SPLITS, build_examples, split_queries, split_stats

log = logging.getLogger(__name__)
OUTPUT_FILES = ("corpus.jsonl", "train_queries.jsonl", "test_queries.jsonl", "examples.json", "stats.json")


@dataclass
class PrepareArgs:
    input_dir: str = field(metadata={"help": "folder with train.csv and misconception_mapping.csv"})
    output_dir: str = field(metadata={"help": "where the JSONL/JSON files are written"})
    split: str = field(default="question", metadata={"help": "question | construct | misconception"})
    test_fraction: float = field(default=0.2, metadata={"help": "share of groups (or queries) held out"})
    seed: int = field(default=42, metadata={"help": "seed of the split"})
    query_template: Optional[str] = field(default=None, metadata={
        "help": "query text template (str.format); None or empty: the built-in one (helpers.common.prompts.QUERY_TEMPLATE)"})
    query_instruction: Optional[str] = field(default=None, metadata={
        "help": "retrieval instruction stored as each row's prompt; None or empty: the built-in one "
                "(helpers.common.prompts.RETRIEVAL_INSTRUCTION)"})
    train_file: str = field(default="train.csv", metadata={"help": "name of the labelled CSV in input_dir"})
    mapping_file: str = field(default="misconception_mapping.csv", metadata={"help": "misconception names"})

    def __post_init__(self):        # None (a notebook's, a profile's) means the built-in text
        check_types(self)
        self.query_template = self.query_template or QUERY_TEMPLATE
        self.query_instruction = self.query_instruction or RETRIEVAL_INSTRUCTION


def prepare_data(args: PrepareArgs) -> dict:
    """Validate everything first, then write the five files atomically; returns the stats.

    ``stats.json`` is removed before and written after the other four: present means complete."""
    t0 = time.time()
    inp, out = Path(args.input_dir), Path(args.output_dir)
    check_writable(out / "stats.json")
    mapping = load_misconceptions(inp / args.mapping_file)
    questions = load_questions(inp / args.train_file, mapping, labelled=True)
    rows = build_queries(questions, mapping, unescape(args.query_template), args.query_instruction)
    if not rows:
        raise ValueError(f"{inp / args.train_file}: no wrong answer carries a misconception id")
    train, test = split_queries(rows, args.split, args.test_fraction, args.seed)
    stats = split_stats(train, test, len(mapping), args.split, args.seed)
    stats["questions"] = len(questions)
    # the input is good: remove the completeness marker first, so that a run killed while replacing
    # the files below (e.g. a re-prepare with a new seed) does not leave a mixed folder that looks whole
    remove_durably(out / "stats.json")
    write_jsonl(out / "corpus.jsonl", corpus_rows(mapping))
    write_jsonl(out / "train_queries.jsonl", train)
    write_jsonl(out / "test_queries.jsonl", test)
    write_json(out / "examples.json", build_examples(train))
    write_json(out / "stats.json", stats)   # written last: its presence means the folder is complete
    log.info("prepared %d train / %d test queries, %d misconceptions in %.1fs -> %s",
             len(train), len(test), len(mapping), time.time() - t0, out)
    return stats


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    a = dataclass_parser(PrepareArgs, __doc__, prog="python -m helpers.data.prepare_data",
                         choices={"split": SPLITS}).parse_args(argv)
    stats = prepare_data(PrepareArgs(**vars(a)))
    for k, v in stats.items():
        print(f"{k:42s} {v}")


if __name__ == "__main__":
    from helpers.common.cli import run
    run(main)
