"""io_utils' one write rule (issue 27, item 10): temp file beside the target, fsync it, rename it
onto the target, fsync the folder; used by write_json, the scoring progress header, stopped.json."""
import json
import os
import stat

import pytest

from helpers.common import io_utils


@pytest.fixture
def syscalls(monkeypatch):
    """Every os.fsync (of a file: its path; of a folder: 'dir <path>') and os.replace, in order."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        events.append(("fsync", ("dir " if stat.S_ISDIR(os.fstat(fd).st_mode) else "") + target))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        return real_replace(src, dst)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def _assert_durable(events, path):
    """The file written as a temporary, fsynced, renamed onto ``path``, then its folder fsynced."""
    path = str(path)
    i = next(i for i, e in enumerate(events) if e[0] == "replace" and e[2] == path)
    tmp = events[i][1]
    assert os.path.dirname(tmp) == os.path.dirname(path) and tmp != path
    assert ("fsync", tmp) in events[:i], f"{tmp} not fsynced before the rename: {events}"
    assert ("fsync", "dir " + os.path.dirname(path)) in events[i + 1:], f"folder not fsynced after: {events}"


def test_write_json_and_write_jsonl_are_durable(tmp_path, syscalls):
    io_utils.write_json(tmp_path / "a.json", {"x": 1})
    _assert_durable(syscalls, tmp_path / "a.json")
    syscalls.clear()
    io_utils.write_jsonl(tmp_path / "b.jsonl", [{"x": 1}])
    _assert_durable(syscalls, tmp_path / "b.jsonl")
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] != [] and not list(tmp_path.glob(".*.tmp"))


def test_progress_header_is_durable(tmp_path, syscalls):
    from helpers.rerank.progress import Progress
    p = tmp_path / "out.progress.jsonl"
    Progress(p, {"input_sha256": "x"})
    _assert_durable(syscalls, p)
    assert json.loads(p.read_text().splitlines()[0])["input_sha256"] == "x"


def test_stopped_json_is_written_atomically_and_durably(tmp_path, syscalls, monkeypatch):
    from helpers.train.budget import stop_report
    monkeypatch.delenv("EEDI_STOP_REPORT", raising=False)
    stop_report(tmp_path, 2, 5, "epoch 3 would end after the deadline")
    _assert_durable(syscalls, tmp_path / "stopped.json")
    assert json.loads((tmp_path / "stopped.json").read_text())["epochs_done"] == 2


def test_remove_durably_fsyncs_the_folder(tmp_path, syscalls):
    (tmp_path / "stats.json").write_text("{}")
    io_utils.remove_durably(tmp_path / "stats.json")
    assert not (tmp_path / "stats.json").exists() and syscalls == [("fsync", f"dir {tmp_path}")]
    io_utils.remove_durably(tmp_path / "stats.json")         # absent: nothing to do


def test_a_gold_id_given_twice_is_refused_at_validation(tmp_path):
    row = {"query_id": "q1", "query": "x", "pos": ["a", "a"], "pos_ids": ["7", "7"], "__line__": 3}
    with pytest.raises(io_utils.InputError) as e:
        io_utils.validate_queries([row], tmp_path / "test.jsonl")
    assert (e.value.line, e.value.field) == (3, "pos_ids") and "id '7' given twice" in str(e.value)


def test_save_dir_atomic_uses_its_own_temporary_folder_and_clears_only_dead_ones(tmp_path):
    dead = tmp_path / ".m.pid999999999.x.tmp"               # a killed save's (no such process)
    live = tmp_path / f".m.pid{os.getppid()}.y.tmp"         # another save in progress: left alone
    old_fixed = tmp_path / ".m.tmp"                          # the fixed name of earlier versions
    for d in (dead, live, old_fixed):
        d.mkdir()
    seen = []
    io_utils.save_dir_atomic(tmp_path / "m", lambda t: (seen.append(t.name), (t / "a").write_text("1")))
    assert seen[0].startswith(f".m.pid{os.getpid()}.") and seen[0] != ".m.tmp"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "m"])

    def fail(t):
        (t / "b").write_text("2")
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        io_utils.save_dir_atomic(tmp_path / "m", fail)
    assert sorted(os.listdir(tmp_path / "m")) == ["a"]        # the old folder whole
    io_utils.remove_dir_atomic(tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]


def test_scoring_refuses_an_output_another_scorer_is_writing(tmp_path):
    from helpers.rerank.add_reranker_score import ScoreArgs, add_reranker_score
    out = tmp_path / "scored.jsonl"
    with io_utils.exclusive_lock(out, "first"):
        with pytest.raises(ValueError, match="add_reranker_score: another process is writing"):
            add_reranker_score(ScoreArgs(input_file=str(tmp_path / "in.jsonl"), output_file=str(out),
                                         reranker_name_or_path="demo:smollm2-135m-instruct"))
