"""Embedder: queries and passages -> token ids, length-sorted batches and the OOM retry, device
workers, the model's train/eval mode, and FlagEmbedding exactness."""
import json

import numpy as np
import pytest
import torch

from helpers.embed.args import EmbedderArgs
from helpers.embed.embedder import Embedder

SMOL = "demo:smollm2-135m-instruct"


def _embedder(tiny, **kw):
    model, tok = tiny
    cfg = EmbedderArgs(model_name_or_path=SMOL, query_instruction_for_retrieval="Find it.",
                       query_max_len=64, passage_max_len=32, **kw)
    return Embedder(cfg, model=model, tokenizer=tok, show_progress=False)


def test_batched_sorted_equals_one_by_one_and_order_kept(tiny):
    rows = [{"query": "x " * n} for n in (3, 30, 1, 12, 7)]
    e1 = _embedder(tiny, embedder_batch_size=1).encode_queries(rows)
    e3 = _embedder(tiny, embedder_batch_size=3).encode_queries(rows)
    assert e1.shape == (5, 32) and e1.dtype == np.float32
    np.testing.assert_allclose(e1, e3, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(e1, axis=1), 1, atol=1e-5)
    assert not np.allclose(e1[0], e1[1])


def test_oom_retries_at_three_quarters(tiny, monkeypatch):
    emb = _embedder(tiny, embedder_batch_size=8)
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
    e = _embedder(tiny, embedder_model_class="decoder-only-icl")
    a = e.tokenize_queries([{"query": "q", "prompt": "Row instruction."}])[0]
    b = e.tokenize_queries([{"query": "q"}])[0]
    assert "Row instruction." in e.tokenizer.decode(a) and "Find it." in e.tokenizer.decode(b)


def test_examples_prefix_in_icl_queries(tiny, tmp_path):
    ex = {"by_construct": {"c": [{"query_id": "o", "query": "Other Q", "response": "Some misconception"}]},
          "by_subject": {}, "all": []}
    p = tmp_path / "examples.json"
    p.write_text(json.dumps(ex))
    e = _embedder(tiny, examples_for_task=str(p))
    text = e.tokenizer.decode(e.tokenize_queries([{"query_id": "me", "query": "My Q", "construct_id": "c"}])[0])
    assert text == ("<instruct>Find it.\n<query>Other Q\n<response>Some misconception\n\n"
                    "<instruct>Find it.\n<query>My Q\n<response>")
    with pytest.raises(ValueError, match="decoder-only-icl"):
        EmbedderArgs(model_name_or_path=SMOL, embedder_model_class="decoder-only-base", examples_for_task=str(p))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="model_class"):
        EmbedderArgs(model_name_or_path=SMOL, embedder_model_class="decoder-only-m3")
    with pytest.raises(ValueError, match="last_token"):
        EmbedderArgs(model_name_or_path=SMOL, embedder_model_class="decoder-only-icl", pooling_method="cls")


def test_trainer_model_mode_restored(tiny):
    model, _ = tiny
    model.train()
    _embedder(tiny).encode_corpus(["a", "b"])
    assert model.training
    model.eval()


@pytest.mark.integration
def test_matches_flagembedding_icl_fixture(shared_dir):
    fx = shared_dir / "fixtures"
    z = np.load(fx / "flag_icl_smollm2_135m.npz")
    meta = json.loads((fx / "flag_icl_smollm2_135m.json").read_text())
    c = meta["config"]
    torch.set_num_threads(meta.get("threads", 2))
    cfg = EmbedderArgs(model_name_or_path=SMOL, embedder_model_class="decoder-only-icl",
                       pooling_method=c["pooling_method"],
                       query_instruction_for_retrieval=c["query_instruction_for_retrieval"],
                       query_instruction_format=c["query_instruction_format"],
                       query_max_len=c["query_max_length"], passage_max_len=c["passage_max_length"],
                       embedder_batch_size=c["batch_size"], devices="cpu", use_fp16=False)
    e = Embedder(cfg, show_progress=False)
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
    e = _embedder(tiny, embedder_batch_size=2)
    texts = [f"text {'x ' * i}" for i in range(9)]
    one = e.encode_corpus(texts)
    e.devices = ["cpu", "cpu"]         # two workers (threads) sharing the CPU replica
    np.testing.assert_allclose(e.encode_corpus(texts), one, atol=1e-5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_embedding_stops_with_model_batch_and_row(tiny, monkeypatch, bad):
    """Issue 27, item 3: torch.sort ranks NaN first, so one NaN passage would top every ranking."""
    emb = _embedder(tiny, embedder_batch_size=3)
    texts = [f"passage number {i}" + " more" * i for i in range(8)]
    bad_ids = emb.tokenize_passages([texts[5]])[0]
    real = Embedder._forward

    def poisoned(self, model, batch, device):
        out = real(self, model, batch, device)
        for j, ids in enumerate(batch):
            if ids == bad_ids:
                out[j, 1] = bad
        return out
    monkeypatch.setattr(Embedder, "_forward", poisoned)
    with pytest.raises(FloatingPointError) as e:
        emb.encode_corpus(texts)
    msg = str(e.value)
    assert "\n" not in msg
    assert SMOL in msg and "passages" in msg
    assert "batch 1 of 3" in msg                 # length-sorted: 7, 6, 5 | 4, 3, 2 | 1, 0
    assert "first bad row: passages[5]" in msg
