"""Loading: the base model with a pad token, and the EOS rule (attribute, config key, never twice)."""
import json

import numpy as np

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


@pytest.mark.parametrize("cfg,want", [
    ({"embedding_dimension": 384, "pooling_mode": "mean", "include_prompt": True}, "mean"),      # sentence-transformers 5+
    ({"pooling_mode": ["cls"]}, "cls"),
    ({"pooling_mode": "lasttoken"}, "last_token"),
    ({"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
      "include_prompt": True}, "mean"),                                                           # earlier versions, ours
])
def test_read_pooling_reads_both_sentence_transformers_spellings(tmp_path, cfg, want):
    from helpers.embed.loading import read_pooling
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(cfg))
    assert read_pooling(tmp_path) == want


@pytest.mark.parametrize("cfg", [{"pooling_mode": "max"}, {"pooling_mode": ["mean", "max"]},
                                 {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True}, {}])
def test_a_pooling_we_do_not_have_is_an_error_not_cls(tmp_path, cfg):
    from helpers.embed.loading import read_pooling
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="is not one this embedder has"):
        read_pooling(tmp_path)
    assert read_pooling(tmp_path / "nothing") is None


def _tiny_adapter(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel
    from tests.fixtures.models import save_tiny_llama
    base = save_tiny_llama(tmp_path / "base")
    torch.manual_seed(3)
    lora = get_peft_model(AutoModel.from_pretrained(base), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(str(tmp_path / "lora_epoch_1"))
    return base, str(tmp_path / "lora_epoch_1"), lora


def test_an_adapter_kept_unmerged_embeds_exactly_as_training_evaluated_it(tmp_path):
    """Issue 26, item 6: the model evaluated and submitted is the computation chosen in training."""
    from peft import PeftModel
    base, adapter, trained = _tiny_adapter(tmp_path)
    args = EmbedderArgs(model_name_or_path=adapter, embedder_model_class="decoder-only-base", query_max_len=32,
                        passage_max_len=32)
    texts = ["Confuses area and perimeter", "Adds the denominators", "Thinks a square is not a rectangle"]
    _, tok = load_embedding_model(adapter, "decoder-only-base")
    during = Embedder(args, trained.eval(), tok, show_progress=False).encode_corpus(texts)
    kept, tok = load_embedding_model(adapter, "decoder-only-base", keep_last_adapter=True)
    assert isinstance(kept, PeftModel)
    assert np.array_equal(Embedder(args, kept, tok, show_progress=False).encode_corpus(texts), during)


def test_a_quantized_base_keeps_its_last_adapter_unmerged_and_a_trainer_can_ask_for_a_merge(tmp_path, monkeypatch):
    import transformers
    from peft import PeftModel
    from helpers.embed.loading import load_base_model
    base, adapter, _ = _tiny_adapter(tmp_path)
    real = transformers.AutoModel.from_pretrained

    def no_bnb(path, **kw):          # CPU: stand in for bitsandbytes, keep the rule under test
        kw.pop("quantization_config")
        return real(path, **kw)
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", no_bnb)
    assert isinstance(load_base_model(adapter, quantization_config=object()), PeftModel)
    assert not isinstance(load_base_model(adapter, quantization_config=object(), keep_last_adapter=False), PeftModel)
    monkeypatch.undo()
    assert not isinstance(load_base_model(adapter), PeftModel)       # full precision: merged, as before
