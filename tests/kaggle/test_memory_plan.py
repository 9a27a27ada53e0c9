"""The memory plan (helpers/kaggle/memory_plan.py) against the shipped profile, the check every GPU
stage runs before it loads a model (faked total memory: no GPU here), and what the plan assumes of
the code: no key/value cache in embedding forwards, weights loaded straight onto the device."""
import json
from types import SimpleNamespace

import pytest
import torch
import yaml

from helpers.kaggle import memory_plan as mp
from helpers.kaggle.memory_plan import MemoryPlanError, check_stage

MISTRAL = {"model_type": "mistral", "hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 14336,
           "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000, "hidden_act": "silu",
           "torch_dtype": "float16", "tie_word_embeddings": False}
GEMMA2B = {"model_type": "gemma", "hidden_size": 2048, "num_hidden_layers": 18, "intermediate_size": 16384,
           "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 256000,
           "hidden_activation": "gelu_pytorch_tanh", "torch_dtype": "bfloat16"}


def folder(tmp_path, name, cfg):
    """A model folder with only config.json: the plan reads nothing else (no weights needed)."""
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    return str(d)


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(mp, "_SHOWN", set())
    monkeypatch.delenv(mp.SKIP_ENV, raising=False)


# ----------------------------------------------------------------------------- the plan
def test_every_gpu_step_of_the_shipped_profiles_fits_a_t4():
    rows = mp.shipped_rows() + mp.shipped_rows(mp.SUBMIT_PROFILE)
    assert {r[0] for r in rows} >= {"shipped kaggle_eedi: mine", "shipped kaggle_eedi: score",
                                    "shipped kaggle_eedi: train_kd", "shipped kaggle_eedi: compare",
                                    "shipped submit: submit"}
    bad = [(r[0], r[2], round(r[3], 1)) for r in rows if r[3] > mp.T4_USABLE_GIB]
    assert bad == [], bad
    # the rows are in the README table, with the 14.7 GiB header
    table = mp.markdown_table()
    assert "fits a T4 (14.7 GiB usable)?" in table and all(r[0] in table for r in rows)


def test_the_old_profile_settings_do_not_fit():
    a = mp.ARCHS["bge-en-icl (Mistral-7B)"]
    old_mine = dict(batch_size=32, query_max_len=512, passage_max_len=128, use_fp16=True)
    assert mp.stage_memory_gib("mine", old_mine, a) > 15.5            # 13.2 GiB of fp16 weights alone
    old_train = dict(per_device_train_batch_size=8, train_group_size=8, query_max_len=512, passage_max_len=128,
                     lora_rank=64, load_in_4bit=False, gradient_checkpointing=True, lora_dropout=0.1)
    assert mp.stage_memory_gib("train", old_train, a, world=2) > 20


def test_the_plans_terms():
    a = mp.ARCHS["bge-en-icl (Mistral-7B)"]
    args = (a, 8, 8, 512, 64, 64)
    t = mp.train_terms(*args, four_bit=True, lora_dropout=0.1, world=2)
    lora = mp.lora_params(a, 64)
    assert t["ddp_buckets"] == lora * 4 and "ddp_buckets" not in mp.train_terms(*args, four_bit=True, world=1)
    tokens = 8 * (512 + 8 * 64)
    assert t["lora_input_copies"] == tokens * (6 * a.hidden + a.intermediate) * 3       # 16-bit copy + dropout mask
    assert mp.train_terms(*args, lora_dropout=0.0)["lora_input_copies"] == tokens * (6 * a.hidden + a.intermediate) * 2
    no_ck = mp.train_terms(*args, checkpointing=False)
    assert no_ck["lora_input_copies"] == mp.train_terms(*args)["lora_input_copies"] * a.layers
    # QLoRA: embeddings and norms cast to fp32 (peft prepare_model_for_kbit_training); inference keeps 16-bit
    fp32_rest = (a.embed_params + a.norm_params) * 4
    assert t["weights"] == pytest.approx(a.linear_params * mp.FOUR_BIT_BYTES + fp32_rest)
    assert mp.weight_bytes(a, four_bit=True) < t["weights"]
    # the embedder keeps no key/value cache; the reranker's shared-prefix path does
    assert "kv_cache" not in mp.embed_terms(a, 32, 512) and "kv_cache" in mp.score_terms(a, 16, 424)
    assert mp.T4_USABLE_GIB == 14.7


def test_architecture_from_config_json(tmp_path):
    a = mp.arch_of(folder(tmp_path, "mistral", MISTRAL))
    ref = mp.ARCHS["bge-en-icl (Mistral-7B)"]
    assert (a.hidden, a.layers, a.intermediate, a.kv_hidden) == (4096, 32, 14336, 1024)
    assert a.params == pytest.approx(ref.params, rel=0.02)
    assert mp.stored_bytes(folder(tmp_path, "m2", MISTRAL)) == pytest.approx(a.params * 2)
    g = mp.arch_of(folder(tmp_path, "gemma", GEMMA2B), lm_head=True)           # tied: no extra head
    assert g.params == pytest.approx(2.5e9, rel=0.03) and g.kv_hidden == 256


# ----------------------------------------------------------------------------- the check
def test_check_does_nothing_on_cpu():
    assert check_stage("train", {"model_name_or_path": "/no/such/folder"}, ["cpu"]) is None
    assert check_stage("mine", {"embedder_name_or_path": "/no/such/folder"}, None) is None


def test_check_refuses_what_cannot_fit_and_prints_its_plan(tmp_path, monkeypatch):
    model = folder(tmp_path, "mistral", MISTRAL)
    monkeypatch.setattr(mp, "device_total_gib", lambda device: 14.74)           # a T4, as torch reports it
    lines = []
    old = dict(model_name_or_path=model, batch_size=32, query_max_len=512,
               passage_max_len=128)
    with pytest.raises(MemoryPlanError, match=r"mine: the memory plan estimates 1[56]\.\d GiB .* more than the "
                                              r"14\.7 GiB of cuda:0.*load_in_4bit true"):
        check_stage("mine", old, ["cuda:0", "cuda:1"], echo=lines.append)
    assert "does NOT fit" in lines[0] and "weights 13." in lines[0]
    plan = check_stage("mine", dict(old, load_in_4bit=True), "0,1", echo=lines.append)
    assert plan["fits"] and plan["usable_gib"] == 14.74 and "fits" in lines[-1] and "4-bit" in plan["settings"]
    # training: DDP on two GPUs, the old fp16 base refused with what would fit
    train = dict(model_name_or_path=model, per_device_train_batch_size=8, train_group_size=8, query_max_len=512,
                 passage_max_len=64, lora_rank=64, load_in_4bit=False, gradient_checkpointing=True)
    with pytest.raises(MemoryPlanError, match="train: .*DDP x 2.*load_in_4bit true"):
        check_stage("train", train, ["cuda:0", "cuda:1"], echo=lines.append)
    assert check_stage("train", dict(train, load_in_4bit=True), ["cuda:0", "cuda:1"], echo=lines.append)["fits"]
    monkeypatch.setenv(mp.SKIP_ENV, "1")                                        # the way round an estimate
    assert check_stage("train", train, ["cuda:0"], echo=lines.append)["fits"] is False


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
        em.Embedder(args.embedder_config())


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
    from helpers.embed.embedder import Embedder, EmbedderConfig
    from helpers.train.kd_finetune import encode
    spy = Spy()
    tok = AutoTokenizer.from_pretrained(resolve_model("demo:smollm2-135m-instruct"))
    e = Embedder(EmbedderConfig(model_name_or_path="demo:smollm2-135m-instruct", show_progress=False), spy, tok)
    e.encode_ids([[1, 2, 3], [4, 5]])
    ids = torch.tensor([[1, 2, 3], [4, 5, 0]])
    encode(spy, {"input_ids": ids, "attention_mask": (ids > 0).long()}, "last_token")
    encode(spy, {"input_ids": ids, "attention_mask": (ids > 0).long()}, "last_token", buckets=True, overhead=0)
    assert len(spy.calls) >= 3 and all(c.get("use_cache") is False for c in spy.calls)


def test_the_plain_reranker_path_keeps_no_kv_cache():
    from helpers.rerank.paths import PlainPath
    from tests.reranker_tiny import tiny_decoder
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
    from helpers.embed.embedder import load_embedding_model
    from helpers.rerank.reranker import _load_model
    from tests.factories import save_tiny_llama
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


def test_kaggle_profile_uses_four_bit_where_needed(repo_root):
    prof = yaml.safe_load(open(repo_root / "configs" / "kaggle_eedi.yaml"))
    steps = {s["name"]: s["parameters"] for s in prof["steps"]}
    assert steps["mine"]["load_in_4bit"] and steps["train_kd"]["load_in_4bit"] and steps["compare"]["load_in_4bit"]
    assert steps["train_kd"]["merge_every_epoch"] is False and steps["train_kd"]["merge_epoch"] == "best"


def test_the_plan_reads_every_spelling_of_the_embedder_block():
    a = mp.ARCHS["bge-en-icl (Mistral-7B)"]
    ours = dict(embedder_batch_size=32, query_max_len=512, passage_max_len=128)
    for other in (dict(batch_size=32, embedder_query_max_length=512, embedder_passage_max_length=128),
                  dict(embedder_batch_size=32, embedder_query_max_length=512, passage_max_len=128)):
        for stage in ("mine", "embed"):
            assert mp.stage_terms(stage, other, a) == mp.stage_terms(stage, ours, a), (stage, other)
    assert mp.stage_terms("mine", ours, a) != mp.stage_terms("mine", dict(ours, embedder_batch_size=8), a)
