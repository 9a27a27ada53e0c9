"""kaggle/run_all_kaggle.py and kaggle/submit/submit_kaggle.py on a fake /kaggle/input tree in
both dataset layouts (/kaggle/input/<slug> and /kaggle/input/datasets/<owner>/<slug>): every input
is resolved through helpers.kaggle.inputs; the wheels folder is the one holding *.whl, not the code
dataset's requirements.txt. run_all.py and pip are not run (fakes record what would run)."""
import importlib.util
import shutil
import sys

import pytest

SCRIPTS = {"train": "kaggle/run_all_kaggle.py", "submit": "kaggle/submit/submit_kaggle.py"}


def load(repo_root, which):
    spec = importlib.util.spec_from_file_location(f"entry_{which}", repo_root / SCRIPTS[which])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)              # definitions only: nothing runs on import
    return mod


def kaggle_input(repo_root, tmp_path, layout):
    """The attached datasets of README "Run on Kaggle", mounted in ``layout``."""
    root = tmp_path / "input"

    def mount(slug):
        d = root / slug if layout == "old" else root / "datasets" / "someone" / slug
        d.mkdir(parents=True)
        return d
    code = mount("eedi-distill-code")                       # this repository: a requirements.txt, no wheels
    for f in ("run_all.py", "requirements.txt"):
        shutil.copy(repo_root / f, code / f)
    shutil.copytree(repo_root / "configs", code / "configs")
    (code / "helpers" / "kaggle").mkdir(parents=True)
    shutil.copy(repo_root / "helpers" / "kaggle" / "inputs.py", code / "helpers" / "kaggle" / "inputs.py")
    wheels = mount("eedi-distill-wheels")
    (wheels / "requirements.txt").write_text("peft\n")
    (wheels / "peft-0.14.0-py3-none-any.whl").write_bytes(b"")
    data = mount("eedi-mining-misconceptions-in-mathematics")
    for f in ("test.csv", "train.csv", "sample_submission.csv", "misconception_mapping.csv"):
        (data / f).write_text("x\n")
    models = {}
    for slug in ("bge-en-icl", "bge-reranker-v2-gemma", "eedi-student/lora_epoch_4"):
        d = mount(slug.split("/")[0]) if "/" not in slug else (mount(slug.split("/")[0]) / slug.split("/")[1])
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text("{}")
        models[slug] = str(d)
    return root, dict(code=str(code), wheels=str(wheels), data=str(data), **models)


def run_script(repo_root, tmp_path, monkeypatch, which, layout):
    root, where = kaggle_input(repo_root, tmp_path, layout)
    monkeypatch.setattr(sys, "path", list(sys.path))
    ran, installed = [], []

    def fake_run(cmd, cwd=None, **kw):
        ran.append((cmd, cwd))
        import subprocess
        return subprocess.CompletedProcess(cmd, 0)
    rc = load(repo_root, which).main(root=str(root), work=str(tmp_path / "working" / "code"), run=fake_run,
                                     install=installed.append)
    assert rc == 0 and len(ran) == 1
    cmd, cwd = ran[0]
    assert cwd == str(tmp_path / "working" / "code") and (tmp_path / "working" / "code" / "run_all.py").exists()
    vars_ = dict(cmd[i + 1].split("=", 1) for i, c in enumerate(cmd) if c == "--var")
    return cmd, vars_, installed, where


@pytest.mark.parametrize("layout", ["old", "new"])
def test_the_training_entry_resolves_every_input_in_either_layout(repo_root, tmp_path, monkeypatch, layout):
    cmd, vars_, installed, where = run_script(repo_root, tmp_path, monkeypatch, "train", layout)
    assert installed == [where["wheels"]]                   # not the code dataset's requirements.txt
    assert cmd[cmd.index("--profile") + 1] == "kaggle_eedi"
    assert vars_ == {"data_dir": where["data"], "embedder": where["bge-en-icl"], "student": where["bge-en-icl"],
                     "reranker": where["bge-reranker-v2-gemma"]}


@pytest.mark.parametrize("layout", ["old", "new"])
def test_the_submission_entry_resolves_every_input_in_either_layout(repo_root, tmp_path, monkeypatch, layout):
    cmd, vars_, installed, where = run_script(repo_root, tmp_path, monkeypatch, "submit", layout)
    assert installed == [where["wheels"]]
    assert cmd[cmd.index("--profile") + 1] == "submit"
    assert vars_ == {"data_dir": where["data"], "student": where["eedi-student/lora_epoch_4"],
                     "base_model": where["bge-en-icl"]}


def test_an_input_that_is_not_attached_is_named_and_left_as_written(repo_root, tmp_path, monkeypatch, capsys):
    root, where = kaggle_input(repo_root, tmp_path, "new")
    shutil.rmtree(where["bge-en-icl"])                      # the base model: only read for an adapter
    monkeypatch.setattr(sys, "path", list(sys.path))
    ran = []
    rc = load(repo_root, "submit").main(root=str(root), work=str(tmp_path / "w"), install=lambda f: None,
                                        run=lambda cmd, **kw: ran.append(cmd) or type("R", (), {"returncode": 0}))
    vars_ = dict(ran[0][i + 1].split("=", 1) for i, c in enumerate(ran[0]) if c == "--var")
    assert rc == 0 and "base_model" not in vars_ and vars_["student"].endswith("lora_epoch_4")
    assert "input base_model: /kaggle/input/bge-en-icl is not attached" in capsys.readouterr().out
