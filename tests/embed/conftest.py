"""The tiny decoder of the embed tests (a random 2-layer Llama with the SmolLM2 tokenizer)."""
import pytest

from helpers.common.models import resolve_model

SMOL = "demo:smollm2-135m-instruct"


@pytest.fixture(scope="module")
def tiny():
    """A 2-layer random Llama with the SmolLM2 tokenizer: real code paths, milliseconds."""
    from helpers.embed.loading import _load_tokenizer
    from tests.fixtures.models import tiny_llama
    tok = _load_tokenizer(resolve_model(SMOL), False)
    model = tiny_llama(seed=0, vocab_size=len(tok), max_position_embeddings=512).eval()
    return model, tok
