"""The GPU memory plan's formulas (helpers/common/memory.py) and the check every GPU stage runs
before it loads a model (faked total memory: no GPU here). The reference architectures and the
filling of a profile step's defaults come from bench/memory_tables.py (the README tables)."""
import re
import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from helpers.common import memory as mp
from helpers.common.memory import MemoryPlanError, check_stage

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
from memory_tables import ARCHS, T4_USABLE_GIB, with_defaults  # noqa: E402

MISTRAL = {"model_type": "mistral", "hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 14336,
           "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000, "hidden_act": "silu",
           "torch_dtype": "float16", "tie_word_embeddings": False}
GEMMA2B = {"model_type": "gemma", "hidden_size": 2048, "num_hidden_layers": 18, "intermediate_size": 16384,
           "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 256000,
           "hidden_activation": "gelu_pytorch_tanh", "torch_dtype": "bfloat16"}
# a LoRA step's settings, spelled out (the formulas take no defaults: those live in KDArgs)
LORA = dict(rank=64, four_bit=False, checkpointing=True, lora_dropout=0.1, use_lora=True)


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


# ----------------------------------------------------------------------------- the formulas
def test_the_old_profile_settings_do_not_fit():
    a = ARCHS["bge-en-icl (Mistral-7B)"]
    old_mine = with_defaults("mine", dict(batch_size=32, query_max_len=512, passage_max_len=128, use_fp16=True))
    assert mp.stage_memory_gib("mine", old_mine, a) > 15.5            # 13.2 GiB of fp16 weights alone
    old_train = with_defaults("train", dict(
        per_device_train_batch_size=8, train_group_size=8, query_max_len=512, passage_max_len=128,
        lora_rank=64, load_in_4bit=False, gradient_checkpointing=True, lora_dropout=0.1))
    assert mp.stage_memory_gib("train", old_train, a, world=2) > 20


def test_the_plans_terms():
    a = ARCHS["bge-en-icl (Mistral-7B)"]
    args = (a, 8, 8, 512, 64)
    t = mp.train_terms(*args, **{**LORA, "four_bit": True, "lora_dropout": 0.1, "world": 2})
    lora = mp.lora_params(a, 64)
    assert t["ddp_buckets"] == lora * 4 and "ddp_buckets" not in mp.train_terms(*args, **{**LORA, "four_bit": True,
                                                                                           "world": 1})
    tokens = 8 * (512 + 8 * 64)
    assert t["lora_input_copies"] == tokens * (6 * a.hidden + a.intermediate) * 3       # 16-bit copy + dropout mask
    assert mp.train_terms(*args, **{**LORA, "lora_dropout": 0.0})["lora_input_copies"] == \
        tokens * (6 * a.hidden + a.intermediate) * 2
    no_ck = mp.train_terms(*args, **{**LORA, "checkpointing": False})
    assert no_ck["lora_input_copies"] == mp.train_terms(*args, **LORA)["lora_input_copies"] * a.layers
    # QLoRA: embeddings and norms stay 16-bit (helpers.train.lora.prepare_4bit), in training as in inference
    rest = (a.embed_params + a.norm_params) * 2
    assert t["weights"] == pytest.approx(a.linear_params * mp.FOUR_BIT_BYTES + rest)
    assert mp.weight_bytes(a, four_bit=True) == t["weights"]
    # the embedder keeps no key/value cache; the reranker's shared-prefix path does
    assert "kv_cache" not in mp.embed_terms(a, 32, 512, four_bit=False, fp16=True) \
        and "kv_cache" in mp.score_terms(a, 16, 424, four_bit=False, fp16=True, yes_only=True)
    assert T4_USABLE_GIB == 14.7


def test_one_activation_formula_for_the_plan_and_the_checkpointing_rule():
    """The plan's training activations and the trainer's auto checkpointing rule both come from
    layer_activation_bytes: 34 x tokens x hidden + 4 x tokens x intermediate bytes in 16-bit
    (sdpa); the rule adds eager attention's matrices."""
    from types import SimpleNamespace
    a = ARCHS["bge-en-icl (Mistral-7B)"]
    tokens = 8 * (256 + 8 * 64)
    layer = 34 * tokens * a.hidden + 4 * tokens * a.intermediate
    assert mp.layer_activation_bytes(tokens, a.hidden, a.intermediate) == layer
    no_ck = mp.train_terms(a, 8, 8, 256, 64, **{**LORA, "checkpointing": False})
    assert no_ck["activations"] == layer * a.layers
    assert mp.train_terms(a, 8, 8, 256, 64, **LORA)["activations"] == 2 * tokens * a.hidden * a.layers + layer
    model = SimpleNamespace(config=SimpleNamespace(hidden_size=a.hidden, num_hidden_layers=a.layers,
                                                   num_attention_heads=32, intermediate_size=a.intermediate))
    assert mp.activation_bytes(model, tokens, 0, 0, 2) == no_ck["activations"]          # sdpa-sized, 16-bit
    assert mp.activation_bytes(model, tokens, 256, 8, 2) == \
        no_ck["activations"] + a.layers * 2 * 3 * 32 * 256 * 256 * 8                    # + eager attention
    assert mp.activation_bytes(model, tokens, 0, 0, 4) == 2 * no_ck["activations"]      # fp32


def test_a_stage_needs_its_complete_parameters():
    a = ARCHS["bge-en-icl (Mistral-7B)"]
    with pytest.raises(KeyError, match=r"memory plan \(train\): parameter\(s\) lora_rank missing"):
        mp.stage_terms("train", {k: v for k, v in with_defaults("train", {}).items() if k != "lora_rank"}, a)
    with pytest.raises(KeyError, match=r"memory plan \(score\): .*reranker_batch_size"):
        mp.stage_terms("score", dict(reranker_max_length=384, use_fp16=True, yes_only=True), a)
    with pytest.raises(KeyError, match=r"memory plan \(mine\): .*embedder_batch_size"):
        mp.stage_terms("mine", with_defaults("mine", {}) | {"embedder_batch_size": None}, a)
    # gradient_checkpointing None is auto (on where needed): the plan counts it on
    auto = with_defaults("train", dict(gradient_checkpointing=None))
    assert mp.stage_terms("train", auto, a) == mp.stage_terms("train", dict(auto, gradient_checkpointing=True), a)


def test_the_defaults_are_the_stages_own():
    """A profile step filled by the bench script reads what the stage's dataclass holds."""
    from helpers.rerank.add_reranker_score import ScoreArgs
    from helpers.train.kd_finetune import KDArgs
    a = ARCHS["bge-en-icl (Mistral-7B)"]
    kd = KDArgs(model_name_or_path="m", train_data="t.jsonl", output_dir="o")
    assert mp.stage_terms("train", asdict(kd), a) == mp.stage_terms("train", with_defaults("train", {}), a)
    sc = ScoreArgs(input_file="i", output_file="o", reranker_name_or_path="r")
    assert mp.stage_terms("score", asdict(sc), a) == mp.stage_terms("score", with_defaults("score", {}), a)


def test_architecture_from_config_json(tmp_path):
    a = mp.arch_of(folder(tmp_path, "mistral", MISTRAL))
    ref = ARCHS["bge-en-icl (Mistral-7B)"]
    assert (a.hidden, a.layers, a.intermediate, a.kv_hidden) == (4096, 32, 14336, 1024)
    assert a.params == pytest.approx(ref.params, rel=0.02)
    assert mp.stored_bytes(folder(tmp_path, "m2", MISTRAL)) == pytest.approx(a.params * 2)
    g = mp.arch_of(folder(tmp_path, "gemma", GEMMA2B), lm_head=True)           # tied: no extra head
    assert g.params == pytest.approx(2.5e9, rel=0.03) and g.kv_hidden == 256


def test_the_plan_reads_every_spelling_of_the_embedder_block():
    a = ARCHS["bge-en-icl (Mistral-7B)"]
    ours = with_defaults("mine", dict(embedder_batch_size=32, query_max_len=512, passage_max_len=128))
    for other in (dict(batch_size=32, embedder_query_max_length=512, embedder_passage_max_length=128),
                  dict(embedder_batch_size=32, embedder_query_max_length=512, passage_max_len=128)):
        for stage in ("mine", "embed"):
            assert mp.stage_terms(stage, with_defaults(stage, other), a) == mp.stage_terms(stage, ours, a), \
                (stage, other)
    assert mp.stage_terms("mine", ours, a) != mp.stage_terms("mine", dict(ours, embedder_batch_size=8), a)


# ----------------------------------------------------------------------------- the check
def test_check_does_nothing_on_cpu():
    assert check_stage("train", {"model_name_or_path": "/no/such/folder"}, ["cpu"]) is None
    assert check_stage("mine", {"embedder_name_or_path": "/no/such/folder"}, None) is None


def test_check_refuses_what_cannot_fit_and_prints_its_plan(tmp_path, monkeypatch):
    model = folder(tmp_path, "mistral", MISTRAL)
    monkeypatch.setattr(mp, "device_total_gib", lambda device: 14.74)           # a T4, as torch reports it
    lines = []
    old = with_defaults("mine", dict(model_name_or_path=model, batch_size=32, query_max_len=512,
                                     passage_max_len=128))
    with pytest.raises(MemoryPlanError, match=r"mine: the memory plan estimates 1[56]\.\d GiB .* more than the "
                                              r"14\.7 GiB of cuda:0.*load_in_4bit true"):
        check_stage("mine", old, ["cuda:0", "cuda:1"], echo=lines.append)
    assert "does NOT fit" in lines[0] and "weights 13." in lines[0]
    plan = check_stage("mine", dict(old, load_in_4bit=True), "0,1", echo=lines.append)
    assert plan["fits"] and plan["usable_gib"] == 14.74 and "fits" in lines[-1] and "4-bit" in plan["settings"]
    # training: DDP on two GPUs, the old fp16 base refused with what would fit
    train = with_defaults("train", dict(
        model_name_or_path=model, per_device_train_batch_size=8, train_group_size=8, query_max_len=512,
        passage_max_len=64, lora_rank=64, load_in_4bit=False, gradient_checkpointing=True))
    with pytest.raises(MemoryPlanError, match="train: .*DDP x 2.*load_in_4bit true"):
        check_stage("train", train, ["cuda:0", "cuda:1"], echo=lines.append)
    assert check_stage("train", dict(train, load_in_4bit=True), ["cuda:0", "cuda:1"], echo=lines.append)["fits"]
    monkeypatch.setenv(mp.SKIP_ENV, "1")                                        # the way round an estimate
    assert check_stage("train", train, ["cuda:0"], echo=lines.append)["fits"] is False


def test_an_out_of_memory_error_says_the_plan_and_what_it_puts_lower(tmp_path):
    """Issue 26, item 5: a CUDA out-of-memory in training ends with the plan's numbers, not a bare error."""
    model = folder(tmp_path, "mistral", MISTRAL)
    train = with_defaults("train", dict(
        model_name_or_path=model, per_device_train_batch_size=8, train_group_size=8, query_max_len=512,
        passage_max_len=64, lora_rank=64, load_in_4bit=True, gradient_checkpointing=True))
    msg = mp.out_of_memory_advice("train", train, ["cuda:0", "cuda:1"], peak_gib=14.1)
    assert msg.startswith("train: CUDA out of memory. The memory plan estimated 12.")
    assert "DDP x 2" in msg and "peak allocated before the failure 14.1 GiB" in msg
    assert re.search(r"lower: per_device_train_batch_size [1-4]\b", msg)
