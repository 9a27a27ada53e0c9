"""Training groups: sampling rule, scores carried, seeding, ICL examples, EOS, bad input."""
import json
import logging
import random

import pytest

from helpers.common.io_utils import InputError
from helpers.train.groups import GroupBatches, batch_indices, load_group_rows, sample_group
from helpers.train.kd_finetune import KDArgs


def data_args(**kw):
    """The student's arguments as the batches read them (no in-batch examples unless asked)."""
    return KDArgs(**{"max_examples": 0, **kw})


def row(i, n_neg=5, scores=True):
    r = {"query_id": f"q{i}", "query": f"query {i}", "pos": [f"pos {i}"], "pos_ids": [f"p{i}"],
         "neg": [f"neg {i}-{j}" for j in range(n_neg)], "neg_ids": [f"n{i}-{j}" for j in range(n_neg)],
         "prompt": "Find it.", "question_id": str(i), "subject_id": "1", "construct_id": "1"}
    if scores:
        r["pos_scores"] = [10.0]
        r["neg_scores"] = [float(j) for j in range(n_neg)]
    return r


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer
    from helpers.common.models import resolve_model
    t = AutoTokenizer.from_pretrained(resolve_model("demo:smollm2-135m-instruct"))
    t.add_eos_token = True
    return t


def test_sample_group_carries_aligned_scores_and_samples_without_repetition():
    r = row(0, n_neg=5)
    ps, sc = sample_group(r, 4, random.Random(0), True)
    assert ps[0] == "pos 0" and sc[0] == 10.0 and len(ps) == len(sc) == 4
    negs = ps[1:]
    assert len(set(negs)) == 3
    for p, s in zip(negs, sc[1:]):
        assert float(p.split("-")[1]) == s            # neg j has score j


def test_too_few_negatives_repeat_and_are_logged(tmp_path, caplog):
    f = write(tmp_path / "t.jsonl", [row(0, n_neg=2), row(1, n_neg=8)])
    with caplog.at_level(logging.WARNING):
        load_group_rows(f, data_args(train_group_size=6))
    assert "1 of 2 queries have fewer than 5 negatives" in caplog.text
    ps, _ = sample_group(row(0, n_neg=2), 6, random.Random(1), True)
    assert len(ps) == 6 and len(set(ps[1:])) == 2


def test_kd_on_a_file_without_scores_names_file_line_field(tmp_path):
    f = write(tmp_path / "mined.jsonl", [row(0), row(1, scores=False)])
    with pytest.raises(InputError, match=r"mined.jsonl, line 2, field 'pos_scores'.*knowledge_distillation"):
        load_group_rows(f, data_args(knowledge_distillation=True))
    load_group_rows(f, data_args(knowledge_distillation=False))      # fine without KD


def test_empty_negatives_is_an_error(tmp_path):
    f = write(tmp_path / "m.jsonl", [row(0, n_neg=0, scores=False)])
    with pytest.raises(InputError, match="line 1, field 'neg'.*empty"):
        load_group_rows(f, data_args(knowledge_distillation=False, train_group_size=2))


def test_batch_indices_seeded_per_epoch_and_drop_last():
    a = batch_indices(10, 3, seed=1, epoch=1)
    assert a == batch_indices(10, 3, seed=1, epoch=1)
    assert a != batch_indices(10, 3, seed=1, epoch=2)
    assert len(a) == 3 and all(len(b) == 3 for b in a)
    assert len(batch_indices(10, 3, 1, 1, shuffle=False, drop_last=False)[-1]) == 1
    assert len(batch_indices(10, 2, 1, 1, world_size=2)) == 2       # global batches of 4


def test_batches_are_reproducible_and_end_with_one_eos(tok):
    rows = [row(i) for i in range(6)]
    cfg = data_args(train_group_size=3, query_max_len=64, passage_max_len=16)
    gb = GroupBatches(rows, tok, cfg, batch_size=2, seed=3, append_eos=False)
    b1, b2 = list(gb(1)), list(gb(1))
    assert len(b1) == len(gb) == 3
    for x, y in zip(b1, b2):
        assert x["queries"]["input_ids"].equal(y["queries"]["input_ids"])
        assert x["teacher_scores"].equal(y["teacher_scores"])
    b = b1[0]
    assert b["passages"]["input_ids"].shape[0] == 6 and b["teacher_scores"].shape == (6,)
    for ids, m in zip(b["passages"]["input_ids"], b["passages"]["attention_mask"]):
        real = ids[m.bool()].tolist()
        assert real[-1] == tok.eos_token_id and real.count(tok.eos_token_id) == 1


def test_icl_examples_are_other_pairs_of_the_batch(tok):
    rows = [row(i) for i in range(4)]
    cfg = data_args(train_group_size=2, query_max_len=256, passage_max_len=16,
                    max_examples=3, query_instruction_for_retrieval="I")
    gb = GroupBatches(rows, tok, cfg, batch_size=4, seed=0)
    seen_examples = 0
    for seed in range(8):
        qs, prefixes, _, _ = gb.texts(rows, random.Random(seed))
        for i, q in enumerate(p + q for p, q in zip(prefixes, qs)):
            own = f"<instruct>Find it.\n<query>query {i}"
            assert q.endswith(own)
            prefix = q[:-len(own)]
            assert f"query {i}\n<response>" not in prefix          # never itself
            n = prefix.count("\n<response>")
            assert n <= 3
            seen_examples += n
            for j in range(4):
                if f"query {j}\n<response>" in prefix:
                    assert f"query {j}\n<response>pos {j}\n\n" in prefix   # (query, its positive)
    assert seen_examples > 0
    b = gb.build(rows, random.Random(0))
    ids = b["queries"]["input_ids"][0][b["queries"]["attention_mask"][0].bool()].tolist()
    assert tok.decode(ids).endswith("\n<response>" + tok.eos_token)


def test_negatives_marked_by_the_teacher_filter_are_dropped_unless_told_otherwise(tmp_path, caplog):
    a, b, c = row(0, n_neg=4), row(1, n_neg=3), row(2, n_neg=2)
    a["neg_suspect"] = [False, True, False, True]
    b["neg_suspect"] = [True, True, True]                 # all marked: the lowest-scored one (score 0) stays
    f = write(tmp_path / "marked.jsonl", [a, b, c])
    with caplog.at_level(logging.INFO, logger="helpers.train.groups"):
        rows = load_group_rows(f, data_args(train_group_size=3))
    assert rows[0]["neg"] == ["neg 0-0", "neg 0-2"] and rows[0]["neg_scores"] == [0.0, 2.0]
    assert rows[0]["neg_ids"] == ["n0-0", "n0-2"] and rows[0]["neg_suspect"] == [False, False]
    assert rows[1]["neg"] == ["neg 1-0"] and rows[1]["neg_scores"] == [0.0]
    assert rows[2]["neg"] == c["neg"] and rows[0]["__line__"] == 1
    assert "dropped 4 of 9 negatives marked neg_suspect" in caplog.text
    for _ in range(5):                                    # a group never holds a marked negative
        ps, sc = sample_group(rows[0], 3, random.Random(_), True)
        assert set(ps[1:]) <= {"neg 0-0", "neg 0-2"} and sc[1:] == [float(p.split("-")[1]) for p in ps[1:]]
    kept = load_group_rows(f, data_args(train_group_size=3, drop_suspect_negatives=False))
    assert kept[0]["neg"] == a["neg"] and kept[1]["neg"] == b["neg"]
    bad = dict(a, neg_suspect=[True])
    with pytest.raises(InputError, match=r"bad.jsonl, line 1, field 'neg_suspect'"):
        load_group_rows(write(tmp_path / "bad.jsonl", [bad]), data_args(train_group_size=3))


# ---------- batches without shared positives (issue 29, part 2) ----------
def test_no_duplicate_batches_keep_the_count_and_share_no_positive():
    from helpers.train.groups import batch_indices, no_duplicate_cut
    keys = [frozenset({str(i % 10)}) for i in range(64)]           # 10 misconceptions, ~6 queries each
    plain = batch_indices(64, 4, seed=3, epoch=0)
    nodup = batch_indices(64, 4, seed=3, epoch=0, keys=keys)
    assert len(nodup) == len(plain) == 16
    assert all(len(b) == 4 and len(set().union(*(keys[i] for i in b))) == 4 for b in nodup)
    assert len({i for b in nodup for i in b}) == 64                   # every row once
    assert batch_indices(64, 4, seed=3, epoch=0, keys=keys) == nodup  # seeded
    # two misconceptions only: batches of 4 cannot avoid a clash; they are filled anyway and counted
    out, forced = no_duplicate_cut(list(range(8)), [frozenset({i % 2}) for i in range(8)], 4, 2)
    assert [len(b) for b in out] == [4, 4] and forced == 2
    with_lengths = batch_indices(64, 4, seed=3, epoch=0, keys=keys, lengths=[i % 7 for i in range(64)], window=2)
    assert len(with_lengths) == 16 and all(len(set().union(*(keys[i] for i in b))) == 4 for b in with_lengths)


# ---------- hard-negative batches: a query's negatives come in as other queries' positives ----------
def test_hard_negative_cut_pulls_in_the_queries_whose_positive_is_a_negative():
    from helpers.train.groups import batch_indices, hard_negative_cut
    # row i: positive "p{i}"; negatives: the positives of rows i+1 and i+2 (mod 12)
    pos = [frozenset({f"p{i}"}) for i in range(12)]
    neg = [[f"p{(i + 1) % 12}", f"p{(i + 2) % 12}"] for i in range(12)]
    order = [0, 5, 9, 3, 7, 1, 11, 2, 8, 4, 10, 6]
    out, forced = hard_negative_cut(order, pos, neg, 3, 4, per_row=2)
    assert out[0] == [0, 1, 2] and forced == 0                      # seed 0, then rows 1 and 2 (its negatives)
    assert out[1] == [5, 6, 7] and out[2] == [9, 10, 11] and out[3] == [3, 4, 8]    # 8: no mate left, next seed
    assert len({i for b in out for i in b}) == 12
    # per_row 1: one partner each; a batch of 4 then has two seeds
    out1, _ = hard_negative_cut(order, pos, neg, 4, 3, per_row=1)
    assert out1[0] == [0, 1, 5, 6]
    # shared positives are never in one batch; when only clashing rows are left, forced and counted
    same = [frozenset({"x"})] * 4
    out2, forced2 = hard_negative_cut([0, 1, 2, 3], same, [["x"]] * 4, 2, 2, per_row=1, no_duplicates=True)
    assert [len(b) for b in out2] == [2, 2] and forced2 == 2
    # through batch_indices: seeded, the same number of batches as plain shuffling, every row at most once
    a = batch_indices(12, 3, seed=1, epoch=2, keys=pos, hard_negatives=(neg, 2))
    assert a == batch_indices(12, 3, seed=1, epoch=2, keys=pos, hard_negatives=(neg, 2))
    assert len(a) == len(batch_indices(12, 3, seed=1, epoch=2)) == 4
    assert any(f"p{(a[0][0] + 1) % 12}" in pos[j] for j in a[0])     # the first seed's first negative is in


def test_hard_negative_queries_flag_reaches_the_batches(tmp_path):
    from helpers.train.groups import GroupBatches
    rows = [{"query": f"q{i}", "pos": [f"p{i}"], "pos_ids": [str(i)], "neg": [f"p{(i + 1) % 8}"],
             "neg_ids": [str((i + 1) % 8)]} for i in range(8)]
    args = data_args(train_group_size=2, hard_negative_queries=1)
    gb = GroupBatches(rows, None, args, batch_size=2, seed=0)
    assert gb.hard_negatives() == ([[str((i + 1) % 8)] for i in range(8)], 1) and gb.keys() is not None
    assert GroupBatches(rows, None, data_args(train_group_size=2), batch_size=2, seed=0).hard_negatives() is None
    with pytest.raises(ValueError, match="hard_negative_queries and group_by_length"):
        data_args(hard_negative_queries=1, group_by_length=True)
