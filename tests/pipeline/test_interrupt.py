"""SIGKILL each stage's command inside its long loop, start it again: the output is the same.

The kill point (tests/fixtures/sandbox.py) makes the n-th call of a function inside the stage wait; the
test then SIGKILLs the process from outside, so the kill lands inside the loop without a race.
The restarted command must finish and write exactly what an uninterrupted run writes, and the
kill must not leave a file that looks whole. The scoring stage's SIGKILL test is
tests/rerank/test_add_reranker_score.py::test_sigkill_then_restart_gives_the_same_file (not repeated here).
"""
import json
from pathlib import Path

import pytest

from tests.fixtures.sandbox import kill_at_killpoint, net_attempts, one_thread, python_m, run_stage, stage_env
from tests.factories import kd_args, tiny_input, write_inputs

@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def files_under(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(Path(d).rglob("*")) if p.is_file()}


def killed_then_rerun(tmp_path, cmd, killpoint):
    """Kill ``cmd`` at ``killpoint``, return (stderr of the killed run, env); the caller checks the
    half state, then :func:`rerun` finishes it."""
    env = stage_env(tmp_path, killpoint)
    err = kill_at_killpoint(cmd, env)
    return err, env


def rerun(tmp_path, cmd):
    env = stage_env(tmp_path)
    r = run_stage(cmd, env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Error in sitecustomize" not in r.stderr, r.stderr
    assert net_attempts(env) == []
    return r


# ----------------------------------------------------------------------------- prepare
@pytest.mark.integration
@pytest.mark.parametrize("killpoint, what", [
    ("helpers.common.io_utils:dumps:30", "while writing train_queries.jsonl (row 10)"),
    ("helpers.common.io_utils:write_json:2", "after examples.json, before stats.json"),
])
def test_prepare_killed_and_rerun(tmp_path, killpoint, what):
    inp = tiny_input(tmp_path / "in", n_questions=40)
    ref, out = tmp_path / "ref", tmp_path / "out"
    rerun(tmp_path, python_m("helpers.data.prepare_data", "--input_dir", inp, "--output_dir", ref))
    cmd = python_m("helpers.data.prepare_data", "--input_dir", inp, "--output_dir", out)
    killed_then_rerun(tmp_path, cmd, killpoint)
    assert not (out / "stats.json").exists()          # stats.json last: the folder is not complete
    rerun(tmp_path, cmd)
    assert files_under(out) == files_under(ref)        # byte-identical, no stale temp file left


# ----------------------------------------------------------------------------- mine
MINE_FLAGS = ["--embedder_name_or_path", "demo:all-minilm-l6-v2", "--embedder_model_class", "encoder-only-base",
              "--range_for_sampling", "2-30", "--negative_number", "5", "--devices", "cpu", "--shuffle_data", "True",
              "--batch_size", "4", "--embedder_query_max_length", "32", "--embedder_passage_max_length", "32"]


@pytest.mark.integration
def test_mine_killed_inside_the_embedding_loop_and_rerun(tmp_path):
    from helpers.mine.hn_mine import HnMineArgs, build_parser, hn_mine
    d = write_inputs(tmp_path / "d", n_corpus=40, n_queries=8)
    io = ["--input_file", d / "queries.jsonl", "--candidate_pool", d / "corpus.jsonl"]
    out = tmp_path / "out" / "mined.jsonl"
    cmd = python_m("helpers.mine.hn_mine", *MINE_FLAGS, *io, "--output_file", out)
    killed_then_rerun(tmp_path, cmd, "helpers.embed.embedder:Embedder._forward:5")   # batch 5 of 10 passages batches
    assert not out.exists() and not list(out.parent.glob(".*"))
    rerun(tmp_path, cmd)
    ref = tmp_path / "ref.jsonl"
    hn_mine(HnMineArgs(**vars(build_parser().parse_args([str(x) for x in cmd[3:-1]] + [str(ref)]))))
    assert out.read_bytes() == ref.read_bytes()


# ----------------------------------------------------------------------------- eval
@pytest.mark.integration
def test_eval_killed_inside_the_embedding_loop_and_rerun(tmp_path):
    from helpers.common.cli import build_parser
    from helpers.eval.evaluate import EvalArgs, run_evaluation
    d = write_inputs(tmp_path / "d", n_corpus=40, n_queries=8)
    flags = ["--model_name_or_path", "demo:all-minilm-l6-v2", "--embedder_model_class", "encoder-only-base",
             "--queries_file", d / "queries.jsonl", "--corpus_file", d / "corpus.jsonl", "--devices", "cpu",
             "--embedder_batch_size", "4", "--embedder_query_max_length", "32", "--embedder_passage_max_length", "32",
             "--topk", "30"]
    out = tmp_path / "eval"
    cmd = python_m("helpers.eval.evaluate", *flags, "--output_dir", out)
    killed_then_rerun(tmp_path, cmd, "helpers.embed.embedder:Embedder._forward:6")
    assert not (out / "metrics.json").exists()
    rerun(tmp_path, cmd)
    ref = tmp_path / "ref"
    run_evaluation(EvalArgs(**vars(build_parser(EvalArgs, "").parse_args([str(x) for x in flags] +
                                                                         ["--output_dir", str(ref)]))))
    for name in ("rankings.jsonl", "metrics.csv"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    strip = lambda m: {k: v for k, v in m.items() if k not in ("encode_seconds", "args")}
    assert strip(json.loads((out / "metrics.json").read_text())) == strip(json.loads((ref / "metrics.json").read_text()))
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "metrics.json", "per_query.jsonl", "rankings.jsonl"]
    assert (out / "per_query.jsonl").read_bytes() == (ref / "per_query.jsonl").read_bytes()


# ----------------------------------------------------------------------------- train
def _no_seconds(rows):
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rows]


@pytest.mark.integration
@pytest.mark.parametrize("killpoint, what", [
    ("helpers.train.loop:_LossModule.forward:3", "epoch 2, first batch"),
    ("helpers.common.io_utils:write_jsonl:1", "epoch 1 end: training state saved, metrics.jsonl not yet"),
])
def test_train_killed_and_rerun_resumes_to_the_same_metrics_and_adapter(tiny, tmp_path, killpoint, what):  # noqa: F811
    from helpers.train.kd_finetune import kd_finetune
    from helpers.train.distributed import dataclass_argv
    from helpers.train.loop import STATE_FILE
    ref = kd_finetune(kd_args(tiny, tmp_path / "ref", num_train_epochs=2))
    a = kd_args(tiny, tmp_path / "out", num_train_epochs=2)
    cmd = python_m("helpers.train.kd_finetune", *dataclass_argv(a))
    killed_then_rerun(tmp_path, cmd, killpoint)
    out = tmp_path / "out"
    assert (out / STATE_FILE).exists()                  # epoch 1 is kept ...
    assert not (out / "lora_epoch_2").exists()          # ... epoch 2 is not there
    r = rerun(tmp_path, cmd)
    assert "resuming" in r.stderr and "after epoch 1" in r.stderr
    got = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert _no_seconds(got) == _no_seconds(ref) and len(got) == 2
    for name in ("lora_epoch_1", "lora_epoch_2"):
        assert (out / name / "adapter_model.safetensors").read_bytes() == \
            (tmp_path / "ref" / name / "adapter_model.safetensors").read_bytes()
    assert (out / "loss_history.json").read_bytes() == (tmp_path / "ref" / "loss_history.json").read_bytes()


# ----------------------------------------------------------------------------- run_all --from
def test_run_all_from_continues_a_failed_chain(tmp_path, monkeypatch):
    """A chain stopped at a step (failed or killed) continues with --from that step; the earlier
    steps are not run again and stay recorded in the manifest. (A second run_all on the same run
    folder is refused: tests/pipeline/test_run_all.py::test_second_run_on_same_folder_refuses.)"""
    import yaml
    import run_all
    ran = []

    def step(s, run_dir, index):
        ran.append(s["name"])
        if s["name"] == "mine" and len(ran) == 2:
            raise run_all.ChainError("step 'mine' failed (simulated)")
        return 0.01
    monkeypatch.setattr(run_all, "run_step", step)
    steps = [{"name": n, "notebook": "00_prepare_data", "parameters": {"seed": i}}
             for i, n in enumerate(["prepare", "mine", "score"])]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"run_name": "r", "output_root": str(tmp_path), "steps": steps}))
    assert run_all.main(["--profile", str(tmp_path / "p.yaml")]) == 1
    manifest = tmp_path / "r" / "manifest.json"
    m = json.loads(manifest.read_text())
    assert ran == ["prepare", "mine"] and m["steps"]["mine"]["status"] == "failed" and "score" not in m["steps"]
    assert run_all.main(["--profile", str(tmp_path / "p.yaml"), "--from", "mine"]) == 0
    m = json.loads(manifest.read_text())
    assert ran == ["prepare", "mine", "mine", "score"]
    assert [m["steps"][n]["status"] for n in ("prepare", "mine", "score")] == ["done"] * 3
