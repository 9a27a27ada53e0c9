"""Merging a LoRA adapter into its base: after every epoch, once at the end, or later by hand.

    python -m helpers.train.merge --output_dir DIR [--epoch best|last|N] [--base_model PATH]

merges one epoch's ``lora_epoch_{n}`` of a finished (or stopped) training run into
``merged_model_lora_epoch_{n}``: a fresh, unquantized base on CPU, the adapter merged, the
tokenizer (with its EOS rule) and the pooling file saved beside it, after a free-disk check.
The trainer uses the same functions (:func:`merge_adapter`; :func:`merge_every_epoch` and
:func:`choose_epoch` say when and which).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

from helpers.common.io_utils import check_free_disk, read_jsonl, save_dir_atomic, write_json
from helpers.common.models import files_fingerprint
from helpers.embed.loading import load_base_model, read_pooling, save_tokenizer

log = logging.getLogger(__name__)
MERGED_FROM = "merged_from.json"       # in a merged folder: the adapter files it was merged from


def merge_adapter(base_name: str, adapter_dir, target, tok, add_eos: bool, trust_remote_code=False,
                  pooling: Optional[str] = None, base_model: Optional[str] = None) -> None:
    """Merge ``adapter_dir`` into a freshly loaded base in its stored (unquantized) precision, on CPU
    (float16 when the stored one would not fit half the available RAM: :func:`merge_dtype`).

    ``base_name`` may itself be an adapter folder (a student that was a previous round's
    ``lora_epoch_n``): its own adapter(s) are merged into their base first, as the trainer loaded it."""
    from peft import PeftModel

    from helpers.common.memory import stored_bytes
    from helpers.common.memory import _available_memory
    dtype = merge_dtype(stored_bytes(base_model or base_name), _available_memory("cpu")[0])
    size = stored_bytes(base_model or base_name) // (2 if dtype == "float16" else 1)
    check_free_disk(Path(target).parent, size, f"the merged model {Path(target).name}")
    base = load_base_model(base_name, dtype=dtype, trust_remote_code=trust_remote_code, base_model=base_model)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()

    def save(tmp):
        merged.save_pretrained(str(tmp), safe_serialization=True)
        save_tokenizer(tok, tmp, add_eos, pooling)
        write_json(Path(tmp) / MERGED_FROM, {"adapter": files_fingerprint([adapter_dir]), "adapter_dir": str(adapter_dir)})
    save_dir_atomic(Path(target), save)


CHOSEN_ADAPTER = "chosen_adapter"     # a run that does not merge: a copy of its merge_epoch's adapter


def choose_adapter(adapter_dir, target, epoch: int, rule: str) -> None:
    """Copy the chosen epoch's adapter to ``target`` (``chosen_adapter``): one fixed path for the
    comparison and the submission to read, unmerged on the base as it was evaluated in training
    (a 4-bit base: no NF4 re-quantization of a merge). Redone when the adapter changed."""
    import shutil
    if merged_is_current(target, adapter_dir, need_config=False):
        return

    def save(tmp):
        shutil.copytree(adapter_dir, tmp, dirs_exist_ok=True)
        write_json(Path(tmp) / MERGED_FROM, {"adapter": files_fingerprint([adapter_dir]), "adapter_dir": str(adapter_dir),
                                             "epoch": epoch, "merge_epoch": str(rule)})
    save_dir_atomic(Path(target), save)
    log.info("chosen adapter: epoch %d (merge_epoch %r) copied to %s", epoch, rule, target)


def merge_dtype(stored: int, ram: int) -> str:
    """The precision a merge loads its base in: as stored ("auto"), unless the stored model (a base
    whose config says float32, 28 GB for a 7B) would take more than half the host's available RAM:
    then float16 (said in the log)."""
    if ram and stored > ram / 2:
        log.info("merge in float16: the base as stored is %.1f GB, more than half the %.1f GB of available RAM",
                 stored / 1e9, ram / 1e9)
        return "float16"
    return "auto"


def merged_is_current(target, adapter_dir, need_config: bool = True) -> bool:
    """Whether ``target`` is the merge (or copy) of ``adapter_dir`` as it is now (its ``merged_from.json``
    records the adapter's files): an old merged folder from another run, or from before the adapter was
    trained again, is merged again instead of being kept."""
    rec = Path(target) / MERGED_FROM
    if (need_config and not (Path(target) / "config.json").exists()) or not rec.exists():
        return False
    try:
        return json.loads(rec.read_text(encoding="utf-8")).get("adapter") == files_fingerprint([adapter_dir])
    except (ValueError, OSError):
        return False


def merge_every_epoch(value: Optional[bool]) -> bool:
    """``merge_every_epoch`` None = auto: not on Kaggle (``KAGGLE_KERNEL_RUN_TYPE``), yes elsewhere."""
    if value is not None:
        return bool(value)
    from helpers.kaggle.env import on_kaggle
    return not on_kaggle()


def choose_epoch(rows: list[dict], which="best") -> Optional[int]:
    """The epoch to merge: ``best`` (highest MAP@25; the last when no row has it), ``last``, or a number."""
    done = [r for r in rows if r.get("epoch") is not None]
    if not done:
        return None
    which = str(which)
    if which.isdigit():
        n = int(which)
        if n not in {int(r["epoch"]) for r in done}:
            raise ValueError(f"merge_epoch {n}: not a finished epoch (done: {sorted(int(r['epoch']) for r in done)})")
        return n
    scored = [r for r in done if r.get("MAP@25") is not None]
    if which == "best" and scored:
        return int(max(scored, key=lambda r: (r["MAP@25"], -int(r["epoch"])))["epoch"])
    return max(int(r["epoch"]) for r in done)


def merge_run_epoch(output_dir, epoch="best", base_model: Optional[str] = None, target=None,
                    trust_remote_code: bool = False) -> Path:
    """Merge one epoch's adapter of a finished (or stopped) run into ``merged_model_lora_epoch_{n}``.

    ``epoch``: best / last / a number (:func:`choose_epoch` over ``metrics.jsonl``); ``base_model``:
    the base model folder (default: the adapter's ``base_model_name_or_path``; give it when the
    base sits at another path in this session). The tokenizer (with its EOS rule) and the pooling
    file come from the adapter folder. Free disk is checked first. -> the merged folder."""
    from transformers import AutoTokenizer

    out = Path(output_dir)
    metrics = out / "metrics.jsonl"
    rows = read_jsonl(metrics) if metrics.exists() else []
    n = int(epoch) if str(epoch).isdigit() and not rows else choose_epoch(rows, epoch)
    if n is None:
        raise FileNotFoundError(f"{metrics}: no finished epoch to merge")
    adapter = out / f"lora_epoch_{n}"
    if not (adapter / "adapter_config.json").exists():
        raise FileNotFoundError(f"{adapter}: no adapter_config.json (is {out} a kd_finetune output_dir?)")
    base = base_model or json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
    tok = AutoTokenizer.from_pretrained(str(adapter), trust_remote_code=trust_remote_code)
    cfg = adapter / "tokenizer_config.json"
    add_eos = cfg.exists() and bool(json.loads(cfg.read_text(encoding="utf-8")).get("add_eos_token"))
    pooling = read_pooling(adapter)
    target = Path(target) if target else out / f"merged_model_lora_epoch_{n}"
    log.info("merging %s into %s -> %s", adapter, base, target)
    merge_adapter(base, adapter, target, tok, add_eos, trust_remote_code, pooling)
    return target


def main(argv=None) -> None:
    import argparse
    p = argparse.ArgumentParser(prog="python -m helpers.train.merge",
                                description="Merge one epoch's LoRA adapter of a kd_finetune run into a full model "
                                            "(merged_model_lora_epoch_{n}), after a free-disk check.")
    p.add_argument("--output_dir", required=True, help="the run's output_dir (lora_epoch_{n}, metrics.jsonl)")
    p.add_argument("--epoch", default="best", help="best (highest MAP@25), last, or an epoch number")
    p.add_argument("--base_model", default=None, help="base model folder (default: the adapter's own base path)")
    p.add_argument("--target", default=None, help="where to write (default: OUTPUT_DIR/merged_model_lora_epoch_{n})")
    p.add_argument("--trust_remote_code", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(merge_run_epoch(a.output_dir, a.epoch, a.base_model, a.target, a.trust_remote_code))


if __name__ == "__main__":
    from helpers.common.cli import run
    run(main)
