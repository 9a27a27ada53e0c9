"""Several devices: the torchrun launch, the ranks, and their agreement.

A training stage given more than one device and not already inside torchrun re-runs itself with
:func:`launch` (``torchrun --nproc_per_node N -m helpers.<stage> ...`` as a subprocess, its log
streamed line by line, its exit code checked); inside, :func:`dist_info` gives the ranks,
:func:`init_distributed` the process group, :func:`agree` and :func:`barrier` keep the ranks in step.
Rank 0 alone writes logs and checkpoints.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields
from typing import Callable, Optional

import torch


def dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


BACKEND_ENV = "EEDI_DDP_BACKEND"     # gloo | nccl: gloo runs two ranks on ONE GPU (tools/gpu_check.sh), NCCL refuses


def ddp_backend(device: str) -> str:
    """nccl for CUDA, gloo for the CPU; ``$EEDI_DDP_BACKEND`` overrides (gloo: several ranks may
    share one GPU, which NCCL refuses; the cross-device gather then goes through the CPU)."""
    forced = os.environ.get(BACKEND_ENV, "").strip().lower()
    if forced:
        if forced not in ("gloo", "nccl"):
            raise ValueError(f"{BACKEND_ENV}={forced!r}: choose gloo or nccl")
        if forced == "nccl" and not str(device).startswith("cuda"):
            raise ValueError(f"{BACKEND_ENV}=nccl needs CUDA devices, got {device}")
        return forced
    return "nccl" if str(device).startswith("cuda") else "gloo"


def rank_device(local: int, n_visible: Optional[int] = None) -> str:
    """The CUDA device of local rank ``local``: ``cuda:local``, wrapped round the visible GPUs
    (``--nproc_per_node 2`` on one GPU: both ranks on cuda:0, which only gloo accepts)."""
    n = torch.cuda.device_count() if n_visible is None else n_visible
    return f"cuda:{local % max(1, n)}"


def all_gather_tensors(parts: list, t: torch.Tensor) -> None:
    """``torch.distributed.all_gather``; under gloo a CUDA tensor goes through the CPU (gloo
    gathers CPU tensors only)."""
    import torch.distributed as dist
    if t.is_cuda and dist.get_backend() == "gloo":
        cpu = [torch.empty_like(t, device="cpu") for _ in parts]
        dist.all_gather(cpu, t.cpu())
        for p, c in zip(parts, cpu):
            p.copy_(c)
    else:
        dist.all_gather(parts, t)


def init_distributed(device: str) -> None:
    import torch.distributed as dist
    _, world, local = dist_info()
    if world > 1 and not dist.is_initialized():
        backend = ddp_backend(device)
        if str(device).startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        # rank 0 evaluates and merges alone after every epoch while the others wait: long timeout
        import datetime
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=2))


def barrier() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def agree(flag: bool, device, world: Optional[int] = None) -> bool:
    """True on every rank when it is True on any rank (one rank stops: all stop); no collective
    on one process."""
    world = dist_info()[1] if world is None else world
    import torch.distributed as dist
    if world <= 1 or not (dist.is_available() and dist.is_initialized()):
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_gather_object(obj) -> list:
    """``[obj of rank 0, rank 1, ...]`` on every rank (``torch.distributed.all_gather_object``)."""
    import torch.distributed as dist
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def interleave(parts: list):
    """Rows ``r::world`` of ``parts[r]`` back into one array in the original row order: the inverse
    of sharding rows by rank (``rows[rank::world]``)."""
    import numpy as np
    first = np.asarray(parts[0])
    out = np.empty((sum(len(x) for x in parts),) + first.shape[1:], dtype=first.dtype)
    for r, x in enumerate(parts):
        out[r::len(parts)] = x
    return out


def inside_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def dataclass_argv(args, skip=()) -> list[str]:
    """A dataclass instance -> the command line that parses back to it (``helpers.common.cli.dataclass_parser``).

    Every field is passed, None included (``--eval_data=None``): a field left out would fall back
    to its default in the child, and an ``Optional`` field's default need not be None. Scalars go
    as ``--name=value`` (a value may start with ``-``); lists and tuples as ``--name v1 v2 ...``
    (no values: empty). Floats keep their ``repr`` (exact). Limits of the text form: an
    ``Optional[str]`` field holding ``""`` or ``"None"`` comes back as None.
    """
    out = []
    for f in fields(args):
        if f.name in skip:
            continue
        v = getattr(args, f.name)
        if isinstance(v, (list, tuple)):
            out += [f"--{f.name}", *map(str, v)]
        else:
            out.append(f"--{f.name}={'None' if v is None else v}")
    return out


def torchrun_command(module: str, argv: list[str], nproc: int, master_port: Optional[int] = None) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    if master_port is not None:
        cmd += ["--master_port", str(master_port)]
    else:
        cmd += ["--standalone"]
    return cmd + ["-m", module] + list(argv)


def run_streamed(cmd: list[str], env: Optional[dict] = None, cwd=None,
                 echo: Callable[[str], None] = lambda s: print(s, end="", flush=True)) -> None:
    """Run ``cmd``; every output line goes to ``echo`` as it comes; non-zero exit -> error."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, env=env, cwd=cwd)
    tail = []
    try:
        for line in proc.stdout:
            echo(line)
            tail = (tail + [line])[-20:]
    finally:
        rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... exited with code {rc}; last lines:\n" + "".join(tail))


def launch(module: str, argv: list[str], devices: list[str], cwd=None, echo=None) -> None:
    """torchrun one process per device; CUDA devices are mapped with CUDA_VISIBLE_DEVICES."""
    env = dict(os.environ)
    if all(d.startswith("cuda") for d in devices):
        env["CUDA_VISIBLE_DEVICES"] = ",".join(d.split(":")[-1] if ":" in d else "0" for d in devices)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    cmd = torchrun_command(module, argv, len(devices))
    run_streamed(cmd, env=env, cwd=cwd, **({"echo": echo} if echo else {}))
