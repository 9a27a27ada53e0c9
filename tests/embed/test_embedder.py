"""Embedder: pooling under padding, EOS rule, batching/OOM retry, and FlagEmbedding exactness."""
import json

import numpy as np
import pytest
import torch

from helpers.embed.embedder import (Embedder, EmbedderConfig, load_embedding_model, manual_eos, wants_eos)
from helpers.common.models import resolve_model
from helpers.embed.pooling import last_token_pool

SMOL = "demo:smollm2-135m-instruct"


@pytest.fixture(scope="module")
def tiny():
    """A 2-layer random Llama with the SmolLM2 tokenizer: real code paths, milliseconds."""
    from helpers.embed.embedder import _load_tokenizer
    from tests.fixtures.models import tiny_llama
    tok = _load_tokenizer(resolve_model(SMOL), False)
    model = tiny_llama(seed=0, vocab_size=len(tok), max_position_embeddings=512).eval()
    return model, tok


def _embedder(tiny, **kw):
    model, tok = tiny
    cfg = EmbedderConfig(model_name_or_path=SMOL, query_instruction_for_retrieval="Find it.",
                         query_max_length=64, passage_max_length=32, show_progress=False, **kw)
    return Embedder(cfg, model=model, tokenizer=tok)


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


def test_batched_sorted_equals_one_by_one_and_order_kept(tiny):
    rows = [{"query": "x " * n} for n in (3, 30, 1, 12, 7)]
    e1 = _embedder(tiny, batch_size=1).encode_queries(rows)
    e3 = _embedder(tiny, batch_size=3).encode_queries(rows)
    assert e1.shape == (5, 32) and e1.dtype == np.float32
    np.testing.assert_allclose(e1, e3, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(e1, axis=1), 1, atol=1e-5)
    assert not np.allclose(e1[0], e1[1])


def test_oom_retries_at_three_quarters(tiny, monkeypatch):
    emb = _embedder(tiny, batch_size=8)
    texts = [f"passage number {i}" for i in range(8)]
    want = emb.encode_corpus(texts)
    sizes = []
    real = Embedder._forward

    def flaky(self, model, batch, device):
        sizes.append(len(batch))
        if len(batch) > 4:
            raise torch.OutOfMemoryError("fake")
        return real(self, model, batch, device)
    monkeypatch.setattr(Embedder, "_forward", flaky)
    got = emb.encode_corpus(texts)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert sizes[:3] == [8, 6, 4]          # 8 -> 6 -> 4 (3/4 each time)


def test_row_prompt_used_for_the_query(tiny):
    e = _embedder(tiny, model_class="decoder-only-icl")
    a = e.tokenize_queries([{"query": "q", "prompt": "Row instruction."}])[0]
    b = e.tokenize_queries([{"query": "q"}])[0]
    assert "Row instruction." in e.tokenizer.decode(a) and "Find it." in e.tokenizer.decode(b)


def test_examples_prefix_in_icl_queries(tiny, tmp_path):
    ex = {"by_construct": {"c": [{"query_id": "o", "query": "Other Q", "response": "Some misconception"}]},
          "by_subject": {}, "all": []}
    p = tmp_path / "examples.json"
    p.write_text(json.dumps(ex))
    e = _embedder(tiny, add_examples_for_task=True, examples_file=str(p))
    text = e.tokenizer.decode(e.tokenize_queries([{"query_id": "me", "query": "My Q", "construct_id": "c"}])[0])
    assert text == ("<instruct>Find it.\n<query>Other Q\n<response>Some misconception\n\n"
                    "<instruct>Find it.\n<query>My Q\n<response>")
    with pytest.raises(ValueError, match="decoder-only-icl"):
        EmbedderConfig(model_class="decoder-only-base", add_examples_for_task=True, examples_file=str(p))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="model_class"):
        EmbedderConfig(model_class="decoder-only-m3")
    with pytest.raises(ValueError, match="last_token"):
        EmbedderConfig(model_class="decoder-only-icl", pooling_method="cls")


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
    e = Embedder(EmbedderConfig(SMOL, show_progress=False), model=model, tokenizer=t2)
    ids = e.tokenize_passages(["hello"])[0]
    assert ids[-1] == t2.eos_token_id and ids.count(t2.eos_token_id) == 1
    # a tokenizer that appends EOS itself: we must not add a second one
    t3 = AutoTokenizer.from_pretrained(folder)
    t3.add_eos_token = True
    assert t3("hello")["input_ids"][-1] == t3.eos_token_id
    assert wants_eos(t3) and not manual_eos(t3)
    e3 = Embedder(EmbedderConfig(SMOL, show_progress=False), model=model, tokenizer=t3)
    for ids in (e3.tokenize_passages(["hello"])[0], e3.tokenize_queries(["hello"])[0]):
        assert ids.count(t3.eos_token_id) == 1 and ids[-1] == t3.eos_token_id


def test_trainer_model_mode_restored(tiny):
    model, _ = tiny
    model.train()
    _embedder(tiny).encode_corpus(["a", "b"])
    assert model.training
    model.eval()


@pytest.mark.integration
def test_load_embedding_model_is_base_with_pad():
    model, tok = load_embedding_model(SMOL, "decoder-only-icl", "cpu")
    assert not hasattr(model, "lm_head") and model.dtype == torch.float32
    assert tok.pad_token_id is not None and tok.padding_side == "right"


@pytest.mark.integration
def test_matches_flagembedding_icl_fixture(shared_dir):
    fx = shared_dir / "fixtures"
    z = np.load(fx / "flag_icl_smollm2_135m.npz")
    meta = json.loads((fx / "flag_icl_smollm2_135m.json").read_text())
    c = meta["config"]
    torch.set_num_threads(meta.get("threads", 2))
    cfg = EmbedderConfig(SMOL, "decoder-only-icl", pooling_method=c["pooling_method"],
                         query_instruction_for_retrieval=c["query_instruction_for_retrieval"],
                         query_instruction_format=c["query_instruction_format"],
                         query_max_length=c["query_max_length"], passage_max_length=c["passage_max_length"],
                         batch_size=c["batch_size"], devices="cpu", use_fp16=False, show_progress=False)
    e = Embedder(cfg)
    rows = [{"query": str(q)} for q in z["query_text"]]
    # the exact ids FlagEmbedding fed the model: its input text, tokenized with special tokens
    assert e.tokenize_queries(rows) == [list(x) for x in e.tokenizer(list(map(str, z["query_input_text"])))["input_ids"]]
    q = e.encode_queries(rows)
    p = e.encode_corpus([str(t) for t in z["passage_text"]])
    q_cos = (q * z["query_emb"]).sum(1) / np.linalg.norm(z["query_emb"], axis=1)
    p_cos = (p * z["passage_emb"]).sum(1) / np.linalg.norm(z["passage_emb"], axis=1)
    assert q_cos.min() >= 0.9999, q_cos.min()
    assert p_cos.min() >= 0.9999, p_cos.min()


def test_several_device_workers_give_the_same_embeddings(tiny):
    e = _embedder(tiny, batch_size=2)
    texts = [f"text {'x ' * i}" for i in range(9)]
    one = e.encode_corpus(texts)
    e.devices = ["cpu", "cpu"]         # two workers (threads) sharing the CPU replica
    np.testing.assert_allclose(e.encode_corpus(texts), one, atol=1e-5)
