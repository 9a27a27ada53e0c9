"""Kaggle support: offline wheel install, Kaggle detection, profile parameters (the memory plan's
tables: test_memory_tables.py)."""
import pytest

import run_all
from helpers.kaggle.offline_install import find_wheels, install_wheels


def test_install_wheels_does_nothing_without_a_wheels_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("EEDI_WHEELS", raising=False)
    calls = []
    assert install_wheels(str(tmp_path / "*" / "requirements.txt"), str(tmp_path / "m"), run=calls.append) is None
    assert calls == []


def test_install_wheels_finds_an_attached_folder_and_runs_once(tmp_path, monkeypatch):
    monkeypatch.delenv("EEDI_WHEELS", raising=False)
    (tmp_path / "notwheels").mkdir()
    (tmp_path / "notwheels" / "requirements.txt").write_text("x\n")            # no wheels beside it
    w = tmp_path / "wheels"
    w.mkdir()
    (w / "requirements.txt").write_text("peft\n")
    (w / "peft-0.1-py3-none-any.whl").write_bytes(b"")
    calls = []
    import subprocess

    def run(c, **kw):
        calls.append(c)
        return subprocess.CompletedProcess(c, 0, "", "")
    lacks_peft = {"torch": "2.11.0"}.get                               # the image lacks peft
    cmds = install_wheels(str(tmp_path / "*" / "requirements.txt"), str(tmp_path / "m"), run=run,
                          installed=lacks_peft)
    cmd = cmds[0]
    assert calls == cmds == [cmd] and "--no-index" in cmd and cmd[cmd.index("--find-links") + 1] == str(w)
    assert install_wheels(str(tmp_path / "*" / "requirements.txt"), str(tmp_path / "m"), run=run,
                          installed=lacks_peft) is None     # once per session
    assert len(calls) == 1


def test_eedi_wheels_env_must_point_at_a_wheels_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("EEDI_WHEELS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no requirements.txt"):
        find_wheels()


def test_kaggle_is_detected_and_picks_the_kaggle_profile(monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    assert run_all.on_kaggle()
    assert run_all.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "/kaggle/working/eedi_round2_kd/data" in out and "train_kd" in out
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE")
    assert not run_all.on_kaggle()


def test_kaggle_profile_has_the_seed_hyperparameters(repo_root):
    import yaml
    prof = yaml.safe_load(open(repo_root / "configs" / "kaggle_eedi.yaml"))
    steps = {s["name"]: s["parameters"] for s in prof["steps"]}
    assert steps["mine"]["range_for_sampling"] == "2-100" and steps["mine"]["negative_number"] == 15
    assert steps["score"]["reranker_max_length"] == 384 and steps["score"]["reranker_batch_size"] == 16
    kd = steps["train_kd"]
    assert (kd["lora_rank"], kd["lora_alpha"], kd["learning_rate"], kd["per_device_train_batch_size"],
            kd["num_train_epochs"], kd["devices"]) == (64, 32, 1e-4, 8, 5, "0,1")
    assert kd["negatives_cross_device"] is True


def test_var_overrides_profile_vars(capsys):
    assert run_all.main(["--profile", "kaggle_eedi", "--var", "embedder=/kaggle/input/mine", "--list"]) == 0
    out = capsys.readouterr().out
    assert '"model_name_or_path": "/kaggle/input/mine"' in out
    assert run_all.main(["--profile", "kaggle_eedi", "--var", "nope=1", "--list"]) == 1
    assert "KEY one of the profile's vars: data_dir, embedder" in capsys.readouterr().err
