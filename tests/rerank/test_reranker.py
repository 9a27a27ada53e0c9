"""LLMReranker / CrossEncoderReranker end to end on tiny random models saved in tmp_path."""
import logging
import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from helpers.rerank import paths as rerank_paths
from helpers.rerank.reranker import CrossEncoderReranker, LLMReranker, load_reranker

QS = ["how many sides has a hexagon", "what is 7 times 8, the student answered 54 after adding"]
PS = [["six", "eight sides because octagon", "a hexagon has six equal sides"],
      ["multiplies correctly", "adds instead of multiplying", "x", "confuses times tables"]]
PLAIN = dict(yes_only=False, sort_by_length=False, share_prefix=False)


@pytest.fixture(scope="module")
def gemma_dir(tiny_gemma_reranker_dir):          # tests/fixtures/models.py, saved once a session
    return tiny_gemma_reranker_dir


@pytest.fixture(scope="module")
def bert_dir(tiny_bert_cross_encoder_dir):
    return tiny_bert_cross_encoder_dir


@pytest.fixture(scope="module")
def tiny(gemma_dir):
    return LLMReranker(gemma_dir, prompt="Yes or no?", max_length=32, batch_size=3, devices="cpu",
                       show_progress=False)


@pytest.fixture
def r(tiny):
    """The module's reranker, reset to its defaults for each test."""
    tiny.fast = dict(yes_only=True, sort_by_length=True, share_prefix=True)
    tiny._checked, tiny.normalize, tiny.devices, tiny._replicas, tiny.batch_size = False, False, ["cpu"], None, 3
    return tiny


def flat(x):
    return [v for g in x for v in g]


def test_fast_paths_and_compute_score_match_plain(r):
    fast = r.score_groups(QS, PS)
    assert r.fast == dict(yes_only=True, sort_by_length=True, share_prefix=True)   # kept on
    r.fast = dict(PLAIN)
    plain = r.score_groups(QS, PS)
    assert max(abs(a - b) for a, b in zip(flat(fast), flat(plain))) < 1e-4
    pairs = [(q, p) for q, ps in zip(QS, PS) for p in ps][::-1]       # any order, interleaved
    assert r.compute_score(pairs) == pytest.approx(flat(plain)[::-1], abs=1e-4)


def test_normalize_applies_sigmoid(r):
    raw = flat(r.score_groups(QS, PS))
    r.normalize = True
    norm = flat(r.score_groups(QS, PS))
    assert norm == pytest.approx([1 / (1 + math.exp(-x)) for x in raw], abs=1e-6)


def test_two_workers_give_the_same_scores(r):
    one = r.score_groups(QS, PS)
    r.devices, r._replicas = ["cpu", "cpu"], None
    two = r.score_groups(QS, PS)
    assert len(r.replicas()) == 2 and r.replicas()[1][1] is not r.replicas()[0][1]
    assert flat(two) == pytest.approx(flat(one), abs=1e-5)


def test_two_devices_run_the_self_check_once_before_the_workers_and_share_nothing_it_changes(r, monkeypatch):
    """Two CPU "devices" (one worker thread each) score as one; the self-check runs once, in the
    caller's thread before the workers start, and passes its probe batch size instead of changing
    the reranker's (a worker scoring meanwhile would read it)."""
    import threading
    r.batch_size = 2
    r.fast = dict(PLAIN)
    one = r.score_groups(QS, PS)                           # the plain path on one device
    r.fast, r._checked = dict(yes_only=True, sort_by_length=True, share_prefix=True), False
    r.devices, r._replicas = ["cpu", "cpu"], None
    checks, seen = [], []
    real_check, real_scorer = LLMReranker._self_check, r.parts.scorer

    def check(self, *a, **kw):
        checks.append(threading.current_thread() is threading.main_thread())
        return real_check(self, *a, **kw)

    def scorer(*a, **kw):
        seen.append(r.batch_size)                          # the shared setting, whoever scores
        return real_scorer(*a, **kw)
    monkeypatch.setattr(LLMReranker, "_self_check", check)
    monkeypatch.setattr(r.parts, "scorer", scorer)
    two = r.score_groups(QS, PS)
    assert checks == [True]                                # once, before the threads
    assert seen and set(seen) == {2}                       # never the probe's 3
    assert flat(two) == pytest.approx(flat(one), abs=1e-4)
    assert r.score_groups(QS, PS) == two and checks == [True]     # checked once per reranker


def test_self_check_switches_off_a_wrong_fast_path(r, monkeypatch, caplog):
    real = rerank_paths.PrefixPath.run

    def broken(self, pre, suf, progress=True):
        return [[v + 1.0 for v in g] for g in real(self, pre, suf, progress)]
    monkeypatch.setattr(rerank_paths.PrefixPath, "run", broken)
    with caplog.at_level(logging.WARNING):
        got = r.score_groups(QS, PS)
    assert r.fast["share_prefix"] is False and r.fast["yes_only"] is True
    assert "share_prefix" in caplog.text and "falling back" in caplog.text
    monkeypatch.undo()
    r.fast = dict(PLAIN)
    assert flat(got) == pytest.approx(flat(r.score_groups(QS, PS)), abs=1e-4)


def test_peft_adapter_is_merged(gemma_dir, r, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(gemma_dir)
    lora = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(str(tmp_path / "adapter"))
    kw = dict(prompt="Yes or no?", max_length=32, batch_size=3, devices="cpu", show_progress=False)
    plain = flat(r.score_groups(QS, PS))
    tuned = flat(LLMReranker(gemma_dir, peft_adapter=str(tmp_path / "adapter"), **kw).score_groups(QS, PS))
    assert max(abs(a - b) for a, b in zip(plain, tuned)) > 1e-4


def test_cross_encoder_scores_equal_direct_forward(bert_dir):
    r = load_reranker(bert_dir, "encoder-only-base", max_length=64, batch_size=2, devices="cpu",
                      show_progress=False)
    assert isinstance(r, CrossEncoderReranker)
    got = r.score_groups(QS, PS)
    tok = AutoTokenizer.from_pretrained(bert_dir)
    model = AutoModelForSequenceClassification.from_pretrained(bert_dir).eval()
    for q, ps, g in zip(QS, PS, got):
        with torch.no_grad():
            enc = tok([q] * len(ps), ps, padding=True, return_tensors="pt")
            ref = model(**enc).logits.view(-1).tolist()
        assert g == pytest.approx(ref, abs=1e-5)


def test_unknown_class_and_bad_batch(gemma_dir):
    with pytest.raises(ValueError, match="batch_size"):
        LLMReranker(gemma_dir, batch_size=0)
    with pytest.raises(ValueError, match="decoder-only-base"):
        load_reranker(gemma_dir, "decoder-only-layerwise")
