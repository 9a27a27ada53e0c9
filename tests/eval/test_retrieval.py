import numpy as np
import pytest

from helpers.eval.retrieval import evaluate_embeddings, metrics_rows, rank_corpus, score_rankings


# ---------- plain arrays ----------

def test_evaluate_embeddings_known_ranks_and_seen_split():
    p = np.eye(4, dtype=np.float32)
    # query 0 -> passage 2 best (gold rank 1); query 1 -> order 0,1,2,3 (gold "3" rank 4);
    # query 2: all scores tie -> corpus order (gold "1" rank 2)
    q = np.array([[0.1, 0.2, 0.9, 0.0], [0.4, 0.3, 0.2, 0.1], [0.5, 0.5, 0.5, 0.5]], dtype=np.float32)
    ids = ["0", "1", "2", "3"]
    rows = [{"query_id": "a", "pos_ids": ["2"]}, {"query_id": "b", "pos_ids": ["3"]},
            {"query_id": "c", "pos_ids": ["1"]}]
    train = [{"pos_ids": ["2"]}, {"pos_ids": ["1"]}]
    m = evaluate_embeddings(q, p, rows, ids, train_rows=train, ks=(1, 2, 4), map_k=25)
    assert m["n_queries"] == 3
    assert m["MAP@25"] == pytest.approx((1 + 1 / 4 + 1 / 2) / 3)
    assert (m["Recall@1"], m["Recall@2"], m["Recall@4"]) == pytest.approx((1 / 3, 2 / 3, 1.0))
    assert m["seen"]["n_queries"] == 2 and m["seen"]["MAP@25"] == pytest.approx(0.75)
    assert m["unseen"]["n_queries"] == 1 and m["unseen"]["MAP@25"] == pytest.approx(0.25)
    ranked, scores = rank_corpus(q, p, ids, topk=4)
    assert ranked[2] == ["0", "1", "2", "3"]                  # tie rule: corpus order
    assert scores.shape == (3, 4)


def test_score_rankings_rejects_id_absent_from_corpus():
    rows = [{"query_id": "a", "pos_ids": ["1"]}]
    with pytest.raises(ValueError, match="'9' is not in the corpus"):
        score_rankings([["1", "9"]], rows, corpus_ids=["1", "2"])
    with pytest.raises(ValueError, match="1 rankings for 2"):
        score_rankings([["1"]], rows * 2)


def test_empty_subset_has_only_count():
    m = score_rankings([["1", "2"]], [{"query_id": "a", "pos_ids": ["1"]}], train_rows=[{"pos_ids": ["1"]}],
                       ks=(1,))
    assert m["unseen"] == {"n_queries": 0}
    rows = metrics_rows(m, "x")
    assert [r["subset"] for r in rows] == ["all", "seen", "unseen"]
