"""Pairs/s of the reranker's plain path and each fast path on demo:gemma-3-270m (CPU, fp32).

Pairs: the FlagEmbedding fixture's real Eedi queries, 1 gold + 15 other misconceptions each, with
the fixture's settings (A:/B: instructions, the Eedi prompt, max length 384, batch 16). Every
configuration scores the same pairs; the max difference to FlagEmbedding's own scores is shown.
FlagEmbedding itself runs in the same process when it is installed; otherwise its speed is the
fixture README's figure (3.3 pairs/s, measured on this machine type when it was idle), labelled so,
and its inference loop is re-done in the same run (length sort, full-vocabulary logits at every
position, plus its batch-size probe: one extra forward of the first, longest batch), so that a
busy machine slows both alike.

    nice -n 10 python bench/bench_reranker.py --queries 3
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers.rerank.reranker import LLMReranker  # noqa: E402

FIXTURE = ROOT.parent / "shared" / "fixtures" / "flag_reranker_gemma3_270m.json"
README_FLAG_PAIRS_PER_S = 3.3
CONFIGS = {
    "plain (full vocab, input order)": dict(yes_only=False, sort_by_length=False, share_prefix=False),
    "yes-row projection": dict(yes_only=True, sort_by_length=False, share_prefix=False),
    "yes-row + length sort": dict(yes_only=True, sort_by_length=True, share_prefix=False),
    "shared prefix (full vocab)": dict(yes_only=False, sort_by_length=True, share_prefix=True),
    "all: yes-row + sort + shared prefix": dict(yes_only=True, sort_by_length=True, share_prefix=True),
}


def groups(fx, n_queries):
    qs, ps, ref = [], [], []
    for (q, p), meta, s in zip(fx["pairs"], fx["pair_meta"], fx["scores"]):
        if meta["query_index"] < n_queries:
            if not qs or qs[-1] != q:
                qs.append(q), ps.append([]), ref.append([])
            ps[-1].append(p), ref[-1].append(s)
    return qs, ps, ref


def flag_embedding_pairs_per_s(cfg, pairs):
    try:
        from FlagEmbedding import FlagLLMReranker
    except Exception:
        return None
    from helpers.common.models import resolve_model
    r = FlagLLMReranker(resolve_model("demo:gemma-3-270m"), use_fp16=False, devices="cpu",
                        query_instruction_for_rerank="A: ", passage_instruction_for_rerank="B: ",
                        prompt=cfg["prompt"], max_length=cfg["max_length"], batch_size=cfg["batch_size"])
    t = time.perf_counter()
    r.compute_score(pairs)
    return len(pairs) / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=3, help="fixture queries (16 pairs each)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    a = ap.parse_args()
    fx = json.loads(FIXTURE.read_text())
    cfg = fx["config"]
    qs, ps, ref = groups(fx, a.queries)
    n_pairs = sum(map(len, ps))
    r = LLMReranker("demo:gemma-3-270m", prompt=cfg["prompt"], max_length=cfg["max_length"], use_fp16=False,
                    batch_size=cfg["batch_size"], devices="cpu", show_progress=False)
    r._checked = True                       # time the paths themselves, not the self-check
    r.fast = dict(CONFIGS["all: yes-row + sort + shared prefix"])
    r.score_groups(qs[:1], [ps[0][:4]])     # warm-up
    print(f"{n_pairs} pairs ({len(qs)} queries x 16), torch threads {torch.get_num_threads()}, "
          f"{fx['tokens_per_pair_mean']:.0f} tokens/pair on average in the fixture", flush=True)
    rows = []
    for name, opts in CONFIGS.items():
        r.fast = dict(opts)
        t = time.perf_counter()
        got = r.score_groups(qs, ps)
        dt = time.perf_counter() - t
        diff = max(abs(x - y) for g, h in zip(got, ref) for x, y in zip(g, h))
        rows.append(dict(config=name, pairs_per_s=n_pairs / dt, seconds=dt, max_abs_diff_vs_flag=diff))
        print(f"{name:40s} {n_pairs / dt:7.2f} pairs/s  ({dt:6.1f} s)  max|diff| vs FlagEmbedding {diff:.1e}",
              flush=True)
    # FlagEmbedding's loop re-done: sorted batches, full vocabulary, plus the probe forward
    from helpers.common.tensors import pad
    pre, suf = r.layout.encode([f"A: {q}" for q in qs], [[f"B: {p}" for p in g] for g in ps])
    longest = sorted((a + b for a, bs in zip(pre, suf) for b in bs), key=len, reverse=True)[:r.batch_size]
    r.fast = dict(yes_only=False, sort_by_length=True, share_prefix=False)
    t = time.perf_counter()
    with torch.no_grad():
        r.model(*pad(longest, r.pad_id, "left", 8))
    got = r.score_groups(qs, ps)
    dt = time.perf_counter() - t
    diff = max(abs(x - y) for g, h in zip(got, ref) for x, y in zip(g, h))
    rows.insert(1, dict(config="FlagEmbedding's loop re-done (same run)", pairs_per_s=n_pairs / dt,
                        seconds=dt, max_abs_diff_vs_flag=diff))
    print(f"{rows[1]['config']:40s} {n_pairs / dt:7.2f} pairs/s  ({dt:6.1f} s)", flush=True)
    flag = flag_embedding_pairs_per_s(cfg, [(q, p) for q, g in zip(qs, ps) for p in g])
    flag_label = "FlagEmbedding 1.4.2, same run" if flag else "FlagEmbedding 1.4.2, fixture README (not installed here)"
    flag = flag or README_FLAG_PAIRS_PER_S
    plain, loop = rows[0]["pairs_per_s"], rows[1]["pairs_per_s"]
    print("\n| configuration | pairs/s | x plain | x FlagEmbedding's loop (same run) | max abs diff vs FlagEmbedding |")
    print("|---|---:|---:|---:|---:|")
    print(f"| {flag_label} | {flag:.2f} | | | 0 |")
    for row in rows:
        print(f"| {row['config']} | {row['pairs_per_s']:.2f} | {row['pairs_per_s'] / plain:.2f} | "
              f"{row['pairs_per_s'] / loop:.2f} | {row['max_abs_diff_vs_flag']:.1e} |")
    if a.out:
        Path(a.out).write_text(json.dumps(dict(pairs=n_pairs, flag=flag, flag_label=flag_label, rows=rows), indent=2))


if __name__ == "__main__":
    main()
