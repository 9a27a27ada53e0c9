"""One parameter set per stage, written once: each notebook's parameters cell is its stage
dataclass(es), by field name and with the dataclass defaults (paths excepted), as declared in
tests/pipeline/notebook_spec.NOTEBOOKS; the notebook builds its Args from the cell by field name."""
import copy
import json
import re

import pytest

from tests.conftest import REPO
from tests.pipeline.notebook_spec import (NOTEBOOKS, NotebookParameters, cell_values, check_notebook,
                                         parameters_source)

NB = {p.stem: p for p in (REPO / "notebooks").glob("*.ipynb")}


def test_every_notebook_is_declared():
    assert set(NOTEBOOKS) == set(NB)


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_parameters_cell_is_the_stage_dataclass(name):
    problems = check_notebook(NB[name], NOTEBOOKS[name])
    assert problems == [], f"{name}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_the_notebook_builds_its_stage_args_from_the_cell_by_field_name(name):
    cells = json.loads(NB[name].read_text(encoding="utf-8"))["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code"
                     and "parameters" not in c.get("metadata", {}).get("tags", []))
    for dotted in NOTEBOOKS[name].stages:
        cls = dotted.rsplit(".", 1)[1]
        assert re.search(rf"\b(args_from|field_values)\(\s*{cls}\b", code), f"{name}: {cls} not built by args_from"
        assert not re.search(rf"\b{cls}\(", code), f"{name}: {cls}(...) built by keywords"


def _with_cell(tmp_path, name, edit):
    nb = json.loads(NB[name].read_text(encoding="utf-8"))
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    src = "".join(cell["source"])
    src = edit(src if src.endswith("\n") else src + "\n")
    cell["source"] = src.splitlines(keepends=True)
    path = tmp_path / f"{name}.ipynb"
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


def test_a_bad_cell_fails_the_check(tmp_path):
    def edit(src):
        src = re.sub(r"^num_train_epochs = 5 ", "num_train_epochs = 2 ", src, flags=re.M)    # not the KDArgs default
        src = re.sub(r"^lora_rank = .*\n", "", src, flags=re.M)                               # a field left out
        src = re.sub(r"^output_dir = .*\n", 'output_dir = "elsewhere"\n', src, flags=re.M)   # a path: any value
        return src + "bogus_knob = 3                # no field, no function argument\n"
    problems = check_notebook(_with_cell(tmp_path, "03_kd_finetune", edit), NOTEBOOKS["03_kd_finetune"])
    assert len(problems) == 3, problems
    assert any(p.startswith("num_train_epochs = 2 in the cell, but KDArgs.num_train_epochs defaults to 5") for p in problems)
    assert any(p.startswith("lora_rank: a field of KDArgs missing from the cell") for p in problems)
    assert any(p.startswith("bogus_knob: neither a field of KDArgs") for p in problems)


def test_a_bad_declaration_fails_the_check(tmp_path):
    spec = NOTEBOOKS["04_eval"]
    bad = NotebookParameters(
        stages=spec.stages, renamed={**spec.renamed, "gone": "output_file"}, set_by_notebook=spec.set_by_notebook,
        paths=spec.paths - {"epoch_glob"}, display=spec.display - {"teacher_label"},
        function_args={**spec.function_args, "helpers.eval.compare.model_specs": {"models": "models",
                                                                                  "epoch_glob": "no_such_keyword"}})
    problems = "\n".join(check_notebook(NB["04_eval"], bad))
    assert "gone: declared but not a parameter of the cell" in problems
    assert "epoch_glob: helpers.eval.compare.model_specs has no keyword 'no_such_keyword'" in problems
    assert "teacher_label: neither a field" in problems                       # no longer display-only
    assert "epoch_model_class: neither a field" in problems                   # no longer a function argument


def test_a_function_argument_keeps_the_functions_default(tmp_path):
    path = _with_cell(tmp_path, "04_eval", lambda s: s.replace("n_resamples = 1000 ", "n_resamples = 200  "))
    assert check_notebook(path, NOTEBOOKS["04_eval"]) == [
        "n_resamples = 200 in the cell, but helpers.eval.compare.evaluate_models(n_resamples=...) defaults to 1000"]


def test_cell_values_reads_literals_only(tmp_path):
    assert cell_values(NB["00_prepare_data"])["test_fraction"] == 0.2
    path = _with_cell(tmp_path, "00_prepare_data", lambda s: s + "seed = int(42)\n")
    with pytest.raises(ValueError, match="seed is not a literal"):
        cell_values(path)
    nb = copy.deepcopy(json.loads(NB["00_prepare_data"].read_text()))
    nb["cells"] = [c for c in nb["cells"] if "parameters" not in c.get("metadata", {}).get("tags", [])]
    with pytest.raises(ValueError, match="no cell tagged"):
        parameters_source(nb)


def test_a_cell_uses_our_spelling_of_a_flag(tmp_path):
    """FlagEmbedding's names are accepted from profiles and commands, not written in a cell."""
    def edit(src):
        return re.sub(r"^use_fp16 = True", "fp16 = True", src, flags=re.M)
    problems = check_notebook(_with_cell(tmp_path, "03_kd_finetune", edit), NOTEBOOKS["03_kd_finetune"])
    assert problems == ["fp16: another spelling of 'use_fp16'; the cell uses ours"], problems
