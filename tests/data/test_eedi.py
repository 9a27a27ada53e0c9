"""Eedi loader, query building, splits and prepare_data: real sample quirks and bad input."""
import json

import pytest

from helpers.data.eedi import build_queries, load_misconceptions, load_questions, parse_id
from helpers.common.io_utils import InputError
from helpers.data.prepare_data import OUTPUT_FILES, PrepareArgs, prepare_data
from helpers.common.prompts import RETRIEVAL_INSTRUCTION
from helpers.data.splits import split_queries
from tests.factories import HEADER, tiny_input

def test_parse_id_handles_floats_and_blanks():
    assert parse_id("1672.0", "f", 2, "c") == "1672"
    assert parse_id(" 12 ", "f", 2, "c") == "12"
    assert parse_id("", "f", 2, "c", allow_empty=True) is None
    with pytest.raises(InputError, match="f, line 2, field 'c'"):
        parse_id("1.5", "f", 2, "c")


def test_real_sample_quirks(shared_dir):
    d = shared_dir / "eedi_sample"
    mapping = load_misconceptions(d / "misconception_mapping.csv")
    assert len(mapping) == 2587
    assert mapping["2068"] == mapping["2142"]           # same name, two ids: ids identify
    qs = load_questions(d / "train_sample.csv", mapping)
    assert len(qs) == 187
    rows = build_queries(qs, mapping)
    assert len(rows) == 424                              # README: 424 wrong answers carry a misconception
    assert all(r["pos_ids"][0] in mapping and r["pos"] == [mapping[r["pos_ids"][0]]] for r in rows)
    q0 = next(r for r in rows if r["query_id"] == "0_D")
    assert q0["pos_ids"] == ["1672"]
    assert q0["query"].startswith("Question: \\[\n3 \\times 2+4-5\n\\]")   # LaTeX and newlines kept
    assert "\nHint: Use the order of operations" in q0["query"]
    assert q0["query"].endswith("Wrong answer: Does not need brackets")
    assert all(r["query"] == r["query"].strip() for r in rows)
    assert all(r["prompt"] == RETRIEVAL_INSTRUCTION for r in rows)
    test = load_questions(d / "test.csv", labelled=False)
    assert [q["QuestionId"] for q in test] == ["1869", "1870", "1871"]
    assert len(build_queries(test, None, labelled_only=False)) == 9     # every wrong answer


def test_prepare_data_on_real_sample(shared_dir, tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    for name, src in (("train.csv", "train_sample.csv"), ("misconception_mapping.csv", "misconception_mapping.csv")):
        (inp / name).write_bytes((shared_dir / "eedi_sample" / src).read_bytes())
    stats = prepare_data(PrepareArgs(input_dir=str(inp), output_dir=str(tmp_path / "out")))
    assert stats["train_queries"] + stats["test_queries"] == 424
    assert stats["corpus_misconceptions"] == 2587
    assert 0 < stats["test_misconceptions_unseen_in_train"] <= stats["test_misconceptions"]
    corpus = [json.loads(x) for x in open(tmp_path / "out" / "corpus.jsonl", encoding="utf-8")]
    assert len(corpus) == 2587 and all(isinstance(c["id"], str) for c in corpus)


def test_prepare_writes_contract_and_is_deterministic(tmp_path):
    inp = tiny_input(tmp_path / "in")
    a = prepare_data(PrepareArgs(input_dir=str(inp), output_dir=str(tmp_path / "a"), seed=3))
    prepare_data(PrepareArgs(input_dir=str(inp), output_dir=str(tmp_path / "b"), seed=3))
    for f in OUTPUT_FILES:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    train = [json.loads(x) for x in open(tmp_path / "a" / "train_queries.jsonl")]
    test = [json.loads(x) for x in open(tmp_path / "a" / "test_queries.jsonl")]
    assert len(train) + len(test) == 20 and a["test_questions"] == 2
    keys = {"query_id", "query", "pos", "pos_ids", "neg", "neg_ids", "prompt", "question_id", "subject_id",
            "construct_id"}
    assert all(keys <= set(r) for r in train + test)
    assert not {r["question_id"] for r in train} & {r["question_id"] for r in test}
    ex = json.load(open(tmp_path / "a" / "examples.json"))
    train_ids = {r["query_id"] for r in train}
    assert {e["query_id"] for e in ex["all"]} == train_ids                 # train split only
    assert all(e["query_id"] in train_ids for v in ex["by_construct"].values() for e in v)
    assert set(ex["by_subject"]) == {r["subject_id"] for r in train}


def test_query_template_and_instruction_are_parameters(tmp_path):
    inp = tiny_input(tmp_path / "in")
    prepare_data(PrepareArgs(input_dir=str(inp), output_dir=str(tmp_path / "o"),
                             query_template="{ConstructName} | {WrongAnswerText}", query_instruction="Find it."))
    r = json.loads(open(tmp_path / "o" / "train_queries.jsonl").readline())
    assert r["prompt"] == "Find it." and r["query"].startswith("Construct ") and " | " in r["query"]


@pytest.mark.parametrize("split", ["question", "construct", "misconception"])
def test_splits_are_seeded_and_disjoint(split):
    rows = [{"query_id": f"{q}_{x}", "question_id": str(q), "construct_id": str(q % 7),
             "pos_ids": [str((q * 3 + i) % 40)]} for q in range(60) for i, x in enumerate("BC")]
    tr1, te1 = split_queries(rows, split, 0.25, seed=1)
    tr2, te2 = split_queries(rows, split, 0.25, seed=1)
    _, te3 = split_queries(rows, split, 0.25, seed=2)
    assert te1 == te2 and tr1 == tr2 and te1 != te3
    assert len(tr1) + len(te1) == len(rows)
    key = {"question": "question_id", "construct": "construct_id"}.get(split)
    if key:
        assert not {r[key] for r in tr1} & {r[key] for r in te1}
    else:
        assert not {r["pos_ids"][0] for r in tr1} & {r["pos_ids"][0] for r in te1}   # all unseen
        assert len(te1) >= 0.25 * len(rows)


def _expect_error(tmp_path, mutate=None, match=None, mapping_text=None, train_bytes=None, **kw):
    inp = tiny_input(tmp_path / "in", mutate=mutate)
    if mapping_text is not None:
        (inp / "misconception_mapping.csv").write_text(mapping_text, encoding="utf-8")
    if train_bytes is not None:
        (inp / "train.csv").write_bytes(train_bytes)
    out = tmp_path / "out"
    with pytest.raises((InputError, ValueError), match=match):
        prepare_data(PrepareArgs(input_dir=str(inp), output_dir=str(out), **kw))
    assert not out.exists() or not any(out.iterdir()), "nothing may be written on bad input"


def test_bad_missing_column(tmp_path):
    _expect_error(tmp_path, match="misconception_mapping.csv, line 1, field 'MisconceptionName': missing column",
                  mapping_text="MisconceptionId,Name\n1,x\n")


def test_bad_correct_answer_letter(tmp_path):
    def m(rows):
        rows[3][5] = "E"
    _expect_error(tmp_path, m, match=r"train.csv, line 8, field 'CorrectAnswer': 'E' is not one of")


def test_bad_unknown_misconception_id(tmp_path):
    def m(rows):
        rows[2][12] = "999.0"
    _expect_error(tmp_path, m, match=r"train.csv, line 6, field 'MisconceptionBId': misconception id 999 is not")


def test_bad_duplicate_question_id(tmp_path):
    def m(rows):
        rows[4][0] = 1
    _expect_error(tmp_path, m, match=r"train.csv, line 10, field 'QuestionId': duplicate QuestionId 1 \(first at line 4\)")


def test_bad_line_numbers_count_newlines_inside_cells(tmp_path):
    # every question text holds one embedded newline, so record k starts at line 2 + 2k
    def m(rows):
        rows[6][5] = "Z"
    _expect_error(tmp_path, m, match=r"train.csv, line 14, field 'CorrectAnswer'")


def test_bad_empty_file(tmp_path):
    _expect_error(tmp_path, train_bytes=b"", match=r"train.csv: file is empty")


def test_bad_header_only(tmp_path):
    _expect_error(tmp_path, train_bytes=(",".join(HEADER) + "\n").encode(), match="no rows")


def test_bad_non_utf8(tmp_path):
    raw = (",".join(HEADER) + "\n").encode() + "1,2,c,3,s,A,caf\u00e9,a,b,c,d,,,,\n".encode("latin-1")
    _expect_error(tmp_path, train_bytes=raw, match=r"train.csv, line 2: not UTF-8")


def test_bad_empty_test_split(tmp_path):
    _expect_error(tmp_path, match="test split empty", test_fraction=0.01)


def test_bad_split_name(tmp_path):
    _expect_error(tmp_path, match="split 'random' unknown", split="random")


def test_prepare_command_line(tmp_path):
    import subprocess, sys
    inp = tiny_input(tmp_path / "in")
    r = subprocess.run([sys.executable, "-m", "helpers.data.prepare_data", "--input_dir", str(inp), "--output_dir",
                        str(tmp_path / "o"), "--split", "construct", "--test_fraction", "0.34", "--seed", "5"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.load(open(tmp_path / "o" / "stats.json"))["split"] == "construct"
    bad = subprocess.run([sys.executable, "-m", "helpers.data.prepare_data", "--input_dir", str(tmp_path / "nope"),
                          "--output_dir", str(tmp_path / "o2")], capture_output=True, text=True)
    assert bad.returncode != 0 and "misconception_mapping.csv: file does not exist" in bad.stderr


# --------------------------------------------------------------- strict CSV: no row lost silently (issue 27, item 4)
def _train_text(lines):
    return ("\n".join([",".join(HEADER)] + lines) + "\n").encode()


_GOOD = "{q},100,c,7,s,A,text,a,b,c,d,,{q}.0,,"


def test_bad_short_row_is_an_error_not_dropped(tmp_path):
    lines = [_GOOD.format(q=q) for q in range(6)]
    lines[2] = "2,100,c,7,s,A,text,a,b"                      # 9 cells: was read with None and kept/dropped
    _expect_error(tmp_path, train_bytes=_train_text(lines), match=r"train.csv, line 4: 9 cells for 15 columns")


def test_bad_unterminated_quote_is_an_error(tmp_path):
    lines = [_GOOD.format(q=q) for q in range(6)]
    lines[1] = '1,100,c,7,s,A,"text,a,b,c,d,,1.0,,'          # the quote swallows the rest of the file
    _expect_error(tmp_path, train_bytes=_train_text(lines),
                  match=r"train.csv, line 3: 7 cells for 15 columns \(an unterminated quote")


def test_bad_duplicate_header_column(tmp_path):
    header = HEADER + ["QuestionText"]
    raw = (",".join(header) + "\n" + "".join(_GOOD.format(q=q) + ",dup\n" for q in range(6))).encode()
    _expect_error(tmp_path, train_bytes=raw, match=r"train.csv, line 1, field 'QuestionText': duplicate column")


def test_bad_huge_cell_is_one_input_error(tmp_path):
    lines = [_GOOD.format(q=q) for q in range(6)]
    lines[3] = lines[3].replace("text", '"' + "x" * 200_000 + '"')
    _expect_error(tmp_path, train_bytes=_train_text(lines),
                  match=r"train.csv, line 5: not a valid CSV record \(field larger than field limit")


def test_blank_lines_between_rows_are_not_rows(tmp_path):
    lines = [_GOOD.format(q=q) for q in range(6)]
    lines.insert(3, "")
    p = tmp_path / "train.csv"
    p.write_bytes(_train_text(lines))
    assert [q["QuestionId"] for q in load_questions(p)] == [str(q) for q in range(6)]


def test_interrupted_re_prepare_does_not_look_complete(tmp_path, monkeypatch):
    """Issue 27, item 2: a kill while re-preparing with a new seed left new train + old test + old
    stats.json (the completeness marker): a train/test leak that looked like a finished folder."""
    import helpers.data.prepare_data as prep
    inp, out = tiny_input(tmp_path / "in"), tmp_path / "out"
    prepare_data(PrepareArgs(input_dir=str(inp), output_dir=str(out), seed=1))
    assert (out / "stats.json").exists()
    real = prep.write_jsonl

    def killed(path, rows):
        if str(path).endswith("test_queries.jsonl"):
            raise KeyboardInterrupt("killed")
        return real(path, rows)
    monkeypatch.setattr(prep, "write_jsonl", killed)
    with pytest.raises(KeyboardInterrupt):
        prepare_data(PrepareArgs(input_dir=str(inp), output_dir=str(out), seed=2))
    assert not (out / "stats.json").exists(), "an incomplete folder must not carry the completeness marker"
    monkeypatch.setattr(prep, "write_jsonl", real)
    prepare_data(PrepareArgs(input_dir=str(inp), output_dir=str(out), seed=2))
    prepare_data(PrepareArgs(input_dir=str(inp), output_dir=str(tmp_path / "ref"), seed=2))
    for f in OUTPUT_FILES:
        assert (out / f).read_bytes() == (tmp_path / "ref" / f).read_bytes(), f
