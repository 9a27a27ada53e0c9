"""A reranker's scorer and its loading: what the scoring stage (02) and the teacher trainer (02a) share.

A scorer turns a padded batch of (query, passage) pairs into one float score a pair,
``scorer(input_ids, attention_mask[, token_type_ids]) -> [N]``, and pads pairs as it expects them,
``scorer.inputs(pairs) -> dict`` (the pairs of ``layout.pairs(queries, passages)``):

- ``decoder-only-base``: :class:`helpers.rerank.paths.YesScorer`, the "Yes" logit at the last real
  token; pairs ``prefix + suffix`` (:class:`~helpers.rerank.inputs.DecoderLayout`) padded on the
  tokenizer's side with its pad id (else eos), to a multiple of 8. Its fast scoring paths
  (:class:`~helpers.rerank.paths.PlainPath`, :class:`~helpers.rerank.paths.PrefixPath`) are built on it.
- ``encoder-only-base``: :class:`CrossEncoderScorer`, the one logit of a sequence-classification
  head; pairs in the tokenizer's template (:class:`~helpers.rerank.inputs.EncoderLayout`), right
  padding, token type ids where the tokenizer has them.

:func:`load_pair_model` loads a model of either class with its tokenizer, pair layout, pad id / side
and "Yes" id (:class:`PairModel`; ``.scorer(model)`` gives the scorer of that model or of a
LoRA-wrapped copy of it). The scoring stage's rerankers (:mod:`helpers.rerank.reranker`) and the
teacher trainer (:mod:`helpers.train.train_reranker`) both load through it, so a teacher is trained
on exactly the pairs it is scored on. What differs by class is data (:data:`KINDS`): the Auto
class, peft's task type, whether a trained model is saved whole.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

import torch

from helpers.common.tensors import pad
from helpers.rerank.inputs import DecoderLayout, EncoderLayout
from helpers.rerank.paths import PlainPath, PrefixPath

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RerankerKind:
    """What a reranker class (FlagEmbedding's name) is made of."""
    name: str
    auto_class: str            # transformers' Auto class of the model
    task_type: Optional[str]   # peft's task type for LoRA (SEQ_CLS: the new head is trained in full)
    saved_whole: bool          # a trained model is saved whole (LoRA merged), not as an adapter


KINDS = {"decoder-only-base": RerankerKind("decoder-only-base", "AutoModelForCausalLM", None, False),
         "encoder-only-base": RerankerKind("encoder-only-base", "AutoModelForSequenceClassification", "SEQ_CLS", True)}
MODEL_CLASSES = tuple(KINDS)


def kind_of(model_class: str) -> RerankerKind:
    if model_class not in KINDS:
        raise ValueError(f"reranker_model_class {model_class!r} is not supported; "
                         f"choose one of {', '.join(MODEL_CLASSES)}")
    return KINDS[model_class]


def auto_class(kind: RerankerKind):
    import transformers
    return getattr(transformers, kind.auto_class)


def cross_encoder_inputs(items, tokenizer, pad_id: int, device="cpu") -> dict:
    """Padded model inputs of encoded pairs (``(ids, token_type_ids)`` of
    :meth:`helpers.rerank.inputs.EncoderLayout.encode_pair`); right padding. Training and scoring
    both build their batches here, so the teacher is scored on what it was trained on."""
    ids, mask = pad([it[0] for it in items], pad_id, "right")
    kw = dict(input_ids=ids.to(device), attention_mask=mask.to(device))
    if "token_type_ids" in tokenizer.model_input_names:
        kw["token_type_ids"] = pad([it[1] for it in items], 0, "right")[0].to(device)
    return kw


class CrossEncoderScorer:
    """The single logit of a sequence-classification head (``model``: plain or peft-wrapped)."""

    def __init__(self, model, tokenizer, pad_id: int):
        self.model, self.tokenizer, self.pad_id = model, tokenizer, int(pad_id)

    def inputs(self, pairs, device="cpu") -> dict:
        return cross_encoder_inputs(pairs, self.tokenizer, self.pad_id, device)

    def __call__(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        kw = dict(input_ids=input_ids, attention_mask=attention_mask)
        if token_type_ids is not None:
            kw["token_type_ids"] = token_type_ids
        return self.model(**kw).logits.view(-1).float()


def check_adapter(peft_adapter) -> None:
    """A LoRA adapter to merge must be a local folder with adapter_config.json: checked before the base
    model is resolved (a packaged GGUF base is converted then, which takes minutes)."""
    from pathlib import Path
    if peft_adapter and not (Path(peft_adapter) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"--peft_adapter {peft_adapter!r}: no adapter_config.json there "
                                "(a local LoRA adapter folder is needed; nothing is downloaded)")


def load_model(auto_cls, path, dtype, trust_remote_code, peft_adapter=None, device="cpu", **kw):
    """The scoring stage's model, in eval mode on ``device``: a CUDA device gets the weights straight
    from the file (no host copy); ``peft_adapter`` is merged in."""
    from helpers.common.models import placement_kwargs
    model = auto_cls.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code,
                                     use_safetensors=True, **kw, **placement_kwargs(device))
    if peft_adapter:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, peft_adapter).merge_and_unload()
    return model.eval()


@dataclass
class PairModel:
    """A loaded reranker: model, tokenizer, pair layout, and what its scorer pads with."""
    kind: RerankerKind
    path: str
    model: Any
    tokenizer: Any
    layout: Any                    # DecoderLayout | EncoderLayout
    pad_id: int
    side: str
    yes_id: Optional[int]
    device: str

    @property
    def decoder(self) -> bool:
        return self.kind.name == "decoder-only-base"

    def scorer(self, model=None, device=None, batch_size: int = 1, share_prefix: bool = False, **opts):
        """The scorer of ``model`` (default: the loaded one; a LoRA-wrapped one works as it is).
        A decoder's comes with its plain path (``run``), or with ``share_prefix`` the shared-prefix
        path, of ``batch_size`` pairs (``opts``: ``yes_only``, ``sort_by_length``)."""
        model = self.model if model is None else model
        if self.decoder:
            cls = PrefixPath if share_prefix else PlainPath
            return cls(model, device or self.device, self.yes_id, self.pad_id, self.side, batch_size, **opts)
        return CrossEncoderScorer(model, self.tokenizer, self.pad_id)


def load_pair_model(name_or_path, model_class="decoder-only-base", *, max_length: int, query_max_length=None,
                    prompt=None, padding_side=None, device="cpu", dtype=None, use_fp16=True,
                    trust_remote_code=False, peft_adapter=None, training=False, seed=None) -> PairModel:
    """Load a reranker of ``model_class`` as the scoring stage does: tokenizer, model, pair layout
    (same truncation, prompt), pad id and side, "Yes" id.

    ``training``: for the teacher trainer: a cross-encoder gets a one-logit head (a new one on a plain
    encoder, initialised after ``torch.manual_seed(seed)``), the model is loaded on the host and
    moved (the head's initialisation does not depend on the device) and is not put in eval mode;
    a cross-encoder's tokenizer must have a pad token.
    """
    from transformers import AutoTokenizer
    from helpers.common.devices import dtype_for
    from helpers.common.models import resolve_model
    kind = kind_of(model_class)
    check_adapter(peft_adapter)
    path = resolve_model(name_or_path)
    dtype = dtype_for(device, use_fp16) if dtype is None else dtype
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if training:
        if kind.name == "encoder-only-base" and tok.pad_token is None:
            raise ValueError(f"{path}: the tokenizer has no pad token; a cross-encoder needs one")
        if seed is not None:
            torch.manual_seed(seed)                 # a new classification head is drawn here
        if kind.task_type is None:
            model = auto_class(kind).from_pretrained(path, dtype=dtype, use_safetensors=True,
                                                     trust_remote_code=trust_remote_code)
        else:                                       # a cross-encoder: a one-logit head
            model = auto_class(kind).from_pretrained(path, num_labels=1, dtype=dtype, use_safetensors=True,
                                                     trust_remote_code=trust_remote_code)
        model = model.to(device)
    else:
        model = load_model(auto_class(kind), path, dtype, trust_remote_code, peft_adapter, device)
    if kind.name == "decoder-only-base":
        layout = DecoderLayout(tok, max_length, query_max_length, prompt)
        yes_id = tok("Yes", add_special_tokens=False)["input_ids"][0]
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        side = padding_side or getattr(tok, "padding_side", "left")
    else:
        n = getattr(model.config, "num_labels", 1)
        if n != 1:
            raise ValueError(f"encoder-only-base needs a classification head with one output (a "
                             f"relevance logit); {path} has num_labels={n}")
        layout = EncoderLayout(tok, max_length, query_max_length)
        yes_id, pad_id, side = None, tok.pad_token_id or 0, "right"
    return PairModel(kind, path, model, tok, layout, pad_id, side, yes_id, str(device))
