"""bench/kd_groups.py: how a scorer orders the KD groups (top-1, the positive's probability, entropy)."""
import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from kd_groups import group_scores, group_stats, main  # noqa: E402


def test_group_stats_on_constructed_scores(tmp_path, capsys):
    rows = [{"pos_scores": [2.0], "neg_scores": [0.0, 0.0], "pos_x_scores": [0.0], "neg_x_scores": [1.0, 0.0]},
            {"pos_scores": [0.0], "neg_scores": [1.0, 0.0], "pos_x_scores": [5.0], "neg_x_scores": [0.0, 0.0]}]
    s = group_stats([group_scores(r, "") for r in rows], 1.0)
    p1 = math.exp(2) / (math.exp(2) + 2)
    p2 = 1 / (1 + math.e + 1)
    assert s["top1"] == 0.5 and math.isclose(s["p_pos"], (p1 + p2) / 2)
    assert group_stats([group_scores(r, "x") for r in rows], 1.0)["top1"] == 0.5
    assert group_stats([group_scores(r, "") for r in rows], 1e-3)["entropy_share"] < 1e-6      # sharp: one-hot
    assert math.isclose(group_stats([[1.0, 1.0]], 1.0)["entropy_share"], 1.0)
    f = tmp_path / "s.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main([f"a={f}::1", f"b={f}:x:0.5"]) == 0
    out = capsys.readouterr().out
    assert "| a (T 1) | 2 | 0.500 |" in out and "| b (T 0.5) | 2 |" in out


def test_an_ensemble_is_the_mean_of_the_sources_z_scores(tmp_path, capsys):
    """The plain scores put the positive first (z 1.41, -0.71, -0.71), x puts it second (z 0, 1.22, -1.22);
    their z-mean (0.71, 0.26, -0.96) puts it first. The files must hold the same groups."""
    rows = [{"query_id": "q1", "neg_ids": ["a", "b"], "pos_scores": [2.0], "neg_scores": [-1.0, -1.0],
             "pos_x_scores": [0.0], "neg_x_scores": [1.0, -1.0]}]
    f = tmp_path / "s.jsonl"
    f.write_text(json.dumps(rows[0]) + "\n")
    assert main([f"both={f}:+{f}:x:1"]) == 0
    assert "| both (T 1) | 1 | 1.000 |" in capsys.readouterr().out
    g = tmp_path / "other.jsonl"
    g.write_text(json.dumps(dict(rows[0], neg_ids=["b", "a"])) + "\n")
    with pytest.raises(SystemExit, match="do not hold the same groups"):
        main([f"bad={f}:+{g}::1"])
