"""A stand-in for a stage under torchrun: ``python -m tests.launch_echo <kd_finetune flags>``.

Parses its argv with the real ``helpers.train.kd_finetune.build_parser()``, builds ``KDArgs``, joins the
gloo group and writes ``asdict(KDArgs)`` to ``$LAUNCH_ECHO_OUT/rank{RANK}.json``
(tests/train/test_launch.py compares it with the parent's arguments).
"""
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path


def main(argv=None) -> None:
    import torch.distributed as dist

    from helpers.train.kd_finetune import KDArgs, build_parser
    args = KDArgs(**vars(build_parser().parse_args(argv)))
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    out = Path(os.environ["LAUNCH_ECHO_OUT"])
    (out / f"rank{rank}.json").write_text(json.dumps({"world_size": world, "argv": sys.argv[1:] if argv is None else argv,
                                                      "args": asdict(args)}), encoding="utf-8")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
