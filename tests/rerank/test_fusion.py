"""The fusion rule (one function for the cascade and a fused teacher) and stage 02's --fusion_alpha."""
import json

import numpy as np
import pytest

from helpers.common.io_utils import InputError
from helpers.rerank.add_reranker_score import add_reranker_score
from helpers.rerank.fusion import check_alpha, fuse, fuse_rows, zscore
from tests.rerank.test_add_reranker_score import FakeReranker, args, rows, write


def test_fuse_is_the_weighted_sum_of_z_scores():
    r, e = [3.0, 1.0, 2.0], [0.2, 0.9, 0.5]
    z = lambda x: (np.array(x) - np.mean(x)) / np.std(x)
    assert np.allclose(fuse(r, e, 0.25), 0.25 * z(r) + 0.75 * z(e))
    assert np.allclose(fuse(r, e, 1.0), z(r)) and np.allclose(fuse(r, e, 0.0), z(e))
    assert np.argsort(-fuse(r, e, 1.0)).tolist() == [0, 2, 1] and np.argsort(-fuse(r, e, 0.0)).tolist() == [1, 2, 0]
    assert fuse([5.0, 5.0], [1.0, 2.0], 0.5).tolist() == [-0.5, 0.5]       # a constant list adds nothing
    assert zscore([]).tolist() == [] and zscore([7.0]).tolist() == [0.0]
    with pytest.raises(ValueError, match="3 reranker scores but 2 embedder scores"):
        fuse(r, e[:2], 0.5)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5", True])
def test_alpha_checked(bad):
    with pytest.raises(ValueError, match="fusion_alpha must be a number in"):
        check_alpha(bad, "fusion_alpha")
    check_alpha(None) or check_alpha(0) or check_alpha(1)


def test_fuse_rows_moves_the_raw_scores_and_fuses_over_the_group():
    row = {"pos": ["a"], "neg": ["b", "c"], "pos_scores": [2.0], "neg_scores": [0.0, 1.0],
           "pos_embedder_scores": [0.1], "neg_embedder_scores": [0.5, 0.3]}
    fuse_rows([row], 0.5)
    want = fuse([2.0, 0.0, 1.0], [0.1, 0.5, 0.3], 0.5)
    assert row["pos_scores"] == [round(want[0], 6)] and row["neg_scores"] == [round(x, 6) for x in want[1:]]
    assert row["pos_reranker_scores"] == [2.0] and row["neg_reranker_scores"] == [0.0, 1.0]


def with_embedder_scores(n=7):
    rs = rows(n)
    for i, r in enumerate(rs):
        r["pos_embedder_scores"] = [0.9 - 0.01 * i]
        r["neg_embedder_scores"] = [0.1 * j for j in range(len(r["neg"]))]
    return rs


def test_stage_02_writes_the_fused_teacher_and_keeps_the_reranker_scores(tmp_path):
    write(tmp_path / "mined.jsonl", with_embedder_scores())
    add_reranker_score(args(tmp_path, fusion_alpha=0.5), reranker=FakeReranker())
    out = [json.loads(x) for x in open(tmp_path / "out" / "scored.jsonl")]
    fake = FakeReranker()
    for r, o in zip(with_embedder_scores(), out):
        raw = fake.score_groups([r["query"]], [r["pos"] + r["neg"]])[0]
        assert o["pos_reranker_scores"] + o["neg_reranker_scores"] == raw
        want = fuse(raw, r["pos_embedder_scores"] + r["neg_embedder_scores"], 0.5)
        assert np.allclose(o["pos_scores"] + o["neg_scores"], want, atol=1e-6)


def test_a_fused_teacher_without_the_mining_scores_is_refused_before_scoring(tmp_path):
    write(tmp_path / "mined.jsonl", rows())
    fake = FakeReranker()
    with pytest.raises(InputError, match=r"mined.jsonl, line 1.*pos_embedder_scores.*keep_scores True"):
        add_reranker_score(args(tmp_path, fusion_alpha=0.5), reranker=fake)
    bad = with_embedder_scores()
    bad[2]["neg_embedder_scores"] = [0.1]
    write(tmp_path / "mined.jsonl", bad)
    with pytest.raises(InputError, match=r"line 3.*neg_embedder_scores.*3 finite numbers aligned with neg"):
        add_reranker_score(args(tmp_path, fusion_alpha=0.5), reranker=fake)
    assert fake.calls == 0 and not (tmp_path / "out" / "scored.jsonl").exists()


def test_the_filter_keeps_the_mining_scores_aligned(tmp_path):
    write(tmp_path / "mined.jsonl", with_embedder_scores())
    add_reranker_score(args(tmp_path, fusion_alpha=0.5, teacher_filter="drop", teacher_filter_margin=5.0),
                       reranker=FakeReranker())
    for o in (json.loads(x) for x in open(tmp_path / "out" / "scored.jsonl")):
        n = len(o["neg"])
        assert len(o["neg_scores"]) == len(o["neg_embedder_scores"]) == len(o["neg_reranker_scores"]) == n


def test_stage_02_says_whether_the_teacher_is_ahead_of_the_miner_on_its_groups(tmp_path, caplog):
    """With the mining model's scores in the file, stage 02 compares group top-1 of the teacher it writes
    with the miner's; a teacher that is not ahead is a warning (KD from it did not win on eedi_dev)."""
    import logging
    from helpers.rerank.stats import teacher_vs_miner
    rs = with_embedder_scores()             # the miner ranks every positive first (0.9 > 0.2)
    for r in rs:
        r["neg_embedder_scores"] = [0.0, 0.1, 0.2]
    write(tmp_path / "mined.jsonl", rs)
    with caplog.at_level(logging.INFO):
        s = add_reranker_score(args(tmp_path), reranker=FakeReranker())
    assert s["miner_top1"] == 1.0 and s["teacher_top1"] < 1.0
    assert any(r.levelno == logging.WARNING and "not ahead of the student" in r.getMessage() for r in caplog.records)
    out = [json.loads(x) for x in open(tmp_path / "out" / "scored.jsonl")]
    v = teacher_vs_miner(out)
    assert set(v) == {"teacher", "miner"} and v["miner"]["top1"] == 1.0
    assert teacher_vs_miner(rows()) == {}                         # no mining scores: nothing to compare
    add_reranker_score(args(tmp_path, fusion_alpha=0.5, overwrite=True), reranker=FakeReranker())
    fused = [json.loads(x) for x in open(tmp_path / "out" / "scored.jsonl")]
    assert set(teacher_vs_miner(fused)) == {"teacher", "miner", "reranker"}
