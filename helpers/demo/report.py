"""The teacher next to the students (stage 04's comparison).

The students rank the whole corpus; the teacher only reranks each test query's group (1 positive
+ the mined negatives scored by stage 02), so its MAP@25 is the mean 1/rank of the positive in its
group (:func:`helpers.rerank.stats.group_rank_stats`). Chance for a group of n with one positive
is (1/n) * (1 + 1/2 + ... + 1/n): the table shows it so that a teacher at chance is visible.
"""
from __future__ import annotations

from typing import Sequence

from helpers.rerank.stats import group_rank_stats


def chance_map(group_sizes: Sequence[int]) -> float:
    """Expected 1/rank of one positive placed at random in each group, averaged over groups."""
    if not group_sizes or min(group_sizes) < 1:
        raise ValueError("chance_map: needs groups of at least one passage")
    return sum(sum(1.0 / k for k in range(1, n + 1)) / n for n in group_sizes) / len(group_sizes)


def teacher_vs_students(results: dict, teacher_rows: Sequence[dict], teacher_label: str = "teacher",
                        n_passages: int | None = None, map_k: int = 25) -> list[dict]:
    """One row per student (MAP@k over the corpus) and one for the teacher (MAP within its groups)."""
    key = f"MAP@{map_k}"
    out = []
    for label, m in results.items():
        n = m.get("n_passages", n_passages)
        out.append({"model": label, key: m.get(key), "Recall@25": m.get("Recall@25"),
                    "ranks": f"whole corpus ({n} passages)" if n else "whole corpus", "chance": None})
    st = group_rank_stats(teacher_rows)
    sizes = [len(r["pos_scores"]) + len(r["neg_scores"]) for r in teacher_rows]
    g = round(st["groups_size_mean"], 1)
    out.append({"model": teacher_label, key: st["map"], "Recall@25": None,
                "ranks": f"its group (1 positive + {g - 1:g} mined negatives), top-1 {st['top1']:.3f}",
                "chance": chance_map(sizes)})
    return [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in out]
