"""Safety: no remote code unless a parameter asks, safetensors only, no unpickling of untrusted
files, and no network connection from any stage (checked with the network blocked at the socket).
"""
import ast
import dataclasses
import importlib
import json
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import helpers
from tests.fixtures.sandbox import REPO, net_attempts, stage_env

SOURCES = sorted([*(REPO / "helpers").rglob("*.py"), REPO / "run_all.py", *(REPO / "tools").glob("*.py"),
                  *(REPO / "kaggle").glob("*.py"), *(REPO / "bench").glob("*.py")])


def calls(path: Path, name: str):
    """(line, source text) of every call whose function is ``...name``."""
    src = path.read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Call):
            f = node.func
            fname = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if fname == name:
                yield node, ast.get_source_segment(src, node)


# ----------------------------------------------------------------------------- remote code
def test_every_from_pretrained_passes_trust_remote_code_from_a_parameter_or_leaves_it_off():
    seen = 0
    for path in SOURCES:
        for node, text in calls(path, "from_pretrained"):
            seen += 1
            owner = ast.unparse(node.func.value) if isinstance(node.func, ast.Attribute) else ""
            kw = {k.arg: k.value for k in node.keywords}
            where = f"{path.relative_to(REPO)}:{node.lineno}: {text}"
            if owner.startswith("PeftModel"):          # adapters: weights only, peft runs no model code
                continue
            if None in kw:      # **kwargs: the embedder's dict (checked below and in the safetensors test),
                # or only the device placement (device_map) beside an explicit trust_remote_code parameter
                if ast.unparse(kw[None]).startswith("placement_kwargs(") and "trust_remote_code" in kw:
                    assert ast.unparse(kw["trust_remote_code"]) == "trust_remote_code", where
                    continue
                assert path.name == "loading.py", where
                continue
            if "trust_remote_code" in kw:
                v = kw["trust_remote_code"]
                assert not isinstance(v, ast.Constant) or v.value is False, where
                assert re.fullmatch(r"(args\.|self\.|config\.|a\.)?trust_remote_code", ast.unparse(v)), where
            else:   # the default (off); only the offline GGUF conversion of the demo packages
                assert path.name == "models.py" and "gguf_file" in kw, where
    assert seen >= 10


def test_no_trust_remote_code_true_anywhere():
    pattern = re.compile(r"trust_remote_code\W{0,4}(=|:)\s*(True|true|1)\b")
    files = SOURCES + sorted((REPO / "configs").glob("*.yaml")) + sorted((REPO / "notebooks").glob("*.ipynb"))
    hits = [f"{p.relative_to(REPO)}:{i}" for p in files
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_every_trust_remote_code_parameter_defaults_to_false():
    found = []
    for m in pkgutil.walk_packages(helpers.__path__, "helpers."):
        mod = importlib.import_module(m.name)
        for obj in vars(mod).values():
            if dataclasses.is_dataclass(obj) and isinstance(obj, type) and obj.__module__ == mod.__name__:
                for f in dataclasses.fields(obj):
                    if f.name == "trust_remote_code":
                        found.append(obj.__name__)
                        assert f.default is False, obj
    assert {"HnMineArgs", "ScoreArgs", "KDArgs", "EmbedderArgs", "TrainArgs"} <= set(found), found
    for nb in (REPO / "notebooks").glob("*.ipynb"):
        for cell in json.loads(nb.read_text())["cells"]:
            if "parameters" in cell.get("metadata", {}).get("tags", []):
                for line in "".join(cell["source"]).splitlines():
                    if line.startswith("trust_remote_code"):
                        assert line.split("=")[1].split("#")[0].strip() == "False", (nb.name, line)


@pytest.fixture
def evil_model(tmp_path):
    """A model folder whose config asks for custom code that leaves a mark when it runs."""
    from helpers.common.models import resolve_model
    d = tmp_path / "evil_model_for_test_safety"
    d.mkdir()
    src = Path(resolve_model("demo:all-minilm-l6-v2"))
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / f, d / f)
    (d / "config.json").write_text(json.dumps({
        "model_type": "evilnet", "architectures": ["EvilModel"],
        "auto_map": {k: "configuration_evil.EvilConfig" if k == "AutoConfig" else "modeling_evil.EvilModel"
                     for k in ("AutoConfig", "AutoModel", "AutoModelForCausalLM")}}))
    code = (f"import pathlib\npathlib.Path({str(d / 'EXECUTED')!r}).write_text('remote code ran')\n"
            "from transformers import PretrainedConfig\nclass EvilConfig(PretrainedConfig):\n"
            "    model_type = 'evilnet'\nclass EvilModel:\n    pass\n")
    (d / "configuration_evil.py").write_text(code)
    (d / "modeling_evil.py").write_text(code)
    yield d
    from transformers.dynamic_module_utils import HF_MODULES_CACHE   # where a trusted load copies the code
    shutil.rmtree(Path(HF_MODULES_CACHE) / "transformers_modules" / d.name, ignore_errors=True)


@pytest.mark.integration
def test_custom_code_in_a_model_folder_runs_only_when_the_parameter_says_so(evil_model):
    from helpers.embed.loading import load_embedding_model
    from helpers.rerank.reranker import load_reranker
    loaders = {"embedder": lambda trust: load_embedding_model(str(evil_model), "decoder-only-base",
                                                              trust_remote_code=trust),
               "reranker": lambda trust: load_reranker(str(evil_model), devices="cpu", trust_remote_code=trust)}
    for name, load in loaders.items():
        with pytest.raises(ValueError, match="(?s)custom code.*trust_remote_code=True"):
            load(False)
        assert not (evil_model / "EXECUTED").exists(), name
    with pytest.raises(Exception):          # the parameter is wired through: now the code runs
        loaders["embedder"](True)
    assert (evil_model / "EXECUTED").exists()


# ----------------------------------------------------------------------------- weights and pickles
def test_models_load_safetensors_only():
    for path in SOURCES:
        for node, text in calls(path, "from_pretrained"):
            owner = ast.unparse(node.func.value) if isinstance(node.func, ast.Attribute) else ""
            kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if owner.startswith("AutoModel") or owner == "auto_cls":
                where = f"{path.relative_to(REPO)}:{node.lineno}: {text}"
                if "gguf_file" in kw:
                    continue                           # the demo's GGUF, converted to safetensors once
                assert kw.get("use_safetensors") == "True" or (None in kw and path.name == "loading.py"), where
    # the embedder passes use_safetensors inside **kwargs: check that dict too
    src = (REPO / "helpers" / "embed" / "loading.py").read_text()
    assert "kwargs = dict(dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True)" in src
    for path in SOURCES:
        for node, text in calls(path, "save_pretrained"):
            kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if "tok" in ast.unparse(node.func.value):
                continue                               # tokenizers are JSON
            assert kw.get("safe_serialization") == "True", f"{path.relative_to(REPO)}:{node.lineno}: {text}"


def test_nothing_unpickles_untrusted_files():
    bad = []
    for path in SOURCES:
        for node, text in calls(path, "load"):
            owner = ast.unparse(node.func.value) if isinstance(node.func, ast.Attribute) else ""
            kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if owner == "torch" and kw.get("weights_only") != "True":
                bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {text}")
            if owner in ("pickle", "dill", "cloudpickle", "joblib"):
                bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {text}")
            if owner in ("np", "numpy") and kw.get("allow_pickle") not in (None, "False"):
                bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {text}")
        text = path.read_text(encoding="utf-8")
        bad += [f"{path.relative_to(REPO)}: {m}" for m in re.findall(r"pickle\.loads?\(|read_pickle\(|Unpickler\(", text)]
    assert bad == []


def test_a_malicious_training_state_is_refused_not_run(tmp_path):
    import pickle
    import torch
    from helpers.train.args import TrainArgs, resume_keys
    from helpers.train.loop import STATE_FILE, _resume_state
    marker = tmp_path / "EXECUTED"

    class Evil:
        def __reduce__(self):
            return (Path.write_text, (marker, "pickle ran"))
    torch.save({"epoch": 1, "x": Evil()}, tmp_path / STATE_FILE)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        args = TrainArgs(output_dir=str(tmp_path))
        _resume_state(tmp_path, args, resume_keys(args))
    assert not marker.exists()


# ----------------------------------------------------------------------------- network
PROBE = r"""
import socket, threading, urllib.request
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
threading.Thread(target=lambda: srv.accept(), daemon=True).start()
socket.create_connection(srv.getsockname(), timeout=5).close()        # loopback: allowed
for target in (lambda: socket.create_connection(("203.0.113.7", 443), timeout=5),
               lambda: urllib.request.urlopen("https://huggingface.co", timeout=5)):
    try:
        target()
        print("CONNECTED")
    except OSError as e:
        print("BLOCKED", e)
"""


def test_the_sandbox_blocks_the_network_and_logs_attempts(tmp_path):
    env = stage_env(tmp_path)
    r = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("BLOCKED") == 2 and "CONNECTED" not in r.stdout, r.stdout
    log = net_attempts(env)
    assert any("203.0.113.7" in x for x in log) and any("huggingface.co" in x for x in log), log


CHAIN = r"""
import json, sys, torch
from pathlib import Path
sys.path.insert(0, {repo!r})
from tests.factories import tiny_input
from tests.fixtures.models import save_tiny_gemma_reranker
from helpers.data.prepare_data import PrepareArgs, prepare_data
from helpers.mine.hn_mine import HnMineArgs, hn_mine
from helpers.rerank.add_reranker_score import ScoreArgs, add_reranker_score
from helpers.train.kd_finetune import KDArgs, kd_finetune
from helpers.eval.evaluate import EvalArgs, run_evaluation
root = Path({root!r})
data, mined, scored, kd = root / "data", root / "mined", root / "scored", root / "kd"
prepare_data(PrepareArgs(input_dir=str(tiny_input(root / "in", n_questions=8)), output_dir=str(data)))
emb = dict(model_name_or_path="demo:all-minilm-l6-v2", embedder_model_class="encoder-only-base",
           candidate_pool=str(data / "corpus.jsonl"), range_for_sampling="1-10", negative_number=3,
           devices=["cpu"], embedder_batch_size=8, query_max_len=32, passage_max_len=32)
teacher = save_tiny_gemma_reranker(root / "teacher")
for split in ("train", "test"):
    hn_mine(HnMineArgs(input_file=str(data / f"{{split}}_queries.jsonl"), output_file=str(mined / f"{{split}}.jsonl"), **emb))
    add_reranker_score(ScoreArgs(input_file=str(mined / f"{{split}}.jsonl"), output_file=str(scored / f"{{split}}.jsonl"),
                                 reranker_name_or_path=teacher, reranker_max_length=48, devices=["cpu"]))
kd_finetune(KDArgs(model_name_or_path="demo:all-minilm-l6-v2", embedder_model_class="encoder-only-base",
                   train_data=str(scored / "train.jsonl"), eval_data=str(scored / "test.jsonl"),
                   corpus_file=str(data / "corpus.jsonl"), output_dir=str(kd), num_train_epochs=1,
                   per_device_train_batch_size=4, train_group_size=3, use_lora=True, lora_rank=4,
                   target_modules="query,value",
                   query_max_len=32, passage_max_len=32, gradient_checkpointing=False, devices="cpu",
                   show_progress=False, query_instruction_for_retrieval=None))
m = run_evaluation(EvalArgs(model_name_or_path=str(kd / "merged_model_lora_epoch_1"), pooling_method="mean",
                            embedder_model_class="encoder-only-base", queries_file=str(data / "test_queries.jsonl"),
                            corpus_file=str(data / "corpus.jsonl"), train_queries_file=str(data / "train_queries.jsonl"),
                            output_dir=str(root / "eval"), devices="cpu", query_max_len=32,
                            passage_max_len=32, topk=20))
print("CHAIN_OK", json.dumps({{"MAP@25": m["MAP@25"]}}))
"""


@pytest.mark.integration
@pytest.mark.slow
def test_the_demo_stages_run_with_the_network_blocked(tmp_path):
    env = stage_env(tmp_path)
    assert "HF_HUB_OFFLINE" not in env and "TRANSFORMERS_OFFLINE" not in env
    r = subprocess.run([sys.executable, "-c", CHAIN.format(repo=str(REPO), root=str(tmp_path / "run"))],
                       env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "CHAIN_OK" in r.stdout, r.stderr[-4000:]
    assert "Error in sitecustomize" not in r.stderr
    assert net_attempts(env) == [], net_attempts(env)
    # checkpoints are safetensors; the only other binary is the training state, read with weights_only=True
    kd = tmp_path / "run" / "kd"
    files = sorted(str(p.relative_to(kd)) for p in kd.rglob("*") if p.is_file())
    assert "lora_epoch_1/adapter_model.safetensors" in files
    assert "merged_model_lora_epoch_1/model.safetensors" in files
    weights = [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt", ".safetensors"))]
    assert sorted(weights) == ["lora_epoch_1/adapter_model.safetensors", "merged_model_lora_epoch_1/model.safetensors",
                               "training_state.pt"], weights
