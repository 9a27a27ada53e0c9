import math
import random

import numpy as np
import pytest
import torch

from helpers.eval.metrics import (ids_from_indices, map_at_k, mrr, per_query, rank_from_scores,
                             recall_at_k, retrieval_metrics)


# ---------- hand-computed cases ----------

def test_single_gold_is_reciprocal_rank_within_k():
    ranked = [["a", "b", "c"], ["x", "y", "z"], ["p", "q", "r"]]
    gold = [["a"], ["z"], ["nope"]]
    # 1/1, 1/3, 0
    assert map_at_k(ranked, gold, k=25) == pytest.approx((1 + 1 / 3 + 0) / 3)
    # with k=2 the second query's gold (rank 3) falls out
    assert map_at_k(ranked, gold, k=2) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, gold, k=1) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, gold, k=3) == pytest.approx(2 / 3)
    assert mrr(ranked, gold) == pytest.approx((1 + 1 / 3) / 3)
    assert mrr(ranked, gold, k=2) == pytest.approx(1 / 3)


def test_multi_gold_average_precision_hand_computed():
    # gold {a, c, e}; ranking a b c d e: hits at 1, 3, 5 -> (1/1 + 2/3 + 3/5) / 3
    ranked = [["a", "b", "c", "d", "e"]]
    gold = [["a", "c", "e"]]
    assert map_at_k(ranked, gold, k=5) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # k=3: hits at 1, 3 -> (1 + 2/3) / min(3, 3)
    assert map_at_k(ranked, gold, k=3) == pytest.approx((1 + 2 / 3) / 3)
    # k=2: hit at 1 -> 1 / min(3, 2)
    assert map_at_k(ranked, gold, k=2) == pytest.approx(1 / 2)
    assert recall_at_k(ranked, gold, k=3) == pytest.approx(2 / 3)
    assert mrr(ranked, gold) == 1.0


def test_retrieval_metrics_keys_and_values():
    ranked = [[str(i) for i in range(100)]] * 2
    gold = [["24"], ["60"]]  # ranks 25 and 61
    m = retrieval_metrics(ranked, gold)
    assert list(m) == ["MAP@25", "Recall@25", "Recall@50", "Recall@75", "Recall@100", "MRR"]
    assert m["MAP@25"] == pytest.approx((1 / 25) / 2)
    assert m["Recall@25"] == 0.5 and m["Recall@50"] == 0.5
    assert m["Recall@75"] == 1.0 and m["Recall@100"] == 1.0
    assert m["MRR"] == pytest.approx((1 / 25 + 1 / 61) / 2)
    assert all(type(v) is float for v in m.values())


def test_short_ranking_counts_missing_places_as_misses():
    assert recall_at_k([["a", "b"]], [["c"]], k=100) == 0.0
    assert map_at_k([["a", "b"]], [["b"]], k=25) == 0.5


def test_per_query_ranks():
    pq = per_query([["a", "b"], ["b", "a"], ["c", "d"]], [["b"], ["b"], ["a"]], ks=(1,))
    assert pq["rank"].tolist() == [2, 1, 0]
    assert pq["Recall@1"].tolist() == [0.0, 1.0, 0.0]


# ---------- bad input ----------

@pytest.mark.parametrize("ranked,gold,msg", [
    ([["a", "b", "a"]], [["a"]], "more than once"),
    ([["a"]], [["a"], ["b"]], "1 rankings for 2"),
    ([["a"]], [[]], "empty"),
    ([[1672, 3]], [["1672"]], "must be strings"),
    ([["a"]], [["a", "a"]], "more than once"),
    ([], [], "no queries"),
])
def test_bad_input(ranked, gold, msg):
    with pytest.raises(ValueError, match=msg):
        retrieval_metrics(ranked, gold)


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_bad_k(k):
    with pytest.raises(ValueError, match="k must be"):
        map_at_k([["a"]], [["a"]], k=k)


# ---------- independent brute-force reference on random rankings ----------

def _ref_ap(ranked, gold, k):
    """AP@k the textbook way: precision@i at every relevant i <= k, over min(|gold|, k)."""
    rel = [1 if x in gold else 0 for x in ranked[:k]]
    total = 0.0
    for i in range(len(rel)):
        if rel[i]:
            total += sum(rel[: i + 1]) / (i + 1)
    return total / min(len(gold), k)


def _ref_recall(ranked, gold, k):
    return sum(1 for g in gold if g in ranked[:k]) / len(gold)


def _ref_rr(ranked, gold):
    ranks = [ranked.index(g) + 1 for g in gold if g in ranked]
    return 1 / min(ranks) if ranks else 0.0


@pytest.mark.parametrize("seed", range(5))
def test_against_brute_force_reference(seed):
    rng = random.Random(seed)
    corpus = [f"m{i}" for i in range(60)]
    ranked, gold = [], []
    for _ in range(40):
        ranked.append(rng.sample(corpus, rng.randint(1, 60)))
        gold.append(rng.sample(corpus, rng.choice([1, 1, 1, 2, 3, 7, 30])))
    for k in (1, 3, 10, 25, 60):
        assert map_at_k(ranked, gold, k) == pytest.approx(
            np.mean([_ref_ap(r, set(g), k) for r, g in zip(ranked, gold)]), abs=1e-12)
        assert recall_at_k(ranked, gold, k) == pytest.approx(
            np.mean([_ref_recall(r, g, k) for r, g in zip(ranked, gold)]), abs=1e-12)
    assert mrr(ranked, gold) == pytest.approx(np.mean([_ref_rr(r, g) for r, g in zip(ranked, gold)]))


def _kaggle_apk(actual, predicted, k=25):
    """The usual Kaggle ``apk`` (ml_metrics), which MAP@25 on Eedi was scored with."""
    if len(predicted) > k:
        predicted = predicted[:k]
    score, num_hits = 0.0, 0.0
    for i, p in enumerate(predicted):
        if p in actual and p not in predicted[:i]:
            num_hits += 1.0
            score += num_hits / (i + 1.0)
    return score / min(len(actual), k)


def test_matches_kaggle_apk_on_one_gold_id():
    rng = random.Random(7)
    corpus = [str(i) for i in range(2587)]
    ranked = [rng.sample(corpus, 25) for _ in range(200)]
    gold = [[r[rng.randrange(25)]] if rng.random() < 0.6 else [rng.choice(corpus)] for r in ranked]
    ours = map_at_k(ranked, gold, 25)
    theirs = np.mean([_kaggle_apk(g, r, 25) for r, g in zip(ranked, gold)])
    assert ours == pytest.approx(theirs, abs=1e-12)
    # one gold id: AP@25 is 1/rank
    for r, g in zip(ranked[:20], gold[:20]):
        expect = 1 / (r.index(g[0]) + 1) if g[0] in r else 0.0
        assert map_at_k([r], [g], 25) == pytest.approx(expect)


# ---------- ranking from scores, tie rule ----------

def test_rank_from_scores_tie_rule():
    s = np.array([0.5, 0.9, 0.5, 0.9, 0.1, 0.5])
    # descending score, ties by ascending position
    assert rank_from_scores(s).tolist() == [1, 3, 0, 2, 5, 4]
    assert rank_from_scores(s, topk=3).tolist() == [1, 3, 0]
    assert rank_from_scores(s, topk=100).tolist() == [1, 3, 0, 2, 5, 4]
    # torch input and 2-D
    out = rank_from_scores(torch.tensor([[1.0, 1.0, 2.0], [0.0, 0.0, 0.0]]), topk=2)
    assert out.tolist() == [[2, 0], [0, 1]]


@pytest.mark.parametrize("seed", range(3))
def test_rank_from_scores_against_sorted_reference(seed):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 5, size=(8, 50)).astype(np.float32)  # many ties
    got = rank_from_scores(s, topk=20)
    for q in range(8):
        ref = sorted(range(50), key=lambda j: (-float(s[q, j]), j))[:20]
        assert got[q].tolist() == ref


def test_rank_from_scores_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        rank_from_scores(np.array([0.1, math.nan]))
    with pytest.raises(ValueError, match="shape"):
        rank_from_scores(np.zeros((2, 3, 4)))


def test_ids_from_indices():
    assert ids_from_indices([[2, 0]], ["a", "b", "c"]) == [["c", "a"]]
    with pytest.raises(ValueError, match="outside the corpus"):
        ids_from_indices([[0, 3]], ["a", "b", "c"])
    with pytest.raises(ValueError, match="outside the corpus"):
        ids_from_indices([[-1, 0]], ["a", "b", "c"])
