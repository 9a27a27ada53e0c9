"""Bad input across the stages, table-driven: one clear error naming the file, line and field
(or the argument), raised before any model is loaded, and no file written or changed.

Each case builds real files in tmp_path and returns a call of the stage function (in process,
fast). The model loaders are replaced by ones that fail the test: every check has to come first.
A few cases run the command line too: one ``error:`` line, exit code 2, no traceback.
Cases that the per-stage tests already prove are not repeated (see docs/reliability.md).
"""
import contextlib
import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers.common.io_utils import InputError
from tests.fixtures.sandbox import REPO
from tests.factories import HEADER, tiny_input, write_csv, write_inputs

ERRORS = (InputError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError)
CASES = []


def case(name, match):
    """Register ``build(tmp_path) -> call`` with the regex its one error must match."""
    def deco(build):
        CASES.append(pytest.param(build, match, id=name))
        return build
    return deco


def jsonl(path, rows, raw_tail=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows) + raw_tail)
    return path


def read_rows(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


@pytest.fixture(autouse=True)
def no_model_loading(monkeypatch):
    def refuse(*a, **kw):
        raise AssertionError("a model was loaded before the input was checked")
    import helpers.rerank.add_reranker_score as ars
    import helpers.embed.embedder as emb
    import helpers.train.kd_finetune as kd
    monkeypatch.setattr(emb, "load_embedding_model", refuse)
    monkeypatch.setattr(kd, "load_embedding_model", refuse)
    monkeypatch.setattr(ars, "build_reranker", refuse)


# ----------------------------------------------------------------------------- 00 prepare
def prep(tmp, **kw):
    from helpers.data.prepare_data import PrepareArgs, prepare_data
    a = dict(input_dir=str(tmp / "in"), output_dir=str(tmp / "out"))
    a.update(kw)
    return lambda: prepare_data(PrepareArgs(**a))


@case("prepare-csv-missing-column", r"train\.csv, line 1, field 'CorrectAnswer': missing column")
def _(tmp):
    tiny_input(tmp / "in")
    rows = list(csv.reader(open(tmp / "in" / "train.csv", newline="")))
    i = rows[0].index("CorrectAnswer")
    write_csv(tmp / "in" / "train.csv", rows[0][:i] + rows[0][i + 1:], [r[:i] + r[i + 1:] for r in rows[1:]])
    return prep(tmp)


@case("prepare-id-wrong-type", r"train\.csv, line 8, field 'MisconceptionBId': 'two' is not an integer id")
def _(tmp):
    def m(rows):
        rows[3][12] = "two"
    tiny_input(tmp / "in", mutate=m)
    return prep(tmp)


@case("prepare-duplicate-misconception-id", r"misconception_mapping\.csv, line 4, field 'MisconceptionId': duplicate id 1")
def _(tmp):
    tiny_input(tmp / "in")
    (tmp / "in" / "misconception_mapping.csv").write_text("MisconceptionId,MisconceptionName\n0,a\n1,b\n1,c\n")
    return prep(tmp)


@case("prepare-row-with-extra-cells", r"train\.csv, line 4: 16 cells for 15 columns")
def _(tmp):
    def m(rows):
        rows[1].append("stray")
    tiny_input(tmp / "in", mutate=m)
    return prep(tmp)


@case("prepare-output-under-a-file", r"out/sub/stats\.json: output path is not writable \(Not a directory\)")
def _(tmp):
    tiny_input(tmp / "in")
    (tmp / "out").write_text("a regular file where a folder is expected\n")
    return prep(tmp, output_dir=str(tmp / "out" / "sub"))


@case("prepare-test-fraction-argument", r"test_fraction must be between 0 and 1 \(exclusive\), got 1\.5")
def _(tmp):
    tiny_input(tmp / "in")
    return prep(tmp, test_fraction=1.5)


# ----------------------------------------------------------------------------- 01 mine
def mine(tmp, **kw):
    from helpers.mine.hn_mine import HnMineArgs, hn_mine
    d = tmp / "d"
    a = dict(model_name_or_path="demo:all-minilm-l6-v2", embedder_model_class="encoder-only-base",
             input_file=str(d / "queries.jsonl"), output_file=str(tmp / "out" / "mined.jsonl"),
             candidate_pool=str(d / "corpus.jsonl"), range_for_sampling="2-20", negative_number=5, devices=["cpu"])
    a.update(kw)
    return lambda: hn_mine(HnMineArgs(**a))


def mined_inputs(tmp, edit=None, n_queries=8):
    d = write_inputs(tmp / "d", n_corpus=40, n_queries=n_queries)
    if edit:
        rows = read_rows(d / "queries.jsonl")
        edit(rows)
        jsonl(d / "queries.jsonl", rows)
    return d


@case("mine-truncated-last-line", r"queries\.jsonl, line 8: not valid JSON \(Expecting .* at column \d+\)")
def _(tmp):
    d = mined_inputs(tmp)
    text = (d / "queries.jsonl").read_text()
    (d / "queries.jsonl").write_text(text[:-40])          # a copy cut short mid-line
    return mine(tmp)


@case("mine-query-id-wrong-type", r"queries\.jsonl, line 2, field 'query_id': expected a string, got int")
def _(tmp):
    mined_inputs(tmp, lambda rows: rows[1].update(query_id=7))
    return mine(tmp)


@case("mine-empty-pos", r"queries\.jsonl, line 3, field 'pos': empty: every query needs at least one positive")
def _(tmp):
    mined_inputs(tmp, lambda rows: rows[2].update(pos=[], pos_ids=[]))
    return mine(tmp)


@case("mine-duplicate-query-id", r"queries\.jsonl, line 4, field 'query_id': duplicate query id '0_A'")
def _(tmp):
    mined_inputs(tmp, lambda rows: rows[3].update(query_id="0_A"))
    return mine(tmp)


@case("mine-pos-ids-not-aligned", r"queries\.jsonl, line 5, field 'pos_ids': 2 ids for 1 positives")
def _(tmp):
    mined_inputs(tmp, lambda rows: rows[4].update(pos_ids=["104", "105"]))
    return mine(tmp)


@case("mine-duplicate-corpus-id", r"corpus\.jsonl, line 6, field 'id': duplicate corpus id '101'")
def _(tmp):
    d = mined_inputs(tmp)
    rows = read_rows(d / "corpus.jsonl")
    rows[5]["id"] = "101"
    jsonl(d / "corpus.jsonl", rows)
    return mine(tmp)


@case("mine-range-reversed", r"range_for_sampling '100-2': need 0 <= a < b")
def _(tmp):
    mined_inputs(tmp)
    return mine(tmp, range_for_sampling="100-2")


@case("mine-range-not-numbers", r"range_for_sampling 'a-b': a and b must be whole numbers")
def _(tmp):
    mined_inputs(tmp)
    return mine(tmp, range_for_sampling="a-b")


@case("mine-negative-number-above-corpus",
      r"negative_number 50 is larger than the corpus allows: .*corpus\.jsonl has 40 passages, so at most 39")
def _(tmp):
    mined_inputs(tmp)
    return mine(tmp, negative_number=50)


@case("mine-model-path-missing", r"model '/nonexistent/embedder': no such folder")
def _(tmp):
    mined_inputs(tmp)
    return mine(tmp, model_name_or_path="/nonexistent/embedder")


@case("mine-unknown-model-class", r"embedder_model_class 'decoder-only' unknown; choose one of")
def _(tmp):
    mined_inputs(tmp)
    return mine(tmp, embedder_model_class="decoder-only")


@case("mine-output-exists-no-overwrite", r"out/mined\.jsonl exists and overwrite is False")
def _(tmp):
    mined_inputs(tmp)
    jsonl(tmp / "out" / "mined.jsonl", [{"kept": "an earlier run's output"}])
    return mine(tmp, overwrite=False)


# ----------------------------------------------------------------------------- 02 score
def score(tmp, **kw):
    from helpers.rerank.add_reranker_score import ScoreArgs, add_reranker_score
    a = dict(input_file=str(tmp / "mined.jsonl"), output_file=str(tmp / "out" / "scored.jsonl"),
             reranker_name_or_path="demo:gemma-3-270m")
    a.update(kw)
    return lambda: add_reranker_score(ScoreArgs(**a))


def mined_file(tmp, edit=None):
    rows = [{"query_id": f"q{i}", "query": f"question {i}", "pos": [f"p{i}"], "pos_ids": [str(i)],
             "neg": [f"n{i}{j}" for j in range(3)], "neg_ids": [f"{i}{j}" for j in range(3)]} for i in range(4)]
    if edit:
        edit(rows)
    return jsonl(tmp / "mined.jsonl", rows)


@case("score-query-wrong-type", r"mined\.jsonl, line 2, field 'query': missing or not a string")
def _(tmp):
    mined_file(tmp, lambda rows: rows[1].update(query=["not", "a", "string"]))
    return score(tmp)


@case("score-model-path-missing", r"model '/nonexistent/reranker': no such folder")
def _(tmp):
    mined_file(tmp)
    return score(tmp, reranker_name_or_path="/nonexistent/reranker")


@case("score-unknown-model-class", r"--reranker_model_class 'cross-encoder' is not supported; choose one of")
def _(tmp):
    mined_file(tmp)
    return score(tmp, reranker_model_class="cross-encoder")


@case("score-peft-adapter-missing", r"--peft_adapter '.*lora': no adapter_config\.json there")
def _(tmp):
    mined_file(tmp)
    return score(tmp, peft_adapter=str(tmp / "lora"))


@case("score-output-is-input", r"--output_file must differ from --input_file")
def _(tmp):
    mined_file(tmp)
    return score(tmp, output_file=str(tmp / "mined.jsonl"))


@case("score-batch-size-argument", r"--reranker_batch_size must be at least 1, got 0")
def _(tmp):
    mined_file(tmp)
    return score(tmp, reranker_batch_size=0)


# ----------------------------------------------------------------------------- 03 train
def train(tmp, **kw):
    from helpers.train.kd_finetune import KDArgs, kd_finetune
    a = dict(model_name_or_path="demo:smollm2-135m-instruct", train_data=str(tmp / "train.jsonl"),
             eval_data=str(tmp / "test.jsonl"), corpus_file=str(tmp / "corpus.jsonl"),
             output_dir=str(tmp / "out"), devices="cpu", train_group_size=3, per_device_train_batch_size=2)
    a.update(kw)
    return lambda: kd_finetune(KDArgs(**a))


def scored_files(tmp, edit=None, edit_test=None):
    corpus = [{"id": str(i), "text": f"misconception {i}"} for i in range(10)]
    jsonl(tmp / "corpus.jsonl", corpus)

    def rows(off):
        return [{"query_id": f"q{off + i}", "query": f"question {i}", "pos": [corpus[i]["text"]], "pos_ids": [str(i)],
                 "neg": [corpus[j]["text"] for j in (7, 8, 9)], "neg_ids": ["7", "8", "9"],
                 "pos_scores": [3.0], "neg_scores": [1.0, 0.5, -1.0]} for i in range(4)]
    train_rows, test_rows = rows(0), rows(100)
    if edit:
        edit(train_rows)
    if edit_test:
        edit_test(test_rows)
    jsonl(tmp / "train.jsonl", train_rows)
    jsonl(tmp / "test.jsonl", test_rows)


def drop_scores(rows):
    for r in rows:
        del r["pos_scores"], r["neg_scores"]


@case("train-kd-on-file-without-scores",
      r"train\.jsonl, line 1, field 'pos_scores': missing\. knowledge_distillation needs a scored file")
def _(tmp):
    scored_files(tmp, drop_scores)
    return train(tmp)


@case("train-nan-teacher-score", r"train\.jsonl, line 3, field 'neg_scores': contains NaN or infinity$")
def _(tmp):
    scored_files(tmp, lambda rows: rows[2].update(neg_scores=[1.0, float("nan"), 0.0]))
    return train(tmp)


@case("train-infinite-teacher-score", r"test\.jsonl, line 2, field 'pos_scores': contains NaN or infinity")
def _(tmp):
    scored_files(tmp, edit_test=lambda rows: rows[1].update(pos_scores=[float("inf")]))
    return train(tmp)


@case("train-scores-not-aligned", r"train\.jsonl, line 4, field 'neg_scores': 2 scores for 3 neg texts")
def _(tmp):
    scored_files(tmp, lambda rows: rows[3].update(neg_scores=[1.0, 2.0]))
    return train(tmp)


@case("train-eval-gold-not-in-corpus", r"test\.jsonl, line 1, field 'pos_ids': id '999' is not in the corpus")
def _(tmp):
    scored_files(tmp, edit_test=lambda rows: rows[0].update(pos_ids=["999"]))
    return train(tmp)


@case("train-model-path-missing", r"model '/nonexistent/student': no such folder")
def _(tmp):
    scored_files(tmp)
    return train(tmp, model_name_or_path="/nonexistent/student")


@case("train-unknown-model-class", r"embedder_model_class 'llm' unknown; choose one of")
def _(tmp):
    scored_files(tmp)
    return train(tmp, embedder_model_class="llm")


@case("train-output-under-a-file", r"out/run/metrics\.jsonl: output path is not writable \(Not a directory\)")
def _(tmp):
    scored_files(tmp)
    (tmp / "out").write_text("a file\n")
    return train(tmp, output_dir=str(tmp / "out" / "run"))


@case("train-group-size-argument", r"train_group_size must be at least 1, got 0")
def _(tmp):
    scored_files(tmp)
    return train(tmp, train_group_size=0)


# ----------------------------------------------------------------------------- 04 eval / submission
def evaluate(tmp, **kw):
    from helpers.eval.evaluate import EvalArgs, run_evaluation
    d = tmp / "d"
    a = dict(model_name_or_path="demo:all-minilm-l6-v2", embedder_model_class="encoder-only-base",
             queries_file=str(d / "queries.jsonl"), corpus_file=str(d / "corpus.jsonl"),
             output_dir=str(tmp / "out"), devices="cpu")
    a.update(kw)
    return lambda: run_evaluation(EvalArgs(**a))


@case("eval-corpus-text-wrong-type", r"corpus\.jsonl, line 2, field 'text': expected a string, got list")
def _(tmp):
    d = mined_inputs(tmp)
    rows = read_rows(d / "corpus.jsonl")
    rows[1]["text"] = ["a", "list"]
    jsonl(d / "corpus.jsonl", rows)
    return evaluate(tmp)


@case("eval-queries-not-utf8", r"queries\.jsonl, line 4: not UTF-8 \(byte 0xe9 at column \d+\)")
def _(tmp):
    d = mined_inputs(tmp)
    (d / "queries.jsonl").write_bytes((d / "queries.jsonl").read_bytes().replace(b"question 3", b"question \xe9"))
    return evaluate(tmp)


@case("eval-train-file-missing", r"d/train_queries\.jsonl: file does not exist")
def _(tmp):
    mined_inputs(tmp)
    return evaluate(tmp, train_queries_file=str(tmp / "d" / "train_queries.jsonl"))


@case("eval-topk-argument", r"topk \(0\) and map_k \(25\) must be at least 1")
def _(tmp):
    mined_inputs(tmp)
    return evaluate(tmp, topk=0)


def submission(tmp, **kw):
    from helpers.eval.submission import SubmissionArgs, make_submission
    a = dict(model_name_or_path="demo:all-minilm-l6-v2", embedder_model_class="encoder-only-base",
             test_csv=str(tmp / "in" / "test.csv"), misconception_csv=str(tmp / "in" / "misconception_mapping.csv"),
             output_file=str(tmp / "out" / "submission.csv"), k=5, devices="cpu")
    a.update(kw)
    return lambda: make_submission(SubmissionArgs(**a))


@case("submission-test-csv-missing-column", r"test\.csv, line 1, field 'QuestionText': missing column")
def _(tmp):
    tiny_input(tmp / "in")
    rows = list(csv.reader(open(tmp / "in" / "train.csv", newline="")))
    i = HEADER.index("QuestionText")
    write_csv(tmp / "in" / "test.csv", rows[0][:i] + rows[0][i + 1:], [r[:i] + r[i + 1:] for r in rows[1:]])
    return submission(tmp)


@case("submission-sample-wrong-header", r"sample_submission\.csv, line 1: header 'id,MisconceptionId'")
def _(tmp):
    tiny_input(tmp / "in")
    (tmp / "in" / "test.csv").write_bytes((tmp / "in" / "train.csv").read_bytes())
    (tmp / "in" / "sample_submission.csv").write_text("id,MisconceptionId\n0_B,1 2 3\n")
    return submission(tmp, sample_submission=str(tmp / "in" / "sample_submission.csv"))


# ----------------------------------------------------------------------------- run_all
def chain(tmp, *argv, profile=None):
    import run_all
    prof = profile or {"run_name": "r", "output_root": str(tmp / "out"), "vars": {"seed": 1},
                       "steps": [{"name": "prepare", "notebook": "00_prepare_data",
                                  "parameters": {"output_dir": "{run_dir}/data"}}]}
    (tmp / "p.yaml").write_text(yaml.safe_dump(prof))

    def call():
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = run_all.main(["--profile", str(tmp / "p.yaml"), *argv])
        if rc != 0:
            raise ValueError(err.getvalue().strip())
    return call


@case("run_all-unknown-step-parameter", r"--set 'prepare\.seedd=3': notebook 00_prepare_data has no parameter 'seedd'")
def _(tmp):
    return chain(tmp, "--set", "prepare.seedd=3")


@case("run_all-unknown-var", r"--var 'embedder=x': expected KEY=VALUE with KEY one of the profile's vars: seed")
def _(tmp):
    return chain(tmp, "--var", "embedder=x")


@case("run_all-profile-missing-steps", r"p\.yaml: missing key 'steps'")
def _(tmp):
    return chain(tmp, profile={"run_name": "r", "output_root": str(tmp / "out")})


# ----------------------------------------------------------------------------- the table
def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("build, match", CASES)
def test_bad_input_one_clear_error_and_nothing_written(tmp_path, build, match):
    run = build(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(ERRORS) as err:
        run()
    msg = str(err.value)
    assert re.search(match, msg), f"error {msg!r} does not match {match!r}"
    assert "\n" not in msg.strip(), f"more than one line: {msg!r}"
    assert snapshot(tmp_path) == before, "a file was written, removed or changed"


def test_the_table_has_enough_cases():
    assert len(CASES) >= 25
    stages = {c.id.split("-")[0] for c in CASES}
    assert stages >= {"prepare", "mine", "score", "train", "eval", "submission", "run_all"}


# ----------------------------------------------------------------------------- the commands
def command(tmp_path, module, *args):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("EEDI_TRACEBACK", None)
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_one_error_line(r, pattern):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"error: .*" + pattern + r".*", last), last
    return last


@pytest.mark.integration
def test_commands_print_one_error_line_and_exit_2(tmp_path):
    tiny_input(tmp_path / "in")
    (tmp_path / "in" / "misconception_mapping.csv").write_text("MisconceptionId,Name\n1,x\n")
    r = command(tmp_path, "helpers.data.prepare_data", "--input_dir", tmp_path / "in", "--output_dir", tmp_path / "o1")
    assert_one_error_line(r, r"misconception_mapping\.csv, line 1, field 'MisconceptionName': missing column")

    d = write_inputs(tmp_path / "d", n_corpus=10, n_queries=3)
    r = command(tmp_path, "helpers.mine.hn_mine", "--embedder_name_or_path", "demo:all-minilm-l6-v2",
                "--embedder_model_class", "encoder-only-base", "--input_file", d / "queries.jsonl",
                "--candidate_pool", d / "corpus.jsonl", "--output_file", tmp_path / "o2" / "m.jsonl",
                "--range_for_sampling", "a-b")
    assert_one_error_line(r, r"range_for_sampling 'a-b'")

    mined_file(tmp_path, lambda rows: rows[2].update(neg_scores=[0.0, 0.0, 0.0]))
    r = command(tmp_path, "helpers.rerank.add_reranker_score", "--input_file", tmp_path / "mined.jsonl",
                "--output_file", tmp_path / "o3" / "s.jsonl", "--reranker_name_or_path", "demo:gemma-3-270m")
    assert_one_error_line(r, r"mined\.jsonl, line 3, field 'neg_scores': scores already present; pass --overwrite True")

    scored_files(tmp_path / "t", lambda rows: rows[1].update(pos_scores=[float("nan")]))
    t = tmp_path / "t"
    r = command(tmp_path, "helpers.train.kd_finetune", "--model_name_or_path", "demo:smollm2-135m-instruct",
                "--train_data", t / "train.jsonl", "--eval_data", t / "test.jsonl", "--corpus_file",
                t / "corpus.jsonl", "--output_dir", tmp_path / "o4", "--devices", "cpu")
    assert_one_error_line(r, r"train\.jsonl, line 2, field 'pos_scores': contains NaN or infinity")

    r = command(tmp_path, "helpers.eval.evaluate", "--model_name_or_path", tmp_path / "no_model",
                "--queries_file", d / "queries.jsonl", "--corpus_file", d / "corpus.jsonl",
                "--output_dir", tmp_path / "o5")
    assert_one_error_line(r, r"no_model': no such folder")
    for o in ("o1", "o2", "o3", "o4", "o5"):
        assert not (tmp_path / o).exists() or not any(p.is_file() for p in (tmp_path / o).rglob("*")), o
