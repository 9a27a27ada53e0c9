"""Training speed of the kd_finetune loop on CPU.

    nice -n 10 python bench/bench_train.py [--steps 6] [--batch 4] [--group 4] [--threads 2]
    nice -n 10 python bench/bench_train.py --vs-sentence-transformers [--steps 4] [--rounds 2] [--data q.jsonl]
    nice -n 10 python bench/bench_train.py --teacher --data mined_r0/train_mined.jsonl [--steps 12] [--rounds 2]

Default mode (decoder path), below. ``--vs-sentence-transformers``: see :func:`vs_st`; ``--teacher``:
:func:`teacher`.

Model demo:smollm2-135m-instruct (fp32), LoRA r=64 alpha=32 on q/k/v/o/gate/up/down, kl_div KD,
decoder-only-icl without in-context examples, query max 256 / passage max 64 tokens. Inputs: the
demo data's train queries (model_output/demo/data) with negatives drawn from its corpus and random
teacher scores (the speed does not depend on where negatives come from). Each setting runs in its
own process through :func:`helpers.train.loop.fit`, so its peak RSS (``resource.getrusage``) is its own;
steps/s = optimizer steps / the loop's own time (the first step included).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
trust_remote_code = False     # the bench models are local folders; no model code runs
sys.path.insert(0, str(ROOT))


def demo_data() -> Path:
    """model_output/demo/data when the demo ran; else data/demo split once into a temp folder."""
    data = ROOT / "model_output/demo/data"
    if (data / "train_queries.jsonl").exists():
        return data
    data = Path(tempfile.gettempdir()) / "bench_train_demo_data"
    if not (data / "train_queries.jsonl").exists():
        subprocess.run([sys.executable, "-m", "helpers.data.prepare_data", "--input_dir", str(ROOT / "data/demo"),
                        "--output_dir", str(data), "--split", "question", "--test_fraction", "0.2", "--seed", "42"],
                       cwd=ROOT, check=True, capture_output=True)
    return data


def make_rows(n, group, queries=None):
    """``n`` train queries (Eedi text) with ``group`` negatives drawn from the corpus and random
    teacher scores (the speed does not depend on where negatives come from). ``queries``: a
    queries JSONL (prepare_data's or a mined file); its corpus.jsonl beside it, else the demo's."""
    from helpers.common.io_utils import load_corpus, read_jsonl
    data = demo_data()
    rng = random.Random(0)
    corpus = Path(queries).with_name("corpus.jsonl") if queries else data / "corpus.jsonl"
    ids, texts = load_corpus(corpus if corpus.exists() else data / "corpus.jsonl")
    rows = read_jsonl(queries or data / "train_queries.jsonl")
    rows = (rows * (n // max(1, len(rows)) + 1))[:n]
    rows = [dict(r) for r in rows]
    for r in rows:
        pick = [i for i in rng.sample(range(len(ids)), group + 2) if ids[i] not in r["pos_ids"]][:group]
        r["neg"], r["neg_ids"] = [texts[i] for i in pick], [ids[i] for i in pick]
        r["pos_scores"], r["neg_scores"] = [3.0], [rng.uniform(-3, 3) for _ in pick]
    return rows


def one(gc: bool, steps: int, batch: int, group: int, threads: int, share: bool = False) -> dict:
    import resource
    import torch
    torch.set_num_threads(threads)
    from helpers.train.kd_finetune import encode
    from helpers.embed.loading import load_embedding_model
    from helpers.embed.prefix import PrefixSharing, common_prefix_len
    from helpers.train.losses import EmbedderLoss
    from helpers.train.kd_finetune import KDArgs
    from helpers.train.lora import add_lora
    from helpers.train.loop import fit
    from helpers.train.groups import GroupBatches
    model, tok = load_embedding_model("demo:smollm2-135m-instruct", "decoder-only-icl", "cpu", torch.float32)
    tok.add_eos_token = True
    cfg = KDArgs(output_dir=tempfile.mkdtemp(prefix="bench_train_"), num_train_epochs=1, gradient_checkpointing=gc,
                 lora_rank=64, lora_alpha=32, show_progress=False, train_group_size=group, query_max_len=256,
                 passage_max_len=64, max_examples=0)
    model = add_lora(model, cfg)
    gb = GroupBatches(make_rows(steps * batch, group), tok, cfg, batch, seed=0, append_eos=False)
    batches = list(gb(1))
    loss = EmbedderLoss()
    prefix = PrefixSharing(share)
    fn = lambda m, b: loss(encode(m, b["queries"], "last_token", True, prefix=prefix),
                           encode(m, b["passages"], "last_token", True, prefix=prefix), b.get("teacher_scores"))
    times = []
    rows = fit(model, fn, gb, len(gb), cfg, on_log=lambda r: "kind" not in r and times.append(time.perf_counter()))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    per = [b - a for a, b in zip(times, times[1:])] or [rows[0]["train_seconds"]]
    s_step = statistics.median(per)
    rest = max(1, len(batches) - 1)
    flops = sum(step_flops(model, b, lora=True) for b in batches[1:]) / rest
    shared = bool(prefix.verdict) and not gc
    run = flops if not shared else sum(step_flops(model, b, lora=True, prefix=common_prefix_len(
        b["queries"]["input_ids"], b["queries"]["attention_mask"])) for b in batches[1:]) / rest
    peak = matmul_peak()
    return {"gradient_checkpointing": gc, "shared_prefix": shared, "steps": rows[0]["global_step"],
            "steps_per_s": 1 / s_step, "s_per_step": s_step, "peak_rss_mib": round(rss),
            "useful_gflop": flops / 1e9, "run_gflop": run / 1e9, "peak_gflops": peak / 1e9,
            "share_of_peak": run / s_step / peak, "plain_equivalent_share": flops / s_step / peak}


def matmul_peak(n: int = 2048, reps: int = 5) -> float:
    """This machine's fp32 matmul rate (FLOP/s): best of ``reps`` n x n x n products, same threads."""
    import torch
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def step_flops(model, batch: dict, lora: bool, prefix: int = 0) -> float:
    """Useful FLOPs of one training step on ``batch``: real tokens only (no padding, no recompute).
    Forward: 2 x (base linear weights) per token + attention (QK^T, AV: 4 x n^2 x hidden per layer,
    halved for causal models); backward: 2x forward for full fine-tuning; with LoRA the frozen base
    needs input gradients only (1x its forward) and the adapters 2x theirs. ``prefix``: the queries'
    common prefix runs once (:mod:`helpers.embed.prefix`): what is computed, not the plain work."""
    import torch
    base_lin, lora_lin, hidden, layers, causal = 0, 0, None, 0, False
    cfg = getattr(model, "config", None)
    hidden = getattr(cfg, "hidden_size", 0)
    layers = getattr(cfg, "num_hidden_layers", 0)
    causal = not getattr(cfg, "is_encoder_decoder", False) and getattr(cfg, "model_type", "") not in (
        "bert", "roberta", "xlm-roberta", "deberta", "deberta-v2", "mpnet", "distilbert", "electra")
    for n, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and "pooler" not in n:
            if ".lora_A." in n or ".lora_B." in n:
                lora_lin += m.weight.numel()
            else:
                base_lin += m.weight.numel()
    def cost(n_tok, n_att):          # n_tok tokens run, n_att: their (query x key) attention pairs x 2
        fwd_lin, fwd_lora = 2 * base_lin * n_tok, 2 * lora_lin * n_tok
        fwd_att = 4 * n_att * hidden * layers * (0.5 if causal else 1.0)
        return 2 * fwd_lin + 3 * fwd_att + 3 * fwd_lora if lora else 3 * (fwd_lin + fwd_att)

    total = 0.0
    for key in ("queries", "passages"):
        lengths = batch[key]["attention_mask"].sum(dim=1).tolist()
        p = prefix if key == "queries" and len(lengths) > 1 else 0
        if p:
            total += cost(p, p * p)                              # the shared prefix, once
        for n_tok in lengths:
            total += cost(n_tok - p, n_tok * n_tok - p * p)
    return total


# ----------------------------------------------------------------------------- vs sentence-transformers
ENCODER = "demo:all-minilm-l6-v2"


def _encoder_batches(tok, rows, batch, group, qmax, pmax, steps, seed=0, group_by_length=False):
    """Our GroupBatches for the encoder (no instruction, the model's [CLS]/[SEP]) and, per step, the
    same texts as sentence-transformers columns (anchor, positive, negative_1...)."""
    from helpers.train.groups import GroupBatches, batch_indices
    from helpers.train.kd_finetune import KDArgs
    dcfg = KDArgs(embedder_model_class="encoder-only-base", train_group_size=group, query_max_len=qmax,
                  passage_max_len=pmax, query_instruction_format="{}{}", group_by_length=group_by_length,
                  max_examples=0)
    gb = GroupBatches(rows, tok, dcfg, batch, seed, append_eos=False)
    cols = {"anchor": [], "positive": []} | {f"negative_{j}": [] for j in range(1, group)}
    for step, idx in enumerate(batch_indices(len(rows), batch, seed, 1, lengths=gb.lengths())):
        if step >= steps:
            break
        qs, _, ps, _ = gb.texts([rows[i] for i in idx], random.Random(f"{seed}-1-{step}-0"))
        for i, q in enumerate(qs):
            cols["anchor"].append(q)
            cols["positive"].append(ps[i * group])
            for j in range(1, group):
                cols[f"negative_{j}"].append(ps[i * group + j])
    return gb, cols


def _ours(rows, a, use_lora: bool, buckets: bool) -> list[float]:
    import torch
    from helpers.embed.loading import load_embedding_model
    from helpers.train.kd_finetune import encode
    from helpers.train.losses import EmbedderLoss
    from helpers.train.args import TrainArgs
    from helpers.train.lora import add_lora
    from helpers.train.loop import fit
    model, tok = load_embedding_model(ENCODER, "encoder-only-base", "cpu", torch.float32)
    gb, _ = _encoder_batches(tok, rows, a.batch, a.group, a.query_max_len, a.passage_max_len, a.steps + 1)
    cfg = TrainArgs(output_dir=tempfile.mkdtemp(prefix="bench_vs_st_"), num_train_epochs=1,
                    learning_rate=2e-5 if not use_lora else 1e-4, gradient_checkpointing=False,
                    use_lora=use_lora, lora_rank=a.lora_rank, lora_alpha=32, lora_dropout=a.lora_dropout,
                    target_modules=("query", "key", "value", "dense"), show_progress=False)
    model = add_lora(model, cfg)
    loss = EmbedderLoss(temperature=0.02)
    fn = lambda m, b: loss(encode(m, b["queries"], "mean", buckets), encode(m, b["passages"], "mean", buckets),
                           b.get("teacher_scores"))
    times = [time.perf_counter()]
    fit(model, fn, gb, len(gb), cfg, on_log=lambda r: "kind" not in r and times.append(time.perf_counter()))
    return [b - a for a, b in zip(times, times[1:])][1:]          # first step: warm-up


def _st(rows, a) -> list[float]:
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, \
        SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import DefaultBatchSampler
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from torch.utils.data import SequentialSampler
    from transformers import TrainerCallback
    from helpers.common.models import resolve_model
    model = SentenceTransformer(resolve_model(ENCODER), device="cpu", trust_remote_code=trust_remote_code)
    model.max_seq_length = a.query_max_len        # one limit for every column; passages are far shorter
    _, cols = _encoder_batches(model.tokenizer, rows, a.batch, a.group, a.query_max_len, a.passage_max_len,
                               a.steps + 1)
    times = []

    class Clock(TrainerCallback):
        def on_train_begin(self, *args, **kw):
            times.append(time.perf_counter())

        def on_step_end(self, *args, **kw):
            times.append(time.perf_counter())

    args = SentenceTransformerTrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="bench_st_"), per_device_train_batch_size=a.batch,
        max_steps=a.steps + 1, learning_rate=2e-5, warmup_ratio=0.1, logging_steps=1, save_strategy="no",
        report_to="none", dataloader_drop_last=True, seed=0, use_cpu=True, disable_tqdm=True,
        batch_sampler=lambda ds, **kw: DefaultBatchSampler(SequentialSampler(ds), **kw))
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_dict(cols),
                                         loss=MultipleNegativesRankingLoss(model, scale=1 / 0.02),
                                         callbacks=[Clock()])
    trainer.train()
    del torch
    return [b - a for a, b in zip(times, times[1:])][1:]


def padding_stats(rows, a) -> list[tuple]:
    """Real vs padded tokens of the first steps' batches: padded to the batch's longest, with
    length buckets (encode), and with group_by_length batches (+ buckets)."""
    from helpers.common.tensors import length_chunks
    from helpers.common.models import resolve_model
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(resolve_model(ENCODER), trust_remote_code=trust_remote_code)
    out = []
    for name, gbl in (("random batches", False), ("group_by_length batches", True)):
        gb, _ = _encoder_batches(tok, rows, a.batch, a.group, a.query_max_len, a.passage_max_len, 10 ** 9,
                                 group_by_length=gbl)
        real = pad = bucket = 0
        for b in gb(1):
            for k in ("queries", "passages"):
                m = b[k]["attention_mask"]
                ln = m.sum(1).tolist()
                real += sum(ln)
                pad += m.numel()
                bucket += sum(len(c) * max(ln[i] for i in c) for c in length_chunks(ln))
        out.append((name, real, pad, bucket))
    return out


def vs_st(a) -> None:
    """Side by side, one process, same batches: sentence-transformers' SentenceTransformerTrainer
    with MultipleNegativesRankingLoss (anchor, positive, negatives: the same 1 + (group-1) passages
    per query as ours, so the same texts are embedded), full fine-tuning; ours (helpers.train.loop.fit,
    kl_div KD + InfoNCE) full fine-tuning with and without length buckets, then LoRA (r=64 on
    query,key,value,dense). Same model, batch, max lengths, dropout (train mode in both), threads.
    Runs alternate (A B C D, D C B A ...) so a busy machine slows all alike; per-step medians, the
    first step of each run left out (warm-up)."""
    import torch
    torch.set_num_threads(a.threads)
    rows = make_rows((a.steps + 1) * a.batch, max(a.group - 1, 15), a.data)
    runs = {"st": lambda: _st(rows, a),
            "ours full, equal work (no buckets)": lambda: _ours(rows, a, False, False),
            "ours full (defaults)": lambda: _ours(rows, a, False, True),
            f"ours lora r={a.lora_rank} (defaults)": lambda: _ours(rows, a, True, True)}
    order = list(runs)
    per = {k: [] for k in runs}
    for r in range(a.rounds):
        for k in (order if r % 2 == 0 else order[::-1]):
            per[k].extend(runs[k]())
            print(f"round {r + 1}: {k}: {per[k][-a.steps:]}", file=sys.stderr, flush=True)
    med = {k: statistics.median(v) for k, v in per.items()}
    best = {k: min(v) for k, v in per.items()}
    print(f"{ENCODER}, CPU fp32, {torch.get_num_threads()} threads, batch {a.batch} queries x group {a.group}, "
          f"query max {a.query_max_len} / passage max {a.passage_max_len}, {a.steps} timed steps x {a.rounds} "
          f"rounds per setting\n")
    print("| setting | s/step (median) | x st (median) | s/step (best) | x st (best) |")
    print("|---|---:|---:|---:|---:|")
    for k, v in med.items():
        print(f"| {k} | {v:.2f} | {v / med['st']:.2f} | {best[k]:.2f} | {best[k] / best['st']:.2f} |")
    print()
    for name, real, pad, bucket in padding_stats(rows, a):
        print(f"padding, {name}: {real} real tokens; padded to batch longest {pad} ({real / pad:.0%} real); "
              f"length buckets {bucket} ({real / bucket:.0%} real)")
    full, lora = "ours full, equal work (no buckets)", f"ours lora r={a.lora_rank} (defaults)"
    print(f"median-based: ours/st {med[full] / med['st']:.2f} (full), {med[lora] / med['st']:.2f} (lora)")
    # best step of each setting: on a shared machine other jobs only ever add time
    print(f"step time ratio ours/st: {best[full] / best['st']:.2f} (full), {best[lora] / best['st']:.2f} (lora)")


def profile(a) -> None:
    """Where one step's time goes (the issue's shape, encoder): collation, forward, backward,
    optimizer, for peft LoRA with/without checkpointing (the old defaults), fused LoRA, full
    fine-tuning; with and without length buckets. Same batches; the best of ``a.steps`` steps."""
    import torch
    from helpers.embed.loading import load_embedding_model
    from helpers.train.kd_finetune import encode
    from helpers.train.losses import EmbedderLoss
    from helpers.train.args import TrainArgs
    from helpers.train.lora import add_lora
    torch.set_num_threads(a.threads)
    rows = make_rows((a.steps + 1) * a.batch, 15, a.data)
    settings = [("LoRA peft, checkpointing on (old default)", True, True, False, False),
                ("LoRA peft, checkpointing off", True, False, False, False),
                ("LoRA fused, checkpointing off", True, False, True, False),
                ("LoRA fused, off, length buckets (new default)", True, False, True, True),
                ("full fine-tuning, off", False, False, True, False),
                ("full fine-tuning, off, length buckets", False, False, True, True)]
    print(f"| {ENCODER}, batch {a.batch} x group {a.group}, CPU fp32, {torch.get_num_threads()} threads "
          f"| collate s | forward s | backward s | optimizer s | step s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, lora, gc, fused, buckets in settings:
        torch.manual_seed(0)
        model, tok = load_embedding_model(ENCODER, "encoder-only-base", "cpu", torch.float32)
        gb, _ = _encoder_batches(tok, rows, a.batch, a.group, a.query_max_len, a.passage_max_len, a.steps + 1)
        cfg = TrainArgs(gradient_checkpointing=gc, use_lora=lora, lora_rank=64, lora_alpha=32,
                        target_modules=("query", "key", "value", "dense"))
        model = add_lora(model, cfg, fast=fused)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-5)
        loss = EmbedderLoss(temperature=0.02)
        it, res = gb(1), []
        for _ in range(a.steps):
            t0 = time.perf_counter()
            b = next(it)
            t1 = time.perf_counter()
            out = loss(encode(model, b["queries"], "mean", buckets), encode(model, b["passages"], "mean", buckets),
                       b["teacher_scores"])
            t2 = time.perf_counter()
            out.backward()
            t3 = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            t4 = time.perf_counter()
            res.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0))
        r = min(res, key=lambda x: x[-1])
        print(f"| {name} | {r[0]:.3f} | {r[1]:.2f} | {r[2]:.2f} | {r[3]:.3f} | {r[4]:.2f} |", flush=True)


def teacher(a) -> None:
    """The cross-encoder teacher's training (MiniLM, full fine-tuning, the eedi_cpu profile's shape)
    with and without length buckets, alternating in this process: seconds for the whole run."""
    from helpers.train.train_reranker import RerankerTrainArgs, train_reranker
    if not a.data:
        raise SystemExit("--teacher needs --data: a mined file (query, pos, neg), e.g. mined_r0/train_mined.jsonl")
    times = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.rounds):
            for buckets in (False, True):
                args = RerankerTrainArgs(
                    model_name_or_path=ENCODER, reranker_model_class="encoder-only-base", use_lora=False,
                    train_data=a.data, output_dir=f"{tmp}/{buckets}", max_len=192, train_group_size=a.group,
                    per_device_train_batch_size=a.batch, max_train_queries=a.batch * a.steps, num_train_epochs=1,
                    learning_rate=1e-4, overwrite_output_dir=True, devices="cpu", show_progress=False,
                    length_buckets=buckets)
                t = time.perf_counter()
                train_reranker(args)
                times[buckets].append(time.perf_counter() - t)
    print(f"{ENCODER} cross-encoder, full fine-tuning, CPU fp32, {a.steps} steps of {a.batch} queries x {a.group} "
          f"pairs (max_len 192), one epoch incl. saving the model; {a.rounds} alternating rounds\n")
    print("| length buckets | seconds (each round) |\n|---|---|")
    for b, ts in times.items():
        print(f"| {b} | {' / '.join(f'{t:.1f}' for t in ts)} |")
    print(f"\npadded / buckets: {min(times[False]) / min(times[True]):.2f}x (best rounds)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, help="default 6 (decoder), 4 (--vs-sentence-transformers)")
    p.add_argument("--batch", type=int, help="queries per step; default 4 (decoder), 32 (--vs-sentence-transformers)")
    p.add_argument("--group", type=int, help="passages per query; default 4 (decoder), 2 (--vs-sentence-transformers)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--one", choices=["True", "False"], help=argparse.SUPPRESS)
    p.add_argument("--vs-sentence-transformers", action="store_true", help="side by side with ST's MNRL fit")
    p.add_argument("--rounds", type=int, default=2, help="--vs-sentence-transformers: alternating rounds")
    p.add_argument("--lora-dropout", type=float, default=0.1, help="--vs-sentence-transformers: LoRA dropout of the LoRA row")
    p.add_argument("--lora-rank", type=int, default=64, help="--vs-sentence-transformers: LoRA r of the LoRA row (the issue's: 64)")
    p.add_argument("--query-max-len", type=int, default=256)
    p.add_argument("--passage-max-len", type=int, default=64)
    p.add_argument("--data", help="queries JSONL (prepare_data's train_queries.jsonl or a mined file); "
                                  "default: the demo data's")
    p.add_argument("--teacher", action="store_true", help="the cross-encoder teacher's training with and without "
                   "length buckets (needs --data, a mined file)")
    p.add_argument("--profile", action="store_true", help="one step's breakdown (the issue's encoder shape)")
    p.add_argument("--gc", default="False,True", help="decoder mode: gradient checkpointing settings to run")
    p.add_argument("--share-prefix", default="False,True", help="decoder mode: shared-prefix settings to run "
                   "(helpers.embed.prefix; not under checkpointing)")
    a = p.parse_args()
    if a.profile:
        a.batch, a.group, a.steps = a.batch or 32, a.group or 2, a.steps or 2
        profile(a)
        return
    if a.teacher:                         # the eedi_cpu profile's teacher shape unless told
        a.batch, a.group, a.steps = a.batch or 8, a.group or 8, a.steps or 12
        teacher(a)
        return
    if a.vs_sentence_transformers:        # the shape unless told
        a.batch, a.group, a.steps = a.batch or 32, a.group or 2, a.steps or 4
        vs_st(a)
        return
    a.batch, a.group, a.steps = a.batch or 4, a.group or 4, a.steps or 6
    if a.one:
        print("RESULT " + json.dumps(one(a.one == "True", a.steps, a.batch, a.group, a.threads,
                                         a.share_prefix == "True")))
        return
    res = []
    for gc in a.gc.split(","):
        for share in a.share_prefix.split(","):
            if gc == "True" and share == "True":
                continue                # no key/value cache under checkpointing: the plain forward
            out = subprocess.run([sys.executable, __file__, "--one", gc, "--share-prefix", share, "--steps",
                                  str(a.steps), "--batch", str(a.batch), "--group", str(a.group), "--threads",
                                  str(a.threads)], capture_output=True, text=True, check=True).stdout
            res.append(json.loads(out.split("RESULT ", 1)[1]))
    print(f"demo:smollm2-135m-instruct, CPU fp32, {a.threads} threads, batch {a.batch} queries x group "
          f"{a.group} passages, {a.steps} optimizer steps, LoRA r=64 (all 7 projections)\n")
    print("| gradient checkpointing | shared prefix | optimizer steps/s | s/step (median) | peak RSS (MiB) "
          "| useful GFLOP/step | computed GFLOP/step | fp32 matmul peak GFLOP/s | share of peak (computed) "
          "| plain-equivalent share |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in res:
        print(f"| {r['gradient_checkpointing']} | {r['shared_prefix']} | {r['steps_per_s']:.3f} | {r['s_per_step']:.2f} "
              f"| {r['peak_rss_mib']} | {r['useful_gflop']:.1f} | {r['run_gflop']:.1f} | {r['peak_gflops']:.0f} "
              f"| {r['share_of_peak']:.0%} | {r['plain_equivalent_share']:.0%} |")


if __name__ == "__main__":
    main()
