"""Teacher false-negative filter: suspects by hand, drop keeps alignment and one negative, mark adds
neg_suspect, and add_reranker_score applies it on the final rows without breaking resume."""
import json

import pytest

from helpers.rerank.add_reranker_score import add_reranker_score, parse_args
from helpers.rerank.filters import (apply_teacher_filter, drop_marked, keep_indices, suspect_mask)
from helpers.rerank.progress import progress_path
from tests.rerank.test_add_reranker_score import FakeReranker, args, rows, write


def scored(pos, neg, **kw):
    n = len(neg)
    return {"query_id": "q", "query": "the query", "pos": [f"p{i}" for i in range(len(pos))], "pos_scores": list(pos),
            "neg": [f"n{j}" for j in range(n)], "neg_ids": [f"id{j}" for j in range(n)], "neg_scores": list(neg), **kw}


def test_suspect_mask_uses_the_best_positive_and_the_margin():
    r = scored([1.0, 3.0], [3.5, 3.0, 2.5, -1.0])
    assert suspect_mask(r, 0.0) == [True, False, False, False]        # > 3.0 strictly
    assert suspect_mask(r, 0.6) == [True, True, True, False]          # > 2.4
    assert suspect_mask(r, -1.0) == [False, False, False, False]      # > 4.0


def test_drop_keeps_fields_aligned_and_leaves_the_input_alone():
    r = scored([2.0], [5.0, 1.0, 2.5, 0.5], neg_rank=[3, 4, 5, 6], extra="kept")
    out, rep = apply_teacher_filter([r], "drop", 0.0)
    o = out[0]
    assert o["neg"] == ["n1", "n3"] and o["neg_ids"] == ["id1", "id3"] and o["neg_scores"] == [1.0, 0.5]
    assert o["neg_rank"] == [4, 6] and o["extra"] == "kept" and "neg_suspect" not in o
    assert len(r["neg"]) == 4                                           # input row not changed
    assert rep["flagged"] == 2 and rep["dropped"] == 2 and rep["flagged_per_query"] == [2]
    ex = rep["examples"][0]
    assert (ex["pos"], ex["pos_score"], ex["neg"], ex["neg_score"], ex["neg_id"]) == ("p0", 2.0, "n0", 5.0, "id0")


def test_drop_keeps_the_lowest_scored_negative_when_all_are_suspects():
    r = scored([0.0], [3.0, 1.0, 2.0])
    out, rep = apply_teacher_filter([r], "drop", 0.0)
    assert out[0]["neg"] == ["n1"] and out[0]["neg_scores"] == [1.0]
    assert rep["kept_to_keep_one"] == 1 and rep["dropped"] == 2 and rep["flagged"] == 3
    assert keep_indices([True, True], [2.0, 2.0]) == [0]                # ties: the first


def test_mark_adds_aligned_booleans_and_none_changes_nothing():
    rs = [scored([2.0], [5.0, 1.0]), scored([0.0], [-1.0, -2.0])]
    out, rep = apply_teacher_filter(rs, "mark", 0.0)
    assert [o["neg_suspect"] for o in out] == [[True, False], [False, False]]
    assert [o["neg"] for o in out] == [r["neg"] for r in rs]
    assert rep["flagged_per_query"] == [1, 0] and rep["queries_with_flagged"] == 1
    same, rep = apply_teacher_filter(rs, "none", 0.0)
    assert same == rs and rep["flagged"] == 0
    with pytest.raises(ValueError, match="teacher_filter"):
        apply_teacher_filter(rs, "remove", 0.0)
    with pytest.raises(ValueError, match="needs pos_scores"):
        apply_teacher_filter([{"query": "q", "pos": ["p"], "neg": ["n"]}], "mark", 0.0)


def test_drop_marked_is_the_training_side_of_mark():
    r = dict(scored([2.0], [5.0, 1.0, 3.0]), neg_suspect=[True, False, True])
    out, n = drop_marked(r)
    assert out["neg"] == ["n1"] and out["neg_scores"] == [1.0] and out["neg_suspect"] == [False] and n == 2
    assert drop_marked(scored([2.0], [1.0])) == (scored([2.0], [1.0]), 0)
    with pytest.raises(ValueError, match="neg_suspect"):
        drop_marked(dict(scored([2.0], [1.0]), neg_suspect=[True, False]))


def _expected_suspects(margin):
    fake = FakeReranker()
    out = []
    for r in rows():
        ps = fake.score_groups([r["query"]], [r["pos"]])[0]
        ns = fake.score_groups([r["query"]], [r["neg"]])[0]
        out.append([s > max(ps) - margin for s in ns])
    return out


def test_add_reranker_score_mark_and_drop_on_the_final_rows(tmp_path):
    write(tmp_path / "mined.jsonl", rows())
    margin = 2.0
    want = _expected_suspects(margin)
    assert 0 < sum(map(sum, want)) < 21                                 # the fake teacher flags some, not all
    a = args(tmp_path, teacher_filter="mark", teacher_filter_margin=margin)
    summary = add_reranker_score(a, reranker=FakeReranker())
    marked = [json.loads(x) for x in open(a.output_file)]
    assert [m["neg_suspect"] for m in marked] == want
    assert summary["teacher_filter_flagged"] == sum(map(sum, want))
    assert summary["teacher_filter_report"]["flagged_per_query"] == [sum(w) for w in want]
    b = args(tmp_path, output_file=str(tmp_path / "drop" / "scored.jsonl"), teacher_filter="drop",
             teacher_filter_margin=margin)
    add_reranker_score(b, reranker=FakeReranker())
    dropped = [json.loads(x) for x in open(b.output_file)]
    for m, d, w in zip(marked, dropped, want):
        keep = [j for j, f in enumerate(w) if not f] or [min(range(3), key=lambda j: m["neg_scores"][j])]
        assert d["neg_ids"] == [m["neg_ids"][j] for j in keep] and d["neg_scores"] == [m["neg_scores"][j] for j in keep]
        assert d["neg"] == [m["neg"][j] for j in keep] and "neg_suspect" not in d


def test_a_run_resumes_under_another_filter_and_gives_the_filtered_file(tmp_path):
    write(tmp_path / "mined.jsonl", rows())
    a = args(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        add_reranker_score(a, reranker=FakeReranker(fail_after=2))
    assert progress_path(a.output_file).exists()
    b = args(tmp_path, teacher_filter="mark", teacher_filter_margin=2.0)
    add_reranker_score(b, reranker=FakeReranker())                      # same progress, other filter: resumes
    got = [json.loads(x) for x in open(b.output_file)]
    assert [g["neg_suspect"] for g in got] == _expected_suspects(2.0)
    c = args(tmp_path, output_file=str(tmp_path / "plain.jsonl"))
    add_reranker_score(c, reranker=FakeReranker())
    plain = [json.loads(x) for x in open(c.output_file)]
    assert [{k: v for k, v in g.items() if k != "neg_suspect"} for g in got] == plain


def test_filter_flags_parse_and_show_in_help():
    base = ["--input_file", "i", "--output_file", "o", "--reranker_name_or_path", "m"]
    a = parse_args(base + ["--teacher_filter", "drop", "--teacher_filter_margin", "0.5"])
    assert a.teacher_filter == "drop" and a.teacher_filter_margin == 0.5
    d = parse_args(base)
    assert d.teacher_filter == "none" and d.teacher_filter_margin == 0.0
    assert "teacher_filter" not in d.score_settings()                   # the filter never blocks a resume
    with pytest.raises(SystemExit):
        parse_args(base + ["--teacher_filter", "remove"])


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["mark", "none"])
def test_notebook_shows_the_suspects(tmp_path, mode):
    import papermill as pm
    from tests.conftest import REPO
    from tests.fixtures.models import save_tiny_gemma_reranker
    model = save_tiny_gemma_reranker(tmp_path / "tiny")
    write(tmp_path / "train.jsonl", rows(3))
    write(tmp_path / "test.jsonl", rows(2))
    out = tmp_path / "scored"
    nb = pm.execute_notebook(
        str(REPO / "notebooks" / "02_reranker_score.ipynb"), str(tmp_path / "executed.ipynb"), cwd=str(REPO),
        kernel_name="python3", progress_bar=False,
        parameters=dict(reranker_name_or_path=model, reranker_max_length=48, reranker_batch_size=4, devices="cpu",
                        train_input_file=str(tmp_path / "train.jsonl"), test_input_file=str(tmp_path / "test.jsonl"),
                        train_output_file=str(out / "train.jsonl"), test_output_file=str(out / "test.jsonl"),
                        teacher_filter=mode, teacher_filter_margin=100.0))     # margin 100: every negative flagged
    got = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    assert all(("neg_suspect" in r) == (mode == "mark") for r in got)
    if mode == "mark":
        assert all(r["neg_suspect"] == [True] * 3 for r in got)
    html = "".join(o.get("data", {}).get("text/html", "") if isinstance(o.get("data", {}).get("text/html", ""), str)
                   else "".join(o["data"]["text/html"]) for o in nb.cells[-1].outputs)
    assert "suspects per query" in html and "suspect negative" in html and "gold 0" in html
