"""Seeded train/test splits of query rows and the in-context examples file.

``question``: whole questions go to test (80/20 by QuestionId, like the team's split).
``construct``: whole constructs go to test.
``misconception``: a share of misconceptions is held out entirely, so test has unseen ones.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

SPLITS = ("question", "construct", "misconception")


def _ordered_groups(keys: list[str], seed: int) -> list[str]:
    uniq = sorted(set(keys), key=lambda k: (len(k), k))     # numeric-looking ids in numeric order
    order = np.random.default_rng(seed).permutation(len(uniq))
    return [uniq[i] for i in order]


def split_queries(rows: list[dict], split: str = "question", test_fraction: float = 0.2,
                  seed: int = 42) -> tuple[list[dict], list[dict]]:
    """Return (train, test) rows in their original order."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} unknown; choose one of {', '.join(SPLITS)}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    key = {"question": lambda r: r["question_id"], "construct": lambda r: r["construct_id"],
           "misconception": lambda r: r["pos_ids"][0]}[split]
    groups = _ordered_groups([key(r) for r in rows], seed)
    if split == "misconception":
        # hold out misconceptions until the test side holds test_fraction of the queries
        size = defaultdict(int)
        for r in rows:
            size[key(r)] += 1
        held, n = set(), 0
        for g in groups:
            if n >= test_fraction * len(rows):
                break
            held.add(g)
            n += size[g]
    else:
        held = set(groups[:int(round(test_fraction * len(groups)))])
    test = [r for r in rows if key(r) in held]
    train = [r for r in rows if key(r) not in held]
    if not test:
        raise ValueError(f"split {split!r} with test_fraction {test_fraction} leaves the test split empty "
                         f"({len(groups)} groups): raise test_fraction or give more data")
    if not train:
        raise ValueError(f"split {split!r} with test_fraction {test_fraction} leaves the train split empty")
    return train, test


def build_examples(train_rows: list[dict]) -> dict:
    """In-context examples from the train split only: per construct, per subject, and all."""
    def ex(r):
        return {"query_id": r["query_id"], "query": r["query"], "response": r["pos"][0]}
    by_construct, by_subject = defaultdict(list), defaultdict(list)
    for r in train_rows:
        by_construct[r["construct_id"]].append(ex(r))
        by_subject[r["subject_id"]].append(ex(r))
    return {"by_construct": dict(sorted(by_construct.items())), "by_subject": dict(sorted(by_subject.items())),
            "all": [ex(r) for r in train_rows]}


def split_stats(train: list[dict], test: list[dict], corpus_size: int, split: str, seed: int) -> dict:
    train_m = {p for r in train for p in r["pos_ids"]}
    test_m = {p for r in test for p in r["pos_ids"]}
    unseen = test_m - train_m
    return {
        "split": split, "seed": seed,
        "corpus_misconceptions": corpus_size,
        "train_queries": len(train), "test_queries": len(test),
        "train_questions": len({r["question_id"] for r in train}),
        "test_questions": len({r["question_id"] for r in test}),
        "train_misconceptions": len(train_m), "test_misconceptions": len(test_m),
        "test_misconceptions_unseen_in_train": len(unseen),
        "test_queries_with_unseen_misconception": sum(1 for r in test if r["pos_ids"][0] in unseen),
        "corpus_misconceptions_never_used": corpus_size - len(train_m | test_m),
    }
