"""Without faiss (Kaggle's image has none; the wheels dataset ships it as optional), search falls
back to the exact torch search with one log line, and an explicit faiss backend says what to do."""
import logging

import numpy as np
import pytest

from helpers.embed import search as S


def test_no_faiss_falls_back_to_torch_with_one_log_line(monkeypatch, caplog):
    monkeypatch.setattr(S, "_faiss", lambda: None)
    monkeypatch.setattr(S, "_SAID_NO_FAISS", False)
    rng = np.random.default_rng(0)
    q, p = rng.normal(size=(5, 8)).astype(np.float32), rng.normal(size=(2587, 8)).astype(np.float32)
    with caplog.at_level(logging.INFO, logger="helpers.embed.search"):
        a = S.search(q, p, 25)
        b = S.search(q, p, 25)
    exact = S.search_torch(q, p, 25)
    assert all(np.array_equal(x, y) for x, y in zip(a, exact)) and np.array_equal(a[1], b[1])
    assert np.array_equal(a[1][:, 0], np.argmax(q @ p.T, axis=1))
    said = [r for r in caplog.records if "faiss is not installed" in r.getMessage()]
    assert len(said) == 1 and "exact torch search" in said[0].getMessage()
    with pytest.raises(ImportError, match="pip install faiss-cpu or faiss-gpu-cu12.*backend auto/torch"):
        S.search(q, p, 25, backend="faiss")
