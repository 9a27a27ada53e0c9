"""The shared-prefix forward: the same last-token states and gradients as the plain forward."""
import logging

import pytest
import torch

from helpers.common.tensors import last_real_index, pad
from helpers.embed.forward import pooled_embeddings
from helpers.embed.prefix import PrefixSharing, common_prefix_len, shared_prefix_last_hidden
from tests.fixtures.models import tiny_bert, tiny_llama


def _llama(seed=0):
    return tiny_llama(seed=seed, max_position_embeddings=256).eval()


PREFIX = list(range(10, 30))                                  # 20 shared tokens


def _batch(tails=((5, 6, 7), (8,), (9, 10, 11, 12, 13, 14)), prefix=PREFIX):
    return pad([prefix + list(t) for t in tails], 0, "right")


def test_common_prefix_len_on_tensors():
    ids, mask = pad([[1, 2, 3, 4], [1, 2, 3, 9, 9], [1, 2, 5]], 0, "right")
    assert common_prefix_len(ids, mask) == 2
    ids, mask = pad([[1, 2, 3], [1, 2, 3, 4]], 0, "right")
    assert common_prefix_len(ids, mask) == 2            # every row keeps one token after the prefix
    ids, mask = pad([[7, 2], [1, 2]], 0, "right")
    assert common_prefix_len(ids, mask) == 0
    ids, mask = pad([[1, 2, 3]], 0, "right")
    assert common_prefix_len(ids, mask) == 0            # one row: nothing to share
    ids, mask = pad([[1, 2, 3], [1, 2, 3, 4]], 0, "left")
    assert common_prefix_len(ids, mask) == 0            # a padded column is never part of the prefix


def test_shared_prefix_equals_plain_forward():
    model = _llama()
    ids, mask = _batch()
    p = common_prefix_len(ids, mask)
    assert p == 20
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        plain = plain[torch.arange(3), last_real_index(mask)]
        shared = shared_prefix_last_hidden(model, ids, mask, p)
    torch.testing.assert_close(shared, plain, rtol=1e-5, atol=1e-5)


def test_shared_prefix_gradients_equal_plain_gradients():
    """Under autograd the expanded prefix cache sends every row's gradient back to the one prefix."""
    model = _llama()
    ids, mask = _batch()
    grads = []
    for share in (False, True):
        model.zero_grad()
        prefix = PrefixSharing(share, min_prefix=4)
        emb = pooled_embeddings(model, ids, mask, "last_token", prefix=prefix)
        (emb @ torch.linspace(-1, 1, emb.shape[1])).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        assert prefix.verdict is (True if share else None)
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-4, atol=1e-6, msg=n)


def test_short_prefix_single_row_and_checkpointing_run_plainly():
    model = _llama()
    s = PrefixSharing(True, min_prefix=16)
    ids, mask = _batch(prefix=PREFIX[:8])
    assert s.prefix_len(model, ids, mask) == 0          # 8 < 16 shared tokens
    ids, mask = _batch(tails=((1, 2),))
    assert s.prefix_len(model, ids, mask) == 0          # one row
    ids, mask = _batch()
    assert s.prefix_len(model, ids, mask) == 20
    model.gradient_checkpointing = True                 # as transformers marks the decoder stack
    assert s.prefix_len(model, ids, mask) == 0
    assert PrefixSharing(False).prefix_len(_llama(), ids, mask) == 0


def test_a_model_that_differs_is_switched_off_with_a_warning(caplog):
    """A bidirectional encoder: its prefix states depend on what follows, so the check fails."""
    bert = tiny_bert(seed=0, max_position_embeddings=64, initializer_range=0.3).eval()   # weights large enough to show it
    ids, mask = _batch()
    s = PrefixSharing(True)
    with caplog.at_level(logging.WARNING, logger="helpers.embed.prefix"):
        with torch.no_grad():
            got = pooled_embeddings(bert, ids, mask, "last_token", prefix=s)
            ref = pooled_embeddings(bert, ids, mask, "last_token")
    assert s.verdict is False and "switched off" in caplog.text
    torch.testing.assert_close(got, ref)                # the plain forward's embeddings
    assert s.last_hidden(bert, ids, mask) is None       # and never tried again


@pytest.mark.parametrize("train_mode", [False, True])
def test_check_restores_the_mode(train_mode):
    model = _llama().train(train_mode)
    ids, mask = _batch()
    PrefixSharing(True).last_hidden(model, ids, mask)
    assert model.training is train_mode
