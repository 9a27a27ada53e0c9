"""GPU memory estimates for a student (LoRA training), an embedder (mining, evaluation) and a teacher
(scoring) on one GPU, and the check every GPU stage runs before it loads a model.

Estimates from parameter counts and activation formulas, not measurements (bytes per GPU):
- weights: params x bytes (fp16/bf16 2, fp32 4); 4-bit NF4: the linear layers ~0.56 B with their
  scales, the embeddings and norms stay 16-bit, and QLoRA training (peft's
  ``prepare_model_for_kbit_training``) casts those to fp32 (4 B);
- LoRA: r x (d_in + d_out) per target matrix per layer; fp32 weights + grads + two Adam moments
  = 16 B each; with DDP (several GPUs) a gradient bucket copy of 4 B each;
- activations per layer (sdpa attention, no seq^2 term): ~34 x tokens x hidden bytes in 16-bit
  (Korthikanti et al. 2022) + 4 x tokens x intermediate for the MLP; with gradient checkpointing
  only each layer's input (2 x tokens x hidden) is kept, plus one layer's activations during
  recomputation;
- LoRA input copies: each target module keeps its own 16-bit copy of its input for backward
  (2 B x tokens x (6 hidden + intermediate) per layer), plus a 1 B dropout mask when
  lora_dropout > 0; one layer's worth with checkpointing, every layer's without;
- inference (mining, scoring): one layer's activations live at a time; the embedder runs with
  ``use_cache=False`` (no key/value cache); the reranker's shared-prefix path keeps one;
- CUDA context and allocator slack: 1.0 GiB. A Kaggle T4 shows torch 14.7 GiB (``total_memory``).

``python -m helpers.kaggle.memory_plan`` prints the README table, with a row per GPU step of the
shipped profile ``configs/kaggle_eedi.yaml`` computed by the same functions the stages call
(:func:`check_stage`) before they load a model.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional

from helpers.common.cli import canonical_flags

log = logging.getLogger(__name__)

GIB = 1024 ** 3
CONTEXT_GIB = 1.0
T4_USABLE_GIB = 14.7          # torch.cuda.get_device_properties(i).total_memory of a Kaggle T4: 14.74 GiB
FOUR_BIT_BYTES = 0.56         # NF4 with double-quantized scales, per linear-layer parameter
SKIP_ENV = "EEDI_SKIP_MEMORY_PLAN"
REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_PROFILE = REPO_ROOT / "configs" / "kaggle_eedi.yaml"
SUBMIT_PROFILE = REPO_ROOT / "configs" / "submit.yaml"


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


ARCHS = {
    "Qwen2.5-0.5B": Arch("Qwen2.5-0.5B", 0.49e9, 896, 24, 4864, 128, 151936),
    "Qwen2.5-1.5B": Arch("Qwen2.5-1.5B", 1.54e9, 1536, 28, 8960, 256, 151936),
    "Qwen2.5-7B": Arch("Qwen2.5-7B", 7.6e9, 3584, 28, 18944, 512, 152064),
    "bge-en-icl (Mistral-7B)": Arch("bge-en-icl (Mistral-7B)", 7.1e9, 4096, 32, 14336, 1024, 32003),
    "bge-reranker-v2-gemma (2.5B)": Arch("bge-reranker-v2-gemma (2.5B)", 2.5e9, 2048, 18, 16384, 256, 256000),
}


# ----------------------------------------------------------------------------- formulas
def weight_bytes(a: Arch, four_bit: bool = False, train: bool = False, fp16: bool = True) -> float:
    if not four_bit:
        return a.params * (2.0 if fp16 else 4.0)
    rest = (a.embed_params + a.norm_params) * (4.0 if train else 2.0)
    return a.linear_params * FOUR_BIT_BYTES + rest


def lora_params(a: Arch, rank: int) -> float:
    h, i, kv = a.hidden, a.intermediate, a.kv_hidden
    per_layer = rank * ((h + h) * 2 + (h + kv) * 2 + (h + i) * 3)     # q,o ; k,v ; gate,up,down
    return per_layer * a.layers


def train_terms(a: Arch, batch: int, group: int, q_len: int, p_len: int, rank: int = 64,
                four_bit: bool = False, checkpointing: bool = True, lora_dropout: float = 0.1,
                world: int = 1, use_lora: bool = True) -> dict:
    """Bytes per GPU of one training step, by term (see the module docstring)."""
    tokens = batch * (q_len + group * p_len)
    h, i, L = a.hidden, a.intermediate, a.layers
    trainable = lora_params(a, rank) if use_lora else a.params
    terms = {"weights": weight_bytes(a, four_bit, train=True) if use_lora else 0.0,
             "lora_optimizer" if use_lora else "fp32_weights_optimizer": trainable * 16}
    if world > 1:
        terms["ddp_buckets"] = trainable * 4
    layer = 34 * tokens * h + 4 * tokens * i
    copies = tokens * (6 * h + i) * (2 + (1 if lora_dropout > 0 else 0)) if use_lora else 0.0
    if checkpointing:
        terms["activations"] = 2 * tokens * h * L + layer
        terms["lora_input_copies"] = copies
    else:
        terms["activations"] = layer * L
        terms["lora_input_copies"] = copies * L
    terms["context"] = CONTEXT_GIB * GIB
    return terms


def train_memory_gib(a: Arch, batch: int, group: int, q_len: int, p_len: int, rank: int = 64,
                     four_bit: bool = False, checkpointing: bool = True, lora_dropout: float = 0.1,
                     world: int = 1, use_lora: bool = True) -> float:
    return sum(train_terms(a, batch, group, q_len, p_len, rank, four_bit, checkpointing, lora_dropout,
                           world, use_lora).values()) / GIB


def embed_terms(a: Arch, batch: int, length: int, four_bit: bool = False, fp16: bool = True) -> dict:
    """Embedder inference (``use_cache=False``): weights + one layer's activations."""
    tokens = batch * length
    return {"weights": weight_bytes(a, four_bit, fp16=fp16),
            "activations": 2 * tokens * (4 * a.hidden + 3 * a.intermediate) * (1 if fp16 else 2),
            "context": CONTEXT_GIB * GIB}


def embed_memory_gib(a: Arch, batch: int, length: int, four_bit: bool = False, fp16: bool = True) -> float:
    return sum(embed_terms(a, batch, length, four_bit, fp16).values()) / GIB


def score_terms(a: Arch, batch: int, length: int, four_bit: bool = False, fp16: bool = True,
                yes_only: bool = True) -> dict:
    """Reranker inference: the shared-prefix path's key/value cache, the Yes-row projection
    (``yes_only``; else the full-vocabulary logits in fp32)."""
    tokens = batch * length
    terms = embed_terms(a, batch, length, four_bit, fp16)
    terms["kv_cache"] = 2 * tokens * a.kv_hidden * a.layers * 2
    if not yes_only:
        terms["logits"] = tokens * a.vocab * 4
    return terms


def score_memory_gib(a: Arch, batch: int, length: int, four_bit: bool = False, fp16: bool = True,
                     yes_only: bool = True) -> float:
    return sum(score_terms(a, batch, length, four_bit, fp16, yes_only).values()) / GIB


# ----------------------------------------------------------------------------- a stage's settings
STAGES = ("mine", "score", "train", "embed")
PROMPT_TOKENS = 40            # the reranker prompt and separators after the pair


def _get(p: Mapping, key: str, default):
    v = p.get(key, default)
    return default if v is None else v


def stage_terms(stage: str, p: Mapping, a: Arch, world: int = 1) -> tuple[dict, str]:
    """``(bytes by term, settings text)`` of one stage from its parameters (the stage's field
    names: HnMineArgs, ScoreArgs, KDArgs, EmbedderArgs; missing ones take their defaults)."""
    p = canonical_flags(dict(p))        # FlagEmbedding's and older spellings count as ours
    if stage in ("mine", "embed"):      # the embedder block (helpers.embed.args); hn_mine's --batch_size too
        b = int(_get(p, "embedder_batch_size", _get(p, "batch_size", 64)))
        q, ps = int(_get(p, "query_max_len", 512)), int(_get(p, "passage_max_len", 512))
        fb, fp16 = bool(_get(p, "load_in_4bit", False)), bool(_get(p, "use_fp16", True))
        return (embed_terms(a, b, max(q, ps), fb, fp16),
                f"batch {b}, {max(q, ps)} tokens, {'4-bit' if fb else 'fp16' if fp16 else 'fp32'}, inference")
    if stage == "score":
        b, n = int(_get(p, "reranker_batch_size", 16)), int(_get(p, "reranker_max_length", 384)) + PROMPT_TOKENS
        fp16, yes = bool(_get(p, "use_fp16", True)), bool(_get(p, "yes_only", True))
        return (score_terms(a, b, n, False, fp16, yes),
                f"batch {b}, {n} tokens, {'fp16' if fp16 else 'fp32'}, inference")
    if stage == "train":
        b, g = int(_get(p, "per_device_train_batch_size", 8)), int(_get(p, "train_group_size", 8))
        q, ps = int(_get(p, "query_max_len", 512)), int(_get(p, "passage_max_len", 512))
        r, fb = int(_get(p, "lora_rank", 64)), bool(_get(p, "load_in_4bit", False))
        ck = _get(p, "gradient_checkpointing", True)          # None (auto) turns it on where it is needed
        drop, lora = float(_get(p, "lora_dropout", 0.1)), bool(_get(p, "use_lora", True))
        settings = (f"batch {b}, group {g}, q {q} / p {ps} tokens, "
                    f"{'checkpointing' if ck else 'no checkpointing'}, {'4-bit base' if fb else 'fp16 base'}, "
                    + (f"LoRA r={r}, dropout {drop:g}" if lora else "full fine-tuning")
                    + (f", DDP x {world}" if world > 1 else ""))
        return train_terms(a, b, g, q, ps, r, fb, bool(ck), drop, world, lora), settings
    raise ValueError(f"memory plan: unknown stage {stage!r}; choose one of {STAGES}")


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


def _cuda(devices) -> list[str]:
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
    return canonical_flags(dataclasses.asdict(args) if dataclasses.is_dataclass(args) else dict(args))


def _advice(stage: str, p: Mapping, a: Arch, world: int, usable: float) -> str:
    tips = []
    if stage in ("mine", "embed", "train") and not p.get("load_in_4bit"):
        gib = stage_memory_gib(stage, {**p, "load_in_4bit": True}, a, world)
        if gib <= usable:
            tips.append(f"load_in_4bit true ({gib:.1f} GiB)")
    key = {"score": "reranker_batch_size", "train": "per_device_train_batch_size"}.get(stage, "embedder_batch_size")
    for cand in (dict(p), {**p, "load_in_4bit": True} if stage != "score" else None):
        if cand is None:
            continue
        b = int(_get(cand, key, 1))
        while b > 1 and stage_memory_gib(stage, {**cand, key: b}, a, world) > usable:
            b //= 2
        if stage_memory_gib(stage, {**cand, key: b}, a, world) <= usable and b != int(_get(p, key, 1)):
            tips.append(f"{key} {b}" + (" with load_in_4bit true" if cand.get("load_in_4bit")
                                         and not p.get("load_in_4bit") else ""))
            break
    if stage == "train" and not p.get("gradient_checkpointing", True):
        tips.append("gradient_checkpointing true")
    if stage == "train":
        tips.append("shorter query_max_len / passage_max_len")
    return "; or ".join(tips) if tips else "a smaller model"


_SHOWN: set = set()


def check_stage(stage: str, args, devices, model: Optional[str] = None, total_gib: Optional[float] = None,
                arch: Optional[Arch] = None, echo: Optional[Callable[[str], None]] = None) -> Optional[dict]:
    """Print a stage's memory plan and refuse settings that cannot fit, before any model is loaded.

    ``args``: the stage's dataclass (or a dict of its parameters); ``devices``: the devices it will
    use. Nothing happens (``None``) unless a device is CUDA. ``model``: the folder whose
    config.json gives the architecture (default: the stage's model field); ``total_gib``: the
    GPU's memory (default: the smallest ``total_memory`` of the devices). Raises
    :class:`MemoryPlanError` naming the estimate, the GPU and what would fit; set
    ``EEDI_SKIP_MEMORY_PLAN=1`` to run anyway (the plan is an estimate)."""
    cuda = _cuda(devices)
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
            f"(An estimate from helpers/kaggle/memory_plan.py; set {SKIP_ENV}=1 to run anyway.)")
    return plan


# ----------------------------------------------------------------------------- the README table
SHIPPED_ARCHS = {"mine": "bge-en-icl (Mistral-7B)", "score": "bge-reranker-v2-gemma (2.5B)",
                 "train_kd": "bge-en-icl (Mistral-7B)", "compare": "bge-en-icl (Mistral-7B)",
                 "submit": "bge-en-icl (Mistral-7B)"}
STEP_STAGES = {"01_mine_hn": "mine", "02_reranker_score": "score", "03_kd_finetune": "train",
               "04_eval": "embed", "05_submit": "embed"}


def shipped_rows(profile: Path = SHIPPED_PROFILE, gpu_gib: float = T4_USABLE_GIB):
    """One row per GPU step of the shipped profile, its exact parameters through :func:`stage_terms`."""
    import yaml
    prof = yaml.safe_load(Path(profile).read_text(encoding="utf-8"))
    rows = []
    for s in prof["steps"]:
        stage = STEP_STAGES.get(s["notebook"])
        name = SHIPPED_ARCHS.get(s["name"])
        if stage is None or name is None:
            continue
        p = s.get("parameters") or {}
        world = len(_cuda(p.get("devices"))) if stage == "train" else 1
        terms, settings = stage_terms(stage, p, ARCHS[name], world)
        gib = sum(terms.values()) / GIB
        rows.append((f"shipped {Path(profile).stem}: {s['name']}", name, settings, gib, gib <= gpu_gib))
    return rows


def plan_rows(gpu_gib: float = T4_USABLE_GIB):
    rows = []
    for name, kw in [
        ("Qwen2.5-0.5B", dict(batch=8, group=8, q_len=256, p_len=64)),
        ("Qwen2.5-1.5B", dict(batch=8, group=8, q_len=256, p_len=64)),
        ("Qwen2.5-7B", dict(batch=8, group=8, q_len=256, p_len=64)),
        ("Qwen2.5-7B", dict(batch=8, group=8, q_len=256, p_len=64, four_bit=True)),
        ("bge-en-icl (Mistral-7B)", dict(batch=8, group=8, q_len=256, p_len=64)),
        ("bge-en-icl (Mistral-7B)", dict(batch=8, group=8, q_len=256, p_len=64, four_bit=True)),
        ("bge-en-icl (Mistral-7B)", dict(batch=8, group=8, q_len=512, p_len=128, four_bit=True, world=2)),
        ("Qwen2.5-1.5B", dict(batch=8, group=8, q_len=256, p_len=64, checkpointing=False)),
    ]:
        a = ARCHS[name]
        p = dict(per_device_train_batch_size=kw["batch"], train_group_size=kw["group"], query_max_len=kw["q_len"],
                 passage_max_len=kw["p_len"], load_in_4bit=kw.get("four_bit", False), lora_rank=64,
                 gradient_checkpointing=kw.get("checkpointing", True))
        terms, settings = stage_terms("train", p, a, kw.get("world", 1))
        gib = sum(terms.values()) / GIB
        rows.append(("student (train)", name, settings, gib, gib <= gpu_gib))
    for name, stage, p in [
        ("bge-reranker-v2-gemma (2.5B)", "score", dict(reranker_batch_size=16, reranker_max_length=384)),
        ("bge-reranker-v2-gemma (2.5B)", "score", dict(reranker_batch_size=64, reranker_max_length=384)),
        ("bge-en-icl (Mistral-7B)", "mine", dict(embedder_batch_size=32, query_max_len=512)),
        ("bge-en-icl (Mistral-7B)", "mine", dict(embedder_batch_size=32, query_max_len=512, load_in_4bit=True)),
    ]:
        terms, settings = stage_terms(stage, p, ARCHS[name])
        gib = sum(terms.values()) / GIB
        role = "teacher (score)" if stage == "score" else "embedder (mine)"
        rows.append((role, name, settings, gib, gib <= gpu_gib))
    return rows + shipped_rows(gpu_gib=gpu_gib) + shipped_rows(SUBMIT_PROFILE, gpu_gib)


def markdown_table(gpu_gib: float = T4_USABLE_GIB) -> str:
    lines = [f"| role | model | settings | GiB (estimate) | fits a T4 ({gpu_gib:.1f} GiB usable)? |",
             "|---|---|---|---|---|"]
    for role, name, settings, gib, fits in plan_rows(gpu_gib):
        lines.append(f"| {role} | {name} | {settings} | {gib:.1f} (estimate) | {'yes' if fits else 'no'} (estimate) |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- time (estimate)
T4_EFFECTIVE_TFLOPS = 16.0    # assumed: 25% of a T4's 65 TFLOP/s fp16 tensor-core peak, per GPU
FOUR_BIT_SLOWDOWN = 1.5       # assumed: dequantizing NF4 weights in every matmul
EEDI = dict(queries=4370, corpus=2587, test_share=0.2)   # labelled (question, wrong answer) pairs; misconceptions


def time_rows(profile: Path = SHIPPED_PROFILE, data: Mapping = EEDI):
    """Hours per stage of the shipped profile on 2 x T4, from the plan's token counts (every text
    at its maximum length: an upper estimate) x FLOPs per token (2 N forward; 6 N for a LoRA step
    with checkpointing: forward, recompute, activation gradients) / the assumed throughput. Not
    measured. -> [(stage, what, hours)]."""
    import yaml
    steps = {s["name"]: canonical_flags(s.get("parameters") or {}) for s in yaml.safe_load(Path(profile).read_text())["steps"]}
    n_q, n_c = data["queries"], data["corpus"]
    n_test = round(n_q * data["test_share"])
    emb, rr = ARCHS["bge-en-icl (Mistral-7B)"], ARCHS["bge-reranker-v2-gemma (2.5B)"]
    flops = T4_EFFECTIVE_TFLOPS * 1e12

    def rate(p):                 # FLOP/s of one GPU for a stage's precision
        return flops / (FOUR_BIT_SLOWDOWN if p.get("load_in_4bit") else 1.0)
    rows = []
    m = steps.get("mine", {})
    tok = n_q * int(_get(m, "query_max_len", 512)) + n_c * int(_get(m, "passage_max_len", 512))
    rows.append(("mine", f"{tok / 1e6:.1f} M tokens, 2 GPUs", 2 * emb.params * tok / (2 * rate(m)) / 3600))
    sc = steps.get("score", {})
    L = int(_get(sc, "reranker_max_length", 384))
    pairs = n_q * (1 + int(_get(m, "negative_number", 15)))
    tok = n_q * (L * 3 // 4) + pairs * (L // 4 + PROMPT_TOKENS)          # each query's prefix once (shared)
    rows.append(("score", f"{pairs} pairs, {tok / 1e6:.1f} M tokens, 2 GPUs", 2 * rr.params * tok / (2 * rate(sc)) / 3600))
    t = steps.get("train_kd", {})
    world = max(1, len(_cuda(t.get("devices"))))
    b, g = int(_get(t, "per_device_train_batch_size", 8)), int(_get(t, "train_group_size", 8))
    q, ps = int(_get(t, "query_max_len", 512)), int(_get(t, "passage_max_len", 512))
    epochs = int(_get(t, "num_train_epochs", 5))
    per_epoch = -(-(n_q - n_test) // (b * world))
    step_h = 6 * emb.params * b * (q + g * ps) / rate(t) / 3600
    rows.append(("train_kd", f"{per_epoch} steps/epoch x {epochs} epochs, {b * (q + g * ps)} tokens/step/GPU",
                 per_epoch * epochs * step_h))
    ev = 2 * emb.params * (n_test * q + n_c * ps) / rate(t) / 3600
    rows.append(("train_kd eval", f"{epochs} x ({n_test} queries + {n_c} passages), rank 0", epochs * ev))
    c = steps.get("compare", {})
    tok = n_test * int(_get(c, "query_max_len", 512)) + n_c * int(_get(c, "passage_max_len", 512))
    rows.append(("compare", f"base + 1 merged model, {tok / 1e6:.2f} M tokens each", 2 * 2 * emb.params * tok / rate(c) / 3600))
    return rows


def time_table(profile: Path = SHIPPED_PROFILE) -> str:
    rows = time_rows(profile)
    lines = ["| stage | work | hours (estimate) |", "|---|---|---|"]
    lines += [f"| {s} | {w} | {h:.1f} (estimate) |" for s, w, h in rows]
    lines.append(f"| total | | {sum(h for _, _, h in rows):.1f} (estimate) |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys
    print(time_table() if "--time" in sys.argv[1:] else markdown_table())
