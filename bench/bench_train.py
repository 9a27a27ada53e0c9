"""Training speed and peak memory of the kd_finetune loop on CPU, with and without gradient checkpointing.

    nice -n 10 python bench/bench_train.py [--steps 6] [--batch 4] [--group 4] [--threads 2]

Model demo:smollm2-135m-instruct (fp32), LoRA r=64 alpha=32 on q/k/v/o/gate/up/down, kl_div KD,
decoder-only-icl without in-context examples, query max 256 / passage max 64 tokens. Inputs: the
demo data's train queries (model_output/demo/data) with negatives drawn from its corpus and random
teacher scores (the speed does not depend on where negatives come from). Each setting runs in its
own process through :func:`helpers.train.fit`, so its peak RSS (``resource.getrusage``) is its own;
steps/s = optimizer steps / the loop's own time (the first step included).
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_rows(n, group):
    from helpers.io_utils import load_corpus, read_jsonl
    data = ROOT / "model_output/demo/data"
    rng = random.Random(0)
    ids, texts = load_corpus(data / "corpus.jsonl")
    rows = read_jsonl(data / "train_queries.jsonl")[:n]
    for r in rows:
        pick = [i for i in rng.sample(range(len(ids)), group + 2) if ids[i] not in r["pos_ids"]][:group]
        r["neg"], r["neg_ids"] = [texts[i] for i in pick], [ids[i] for i in pick]
        r["pos_scores"], r["neg_scores"] = [3.0], [rng.uniform(-3, 3) for _ in pick]
    return rows


def one(gc: bool, steps: int, batch: int, group: int, threads: int) -> dict:
    import resource
    import torch
    torch.set_num_threads(threads)
    from helpers.kd_finetune import encode
    from helpers.embedder import load_embedding_model
    from helpers.losses import EmbedderLoss
    from helpers.train import TrainConfig, add_lora, fit
    from helpers.train_data import GroupBatches, GroupDataConfig
    model, tok = load_embedding_model("demo:smollm2-135m-instruct", "decoder-only-icl", "cpu", torch.float32)
    tok.add_eos_token = True
    cfg = TrainConfig(output_dir=tempfile.mkdtemp(prefix="bench_train_"), num_train_epochs=1,
                      gradient_checkpointing=gc, lora_rank=64, lora_alpha=32, show_progress=False)
    model = add_lora(model, cfg)
    dcfg = GroupDataConfig(train_group_size=group, query_max_len=256, passage_max_len=64, append_eos=False)
    gb = GroupBatches(make_rows(steps * batch, group), tok, dcfg, batch, seed=0)
    loss = EmbedderLoss()
    fn = lambda m, b: loss(encode(m, b["queries"], "last_token"), encode(m, b["passages"], "last_token"),
                           b.get("teacher_scores"))
    rows = fit(model, fn, gb, len(gb), cfg)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    return {"gradient_checkpointing": gc, "steps": rows[0]["global_step"],
            "steps_per_s": rows[0]["global_step"] / rows[0]["train_seconds"],
            "s_per_step": rows[0]["train_seconds"] / rows[0]["global_step"], "peak_rss_mib": round(rss)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--group", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--one", choices=["True", "False"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print("RESULT " + json.dumps(one(a.one == "True", a.steps, a.batch, a.group, a.threads)))
        return
    res = []
    for gc in ("False", "True"):
        out = subprocess.run([sys.executable, __file__, "--one", gc, "--steps", str(a.steps), "--batch",
                              str(a.batch), "--group", str(a.group), "--threads", str(a.threads)],
                             capture_output=True, text=True, check=True).stdout
        res.append(json.loads(out.split("RESULT ", 1)[1]))
    print(f"demo:smollm2-135m-instruct, CPU fp32, {a.threads} threads, batch {a.batch} queries x group "
          f"{a.group} passages, {a.steps} optimizer steps, LoRA r=64 (all 7 projections)\n")
    print("| gradient checkpointing | optimizer steps/s | s/step | peak RSS (MiB) |")
    print("|---|---|---|---|")
    for r in res:
        print(f"| {r['gradient_checkpointing']} | {r['steps_per_s']:.3f} | {r['s_per_step']:.2f} | {r['peak_rss_mib']} |")


if __name__ == "__main__":
    main()
