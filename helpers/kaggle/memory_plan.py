"""GPU memory estimates for a student (LoRA training) and a teacher (scoring) on one GPU.

Estimates from parameter counts and activation formulas, not measurements:
- weights: params x bytes (fp16/bf16 2, 4-bit NF4 ~0.56 with its scales);
- LoRA: r x (d_in + d_out) per target matrix per layer; fp32 weights + grads + two Adam moments = 16 B each;
- activations per layer (sdpa/flash attention, no seq^2 term): ~34 x tokens x hidden bytes in 16-bit
  (Korthikanti et al. 2022); with gradient checkpointing only each layer's input (2 x tokens x hidden)
  is kept, plus one layer's activations during recomputation;
- CUDA context and allocator slack: 1.0 GiB.

``python -m helpers.kaggle.memory_plan`` prints the README table.
"""
from __future__ import annotations

from dataclasses import dataclass

GIB = 1024 ** 3
CONTEXT_GIB = 1.0


@dataclass(frozen=True)
class Arch:
    name: str
    params: float          # total parameters
    hidden: int
    layers: int
    intermediate: int
    kv_hidden: int         # hidden size of k/v projections (grouped-query attention)


ARCHS = {
    "Qwen2.5-0.5B": Arch("Qwen2.5-0.5B", 0.49e9, 896, 24, 4864, 128),
    "Qwen2.5-1.5B": Arch("Qwen2.5-1.5B", 1.54e9, 1536, 28, 8960, 256),
    "Qwen2.5-7B": Arch("Qwen2.5-7B", 7.6e9, 3584, 28, 18944, 512),
    "bge-en-icl (Mistral-7B)": Arch("bge-en-icl (Mistral-7B)", 7.1e9, 4096, 32, 14336, 1024),
    "bge-reranker-v2-gemma (2.5B)": Arch("bge-reranker-v2-gemma (2.5B)", 2.5e9, 2048, 18, 16384, 256),
}


def lora_params(a: Arch, rank: int) -> float:
    h, i, kv = a.hidden, a.intermediate, a.kv_hidden
    per_layer = rank * ((h + h) * 2 + (h + kv) * 2 + (h + i) * 3)     # q,o ; k,v ; gate,up,down
    return per_layer * a.layers


def train_memory_gib(a: Arch, batch: int, group: int, q_len: int, p_len: int, rank: int = 64,
                     four_bit: bool = False, checkpointing: bool = True) -> float:
    tokens = batch * (q_len + group * p_len)
    weights = a.params * (0.56 if four_bit else 2.0)
    lora = lora_params(a, rank) * 16
    if checkpointing:
        acts = 2 * tokens * a.hidden * a.layers + 34 * tokens * a.hidden + 4 * tokens * a.intermediate
    else:
        acts = (34 * tokens * a.hidden + 4 * tokens * a.intermediate) * a.layers
    return (weights + lora + acts) / GIB + CONTEXT_GIB


def score_memory_gib(a: Arch, batch: int, length: int, four_bit: bool = False) -> float:
    """Inference with the Yes-row projection (no vocabulary-sized logits), one layer live at a time."""
    tokens = batch * length
    kv_cache = 2 * tokens * a.kv_hidden * a.layers * 2
    acts = 2 * tokens * (4 * a.hidden + 3 * a.intermediate)
    return (a.params * (0.56 if four_bit else 2.0) + kv_cache + acts) / GIB + CONTEXT_GIB


def plan_rows(gpu_gib: float = 15.0):
    rows = []
    for name, kw in [
        ("Qwen2.5-0.5B", dict(batch=8, group=8, q_len=256, p_len=64)),
        ("Qwen2.5-1.5B", dict(batch=8, group=8, q_len=256, p_len=64)),
        ("Qwen2.5-7B", dict(batch=8, group=8, q_len=256, p_len=64)),
        ("Qwen2.5-7B", dict(batch=8, group=8, q_len=256, p_len=64, four_bit=True)),
        ("bge-en-icl (Mistral-7B)", dict(batch=8, group=8, q_len=256, p_len=64)),
        ("bge-en-icl (Mistral-7B)", dict(batch=8, group=8, q_len=256, p_len=64, four_bit=True)),
        ("bge-en-icl (Mistral-7B)", dict(batch=4, group=8, q_len=512, p_len=64, four_bit=True)),
        ("Qwen2.5-1.5B", dict(batch=8, group=8, q_len=256, p_len=64, checkpointing=False)),
    ]:
        a = ARCHS[name]
        gib = train_memory_gib(a, **kw)
        settings = (f"batch {kw['batch']}, group {kw['group']}, q {kw['q_len']} / p {kw['p_len']} tokens, "
                    f"{'checkpointing' if kw.get('checkpointing', True) else 'no checkpointing'}, "
                    f"{'4-bit base' if kw.get('four_bit') else 'fp16 base'}, LoRA r=64")
        rows.append(("student (train)", name, settings, gib, gib <= gpu_gib))
    for name, kw in [
        ("bge-reranker-v2-gemma (2.5B)", dict(batch=16, length=384)),
        ("bge-reranker-v2-gemma (2.5B)", dict(batch=64, length=384)),
        ("bge-en-icl (Mistral-7B)", dict(batch=16, length=512)),
        ("bge-en-icl (Mistral-7B)", dict(batch=16, length=512, four_bit=True)),
    ]:
        a = ARCHS[name]
        gib = score_memory_gib(a, **kw)
        settings = (f"batch {kw['batch']}, {kw['length']} tokens, "
                    f"{'4-bit' if kw.get('four_bit') else 'fp16'}, inference")
        role = "teacher (score)" if "reranker" in name else "embedder (mine)"
        rows.append((role, name, settings, gib, gib <= gpu_gib))
    return rows


def markdown_table(gpu_gib: float = 15.0) -> str:
    lines = [f"| role | model | settings | GiB (estimate) | fits a T4 ({gpu_gib:.0f} GiB usable)? |",
             "|---|---|---|---|---|"]
    for role, name, settings, gib, fits in plan_rows(gpu_gib):
        lines.append(f"| {role} | {name} | {settings} | {gib:.1f} (estimate) | {'yes' if fits else 'no'} (estimate) |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
