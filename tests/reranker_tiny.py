"""Tiny randomly initialised models for the reranker tests (no download, built in tmp_path)."""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

GEMMA_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def tiny_decoder(kind="gemma3", vocab=300, sliding_window=64, softcap=None, seed=0):
    """A small causal LM of the given family, random weights, fp32, eval mode."""
    from transformers import AutoModelForCausalLM, Gemma2Config, Gemma3TextConfig, LlamaConfig
    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                  num_key_value_heads=1, head_dim=8, pad_token_id=0, bos_token_id=2, eos_token_id=1)
    if kind == "gemma3":
        cfg = Gemma3TextConfig(num_hidden_layers=4, sliding_window=sliding_window,
                               layer_types=["sliding_attention", "sliding_attention",
                                            "full_attention", "sliding_attention"],
                               final_logit_softcapping=softcap, query_pre_attn_scalar=8, **common)
    elif kind == "gemma2":
        cfg = Gemma2Config(num_hidden_layers=2, sliding_window=sliding_window,
                           final_logit_softcapping=softcap if softcap is not None else 30.0,
                           query_pre_attn_scalar=8, **common)
    else:
        cfg = LlamaConfig(num_hidden_layers=2, **common)
    model = AutoModelForCausalLM.from_config(cfg).float().eval()
    with torch.no_grad():   # larger weights than the init, so scores spread and errors show
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model


def gemma_tokenizer_dir() -> str:
    from helpers.common.models import resolve_model
    return resolve_model("demo:gemma-3-270m")


def save_tiny_gemma_reranker(path, seed=0) -> str:
    """A tiny Gemma 3 with the real Gemma tokenizer (262k vocab) saved as an HF folder."""
    from transformers import AutoTokenizer
    path = Path(path)
    tok = AutoTokenizer.from_pretrained(gemma_tokenizer_dir())
    model = tiny_decoder("gemma3", vocab=len(tok), seed=seed)
    model.config.hidden_size  # noqa: B018
    model.save_pretrained(str(path), safe_serialization=True)
    tok.save_pretrained(str(path))
    return str(path)


def save_tiny_bert_cross_encoder(path, seed=0) -> str:
    """A tiny BertForSequenceClassification (one logit) with the MiniLM tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
    from helpers.common.models import resolve_model
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(resolve_model("demo:all-minilm-l6-v2"))
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, num_labels=1, max_position_embeddings=128)
    BertForSequenceClassification(cfg).eval().save_pretrained(str(path), safe_serialization=True)
    tok.save_pretrained(str(path))
    return str(path)
