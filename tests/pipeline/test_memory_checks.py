"""Every GPU stage runs the memory plan's check (helpers.common.memory.check_stage) before it
loads a model or reads its input (faked devices and total memory: no GPU here), and what the plan
assumes of the code: no key/value cache in embedding forwards, weights loaded straight onto the
device."""
import json
from types import SimpleNamespace

import pytest
import torch

from helpers.common import memory as mp
from helpers.common.memory import MemoryPlanError
from tests.common.test_memory import GEMMA2B, MISTRAL, folder


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(mp, "_SHOWN", set())
    monkeypatch.delenv(mp.SKIP_ENV, raising=False)


def _cuda(monkeypatch, module, devices=("cuda:0",)):
    monkeypatch.setattr(module, "parse_devices", lambda d=None, *a: list(devices))
    monkeypatch.setattr(mp, "device_total_gib", lambda device: 14.74)


def test_kd_finetune_checks_before_it_loads_or_launches(tmp_path, monkeypatch):
    import helpers.train.kd_finetune as kf
    model = folder(tmp_path, "mistral", MISTRAL)
    _cuda(monkeypatch, kf, ("cuda:0", "cuda:1"))
    monkeypatch.setattr(kf, "launch", lambda *a, **k: pytest.fail("launched before the memory check"))
    monkeypatch.setattr(kf, "_train", lambda *a, **k: pytest.fail("trained before the memory check"))
    args = kf.KDArgs(model_name_or_path=model, train_data="t.jsonl", output_dir=str(tmp_path / "o"),
                     query_max_len=512, passage_max_len=128, load_in_4bit=False)
    with pytest.raises(MemoryPlanError, match="train: "):
        kf.kd_finetune(args)


def test_hn_mine_and_the_embedder_check_before_loading(tmp_path, monkeypatch):
    import helpers.embed.embedder as em
    import helpers.mine.hn_mine as hm
    model = folder(tmp_path, "mistral", MISTRAL)
    _cuda(monkeypatch, hm)
    _cuda(monkeypatch, em)
    monkeypatch.setattr(em, "load_embedding_model", lambda *a, **k: pytest.fail("loaded before the check"))
    args = hm.HnMineArgs(model_name_or_path=model, input_file=str(tmp_path / "missing.jsonl"),
                         output_file=str(tmp_path / "out.jsonl"), embedder_batch_size=32)
    with pytest.raises(MemoryPlanError, match="mine: "):                        # before reading the input
        hm.hn_mine(args)
    with pytest.raises(MemoryPlanError, match="mine: "):                        # the notebook's own Embedder
        em.Embedder(args)


def test_add_reranker_score_checks_before_loading(tmp_path, monkeypatch):
    import helpers.common.devices as dv
    import helpers.rerank.add_reranker_score as ars
    model = folder(tmp_path, "gemma", GEMMA2B)
    _cuda(monkeypatch, dv)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)     # one GPU for dv.check_devices
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(ars, "_check_model_args", lambda a: None)
    row = {"query": "q", "pos": ["p"], "neg": ["n"], "pos_ids": ["1"], "neg_ids": ["2"]}
    (tmp_path / "mined.jsonl").write_text(json.dumps(row) + "\n")
    args = ars.ScoreArgs(input_file=str(tmp_path / "mined.jsonl"), output_file=str(tmp_path / "scored.jsonl"),
                         reranker_name_or_path=model, reranker_batch_size=2048, devices=["cuda:0"])
    monkeypatch.setattr(ars, "build_reranker", lambda a: pytest.fail("loaded before the check"))
    with pytest.raises(MemoryPlanError, match="score: .*reranker_batch_size"):
        ars.add_reranker_score(args)
    assert not (tmp_path / "scored.jsonl").exists()


# ----------------------------------------------------------------------------- what the plan assumes
class Spy(torch.nn.Module):
    """A stand-in model: records the keywords of every forward."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(use_cache=True)
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, input_ids, attention_mask, return_dict=True, **kw):
        self.calls.append(kw)
        return SimpleNamespace(last_hidden_state=torch.ones(*input_ids.shape, 4))


def test_embedding_forwards_keep_no_kv_cache():
    from transformers import AutoTokenizer
    from helpers.common.models import resolve_model
    from helpers.embed.args import EmbedderArgs
    from helpers.embed.embedder import Embedder
    from helpers.train.kd_finetune import encode
    spy = Spy()
    tok = AutoTokenizer.from_pretrained(resolve_model("demo:smollm2-135m-instruct"))
    e = Embedder(EmbedderArgs(model_name_or_path="demo:smollm2-135m-instruct"), spy, tok, show_progress=False)
    e.encode_ids([[1, 2, 3], [4, 5]])
    ids = torch.tensor([[1, 2, 3], [4, 5, 0]])
    encode(spy, {"input_ids": ids, "attention_mask": (ids > 0).long()}, "last_token")
    encode(spy, {"input_ids": ids, "attention_mask": (ids > 0).long()}, "last_token", buckets=True, overhead=0)
    assert len(spy.calls) >= 3 and all(c.get("use_cache") is False for c in spy.calls)


def test_the_plain_reranker_path_keeps_no_kv_cache():
    from helpers.rerank.paths import PlainPath
    from tests.fixtures.models import tiny_decoder
    model = tiny_decoder("llama")
    seen = []
    model.model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw.get("use_cache")), with_kwargs=True)
    for yes_only in (True, False):
        PlainPath(model, "cpu", 5, 0, "left", 4, yes_only=yes_only).run([[2, 7, 8]], [[[9, 10], [11]]], progress=False)
    assert seen and all(v is False for v in seen)


def test_weights_load_straight_onto_the_gpu(tmp_path, monkeypatch):
    """No full host copy per process: from_pretrained gets device_map={"": device} on CUDA (and
    the model is not moved afterwards); CPU keeps the default load."""
    import transformers
    from helpers.common.models import placement_kwargs
    from helpers.embed.loading import load_embedding_model
    from helpers.rerank.reranker import _load_model
    from tests.fixtures.models import save_tiny_llama
    assert placement_kwargs("cpu") == {} and placement_kwargs("cuda:1")["device_map"] == {"": "cuda:1"}
    path = save_tiny_llama(tmp_path / "tiny")
    real = transformers.AutoModel.from_pretrained
    got = []

    def fake(p, **kw):
        got.append(kw)
        return real(p, dtype=torch.float32)                 # on CPU: there is no GPU here
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", fake)
    model, _ = load_embedding_model(path, "decoder-only-base", "cuda:0", torch.float16)
    assert got[-1]["device_map"] == {"": "cuda:0"} and next(model.parameters()).device.type == "cpu"
    load_embedding_model(path, "decoder-only-base", "cpu", torch.float32)
    assert "device_map" not in got[-1]

    class Auto:
        @staticmethod
        def from_pretrained(p, **kw):
            got.append(kw)
            return torch.nn.Linear(1, 1)
    _load_model(Auto, path, torch.float16, False, device="cuda:1")
    assert got[-1]["device_map"] == {"": "cuda:1"}
    _load_model(Auto, path, torch.float32, False)
    assert "device_map" not in got[-1]
