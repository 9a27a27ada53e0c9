"""The README's memory plan and time tables (estimates, not measurements) for a Kaggle T4.

    python bench/memory_tables.py           # "Memory plan (T4, 16 GB)": GiB per GPU, fits a T4?
    python bench/memory_tables.py --time    # "Two sessions": hours per stage of configs/kaggle_eedi.yaml

Every row goes through :func:`helpers.common.memory.stage_terms`, the function each GPU stage calls
(:func:`~helpers.common.memory.check_stage`) before it loads a model. A profile step names only some
parameters; the rest are filled from the stage's own dataclass (:func:`with_defaults`), so the table
and the stage read the same defaults.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from pathlib import Path
from typing import Mapping, Optional

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:            # run as a script: the repository's helpers
    sys.path.insert(0, str(REPO_ROOT))

from helpers.common.memory import (GIB, GPU_TFLOPS, PROMPT_TOKENS, Arch, cuda_devices,  # noqa: E402
                                   stage_terms)

T4_USABLE_GIB = 14.7          # torch.cuda.get_device_properties(i).total_memory of a Kaggle T4: 14.74 GiB
SHIPPED_PROFILE = REPO_ROOT / "configs" / "kaggle_eedi.yaml"
SUBMIT_PROFILE = REPO_ROOT / "configs" / "submit.yaml"

ARCHS = {
    "Qwen2.5-0.5B": Arch("Qwen2.5-0.5B", 0.49e9, 896, 24, 4864, 128, 151936),
    "Qwen2.5-1.5B": Arch("Qwen2.5-1.5B", 1.54e9, 1536, 28, 8960, 256, 151936),
    "Qwen2.5-7B": Arch("Qwen2.5-7B", 7.6e9, 3584, 28, 18944, 512, 152064),
    "bge-en-icl (Mistral-7B)": Arch("bge-en-icl (Mistral-7B)", 7.1e9, 4096, 32, 14336, 1024, 32003),
    "bge-reranker-v2-gemma (2.5B)": Arch("bge-reranker-v2-gemma (2.5B)", 2.5e9, 2048, 18, 16384, 256, 256000),
}

# ----------------------------------------------------------------------------- a step's complete parameters
STAGE_ARGS = {"mine": "helpers.mine.hn_mine.HnMineArgs", "score": "helpers.rerank.add_reranker_score.ScoreArgs",
              "train": "helpers.train.kd_finetune.KDArgs", "embed": "helpers.embed.args.EmbedderArgs"}
STEP_STAGES = {"01_mine_hn": "mine", "02_reranker_score": "score", "03_kd_finetune": "train",
               "04_eval": "embed", "05_submit": "embed"}
NOTEBOOK_ARGS = {"01_mine_hn": STAGE_ARGS["mine"], "02_reranker_score": STAGE_ARGS["score"],
                 "03_kd_finetune": STAGE_ARGS["train"], "04_eval": "helpers.eval.evaluate.EvalArgs",
                 "05_submit": "helpers.eval.submission.SubmissionArgs"}


def _class(dotted: str):
    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def dataclass_defaults(cls) -> dict:
    """``{field: default}`` of a stage dataclass (fields without a default are left out)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def with_defaults(stage: str, partial: Mapping, args_class: Optional[str] = None) -> dict:
    """A step's parameters (any spelling) completed with the defaults of the stage's dataclass
    (``args_class``, dotted; default: the stage's own, :data:`STAGE_ARGS`)."""
    from helpers.common.cli import canonical_flags
    cls = _class(args_class or STAGE_ARGS[stage])
    p = canonical_flags(dict(partial))          # a profile's other spellings, as run_all reads them
    if stage in ("mine", "embed") and "batch_size" in p:     # FlagEmbedding hn_mine's name
        b = p.pop("batch_size")
        if p.get("embedder_batch_size") is None:
            p["embedder_batch_size"] = b
    out = {**dataclass_defaults(cls), **p}
    if cls.__name__ == "KDArgs":            # the student: settings left None are its class defaults
        from helpers.train.kd_finetune import class_defaults
        for k, v in class_defaults(out["embedder_model_class"]).items():
            if out.get(k) is None:
                out[k] = v
    return out


def _steps(profile: Path) -> list[dict]:
    import yaml
    return yaml.safe_load(Path(profile).read_text(encoding="utf-8"))["steps"]


# ----------------------------------------------------------------------------- memory (estimate)
SHIPPED_ARCHS = {"mine": "bge-en-icl (Mistral-7B)", "score": "bge-reranker-v2-gemma (2.5B)",
                 "train_kd": "bge-en-icl (Mistral-7B)", "compare": "bge-en-icl (Mistral-7B)",
                 "submit": "bge-en-icl (Mistral-7B)"}


def shipped_rows(profile: Path = SHIPPED_PROFILE, gpu_gib: float = T4_USABLE_GIB):
    """One row per GPU step of the shipped profile, its exact parameters (the rest: the stage's
    defaults) through :func:`stage_terms`."""
    rows = []
    for s in _steps(profile):
        stage = STEP_STAGES.get(s["notebook"])
        name = SHIPPED_ARCHS.get(s["name"])
        if stage is None or name is None:
            continue
        p = with_defaults(stage, s.get("parameters") or {}, NOTEBOOK_ARGS[s["notebook"]])
        world = len(cuda_devices(p.get("devices"))) if stage == "train" else 1
        terms, settings = stage_terms(stage, p, ARCHS[name], world)
        gib = sum(terms.values()) / GIB
        rows.append((f"shipped {Path(profile).stem}: {s['name']}", name, settings, gib, gib <= gpu_gib))
        block = (s.get("parameters") or {}).get("reranker")
        if s["notebook"] == "05_submit" and block:       # the optional second stage, after the student is released
            p = with_defaults("score", block, "helpers.eval.cascade.RerankStage")
            rr = "bge-reranker-v2-gemma (2.5B)"
            terms, settings = stage_terms("score", p, ARCHS[rr])
            gib = sum(terms.values()) / GIB
            rows.append((f"shipped {Path(profile).stem}: {s['name']} reranker (var reranker set)", rr, settings,
                         gib, gib <= gpu_gib))
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
        p = with_defaults("train", dict(
            per_device_train_batch_size=kw["batch"], train_group_size=kw["group"], query_max_len=kw["q_len"],
            passage_max_len=kw["p_len"], load_in_4bit=kw.get("four_bit", False), lora_rank=64,
            gradient_checkpointing=kw.get("checkpointing", True)))
        terms, settings = stage_terms("train", p, a, kw.get("world", 1))
        gib = sum(terms.values()) / GIB
        rows.append(("student (train)", name, settings, gib, gib <= gpu_gib))
    for name, stage, p in [
        ("bge-reranker-v2-gemma (2.5B)", "score", dict(reranker_batch_size=16, reranker_max_length=384)),
        ("bge-reranker-v2-gemma (2.5B)", "score", dict(reranker_batch_size=64, reranker_max_length=384)),
        ("bge-en-icl (Mistral-7B)", "mine", dict(embedder_batch_size=32, query_max_len=512)),
        ("bge-en-icl (Mistral-7B)", "mine", dict(embedder_batch_size=32, query_max_len=512, load_in_4bit=True)),
    ]:
        terms, settings = stage_terms(stage, with_defaults(stage, p), ARCHS[name])
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
T4_EFFECTIVE_TFLOPS = GPU_TFLOPS["T4"]    # assumed: 25% of a T4's 65 TFLOP/s fp16 tensor-core peak, per GPU
FOUR_BIT_SLOWDOWN = 1.5       # assumed: dequantizing NF4 weights in every matmul
EEDI = dict(queries=4370, corpus=2587, test_share=0.2)   # labelled (question, wrong answer) pairs; misconceptions


def time_rows(profile: Path = SHIPPED_PROFILE, data: Mapping = EEDI):
    """Hours per stage of the shipped profile on 2 x T4, from the plan's token counts (every text
    at its maximum length: an upper estimate) x FLOPs per token (2 N forward; 6 N for a LoRA step
    with checkpointing: forward, recompute, activation gradients) / the assumed throughput. Not
    measured. -> [(stage, what, hours)]."""
    by_name = {s["name"]: s for s in _steps(profile)}

    def step(name: str, notebook: str) -> dict:     # a step's parameters, the rest its stage's defaults
        params = (by_name.get(name) or {}).get("parameters") or {}
        return with_defaults(STEP_STAGES[notebook], params, NOTEBOOK_ARGS[notebook])
    n_q, n_c = data["queries"], data["corpus"]
    n_test = round(n_q * data["test_share"])
    emb, rr = ARCHS["bge-en-icl (Mistral-7B)"], ARCHS["bge-reranker-v2-gemma (2.5B)"]
    flops = T4_EFFECTIVE_TFLOPS * 1e12

    def rate(p):                 # FLOP/s of one GPU for a stage's precision
        return flops / (FOUR_BIT_SLOWDOWN if p.get("load_in_4bit") else 1.0)
    rows = []
    m = step("mine", "01_mine_hn")
    tok = n_q * int(m["query_max_len"]) + n_c * int(m["passage_max_len"])
    rows.append(("mine", f"{tok / 1e6:.1f} M tokens, 2 GPUs", 2 * emb.params * tok / (2 * rate(m)) / 3600))
    sc = step("score", "02_reranker_score")
    L = int(sc["reranker_max_length"])
    pairs = n_q * (1 + int(m["negative_number"]))
    tok = n_q * (L * 3 // 4) + pairs * (L // 4 + PROMPT_TOKENS)          # each query's prefix once (shared)
    rows.append(("score", f"{pairs} pairs, {tok / 1e6:.1f} M tokens, 2 GPUs", 2 * rr.params * tok / (2 * rate(sc)) / 3600))
    t = step("train_kd", "03_kd_finetune")
    world = max(1, len(cuda_devices(t.get("devices"))))
    b, g = int(t["per_device_train_batch_size"]), int(t["train_group_size"])
    q, ps = int(t["query_max_len"]), int(t["passage_max_len"])
    epochs = int(t["num_train_epochs"])
    per_epoch = -(-(n_q - n_test) // (b * world))
    step_h = 6 * emb.params * b * (q + g * ps) / rate(t) / 3600
    rows.append(("train_kd", f"{per_epoch} steps/epoch x {epochs} epochs, {b * (q + g * ps)} tokens/step/GPU",
                 per_epoch * epochs * step_h))
    ev = 2 * emb.params * (n_test * q + n_c * ps) / rate(t) / 3600
    rows.append(("train_kd eval", f"{epochs} x ({n_test} queries + {n_c} passages), rank 0", epochs * ev))
    c = step("compare", "04_eval")
    tok = n_test * int(c["query_max_len"]) + n_c * int(c["passage_max_len"])
    rows.append(("compare", f"base + the chosen adapter, {tok / 1e6:.2f} M tokens each", 2 * 2 * emb.params * tok / rate(c) / 3600))
    return rows


def submit_time_rows(profile: Path = SUBMIT_PROFILE, rows_hidden: Optional[int] = None,
                     query_tokens: int = 150, passage_tokens: int = 20):
    """Hours of the submission kernel on one T4 for the hidden test (~1,800 wrong answers): the
    student embeds the rows and the misconceptions, then the optional reranker re-orders each row's
    top k (:func:`helpers.eval.cascade.time_estimate`, the line the kernel prints). Texts at an
    assumed length (``query_tokens``, ``passage_tokens``); not measured."""
    from helpers.eval.cascade import stage_from
    from helpers.eval.rerank_submit import HIDDEN_TEST_ROWS, time_estimate
    n = rows_hidden or HIDDEN_TEST_ROWS
    sub = next(s for s in _steps(profile) if s["notebook"] == "05_submit")
    p = with_defaults("embed", sub.get("parameters") or {}, NOTEBOOK_ARGS["05_submit"])
    emb, rr = ARCHS["bge-en-icl (Mistral-7B)"], ARCHS["bge-reranker-v2-gemma (2.5B)"]
    rate = GPU_TFLOPS["T4"] * 1e12 / (FOUR_BIT_SLOWDOWN if p.get("load_in_4bit") else 1.0)
    tok = n * int(p["query_max_len"]) + EEDI["corpus"] * int(p["passage_max_len"])
    rows = [("submit: embed", f"{n} rows + {EEDI['corpus']} misconceptions at their max length, 1 T4",
             2 * emb.params * tok / rate / 3600)]
    block = dict((sub.get("parameters") or {}).get("reranker") or {}, reranker_name_or_path="set")
    stage = stage_from(block)
    sec = time_estimate(stage, ["x" * 4 * query_tokens], ["x" * 4 * passage_tokens], n, "cuda:0",
                        params=rr.linear_params, gpu="T4")
    rows.append(("submit: rerank (var reranker set)", f"{n} rows x top {stage.top_k}, bge-reranker-v2-gemma, "
                 f"~{query_tokens}-token queries, shared prefix, 1 T4", sec / 3600))
    return rows


def time_table(profile: Path = SHIPPED_PROFILE) -> str:
    rows = time_rows(profile)
    lines = ["| stage | work | hours (estimate) |", "|---|---|---|"]
    lines += [f"| {s} | {w} | {h:.1f} (estimate) |" for s, w, h in rows]
    lines.append(f"| total | | {sum(h for _, _, h in rows):.1f} (estimate) |")
    sub = submit_time_rows()
    lines += [f"| {s} | {w} | {h:.2f} (estimate) |" for s, w, h in sub]
    lines.append(f"| submission kernel total | 9-hour limit | {sum(h for _, _, h in sub):.2f} (estimate) |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--time", action="store_true", help="the time table (hours per stage) instead of memory")
    args = ap.parse_args(argv)
    print(time_table() if args.time else markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
