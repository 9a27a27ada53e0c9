"""helpers.common.devices.check_devices: a stage asked for devices that do not exist stops first,
with one line naming the parameter, what was asked and what exists; ``auto`` takes what exists."""
import logging

import pytest
import torch

from helpers.common import devices as dev


def gpus(monkeypatch, n):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def test_two_gpus_asked_on_a_one_gpu_machine_is_one_clear_error(monkeypatch):
    gpus(monkeypatch, 1)
    with pytest.raises(ValueError, match=r"kd_finetune: devices='0,1' asks for cuda:1, but this machine has "
                                         r"cuda:0; set devices to what exists, or to 'auto'"):
        dev.check_devices("0,1", stage="kd_finetune")
    with pytest.raises(ValueError, match=r"devices=\['cuda:0', 'cuda:3'\] asks for cuda:3.*has cuda:0"):
        dev.check_devices(["cuda:0", "cuda:3"])
    with pytest.raises(ValueError, match="gives cuda:0 twice.*EEDI_SHARE_GPU=1"):
        dev.check_devices("0 cuda:0")


def test_one_gpu_named_twice_only_by_the_check_switch(monkeypatch):
    """tools/gpu_check.sh runs two workers on one GPU: EEDI_SHARE_GPU=1 lets a GPU repeat."""
    gpus(monkeypatch, 1)
    monkeypatch.setenv("EEDI_SHARE_GPU", "1")
    assert dev.check_devices(["cuda:0", "cuda:0"]) == ["cuda:0", "cuda:0"]
    monkeypatch.setenv("EEDI_SHARE_GPU", "0")
    with pytest.raises(ValueError, match="twice"):
        dev.check_devices(["cuda:0", "cuda:0"])


def test_a_list_item_with_commas_is_several_devices(monkeypatch):
    """``--devices 0,1`` on a stage whose flag takes a list gives ["0,1"]: two devices, as the string form."""
    gpus(monkeypatch, 2)
    assert dev.check_devices(["0,1"]) == ["0,1"]
    assert dev.parse_devices(["0,1"]) == dev.parse_devices("0,1") == ["cuda:0", "cuda:1"]
    assert dev.parse_devices(["cpu,cpu"]) == ["cpu", "cpu"]
    with pytest.raises(ValueError, match="asks for cuda:2"):
        dev.check_devices(["0,2"])


def test_no_cuda_at_all_names_the_parameter(monkeypatch):
    gpus(monkeypatch, 0)
    with pytest.raises(ValueError, match=r"hn_mine: devices='cuda' asks for cuda:0, but this machine has no CUDA"):
        dev.check_devices("cuda", stage="hn_mine")


@pytest.mark.parametrize("asked", ["0,1", "cuda:0 cuda:1", ["cuda:1"], 1, "cpu", None, "", ["cpu"], "cpu,cpu"])
def test_devices_that_exist_pass_unchanged(monkeypatch, asked):
    gpus(monkeypatch, 2)
    assert dev.check_devices(asked) == asked


def test_cpu_passes_without_cuda(monkeypatch):
    gpus(monkeypatch, 0)
    assert dev.check_devices("cpu") == "cpu" and dev.check_devices(None) is None


def test_auto_takes_what_exists_with_a_warning(monkeypatch, caplog):
    gpus(monkeypatch, 1)
    with caplog.at_level(logging.WARNING, logger="helpers.common.devices"):
        assert dev.check_devices("auto", stage="kd_finetune") == "cuda:0"
        assert dev.check_devices(["auto"]) == ["cuda:0"]
    assert "kd_finetune: devices=auto: using cuda:0" in caplog.text
    assert dev.parse_devices(dev.check_devices("auto")) == ["cuda:0"] == dev.parse_devices("auto")
    gpus(monkeypatch, 0)
    assert dev.check_devices("AUTO") == "cpu" and dev.parse_devices("auto") == ["cpu"]
    gpus(monkeypatch, 2)
    assert dev.parse_devices(dev.check_devices("auto")) == ["cuda:0", "cuda:1"]


def test_under_torchrun_the_launcher_already_checked(monkeypatch):
    gpus(monkeypatch, 2)
    monkeypatch.setenv("WORLD_SIZE", "2")       # CUDA_VISIBLE_DEVICES=2,3 renumbers them 0,1
    assert dev.check_devices("2,3") == "2,3"


def _stages():
    from helpers.eval import evaluate, submission
    from helpers.mine import hn_mine
    from helpers.rerank import add_reranker_score
    from helpers.train import kd_finetune, train_reranker
    base = dict(devices="0,1")
    return [
        ("hn_mine", lambda: hn_mine.hn_mine(hn_mine.HnMineArgs(
            model_name_or_path="missing", input_file="missing.jsonl", output_file="o.jsonl", **base))),
        ("add_reranker_score", lambda: add_reranker_score.add_reranker_score(add_reranker_score.ScoreArgs(
            reranker_name_or_path="missing", input_file="missing.jsonl", output_file="o.jsonl", **base))),
        ("kd_finetune", lambda: kd_finetune.kd_finetune(kd_finetune.KDArgs(
            model_name_or_path="missing", train_data="missing.jsonl", output_dir="o", **base))),
        ("train_reranker", lambda: train_reranker.train_reranker(train_reranker.RerankerTrainArgs(
            model_name_or_path="missing", train_data="missing.jsonl", output_dir="o", **base))),
        ("evaluate", lambda: evaluate.run_evaluation(evaluate.EvalArgs(
            model_name_or_path="missing", queries_file="q", corpus_file="c", output_dir="o", **base))),
        ("submission", lambda: submission.make_submission(submission.SubmissionArgs(
            model_name_or_path="missing", test_csv="t.csv", misconception_csv="m.csv", **base))),
    ]


@pytest.mark.parametrize("stage", [s for s, _ in _stages()])
def test_every_stage_checks_its_devices_before_anything_else(monkeypatch, tmp_path, stage):
    """Missing model and input files too: the devices error comes first (nothing read or loaded)."""
    gpus(monkeypatch, 1)
    monkeypatch.chdir(tmp_path)
    run = dict(_stages())[stage]
    with pytest.raises(ValueError, match=rf"^{stage}: devices='0,1' asks for cuda:1, but this machine has cuda:0"):
        run()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("devices", ["gpu", -1, "-1", "cuda:x", "cpu,tpu"])
def test_what_is_not_a_device_is_refused_by_name(devices):
    check_devices = dev.check_devices
    with pytest.raises(ValueError, match=r"devices=.*is not a device"):
        check_devices(devices)


def test_fp16_can_be_forced_on_a_bf16_gpu(monkeypatch):
    """The T4 path (fp16 + GradScaler) on an H100/H200: EEDI_FORCE_FP16=1; CPU stays fp32."""
    import torch
    from helpers.common.devices import FORCE_FP16_ENV, dtype_for
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (9, 0))
    monkeypatch.delenv(FORCE_FP16_ENV, raising=False)
    assert dtype_for("cuda:0") == torch.bfloat16
    monkeypatch.setenv(FORCE_FP16_ENV, "1")
    assert dtype_for("cuda:0") == torch.float16 and dtype_for("cpu") == torch.float32
    assert dtype_for("cuda:0", use_fp16=False) == torch.float32
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 5))
    monkeypatch.delenv(FORCE_FP16_ENV)
    assert dtype_for("cuda:0") == torch.float16                        # a T4 itself
