"""Pooling: the last real token under left, right or no padding."""
import pytest
import torch

from helpers.embed.pooling import last_token_pool


def test_last_token_pool_plain_tensors():
    h = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert torch.equal(last_token_pool(h, right), torch.stack([h[0, 1], h[1, 3]]))
    assert torch.equal(last_token_pool(h, left), torch.stack([h[0, 3], h[1, 3]]))


@pytest.mark.parametrize("side", ["left", "right"])
def test_last_token_under_padding_equals_unpadded(tiny, side):
    model, tok = tiny
    texts = ["a short one", "a much longer text that needs several more tokens than the first"]
    single = []
    with torch.no_grad():
        for t in texts:
            enc = tok(t, return_tensors="pt")
            single.append(model(**enc).last_hidden_state[0, -1])
        old = tok.padding_side
        tok.padding_side = side
        try:
            enc = tok(texts, return_tensors="pt", padding=True)
        finally:
            tok.padding_side = old
        batch = last_token_pool(model(**enc).last_hidden_state, enc["attention_mask"])
    for i in range(2):
        assert torch.allclose(batch[i], single[i], atol=1e-5), (side, i)
