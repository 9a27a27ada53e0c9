"""How well does each scorer order the groups KD trains on? (issue 29: why KD does not win)

    python bench/kd_groups.py \\
        "cross-encoder=model_output/eedi_dev/ablation/scored/t_all_model_fused0.5/train_scored.jsonl:reranker:1" \\
        "fused 0.5=model_output/eedi_dev/ablation/scored/t_all_model_fused0.5/train_scored.jsonl::1" \\
        "student=model_output/eedi_dev/ablation/scored/t_all_model_fused0.5/train_scored.jsonl:embedder:0.05"

Each argument is ``label=FILE:FIELD:T``: the scores ``pos_<FIELD>_scores`` / ``neg_<FIELD>_scores`` of a
scored file (FIELD empty: ``pos_scores`` / ``neg_scores``, what KD reads) at temperature ``T``. Per group
(the first positive and the negatives): top-1 (the positive scores highest), the mean softmax
probability of the positive (what KD asks the student to give it), and the mean entropy as a share
of log(group size). A teacher worth distilling orders these groups better than the student does.
"""
from __future__ import annotations

import json
import sys

import numpy as np


def group_stats(rows, field: str, temperature: float) -> dict:
    pos, neg = (f"pos_{field}_scores", f"neg_{field}_scores") if field else ("pos_scores", "neg_scores")
    top1, p_pos, ent = [], [], []
    for r in rows:
        s = np.asarray(r[pos][:1] + r[neg], dtype=np.float64) / temperature
        p = np.exp(s - s.max())
        p /= p.sum()
        top1.append(float(s.argmax() == 0))
        p_pos.append(p[0])
        ent.append(float(-(p * np.log(np.clip(p, 1e-12, None))).sum() / np.log(len(s))))
    return {"groups": len(rows), "top1": float(np.mean(top1)), "p_pos": float(np.mean(p_pos)),
            "entropy_share": float(np.mean(ent))}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    cache = {}
    print("| scorer | groups | top-1 | mean p(positive) | entropy / log n |\n|---|---:|---:|---:|---:|")
    for spec in argv:
        label, _, rest = spec.partition("=")
        path, field, t = rest.rsplit(":", 2)
        if path not in cache:
            cache[path] = [json.loads(x) for x in open(path, encoding="utf-8") if x.strip()]
        s = group_stats(cache[path], field, float(t))
        print(f"| {label} (T {float(t):g}) | {s['groups']} | {s['top1']:.3f} | {s['p_pos']:.3f} | {s['entropy_share']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
