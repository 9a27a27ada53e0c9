"""A run resumes only from the same input files; overwrite removes the old run whole, and only a run."""
import os
import shutil

import pytest

from helpers.train.guards import fit_in_budget, start_over
from tests.train.test_loop import batches_of, cfg, lora_toy, toy_loss


def run(out, data, **kw):
    gen, n = batches_of(4)
    c = cfg(out, **kw)
    return fit_in_budget(lora_toy(c), toy_loss, gen, n, c, "cpu", stage="toy", past=[], inputs=[data])[0]


def test_a_run_resumes_only_from_the_same_input_files(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("one\n")
    out = tmp_path / "run"
    assert len(run(out, data, num_train_epochs=1)) == 1
    assert len(run(out, data, num_train_epochs=2)) == 2             # same file: resumed, one more epoch
    # copied whole (times kept), as run_all --resume_dir does: still the same inputs
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path, copy, ignore=shutil.ignore_patterns("copy"))
    assert len(run(copy / "run", copy / "train.jsonl", num_train_epochs=3)) == 3
    data.write_text("other data\n")                                  # the same path, new contents
    with pytest.raises(ValueError, match="made from other inputs"):
        run(out, data, num_train_epochs=3)


def test_overwrite_removes_every_epoch_of_the_old_run(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("x\n")
    out = tmp_path / "run"
    run(out, data, num_train_epochs=2)
    assert (out / "lora_epoch_2").is_dir()
    assert len(run(out, data, num_train_epochs=1, overwrite_output_dir=True)) == 1
    assert (out / "lora_epoch_1").is_dir() and not (out / "lora_epoch_2").exists()   # nothing stale for epoch_glob
    assert not any(p.name.startswith(".run") for p in tmp_path.iterdir())


def test_start_over_refuses_a_folder_that_is_not_a_run_or_holds_an_input(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds files but no training run"):
        start_over(tmp_path, [])
    assert (tmp_path / "notes.txt").exists()
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="holds this run's input"):
        start_over(tmp_path, [str(tmp_path / "notes.txt")])
    start_over(tmp_path, [])
    assert not tmp_path.exists()
    os.makedirs(tmp_path)                     # (pytest's folder back)


def test_a_second_writer_of_the_output_folder_is_refused(tmp_path):
    from helpers.common.io_utils import exclusive_lock
    data = tmp_path / "train.jsonl"
    data.write_text("x\n")
    out = tmp_path / "run"
    with exclusive_lock(out, "someone else"):            # e.g. torchrun workers a killed run_all left behind
        with pytest.raises(ValueError, match=r"toy: another process is writing .*run \(it holds .*\.run\.lock\)"):
            run(out, data, num_train_epochs=1)
        assert not out.exists()
    assert len(run(out, data, num_train_epochs=1)) == 1   # free again: it runs, and leaves no lock file
    assert not (tmp_path / ".run.lock").exists()
