"""What each notebook's ``parameters`` cell holds, and the check of a cell against it.

:data:`NOTEBOOKS` declares, in one place, what each notebook's ``parameters`` cell holds: the stage
dataclass(es) it builds, the parameters that set a field under another name, the fields the
notebook sets itself, the path parameters (their value is the interactive demo's path, not the
stage default), the display-only names and the keyword arguments of helpers functions. The rule
(tests/pipeline/test_notebook_parameters.py, :func:`check_notebook`): every cell name is one of
these; a field's value in the cell is the dataclass default (paths excepted); every field a user
may set is in the cell. One parameter set per stage, written once: in the dataclass.

The runtime builds a stage's arguments from the cell with ``helpers.common.notebook.args_from``;
this declaration and its checker are test code (they import every stage, which the bottom layer
``helpers.common`` must not).
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping

from helpers.common.cli import FLAG_SPELLINGS, canonical_flags


# ----------------------------------------------------------------------------- the declarations
@dataclass(frozen=True)
class NotebookParameters:
    """What one notebook's ``parameters`` cell holds (see the module docstring)."""
    stages: tuple = ()                                    # dataclasses built from the cell, by dotted name
    renamed: Mapping[str, str] = field(default_factory=dict)          # cell name -> the field it sets
    set_by_notebook: frozenset = frozenset()              # fields not in the cell: the notebook sets them
                                                          # (from other parameters) or its call does not use them
    paths: frozenset = frozenset()                        # file / folder / model parameters (demo values)
    display: frozenset = frozenset()                      # names that only change what is shown
    function_args: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # function -> {cell name: keyword}

    def classes(self) -> list:
        out = []
        for dotted in self.stages:
            mod, name = dotted.rsplit(".", 1)
            out.append(getattr(importlib.import_module(mod), name))
        return out


def _f(**names):
    """``{cell name: keyword}``; an empty keyword: the same name."""
    return {k: (v or k) for k, v in names.items()}


NOTEBOOKS: dict[str, NotebookParameters] = {
    "00_prepare_data": NotebookParameters(
        stages=("helpers.data.prepare_data.PrepareArgs",),
        paths=frozenset({"input_dir", "output_dir"}),
        display=frozenset({"show_queries"})),
    "01_mine_hn": NotebookParameters(
        stages=("helpers.mine.hn_mine.HnMineArgs",),
        renamed={"train_input_file": "input_file", "test_input_file": "input_file",
                 "train_output_file": "output_file", "test_output_file": "output_file",
                 "train_max_queries": "max_queries"},
        set_by_notebook=frozenset({"input_file", "output_file", "max_queries"}),
        paths=frozenset({"model_name_or_path", "base_model", "train_input_file", "test_input_file", "candidate_pool",
                         "train_output_file", "test_output_file", "examples_for_task"}),
        display=frozenset({"show_rows"})),
    "02_reranker_score": NotebookParameters(
        stages=("helpers.rerank.add_reranker_score.ScoreArgs",),
        renamed={"train_input_file": "input_file", "test_input_file": "input_file",
                 "train_output_file": "output_file", "test_output_file": "output_file"},
        set_by_notebook=frozenset({"input_file", "output_file"}),
        paths=frozenset({"reranker_name_or_path", "peft_adapter", "train_input_file", "test_input_file",
                         "train_output_file", "test_output_file"}),
        display=frozenset({"show_rows", "show_suspects"})),
    "02a_train_reranker": NotebookParameters(
        stages=("helpers.train.train_reranker.RerankerTrainArgs", "helpers.eval.rerank_eval.RerankEvalArgs"),
        # rerank_eval: the trained model (reranker_name_or_path, peft_adapter) and its lengths (max_len,
        # query_max_len) come from the training; it writes output_dir/rerank_eval.json; the order, not
        # the scores, is what it reports (normalize)
        set_by_notebook=frozenset({"reranker_name_or_path", "peft_adapter", "reranker_max_length",
                                   "reranker_query_max_length", "output_file", "normalize"}),
        paths=frozenset({"model_name_or_path", "train_data", "eval_data", "output_dir", "rankings_file",
                         "queries_file", "corpus_file"})),
    "03_kd_finetune": NotebookParameters(
        stages=("helpers.train.kd_finetune.KDArgs",),
        set_by_notebook=frozenset({"embedding_cache"}),   # the model in training is never cached
        paths=frozenset({"train_data", "eval_data", "corpus_file", "output_dir", "model_name_or_path",
                         "base_model", "examples_for_task"})),
    "04_eval": NotebookParameters(
        stages=("helpers.eval.evaluate.EvalArgs", "helpers.eval.submission.SubmissionArgs"),
        renamed={"submission_file": "output_file"},
        # every model of models / epoch_glob (helpers.eval.compare.model_specs) brings its own
        set_by_notebook=frozenset({"model_name_or_path", "embedder_model_class", "label"}),
        paths=frozenset({"models", "epoch_glob", "queries_file", "corpus_file", "train_queries_file", "output_dir",
                         "examples_for_task", "base_model", "training_metrics_file", "teacher_scored_file",
                         "test_csv", "misconception_csv", "sample_submission", "submission_file"}),
        display=frozenset({"training_metrics_file", "teacher_scored_file", "teacher_label"}),
        function_args={
            "helpers.eval.compare.model_specs": _f(models="", epoch_glob="", epoch_model_class="default_class"),
            "helpers.eval.compare.evaluate_models": _f(
                queries_file="", corpus_file="", output_dir="", train_queries_file="", reuse_results="reuse_existing",
                reference_model="", n_resamples="", bootstrap_seed="", reranker="", rerank_models="",
                rerank_sweep_top_k="", rerank_sweep_alpha=""),
            "helpers.eval.submission.submission_spec": _f(submission_model="label"),
            "helpers.eval.submission.submit_with": _f(test_csv="", submission_file="output_file",
                                                      misconception_csv="", sample_submission="")}),
    "05_submit": NotebookParameters(
        stages=("helpers.eval.submission.SubmissionArgs",),
        renamed={"submission_file": "output_file"},
        paths=frozenset({"model_name_or_path", "base_model", "examples_for_task", "test_csv", "misconception_csv",
                         "sample_submission", "submission_file"}),
        display=frozenset({"show_rows"})),
}


# ----------------------------------------------------------------------------- reading and checking a cell
def parameters_source(notebook) -> str:
    """The source of the notebook's cell tagged ``parameters`` (a path or the notebook's JSON dict)."""
    nb = notebook if isinstance(notebook, dict) else json.loads(Path(notebook).read_text(encoding="utf-8"))
    for c in nb["cells"]:
        if c["cell_type"] == "code" and "parameters" in c.get("metadata", {}).get("tags", []):
            return "".join(c["source"])
    raise ValueError("no cell tagged 'parameters'")


def cell_values(notebook) -> dict:
    """``{name: value}`` of the parameters cell's assignments (values are Python literals)."""
    out = {}
    for node in ast.parse(parameters_source(notebook)).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ValueError(f"parameters cell, line {node.lineno}: only `name = literal` lines belong here")
        try:
            out[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            raise ValueError(f"parameters cell, line {node.lineno}: {node.targets[0].id} is not a literal") from None
    return out


def _default(f):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _resolve(dotted: str):
    mod, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(mod), name)


def check_notebook(notebook, spec: NotebookParameters) -> list[str]:
    """Problems of a notebook's parameters cell against its declaration (empty: none)."""
    raw = cell_values(notebook)
    problems = [f"{name}: another spelling of {FLAG_SPELLINGS[name]!r}; the cell uses ours"
                for name in raw if name in FLAG_SPELLINGS]
    values = canonical_flags(raw)
    classes = spec.classes()
    by_field = {}                                   # field -> [(class, Field)]
    for cls in classes:
        for f in fields(cls):
            by_field.setdefault(f.name, []).append((cls, f))
    fargs = {}                                      # cell name -> [(function, keyword)]
    for dotted, names in spec.function_args.items():
        fn = _resolve(dotted)
        sig = inspect.signature(fn).parameters
        for name, kw in names.items():
            if kw not in sig:
                problems.append(f"{name}: {dotted} has no keyword {kw!r}")
            else:
                fargs.setdefault(name, []).append((dotted, sig[kw]))
    for name in sorted(set(spec.renamed) | spec.paths | spec.display | set(fargs)):
        if name not in values:
            problems.append(f"{name}: declared but not a parameter of the cell")
    for name in sorted(spec.renamed):
        if spec.renamed[name] not in by_field:
            problems.append(f"{name}: renamed to {spec.renamed[name]!r}, which is no field of {spec.stages}")
    for name in sorted(spec.set_by_notebook):
        if name not in by_field:
            problems.append(f"{name}: declared set by the notebook but no field of {spec.stages}")
        elif name in values:
            problems.append(f"{name}: declared set by the notebook but also a parameter of the cell")
    for name, value in values.items():
        targets = by_field.get(name) or by_field.get(spec.renamed.get(name), [])
        if not targets and name not in fargs and name not in spec.display:
            problems.append(f"{name}: neither a field of {', '.join(c.__name__ for c in classes)}, nor a declared "
                            f"keyword of a helpers function, nor a declared display-only name")
            continue
        if name in spec.paths or name in spec.display:
            continue
        for cls, f in targets:
            d = _default(f)
            if d is dataclasses.MISSING:
                problems.append(f"{name}: {cls.__name__}.{f.name} has no default; declare {name} a path "
                                f"parameter or set it in the notebook")
            elif value != d or type(value) is not type(d) and not (isinstance(d, float) and isinstance(value, int)):
                problems.append(f"{name} = {value!r} in the cell, but {cls.__name__}.{f.name} defaults to {d!r}")
        for dotted, p in fargs.get(name, []):
            if p.default is not inspect.Parameter.empty and value != p.default:
                problems.append(f"{name} = {value!r} in the cell, but {dotted}({p.name}=...) defaults to "
                                f"{p.default!r}")
    renamed_to = set(spec.renamed.values())
    for fname, owners in by_field.items():
        if fname not in values and fname not in renamed_to and fname not in spec.set_by_notebook:
            problems.append(f"{fname}: a field of {', '.join(c.__name__ for c, _ in owners)} missing from the cell "
                            f"(add it with its default, or declare it set by the notebook)")
    return problems
