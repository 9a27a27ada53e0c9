"""The demo dataset: committed files regenerate byte for byte, counts, format, computed distractors."""
import csv
import os
import re
import subprocess
import sys
from fractions import Fraction as F

import pytest

from helpers.demo import generate as dd
from helpers.demo.templates import CONSTRUCTS

FILES = ["train.csv", "misconception_mapping.csv", "test.csv", "sample_submission.csv", "README.md"]


@pytest.fixture(scope="module")
def data():
    return dd.generate(seed=42)


@pytest.fixture(scope="module")
def demo_dir(repo_root):
    return repo_root / "data" / "demo"


def read_csv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_committed_files_regenerate_byte_for_byte(tmp_path, demo_dir):
    assert dd.main(["--output_dir", str(tmp_path), "--seed", "42"]) == 0
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (demo_dir / name).read_bytes(), (
            f"data/demo/{name} differs from a fresh run: rerun python -m helpers.demo.generate --output_dir data/demo")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES)  # no temporary files left


def test_output_does_not_depend_on_hash_seed(tmp_path, repo_root, demo_dir):
    env = dict(os.environ, PYTHONHASHSEED="12345")
    subprocess.run([sys.executable, "-m", "helpers.demo.generate", "--output_dir", str(tmp_path)],
                   cwd=repo_root, env=env, check=True, capture_output=True)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (demo_dir / name).read_bytes(), name


def test_counts(data):
    s = dd.stats(data)
    assert s["types"] >= 60 and s["types_used"] >= 60
    assert 400 <= s["pairs"] <= 600
    assert s["unused_names"] >= 300
    assert s["misconceptions"] == s["types"] + 340 == len(data.names)
    assert s["constructs"] >= 20 and s["subjects"] >= 10
    assert s["test_questions"] == 5


def test_csv_format(demo_dir, data):
    raw = (demo_dir / "train.csv").read_bytes()
    assert raw.startswith(",".join(dd.TRAIN_COLUMNS).encode() + b"\r\n")  # CRLF records, like the real file
    train = read_csv(demo_dir / "train.csv")
    mapping = read_csv(demo_dir / "misconception_mapping.csv")
    test = read_csv(demo_dir / "test.csv")
    sub = read_csv(demo_dir / "sample_submission.csv")
    assert list(train[0]) == dd.TRAIN_COLUMNS and list(test[0]) == dd.TEST_COLUMNS
    assert list(mapping[0]) == ["MisconceptionId", "MisconceptionName"]
    assert list(sub[0]) == ["QuestionId_Answer", "MisconceptionId"]

    ids = [int(r["MisconceptionId"]) for r in mapping]
    assert ids == list(range(len(ids)))
    names = [r["MisconceptionName"] for r in mapping]
    assert len(set(names)) == len(names) and all(n.strip() == n and n for n in names)
    assert len(train) == len(data.train) and [int(r["QuestionId"]) for r in train] == list(range(len(train)))

    for r in train:
        assert r["CorrectAnswer"] in "ABCD" and r[f"Misconception{r['CorrectAnswer']}Id"] == ""
        for l in "ABCD":
            v = r[f"Misconception{l}Id"]
            assert v == "" or (re.fullmatch(r"\d+\.0", v) and int(float(v)) < len(ids)), v
        assert any(r[f"Misconception{l}Id"] for l in "ABCD")
        assert len(r["QuestionText"].split()) < 60
    text = "".join(r["QuestionText"] + "".join(r[f"Answer{l}Text"] for l in "ABCD") for r in train)
    for needle in ["\\( \\frac{", "\\[\n", "\\times", "\\div", "](", "^{\\circ}", "\n"]:
        assert needle in text, needle
    assert any(r["QuestionText"] != r["QuestionText"].strip() for r in train)  # the white space quirk

    test_ids = [int(r["QuestionId"]) for r in test]
    assert test_ids == list(range(len(train), len(train) + len(test)))
    assert len(sub) == 3 * len(test)
    for r in sub:
        qid, letter = r["QuestionId_Answer"].split("_")
        assert letter != next(t["CorrectAnswer"] for t in test if t["QuestionId"] == qid)
        assert len(r["MisconceptionId"].split(" ")) == 25


def test_labelled_distractors_are_the_computed_misconception_answers(demo_dir, data):
    """Each labelled answer in train.csv equals the per-type function applied to the question's numbers."""
    train = read_csv(demo_dir / "train.csv")
    names = {int(r["MisconceptionId"]): r["MisconceptionName"] for r in read_csv(demo_dir / "misconception_mapping.csv")}
    key_of = {i: k for k, i in data.type_ids.items()}
    checked = 0
    for r, q in zip(train, data.train):
        assert r["QuestionText"] == q.text and r["ConstructName"] == q.construct.name
        assert r[f"Answer{q.correct}Text"] == dd.correct_answer(q.construct, q.params)
        for l in "ABCD":
            if r[f"Misconception{l}Id"]:
                key = key_of[int(float(r[f"Misconception{l}Id"]))]
                assert dd.TYPE_CONSTRUCT[key] is q.construct
                assert names[data.type_ids[key]] == dd.MISCONCEPTION_TYPES[key].name
                assert r[f"Answer{l}Text"] == dd.misconception_answer(key, q.params)
                checked += 1
    assert checked == data.pairs >= 400


def test_distractors_distinct_and_slips_unlabelled(data):
    for q in data.train + data.test:
        norm = [" ".join(a.split()) for a in q.answers]
        assert len(set(norm)) == 4, q.answers
        assert q.type_keys[dd.LETTERS.index(q.correct)] is None
        assert any(k is not None for k in q.type_keys)
        type_answers = {dd.misconception_answer(t.key, q.params) for t in q.construct.types}
        for a, k in zip(q.answers, q.type_keys):
            if k is None and a != q.answers[dd.LETTERS.index(q.correct)]:
                assert a not in type_answers, (q.construct.key, a)  # a slip is no misconception's answer


@pytest.mark.parametrize("key,params,expected", [
    ("frac_add_across", dict(a=1, b=2, c=1, d=3, v=0), "\\( \\frac{2}{5} \\)"),
    ("frac_mult_divides", dict(a=2, b=3, c=4, d=5, v=0), "\\( \\frac{10}{12} \\)"),
    ("bidmas_left_to_right", dict(a=3, b=2, c=4, v=0), "\\( 20 \\)"),
    ("area_rect_gives_perimeter", dict(l=5, w=3, img=False), "\\( 16 \\mathrm{~cm}^{2} \\)"),
    ("colsub_smaller_from_larger", dict(x=523, y=187), "\\( 464 \\)"),
    ("square_doubles", dict(n=7), "\\( 14 \\)"),
    ("mean_gives_median", dict(vals=[3, 9, 1, 7, 5]), "\\( 5 \\)"),
    ("median_unordered", dict(vals=[3, 9, 1, 7, 5]), "\\( 1 \\)"),
    ("round100_down", dict(n=7294), "\\( 7200 \\)"),
    ("std_power_counts_zeros", dict(s=F(43, 10), k=5), "\\( 4.3 \\times 10^{4} \\)"),
    ("eq_wrong_inverse", dict(a=2, b=3, c=17, x="a"), "\\( a=10 \\)"),
    ("neg_times_neg_negative", dict(a=4, b=2), "\\( -8 \\)"),
    ("pct_divides_by_percent", dict(pc=20, n=100, v=1), "\\( £ 5 \\)"),
    ("expand_first_term_only", dict(a=3, b=5, x="x"), "\\( 3 x+5 \\)"),
    ("angle_line_360", dict(x=40), "\\( 320^{\\circ} \\)"),
    ("decadd_right_align", dict(x=F(34, 10), y=F(215, 100)), "\\( 2.49 \\)"),
    ("idx_mult_multiplies_powers", dict(b=3, p=2, q=4), "\\( 3^{8} \\)"),
    ("angle_line_90", dict(x=120), None),                      # does not apply: the generator skips it
    ("speed_time_over_distance", dict(s=15, t=2), None),       # 1/15 has no exact decimal
])
def test_known_misconception_answers(key, params, expected):
    assert dd.misconception_answer(key, params) == expected


def test_every_type_has_a_unique_name_and_some_applicable_numbers():
    import random
    rng = random.Random(0)
    assert len(dd.MISCONCEPTION_TYPES) >= 60
    for c in CONSTRUCTS:
        seen = set()
        for _ in range(50):
            p = c.sample(rng)
            seen |= {t.key for t in c.types if dd.misconception_answer(t.key, p) not in (None, dd.correct_answer(c, p))}
        assert seen == {t.key for t in c.types}, c.key


def test_ids_interleave_and_unused_names_are_new(data):
    used = sorted({data.type_ids[k] for q in data.train for k in q.type_keys if k})
    unused = data.unused_ids
    assert unused[0] < used[-1] and used[0] < unused[-1]
    assert len(unused) >= 300
    type_names = {t.name for t in dd.MISCONCEPTION_TYPES.values()}
    assert not type_names & {data.names[i] for i in unused}


def test_different_seeds_differ():
    a, b = dd.render(dd.generate(seed=1)), dd.render(dd.generate(seed=2))
    assert a["train.csv"] != b["train.csv"] and a["misconception_mapping.csv"] != b["misconception_mapping.csv"]
    assert dd.render(dd.generate(seed=1))["train.csv"] == a["train.csv"]


def test_bad_arguments_name_the_flag():
    with pytest.raises(ValueError, match="--num_pairs"):
        dd.parse_args(["--num_pairs", "0"])
    with pytest.raises(ValueError, match="--num_unused"):
        dd.generate(seed=1, num_unused=100000)
