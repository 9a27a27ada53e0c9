"""helpers.eval.paired: per-query vectors, paired bootstrap, pairing by id (no models, fast)."""
import random

import numpy as np
import pytest

from helpers.eval.metrics import per_query
from helpers.eval.paired import align, bootstrap_mean, paired_bootstrap, per_query_from_ranks, resample_means, verdict

CORPUS = [str(i) for i in range(30)]


def _ranking(gold: str, rank: int) -> list[str]:
    """A full ranking of CORPUS with ``gold`` at 1-based ``rank``."""
    rest = [c for c in CORPUS if c != gold]
    return rest[:rank - 1] + [gold] + rest[rank - 1:]


def _ap(rankings, golds):
    return {q: v for q, v in zip(golds, per_query(rankings, [[g] for g in golds.values()], ks=(25,))["MAP@25"])}


def test_per_query_from_ranks_matches_metrics():
    ranks = [1, 2, 25, 26, 100, 0, None]
    v = per_query_from_ranks(ranks)
    assert v["MAP@25"].tolist() == [1.0, 0.5, 1 / 25, 0.0, 0.0, 0.0, 0.0]
    assert v["Recall@25"].tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert v["Recall@100"].tolist() == [1, 1, 1, 1, 1, 0, 0]
    rk = [_ranking("3", r) for r in (1, 2, 25, 26, 30)]
    pq = per_query(rk, [["3"]] * 5, ks=(25,), map_k=25)
    np.testing.assert_array_equal(per_query_from_ranks(pq["rank"])["MAP@25"], pq["MAP@25"])


def test_identical_ap_gives_zero_difference():
    golds = {f"q{i}": str(i % 30) for i in range(40)}
    a = _ap([_ranking(g, 1 + i % 7) for i, g in enumerate(golds.values())], golds)
    # B ranks differently but puts every gold at the same rank: same AP on every query
    b_rankings = []
    for i, g in enumerate(golds.values()):
        r = _ranking(g, 1 + i % 7)
        r[-1], r[-2] = r[-2], r[-1]
        b_rankings.append(r)
    b = _ap(b_rankings, golds)
    r = paired_bootstrap(a, b)
    assert (r["mean_diff"], r["lo"], r["hi"]) == (0.0, 0.0, 0.0)
    assert (r["better"], r["worse"], r["same"], r["n"]) == (0.0, 0.0, 1.0, 40)
    assert r["significant"] is False and r["verdict"] == "no difference"


def test_constant_plus_half_gives_degenerate_interval():
    golds = {f"q{i}": str(i % 30) for i in range(50)}
    a = _ap([_ranking(g, 2) for g in golds.values()], golds)     # AP 0.5
    b = _ap([_ranking(g, 1) for g in golds.values()], golds)     # AP 1.0
    r = paired_bootstrap(a, b, n_resamples=500, seed=3)
    assert (r["mean_diff"], r["lo"], r["hi"]) == (0.5, 0.5, 0.5)
    assert (r["better"], r["worse"], r["same"]) == (1.0, 0.0, 0.0)
    assert r["significant"] is True and r["verdict"] == "better"
    back = paired_bootstrap(b, a, n_resamples=500, seed=3)
    assert (back["mean_diff"], back["lo"], back["hi"], back["worse"], back["verdict"]) == (-0.5, -0.5, -0.5, 1.0, "worse")


def test_two_queries_plus_minus_one_exact_distribution():
    # d = [+1, -1]: resample means are +1, 0, -1 with probabilities 1/4, 1/2, 1/4, so the 2.5% and
    # 97.5% quantiles of 1000 resamples are -1 and +1 (each tail holds about 250 of them).
    r = paired_bootstrap([0.0, 1.0], [1.0, 0.0], n_resamples=1000, seed=0)
    assert (r["mean_diff"], r["lo"], r["hi"]) == (0.0, -1.0, 1.0)
    means = resample_means(np.array([1.0, -1.0]), 1000, seed=0)
    assert set(means.tolist()) == {-1.0, 0.0, 1.0}
    assert 0.4 < (means == 0).mean() < 0.6


def test_half_better_half_worse_symmetric_and_seeded():
    n = 400
    a = np.zeros(n)
    b = np.where(np.arange(n) % 2 == 0, 0.5, -0.5)      # half +0.5, half -0.5: mean exactly 0
    r = paired_bootstrap(a, b, n_resamples=1000, seed=0)
    assert r["mean_diff"] == 0.0
    assert (r["better"], r["worse"], r["same"]) == (0.5, 0.5, 0.0)
    # bootstrap mean = 0.5 * (2K/n - 1), K ~ Binomial(n, 1/2): sd = 0.5 / sqrt(n) = 0.025, 95% ~ +-0.049
    assert r["lo"] < 0 < r["hi"] and r["verdict"] == "no difference" and r["significant"] is False
    assert abs(r["lo"] + r["hi"]) < 0.01
    assert 0.04 < r["hi"] < 0.06 and -0.06 < r["lo"] < -0.04
    assert paired_bootstrap(a, b, n_resamples=1000, seed=0) == r                  # same seed, same numbers
    other = paired_bootstrap(a, b, n_resamples=1000, seed=1)
    assert (other["lo"], other["hi"]) != (r["lo"], r["hi"])
    assert other["mean_diff"] == r["mean_diff"]


def test_half_better_by_half_is_significant():
    n = 400
    a = np.full(n, 0.5)
    b = np.where(np.arange(n) % 2 == 0, 1.0, 0.5)       # +0.5 on half the queries: mean +0.25
    r = paired_bootstrap(a, b)
    assert r["mean_diff"] == 0.25
    # 0.5 * K/n, K ~ Binomial(n, 1/2): sd = 0.0125, 95% ~ 0.25 +- 0.0245
    assert 0.22 < r["lo"] < 0.235 and 0.265 < r["hi"] < 0.28 and abs(r["lo"] + r["hi"] - 0.5) < 0.01
    assert (r["better"], r["worse"], r["same"], r["verdict"]) == (0.5, 0.0, 0.5, "better")


def test_pairing_by_id_ignores_row_order():
    rng = random.Random(0)
    ids = [f"{i}_{c}" for i in range(60) for c in "ABC"]
    a = {q: rng.choice([0.0, 1.0, 0.5, 1 / 3]) for q in ids}
    b = {q: rng.choice([0.0, 1.0, 0.5, 0.25]) for q in ids}
    r = paired_bootstrap(a, b, n_resamples=300, seed=7)
    shuffled = list(ids)
    rng.shuffle(shuffled)
    a2 = {q: a[q] for q in shuffled}
    rng.shuffle(shuffled)
    b2 = {q: b[q] for q in shuffled}
    assert paired_bootstrap(a2, b2, n_resamples=300, seed=7) == r
    # the same values in sorted-id order as plain vectors
    srt = sorted(ids)
    assert paired_bootstrap([a[q] for q in srt], [b[q] for q in srt], n_resamples=300, seed=7) == r


def test_mismatched_query_sets_name_the_models():
    a = {"1_A": 1.0, "1_B": 0.5, "2_C": 0.0}
    b = {"1_A": 1.0, "1_B": 0.5, "9_Z": 0.0}
    with pytest.raises(ValueError, match=r"cannot pair 'epoch 1' with 'base'.*1 only in 'epoch 1' \(e\.g\. '9_Z'\)"
                                         r".*1 only in 'base' \(e\.g\. '2_C'\)"):
        paired_bootstrap(a, b, label_a="base", label_b="epoch 1")
    with pytest.raises(ValueError, match="3 values for 'a' but 2 for 'b'"):
        paired_bootstrap([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="not one of each"):
        paired_bootstrap(a, [1.0, 0.5, 0.0])
    ids, va, vb = align({"b": 1, "a": 2}, {"a": 3, "b": 4})
    assert ids == ["a", "b"] and va.tolist() == [2, 1] and vb.tolist() == [3, 4]


def test_bad_arguments():
    with pytest.raises(ValueError, match="no queries"):
        paired_bootstrap([], [])
    with pytest.raises(ValueError, match="n_resamples"):
        paired_bootstrap([1.0], [1.0], n_resamples=0)
    with pytest.raises(ValueError, match="alpha"):
        paired_bootstrap([1.0], [1.0], alpha=1.5)
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_mean([1.0, float("nan")])


def test_bootstrap_mean_and_verdict():
    x = np.where(np.arange(100) < 30, 1.0, 0.0)
    r = bootstrap_mean(x, seed=0)
    assert r["mean"] == pytest.approx(0.3) and r["n"] == 100
    assert r["lo"] < 0.3 < r["hi"] and 0.2 < r["lo"] and r["hi"] < 0.4
    assert bootstrap_mean(np.full(5, 0.25)) == {"mean": 0.25, "lo": 0.25, "hi": 0.25, "n": 5}
    assert (verdict(0.01, 0.2), verdict(-0.2, -0.01), verdict(-0.1, 0.1), verdict(0.0, 0.1)) == (
        "better", "worse", "no difference", "no difference")


def test_too_few_queries_gives_no_verdict():
    """Issue 27, item 8: one query (or constant differences) gives a zero-width interval; below
    MIN_QUERIES the verdict is "too few queries", never better/worse."""
    from helpers.eval.paired import MIN_QUERIES
    assert MIN_QUERIES == 20
    for n in (1, 2, 19):
        r = paired_bootstrap(np.full(n, 0.5), np.full(n, 1.0), n_resamples=100)
        assert (r["lo"], r["hi"], r["n"]) == (0.5, 0.5, n)
        assert r["verdict"] == "too few queries" and r["significant"] is False and r["min_queries"] == 20
        back = paired_bootstrap(np.full(n, 1.0), np.full(n, 0.5), n_resamples=100)
        assert back["verdict"] == "too few queries" and back["significant"] is False
    r = paired_bootstrap(np.full(20, 0.5), np.full(20, 1.0), n_resamples=100)
    assert r["verdict"] == "better" and r["significant"] is True
    r = paired_bootstrap([0.5], [1.0], n_resamples=100, min_queries=1)
    assert r["verdict"] == "better"
    assert verdict(0.1, 0.2, n=5) == "too few queries" and verdict(0.1, 0.2, n=20) == "better"
