"""Embedding throughput of the mining embedder: queries/s and passages/s on CPU.

    nice -n 10 python bench/bench_mining.py [--repeats 2] [--threads 2] [--batch_size 64]

Inputs: the texts of ../shared/fixtures/flag_icl_smollm2_135m.npz (real Eedi queries and
misconceptions) with the fixture's settings (demo:smollm2-135m-instruct, decoder-only-icl, fp32,
query max 1024, passage max 512). Also checks the embeddings against FlagEmbedding's (min cosine).
When FlagEmbedding is importable, its ICLLLMEmbedder runs on the same inputs in the same run and
the ratio is printed; otherwise the fixture README's numbers are shown, labelled as such.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from helpers.embed.args import EmbedderArgs  # noqa: E402
from helpers.embed.embedder import Embedder  # noqa: E402

SHARED = Path(os.environ.get("EEDI_SHARED_DIR", ROOT.parent / "shared"))
FIXTURE_README = {"queries/s": 3.4, "passages/s": 75.0}   # FlagEmbedding 1.4.2, 500 q / 2587 p, 2 threads


def timed(fn, repeats):
    out, times = None, []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


@torch.no_grad()
def flag_like_encode(emb: Embedder, inputs: list, batch_size: int) -> np.ndarray:
    """FlagEmbedding 1.4.2's inference loop, re-done here as an A/B reference on the same token
    ids: argsort by -length, one probe forward of the first batch (its batch-size check), then
    ``tokenizer.pad`` + forward + last-token pool + normalise per batch."""
    tok, model = emb.tokenizer, emb.model
    feats = [{"input_ids": x, "attention_mask": [1] * len(x)} for x in inputs]
    order = np.argsort([-len(x) for x in inputs])
    feats = [feats[i] for i in order]

    def run(batch):
        b = tok.pad(batch, padding=True, return_tensors="pt")
        h = model(**b, return_dict=True).last_hidden_state
        m = b["attention_mask"]
        e = h[torch.arange(h.shape[0]), m.sum(1) - 1]          # right padding
        return torch.nn.functional.normalize(e, dim=-1).numpy()
    run(feats[:batch_size])                                        # the probe
    out = np.concatenate([run(feats[s:s + batch_size]) for s in range(0, len(feats), batch_size)])
    return out[np.argsort(order)]


def flag_embedder(cfg: dict):
    try:
        from FlagEmbedding import FlagICLModel
    except Exception:       # not installed, or does not import under transformers 5
        return None
    from helpers.common.models import resolve_model
    return FlagICLModel(resolve_model("demo:smollm2-135m-instruct"), use_fp16=False, devices="cpu",
                        query_instruction_for_retrieval=cfg["query_instruction_for_retrieval"],
                        query_instruction_format=cfg["query_instruction_format"],
                        query_max_length=cfg["query_max_length"], passage_max_length=cfg["passage_max_length"],
                        batch_size=cfg["batch_size"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs (median); one warm-up run first")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the fixture used 2)")
    ap.add_argument("--batch_size", type=int, default=None, help="default: the fixture's (64)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    load0 = os.getloadavg()[0]
    fx = SHARED / "fixtures"
    z = np.load(fx / "flag_icl_smollm2_135m.npz")
    meta = json.loads((fx / "flag_icl_smollm2_135m.json").read_text())
    c = dict(meta["config"])
    if a.batch_size:
        c["batch_size"] = a.batch_size
    queries = [str(q) for q in z["query_text"]]
    passages = [str(p) for p in z["passage_text"]]
    emb = Embedder(EmbedderArgs(
        model_name_or_path="demo:smollm2-135m-instruct", embedder_model_class="decoder-only-icl",
        pooling_method="last_token", query_instruction_for_retrieval=c["query_instruction_for_retrieval"],
        query_instruction_format=c["query_instruction_format"], query_max_len=c["query_max_length"],
        passage_max_len=c["passage_max_length"], embedder_batch_size=c["batch_size"], devices="cpu",
        use_fp16=False), show_progress=False)
    rows = [{"query": q} for q in queries]
    q_tok = [len(x) for x in emb.tokenize_queries(rows)]
    p_tok = [len(x) for x in emb.tokenize_passages(passages)]
    emb.encode_corpus(passages[:4])                                  # warm-up
    q_ids, p_ids = emb.tokenize_queries(rows), emb.tokenize_passages(passages)
    bs = c["batch_size"]
    # interleaved A/B so that a busy machine slows both alike
    tq, tp, rq, rp = [], [], [], []
    for _ in range(a.repeats):
        q, t = timed(lambda: emb.encode_queries(rows), 1); tq.append(t)
        _, t = timed(lambda: flag_like_encode(emb, q_ids, bs), 1); rq.append(t)
        p, t = timed(lambda: emb.encode_corpus(passages), 1); tp.append(t)
        _, t = timed(lambda: flag_like_encode(emb, p_ids, bs), 1); rp.append(t)
    tq, tp, rq, rp = (statistics.median(x) for x in (tq, tp, rq, rp))
    cos_q = float((q * z["query_emb"]).sum(1).min())
    cos_p = float((p * z["passage_emb"]).sum(1).min())
    res = {"ours": {"queries/s": len(rows) / tq, "passages/s": len(passages) / tp,
                    "query tokens/s": sum(q_tok) / tq, "passage tokens/s": sum(p_tok) / tp}}
    print(f"inputs: {len(rows)} queries (mean {np.mean(q_tok):.0f} tokens), {len(passages)} passages "
          f"(mean {np.mean(p_tok):.1f} tokens); threads {a.threads}; batch {c['batch_size']}; "
          f"median of {a.repeats}; load average before/after {load0:.1f}/{os.getloadavg()[0]:.1f}")
    print(f"min cosine vs FlagEmbedding fixture: queries {cos_q:.7f}, passages {cos_p:.7f}")
    res["FlagEmbedding's loop re-done (same run)"] = {
        "queries/s": len(rows) / rq, "passages/s": len(passages) / rp,
        "query tokens/s": sum(q_tok) / rq, "passage tokens/s": sum(p_tok) / rp}
    fe = flag_embedder(c)
    if fe is not None:
        _, fq = timed(lambda: fe.encode_queries(queries), a.repeats)
        _, fp = timed(lambda: fe.encode_corpus(passages), a.repeats)
        res["FlagEmbedding (same run)"] = {"queries/s": len(rows) / fq, "passages/s": len(passages) / fp}
    print(f"| {'embedder':44s} | queries/s | passages/s | query tok/s | passage tok/s |")
    print(f"|{'-' * 46}|-----------|------------|-------------|---------------|")
    for name, r in res.items():
        print(f"| {name:44s} | {r['queries/s']:9.2f} | {r['passages/s']:10.1f} | "
              f"{r.get('query tokens/s', float('nan')):11.0f} | {r.get('passage tokens/s', float('nan')):13.0f} |")
    if fe is None:
        print(f"| {'FlagEmbedding (fixture README, not this run)':44s} | {FIXTURE_README['queries/s']:9.2f} | "
              f"{FIXTURE_README['passages/s']:10.1f} | {3.427 * 149.1:11.0f} | {75.156 * 14.17:13.0f} |")
    ref = res["FlagEmbedding's loop re-done (same run)"]
    print(f"ratio ours / FlagEmbedding's loop (same run): queries {res['ours']['queries/s'] / ref['queries/s']:.2f}x, "
          f"passages {res['ours']['passages/s'] / ref['passages/s']:.2f}x")
    if fe is not None:
        f = res["FlagEmbedding (same run)"]
        print(f"ratio ours/FlagEmbedding: queries {res['ours']['queries/s'] / f['queries/s']:.2f}x, "
              f"passages {res['ours']['passages/s'] / f['passages/s']:.2f}x")
    return res


if __name__ == "__main__":
    main()
