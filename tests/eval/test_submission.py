import json

import pytest

from helpers.data.eedi import load_questions
from helpers.common.io_utils import InputError
from helpers.eval.submission import (expected_row_ids, format_submission, sample_row_ids, validate_submission,
                                write_submission)

IDS = [str(i) for i in range(30)]


def _rank(shift):
    return IDS[shift:] + IDS[:shift]


def test_format_and_validate_roundtrip(tmp_path):
    out = tmp_path / "sub.csv"
    text = write_submission(out, ["1_B", "1_C"], [_rank(0), _rank(3)], corpus_ids=IDS)
    assert out.read_text() == text
    lines = text.splitlines()
    assert lines[0] == "QuestionId_Answer,MisconceptionId"
    assert lines[1] == "1_B," + " ".join(IDS[:25])
    assert lines[2].split(",")[1].split(" ")[:2] == ["3", "4"]
    assert len(lines) == 3


@pytest.mark.parametrize("text,msg", [
    ("QuestionId,MisconceptionId\n1_B," + " ".join(IDS[:25]) + "\n", "header"),
    ("QuestionId_Answer,MisconceptionId\n1_B," + " ".join(IDS[:24]) + "\n", "24 ids"),
    ("QuestionId_Answer,MisconceptionId\n1_B," + " ".join(IDS[:24] + ["0"]) + "\n", "more than once"),
    ("QuestionId_Answer,MisconceptionId\n1_B," + " ".join(IDS[:24] + ["1.0"]) + "\n", "not a plain"),
    ("QuestionId_Answer,MisconceptionId\n1_B," + " ".join(IDS[:24] + ["99"]) + "\n", "not in the misconception"),
    ("QuestionId_Answer,MisconceptionId\n1_B," + "  ".join(IDS[:25]) + "\n", "single spaces"),
    ("QuestionId_Answer,MisconceptionId\n1_B," + " ".join(IDS[:25]) + "\n1_B," + " ".join(IDS[:25]) + "\n",
     "duplicate row"),
    ("QuestionId_Answer,MisconceptionId\n1_C," + " ".join(IDS[:25]) + "\n", "row set differs"),
])
def test_validate_rejects(text, msg):
    with pytest.raises(InputError, match=msg):
        validate_submission(text, expected_rows=["1_B"], corpus_ids=set(IDS))


def test_bad_input_writes_nothing(tmp_path):
    out = tmp_path / "sub.csv"
    with pytest.raises(ValueError, match="only 10 ids"):
        write_submission(out, ["1_B"], [IDS[:10]])
    with pytest.raises(InputError, match="more than once"):
        write_submission(out, ["1_B"], [["0"] * 25])
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="1 row ids for 2"):
        format_submission(["1_B"], [IDS, IDS])


def test_row_set_matches_real_sample_submission(shared_dir):
    d = shared_dir / "eedi_sample"
    questions = load_questions(d / "test.csv", labelled=False)
    rows = expected_row_ids(questions)
    assert set(rows) == set(sample_row_ids(d / "sample_submission.csv"))
    assert len(rows) == 3 * len(questions)        # every wrong answer, the correct one left out
    # the real sample file passes our own validator (25 integer ids, the right header)
    validate_submission((d / "sample_submission.csv").read_text(), expected_rows=rows)


# ---------- the stage, with the real Eedi sample files and a small model ----------

def _small_mapping(shared_dir, tmp_path, n=40):
    """The first ``n`` real misconceptions (the test builds its own small corpus)."""
    import csv
    from helpers.data.eedi import load_misconceptions
    m = load_misconceptions(shared_dir / "eedi_sample" / "misconception_mapping.csv")
    path = tmp_path / "mapping.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["MisconceptionId", "MisconceptionName"])
        for i, (k, v) in enumerate(m.items()):
            if i < n:
                w.writerow([k, v])
    return path


def _argv(shared_dir, mapping, out, model="demo:all-minilm-l6-v2"):
    d = shared_dir / "eedi_sample"
    return ["--model_name_or_path", model, "--embedder_model_class", "encoder-only-base",
            "--test_csv", str(d / "test.csv"), "--misconception_csv", str(mapping),
            "--sample_submission", str(d / "sample_submission.csv"), "--output_file", str(out),
            "--embedder_query_max_length", "128", "--embedder_passage_max_length", "32", "--devices", "cpu"]


def test_missing_model_folder_writes_nothing(shared_dir, tmp_path):
    from helpers.eval.submission import main
    out = tmp_path / "sub" / "submission.csv"
    with pytest.raises(FileNotFoundError, match="no such folder"):
        main(_argv(shared_dir, _small_mapping(shared_dir, tmp_path), out, model=str(tmp_path / "missing")))
    assert not out.parent.exists()


def test_too_small_corpus_is_refused(shared_dir, tmp_path):
    from helpers.eval.submission import main
    out = tmp_path / "submission.csv"
    with pytest.raises(InputError, match="10 misconceptions, fewer than the 25"):
        main(_argv(shared_dir, _small_mapping(shared_dir, tmp_path, n=10), out))
    assert not out.exists()


@pytest.mark.integration
def test_submission_stage_real_files(shared_dir, tmp_path, capsys):
    from helpers.eval.submission import main
    mapping = _small_mapping(shared_dir, tmp_path)
    out = tmp_path / "submission.csv"
    main(_argv(shared_dir, mapping, out))
    d = shared_dir / "eedi_sample"
    text = out.read_text()
    lines = text.splitlines()
    assert lines[0] == (d / "sample_submission.csv").read_text().splitlines()[0]
    rows = dict(line.split(",") for line in lines[1:])
    assert set(rows) == set(sample_row_ids(d / "sample_submission.csv"))
    from helpers.data.eedi import load_misconceptions
    allowed = set(load_misconceptions(mapping))
    for ids in rows.values():
        ids = ids.split(" ")
        assert len(ids) == 25 and len(set(ids)) == 25 and all(i.isdigit() and i in allowed for i in ids)
    assert "9 rows" in capsys.readouterr().out


class _FakeEmbedder:
    """Fixed random embeddings: the stage without a model."""
    def encode_queries(self, rows):
        import numpy as np
        return np.random.default_rng(0).normal(size=(len(rows), 8)).astype("float32")

    def encode_corpus(self, texts):
        import numpy as np
        return np.random.default_rng(1).normal(size=(len(texts), 8)).astype("float32")


def test_a_sample_that_differs_from_the_hidden_test_csv_is_a_warning(repo_root, tmp_path, caplog):
    """Kaggle's rerun swaps in the hidden test.csv; its sample_submission.csv may not follow it:
    the output is checked against test.csv (every QuestionId x wrong answer), the sample only warns."""
    import logging
    from helpers.eval.submission import SubmissionArgs, make_submission
    d = repo_root / "data" / "demo"
    sample = (d / "sample_submission.csv").read_text().splitlines()
    (tmp_path / "sample.csv").write_text("\n".join(sample[:-2] + ["999_A," + sample[1].split(",")[1]]) + "\n")
    out = tmp_path / "submission.csv"
    args = SubmissionArgs(model_name_or_path="unused", embedder_model_class="encoder-only-base",
                          test_csv=str(d / "test.csv"), misconception_csv=str(d / "misconception_mapping.csv"),
                          sample_submission=str(tmp_path / "sample.csv"), output_file=str(out), devices="cpu")
    with caplog.at_level(logging.WARNING, logger="helpers.eval.submission"):
        res = make_submission(args, embedder=_FakeEmbedder())
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "2 only in test.csv" in warned[0] and "1 only in the sample (999_A)" in warned[0]
    want = expected_row_ids(load_questions(d / "test.csv", labelled=False))
    rows = [ln.split(",")[0] for ln in out.read_text().splitlines()[1:]]
    assert res["rows"] == len(want) == len(rows) and set(rows) == set(want)


def test_submission_model_best_is_the_highest_map_and_needs_the_metrics():
    from helpers.eval.submission import submission_spec
    specs = [{"label": "epoch 1"}, {"label": "epoch 2"}, {"label": "epoch 3"}]
    results = {"epoch 1": {"MAP@25": 0.30}, "epoch 2": {"MAP@25": 0.41}, "epoch 3": {"MAP@25": 0.41}}
    assert submission_spec(specs, "best", results)["label"] == "epoch 2"          # ties: the earlier
    assert submission_spec(specs, None, results)["label"] == "epoch 3"
    with pytest.raises(ValueError, match="needs the evaluated models' metrics"):
        submission_spec(specs, "best")


class _LongestFirst:
    """A reranker that prefers longer misconception names: a visible, known re-ordering."""
    def score_groups(self, queries, passages):
        return [[float(len(p)) for p in g] for g in passages]


@pytest.mark.parametrize("top_k", [5, 40])
def test_a_reranker_block_reorders_each_rows_top_k(repo_root, tmp_path, top_k, capsys):
    """The written 25: the reranker's order of the embedder's top k, then the embedder's ranks k+1..25
    (k < 25); the first 25 of the re-ordered top k (k >= 25)."""
    import csv
    from helpers.eval.submission import SubmissionArgs, make_submission
    d = repo_root / "data" / "demo"
    names = {r["MisconceptionId"]: r["MisconceptionName"] for r in csv.DictReader(open(d / "misconception_mapping.csv"))}
    common = dict(model_name_or_path="unused", embedder_model_class="encoder-only-base", test_csv=str(d / "test.csv"),
                  misconception_csv=str(d / "misconception_mapping.csv"), devices="cpu")
    plain = make_submission(SubmissionArgs(**common, output_file=str(tmp_path / "plain.csv")), embedder=_FakeEmbedder())
    assert plain["written_by"] == "embedder unused"
    (tmp_path / "rr").mkdir()
    (tmp_path / "rr" / "config.json").write_text("{}")
    block = json.dumps({"reranker_name_or_path": str(tmp_path / "rr"), "reranker_model_class": "encoder-only-base",
                        "top_k": top_k})
    args = SubmissionArgs(**common, output_file=str(tmp_path / "casc.csv"), reranker=block)     # JSON, as on a command line
    assert args.rerank_stage().top_k == top_k and args.rerank_stage().devices == "cpu"
    res = make_submission(args, embedder=_FakeEmbedder(), reranker=_LongestFirst())
    assert res["written_by"].endswith(f"on its top {top_k}")
    assert "rerank time: " in capsys.readouterr().out                # the estimate line (CPU: the pair count)
    emb = {r[0]: r[1].split() for r in list(csv.reader(open(tmp_path / "plain.csv")))[1:]}
    got = {r[0]: r[1].split() for r in list(csv.reader(open(tmp_path / "casc.csv")))[1:]}
    assert emb.keys() == got.keys()
    for row, ids in got.items():
        if top_k < 25:
            assert ids[top_k:] == emb[row][top_k:]                   # ranks k+1..25 keep the embedder's order
            assert sorted(ids[:top_k]) == sorted(emb[row][:top_k])
        assert [len(names[i]) for i in ids[:min(top_k, 25)]] == sorted((len(names[i]) for i in ids[:min(top_k, 25)]),
                                                                       reverse=True)
    with pytest.raises(FileNotFoundError):                           # a missing reranker fails before any work
        make_submission(SubmissionArgs(**common, output_file=str(tmp_path / "x.csv"),
                                       reranker={"reranker_name_or_path": str(tmp_path / "nope")}),
                        embedder=_FakeEmbedder())
    assert not (tmp_path / "x.csv").exists()
