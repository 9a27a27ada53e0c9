"""Device and dtype choice by hardware: fp32 on CPU, fp16 below compute capability 8, bf16 from 8.

``torch.cuda.is_bf16_supported()`` answers yes on a T4 (emulated bf16), so the choice goes by
compute capability instead.
"""
from __future__ import annotations

import torch


def parse_devices(devices) -> list[str]:
    """``None``/``""`` -> ``["cuda:0"]`` when CUDA is there else ``["cpu"]``; ``"0,1"``,
    ``"cuda:0 cuda:1"``, ``["cuda:0"]``, ``0`` -> explicit list."""
    if devices is None or devices == "" or devices == []:
        return ["cuda:0"] if torch.cuda.is_available() else ["cpu"]
    if isinstance(devices, (int,)):
        devices = [devices]
    if isinstance(devices, str):
        devices = devices.replace(",", " ").split()
    out = []
    for d in devices:
        d = str(d).strip()
        if d.isdigit():
            d = f"cuda:{d}"
        if d.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"devices: {d!r} asked for, but CUDA is not available on this machine")
        out.append(d)
    return out


def dtype_for(device, use_fp16: bool = True) -> torch.dtype:
    """fp32 on CPU (no fast bf16 there) or when ``use_fp16`` is off; fp16 below cc 8; bf16 from 8."""
    device = torch.device(device)
    if device.type != "cuda" or not use_fp16:
        return torch.float32
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16
