"""run_all.py: profile checks, overrides, step selection, failure reporting, manifest, lock."""
import fcntl
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
