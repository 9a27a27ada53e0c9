"""Seconds per step and peak GPU memory of the shipped QLoRA training, from a few random layers.

    python bench/layer_probe.py --out /tmp/probe            # on a GPU (tools/gpu_check.sh runs it)
    python bench/layer_probe.py --out /tmp/probe --tiny     # the same code path on a CPU, tiny shapes

A 7B model cannot be downloaded on these machines, but its cost is mostly per layer. This builds
random models with Mistral-7B's layer shapes (bge-en-icl: hidden 4096, MLP 14336, 32 heads, 8 k/v
heads) and ``--layers`` (default 2 and 4) layers, saves them in fp16, and trains each for
``--steps`` optimizer steps with **the real stage** (``python -m helpers.train.kd_finetune``,
one process, ``EEDI_REPORT_PEAK=1``) at the shipped profile's settings (``configs/kaggle_eedi.yaml``,
step ``train_kd``: batch, group, lengths, LoRA, 4-bit, checkpointing; one device) on synthetic
groups whose texts fill ``query_max_len`` / ``passage_max_len``. The two sizes give a per-layer
cost, scaled to 32 layers: ``x(32) = x(a) + (x(b) - x(a)) / (b - a) * (32 - a)``, printed beside the
memory plan's estimate for the same settings (:func:`helpers.common.memory.stage_memory_gib`).
The tokenizer is SmolLM2's (the demo model's; vocab 49,152 instead of 32,003: the embedding
matrix is 0.13 GiB larger in 16-bit than bge-en-icl's).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MISTRAL = dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8)
TINY = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2)
# what the probe changes from the shipped step: its files, one device, one epoch, no evaluation or merge
OVERRIDES = {"eval_data": None, "corpus_file": None, "num_train_epochs": 1, "save_merged_lora_model": False,
             "devices": "0", "show_progress": False, "logging_steps": 1, "overwrite_output_dir": True}


def shipped_train_params(tiny: bool) -> dict:
    """The shipped ``train_kd`` step's parameters (the KDArgs fields it sets), with :data:`OVERRIDES`."""
    from bench.memory_tables import _steps
    step = next(s for s in _steps(ROOT / "configs" / "kaggle_eedi.yaml") if s["name"] == "train_kd")
    p = {k: v for k, v in step["parameters"].items() if not (isinstance(v, str) and "{" in v)}
    p.update(OVERRIDES)
    if tiny:      # a CPU: fp32, no 4-bit, short texts, small batch
        p.update(devices="cpu", load_in_4bit=False, per_device_train_batch_size=2, query_max_len=32,
                 passage_max_len=8, lora_rank=4)
    return p


def make_model(folder: Path, layers: int, shapes: dict, device: str) -> None:
    """A random Mistral of ``layers`` layers and SmolLM2's tokenizer, saved in fp16 (once per folder)."""
    if (folder / "config.json").exists():
        return
    import torch
    from transformers import AutoTokenizer, MistralConfig, MistralModel
    from helpers.common.models import resolve_model
    trust_remote_code = False                # a known tokenizer folder: no model code
    tok = AutoTokenizer.from_pretrained(resolve_model("demo:smollm2-135m-instruct"), trust_remote_code=trust_remote_code)
    cfg = MistralConfig(**shapes, num_hidden_layers=layers, vocab_size=len(tok), max_position_embeddings=4096,
                        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = MistralModel(cfg).to(torch.float16 if device != "cpu" else torch.float32)
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    tmp.rename(folder)


def make_data(path: Path, n_queries: int, group: int) -> None:
    """Synthetic scored groups: texts long enough to fill any length (truncated by the stage)."""
    rng = random.Random(0)
    words = ["fraction", "angle", "area", "negative", "multiply", "divide", "ratio", "graph", "prime", "sum"]
    text = lambda n: " ".join(rng.choice(words) for _ in range(n))
    rows = [{"query_id": f"q{i}", "query": text(1200), "pos": [text(200)], "pos_ids": [f"p{i}"],
             "neg": [text(200) for _ in range(group - 1)], "neg_ids": [f"n{i}_{j}" for j in range(group - 1)],
             "pos_scores": [rng.uniform(2, 4)], "neg_scores": [rng.uniform(-2, 2) for _ in range(group - 1)],
             "prompt": "Retrieve the misconception."} for i in range(n_queries)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def train_once(model: Path, data: Path, out: Path, p: dict) -> dict:
    """The real stage for one epoch -> seconds per optimizer step (after the first) and peak GiB."""
    flags = {**p, "model_name_or_path": str(model), "train_data": str(data), "output_dir": str(out)}
    cmd = [sys.executable, "-m", "helpers.train.kd_finetune"]
    for k, v in flags.items():
        cmd += [f"--{k}", "None" if v is None else str(v)]
    env = {**os.environ, "EEDI_REPORT_PEAK": "1"}
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    (out.parent / f"{out.name}.log").write_text(log)
    if proc.returncode:
        raise RuntimeError(f"kd_finetune failed on {model.name} (exit {proc.returncode}):\n{log[-3000:]}")
    hist = json.loads((out / "loss_history.json").read_text())
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()][-1]
    steps = int(metrics["global_step"])
    peak = [float(x) for x in re.findall(r"peak GPU memory.*?([0-9.]+) GiB", log)]
    return {"steps": steps, "train_seconds": metrics["train_seconds"], "wall_s": round(time.time() - t0, 1),
            "s_per_step": metrics["train_seconds"] / max(1, steps), "peak_gib": max(peak) if peak else None,
            "history_rows": len(hist)}


def scale(a: int, xa, b: int, xb, to: int = 32):
    if xa is None or xb is None:
        return None
    return xa + (xb - xa) / (b - a) * (to - a)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="a scratch folder (random models, data, runs, probe.json)")
    ap.add_argument("--layers", default="2,4", help="two layer counts to extrapolate from")
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per run")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU: the code path, not the numbers")
    a = ap.parse_args(argv)
    la, lb = sorted(int(x) for x in a.layers.split(","))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    p = shipped_train_params(a.tiny)
    device = "cpu" if a.tiny else "cuda"
    data = out / "train.jsonl"
    make_data(data, a.steps * int(p["per_device_train_batch_size"]), int(p["train_group_size"]))
    runs = {}
    for L in (la, lb):
        model = out / f"mistral_shapes_{L}l{'_tiny' if a.tiny else ''}"
        make_model(model, L, TINY if a.tiny else MISTRAL, device)
        runs[L] = train_once(model, data, out / f"run_{L}l", p)
        print(f"{L} layers: {runs[L]}", flush=True)
    from bench.memory_tables import with_defaults
    from bench.memory_tables import ARCHS
    from helpers.common.memory import GIB, stage_terms
    arch = ARCHS["bge-en-icl (Mistral-7B)"]
    terms, settings = stage_terms("train", with_defaults("train", p), arch)
    result = {"settings": settings, "runs": runs, "tiny": a.tiny,
              "s_per_step_32": scale(la, runs[la]["s_per_step"], lb, runs[lb]["s_per_step"]),
              "peak_gib_32": scale(la, runs[la]["peak_gib"], lb, runs[lb]["peak_gib"]),
              "plan_gib_32": round(sum(terms.values()) / GIB, 2)}
    (out / "probe.json").write_text(json.dumps(result, indent=1))
    print(f"Mistral-7B shapes, {settings}, one device: scaled to 32 layers "
          f"{result['s_per_step_32'] if result['s_per_step_32'] is not None else float('nan'):.2f} s/step, peak "
          f"{result['peak_gib_32'] if result['peak_gib_32'] is not None else float('nan'):.2f} GiB measured; "
          f"memory plan {result['plan_gib_32']:.2f} GiB" + (" (tiny shapes on a CPU: the path only)" if a.tiny else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
