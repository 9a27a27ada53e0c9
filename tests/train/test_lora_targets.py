"""LoRA target modules: an explicit list wins; otherwise chosen by architecture (tiny models, no downloads)."""
import json
import logging
import sys

import pytest
import torch

from helpers.train.args import TrainArgs
from helpers.train.lora import DEFAULT_TARGETS, add_lora, resolve_target_modules
from tests.fixtures import models

ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]


SMALL = dict(vocab_size=64, num_attention_heads=2, max_position_embeddings=32)   # on top of the tiny size


def tiny_bert():
    return models.tiny_bert(seed=0, **SMALL)


def tiny_llama():
    return models.tiny_llama(seed=None, num_key_value_heads=1, **SMALL)


def tiny_qwen2_lm():
    return models.tiny_qwen2_lm(seed=None, num_key_value_heads=1, **SMALL)


def tiny_gemma3_lm():
    return models.tiny_gemma3_lm(seed=None, num_key_value_heads=1, head_dim=16, sliding_window=16, **SMALL)


def cfg(tmp_path, targets=()):
    return TrainArgs(output_dir=str(tmp_path), lora_rank=2, lora_alpha=4, lora_dropout=0.0,
                     target_modules=targets, gradient_checkpointing=False, show_progress=False)


def lora_layers(model) -> set[str]:
    return {n.split(".")[-1] for n, m in model.named_modules() if hasattr(m, "lora_A")}


def test_bert_auto_is_peft_default_query_value(tmp_path, caplog):
    targets, why = resolve_target_modules(tiny_bert(), None)
    assert targets == ["query", "value"] and "peft" in why and "'bert'" in why
    assert resolve_target_modules(tiny_bert(), ())[0] == targets        # what kd_finetune passes
    with caplog.at_level(logging.INFO, logger="helpers.train.lora"):
        m = add_lora(tiny_bert(), cfg(tmp_path))
    assert lora_layers(m) == {"query", "value"}
    lines = [r.getMessage() for r in caplog.records if "LoRA" in r.getMessage()]
    assert len(lines) == 1 and "['query', 'value']" in lines[0] and "model_type 'bert'" in lines[0]


@pytest.mark.parametrize("build", [tiny_llama, tiny_qwen2_lm])
def test_decoder_auto_is_default_targets(build, tmp_path):
    targets, why = resolve_target_modules(build(), ())
    assert targets == list(DEFAULT_TARGETS) and "decoder" in why
    m = add_lora(build(), cfg(tmp_path))
    assert lora_layers(m) == set(DEFAULT_TARGETS)       # never lm_head


def test_gemma3_reranker_auto_and_train_reranker_default(tmp_path):
    """Auto would add gate/up/down to the reranker's attention-only LoRA: train_reranker keeps
    its explicit default, so the shipped demo teacher trains as before."""
    from helpers.train.train_reranker import RerankerTrainArgs
    auto, _ = resolve_target_modules(tiny_gemma3_lm(), None)
    assert set(ATTN) <= set(auto) and auto == list(DEFAULT_TARGETS)
    default = RerankerTrainArgs().target_modules
    assert resolve_target_modules(tiny_gemma3_lm(), default.split(","))[0] == ATTN


def test_explicit_list_wins_and_fails_clearly(tmp_path):
    targets, why = resolve_target_modules(tiny_bert(), ("key", "dense", "q_proj"))
    assert targets == ["key", "dense"] and "as requested" in why and "q_proj" in why
    assert resolve_target_modules(tiny_llama(), "q_proj,v_proj")[0] == ["q_proj", "v_proj"]
    with pytest.raises(ValueError, match=r"none is a linear layer.*'dense'.*'query'"):
        add_lora(tiny_bert(), cfg(tmp_path, ("q_proj", "gate_proj")))


def test_without_a_peft_default_all_linear_but_heads(tmp_path, monkeypatch):
    import helpers.train.lora as tr
    monkeypatch.setattr(tr, "_peft_lora_mapping", lambda: {})
    targets, why = resolve_target_modules(tiny_bert(), None)
    # "dense" is also the pooler's name: full module names, the pooler left out
    assert "pooler.dense" not in targets and not any("pooler" in t for t in targets)
    assert {t.split(".")[-1] for t in targets} == {"query", "key", "value", "dense"}
    assert "output heads" in why
    m = add_lora(tiny_bert(), cfg(tmp_path, ()))
    adapted = {n for n, mod in m.named_modules() if hasattr(mod, "lora_A")}
    assert len(adapted) == 2 * 6 and not any("pooler" in n for n in adapted)

    class Plain(torch.nn.Module):                 # no config at all, an lm_head-like output
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.lm_head = (torch.nn.Linear(4, 4) for _ in range(3))
    assert resolve_target_modules(Plain(), None)[0] == ["fc1", "fc2"]
    assert resolve_target_modules(Plain(), ["all-linear"])[0] == ["fc1", "fc2"]


def test_peft_mapping_absent_from_this_peft(monkeypatch):
    from helpers.train.lora import _peft_lora_mapping
    assert _peft_lora_mapping().get("bert") in (["query", "value"], ("query", "value"))
    for mod in ("peft.utils.constants", "peft.utils", "peft.utils.other"):
        monkeypatch.setitem(sys.modules, mod, None)           # import fails as in a peft without it
    assert _peft_lora_mapping() == {}
    targets, _ = resolve_target_modules(tiny_bert(), None)
    assert "pooler.dense" not in targets and any(t.endswith("query") for t in targets)


def test_real_minilm_auto_is_query_value():
    from transformers import AutoConfig, AutoModel

    from helpers.common.models import resolve_model
    try:
        path = resolve_model("demo:all-minilm-l6-v2")
    except ModuleNotFoundError as e:
        pytest.skip(str(e))
    with torch.device("meta"):                    # the architecture only, no weights
        m = AutoModel.from_config(AutoConfig.from_pretrained(path))
    assert resolve_target_modules(m, None)[0] == ["query", "value"]


@pytest.mark.integration
def test_kd_finetune_minilm_with_auto_targets(tmp_path):
    """The encoder student gets past LoRA setup with target_modules None: one epoch of one step."""
    from helpers.train.kd_finetune import KDArgs, kd_finetune
    from helpers.common.models import resolve_model
    try:
        resolve_model("demo:all-minilm-l6-v2")
    except ModuleNotFoundError as e:
        pytest.skip(str(e))
    words = "apple river stone cloud maple tiger violet copper".split()
    corpus = [{"id": str(i), "text": f"{w} misconception"} for i, w in enumerate(words)]
    rows = [{"query_id": f"q{k}", "query": f"question about {words[k]}", "pos": [corpus[k]["text"]],
             "pos_ids": [str(k)], "neg": [corpus[(k + j) % 8]["text"] for j in (1, 2, 3)],
             "neg_ids": [str((k + j) % 8) for j in (1, 2, 3)], "pos_scores": [3.0], "neg_scores": [1.0, 0.5, 0.0]}
            for k in range(4)]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in corpus))
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "kd"
    metrics = kd_finetune(KDArgs(
        model_name_or_path="demo:all-minilm-l6-v2", embedder_model_class="encoder-only-base",
        train_data=str(tmp_path / "train.jsonl"), eval_data=str(tmp_path / "train.jsonl"),
        corpus_file=str(tmp_path / "corpus.jsonl"), output_dir=str(out), num_train_epochs=1,
        per_device_train_batch_size=4, train_group_size=4, use_lora=True, lora_rank=4, lora_alpha=8, target_modules=None,
        query_max_len=16, passage_max_len=16, gradient_checkpointing=False, devices="cpu",
        show_progress=False, embedder_batch_size=8))
    assert [r["global_step"] for r in metrics] == [1] and "MAP@25" in metrics[0]
    adapter = json.loads((out / "lora_epoch_1" / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == ["query", "value"]
    assert (out / "merged_model_lora_epoch_1" / "model.safetensors").exists()


def test_a_4bit_base_keeps_its_16_bit_norms_and_embeddings_under_lora():
    """Issue 26, item 5: peft's prepare_model_for_kbit_training cast them to fp32 (and the residual stream
    with them: ~1.5-2x the activation memory the plan counted, 16.7 GiB of a 14.7 GiB T4)."""
    from helpers.train.args import TrainArgs
    from helpers.train.lora import add_lora
    from tests.fixtures.models import tiny_llama
    model = tiny_llama().to(torch.float16)
    model.is_loaded_in_4bit = True          # what bitsandbytes sets; the rule under test needs no GPU
    lora = add_lora(model, TrainArgs(lora_rank=4, lora_alpha=8, target_modules="q_proj,v_proj",
                                     gradient_checkpointing=True), gradient_checkpointing=True)
    frozen = {n: p.dtype for n, p in lora.named_parameters() if not p.requires_grad}
    assert frozen and set(frozen.values()) == {torch.float16}
    assert all(p.dtype == torch.float32 for p in lora.parameters() if p.requires_grad)   # the LoRA weights
    assert lora.base_model.model.is_gradient_checkpointing
