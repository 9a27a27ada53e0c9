"""GPU memory estimates for a student (LoRA training), an embedder (mining, evaluation) and a teacher
(scoring) on one GPU; the check every GPU stage runs before it loads a model (:func:`check_stage`);
the trainer's gradient-checkpointing rule (:func:`checkpointing_rule`).

Estimates from parameter counts and activation formulas, not measurements (bytes per GPU):
- weights: params x bytes (fp16/bf16 2, fp32 4); 4-bit NF4: the linear layers ~0.56 B with their
  scales, the embeddings and norms stay 16-bit (in QLoRA training too: they are frozen);
- LoRA: r x (d_in + d_out) per target matrix per layer; fp32 weights + grads + two Adam moments
  = 16 B each; with DDP (several GPUs) a gradient bucket copy of 4 B each;
- activations per layer (:func:`layer_activation_bytes`, the one activation formula): ~34 x tokens
  x hidden bytes in 16-bit (Korthikanti et al. 2022) + 4 x tokens x intermediate for the MLP, i.e.
  (17 x hidden + 2 x intermediate) values per token; sdpa attention keeps no seq^2 term, eager
  attention adds its scores, probabilities and dropout mask (~3 x heads x longest^2 per text); with
  gradient checkpointing only each layer's input (2 x tokens x hidden) is kept, plus one layer's
  activations during recomputation;
- LoRA input copies: each target module keeps its own 16-bit copy of its input for backward
  (2 B x tokens x (6 hidden + intermediate) per layer), plus a 1 B dropout mask when
  lora_dropout > 0; one layer's worth with checkpointing, every layer's without;
- QLoRA (4-bit base, LoRA): the norms and embeddings stay 16-bit (helpers.train.lora.prepare_4bit; peft's
  ``prepare_model_for_kbit_training`` would cast them to fp32, and the residual stream with them:
  every activation term below would double), so activations count 2 B as for a 16-bit base;
- inference (mining, scoring): one layer's activations live at a time; the embedder runs with
  ``use_cache=False`` (no key/value cache); the reranker's shared-prefix path keeps one;
- CUDA context and allocator slack: 1.0 GiB.

A stage's estimate (:func:`stage_terms`) reads its parameters by the stage's field names from a
complete mapping (the stage's dataclass, or ``asdict`` of it): no default is repeated here. A caller
holding only part of them (a profile step) fills the rest from the stage's own dataclass first
(``bench/memory_tables.py``, which prints the README's memory and time tables, does).

Why this file is over 400 lines: the formulas, the per-stage terms built from them, the check that
prints them and the out-of-memory advice that reuses them are one model of memory, read and changed
together; the tables went to bench/.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional


log = logging.getLogger(__name__)

GIB = 1024 ** 3
CONTEXT_GIB = 1.0
FOUR_BIT_BYTES = 0.56         # NF4 with double-quantized scales, per linear-layer parameter
SKIP_ENV = "EEDI_SKIP_MEMORY_PLAN"
# Effective fp16/bf16 throughput assumed for time estimates, TFLOP/s per GPU: about a quarter of each
# GPU's dense tensor-core peak. Assumptions, not measurements (none was made on these GPUs).
GPU_TFLOPS = {"T4": 16.0, "P100": 5.0, "L4": 30.0, "A10": 30.0, "A100": 80.0, "H100": 250.0, "H200": 250.0}


class MemoryPlanError(ValueError):
    """The memory plan says these settings cannot fit the GPU."""


@dataclass(frozen=True)
class Arch:
    name: str
    params: float          # total parameters (the AutoModel the stage loads)
    hidden: int
    layers: int
    intermediate: int
    kv_hidden: int         # hidden size of k/v projections (grouped-query attention)
    vocab: int = 32000

    @property
    def embed_params(self) -> float:
        return float(self.vocab * self.hidden)

    @property
    def norm_params(self) -> float:
        return float((2 * self.layers + 1) * self.hidden)

    @property
    def linear_params(self) -> float:
        return max(0.0, self.params - self.embed_params - self.norm_params)


# ----------------------------------------------------------------------------- formulas
def weight_bytes(a: Arch, *, four_bit: bool, train: bool = False, fp16: bool = True) -> float:
    """Bytes of the weights: 16-bit (``fp16``) or fp32; 4-bit: NF4 linear layers, the embeddings and
    norms in 16-bit (training too: :func:`helpers.train.lora.prepare_4bit` keeps them so)."""
    if not four_bit:
        return a.params * (2.0 if fp16 else 4.0)
    rest = (a.embed_params + a.norm_params) * 2.0
    return a.linear_params * FOUR_BIT_BYTES + rest


def lora_params(a: Arch, rank: int) -> float:
    h, i, kv = a.hidden, a.intermediate, a.kv_hidden
    per_layer = rank * ((h + h) * 2 + (h + kv) * 2 + (h + i) * 3)     # q,o ; k,v ; gate,up,down
    return per_layer * a.layers


def layer_activation_bytes(tokens: int, hidden: int, intermediate: int, bytes_per: int = 2,
                           heads: int = 0, longest: int = 0, texts: int = 0) -> int:
    """The one activation formula: bytes one transformer layer keeps for backward in a training
    forward without checkpointing. (17 x hidden + 2 x intermediate) values per token (Korthikanti et
    al. 2022's 34 x tokens x hidden bytes in 16-bit, plus the MLP's 4 x tokens x intermediate) of
    ``bytes_per`` bytes each; eager (math) attention adds its scores, probabilities and dropout mask,
    ~3 x heads x longest^2 per text (``heads`` 0: sdpa, no seq^2 term)."""
    return bytes_per * (17 * tokens * hidden + 2 * tokens * intermediate + 3 * heads * longest * longest * texts)


def train_terms(a: Arch, batch: int, group: int, q_len: int, p_len: int, *, rank: int, four_bit: bool,
                checkpointing: bool, lora_dropout: float, use_lora: bool, world: int = 1) -> dict:
    """Bytes per GPU of one training step, by term (see the module docstring)."""
    tokens = batch * (q_len + group * p_len)
    h, i, L = a.hidden, a.intermediate, a.layers
    trainable = lora_params(a, rank) if use_lora else a.params
    terms = {"weights": weight_bytes(a, four_bit=four_bit, train=True) if use_lora else 0.0,
             "lora_optimizer" if use_lora else "fp32_weights_optimizer": trainable * 16}
    if world > 1:
        terms["ddp_buckets"] = trainable * 4
    layer = layer_activation_bytes(tokens, h, i)                         # 16-bit, sdpa
    copies = tokens * (6 * h + i) * (2 + (1 if lora_dropout > 0 else 0)) if use_lora else 0.0
    if checkpointing:
        terms["activations"] = 2 * tokens * h * L + layer
        terms["lora_input_copies"] = copies
    else:
        terms["activations"] = layer * L
        terms["lora_input_copies"] = copies * L
    terms["context"] = CONTEXT_GIB * GIB
    return terms


def train_memory_gib(a: Arch, batch: int, group: int, q_len: int, p_len: int, **settings) -> float:
    """:func:`train_terms` in GiB (the same keyword settings)."""
    return sum(train_terms(a, batch, group, q_len, p_len, **settings).values()) / GIB


def embed_terms(a: Arch, batch: int, length: int, *, four_bit: bool, fp16: bool) -> dict:
    """Embedder inference (``use_cache=False``): weights + one layer's activations."""
    tokens = batch * length
    return {"weights": weight_bytes(a, four_bit=four_bit, fp16=fp16),
            "activations": 2 * tokens * (4 * a.hidden + 3 * a.intermediate) * (1 if fp16 else 2),
            "context": CONTEXT_GIB * GIB}


def score_terms(a: Arch, batch: int, length: int, *, four_bit: bool, fp16: bool, yes_only: bool) -> dict:
    """Reranker inference: the shared-prefix path's key/value cache, the Yes-row projection
    (``yes_only``; else the full-vocabulary logits in fp32)."""
    tokens = batch * length
    terms = embed_terms(a, batch, length, four_bit=four_bit, fp16=fp16)
    terms["kv_cache"] = 2 * tokens * a.kv_hidden * a.layers * 2
    if not yes_only:
        terms["logits"] = tokens * a.vocab * 4
    return terms


# ----------------------------------------------------------------------------- a stage's settings
STAGES = ("mine", "score", "train", "embed")
PROMPT_TOKENS = 40            # the reranker prompt and separators after the pair
EMBED_KEYS = ("embedder_batch_size", "query_max_len", "passage_max_len", "load_in_4bit", "use_fp16")
STAGE_KEYS = {                # what each estimate reads: fields of HnMineArgs / EmbedderArgs, ScoreArgs, KDArgs
    "mine": EMBED_KEYS,
    "embed": EMBED_KEYS,
    "score": ("reranker_batch_size", "reranker_max_length", "use_fp16", "yes_only"),
    "train": ("per_device_train_batch_size", "train_group_size", "query_max_len", "passage_max_len", "lora_rank",
              "load_in_4bit", "gradient_checkpointing", "lora_dropout", "use_lora"),
}
OPTIONAL_KEYS = {"gradient_checkpointing"}      # None: auto (the estimate assumes it on, where it is needed)


def stage_params(stage: str, p: Mapping) -> dict:
    """``p`` (the stage's own field names: other spellings are translated where they come in, by
    the command parser, the profile loader or ``args_from``), checked to hold every parameter the
    stage's estimate reads: a missing one (or None) is a KeyError naming the stage and the key."""
    if stage not in STAGES:
        raise ValueError(f"memory plan: unknown stage {stage!r}; choose one of {STAGES}")
    p = dict(p)
    missing = [k for k in STAGE_KEYS[stage] if k not in p or (p[k] is None and k not in OPTIONAL_KEYS)]
    if missing:
        raise KeyError(f"memory plan ({stage}): parameter(s) {', '.join(missing)} missing; pass the stage's "
                       f"complete parameters (its dataclass, defaults filled from it)")
    return p


def stage_terms(stage: str, p: Mapping, a: Arch, world: int = 1) -> tuple[dict, str]:
    """``(bytes by term, settings text)`` of one stage from its complete parameters (the stage's
    field names: HnMineArgs, ScoreArgs, KDArgs, EmbedderArgs; :func:`stage_params`)."""
    p = stage_params(stage, p)
    if stage in ("mine", "embed"):      # the embedder block (helpers.embed.args)
        b = int(p["embedder_batch_size"])
        q, ps = int(p["query_max_len"]), int(p["passage_max_len"])
        fb, fp16 = bool(p["load_in_4bit"]), bool(p["use_fp16"])
        return (embed_terms(a, b, max(q, ps), four_bit=fb, fp16=fp16),
                f"batch {b}, {max(q, ps)} tokens, {'4-bit' if fb else 'fp16' if fp16 else 'fp32'}, inference")
    if stage == "score":
        b, n = int(p["reranker_batch_size"]), int(p["reranker_max_length"]) + PROMPT_TOKENS
        fp16, yes = bool(p["use_fp16"]), bool(p["yes_only"])
        return (score_terms(a, b, n, four_bit=False, fp16=fp16, yes_only=yes),
                f"batch {b}, {n} tokens, {'fp16' if fp16 else 'fp32'}, inference")
    b, g = int(p["per_device_train_batch_size"]), int(p["train_group_size"])
    q, ps = int(p["query_max_len"]), int(p["passage_max_len"])
    r, fb = int(p["lora_rank"]), bool(p["load_in_4bit"])
    ck = p["gradient_checkpointing"] is None or bool(p["gradient_checkpointing"])   # None (auto): on where needed
    drop, lora = float(p["lora_dropout"]), bool(p["use_lora"])
    settings = (f"batch {b}, group {g}, q {q} / p {ps} tokens, "
                f"{'checkpointing' if ck else 'no checkpointing'}, {'4-bit base' if fb else 'fp16 base'}, "
                + (f"LoRA r={r}, dropout {drop:g}" if lora else "full fine-tuning")
                + (f", DDP x {world}" if world > 1 else ""))
    return train_terms(a, b, g, q, ps, rank=r, four_bit=fb, checkpointing=ck, lora_dropout=drop,
                       use_lora=lora, world=world), settings


def stage_memory_gib(stage: str, p: Mapping, a: Arch, world: int = 1) -> float:
    return sum(stage_terms(stage, p, a, world)[0].values()) / GIB


# ----------------------------------------------------------------------------- architecture of a folder
def _config_path(name_or_path: str) -> Path:
    """config.json of a model folder, following LoRA adapter folders down to their base."""
    from helpers.common.models import resolve_model
    path, seen = Path(resolve_model(name_or_path)), set()
    while not (path / "config.json").exists() and (path / "adapter_config.json").exists():
        if path.resolve() in seen:
            raise ValueError(f"adapter chain of {name_or_path!r} loops at {path}")
        seen.add(path.resolve())
        base = json.loads((path / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
        if not base:
            raise ValueError(f"{path / 'adapter_config.json'}: no base_model_name_or_path")
        path = Path(resolve_model(base))
    return path / "config.json"


def arch_from_config(cfg: Mapping, name: str = "model", lm_head: bool = False) -> Arch:
    """An :class:`Arch` from a Hugging Face config.json (decoders and BERT-like encoders)."""
    if "hidden_size" not in cfg and isinstance(cfg.get("text_config"), Mapping):
        cfg = cfg["text_config"]
    h, L = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"])
    i = int(cfg.get("intermediate_size") or 4 * h)
    heads = int(cfg.get("num_attention_heads") or max(1, h // 64))
    head_dim = int(cfg.get("head_dim") or h // heads)
    kv = int(cfg.get("num_key_value_heads") or heads) * head_dim
    q = heads * head_dim
    vocab = int(cfg.get("vocab_size") or 32000)
    gated = "num_key_value_heads" in cfg or cfg.get("hidden_act") in ("silu", "swiglu") \
        or "gelu_pytorch_tanh" == cfg.get("hidden_activation")
    per_layer = h * q + 2 * h * kv + q * h + (3 if gated else 2) * h * i + 2 * h
    extra = int(cfg.get("max_position_embeddings") or 0) * h + int(cfg.get("type_vocab_size") or 0) * h \
        if "type_vocab_size" in cfg else 0                          # BERT's learned positions and types
    params = vocab * h + L * per_layer + h + extra
    if lm_head and not cfg.get("tie_word_embeddings", True):
        params += vocab * h
    return Arch(name, float(params), h, L, i, kv, vocab)


def arch_of(name_or_path: str, lm_head: bool = False) -> Arch:
    path = _config_path(name_or_path)
    return arch_from_config(json.loads(path.read_text(encoding="utf-8")), str(name_or_path), lm_head)


DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


def stored_bytes(name_or_path: str) -> int:
    """Bytes of the model written in its stored precision (what a merged model takes on disk):
    parameter count from config.json x the bytes of its ``dtype`` / ``torch_dtype`` (fp32 when unsaid)."""
    cfg = json.loads(_config_path(name_or_path).read_text(encoding="utf-8"))
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), Mapping) else {}
    dt = str(cfg.get("dtype") or cfg.get("torch_dtype") or text.get("dtype") or text.get("torch_dtype") or "float32")
    return int(arch_from_config(cfg, str(name_or_path)).params * DTYPE_BYTES.get(dt.replace("torch.", ""), 4))


# ----------------------------------------------------------------------------- the check
def device_total_gib(device: str) -> float:
    import torch
    return torch.cuda.get_device_properties(torch.device(device)).total_memory / GIB


def cuda_devices(devices) -> list[str]:
    """The CUDA devices of a ``devices`` value (a list, or "0,1" / "cuda:0 cuda:1"; None: none)."""
    if devices is None:
        return []
    if isinstance(devices, str):
        devices = devices.replace(",", " ").split()
    out = []
    for d in devices:
        d = str(d).strip()
        out.append(f"cuda:{d}" if d.isdigit() else d)
    return [d for d in out if d.startswith("cuda")]


def _params(args) -> dict:
    import dataclasses
    return dataclasses.asdict(args) if dataclasses.is_dataclass(args) else dict(args)


def _advice(stage: str, p: Mapping, a: Arch, world: int, usable: float) -> str:
    tips = []
    if stage in ("mine", "embed", "train") and not p["load_in_4bit"]:
        gib = stage_memory_gib(stage, {**p, "load_in_4bit": True}, a, world)
        if gib <= usable:
            tips.append(f"load_in_4bit true ({gib:.1f} GiB)")
    key = {"score": "reranker_batch_size", "train": "per_device_train_batch_size"}.get(stage, "embedder_batch_size")
    for cand in (dict(p), {**p, "load_in_4bit": True} if stage != "score" else None):
        if cand is None:
            continue
        b = int(cand[key])
        while b > 1 and stage_memory_gib(stage, {**cand, key: b}, a, world) > usable:
            b //= 2
        if stage_memory_gib(stage, {**cand, key: b}, a, world) <= usable and b != int(p[key]):
            tips.append(f"{key} {b}" + (" with load_in_4bit true" if cand.get("load_in_4bit")   # score: no 4-bit
                                         and not p.get("load_in_4bit") else ""))
            break
    if stage == "train" and not p["gradient_checkpointing"]:
        tips.append("gradient_checkpointing true")
    if stage == "train":
        tips.append("shorter query_max_len / passage_max_len")
    return "; or ".join(tips) if tips else "a smaller model"


_SHOWN: set = set()


def check_stage(stage: str, args, devices, model: Optional[str] = None, total_gib: Optional[float] = None,
                arch: Optional[Arch] = None, echo: Optional[Callable[[str], None]] = None) -> Optional[dict]:
    """Print a stage's memory plan and refuse settings that cannot fit, before any model is loaded.

    ``args``: the stage's dataclass (or a dict of its complete parameters: :func:`stage_params`);
    ``devices``: the devices it will use. Nothing happens (``None``) unless a device is CUDA.
    ``model``: the folder whose config.json gives the architecture (default: the stage's model
    field); ``total_gib``: the GPU's memory (default: the smallest ``total_memory`` of the devices).
    Raises :class:`MemoryPlanError` naming the estimate, the GPU and what would fit; set
    ``EEDI_SKIP_MEMORY_PLAN=1`` to run anyway (the plan is an estimate)."""
    cuda = cuda_devices(devices)
    if not cuda:
        return None
    p = _params(args)
    if model is None:
        model = p.get("reranker_name_or_path" if stage == "score" else "model_name_or_path")
    a = arch or arch_of(model, lm_head=stage == "score")
    world = len(cuda) if stage == "train" else 1
    usable = total_gib if total_gib is not None else min(device_total_gib(d) for d in cuda)
    terms, settings = stage_terms(stage, p, a, world)
    gib = sum(terms.values()) / GIB
    fits = gib <= usable
    parts = ", ".join(f"{k} {v / GIB:.1f}" for k, v in terms.items())
    line = (f"memory plan ({stage}, estimate): {gib:.1f} GiB per GPU of {usable:.1f} GiB on {','.join(cuda)} "
            f"for {a.name} ({a.params / 1e9:.2f}B parameters), {settings} [{parts}] -> "
            f"{'fits' if fits else 'does NOT fit'}")
    if line not in _SHOWN:                      # once per process (the notebook and the stage both check)
        _SHOWN.add(line)
        if echo is None:
            print(line, flush=True)
        else:
            echo(line)
        log.info(line)
    plan = dict(stage=stage, model=a.name, settings=settings, estimate_gib=round(gib, 2),
                usable_gib=round(usable, 2), fits=fits, terms={k: round(v / GIB, 2) for k, v in terms.items()})
    if not fits and not os.environ.get(SKIP_ENV):
        raise MemoryPlanError(
            f"{stage}: the memory plan estimates {gib:.1f} GiB per GPU for {settings} with {a.name}, more "
            f"than the {usable:.1f} GiB of {cuda[0]}; it would run out of memory. Try {_advice(stage, p, a, world, usable)}. "
            f"(An estimate from helpers/common/memory.py; set {SKIP_ENV}=1 to run anyway.)")
    return plan


def out_of_memory_advice(stage: str, args, devices, model: Optional[str] = None, peak_gib: Optional[float] = None) -> str:
    """What a stage that ran out of CUDA memory says instead of a bare CUDA error: the plan's estimate
    for its settings (which was short) and the settings the plan puts a fifth lower."""
    p = _params(args)
    a = arch_of(model or p.get("reranker_name_or_path" if stage == "score" else "model_name_or_path"),
                lm_head=stage == "score")
    world = max(1, len(cuda_devices(devices))) if stage == "train" else 1
    terms, settings = stage_terms(stage, p, a, world)
    gib = sum(terms.values()) / GIB
    if peak_gib is None:
        import torch
        peak_gib = torch.cuda.max_memory_allocated() / GIB if torch.cuda.is_available() else 0.0
    return (f"{stage}: CUDA out of memory. The memory plan estimated {gib:.1f} GiB per GPU for {settings} with "
            f"{a.name} [{', '.join(f'{k} {v / GIB:.1f}' for k, v in terms.items())}]; the run needed more (peak "
            f"allocated before the failure {peak_gib:.1f} GiB). Settings the plan puts a fifth lower: "
            f"{_advice(stage, p, a, world, 0.8 * gib)}.")


# ----------------------------------------------------------------------------- gradient checkpointing (auto)
def free_memory() -> None:
    """Release what the last model held before the next loads: Python's garbage, then (CUDA) the
    allocator's cached blocks."""
    import gc
    gc.collect()
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _available_memory(device) -> tuple[int, str]:
    """Bytes free for activations on ``device`` -> (bytes, where)."""
    import torch
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"{device} free memory"
    try:
        with open("/proc/meminfo") as f:
            info = {ln.split(":")[0]: int(ln.split()[1]) * 1024 for ln in f}
        return info["MemAvailable"], "available RAM"
    except (OSError, KeyError, ValueError, IndexError):
        return 0, "RAM (unknown)"


def activation_bytes(model, tokens: int, longest: int, texts: int, bytes_per: int) -> int:
    """Activation memory of one training forward of ``model`` without checkpointing: every layer's
    :func:`layer_activation_bytes` in ``bytes_per`` bytes, eager attention's matrices included (an
    upper estimate under sdpa). The sizes come from the model's config (a text config inside a
    multimodal one); a model without one counts as hidden 1024, 24 layers, 16 heads."""
    cfg = getattr(model, "config", None)
    get_text = getattr(cfg, "get_text_config", None)
    if callable(get_text):
        try:
            cfg = get_text()
        except Exception:
            pass
    hidden = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "d_model", 0) or 1024)
    layers = int(getattr(cfg, "num_hidden_layers", 0) or getattr(cfg, "n_layer", 0) or 24)
    heads = int(getattr(cfg, "num_attention_heads", 0) or 16)
    intermediate = int(getattr(cfg, "intermediate_size", 0) or getattr(cfg, "n_inner", 0) or 4 * hidden)
    return layers * layer_activation_bytes(tokens, hidden, intermediate, bytes_per, heads, longest, texts)


def checkpointing_rule(requested, model, device, tokens: int, longest: int, texts: int,
                       dtype=None, share: float = 0.5) -> tuple[bool, str]:
    """Gradient checkpointing is a memory tool: ``requested`` True/False is obeyed; None (auto) turns
    it on only when one step's activations at the max lengths (:func:`activation_bytes`, in
    ``dtype``'s bytes; None: float32) would take more than ``share`` of the memory free on
    ``device`` -> (on, the reason to log)."""
    if requested is not None:
        return bool(requested), "as requested"
    import torch
    need = activation_bytes(model, tokens, longest, texts, torch.finfo(dtype or torch.float32).bits // 8)
    free, where = _available_memory(device)
    on = free <= 0 or need > share * free
    return on, (f"auto: activations ~{need / 2 ** 30:.1f} GiB at the max lengths vs {free / 2 ** 30:.1f} GiB "
                f"{where}: {'on (memory needs it)' if on else 'off (it fits; checkpointing would only cost time)'}")
