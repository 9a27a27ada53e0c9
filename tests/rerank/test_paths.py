"""Every decoder fast path equals the plain path (tiny random models, hand-made token ids)."""
import logging
import random

import pytest
import torch

from helpers.rerank.paths import PlainPath, PrefixPath
from tests.fixtures.models import tiny_decoder

YES, PAD = 7, 0


def make_inputs(seed=0, vocab=300):
    rnd = random.Random(seed)
    lens_q = (5, 9, 3, 14, 7)
    lens_p = ([3, 6], [2, 2, 7, 1, 4], [], [5, 1, 9], [8] * 7)   # one query with no passages,
    pre = [[2] + [rnd.randrange(3, vocab) for _ in range(n)] for n in lens_q]  # one with > batch
    suf = [[[rnd.randrange(3, vocab) for _ in range(n)] for n in ns] for ns in lens_p]
    return pre, suf


def maxdiff(a, b):
    assert [len(x) for x in a] == [len(x) for x in b]
    return max(abs(x - y) for ga, gb in zip(a, b) for x, y in zip(ga, gb))


def run(cls, model, side, batch=3, **kw):
    pre, suf = make_inputs()
    return cls(model, "cpu", YES, PAD, side, batch, **kw).run(pre, suf, progress=False)


@pytest.fixture(scope="module", params=["gemma3", "gemma2", "llama"])
def model(request):
    return tiny_decoder(request.param, sliding_window=64)


def test_yes_row_projection_equals_full_logits(model):
    pre, suf = make_inputs()
    ids = torch.tensor([pre[0] + suf[0][0]])
    mask = torch.ones_like(ids)
    full = model(input_ids=ids, attention_mask=mask).logits[0, -1, YES].item()
    path = PlainPath(model, "cpu", YES, PAD, "left", 3, yes_only=True)
    assert path.score_full(ids, mask).item() == pytest.approx(full, abs=1e-5)
    assert maxdiff(run(PlainPath, model, "left", yes_only=True, sort_by_length=False),
                   run(PlainPath, model, "left", yes_only=False, sort_by_length=False)) < 1e-5


def test_softcapping_applied_on_the_yes_row():
    model = tiny_decoder("gemma3", softcap=0.5)      # small cap: an uncapped score would differ
    assert maxdiff(run(PlainPath, model, "left", yes_only=True),
                   run(PlainPath, model, "left", yes_only=False, sort_by_length=False)) < 1e-5
    assert max(abs(x) for g in run(PlainPath, model, "left", yes_only=True) for x in g) <= 0.5


@pytest.mark.parametrize("side", ["left", "right"])
def test_left_and_right_padding_agree(model, side):
    ref = run(PlainPath, model, "left", yes_only=False, sort_by_length=False)
    assert maxdiff(ref, run(PlainPath, model, side, yes_only=False, sort_by_length=False)) < 1e-4


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("yes_only,sort", [(True, True), (False, False)])
@pytest.mark.parametrize("batch", [3, 8])
def test_shared_prefix_equals_plain(model, side, yes_only, sort, batch):
    """Queries of different lengths share a batch (batch 8), a query has more passages than
    the batch (7 > 3), another has none; left and right padding."""
    ref = run(PlainPath, model, "left", yes_only=False, sort_by_length=False)
    got = run(PrefixPath, model, side, batch=batch, yes_only=yes_only, sort_by_length=sort)
    assert maxdiff(ref, got) < 1e-4


def test_groups_pack_queries_up_to_batch():
    model = tiny_decoder("llama")
    pre, suf = make_inputs()
    path = PrefixPath(model, "cpu", YES, PAD, "left", 8, sort_by_length=True)
    groups = path._groups(pre, suf)
    assert sorted(g for grp in groups for g in grp) == [0, 1, 3, 4]          # query 2 has none
    assert any(len(grp) > 1 for grp in groups)                            # mixed lengths
    assert all(sum(len(suf[g]) for g in grp) <= 8 or len(grp) == 1 for grp in groups)


def test_beyond_sliding_window_falls_back_to_plain_and_still_equal(caplog):
    model = tiny_decoder("gemma3", sliding_window=12)                    # pairs reach 29 tokens
    ref = run(PlainPath, model, "left", yes_only=False, sort_by_length=False)
    with caplog.at_level(logging.DEBUG, logger="helpers.rerank.paths"):
        got = run(PrefixPath, model, "right", yes_only=True)
    assert "sliding window" in caplog.text
    assert maxdiff(ref, got) < 1e-4
    wide = tiny_decoder("gemma3", sliding_window=64)
    assert maxdiff(ref, run(PlainPath, wide, "left", yes_only=False)) > 1e-3   # the window matters
