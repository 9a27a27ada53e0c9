"""run_all.py: profile checks, overrides, step selection, failure reporting, manifest, lock."""
import fcntl
import os
import json

import pytest
import yaml

import run_all
from tests.factories import tiny_input


def profile(tmp_path, steps, name="p"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"run_name": "r", "output_root": str(tmp_path / "out"), "steps": steps}))
    return str(path)


PREP = {"name": "prepare", "notebook": "00_prepare_data", "parameters": {"output_dir": "{run_dir}/data"}}


def test_unknown_profile_parameter_is_an_error(tmp_path, capsys):
    p = profile(tmp_path, [dict(PREP, parameters={"input_dirr": "x"})])
    assert run_all.main(["--profile", p]) == 1
    err = capsys.readouterr().err
    assert "step 'prepare' (00_prepare_data): unknown parameter(s) input_dirr" in err
    assert "input_dir" in err   # lists what the notebook declares


def test_set_overrides_and_errors(tmp_path, capsys):
    p = profile(tmp_path, [PREP, dict(PREP, name="prepare2")])
    assert run_all.main(["--profile", p, "--set", "nope=1", "--list"]) == 1
    assert "no step's notebook has a parameter 'nope'" in capsys.readouterr().err
    assert run_all.main(["--profile", p, "--set", "prepare2.seed=7", "--set", "test_fraction=0.3", "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert '"seed": 7' in out[1] and '"seed": 7' not in out[0]
    assert all('"test_fraction": 0.3' in line for line in out)
    assert str(tmp_path / "out" / "r" / "data") in out[0]          # {run_dir} substituted


def test_only_and_from(tmp_path, capsys):
    p = profile(tmp_path, [PREP, dict(PREP, name="b"), dict(PREP, name="c")])
    assert run_all.main(["--profile", p, "--from", "b", "--list"]) == 0
    marks = [line[0] for line in capsys.readouterr().out.splitlines()]
    assert marks == [" ", "*", "*"]
    assert run_all.main(["--profile", p, "--only", "a,c", "--list"]) == 1
    assert "--only: unknown step(s) a" in capsys.readouterr().err


def test_duplicate_step_names_and_missing_notebook(tmp_path, capsys):
    assert run_all.main(["--profile", profile(tmp_path, [PREP, PREP])]) == 1
    assert "repeated: prepare" in capsys.readouterr().err
    assert run_all.main(["--profile", profile(tmp_path, [dict(PREP, notebook="99_nope")], "q")]) == 1
    assert "notebooks/99_nope.ipynb does not exist" in capsys.readouterr().err


def test_a_key_given_twice_is_refused_with_its_line(tmp_path, capsys):
    path = tmp_path / "dup.yaml"
    path.write_text("run_name: r\nsteps:\n  - name: prepare\n    notebook: 00_prepare_data\n    parameters:\n"
                    "      seed: 1\n      output_dir: x\n      seed: 2\n")
    assert run_all.main(["--profile", str(path), "--list"]) == 1
    assert f"{path}:8: key 'seed' given twice in one mapping (first on line 6)" in capsys.readouterr().err
    # a YAML merge key may be overridden: that is what it is for
    path.write_text("run_name: r\noutput_root: o\nsteps:\n  - name: prepare\n    notebook: 00_prepare_data\n"
                    "    parameters: &p\n      seed: 1\n  - name: again\n    notebook: 00_prepare_data\n"
                    "    parameters:\n      <<: *p\n      seed: 2\n")
    assert run_all.main(["--profile", str(path), "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert '"seed": 1' in out[0] and '"seed": 2' in out[1]


@pytest.mark.integration
def test_runs_notebook_writes_manifest_and_reports_failures(tmp_path, capsys):
    inp = tiny_input(tmp_path / "in")
    p = profile(tmp_path, [dict(PREP, parameters=dict(PREP["parameters"], input_dir=str(inp)))])
    assert run_all.main(["--profile", p]) == 0
    run_dir = tmp_path / "out" / "r"
    assert (run_dir / "data" / "stats.json").exists()
    executed = json.load(open(run_dir / "notebooks" / "00_prepare.ipynb"))
    assert any(c.get("outputs") for c in executed["cells"])
    m = json.load(open(run_dir / "manifest.json"))
    assert m["steps"]["prepare"]["status"] == "done" and m["steps"]["prepare"]["wall_s"] > 0
    assert m["environment"]["git_commit"] and m["environment"]["torch"]
    assert "wall time per step" in capsys.readouterr().out

    # a failing cell stops the chain and names notebook, cell and error
    assert run_all.main(["--profile", p, "--set", f"input_dir={tmp_path / 'missing'}"]) == 1
    err = capsys.readouterr().err
    assert "step 'prepare' failed in notebooks/00_prepare_data.ipynb, cell" in err
    assert "InputError" in err and "misconception_mapping.csv: file does not exist" in err
    assert json.load(open(run_dir / "manifest.json"))["steps"]["prepare"]["status"] == "failed"


def test_second_run_on_same_folder_refuses(tmp_path, capsys):
    p = profile(tmp_path, [PREP])
    run_dir = tmp_path / "out" / "r"
    run_dir.mkdir(parents=True)
    with open(run_dir / ".run_all.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert run_all.main(["--profile", p]) == 1
    assert "another run_all.py is already running" in capsys.readouterr().err


def test_demo_profile_parameters_exist():
    # every shipped profile's parameters are declared by its notebooks
    for name in ("demo",):
        assert run_all.main(["--profile", name, "--list"]) == 0


# ------------------------------------------------------- run folders that cannot escape (issue 27, item 5)
@pytest.mark.parametrize("name", ["", ".", "..", "../helpers", "/ABS", "a/b", "a b", "r;rm"])
def test_bad_run_name_is_refused_before_anything_is_made(tmp_path, capsys, name):
    name = name.replace("/ABS", str(tmp_path / "abs"))       # an absolute name replaced the output root
    p = profile(tmp_path, [PREP])
    for extra in ([], ["--print_run_dir"], ["--list"]):
        assert run_all.main(["--profile", p, "--run_name", name, *extra]) == 1
        out, err = capsys.readouterr()
        assert out == "" and f"run_name {name!r}" in err and "[A-Za-z0-9._-]+" in err
    assert sorted(x.name for x in tmp_path.iterdir()) == ["p.yaml"]          # nothing made


def test_bad_run_name_in_the_profile_and_bad_step_name(tmp_path, capsys):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"run_name": ".", "output_root": str(tmp_path / "out"), "steps": [PREP]}))
    assert run_all.main(["--profile", str(path), "--print_run_dir"]) == 1
    assert "run_name '.'" in capsys.readouterr().err
    p = profile(tmp_path, [dict(PREP, name="../x")])
    assert run_all.main(["--profile", p, "--list"]) == 1
    assert "step name '../x'" in capsys.readouterr().err


def test_run_folder_resolving_outside_the_root_is_refused(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "r").symlink_to(tmp_path / "elsewhere")
    p = profile(tmp_path, [PREP])
    assert run_all.main(["--profile", p, "--print_run_dir"]) == 1
    assert "outside the output root" in capsys.readouterr().err


def test_continue_command_is_shell_quoted():
    import shlex
    cmd = run_all.continue_command("my profiles/p $HOME.yaml", "train_kd", "r-1", "1h 30m")
    assert shlex.split(cmd) == ["python", "run_all.py", "--profile", "my profiles/p $HOME.yaml", "--from",
                                "train_kd", "--run_name", "r-1", "--time_budget", "1h 30m"]
    assert run_all.continue_command("demo", "mine", "r", None) == "python run_all.py --profile demo --from mine --run_name r"


def test_make_clean_run_refuses_a_folder_without_manifest(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    p = profile(tmp_path, [PREP])
    run_dir = tmp_path / "out" / "r"
    (run_dir / "data").mkdir(parents=True)
    make = ["make", "-s", "-C", str(run_all.ROOT), "-o", ".venv/.installed", "clean-run", f"PROFILE={p}",
            f"BIN={Path(sys.executable).parent}"]
    r = subprocess.run(make, capture_output=True, text=True)
    assert r.returncode != 0 and "no manifest.json" in r.stderr and (run_dir / "data").is_dir()
    (run_dir / "manifest.json").write_text("{}")
    r = subprocess.run(make, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not run_dir.exists() and (tmp_path / "out").is_dir()


# ------------------------------------------------ --from continues only a chain whose earlier steps are done
@pytest.mark.parametrize("earlier", [{"prepare": {"status": "failed"}}, {"prepare": {"status": "running"}}, {}])
def test_from_refuses_when_an_earlier_step_is_not_done(tmp_path, capsys, earlier):
    """Issue 27, item 2: --from b after a failed (or killed: 'running') prepare ran b on stale data."""
    p = profile(tmp_path, [PREP, dict(PREP, name="b"), dict(PREP, name="c")])
    run_dir = tmp_path / "out" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps({"steps": earlier}))
    before = sorted(x.name for x in run_dir.iterdir())
    assert run_all.main(["--profile", p, "--from", "b"]) == 1
    err = capsys.readouterr().err
    status = earlier.get("prepare", {}).get("status", "not run")
    assert f"--from 'b': earlier step 'prepare' is {status}" in err and "--from prepare" in err
    assert sorted(x.name for x in run_dir.iterdir()) == before          # nothing run, nothing written
    # from a previous session's copy (--resume_dir): checked before anything is copied
    src = tmp_path / "session1" / "r"
    run_dir.rename(src.parent.mkdir() or src)
    assert run_all.main(["--profile", p, "--from", "b", "--resume_dir", str(src)]) == 1
    assert f"earlier step 'prepare' is {status}" in capsys.readouterr().err
    assert not run_dir.exists()


@pytest.mark.parametrize("raw,value", [("1e-4", 1e-4), ("2.0e-4", 2e-4), ("010", 10), ("0o10", 8), ("yes", "yes"),
                                       ("True", True), ("false", False), ("[1, 2]", [1, 2]), ("cuda:0", "cuda:0")])
def test_values_are_read_as_yaml_1_2(raw, value):
    got = run_all.load_value(raw)
    assert got == value and type(got) is type(value)


def test_values_are_checked_against_the_notebooks_types_before_anything_runs(tmp_path, capsys):
    p = profile(tmp_path, [PREP])
    assert run_all.main(["--profile", p, "--set", "seed=010", "--set", "test_fraction=1e-1", "--list"]) == 0
    out = capsys.readouterr().out
    assert '"seed": 10' in out and '"test_fraction": 0.1' in out
    assert run_all.main(["--profile", p, "--set", "seed=1.5"]) == 1
    err = capsys.readouterr().err
    assert "step 'prepare' (00_prepare_data): seed=1.5 is a number, but the notebook's seed is an integer" in err
    assert not (tmp_path / "out").exists()                     # nothing ran, nothing written
    path = tmp_path / "typed.yaml"                              # the profile file reads the same way
    path.write_text(f"run_name: r\noutput_root: {tmp_path / 'o'}\nsteps:\n  - name: prepare\n"
                    "    notebook: 00_prepare_data\n    parameters:\n      split: yes\n")
    assert run_all.main(["--profile", str(path), "--list"]) == 0      # 'yes' is the string yes (then refused by the stage)
    path.write_text(path.read_text().replace("split: yes", "test_fraction: '0.2'"))
    assert run_all.main(["--profile", str(path), "--list"]) == 1
    assert "test_fraction='0.2' is a string, but the notebook's test_fraction is a number" in capsys.readouterr().err


def test_resume_dir_copies_only_under_the_run_lock(tmp_path, capsys):
    """Issue 27, item 9: two sessions copying into one run folder at once mixed their files."""
    p = profile(tmp_path, [PREP, dict(PREP, name="b")])
    src = tmp_path / "session1" / "r"
    src.mkdir(parents=True)
    (src / "manifest.json").write_text(json.dumps({"steps": {"prepare": {"status": "done"}}}))
    (src / "data.txt").write_text("x")
    run_dir = tmp_path / "out" / "r"
    run_dir.mkdir(parents=True)
    with open(run_dir / ".run_all.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert run_all.main(["--profile", p, "--from", "b", "--resume_dir", str(src)]) == 1
    assert "another run_all.py is already running" in capsys.readouterr().err
    assert sorted(x.name for x in run_dir.iterdir()) == [".run_all.lock"]      # nothing copied


def test_a_stopped_run_all_ends_every_process_it_started(tmp_path):
    """Issue 27, item 9: a killed kernel left its torchrun workers writing; the tree is listed first,
    so a grandchild that outlives its parent is still reached."""
    import subprocess
    import sys
    import time
    script = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
              "start_new_session=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", script])
    for _ in range(100):                      # the grandchild is up
        if len(run_all.descendants(child.pid)) == 1:
            break
        time.sleep(0.1)
    tree = [child.pid] + run_all.descendants(child.pid)
    assert len(tree) == 2
    ended = run_all.end_descendants(grace=5)
    assert set(tree) <= set(ended)
    child.wait(timeout=10)
    for _ in range(50):
        if not any(os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
                   for p in tree):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("a process of the tree is still running")


def test_vars_may_name_the_run_folder_and_the_output_root(tmp_path, capsys):
    """configs/eedi_cpu.yaml's teacher lives in another run folder under the same output root."""
    path = tmp_path / "v.yaml"
    path.write_text(yaml.safe_dump({"run_name": "r", "output_root": str(tmp_path / "out"),
                                    "vars": {"teacher": "{output_root}/t/teacher", "mine": "{run_dir}/mine"},
                                    "steps": [dict(PREP, parameters={"output_dir": "{teacher}|{mine}"})]}))
    assert run_all.main(["--profile", str(path), "--list"]) == 0
    assert f'{tmp_path / "out" / "t" / "teacher"}|{tmp_path / "out" / "r" / "mine"}' in capsys.readouterr().out
    assert run_all.main(["--profile", str(path), "--list", "--var", "teacher={run_dir}/x"]) == 0
    assert f'{tmp_path / "out" / "r" / "x"}|' in capsys.readouterr().out


def test_a_script_step_of_the_package_runs_as_a_module_and_is_checked(tmp_path, capsys):
    """check_teacher in configs/eedi_cpu.yaml: helpers/eval/rerank_eval.py, its flags checked before anything runs."""
    assert run_all.script_module("helpers/eval/rerank_eval.py") == "helpers.eval.rerank_eval"
    assert run_all.script_module("bench/st_mnrl.py") is None
    step = {"name": "check", "script": "helpers/eval/rerank_eval.py", "parameters": {"top_kk": 3}}
    assert run_all.main(["--profile", profile(tmp_path, [step]), "--list"]) == 1
    assert "unknown parameter(s) top_kk" in capsys.readouterr().err
    step["parameters"] = {"rankings_file": "nope.jsonl"}
    assert run_all.main(["--profile", profile(tmp_path, [step])]) == 1     # runs, and its error stops the chain
    assert "step 'check' failed: helpers/eval/rerank_eval.py exited with" in capsys.readouterr().err


def test_requires_names_what_is_missing_and_how_to_make_it_before_anything_runs(tmp_path, capsys):
    """configs/eedi_cpu.yaml needs the teacher profile's folder: said before the first step, not after round 1."""
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump({"run_name": "r", "output_root": str(tmp_path / "out"),
                                    "vars": {"teacher": "{output_root}/t/teacher", "data_dir": "D"},
                                    "requires": {"{teacher}": "python run_all.py --profile t.yaml --var data_dir={data_dir}"},
                                    "steps": [PREP]}))
    assert run_all.main(["--profile", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'out' / 't' / 'teacher'}: missing; make it with: python run_all.py --profile t.yaml --var data_dir=D" in err
    assert not (tmp_path / "out" / "r").exists()                          # nothing ran, nothing made
    (tmp_path / "out" / "t" / "teacher").mkdir(parents=True)
    run_all.check_requires({"{teacher}": "x"}, {"teacher": str(tmp_path / "out" / "t" / "teacher")})   # there: fine
    with pytest.raises(run_all.ChainError, match="expected a mapping"):
        run_all.check_requires(["{teacher}"], {})
