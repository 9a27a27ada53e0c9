"""Mining: range slicing and exclusions on a known ranking, top-up, determinism, search, bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.mine.hn_mine import HnMineArgs, build_parser, hn_mine, parse_args
from helpers.common.io_utils import InputError
from helpers.mine.mining import parse_range, sample_negatives, shuffle_rows
from helpers.embed.search import search, search_faiss, search_torch
from tests.factories import write_inputs

REPO = Path(__file__).resolve().parents[2]
IDS = [f"m{i}" for i in range(10)]
TEXTS = [f"misconception {i}" for i in range(10)]


def test_parse_range():
    assert parse_range("2-100") == (2, 100)
    assert parse_range("0-5") == (0, 5)
    for bad in ("100-2", "a-b", "5", "3-3", "-1-4", "2-100-3"):
        with pytest.raises(ValueError, match="range_for_sampling"):
            parse_range(bad)


def _row(pos_ids, query="the query", qid="q"):
    return {"query_id": qid, "query": query, "pos": [TEXTS[int(p[1:])] for p in pos_ids],
            "pos_ids": list(pos_ids), "neg": [], "neg_ids": []}


def test_range_is_slice_and_positives_dropped_by_id():
    ranked = np.array([[3, 1, 4, 0, 5, 9, 2, 6, 8, 7]])
    rows, ranks = sample_negatives([_row(["m4"])], ranked, IDS, TEXTS, "1-6", negative_number=10, seed=0)
    # slice [1:6] = 1,4,0,5,9; m4 is the positive -> 1,0,5,9 (rank order kept), then top-up
    assert rows[0]["neg_ids"][:4] == ["m1", "m0", "m5", "m9"]
    assert ranks[0][:4] == [1, 3, 4, 5]
    topped = rows[0]["neg_ids"][4:]
    assert ranks[0][4:] == [-1] * len(topped)
    assert "m4" not in rows[0]["neg_ids"]
    assert len(set(rows[0]["neg_ids"])) == len(rows[0]["neg_ids"]) == 9   # 10 passages - 1 positive
    assert rows[0]["neg"] == [TEXTS[int(i[1:])] for i in rows[0]["neg_ids"]]


def test_sampling_when_more_candidates_than_needed():
    ranked = np.array([list(range(10))])
    rows, ranks = sample_negatives([_row(["m0"])], ranked, IDS, TEXTS, "0-10", negative_number=3, seed=1)
    assert len(rows[0]["neg_ids"]) == 3 and "m0" not in rows[0]["neg_ids"]
    assert ranks[0] == sorted(ranks[0]) and min(ranks[0]) >= 1
    again, _ = sample_negatives([_row(["m0"])], ranked, IDS, TEXTS, "0-10", negative_number=3, seed=1)
    assert again == rows
    other = [sample_negatives([_row(["m0"])], ranked, IDS, TEXTS, "0-10", 3, seed=s)[0][0]["neg_ids"]
             for s in range(6)]
    assert len({tuple(o) for o in other}) > 1          # the seed matters


def test_same_text_as_positive_or_query_never_a_negative():
    texts = list(TEXTS)
    texts[2] = texts[1]            # m2 duplicates the positive's text
    texts[3] = "the query"         # m3 is the query itself
    ranked = np.array([list(range(10))])
    rows, _ = sample_negatives([_row(["m1"], query="the query") | {"pos": [texts[1]]}], ranked, IDS, texts,
                               "0-10", negative_number=8, seed=0)
    got = rows[0]["neg_ids"]
    assert not {"m1", "m2", "m3"} & set(got)
    assert len(got) == 7          # only 7 real negatives exist; no duplicate to fill the gap


def test_corpus_smaller_than_range_and_topup_never_bad():
    ranked = np.array([[5, 0, 1], [2, 3, 4]])        # corpus of 6, range 2-100
    ids, texts = IDS[:6], TEXTS[:6]
    rows = [_row(["m0", "m1"], qid="a"), _row(["m3"], qid="b")]
    for seed in range(20):
        out, ranks = sample_negatives(rows, ranked, ids, texts, "2-100", negative_number=4, seed=seed)
        for r, rk in zip(out, ranks):
            assert not set(r["pos_ids"]) & set(r["neg_ids"])
            assert len(set(r["neg_ids"])) == len(r["neg_ids"])
            assert len(r["neg_ids"]) == min(4, 6 - len(r["pos_ids"]))
        assert ranks[1][0] == 2 and out[1]["neg_ids"][0] == "m4"   # rank-2 candidate kept first


def test_shuffle_rows_seeded_permutation():
    rows = list(range(20))
    a, b = shuffle_rows(rows, 3), shuffle_rows(rows, 3)
    assert a == b and sorted(a) == rows and a != rows


def test_faiss_and_torch_search_agree_ties_by_lower_index():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(300, 16)).astype(np.float32)
    q = rng.normal(size=(12, 16)).astype(np.float32)
    p[40] = p[7]
    p[250] = p[7]
    q[0] = p[7]
    s1, i1 = search_torch(q, p, 20)
    s2, i2 = search_faiss(q, p, 20)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=1e-4)
    assert list(i1[0, :3]) == [7, 40, 250]
    s3, i3 = search(q, p, 1000)               # topk above corpus size -> whole corpus
    assert i3.shape == (12, 300)


# ----------------------------------------------------------------------------- hn_mine
class HashEmbedder:
    """Deterministic stand-in: vectors from a sha1 of the text (no model)."""

    @staticmethod
    def _vec(text):
        import hashlib
        seed = int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)
        v = np.random.default_rng(seed).normal(size=8).astype(np.float32)
        return v / np.linalg.norm(v)

    def encode_corpus(self, texts):
        return np.stack([self._vec(t) for t in texts])

    def encode_queries(self, rows):
        return np.stack([self._vec(r["query"]) for r in rows])


def _args(d, **kw):
    base = dict(model_name_or_path="unused", input_file=str(d / "queries.jsonl"),
                output_file=str(d / "out" / "mined.jsonl"), candidate_pool=str(d / "corpus.jsonl"),
                range_for_sampling="2-20", negative_number=5, shuffle_data=True)
    base.update(kw)
    return HnMineArgs(**base)


def test_hn_mine_output_contract(tmp_path):
    d = write_inputs(tmp_path)
    res = hn_mine(_args(d), embedder=HashEmbedder())
    rows = [json.loads(x) for x in (d / "out" / "mined.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and sorted(r["extra"] for r in rows) == list(range(6))   # extra fields pass
    for r in rows:
        assert len(r["neg"]) == len(r["neg_ids"]) == 5 and not set(r["neg_ids"]) & set(r["pos_ids"])
        assert "__line__" not in r
    assert res.stats["negatives_total"] == 30 and len(res.pos_sim) == 6


def test_hn_mine_without_candidate_pool_uses_input_positives(tmp_path):
    d = write_inputs(tmp_path, n_corpus=10, n_queries=6)
    res = hn_mine(_args(d, candidate_pool=None, negative_number=3), embedder=HashEmbedder())
    assert res.stats["corpus"] == 6
    for r in res.rows:
        assert set(r["neg_ids"]) <= {str(100 + i) for i in range(6)} and len(r["neg_ids"]) == 3


DET_SCRIPT = """
import sys; sys.path.insert(0, {repo!r})
from pathlib import Path
from tests.mine.test_mining import HashEmbedder, _args
from helpers.mine.hn_mine import hn_mine
hn_mine(_args(Path({d!r}), output_file={out!r}), embedder=HashEmbedder())
"""


def test_byte_identical_under_different_pythonhashseed(tmp_path):
    d = write_inputs(tmp_path)
    outs = []
    for hs in ("1", "2"):
        out = str(tmp_path / f"out_{hs}.jsonl")
        code = DET_SCRIPT.format(repo=str(REPO), d=str(d), out=out)
        subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONHASHSEED": hs})
        outs.append(Path(out).read_bytes())
    assert outs[0] == outs[1] and len(outs[0]) > 100


@pytest.mark.parametrize("case, match", [
    ("pos_string", r"queries.jsonl, line 2, field 'pos'"),
    ("absent_id", r"queries.jsonl, line 1, field 'pos_ids'.*not in the corpus"),
    ("empty", r"queries.jsonl: file is empty"),
    ("malformed", r"queries.jsonl, line 3: not valid JSON"),
])
def test_bad_input_named_and_nothing_written(tmp_path, case, match):
    d = write_inputs(tmp_path)
    q = d / "queries.jsonl"
    lines = q.read_text().splitlines()
    if case == "pos_string":
        r = json.loads(lines[1])
        r["pos"] = r["pos"][0]
        lines[1] = json.dumps(r)
    elif case == "absent_id":
        r = json.loads(lines[0])
        r["pos_ids"] = ["99999"]
        lines[0] = json.dumps(r)
    elif case == "empty":
        lines = []
    elif case == "malformed":
        lines[2] = lines[2][:-5]
    q.write_text("".join(x + "\n" for x in lines))
    with pytest.raises(InputError, match=match):
        hn_mine(_args(d), embedder=HashEmbedder())
    out_dir = d / "out"
    assert not out_dir.exists() or not list(out_dir.iterdir())     # no output, no temp file


def test_command_line_flags_of_the_seed():
    # the seed's command, verbatim apart from paths/model/devices
    argv = ["--embedder_name_or_path", "demo:smollm2-135m-instruct", "--embedder_model_class", "decoder-only-icl",
            "--pooling_method", "last_token", "--input_file", "in.jsonl", "--output_file", "out.jsonl",
            "--candidate_pool", "corpus.jsonl", "--range_for_sampling", "2-100", "--negative_number", "15",
            "--devices", "cpu", "--shuffle_data", "True", "--query_instruction_for_retrieval", "Find it.",
            "--query_instruction_format", "<instruct>{}\\n<query>{}", "--add_examples_for_task", "False",
            "--batch_size", "1024", "--embedder_query_max_length", "1024", "--embedder_passage_max_length", "512"]
    a = parse_args(argv)
    assert a.shuffle_data is True and a.examples_for_task is None and a.devices == ["cpu"]
    assert a.negative_number == 15 and a.embedder_batch_size == 1024 and a.model_name_or_path == "demo:smollm2-135m-instruct"
    from helpers.common.prompts import unescape       # the embedder reads the format this way
    assert unescape(a.query_instruction_format) == "<instruct>{}\n<query>{}" and a.query_max_len == 1024
    b = parse_args(argv[:-2] + ["--query_instruction_format_for_retrieval", "{}{}"])
    assert b.query_instruction_format == "{}{}"
    with pytest.raises(SystemExit):
        parse_args(argv + ["--shuffle_data", "maybe"])


def test_the_seeds_add_examples_switch_finds_the_examples_beside_the_input(tmp_path):
    base = ["--embedder_name_or_path", "m", "--input_file", str(tmp_path / "q.jsonl"), "--output_file", "o"]
    with pytest.raises(ValueError, match="examples.json does not exist"):
        parse_args(base + ["--add_examples_for_task", "True"])
    (tmp_path / "examples.json").write_text("{}")
    assert parse_args(base + ["--add_examples_for_task"]).examples_for_task == str(tmp_path / "examples.json")
    assert parse_args(base + ["--add_examples_for_task", "True", "--examples_for_task", "x.json"]).examples_for_task == "x.json"
    assert parse_args(base + ["--add_examples_for_task", "False"]).examples_for_task is None
    with pytest.raises(ValueError, match="contradicts"):
        parse_args(base + ["--add_examples_for_task", "False", "--examples_for_task", "x.json"])


@pytest.mark.integration
def test_command_runs_with_a_real_small_model(tmp_path):
    d = write_inputs(tmp_path, n_corpus=12, n_queries=3)
    out = d / "mined.jsonl"
    cmd = [sys.executable, "-m", "helpers.mine.hn_mine", "--embedder_name_or_path", "demo:all-minilm-l6-v2",
           "--embedder_model_class", "encoder-only-base", "--input_file", str(d / "queries.jsonl"),
           "--output_file", str(out), "--candidate_pool", str(d / "corpus.jsonl"),
           "--range_for_sampling", "2-100", "--negative_number", "4", "--devices", "cpu",
           "--shuffle_data", "True", "--batch_size", "8", "--embedder_query_max_length", "32",
           "--embedder_passage_max_length", "16"]
    subprocess.run(cmd, check=True, cwd=REPO, capture_output=True)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 3 and all(len(r["neg_ids"]) == 4 for r in rows)


@pytest.mark.integration
def test_notebook_runs_on_tiny_inputs(tmp_path):
    import papermill as pm
    d = write_inputs(tmp_path, n_corpus=12, n_queries=4)
    out = tmp_path / "mined"
    pm.execute_notebook(
        str(REPO / "notebooks" / "01_mine_hn.ipynb"), str(tmp_path / "executed.ipynb"), cwd=str(REPO),
        kernel_name="python3", progress_bar=False,
        parameters=dict(model_name_or_path="demo:all-minilm-l6-v2", embedder_model_class="encoder-only-base",
                        pooling_method=None, train_input_file=str(d / "queries.jsonl"),
                        test_input_file=str(d / "queries.jsonl"), candidate_pool=str(d / "corpus.jsonl"),
                        train_output_file=str(out / "train.jsonl"), test_output_file=str(out / "test.jsonl"),
                        query_max_len=32, passage_max_len=16, negative_number=3,
                        range_for_sampling="2-100", shuffle_data=True, query_instruction_format="<instruct>{}\\n<query>{}",
                        devices="cpu"))
    for name in ("train", "test"):
        rows = [json.loads(x) for x in (out / f"{name}.jsonl").read_text().splitlines()]
        assert len(rows) == 4 and all(len(r["neg_ids"]) == 3 for r in rows)
    assert (out / "train.jsonl").read_bytes() == (out / "test.jsonl").read_bytes()   # same input, same seed


# ----------------------------------------------------------------------------- positive-aware filters
from helpers.mine.mining import MiningStats  # noqa: E402

FIDS = [f"m{i}" for i in range(12)]
FTEXTS = [f"passage {i}" for i in range(12)]
FRANKED = np.array([list(range(10))])                      # m10, m11 are not in the ranking
FSCORES = np.array([[1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55]])


def _frow(pos=("m11",)):
    return {"query_id": "q", "query": "the query", "pos": [FTEXTS[int(p[1:])] for p in pos],
            "pos_ids": list(pos), "neg": [], "neg_ids": []}


def _fsample(n=3, pos_scores=((0.8,),), pos=("m11",), seed=0, **kw):
    st = MiningStats()
    rows, ranks = sample_negatives([_frow(pos)], FRANKED, FIDS, FTEXTS, "0-10", n, seed, scores=FSCORES,
                                   pos_scores=[list(p) for p in pos_scores], stats=st, **kw)
    return rows[0]["neg_ids"], ranks[0], st


def test_defaults_unchanged_golden_from_the_old_code():
    # recorded with the code before the filters existed (same ranking, range, seeds)
    ranked = np.array([[3, 1, 4, 0, 5, 9, 2, 6, 8, 7]])
    want = {0: (["m9", "m2", "m8"], ["m3", "m1", "m8", "m6", "m5"]),
            1: (["m5", "m9", "m6"], ["m3", "m1", "m5", "m7", "m9"]),
            7: (["m9", "m2", "m8"], ["m3", "m1", "m9", "m6", "m8"])}
    for seed, (sampled, topped) in want.items():
        assert sample_negatives([_row(["m4"])], ranked, IDS, TEXTS, "1-9", 3, seed)[0][0]["neg_ids"] == sampled
        assert sample_negatives([_row(["m4"])], ranked, IDS, TEXTS, "0-3", 5, seed)[0][0]["neg_ids"] == topped
        # scores given but no filter, sampling random: exactly the same draw
        sc = np.linspace(1, 0, 10)[None]
        assert sample_negatives([_row(["m4"])], ranked, IDS, TEXTS, "1-9", 3, seed, scores=sc, pos_scores=[[0.5]],
                                relative_margin=None, absolute_margin=None, max_score=None,
                                sampling="random")[0][0]["neg_ids"] == sampled


def test_relative_margin_keeps_scores_below_the_percentage_of_the_positive():
    got, ranks, st = _fsample(relative_margin=0.05, sampling="top")       # 0.8 * 0.95 = 0.76
    assert got == ["m5", "m6", "m7"] and ranks == [5, 6, 7]
    assert st.removed["relative_margin"] == 5 and st.removed_any == 5 and st.candidates == 10
    assert st.as_dict()["removed_by_relative_margin_per_query"] == 5.0
    # a negative positive similarity: the threshold is below it (s_pos - |s_pos| * m), never above
    sc = np.array([[-0.5, -0.54, -0.56, -0.6]])
    rows, _ = sample_negatives([_frow()], np.array([[0, 1, 2, 3]]), FIDS, FTEXTS, "0-4", 2, 0, scores=sc,
                               pos_scores=[[-0.5]], relative_margin=0.1, sampling="top")
    assert rows[0]["neg_ids"] == ["m2", "m3"]


def test_several_positives_use_the_lowest_positive_similarity():
    got, _, _ = _fsample(pos=("m10", "m11"), pos_scores=((0.9, 0.8),), relative_margin=0.05, sampling="top")
    assert got == ["m5", "m6", "m7"]          # with the highest (0.9 * 0.95 = 0.855) m3 (0.85) would survive


def test_absolute_margin_and_combined_counts():
    got, _, st = _fsample(absolute_margin=0.12, sampling="top")            # s < 0.68
    assert got == ["m7", "m8", "m9"] and st.removed["absolute_margin"] == 7
    got, _, _ = _fsample(pos_scores=((0.75,),), absolute_margin=0.0, sampling="top")
    assert got == ["m6", "m7", "m8"]                                        # margin 0: equal to the positive goes
    _, _, st = _fsample(relative_margin=0.05, absolute_margin=0.12, sampling="top")
    assert st.removed == {"relative_margin": 5, "absolute_margin": 7, "max_score": 0} and st.removed_any == 7


def test_max_score_and_top_up_never_brings_back_a_filtered_passage(caplog):
    import logging
    with caplog.at_level(logging.INFO, logger="helpers.mine.mining"):
        for seed in range(10):
            got, ranks, st = _fsample(max_score=0.62, seed=seed)
            # survivors m8 (0.6), m9 (0.55); m0..m7 failed, m11 is the positive: the top-up can only be m10
            assert got == ["m8", "m9", "m10"] and ranks == [8, 9, -1]
            assert st.removed["max_score"] == 8 and st.topped_up == 1
    assert "left after the filters" in caplog.text and "max_score 8 removed" in caplog.text


def test_sampling_top_is_the_best_ranked_survivors_random_a_seeded_subset():
    top = [_fsample(n=2, relative_margin=0.05, sampling="top", seed=s)[0] for s in range(8)]
    assert all(t == ["m5", "m6"] for t in top)                             # no draw: the seed does not matter
    rnd = [_fsample(n=2, relative_margin=0.05, seed=s) for s in range(8)]
    for got, ranks, _ in rnd:
        assert set(got) <= {"m5", "m6", "m7", "m8", "m9"} and ranks == sorted(ranks)
    assert len({tuple(g) for g, _, _ in rnd}) > 1
    # without filters, top is simply the first negative_number of the range
    rows, _ = sample_negatives([_row(["m0"])], np.array([list(range(10))]), IDS, TEXTS, "2-10", 3, 0, sampling="top")
    assert rows[0]["neg_ids"] == ["m2", "m3", "m4"]


def test_filters_check_their_values_and_need_scores():
    with pytest.raises(ValueError, match="sampling"):
        sample_negatives([_frow()], FRANKED, FIDS, FTEXTS, "0-10", 3, sampling="best")
    with pytest.raises(ValueError, match="relative_margin"):
        _fsample(relative_margin=1.5)
    with pytest.raises(ValueError, match="absolute_margin"):
        _fsample(absolute_margin=-0.1)
    with pytest.raises(ValueError, match="need the ranking's scores"):
        sample_negatives([_frow()], FRANKED, FIDS, FTEXTS, "0-10", 3, max_score=0.5)
    with pytest.raises(ValueError, match="positives' scores"):
        sample_negatives([_frow()], FRANKED, FIDS, FTEXTS, "0-10", 3, scores=FSCORES, relative_margin=0.05)


def test_hn_mine_filters_stats_and_flags(tmp_path):
    d = write_inputs(tmp_path)
    base = hn_mine(_args(d, shuffle_data=False), embedder=HashEmbedder())
    assert base.stats["removed_by_filters"] == 0 and base.stats["sampling"] == "random"
    res = hn_mine(_args(d, shuffle_data=False, absolute_margin=0.0, output_file=str(d / "out" / "f.jsonl")),
                  embedder=HashEmbedder())
    assert res.stats["removed_by_absolute_margin"] > 0
    assert res.stats["removed_by_absolute_margin_per_query"] == pytest.approx(
        res.stats["removed_by_absolute_margin"] / 6, abs=1e-4)
    # the whole corpus is searched here, so no negative (range or top-up) is as close as the positive
    for ps, ns in zip(res.pos_sim, res.neg_sim):
        assert all(n < ps for n in ns)
    assert any(max(ns) >= ps for ps, ns in zip(base.pos_sim, base.neg_sim))       # the test can fail
    a = HnMineArgs(**vars(build_parser().parse_args(
        ["--embedder_name_or_path", "m", "--input_file", "i", "--output_file", "o", "--relative_margin", "0.05",
         "--absolute_margin", "None", "--max_score", "0.9", "--sampling", "top"])))
    assert (a.relative_margin, a.absolute_margin, a.max_score, a.sampling) == (0.05, None, 0.9, "top")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--embedder_name_or_path", "m", "--input_file", "i", "--output_file", "o",
                                   "--sampling", "best"])
    help_text = build_parser().format_help()
    for flag in ("--relative_margin", "--absolute_margin", "--max_score", "--sampling", "PercPos"):
        assert flag in help_text
    with pytest.raises(ValueError, match="relative_margin"):
        hn_mine(_args(d, relative_margin=2.0), embedder=HashEmbedder())


def test_keep_scores_adds_the_models_similarities_and_changes_nothing_else(tmp_path):
    d = write_inputs(tmp_path)
    hn_mine(_args(d), embedder=HashEmbedder())
    plain = [json.loads(x) for x in (d / "out" / "mined.jsonl").read_text().splitlines()]
    hn_mine(_args(d, keep_scores=True), embedder=HashEmbedder())
    kept = [json.loads(x) for x in (d / "out" / "mined.jsonl").read_text().splitlines()]
    corpus = {json.loads(x)["id"]: json.loads(x)["text"] for x in (d / "corpus.jsonl").read_text().splitlines()}
    e = HashEmbedder()
    for a, b in zip(plain, kept):
        assert {k: v for k, v in b.items() if k not in ("pos_embedder_scores", "neg_embedder_scores")} == a
        q = e.encode_queries([b])[0]
        for field, ids in (("pos_embedder_scores", b["pos_ids"]), ("neg_embedder_scores", b["neg_ids"])):
            want = [float(q @ e._vec(corpus[i])) for i in ids]
            assert len(b[field]) == len(ids) and np.allclose(b[field], want, atol=1e-6)
    assert "pos_embedder_scores" not in plain[0]          # off by default: FlagEmbedding's fields only
