"""helpers.notebook.setup: the notebooks' first cell finds the project, works from its root and
refuses to run one checkout's notebooks with another checkout's code."""
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import helpers
from helpers import notebook as nbsetup

REPO = Path(__file__).resolve().parents[2]


def _checkout(path: Path) -> Path:
    (path / "helpers").mkdir(parents=True)
    (path / "helpers" / "__init__.py").write_text("")
    (path / "notebooks").mkdir()
    return path


def test_root_is_the_imported_checkout_from_its_notebooks_folder():
    assert nbsetup.project_root(REPO / "notebooks") == REPO
    assert nbsetup.project_root(REPO) == REPO


def test_another_checkout_is_refused_with_both_paths(tmp_path):
    other = _checkout(tmp_path / "other")
    with pytest.raises(RuntimeError) as e:
        nbsetup.project_root(other / "notebooks")
    assert str(other) in str(e.value) and str(REPO) in str(e.value) and "pip install -e" in str(e.value)


def test_a_plain_install_uses_the_checkout_around_the_notebook(tmp_path, monkeypatch):
    site = tmp_path / "site-packages" / "helpers"
    site.mkdir(parents=True)
    monkeypatch.setattr(helpers, "__file__", str(site / "__init__.py"))       # pip install . (no notebooks/ there)
    mine = _checkout(tmp_path / "mine")
    assert nbsetup.project_root(mine / "notebooks") == mine
    monkeypatch.setattr(nbsetup, "KAGGLE_CODE", tmp_path / "no-kaggle")
    with pytest.raises(RuntimeError, match="cannot find the project folder"):
        nbsetup.project_root(tmp_path)


def test_kaggle_copy_is_found_from_anywhere(tmp_path, monkeypatch):
    site = tmp_path / "site" / "helpers"
    site.mkdir(parents=True)
    monkeypatch.setattr(helpers, "__file__", str(site / "__init__.py"))
    monkeypatch.setattr(nbsetup, "KAGGLE_CODE", _checkout(tmp_path / "kaggle" / "working" / "code"))
    assert nbsetup.project_root(tmp_path / "site") == nbsetup.KAGGLE_CODE


def test_setup_works_from_the_root(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO / "notebooks")
    assert nbsetup.setup(install=False) == REPO
    assert Path.cwd() == REPO and str(REPO) in sys.path


def test_the_first_cell_without_an_install_finds_the_checkout_and_loads_no_torch():
    """The cell as written, in a fresh interpreter that cannot import helpers (site-packages on
    the path, its .pth files, the editable install among them, not processed), from notebooks/."""
    cell = "".join(next(c for c in json.load(open(REPO / "notebooks" / "03_kd_finetune.ipynb"))["cells"]
                        if c["cell_type"] == "code")["source"])
    code = (f"import sys; sys.path.append({sysconfig.get_paths()['purelib']!r})\n"
            "import importlib.util; assert importlib.util.find_spec('helpers') is None, 'helpers importable'\n"
            f"{cell}\nimport os; print(ROOT, os.getcwd(), 'torch' in sys.modules, 'transformers' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=REPO / "notebooks", env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(REPO), str(REPO), "False", "False"]
