"""Loading: the base model with a pad token, and the EOS rule (attribute, config key, never twice)."""
import json

import pytest
import torch

from helpers.embed.args import EmbedderArgs
from helpers.embed.embedder import Embedder
from helpers.embed.loading import load_embedding_model, manual_eos, wants_eos

SMOL = "demo:smollm2-135m-instruct"


def test_eos_rule_attribute_config_key_and_never_twice(tiny, tmp_path):
    _, tok = tiny
    assert not wants_eos(tok) and not manual_eos(tok)          # stock SmolLM2: no EOS
    # a trainer-saved tokenizer_config.json with add_eos_token: true (transformers 5 ignores it)
    from transformers import AutoTokenizer
    folder = tmp_path / "tok"
    tok.save_pretrained(folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["add_eos_token"] = True
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    t2 = AutoTokenizer.from_pretrained(folder)
    assert wants_eos(t2) and manual_eos(t2)
    model, _ = tiny
    e = Embedder(EmbedderArgs(model_name_or_path=SMOL), model=model, tokenizer=t2, show_progress=False)
    ids = e.tokenize_passages(["hello"])[0]
    assert ids[-1] == t2.eos_token_id and ids.count(t2.eos_token_id) == 1
    # a tokenizer that appends EOS itself: we must not add a second one
    t3 = AutoTokenizer.from_pretrained(folder)
    t3.add_eos_token = True
    assert t3("hello")["input_ids"][-1] == t3.eos_token_id
    assert wants_eos(t3) and not manual_eos(t3)
    e3 = Embedder(EmbedderArgs(model_name_or_path=SMOL), model=model, tokenizer=t3, show_progress=False)
    for ids in (e3.tokenize_passages(["hello"])[0], e3.tokenize_queries(["hello"])[0]):
        assert ids.count(t3.eos_token_id) == 1 and ids[-1] == t3.eos_token_id


@pytest.mark.integration
def test_load_embedding_model_is_base_with_pad():
    model, tok = load_embedding_model(SMOL, "decoder-only-icl", "cpu")
    assert not hasattr(model, "lm_head") and model.dtype == torch.float32
    assert tok.pad_token_id is not None and tok.padding_side == "right"
