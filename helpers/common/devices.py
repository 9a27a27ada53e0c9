"""Device and dtype choice by hardware: fp32 on CPU, fp16 below compute capability 8, bf16 from 8.

``torch.cuda.is_bf16_supported()`` answers yes on a T4 (emulated bf16), so the choice goes by
compute capability instead.

:func:`check_devices` runs first in every stage (hn_mine, add_reranker_score, kd_finetune,
train_reranker, evaluate, submission), before anything is read or loaded: a profile asking for
``devices: "0,1"`` on a one-GPU machine stops there with one line, not an hour later in torchrun.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional, Union

import torch

from helpers.common.cli import arg, check_types

log = logging.getLogger(__name__)
AUTO = "auto"


@dataclass(kw_only=True)
class DeviceArgs:
    """Where a stage runs and in what precision: the base of the embedder block
    (:class:`helpers.embed.args.EmbedderArgs`) and of the training block
    (:class:`helpers.train.args.TrainArgs`), so a stage that is both (training) declares them once."""
    devices: Union[str, list, None] = arg(None, "cpu | cuda:0 | 0,1 (or a list; several GPUs: one replica each, training "
                                 "runs under torchrun); None: cuda:0 if there is one, else cpu", resume=False)
    use_fp16: bool = arg(True, "half precision on CUDA: fp16 below compute capability 8 (with a GradScaler in "
                         "training), bf16 from 8; CPU: fp32")
    trust_remote_code: bool = arg(False, "allow model code from the model folder")

    def __post_init__(self):
        # the end of the cooperative __post_init__ chain of the stages' arguments: the values as given
        # (before a subclass converts any) have their declared types
        check_types(self)


def _is_auto(devices) -> bool:
    if isinstance(devices, (list, tuple)) and len(devices) == 1:
        devices = devices[0]
    return isinstance(devices, str) and devices.strip().lower() == AUTO


def existing_devices() -> list[str]:
    """Every CUDA device of this machine (``cuda:0`` ...), else ``["cpu"]``."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i}" for i in range(n)] or ["cpu"]


def check_devices(devices, param: str = "devices", stage: str | None = None):
    """The devices a stage was asked for must exist -> the value to use (``devices`` unchanged, or
    what ``auto`` resolves to, in the same form: a list stays a list, a string a comma string).

    ``None``/``""`` (the default device), ``"cpu"`` and devices that exist pass. A CUDA index
    beyond ``torch.cuda.device_count()``, CUDA on a machine without it, or a CUDA device given twice
    raise one ValueError naming ``param``, what was asked and what exists. ``"auto"``: every
    device that exists, with a warning saying which. Under torchrun the launcher has already checked
    and renumbered the devices (CUDA_VISIBLE_DEVICES), so nothing is checked there.
    """
    where = f"{stage}: " if stage else ""
    if _is_auto(devices):
        found = existing_devices()
        log.warning("%s%s=auto: using %s (the CUDA devices this machine has)", where, param,
                    ", ".join(found) if found != ["cpu"] else "cpu (no CUDA device here)")
        return list(found) if isinstance(devices, (list, tuple)) else ",".join(found)
    if devices is None or devices == "" or devices == [] or int(os.environ.get("WORLD_SIZE", 1)) > 1:
        return devices
    asked = [x for d in ([devices] if isinstance(devices, (int, str)) else devices)
             for x in str(d).replace(",", " ").split()]     # "0,1", ["0,1"] and ["cuda:0", "cuda:1"] alike
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    have = ", ".join(existing_devices()) if n else "no CUDA device (cpu only)"
    seen = set()
    for d in asked:
        name = f"cuda:{d}" if d.isdigit() else d
        if name == "cuda":
            name = "cuda:0"
        if name == "cpu":
            continue                  # "cpu" may repeat: several CPU workers / gloo ranks
        if not name.startswith("cuda:"):
            raise ValueError(f"{where}{param}={devices!r}: {d!r} is not a device (cpu, cuda, cuda:N, N, or auto); "
                             f"this machine has {have}")
        if name in seen and os.environ.get(SHARE_GPU_ENV) != "1":
            raise ValueError(f"{where}{param}={devices!r} gives {name} twice; this machine has {have} "
                             f"(two workers on one GPU only for checks: {SHARE_GPU_ENV}=1)")
        seen.add(name)
        idx = name.split(":", 1)[1] if ":" in name else "0"
        if not idx.isdigit():
            raise ValueError(f"{where}{param}={devices!r}: {d!r} is not a device (cpu, cuda:N or N); "
                             f"this machine has {have}")
        if int(idx) >= n:
            raise ValueError(f"{where}{param}={devices!r} asks for {name}, but this machine has {have}; "
                             f"set {param} to what exists, or to 'auto' to use every device there is")
    return devices


def parse_devices(devices) -> list[str]:
    """``None``/``""`` -> ``["cuda:0"]`` when CUDA is there else ``["cpu"]``; ``"auto"`` -> every
    CUDA device (else ``["cpu"]``); ``"0,1"``, ``"cuda:0 cuda:1"``, ``["cuda:0"]``, ``0`` ->
    explicit list (:func:`check_devices` checks that they exist)."""
    if devices is None or devices == "" or devices == []:
        return ["cuda:0"] if torch.cuda.is_available() else ["cpu"]
    if _is_auto(devices):
        return existing_devices()
    if isinstance(devices, (int,)):
        devices = [devices]
    devices = [x for d in ([devices] if isinstance(devices, str) else devices) for x in str(d).replace(",", " ").split()]
    out = []
    for d in devices:
        d = str(d).strip()
        if d.isdigit():
            d = f"cuda:{d}"
        if d.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"devices: {d!r} asked for, but CUDA is not available on this machine")
        out.append(d)
    return out


SHARE_GPU_ENV = "EEDI_SHARE_GPU"        # 1: a GPU may be named twice (two workers on one GPU: tools/gpu_check.sh)
FORCE_FP16_ENV = "EEDI_FORCE_FP16"      # 1: fp16 (and its GradScaler) on every GPU: the T4 path on an H100/H200


def dtype_for(device, use_fp16: bool = True) -> torch.dtype:
    """fp32 on CPU (no fast bf16 there) or when ``use_fp16`` is off; fp16 below cc 8; bf16 from 8,
    unless ``$EEDI_FORCE_FP16`` is 1 (then fp16 on any GPU: Kaggle's T4 path tested on a newer GPU)."""
    import os
    device = torch.device(device)
    if device.type != "cuda" or not use_fp16:
        return torch.float32
    if os.environ.get(FORCE_FP16_ENV) == "1":
        return torch.float16
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16
