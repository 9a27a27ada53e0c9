"""The add_reranker_score command: flags, bad input, resume after an interruption, atomic output."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers.rerank.add_reranker_score import ScoreArgs, add_reranker_score, parse_args
from helpers.common.io_utils import InputError
from helpers.rerank.progress import progress_path


class FakeReranker:
    """Deterministic scores from the texts; optionally dies after ``fail_after`` calls."""

    def __init__(self, fail_after=None):
        self.calls, self.fail_after = 0, fail_after

    def score_groups(self, queries, passages):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        h = lambda q, p: int(hashlib.md5(f"{q}|{p}".encode()).hexdigest()[:8], 16) / 2**32 * 10 - 5
        return [[h(q, p) for p in ps] for q, ps in zip(queries, passages)]


def rows(n=7):
    return [{"query_id": f"q{i}", "query": f"question {i} " * (i + 1), "pos": [f"gold {i}"],
             "pos_ids": [str(i)], "neg": [f"neg {i}.{j}" for j in range(3)],
             "neg_ids": [f"{i}{j}" for j in range(3)], "extra": {"kept": i}} for i in range(n)]


def write(path, rs):
    path.write_text("".join(json.dumps(r) + "\n" for r in rs))
    return str(path)


def args(tmp_path, **kw):
    base = dict(input_file=str(tmp_path / "mined.jsonl"), output_file=str(tmp_path / "out" / "scored.jsonl"),
                reranker_name_or_path="unused-by-fake", chunk_size=2)
    return ScoreArgs(**{**base, **kw})


def test_scores_aligned_and_fields_kept(tmp_path):
    write(tmp_path / "mined.jsonl", rows())
    a = args(tmp_path)
    summary = add_reranker_score(a, reranker=FakeReranker())
    out = [json.loads(line) for line in open(a.output_file)]
    fake = FakeReranker()
    for r, o in zip(rows(), out):
        assert o["extra"] == r["extra"] and o["neg_ids"] == r["neg_ids"] and "__line__" not in o
        assert o["pos_scores"] == fake.score_groups([r["query"]], [r["pos"]])[0]
        assert o["neg_scores"] == fake.score_groups([r["query"]], [r["neg"]])[0]
    assert summary["pairs"] == 7 * 4 and not progress_path(a.output_file).exists()


@pytest.mark.parametrize("fail_after", [0, 1, 3])
def test_resume_after_interruption_is_byte_identical(tmp_path, fail_after):
    write(tmp_path / "mined.jsonl", rows())
    ref = args(tmp_path, output_file=str(tmp_path / "ref.jsonl"))
    add_reranker_score(ref, reranker=FakeReranker())
    a = args(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        add_reranker_score(a, reranker=FakeReranker(fail_after=fail_after))
    assert not os.path.exists(a.output_file)                  # no half file that looks whole
    with open(progress_path(a.output_file), "a") as f:
        f.write('{"chunk": 3, "pos_sc')                       # a line cut short by the kill
    second = FakeReranker()
    add_reranker_score(a, reranker=second)
    assert second.calls == 4 - fail_after                     # only the chunks not yet done
    assert open(a.output_file, "rb").read() == open(ref.output_file, "rb").read()


def test_changed_input_or_settings_refuse_to_resume(tmp_path):
    write(tmp_path / "mined.jsonl", rows())
    a = args(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        add_reranker_score(a, reranker=FakeReranker(fail_after=1))
    b = args(tmp_path, prompt="another prompt")
    with pytest.raises(ValueError, match="different input or settings.*settings"):
        add_reranker_score(b, reranker=FakeReranker())
    write(tmp_path / "mined.jsonl", rows(6))
    with pytest.raises(ValueError, match="input_sha256"):
        add_reranker_score(a, reranker=FakeReranker())
    fresh = FakeReranker()
    add_reranker_score(args(tmp_path, overwrite=True), reranker=fresh)   # discards stale progress
    assert fresh.calls == 3 and len(open(a.output_file).readlines()) == 6


def test_bad_input(tmp_path):
    def check(rs, match, text=None):
        path = tmp_path / "mined.jsonl"
        path.write_text(text if text is not None else "".join(json.dumps(r) + "\n" for r in rs))
        with pytest.raises(InputError, match=match):
            add_reranker_score(args(tmp_path), reranker=FakeReranker())
        assert not os.path.exists(args(tmp_path).output_file)
        assert not progress_path(args(tmp_path).output_file).exists()
    no_neg = rows(3)
    del no_neg[1]["neg"]
    check(no_neg, r"mined.jsonl, line 2, field 'neg': missing")
    bad = rows(3)
    bad[2]["neg"] = "not a list"
    check(bad, r"line 3, field 'neg': expected a list of strings")
    check([], "file is empty", text="")
    scored = rows(3)
    scored[0]["pos_scores"] = [1.0]
    check(scored, r"line 1, field 'pos_scores': scores already present.*--overwrite")
    unaligned = rows(2)
    unaligned[1]["neg_ids"] = ["1"]
    check(unaligned, r"line 2, field 'neg_ids'")


def test_scores_present_replaced_with_overwrite(tmp_path):
    scored = rows(3)
    for r in scored:
        r["pos_scores"], r["neg_scores"] = [9.0], [9.0] * 3
    write(tmp_path / "mined.jsonl", scored)
    add_reranker_score(args(tmp_path, overwrite=True), reranker=FakeReranker())
    out = [json.loads(line) for line in open(args(tmp_path).output_file)]
    assert all(o["pos_scores"] != [9.0] for o in out)


def test_existing_output_refused_unless_overwrite(tmp_path):
    write(tmp_path / "mined.jsonl", rows(3))
    add_reranker_score(args(tmp_path), reranker=FakeReranker())
    with pytest.raises(ValueError, match="exists.*--overwrite"):
        add_reranker_score(args(tmp_path), reranker=FakeReranker())
    add_reranker_score(args(tmp_path, overwrite=True), reranker=FakeReranker())


def test_seed_flags_parse():
    a = parse_args(["--input_file", "in.jsonl", "--output_file", "out.jsonl",
                    "--reranker_name_or_path", "BAAI/bge-reranker-v2-gemma",
                    "--query_instruction_for_rerank", "A: ", "--query_instruction_format", "{}{}",
                    "--passage_instruction_for_rerank", "B: ", "--passage_instruction_format", "{}{}",
                    "--prompt", "Predict whether ...", "--reranker_max_length", "384",
                    "--use_fp16", "True", "--reranker_batch_size", "16", "--devices", "cuda:0", "cuda:1",
                    "--overwrite", "--use_bf16", "False", "--reranker_peft_path", "lora/"])
    assert a.devices == ["cuda:0", "cuda:1"] and a.use_fp16 is True and a.overwrite is True
    assert a.reranker_max_length == 384 and a.reranker_batch_size == 16 and a.peft_adapter == "lora/"
    assert a.reranker_model_class == "decoder-only-base" and a.normalize is False
    b = parse_args(["--input_file", "i", "--output_file", "o", "--reranker_name_or_path", "m",
                    "--query_instruction_format_for_rerank", "{}\\n{}", "--normalize", "false"])
    assert b.query_instruction_format == "{}\\n{}" and b.normalize is False
    with pytest.raises(SystemExit):
        parse_args(["--use_fp16", "maybe"])


@pytest.mark.integration
def test_sigkill_then_restart_gives_the_same_file(tmp_path):
    """A real SIGKILL of the command mid-run (tiny Gemma, real tokenizer), then a restart."""
    from tests.fixtures.models import save_tiny_gemma_reranker
    model = save_tiny_gemma_reranker(tmp_path / "tiny")
    write(tmp_path / "mined.jsonl", rows(16))
    cmd = [sys.executable, "-m", "helpers.rerank.add_reranker_score", "--input_file", str(tmp_path / "mined.jsonl"),
           "--reranker_name_or_path", model, "--reranker_max_length", "48", "--reranker_batch_size", "4",
           "--chunk_size", "1", "--devices", "cpu"]
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    out, ref = tmp_path / "scored.jsonl", tmp_path / "ref.jsonl"
    proc = subprocess.Popen(cmd + ["--output_file", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    prog = progress_path(out)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if prog.exists() and len(prog.read_text().splitlines()) >= 4:     # header + 3 chunks
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and prog.exists()
    done_before = len(prog.read_text().splitlines()) - 1
    assert 0 < done_before < 16
    subprocess.run(cmd + ["--output_file", str(out)], env=env, check=True, capture_output=True)
    add_reranker_score(parse_args(cmd[3:] + ["--output_file", str(ref)]))   # uninterrupted, in-process
    assert out.read_bytes() == ref.read_bytes() and not prog.exists()


def test_group_rank_stats():
    from helpers.rerank.stats import group_rank_stats, positive_ranks
    assert positive_ranks([2.0], [1.0, 3.0, 2.0]) == [3]                  # a tie counts against
    assert positive_ranks([5.0, 0.0], [1.0]) == [1, 2]
    s = group_rank_stats([{"pos_scores": [3.0], "neg_scores": [1.0, 2.0]},
                          {"pos_scores": [0.0], "neg_scores": [1.0, 2.0, -1.0]},
                          {"pos_scores": [5.0, 0.5], "neg_scores": [1.0]}])
    assert s["queries"] == 3
    assert s["top1"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert s["map"] == pytest.approx((1 + 1 / 3 + (1 + 1 / 2) / 2) / 3)
    assert s["mean_pos"] == pytest.approx((3 + 0 + 5 + 0.5) / 4)
    with pytest.raises(ValueError, match="no pos_scores"):
        group_rank_stats([{"pos": ["x"]}])
    with pytest.raises(ValueError, match="finite"):
        positive_ranks([float("nan")], [1.0])


@pytest.mark.integration
def test_notebook_runs_on_tiny_inputs(tmp_path):
    import papermill as pm
    from tests.fixtures.models import save_tiny_gemma_reranker
    from tests.conftest import REPO
    model = save_tiny_gemma_reranker(tmp_path / "tiny")
    write(tmp_path / "train.jsonl", rows(3))
    write(tmp_path / "test.jsonl", rows(2))
    out = tmp_path / "scored"
    pm.execute_notebook(
        str(REPO / "notebooks" / "02_reranker_score.ipynb"), str(tmp_path / "executed.ipynb"), cwd=str(REPO),
        kernel_name="python3", progress_bar=False,
        parameters=dict(reranker_name_or_path=model, reranker_max_length=48, reranker_batch_size=4, devices="cpu",
                        train_input_file=str(tmp_path / "train.jsonl"), test_input_file=str(tmp_path / "test.jsonl"),
                        train_output_file=str(out / "train.jsonl"), test_output_file=str(out / "test.jsonl")))
    for name, n in (("train", 3), ("test", 2)):
        got = [json.loads(x) for x in (out / f"{name}.jsonl").read_text().splitlines()]
        assert len(got) == n and all(len(r["neg_scores"]) == 3 and len(r["pos_scores"]) == 1 for r in got)


def test_a_training_folder_stands_for_its_last_epoch(tmp_path, caplog):
    from helpers.rerank.args import last_epoch_model
    run = tmp_path / "teacher"
    for n in (1, 2, 10):
        (run / f"model_epoch_{n}").mkdir(parents=True)
        (run / f"model_epoch_{n}" / "config.json").write_text("{}")
    (run / "model_epoch_11").mkdir()                          # an unfinished epoch: no config.json
    (run / "lora_epoch_12").mkdir()
    with caplog.at_level("INFO"):
        assert last_epoch_model(str(run)) == str(run / "model_epoch_10")       # 10 > 2: numbers, not text
    assert "last epoch model_epoch_10" in caplog.text
    assert ScoreArgs(reranker_name_or_path=str(run)).reranker_name_or_path == str(run / "model_epoch_10")
    model = run / "model_epoch_2"
    assert last_epoch_model(str(model)) == str(model)          # a model folder is itself
    assert last_epoch_model("demo:gemma-3-270m") == "demo:gemma-3-270m"
    assert last_epoch_model(str(tmp_path / "nope")) == str(tmp_path / "nope")
    assert last_epoch_model(None) is None


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_teacher_score_stops_with_its_query_id(tmp_path, bad):
    """Issue 27, item 3: was "Out of range float values are not JSON compliant" with no context."""
    class Poisoned(FakeReranker):
        def score_groups(self, queries, passages):
            out = super().score_groups(queries, passages)
            return [[bad if q.startswith("question 3 ") and j == 2 else s for j, s in enumerate(ss)]
                    for q, ss in zip(queries, out)]
    write(tmp_path / "mined.jsonl", rows())
    a = args(tmp_path)
    with pytest.raises(FloatingPointError) as e:
        add_reranker_score(a, reranker=Poisoned())
    msg = str(e.value)
    assert "\n" not in msg and "query_id 'q3'" in msg and "neg_scores[1]" in msg and "unused-by-fake" in msg
    assert not os.path.exists(a.output_file)
    lines = open(progress_path(a.output_file)).read().splitlines()
    assert [json.loads(x)["chunk"] for x in lines[1:]] == [0]      # chunk 1 (q2, q3) not recorded


def test_progress_of_a_teacher_trained_again_in_the_same_folder_is_refused(tmp_path):
    """Issue 27, item 1: the header held the teacher's path only; its new weights resumed old progress."""
    write(tmp_path / "mined.jsonl", rows())
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "config.json").write_text("{}")
    (teacher / "model.safetensors").write_bytes(b"epoch 1")
    a = args(tmp_path, reranker_name_or_path=str(teacher), reranker_model_class="encoder-only-base")
    with pytest.raises(KeyboardInterrupt):
        add_reranker_score(a, load=lambda _: FakeReranker(fail_after=1))
    again = FakeReranker()
    (teacher / "model.safetensors").write_bytes(b"epoch 2, retrained")
    with pytest.raises(ValueError, match="model_files"):
        add_reranker_score(a, load=lambda _: again)
    assert again.calls == 0
