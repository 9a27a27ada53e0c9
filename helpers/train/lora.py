"""What a trainer trains: LoRA adapters on the chosen linear layers, or every weight.

:func:`add_lora` wraps a model for training as :class:`helpers.train.args.TrainArgs` say (LoRA rank,
alpha, dropout, targets; ``use_lora`` False: full fine-tuning), with gradient checkpointing when
asked; :func:`resolve_target_modules` picks the targets by architecture when none are given.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import torch

log = logging.getLogger(__name__)

def trainable_count(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# Fused decoder projections (Phi-3: qkv_proj, gate_up_proj), adapted with DEFAULT_TARGETS when auto.
_FUSED_TARGETS = ("qkv_proj", "gate_up_proj")
# Modules never adapted when the targets are chosen automatically: output heads.
HEAD_NAMES = frozenset({"lm_head", "embed_out", "score", "classifier", "pooler", "cls", "qa_outputs",
                        "head", "heads", "output_projection"})


def _is_linear(m) -> bool:
    # nn.Linear, bitsandbytes' Linear4bit/Linear8bitLt, and GPT-2-style Conv1D (peft adapts all three)
    name = type(m).__name__
    return isinstance(m, torch.nn.Linear) or name.startswith("Linear") or name == "Conv1D"


def linear_names(model) -> set[str]:
    return {n.split(".")[-1] for n, m in model.named_modules() if _is_linear(m)}


def _peft_lora_mapping() -> dict:
    """peft's default LoRA targets by ``config.model_type`` ({} when this peft has none)."""
    for where in ("peft.utils.constants", "peft.utils", "peft.utils.other"):
        try:
            mod = __import__(where, fromlist=["_"])
        except ImportError:
            continue
        mapping = getattr(mod, "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING", None)
        if isinstance(mapping, dict):
            return mapping
    return {}


def _model_types(model) -> list[str]:
    cfg = getattr(model, "config", None)
    types = [getattr(cfg, "model_type", None)]
    get_text = getattr(cfg, "get_text_config", None)
    if callable(get_text):
        try:
            types.append(getattr(get_text(), "model_type", None))
        except Exception:   # configs without a text part
            pass
    return [t for t in dict.fromkeys(types) if t]


def resolve_target_modules(model, requested=None) -> tuple[list[str], str]:
    """LoRA target modules for ``model`` -> ``(targets, reason)``; ValueError when there are none.

    ``requested`` (names of linear layers, matched on the last part of a module's name): those
    present in the model, in the given order; ``"all-linear"`` alone means every linear layer but
    the output heads. Empty or None: automatic, by architecture: a decoder (a model with any of
    :data:`DEFAULT_TARGETS`) gets those it has; otherwise peft's defaults for its
    ``config.model_type`` (BERT: query, value); otherwise every linear layer but the output heads
    (:data:`HEAD_NAMES`; a head's leaf name shared with body layers, e.g. ``dense``, makes the
    targets full module names).
    """
    present = linear_names(model)
    if isinstance(requested, str):
        requested = requested.split(",")
    requested = list(dict.fromkeys(t.strip() for t in (requested or ()) if t and t.strip()))
    if requested == ["all-linear"]:
        return _all_linear_but_heads(model, "requested all-linear")
    if requested:
        targets = [t for t in requested if t in present]
        if not targets:
            raise ValueError(f"target_modules {requested}: none is a linear layer of this model; "
                             f"its linear layers are {sorted(present)}")
        missing = [t for t in requested if t not in present]
        return targets, "as requested" + (f"; not in this model: {missing}" if missing else "")
    decoder = [t for t in DEFAULT_TARGETS + _FUSED_TARGETS if t in present]
    if decoder and not getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return decoder, "auto: a decoder, the project's DEFAULT_TARGETS it has"
    types = _model_types(model)
    mapping = _peft_lora_mapping()
    for mt in types:
        known = mapping.get(mt) or ()
        targets = [t for t in ([known] if isinstance(known, str) else known) if t in present]
        if targets:
            return targets, f"auto: peft's LoRA default for model_type {mt!r}"
    return _all_linear_but_heads(model, f"auto: peft has no LoRA default for model_type "
                                        f"{'/'.join(types) or '?'}")


def _all_linear_but_heads(model, why: str) -> tuple[list[str], str]:
    linear = [n for n, m in model.named_modules() if _is_linear(m)]
    body = [n for n in linear if not HEAD_NAMES.intersection(n.split("."))]
    if not body:
        raise ValueError(f"no LoRA target ({why}): every linear layer of this model is an output "
                         f"head: {sorted(linear)}")
    leaves = list(dict.fromkeys(n.split(".")[-1] for n in body))
    in_body = set(body)
    head_leaves = {n.split(".")[-1] for n in linear if n not in in_body}
    why += ", so every linear layer but the output heads"
    if head_leaves.intersection(leaves):          # e.g. BERT-like "dense" in the layers and the pooler
        return body, why + " (full module names: a head shares a layer name)"
    return leaves, why


def prepare_4bit(model, gradient_checkpointing: bool):
    """A 4-bit (QLoRA) base made ready for LoRA: every base weight frozen, non-reentrant checkpointing
    with input gradients. Unlike peft's ``prepare_model_for_kbit_training`` the frozen norms and
    embeddings stay in their 16-bit dtype: its fp32 cast made the residual stream and every
    projection's output fp32 (Linear4bit returns its input dtype), about 1.5-2x the activation memory
    of the shipped 7B run, which then no longer fit a T4. RMSNorm computes in fp32 inside either way."""
    for p in model.parameters():
        p.requires_grad_(False)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model


def add_lora(model, args, task_type=None, gradient_checkpointing: Optional[bool] = None,
             layers: Optional[Sequence[int]] = None, fast: bool = True):
    """Wrap ``model`` with LoRA adapters as ``args`` (:class:`~helpers.train.args.TrainArgs`) say;
    LoRA weights in fp32.

    ``args.target_modules`` empty (or None): chosen by architecture (:func:`resolve_target_modules`),
    logged with the reason. ``args.use_lora`` False: no adapters, full fine-tuning (every weight
    trainable, in fp32; mixed precision comes from autocast as for LoRA). What a stage resolves
    itself is passed beside ``args``: ``gradient_checkpointing`` (None: ``args``'s, None there
    meaning off), ``layers`` (LoRA only in these layer indices), ``fast`` (the fused CPU LoRA
    forward/backward of :mod:`helpers.train.fast_lora`)."""
    gc = bool(args.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing)
    if not args.use_lora:
        return _full_finetuning(model, gc)
    from peft import LoraConfig, get_peft_model
    targets, reason = resolve_target_modules(model, args.target_modules)
    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_4bit(model, gc)
    elif gc:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if hasattr(getattr(model, "config", None), "use_cache"):
        model.config.use_cache = False
    lcfg = LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules=targets, task_type=task_type, bias="none",
                      layers_to_transform=list(layers) if layers else None)
    torch.manual_seed(args.seed)                # LoRA A matrices are drawn from the global RNG
    model = get_peft_model(model, lcfg)
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    n_fast = 0
    if fast:
        from helpers.train import fast_lora
        n_fast = fast_lora.enable(model)
    n_train = trainable_count(model)
    n_all = sum(p.numel() for p in model.parameters())
    log.info("LoRA r=%d alpha=%s on %s (%s): %d trainable of %d parameters (%.2f%%)%s", args.lora_rank,
             args.lora_alpha, _short(targets), reason, n_train, n_all, 100 * n_train / max(n_all, 1),
             f"; fused CPU forward/backward on {n_fast} layers" if n_fast else "")
    return model


def _full_finetuning(model, gradient_checkpointing: bool):
    if getattr(model, "is_loaded_in_4bit", False):
        raise ValueError("full fine-tuning (use_lora False) of a 4-bit base is not possible; use LoRA (QLoRA)")
    model.float()                                # fp32 master weights; autocast gives bf16/fp16 compute
    for p in model.parameters():
        p.requires_grad_(True)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(getattr(model, "config", None), "use_cache"):
        model.config.use_cache = False
    log.info("full fine-tuning: all %d parameters trainable (fp32)", sum(p.numel() for p in model.parameters()))
    return model


def _short(names, keep: int = 8) -> str:
    names = list(names)
    return str(names) if len(names) <= keep else f"{names[:keep]}... ({len(names)} modules)"
