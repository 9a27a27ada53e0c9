"""Disk and time on Kaggle: adapters every epoch and one merge at the end, free disk checked before
large writes, a deadline that stops training after a finished epoch, run_all.py --time_budget and
continuing a chain (--from, --resume_dir) in the same or the next session."""
import collections
import json
import os
import time

import pytest
import yaml

import helpers.common.io_utils as io_utils
import run_all
from helpers.common.io_utils import DiskSpaceError, check_free_disk
from helpers.train import budget, merge
from helpers.train import kd_finetune as kf
from tests.factories import kd_args

Usage = collections.namedtuple("Usage", "total used free")


def short_disk(monkeypatch, free=1000):
    monkeypatch.setattr(io_utils.shutil, "disk_usage", lambda p: Usage(10 ** 12, 10 ** 12 - free, free))


# ----------------------------------------------------------------------------- disk
def test_free_disk_check_names_folder_bytes_needed_and_free(tmp_path, monkeypatch):
    assert check_free_disk(tmp_path / "not" / "yet", 1, "x") > 0          # nearest existing parent
    short_disk(monkeypatch)
    with pytest.raises(DiskSpaceError) as e:
        check_free_disk(tmp_path / "kd", 14_200_000_000, "the merged model merged_model_lora_epoch_3")
    msg = str(e.value)
    assert str(tmp_path / "kd") in msg and "14200000000 bytes" in msg and "1000 bytes" in msg
    assert "merged_model_lora_epoch_3" in msg and "14.20 GB" in msg


def test_merge_checks_the_disk_before_loading_the_base(tmp_path, monkeypatch):
    from helpers.common.memory import stored_bytes
    from tests.fixtures.models import save_tiny_llama
    base = save_tiny_llama(tmp_path / "base")
    short_disk(monkeypatch)
    monkeypatch.setattr(merge, "load_base_model", lambda *a, **k: pytest.fail("loaded before the disk check"))
    with pytest.raises(DiskSpaceError, match=f"{stored_bytes(base)} bytes"):
        merge.merge_adapter(base, tmp_path / "lora_epoch_1", tmp_path / "kd" / "merged_model_lora_epoch_1", None, True)


def test_merge_every_epoch_is_off_on_kaggle_only(monkeypatch):
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    assert merge.merge_every_epoch(None) is True and merge.merge_every_epoch(False) is False
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    assert merge.merge_every_epoch(None) is False and merge.merge_every_epoch(True) is True


def test_choose_epoch():
    rows = [{"epoch": 1, "MAP@25": 0.2}, {"epoch": 2, "MAP@25": 0.3}, {"epoch": 3, "MAP@25": 0.3}]
    assert merge.choose_epoch(rows) == 2 and merge.choose_epoch(rows, "last") == 3 and merge.choose_epoch(rows, "1") == 1
    assert merge.choose_epoch([{"epoch": 1}, {"epoch": 2}]) == 2 and merge.choose_epoch([]) is None
    with pytest.raises(ValueError, match="not a finished epoch"):
        merge.choose_epoch(rows, 7)
    with pytest.raises(ValueError, match="merge_epoch"):
        kd_args(__import__("pathlib").Path("/x"), "/y", merge_epoch="first")


@pytest.mark.integration
def test_on_kaggle_only_the_best_epoch_is_merged_and_any_epoch_merges_on_demand(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    out = tmp_path / "kd"
    rows = kf.kd_finetune(kd_args(tiny, out, save_merged_lora_model=True))
    best = merge.choose_epoch(rows)
    assert sorted(p.name for p in out.glob("merged_model_lora_epoch_*")) == [f"merged_model_lora_epoch_{best}"]
    assert (out / "lora_epoch_1" / "adapter_model.safetensors").exists() and (out / "lora_epoch_2").is_dir()
    other = 3 - best
    merge.main(["--output_dir", str(out), "--epoch", str(other), "--base_model", str(tiny / "model")])
    merged = out / f"merged_model_lora_epoch_{other}"
    assert (merged / "config.json").exists()
    assert json.loads((merged / "tokenizer_config.json").read_text())["add_eos_token"] is True
    import numpy as np
    from helpers.embed.args import EmbedderArgs
    from helpers.embed.embedder import Embedder
    enc = lambda p: Embedder(EmbedderArgs(model_name_or_path=str(p), embedder_model_class="decoder-only-icl",
                                          devices="cpu"), show_progress=False).encode_corpus(["apple", "river"])
    assert np.abs(enc(merged) - enc(out / f"lora_epoch_{other}")).max() < 1e-4


# ----------------------------------------------------------------------------- the deadline inside training
def test_epoch_guard_stops_before_an_epoch_that_would_overrun():
    clock = iter([0.0, 100.0, 200.0, 300.0]).__next__
    calls, asked = [], []
    g = budget.epoch_guard(lambda e: calls.append(e) or [e], deadline=350.0, past_seconds=[],
                       agree=lambda stop: asked.append(stop) or stop, clock=clock)
    assert g(1) == [1] and g(2) == [2] and g(3) == [3]           # epochs of 100 s end at 100, 200, 300
    with pytest.raises(budget.DeadlineReached, match="stopped after epoch 3"):
        g(4)                                                     # would end at 400 > 350
    assert calls == [1, 2, 3] and asked == [False, False, False, True]
    # before any epoch of this session: the earlier sessions' epoch time, or stop when the time is up
    with pytest.raises(budget.DeadlineReached):
        budget.epoch_guard(lambda e: [], 50.0, [60.0], clock=lambda: 0.0)(1)
    assert budget.epoch_guard(lambda e: [e], 50.0, [], clock=lambda: 0.0)(1) == [1]
    with pytest.raises(budget.DeadlineReached):
        budget.epoch_guard(lambda e: [], 50.0, [], clock=lambda: 60.0)(1)


@pytest.mark.integration
def test_training_stops_at_the_deadline_and_resumes(tiny, tmp_path, monkeypatch):
    out, report = tmp_path / "kd", tmp_path / "report.jsonl"
    monkeypatch.setenv("EEDI_STOP_REPORT", str(report))
    monkeypatch.setenv("EEDI_DEADLINE", repr(time.time() + 3600))
    kf.kd_finetune(kd_args(tiny, out, num_train_epochs=1))                     # epoch 1, well before it
    assert not report.exists()
    monkeypatch.setenv("EEDI_DEADLINE", repr(time.time() - 1))                 # the time is up
    rows = kf.kd_finetune(kd_args(tiny, out, num_train_epochs=3))
    assert [r["epoch"] for r in rows] == [1] and not (out / "lora_epoch_2").exists()
    rec = json.loads(report.read_text().splitlines()[-1])
    assert rec["epochs_done"] == 1 and rec["num_train_epochs"] == 3 and (out / "stopped.json").exists()
    monkeypatch.delenv("EEDI_DEADLINE")
    rows = kf.kd_finetune(kd_args(tiny, out, num_train_epochs=3))              # next session: resumes
    assert [r["epoch"] for r in rows] == [1, 2, 3] and not (out / "stopped.json").exists()


# ----------------------------------------------------------------------------- run_all.py
def test_parse_duration():
    assert run_all.parse_duration("11h") == 39600 and run_all.parse_duration("90m") == 5400
    assert run_all.parse_duration("1h30m") == 5400 and run_all.parse_duration("45s") == 45
    assert run_all.parse_duration("3600") == 3600
    for bad in ("11x", "h", "1h 2q"):
        with pytest.raises(run_all.ChainError, match="time_budget"):
            run_all.parse_duration(bad)


def _profile(tmp_path, names=("prepare", "mine", "train", "compare")):
    steps = [{"name": n, "notebook": "03_kd_finetune" if n == "train" else "00_prepare_data",
              "parameters": {"seed": i}} for i, n in enumerate(names)]
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"run_name": "r", "output_root": str(tmp_path / "out"), "steps": steps}))
    return str(path)


def test_time_budget_stops_training_after_an_epoch_and_from_continues(tmp_path, monkeypatch, capsys):
    ran, env = [], {}

    def step(s, run_dir, index):
        ran.append(s["name"])
        env[s["name"]] = (os.environ.get("EEDI_DEADLINE"), os.environ.get("EEDI_STOP_REPORT"))
        if s["name"] == "train" and ran.count("train") == 1:    # what kd_finetune does at the deadline
            with open(os.environ["EEDI_STOP_REPORT"], "a") as f:
                f.write(json.dumps({"stage": "kd_finetune", "epochs_done": 3, "num_train_epochs": 5,
                                    "reason": "epoch 4 would end after the deadline"}) + "\n")
        return 1.0
    monkeypatch.setattr(run_all, "run_step", step)
    p = _profile(tmp_path)
    t0 = time.time()
    assert run_all.main(["--profile", p, "--time_budget", "11h"]) == 0
    out = capsys.readouterr().out
    assert ran == ["prepare", "mine", "train"]
    assert abs(float(env["train"][0]) - (t0 + 11 * 3600)) < 60 and env["train"][1].endswith(".stop_report.jsonl")
    assert f"--profile {p} --from train --run_name r --time_budget 11h" in out
    m = json.loads((tmp_path / "out" / "r" / "manifest.json").read_text())
    assert m["steps"]["train"]["status"] == "stopped" and m["steps"]["train"]["stopped"]["epochs_done"] == 3
    assert m["stopped"]["step"] == "train" and "EEDI_DEADLINE" not in os.environ
    assert not (tmp_path / "out" / "r" / ".stop_report.jsonl").exists()
    # the same run folder, continued
    assert run_all.main(["--profile", p, "--from", "train", "--run_name", "r"]) == 0
    m = json.loads((tmp_path / "out" / "r" / "manifest.json").read_text())
    assert ran[3:] == ["train", "compare"] and [m["steps"][n]["status"] for n in ("prepare", "mine", "train", "compare")] \
        == ["done"] * 4 and "stopped" not in m


def test_time_budget_does_not_start_a_step_that_took_longer_than_what_is_left(tmp_path, monkeypatch, capsys):
    walls = {"prepare": 1.0, "mine": 5000.0, "train": 1.0, "compare": 1.0}
    ran = []
    monkeypatch.setattr(run_all, "run_step", lambda s, d, i: ran.append(s["name"]) or walls[s["name"]])
    p = _profile(tmp_path)
    assert run_all.main(["--profile", p]) == 0                               # records the wall times
    ran.clear()
    assert run_all.main(["--profile", p, "--time_budget", "1h"]) == 0
    assert ran == ["prepare"]
    out = capsys.readouterr().out
    assert "stopped at step 'mine'" in out and "took 1.39 h last time" in out and "--from mine --run_name r" in out


def test_from_needs_a_run_to_continue_and_resume_dir_copies_one(tmp_path, monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(run_all, "run_step", lambda s, d, i: ran.append(s["name"]) or 1.0)
    p = _profile(tmp_path)
    assert run_all.main(["--profile", p, "--from", "train", "--run_name", "fresh"]) == 1
    assert "holds no run to continue" in capsys.readouterr().err and ran == []
    # a previous session's run folder, read-only as /kaggle/input is
    prev = tmp_path / "input" / "r"
    (prev / "kd").mkdir(parents=True)
    (prev / "manifest.json").write_text(json.dumps({"steps": {"prepare": {"status": "done"}, "mine": {"status": "done"}}}))
    (prev / "kd" / "trainer_state.pt").write_bytes(b"x" * 10)
    (prev / ".run_all.lock").write_text("")
    for f in (prev / "manifest.json", prev / "kd" / "trainer_state.pt", prev / ".run_all.lock"):
        f.chmod(0o444)
    (prev / "kd").chmod(0o555)
    assert run_all.main(["--profile", p, "--resume_dir", str(prev), "--run_name", "s2"]) == 1
    assert "give --from" in capsys.readouterr().err
    assert run_all.main(["--profile", p, "--from", "train", "--run_name", "s2", "--resume_dir", str(prev)]) == 0
    run = tmp_path / "out" / "s2"
    assert ran == ["train", "compare"] and (run / "kd" / "trainer_state.pt").read_bytes() == b"x" * 10
    assert os.access(run / "kd", os.W_OK) and os.access(run / "kd" / "trainer_state.pt", os.W_OK)
    m = json.loads((run / "manifest.json").read_text())
    assert m["steps"]["prepare"]["status"] == "done" and m["steps"]["compare"]["status"] == "done"
    assert run_all.main(["--profile", p, "--from", "train", "--run_name", "s2", "--resume_dir", str(prev)]) == 1
    assert "already holds a run" in capsys.readouterr().err
    (prev / "kd").chmod(0o755)
