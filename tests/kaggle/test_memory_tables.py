"""bench/memory_tables.py: the README's memory plan and time tables for a Kaggle T4, against the
shipped profiles (every GPU step fits; the run needs two sessions)."""
import sys
from pathlib import Path

import yaml

from helpers.common.memory import GIB, train_memory_gib

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import memory_tables as mt  # noqa: E402

# a LoRA step's settings, spelled out (the formulas take no defaults: those live in KDArgs)
LORA = dict(rank=64, four_bit=False, checkpointing=True, lora_dropout=0.1, use_lora=True)


def test_every_gpu_step_of_the_shipped_profiles_fits_a_t4():
    rows = mt.shipped_rows() + mt.shipped_rows(mt.SUBMIT_PROFILE)
    assert {r[0] for r in rows} >= {"shipped kaggle_eedi: mine", "shipped kaggle_eedi: score",
                                    "shipped kaggle_eedi: train_kd", "shipped kaggle_eedi: compare",
                                    "shipped submit: submit"}
    bad = [(r[0], r[2], round(r[3], 1)) for r in rows if r[3] > mt.T4_USABLE_GIB]
    assert bad == [], bad
    # the rows are in the README table, with the 14.7 GiB header
    table = mt.markdown_table()
    assert "fits a T4 (14.7 GiB usable)?" in table and all(r[0] in table for r in rows)


def test_memory_plan_is_monotonic_and_four_bit_helps():
    a = mt.ARCHS["Qwen2.5-7B"]
    base = train_memory_gib(a, 8, 8, 256, 64, **LORA)
    assert train_memory_gib(a, 8, 8, 256, 64, **{**LORA, "four_bit": True}) < base
    assert train_memory_gib(a, 16, 8, 256, 64, **LORA) > base
    assert train_memory_gib(a, 8, 8, 256, 64, **{**LORA, "checkpointing": False}) > base
    # weights alone: 7.6e9 params in fp16 are ~14.2 GiB
    assert 14.0 < a.params * 2 / GIB < 14.4
    table = mt.markdown_table()
    assert table.count("(estimate)") == 2 * len(mt.plan_rows()) + 1   # + the header


def test_kaggle_profile_uses_four_bit_where_needed(repo_root):
    prof = yaml.safe_load(open(repo_root / "configs" / "kaggle_eedi.yaml"))
    steps = {s["name"]: s["parameters"] for s in prof["steps"]}
    assert steps["mine"]["load_in_4bit"] and steps["train_kd"]["load_in_4bit"] and steps["compare"]["load_in_4bit"]
    # issue 26 item 6: the chosen adapter, unmerged on the 4-bit base, is evaluated and submitted (no merge, no
    # NF4 re-quantization of W + BA)
    assert steps["train_kd"]["save_merged_lora_model"] is False
    assert steps["train_kd"]["merge_epoch"] == "best"
    assert [m["path"] for m in steps["compare"]["models"]] == ["{run_dir}/kd/chosen_adapter"]


def test_time_estimate_is_labelled_and_needs_two_sessions():
    rows = dict((s, h) for s, _, h in mt.time_rows())
    assert sum(rows.values()) > 11 and rows["train_kd"] > rows["mine"] + rows["score"]
    sub = mt.submit_time_rows()
    assert [s for s, _, _ in sub] == ["submit: embed", "submit: rerank (var reranker set)"]
    assert sum(h for _, _, h in sub) < 9                                          # the kernel's 9-hour limit
    # + the header, the total, and the submission kernel's rows and its total
    assert mt.time_table().count("(estimate)") == len(rows) + 2 + len(sub) + 1
    assert "219 steps/epoch x 5 epochs" in mt.time_table()                       # 1,095 steps, as the reference run


def test_the_script_prints_the_readme_tables(capsys):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert mt.main([]) == 0
    assert capsys.readouterr().out.strip() in readme
    assert mt.main(["--time"]) == 0
    assert capsys.readouterr().out.strip() in readme
