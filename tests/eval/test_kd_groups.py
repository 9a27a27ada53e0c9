"""bench/kd_groups.py: how a scorer orders the KD groups (top-1, the positive's probability, entropy)."""
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from kd_groups import group_stats, main  # noqa: E402


def test_group_stats_on_constructed_scores(tmp_path, capsys):
    rows = [{"pos_scores": [2.0], "neg_scores": [0.0, 0.0], "pos_x_scores": [0.0], "neg_x_scores": [1.0, 0.0]},
            {"pos_scores": [0.0], "neg_scores": [1.0, 0.0], "pos_x_scores": [5.0], "neg_x_scores": [0.0, 0.0]}]
    s = group_stats(rows, "", 1.0)
    p1 = math.exp(2) / (math.exp(2) + 2)
    p2 = 1 / (1 + math.e + 1)
    assert s["top1"] == 0.5 and math.isclose(s["p_pos"], (p1 + p2) / 2)
    assert group_stats(rows, "x", 1.0)["top1"] == 0.5
    assert group_stats(rows, "", 1e-3)["entropy_share"] < 1e-6                       # sharp: one-hot
    assert math.isclose(group_stats([{"pos_scores": [1.0], "neg_scores": [1.0]}], "", 1.0)["entropy_share"], 1.0)
    f = tmp_path / "s.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main([f"a={f}::1", f"b={f}:x:0.5"]) == 0
    out = capsys.readouterr().out
    assert "| a (T 1) | 2 | 0.500 |" in out and "| b (T 0.5) | 2 |" in out
