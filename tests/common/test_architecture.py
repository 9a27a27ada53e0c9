"""The tree is the pipeline: every module lives in its stage's package, imports flow one way,
and the tests mirror the package."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HELPERS = REPO / "helpers"
# a package may import only from packages on its left; demo sits beside the stages (nothing imports it)
ORDER = ["common", "kaggle", "data", "embed", "rerank", "eval", "mine", "train"]
SIDE = ["demo"]
TOP = {"__init__.py", "notebook.py"}      # notebook.py: the notebooks layer (imports any stage; nothing imports it)


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.level:
                yield "<relative>"
            elif node.module.startswith("helpers."):
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("helpers."))


def allowed(src: str, dst: str) -> bool:
    if src == dst:
        return True
    if src in SIDE:
        return dst in ORDER
    return dst in ORDER and src in ORDER and ORDER.index(dst) < ORDER.index(src)


def test_layer_rule():
    assert allowed("train", "common") and allowed("eval", "rerank") and allowed("demo", "data")
    assert not allowed("common", "data") and not allowed("embed", "train") and not allowed("data", "demo")
    assert not allowed("train", "demo") and allowed("mine", "kaggle") and not allowed("kaggle", "data")


def test_every_module_is_in_a_stage_package_and_imports_flow_one_way():
    packages = sorted(p.name for p in HELPERS.iterdir() if (p / "__init__.py").is_file())
    assert packages == sorted(ORDER + SIDE)
    bad = []
    for path in sorted(HELPERS.rglob("*.py")):
        rel = path.relative_to(HELPERS)
        if len(rel.parts) == 1:
            assert rel.name in TOP, f"{rel}: a module outside the stage packages"
            if rel.name == "notebook.py":
                bad += [f"{rel} imports {m}" for m in _imports(path) if m == "<relative>" or m.split(".")[1] in SIDE]
            continue
        src = rel.parts[0]
        for mod in _imports(path):
            if mod == "<relative>":
                bad.append(f"{rel}: relative import (write helpers.<package>.<module>)")
            elif mod == "helpers.notebook":
                bad.append(f"{rel} imports helpers.notebook (the notebooks' layer: stages never import it)")
            elif not allowed(src, mod.split(".")[1]):
                bad.append(f"{rel} imports {mod}")
    assert bad == [], "imports against the flow common -> kaggle -> data -> embed -> rerank -> eval -> mine -> train:\n" + "\n".join(bad)


def test_tests_mirror_the_package():
    dirs = sorted(p.name for p in (REPO / "tests").iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    assert set(dirs) - {"pipeline", "fixtures"} <= set(ORDER + SIDE), dirs     # fixtures: shared builders, no tests
    assert not list((REPO / "tests" / "fixtures").glob("test_*.py")), "tests/fixtures holds no tests"
    assert not list((REPO / "tests").glob("test_*.py")), "tests live beside their package's folder"


def test_tiny_model_configs_are_written_once():
    """Tiny random models come from tests/fixtures/models.py (builders with overrides), not from a
    config written out again in a test file."""
    import re
    pattern = re.compile(r"\b\w*Config\((?:[^()]|\([^()]*\))*\bhidden_size=", re.S)
    found = [str(p.relative_to(REPO)) for p in sorted((REPO / "tests").rglob("*.py"))
             if "fixtures" not in p.relative_to(REPO).parts and pattern.search(p.read_text())]
    assert found == [], f"tiny model configs outside tests/fixtures/models.py: {found}"


def test_one_entry_point_shape_for_every_stage_command():
    """``main(argv=None)`` and ``run(main)``: bad input is one ``error:`` line and exit code 2 everywhere."""
    commands = [p for p in HELPERS.rglob("*.py") if len(p.relative_to(HELPERS).parts) > 1
                and 'if __name__ == "__main__":' in p.read_text()]
    assert len(commands) >= 9
    for path in commands:
        text = path.read_text()
        tail = text.split('if __name__ == "__main__":', 1)[1]
        assert tail.split() == ["from", "helpers.common.cli", "import", "run", "run(main)"], path
        assert "def main(argv=None)" in text, path


def test_one_implementation_of_atomic_writes_padding_and_the_embedding_forward():
    """Atomic renames live in io_utils, padding in common.tensors, the embedding forward in
    embed.forward.pooled_embeddings (and its shared-prefix variant, embed.prefix, which it calls):
    a second copy is how training and inference came to differ."""
    rules = {"os.replace(": {"common/io_utils.py"}, "torch.full((len(": {"common/tensors.py"},
             "last_hidden_state": {"embed/forward.py", "embed/prefix.py", "rerank/reranker.py", "rerank/paths.py",
                                   "train/train_reranker.py"}}
    for needle, allowed_in in rules.items():
        found = {str(p.relative_to(HELPERS)) for p in HELPERS.rglob("*.py") if needle in p.read_text()}
        assert found <= allowed_in, f"{needle!r} outside {sorted(allowed_in)}: {sorted(found - allowed_in)}"


STAGE_ARGS = ["helpers.data.prepare_data:PrepareArgs", "helpers.mine.hn_mine:HnMineArgs",
              "helpers.rerank.add_reranker_score:ScoreArgs", "helpers.train.kd_finetune:KDArgs",
              "helpers.train.train_reranker:RerankerTrainArgs", "helpers.eval.evaluate:EvalArgs",
              "helpers.eval.rerank_eval:RerankEvalArgs", "helpers.eval.submission:SubmissionArgs",
              "helpers.demo.generate:DemoDataArguments"]


@pytest.mark.parametrize("spec", STAGE_ARGS)
def test_one_field_style_for_stage_arguments(spec):
    """Every stage argument is ``field(default=..., metadata={"help": ...})``: --help explains it."""
    import dataclasses
    import importlib
    module, name = spec.split(":")
    cls = getattr(importlib.import_module(module), name)
    missing = [f.name for f in dataclasses.fields(cls) if not str(f.metadata.get("help", "")).strip()]
    assert missing == [], f"{name}: fields without help text: {missing}"
