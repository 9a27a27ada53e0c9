#!/usr/bin/env python
"""Did a change to the notebooks' parameters cells change what any run does? Committed vs working tree.

    python tools/check_effective_parameters.py            # against HEAD
    python tools/check_effective_parameters.py --rev REV  # against another commit

For every step of every profile (configs/*.yaml, YAML anchors and vars resolved), every test that
executes a notebook with papermill (``pm.execute_notebook(..., parameters=dict(...))``) and every
test that runs a profile through ``run_all.main`` with ``--set`` overrides, it computes the value
each stage field runs with: the dataclass default, overlaid by the notebook's parameters cell,
overlaid by the step's (test's) parameters; and the same for every other cell name (renamed fields
such as ``train_input_file``, keyword arguments of helpers functions, display names). It does so
twice, with the notebooks, dataclasses, profiles and tests of ``REV`` and of the working tree, and
prints every difference. Exit code 1 when there is one.

Which dataclasses a notebook builds comes from ``helpers.common.notebook.NOTEBOOKS`` (the working
tree's). The overlay is what ``args_from`` does; where a notebook or dataclass computes a field
from another value, :data:`DERIVED` and :func:`resolved` say so (both versions).
"""
from __future__ import annotations

import argparse
import ast
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from helpers.common.cli import FLAG_SPELLINGS, canonical_flags  # noqa: E402
from helpers.common.notebook import NOTEBOOKS, cell_values  # noqa: E402
from helpers.common.prompts import (ICL_EXAMPLE_FORMAT, ICL_SUFFIX, QUERY_TEMPLATE, RETRIEVAL_INSTRUCTION,  # noqa: E402
                                    unescape)

# fields a notebook sets from another parameter: {notebook: {"Class.field": "Class.field" it copies}}
DERIVED = {"rev": {"02a_train_reranker": {"RerankEvalArgs.reranker_max_length": "RerankerTrainArgs.max_len"}},
           "work": {"02a_train_reranker": {"RerankEvalArgs.reranker_max_length": "RerankerTrainArgs.max_len",
                                           "RerankEvalArgs.reranker_query_max_length": "RerankerTrainArgs.query_max_len"}}}
# None or empty means the built-in text (00 did `or` in the notebook; the dataclasses now do it themselves)
BUILT_IN = {("PrepareArgs", "query_template"): QUERY_TEMPLATE, ("PrepareArgs", "query_instruction"): RETRIEVAL_INSTRUCTION,
            ("SubmissionArgs", "query_template"): QUERY_TEMPLATE,
            ("SubmissionArgs", "query_instruction"): RETRIEVAL_INSTRUCTION}

_DEFAULTS_CODE = r"""
import dataclasses, importlib, json, sys
out = {}
for dotted in sys.argv[1:]:
    mod, name = dotted.rsplit(".", 1)
    cls = getattr(importlib.import_module(mod), name)
    out[dotted] = {f.name: repr(f.default) if f.default is not dataclasses.MISSING else
                   repr(f.default_factory()) if f.default_factory is not dataclasses.MISSING else "<required>"
                   for f in dataclasses.fields(cls)}
print(json.dumps(out))
"""


def git(*args) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


class Version:
    """The files of one version: ``rev`` (a commit, read with git show / git archive) or the working tree."""

    def __init__(self, rev: str | None, tmp: Path):
        self.rev, self.name = rev, ("rev" if rev else "work")
        self.root = ROOT
        if rev:
            self.root = tmp / "rev"
            self.root.mkdir()
            data = subprocess.run(["git", "archive", rev, "helpers"], cwd=ROOT, capture_output=True, check=True).stdout
            with tarfile.open(fileobj=io.BytesIO(data)) as t:
                t.extractall(self.root, filter="data")
        dotted = sorted({d for spec in NOTEBOOKS.values() for d in spec.stages})
        res = subprocess.run([sys.executable, "-c", _DEFAULTS_CODE, *dotted], cwd=self.root, capture_output=True,
                             text=True, env={"PYTHONPATH": str(self.root), "PATH": "/usr/bin:/bin"})
        if res.returncode:
            raise SystemExit(f"reading the dataclass defaults of {rev or 'the working tree'} failed:\n{res.stderr}")
        self.defaults = json.loads(res.stdout)

    def text(self, rel: str) -> str | None:
        if not self.rev:
            p = ROOT / rel
            return p.read_text(encoding="utf-8") if p.exists() else None
        try:
            return git("show", f"{self.rev}:{rel}")
        except subprocess.CalledProcessError:
            return None

    def cell(self, notebook: str) -> dict:
        return canonical_flags(cell_values(json.loads(self.text(f"notebooks/{notebook}.ipynb"))))

    def paths(self, pattern: str) -> list[str]:
        if not self.rev:
            return sorted(str(p.relative_to(ROOT)) for p in ROOT.glob(pattern))
        return sorted(p for p in git("ls-tree", "-r", "--name-only", self.rev).splitlines()
                      if Path(p).match(pattern))


# fields renamed without a FLAG_SPELLINGS entry (a name too generic to map everywhere): {"Class.old": "new"}
RENAMED = {"HnMineArgs.batch_size": "embedder_batch_size", "KDArgs.eval_batch_size": "embedder_batch_size"}
# fields that joined a dataclass with the embedder block (helpers.embed.args), and the value the
# stage used before, implicitly (absent before and this value now: the same run)
IMPLICIT = {**{f"{c}.icl_suffix_str": ICL_SUFFIX for c in ("HnMineArgs", "EvalArgs", "SubmissionArgs")},
            **{f"{c}.base_model": None for c in ("HnMineArgs", "KDArgs")},
            **{f"{c}.examples_instruction_format": ICL_EXAMPLE_FORMAT for c in ("KDArgs", "EvalArgs", "SubmissionArgs")},
            "KDArgs.normalize_embeddings": True}
FORMATS = {"query_instruction_format", "examples_instruction_format", "icl_suffix_str"}   # literal \n = newline


def resolved(cls_name: str, field: str, value):
    built_in = BUILT_IN.get((cls_name, field))
    if field in FORMATS and isinstance(value, str):
        value = unescape(value)
    return (value or built_in) if built_in is not None else value


def field_name(cls_name: str, f: str) -> str:
    """Today's name of a field of either version."""
    return RENAMED.get(f"{cls_name}.{f}", FLAG_SPELLINGS.get(f, f))


def effective(v: Version, notebook: str, params: dict) -> dict:
    """{"Class.field" or cell name: repr of the value the run uses}."""
    spec = NOTEBOOKS[notebook]
    cell, params = v.cell(notebook), canonical_flags(params)
    out, values = {}, {**cell, **params}
    for dotted in spec.stages:
        cls_name = dotted.rsplit(".", 1)[1]
        renamed_here = {old: new for old, new in ((k.split(".", 1)[1], n) for k, n in RENAMED.items()
                                                  if k.startswith(cls_name + ".")) if old in v.defaults[dotted]}
        vals = {renamed_here.get(k, k): x for k, x in values.items()}
        defaults = {field_name(cls_name, f): d for f, d in v.defaults[dotted].items()}
        if "add_examples_for_task" in defaults:        # before examples_for_task: a switch and a file
            add = vals.get("add_examples_for_task", ast.literal_eval(defaults.pop("add_examples_for_task")))
            ex = vals.pop("examples_file", ast.literal_eval(defaults.pop("examples_file")))
            vals.pop("add_examples_for_task", None)
            vals["examples_for_task"] = (ex or "<examples.json beside the input>") if add else None
            defaults["examples_for_task"] = "None"
        for f, d in defaults.items():
            value = vals[f] if f in vals else (ast.literal_eval(d) if d != "<required>" else d)
            out[f"{cls_name}.{f}"] = value
        values = {**values, **vals}
        for k in set(renamed_here) | {"add_examples_for_task", "examples_file"}:
            values.pop(k, None)
    for target, source in DERIVED[v.name].get(notebook, {}).items():
        out[target] = out[source]
    for key in list(out):
        cls_name, f = key.split(".", 1)
        out[key] = repr(resolved(cls_name, f, out[key]))
    for name in set(values) - {k.split(".", 1)[1] for k in out}:
        out[name] = repr(values[name])
    return out


# ----------------------------------------------------------------------------- the cases
def profile_steps(v: Version, rel: str, sets=()) -> list[tuple[str, str, dict]]:
    import yaml

    import run_all
    text = v.text(rel)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
    prof = run_all.read_yaml(Path(f.name))
    Path(f.name).unlink()
    ctx = {"run_dir": "{run_dir}", **(prof.get("vars") or {})}
    steps = [dict(s, parameters=canonical_flags(run_all.substitute(dict(s.get("parameters") or {}), ctx)))
             for s in prof["steps"]]
    if sets:
        declared = {s["name"]: v.cell(s["notebook"]) for s in steps}
        run_all.apply_overrides(steps, list(sets), declared)
    del yaml
    return [(s["name"], s["notebook"], s["parameters"]) for s in steps]


def _literal(node):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return "<expr " + ast.unparse(node) + ">"


def _text(node) -> str | None:
    """A str constant or an f-string (its fields as {expr})."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(p.value if isinstance(p, ast.Constant) else "{" + ast.unparse(p.value) + "}" for p in node.values)
    return None


def test_cases(v: Version) -> dict:
    """{case name: (notebook, parameters) or ("profile", profile, sets)} of the tests of version v."""
    cases = {}
    for rel in v.paths("tests/**/test_*.py"):
        tree = ast.parse(v.text(rel))
        for fn in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
            n_calls = 0
            for call in [n for n in ast.walk(fn) if isinstance(n, ast.Call)]:
                name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
                if name != "execute_notebook":
                    continue
                nb = next((seg.split("/")[-1][:-6] for seg in
                           [x.value for x in ast.walk(call.args[0]) if isinstance(x, ast.Constant)
                            and isinstance(x.value, str)] if seg.endswith(".ipynb")), None)
                kw = next((k.value for k in call.keywords if k.arg == "parameters"), None)
                if isinstance(kw, ast.Call):
                    params = {k.arg: _literal(k.value) for k in kw.keywords}
                elif isinstance(kw, ast.Dict):
                    params = {_literal(k): _literal(x) for k, x in zip(kw.keys, kw.values)}
                else:
                    params = {}
                n_calls += 1
                cases[f"{rel}::{fn.name}" + (f"#{n_calls}" if n_calls > 1 else "")] = (nb, params)
            sets, prof = None, None
            for node in ast.walk(fn):
                if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "sets" for t in node.targets) \
                        and isinstance(node.value, ast.List):
                    sets = [_text(e) for e in node.value.elts]
                if isinstance(node, ast.List):
                    items = [_text(e) for e in node.elts]
                    if "--profile" in items and items.index("--profile") + 1 < len(items):
                        prof = items[items.index("--profile") + 1]
            if sets is not None and prof and None not in sets:
                cases[f"{rel}::{fn.name}"] = ("profile", prof, sets)
    return cases


def profile_rel(name: str) -> str:
    return name if name.endswith(".yaml") else f"configs/{name}.yaml"


def compare(label: str, old: dict, new: dict) -> list[str]:
    old = {**{k: repr(x) for k, x in IMPLICIT.items() if k in new}, **old}
    return [f"{label}: {k}: {old.get(k, '<absent>')} -> {new.get(k, '<absent>')}"
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rev", default="HEAD", help="the committed version to compare with (default HEAD)")
    p.add_argument("--verbose", action="store_true", help="print every step's effective values")
    a = p.parse_args(argv)
    problems, n = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        old, new = Version(a.rev, Path(tmp)), Version(None, Path(tmp))

        def steps_of(label, steps_old, steps_new):
            nonlocal n
            if [s[:2] for s in steps_old] != [s[:2] for s in steps_new]:
                problems.append(f"{label}: the steps differ: {[s[:2] for s in steps_old]} -> {[s[:2] for s in steps_new]}")
                return
            for (name, nb, po), (_, _, pn) in zip(steps_old, steps_new):
                eo, en = effective(old, nb, po), effective(new, nb, pn)
                diff = compare(f"{label} step {name} ({nb})", eo, en)
                problems.extend(diff)
                n += 1
                print(f"{'DIFF' if diff else 'same'}  {label:44s} {name:16s} {nb:20s} {len(en):3d} values")
                if a.verbose:
                    for k in sorted(en):
                        print(f"        {k} = {en[k]}")

        for rel in sorted(set(old.paths("configs/*.yaml")) | set(new.paths("configs/*.yaml"))):
            if old.text(rel) is None or new.text(rel) is None:
                problems.append(f"{rel}: only in one version")
                continue
            steps_of(rel, profile_steps(old, rel), profile_steps(new, rel))
        co, cn = test_cases(old), test_cases(new)
        for case in sorted(set(co) | set(cn)):
            if case not in co or case not in cn:
                print(f"skip  {case}: only in {'the working tree' if case in cn else a.rev}")
                continue
            if co[case][0] == "profile":
                (_, po, so), (_, pn, sn) = co[case], cn[case]
                steps_of(case, profile_steps(old, profile_rel(po), so), profile_steps(new, profile_rel(pn), sn))
            else:
                (nb, po), (nb2, pn) = co[case], cn[case]
                if nb != nb2:
                    problems.append(f"{case}: notebook {nb} -> {nb2}")
                    continue
                steps_of(case, [("-", nb, po)], [("-", nb, pn)])
    print(f"\n{n} steps compared ({a.rev} vs the working tree): "
          + ("every effective value is the same" if not problems else f"{len(problems)} differences:"))
    for line in problems:
        print("  " + line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
