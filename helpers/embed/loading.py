"""Loading an embedding model and its tokenizer, and what a model folder says about embedding with it.

* The base model (``AutoModel``), never the language-model head; an adapter folder is loaded on
  its base with the adapter(s) merged (:func:`adapter_chain`); right padding; pad token set when
  missing (EOS, else UNK).
* EOS rule: when the tokenizer is meant to append EOS (attribute ``add_eos_token`` or the key in
  tokenizer_config.json, which transformers 5 does not apply on load) and does not do it
  itself, the EOS id is appended once; never twice (:func:`manual_eos`).
* The pooling file: sentence-transformers' ``1_Pooling/config.json``, written beside a trained
  encoder's tokenizer (:func:`save_tokenizer`) and read back at inference (:func:`read_pooling`).
* :func:`check_memory`: the memory plan's check before an embedder loads on CUDA.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import torch

from helpers.common.devices import dtype_for
from helpers.common.models import placement_kwargs, resolve_model
from helpers.embed.args import MODEL_CLASSES, EmbedderArgs

log = logging.getLogger(__name__)


def _load_tokenizer(path: str, trust_remote_code: bool):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        if tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        elif tok.unk_token is not None:
            tok.pad_token = tok.unk_token
        else:
            raise ValueError(f"tokenizer of {path!r} has no pad, eos or unk token to pad with")
    tok.padding_side = "right"   # last-token pooling finds the last real token either way
    return tok


def is_adapter_folder(path) -> bool:
    """A LoRA adapter folder: adapter_config.json and no config.json."""
    return (Path(path) / "adapter_config.json").exists() and not (Path(path) / "config.json").exists()


def adapter_chain(model_name_or_path: str, base_model: Optional[str] = None) -> tuple[str, list[str]]:
    """``(base folder, adapter folders in merge order)`` for a model folder or an adapter folder.

    An adapter's base (``base_model_name_or_path`` of adapter_config.json) may itself be an
    adapter folder (round 2 trained from round 1's ``lora_epoch_n``): followed down to a model.
    ``base_model`` replaces the model folder at the bottom of the chain (the adapter was trained
    on a base at another path, e.g. another Kaggle session's /kaggle/input/...): every base named
    in the chain that is not an existing adapter folder is taken to be that model."""
    path, adapters, seen = resolve_model(model_name_or_path), [], set()
    while is_adapter_folder(path):
        if Path(path).resolve() in seen:
            raise ValueError(f"adapter {adapters[0]!r}: its chain of base models loops at {path!r}")
        seen.add(Path(path).resolve())
        adapters.append(path)
        cfg = Path(path) / "adapter_config.json"
        base = json.loads(cfg.read_text(encoding="utf-8")).get("base_model_name_or_path")
        if base_model and not (base and is_adapter_folder(base)):
            return resolve_model(base_model), adapters[::-1]
        if not base:
            raise ValueError(f"{cfg}: no base_model_name_or_path, so the adapter's base model is unknown")
        path = resolve_model(base)
    return path, adapters[::-1]


def load_base_model(model_name_or_path: str, dtype="auto", trust_remote_code: bool = False,
                    quantization_config=None, device_map=None, base_model: Optional[str] = None,
                    keep_last_adapter: Optional[bool] = None):
    """``AutoModel`` of a model folder, or of an adapter folder: its base with the adapter(s) merged.

    Loaded where ``from_pretrained`` puts it (CPU unless ``device_map``), in ``dtype`` ("auto": the
    stored precision); each adapter of :func:`adapter_chain` is merged in turn. A merged model's
    ``name_or_path`` is the adapter folder, so an adapter trained on it names that folder as its
    base (and loads onto the same weights).

    ``keep_last_adapter`` (None: when the base is quantized): the last adapter stays a LoRA beside
    the base, unmerged, the computation it was trained and evaluated with every epoch (QLoRA: merging
    W + BA into NF4 again rounds away an update smaller than one NF4 step, so a merged 4-bit model is
    not the model that was chosen); earlier adapters of the chain are merged, as training merged them."""
    from transformers import AutoModel
    base_path, adapters = adapter_chain(model_name_or_path, base_model)
    kwargs = dict(dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True)
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    if device_map is not None:
        kwargs["device_map"] = device_map
        if isinstance(device_map, dict) and len(device_map) == 1:
            kwargs.update(placement_kwargs(next(iter(device_map.values()))))
    model = AutoModel.from_pretrained(base_path, **kwargs)
    if adapters:
        from peft import PeftModel
        keep = quantization_config is not None if keep_last_adapter is None else keep_last_adapter
        for i, adapter in enumerate(adapters):
            model = PeftModel.from_pretrained(model, adapter)
            if keep and i == len(adapters) - 1:
                log.info("adapter %s applied unmerged (as trained and evaluated in training)", adapter)
                model.eval()
                return model
            model = model.merge_and_unload()
            log.info("merged adapter %s", adapter)
        model.name_or_path = adapters[-1]
    return model


def load_embedding_model(model_name_or_path: str, model_class: str = "decoder-only-icl",
                         device: str = "cpu", dtype: Optional[torch.dtype] = None,
                         load_in_4bit: bool = False, trust_remote_code: bool = False,
                         base_model: Optional[str] = None, keep_last_adapter: Optional[bool] = None):
    """Load the base model (``AutoModel``) and its tokenizer -> ``(model, tokenizer)``.

    ``model_name_or_path``: ``demo:<alias>``, a Hugging Face folder, or a LoRA adapter folder
    (adapter_config.json; merged into its base). ``dtype`` defaults by hardware
    (:func:`helpers.common.devices.dtype_for`). ``load_in_4bit`` quantizes the base with bitsandbytes
    (CUDA only). safetensors only. On CUDA the weights load straight onto ``device``
    (:func:`helpers.common.models.placement_kwargs`: no full copy in host RAM first).
    ``base_model``: the base of an adapter folder at another path (:func:`adapter_chain`).
    ``keep_last_adapter``: :func:`load_base_model`'s (None: unmerged on a 4-bit base; a trainer that
    adds its own LoRA on top passes False).
    """
    if model_class not in MODEL_CLASSES:
        raise ValueError(f"embedder_model_class {model_class!r} unknown; choose one of {MODEL_CLASSES}")
    device = str(device)
    dtype = dtype or dtype_for(device)
    base_path, adapters = adapter_chain(model_name_or_path, base_model)
    # the tokenizer of the outermost folder that has one (adapters are saved with theirs)
    tok_path = next((f for f in adapters[::-1] + [base_path]
                     if any((Path(f) / t).exists() for t in ("tokenizer.json", "tokenizer_config.json"))),
                    base_path)
    tok = _load_tokenizer(tok_path, trust_remote_code)
    quant = None
    device_map = placement_kwargs(device).get("device_map")   # CUDA: straight onto the GPU
    if load_in_4bit:
        if not device.startswith("cuda"):
            raise ValueError("load_in_4bit needs a CUDA device (bitsandbytes); got " + device)
        from transformers import BitsAndBytesConfig
        quant = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
        device_map = {"": device}
    model = load_base_model(model_name_or_path, dtype, trust_remote_code, quant, device_map, base_model,
                            keep_last_adapter)
    if device_map is None:
        model.to(device)
    model.eval()
    tok.name_or_path_for_eos = tok_path   # where tokenizer_config.json is, for the EOS rule
    return model, tok


def wants_eos(tokenizer) -> bool:
    """True when the tokenizer is meant to end every text with EOS (attribute or config key)."""
    if getattr(tokenizer, "add_eos_token", False) or tokenizer.init_kwargs.get("add_eos_token"):
        return True
    where = getattr(tokenizer, "name_or_path_for_eos", None) or getattr(tokenizer, "name_or_path", None)
    cfg = Path(str(where)) / "tokenizer_config.json" if where else None
    if cfg is not None and cfg.is_file():
        try:
            return bool(json.loads(cfg.read_text(encoding="utf-8")).get("add_eos_token", False))
        except (OSError, json.JSONDecodeError):
            return False
    return False


def tokenizer_appends_eos(tokenizer) -> bool:
    """Whether tokenizing with special tokens already ends a text with EOS (post-processor)."""
    if tokenizer.eos_token_id is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[-1] == tokenizer.eos_token_id


def manual_eos(tokenizer) -> bool:
    """Append EOS ourselves: meant to, and the tokenizer does not do it itself."""
    return wants_eos(tokenizer) and tokenizer.eos_token_id is not None and not tokenizer_appends_eos(tokenizer)


POOLING_MODES = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token",
                 "last_token": "pooling_mode_lasttoken"}     # ours -> sentence-transformers' 1_Pooling keys


ST_POOLING_NAMES = {"mean": "mean", "cls": "cls", "lasttoken": "last_token"}   # sentence-transformers 5+: "pooling_mode"


def read_pooling(folder) -> Optional[str]:
    """The pooling a folder's ``1_Pooling/config.json`` (sentence-transformers' file) names, or None
    when there is no such file. Both of its spellings are read: ``"pooling_mode": "mean"``
    (sentence-transformers 5 and later) and ``"pooling_mode_mean_tokens": true`` (earlier, and ours).
    A file that names a pooling we do not have (max, weightedmean, several) is an error, not cls."""
    cfg = Path(folder) / "1_Pooling" / "config.json"
    if not cfg.is_file():
        return None
    d = json.loads(cfg.read_text(encoding="utf-8"))
    mode = d.get("pooling_mode")
    if isinstance(mode, list) and len(mode) == 1:
        mode = mode[0]
    if isinstance(mode, str) and mode in ST_POOLING_NAMES:
        return ST_POOLING_NAMES[mode]
    on = {k for k, v in d.items() if v is True}
    found = [ours for ours, key in POOLING_MODES.items() if key in on]
    if mode is None and len(found) == 1 and not any(k.startswith("pooling_mode_") for k in on - set(POOLING_MODES.values())):
        return found[0]
    raise ValueError(f"{cfg}: pooling {mode if mode is not None else sorted(on)!r} is not one this embedder has "
                     f"({', '.join(POOLING_MODES)}); set pooling_method to pool another way")


def _encoder_pooling_default(path: str) -> str:
    """sentence-transformers folders say their pooling in 1_Pooling/config.json; else cls."""
    return read_pooling(path) or "cls"


def save_tokenizer(tok, path, add_eos: bool, pooling: Optional[str] = None) -> None:
    """Save the tokenizer of a trained model; decoders get ``add_eos_token: true`` so inference
    appends EOS too. Encoders also get ``1_Pooling/config.json`` naming the pooling they were
    trained with, so the embedder (:func:`read_pooling`) pools them the same way at inference."""
    tok.save_pretrained(str(path))
    if pooling and not add_eos:
        (Path(path) / "1_Pooling").mkdir(exist_ok=True)
        (Path(path) / "1_Pooling" / "config.json").write_text(
            json.dumps({k: k == POOLING_MODES[pooling] for k in POOLING_MODES.values()}, indent=2), encoding="utf-8")
    if add_eos:
        cfg = Path(path) / "tokenizer_config.json"
        d = json.loads(cfg.read_text(encoding="utf-8"))
        d["add_eos_token"] = True
        cfg.write_text(json.dumps(d, ensure_ascii=False, indent=2), encoding="utf-8")


def check_memory(args: EmbedderArgs, devices, stage: str = "mine") -> Optional[dict]:
    """:func:`helpers.common.memory.check_stage` for a model of the embedder block about to be loaded
    (``stage`` "mine": mining, evaluation, submission; "train": the student): nothing on CPU; on
    CUDA the plan is printed and settings that cannot fit one GPU are refused before the model loads."""
    from helpers.common.memory import check_stage
    if not any(str(d).startswith("cuda") for d in devices):
        return None
    base_path, _ = adapter_chain(args.model_name_or_path, args.base_model)
    return check_stage(stage, args, devices, model=base_path)
