"""How well does each scorer order the groups KD trains on? (issue 29: why KD does not win)

    python bench/kd_groups.py \\
        "cross-encoder=model_output/eedi_dev/ablation/scored/t_all_model_fused0.5/train_scored.jsonl:reranker:1" \\
        "fused 0.5=model_output/eedi_dev/ablation/scored/t_all_model_fused0.5/train_scored.jsonl::1" \\
        "student=model_output/eedi_dev/ablation/scored/t_all_model_fused0.5/train_scored.jsonl:embedder:0.05"

Each argument is ``label=FILE:FIELD:T``: the scores ``pos_<FIELD>_scores`` / ``neg_<FIELD>_scores`` of a
scored file (FIELD empty: ``pos_scores`` / ``neg_scores``, what KD reads) at temperature ``T``; or an
ensemble ``label=FILE:FIELD+FILE:FIELD+...:T``: per group, the mean of the sources' z-scores (the fusion
rule, :func:`helpers.rerank.fusion.zscore`), the files holding the same groups in the same order. A
bi-encoder's cosines on the round-2 groups: ``python bench/round1_ablation.py --bi_scores VARIANT``. Per group
(the first positive and the negatives): top-1 (the positive scores highest), the mean softmax
probability of the positive (what KD asks the student to give it), and the mean entropy as a share
of log(group size). A teacher worth distilling orders these groups better than the student does.
"""
from __future__ import annotations

import json
import sys

import numpy as np


def group_scores(row: dict, field: str) -> list:
    """One group's scores, the first positive first."""
    pos, neg = (f"pos_{field}_scores", f"neg_{field}_scores") if field else ("pos_scores", "neg_scores")
    return row[pos][:1] + row[neg]


def group_stats(groups, temperature: float) -> dict:
    """``groups``: each group's scores, the positive first."""
    top1, p_pos, ent = [], [], []
    for g in groups:
        s = np.asarray(g, dtype=np.float64) / temperature
        p = np.exp(s - s.max())
        p /= p.sum()
        top1.append(float(s.argmax() == 0))
        p_pos.append(p[0])
        ent.append(float(-(p * np.log(np.clip(p, 1e-12, None))).sum() / np.log(len(s))))
    return {"groups": len(groups), "top1": float(np.mean(top1)), "p_pos": float(np.mean(p_pos)),
            "entropy_share": float(np.mean(ent))}


def source_groups(spec: str, cache: dict) -> list:
    """``FILE:FIELD`` or ``FILE:FIELD+FILE:FIELD+...`` (the mean of per-group z-scores) -> the groups' scores."""
    from helpers.rerank.fusion import zscore
    parts = []
    for src in spec.split("+"):
        path, _, field = src.rpartition(":")
        if path not in cache:
            cache[path] = [json.loads(x) for x in open(path, encoding="utf-8") if x.strip()]
        parts.append((cache[path], field))
    if len(parts) == 1:
        return [group_scores(r, parts[0][1]) for r in parts[0][0]]
    ids = [[(r["query_id"], tuple(r["neg_ids"])) for r in rows] for rows, _ in parts]
    if any(x != ids[0] for x in ids[1:]):
        raise SystemExit(f"{spec}: the files do not hold the same groups in the same order")
    return [np.mean([zscore(group_scores(rows[i], f)) for rows, f in parts], axis=0).tolist()
            for i in range(len(parts[0][0]))]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    cache = {}
    print("| scorer | groups | top-1 | mean p(positive) | entropy / log n |\n|---|---:|---:|---:|---:|")
    for spec in argv:
        label, _, rest = spec.partition("=")
        sources, _, t = rest.rpartition(":")
        s = group_stats(source_groups(sources, cache), float(t))
        print(f"| {label} (T {float(t):g}) | {s['groups']} | {s['top1']:.3f} | {s['p_pos']:.3f} | {s['entropy_share']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
