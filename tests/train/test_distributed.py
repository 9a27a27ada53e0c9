"""Arguments survive the multi-device launch: ``dataclass_argv`` -> command line -> the stage's
parser gives back the parent's dataclass, exactly (None, Optional fields whose default is not
None, lists, tuples, booleans, floats, spaces, a literal backslash-n)."""
import json
from dataclasses import asdict, dataclass, field
from typing import Optional

import pytest

from helpers.common.cli import arg, dataclass_parser
from helpers.train.kd_finetune import KDArgs, build_parser
from helpers.train.distributed import dataclass_argv, launch


def kd_parent_args(**kw) -> KDArgs:
    """KDArgs far from its defaults: every Optional field whose default is not None set to None."""
    base = dict(model_name_or_path="some dir/with spaces", eval_data=None, corpus_file=None,
                query_instruction_for_retrieval=None, use_row_prompts=None, pooling_method=None,
                query_instruction_format="<instruct>{}\\n<query>{}", icl_suffix_str="\\n<response> x",
                learning_rate=5e-4, temperature=0.015, lora_alpha=16.0, warmup_ratio=0.0, max_grad_norm=0.0,
                knowledge_distillation=False, negatives_cross_device=True, gradient_checkpointing=False,
                use_fp16=False, overwrite_output_dir=True, show_progress=False, save_merged_lora_model=False,
                target_modules="q_proj,v_proj", max_examples=0, devices="cpu,cpu",
                output_dir="out dir/-kd", num_train_epochs=3, seed=7)
    base.update(kw)
    return KDArgs(**base)


def reparse(args: KDArgs) -> KDArgs:
    return KDArgs(**vars(build_parser().parse_args(dataclass_argv(args))))


def test_kd_args_round_trip_through_the_command_line():
    a = kd_parent_args()
    argv = dataclass_argv(a)
    assert "--eval_data=None" in argv and "--corpus_file=None" in argv and "--use_row_prompts=None" in argv
    assert asdict(reparse(a)) == asdict(a)
    d = KDArgs(devices="cpu", eval_data=None, corpus_file=None)      # defaults otherwise
    assert asdict(reparse(d)) == asdict(d)
    t = kd_parent_args(use_row_prompts=True, query_instruction_for_retrieval="Find it.\\n", target_modules=None)
    assert asdict(reparse(t)) == asdict(t)


def test_optional_fields_take_none_whatever_their_default():
    p = build_parser()
    a = p.parse_args(["--eval_data", "None", "--corpus_file", "none", "--pooling_method", "",
                      "--use_row_prompts", "None", "--use_row_prompts", "NONE"])
    assert a.eval_data is None and a.corpus_file is None and a.pooling_method is None and a.use_row_prompts is None
    assert p.parse_args(["--use_row_prompts", "False"]).use_row_prompts is False
    assert p.parse_args(["--use_row_prompts"]).use_row_prompts is True
    with pytest.raises(SystemExit):
        p.parse_args(["--fp16", "None"])          # a plain bool is True or False, never None
    with pytest.raises(SystemExit):
        p.parse_args(["--num_train_epochs", "None"])


@dataclass
class Every:
    s: str = arg("a b", "")
    os_: Optional[str] = arg("default text", "")
    oi: Optional[int] = arg(3, "")
    of: Optional[float] = arg(0.5, "")
    ob: Optional[bool] = arg(True, "")
    b: bool = arg(False, "")
    f: float = arg(1e-4, "")
    lst: Optional[list] = arg(None, "")
    ints: list[int] = field(default_factory=lambda: [1, 2])
    tup: tuple[str, ...] = ("x", "y")
    otup: Optional[tuple] = arg(("p",), "")


@pytest.mark.parametrize("value", [
    Every(),
    Every(s="", os_=None, oi=None, of=None, ob=None, b=True, f=5e-4, lst=None, ints=[], tup=(), otup=None),
    Every(s="-starts with a dash", os_="tab\there \\n and 'quotes' --x", oi=-2, of=-1e-9, ob=False,
          f=0.1 + 0.2, lst=["cuda:0", "cuda:1"], ints=[0, -3], tup=("one item",), otup=("a", "b c")),
])
def test_every_field_kind_round_trips(value):
    p = dataclass_parser(Every)
    back = Every(**vars(p.parse_args(dataclass_argv(value))))
    assert asdict(back) == asdict(value)
    assert type(back.tup) is tuple and type(back.ints) is list


def test_list_fields_parse_the_seed_way():
    p = dataclass_parser(Every)
    a = p.parse_args(["--lst", "cuda:0", "cuda:1", "--ints", "4", "5", "--tup", "a", "--otup", "None"])
    assert a.lst == ["cuda:0", "cuda:1"] and a.ints == [4, 5] and a.tup == ("a",) and a.otup is None
    with pytest.raises(SystemExit):
        p.parse_args(["--ints", "x"])


@pytest.mark.integration
def test_torchrun_children_parse_the_parents_arguments(tmp_path, monkeypatch, repo_root):
    """The real launch path (torchrun, 2 CPU processes, gloo): every child builds the parent's KDArgs."""
    parent = kd_parent_args()
    monkeypatch.setenv("LAUNCH_ECHO_OUT", str(tmp_path))
    lines = []
    launch("tests.launch_echo", dataclass_argv(parent), ["cpu", "cpu"], cwd=str(repo_root), echo=lines.append)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["world_size"] == 2
        assert got["args"] == json.loads(json.dumps(asdict(parent))), "".join(lines)
    assert "model_output/demo" not in "".join(lines)


def test_ddp_backend_and_rank_devices(monkeypatch):
    """Two ranks on one GPU (tools/gpu_check.sh): gloo by the env switch, ranks round robin on the
    visible GPUs; the default stays nccl for CUDA, gloo for the CPU; a bad value names the switch."""
    from helpers.train.distributed import BACKEND_ENV, ddp_backend, rank_device
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert (ddp_backend("cuda:0"), ddp_backend("cpu")) == ("nccl", "gloo")
    monkeypatch.setenv(BACKEND_ENV, "GLOO")
    assert ddp_backend("cuda:0") == "gloo"
    monkeypatch.setenv(BACKEND_ENV, "nccl")
    with pytest.raises(ValueError, match="nccl needs CUDA"):
        ddp_backend("cpu")
    monkeypatch.setenv(BACKEND_ENV, "mpi")
    with pytest.raises(ValueError, match="EEDI_DDP_BACKEND='mpi': choose gloo or nccl"):
        ddp_backend("cuda:0")
    assert [rank_device(r, 1) for r in range(2)] == ["cuda:0", "cuda:0"]
    assert [rank_device(r, 2) for r in range(3)] == ["cuda:0", "cuda:1", "cuda:0"]


def test_all_gather_tensors_under_gloo_matches_the_plain_gather(tmp_path):
    """One gloo process group of world 1 (CPU): the gather is torch's, in rank order."""
    import torch
    import torch.distributed as dist
    from helpers.train.distributed import all_gather_tensors
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        t = torch.arange(6.0).reshape(2, 3)
        parts = [torch.empty_like(t)]
        all_gather_tensors(parts, t)
        assert torch.equal(parts[0], t)
    finally:
        dist.destroy_process_group()
