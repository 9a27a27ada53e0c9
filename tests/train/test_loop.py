"""The generic LoRA loop on a toy model: schedule, accumulation, clipping, resume, refusal."""
import json
import math

import pytest
import torch

from dataclasses import dataclass

from helpers.common.cli import arg
from helpers.train.args import TrainArgs, resume_keys
from helpers.train.lora import add_lora
from helpers.train.loop import STATE_FILE, fit, linear_schedule


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.q_proj = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.head(torch.tanh(self.q_proj(x))).squeeze(-1)


def toy_loss(model, batch):
    return ((model(batch["x"]) - batch["y"]) ** 2).mean()


def data(n=8):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, generator=g), torch.randn(n, generator=g)


@dataclass(kw_only=True)
class ToyArgs(TrainArgs):
    """A stage's arguments: the training block plus one data field that must match to resume."""
    train_data: str = arg("a.jsonl", "the toy's data file")


def cfg(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), learning_rate=0.05, num_train_epochs=2, warmup_ratio=0.0,
                lora_rank=2, lora_alpha=4, lora_dropout=0.0, target_modules=("q_proj",),
                gradient_checkpointing=False, show_progress=False, max_grad_norm=0.0)
    base.update(kw)
    return ToyArgs(**base)


def lora_toy(c):
    return add_lora(Toy(), c)


def batches_of(bs):
    x, y = data()

    def gen(epoch):
        for i in range(0, len(x), bs):
            yield {"x": x[i:i + bs], "y": y[i:i + bs]}
    return gen, len(x) // bs


def params(m):
    return {n: p.detach().clone() for n, p in m.named_parameters() if p.requires_grad}


def test_linear_warmup_then_decay():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s = linear_schedule(opt, warmup=2, total=6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        s.step()
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(1.0)
    assert lrs[2:] == pytest.approx([1.0, 0.75, 0.5, 0.25])


def test_accumulating_two_halves_equals_one_full_batch(tmp_path):
    c1 = cfg(tmp_path / "a", num_train_epochs=1)
    m1 = lora_toy(c1)
    gen, n = batches_of(8)
    fit(m1, toy_loss, gen, n, c1)
    c2 = cfg(tmp_path / "b", num_train_epochs=1, gradient_accumulation_steps=2)
    m2 = lora_toy(c2)
    gen, n = batches_of(4)
    rows = fit(m2, toy_loss, gen, n, c2)
    assert rows[0]["global_step"] == 1
    for (k, a), b in zip(params(m1).items(), params(m2).values()):
        assert torch.allclose(a, b, atol=1e-6), k
    # and the same two halves as two separate steps do differ (the test can fail)
    c3 = cfg(tmp_path / "c", num_train_epochs=1)
    m3 = lora_toy(c3)
    fit(m3, toy_loss, gen, n, c3)
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(params(m1).values(), params(m3).values()))


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path):
    gen, n = batches_of(2)
    ca = cfg(tmp_path / "a", num_train_epochs=3, warmup_ratio=0.2, lora_dropout=0.1)
    full = fit(lora_toy(ca), toy_loss, gen, n, ca, eval_batches=lambda: gen(0))

    cb = cfg(tmp_path / "b", num_train_epochs=3, warmup_ratio=0.2, lora_dropout=0.1)

    def boom(epoch, model, adapter_dir):
        if epoch == 2:
            raise KeyboardInterrupt
        return {}
    with pytest.raises(KeyboardInterrupt):
        fit(lora_toy(cb), toy_loss, gen, n, cb, eval_batches=lambda: gen(0), epoch_end=boom)
    assert [r["epoch"] for r in map(json.loads, (tmp_path / "b/metrics.jsonl").read_text().splitlines())] == [1]
    resumed = fit(lora_toy(cb), toy_loss, gen, n, cb, eval_batches=lambda: gen(0))
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rows]
    assert strip(resumed) == strip(full)
    assert (tmp_path / "b/lora_epoch_3/adapter_model.safetensors").exists()
    # done: running again trains nothing and returns the same rows
    assert strip(fit(lora_toy(cb), toy_loss, gen, n, cb)) == strip(full)


def test_resume_refuses_other_settings(tmp_path):
    gen, n = batches_of(4)
    c = cfg(tmp_path, num_train_epochs=1, train_data="a.jsonl")
    fit(lora_toy(c), toy_loss, gen, n, c)
    c2 = cfg(tmp_path, num_train_epochs=2, train_data="b.jsonl")
    with pytest.raises(ValueError, match="other settings \\(train_data\\)"):
        fit(lora_toy(c2), toy_loss, gen, n, c2)
    c3 = cfg(tmp_path, num_train_epochs=1, overwrite_output_dir=True, train_data="b.jsonl")
    assert len(fit(lora_toy(c3), toy_loss, gen, n, c3)) == 1


def test_lora_targets_must_exist(tmp_path):
    with pytest.raises(ValueError, match="none is a linear layer.*'head'"):
        add_lora(Toy(), cfg(tmp_path, target_modules=("gate_proj",)))


# ----------------------------------------------------------------------------- non-finite losses
def nan_on(calls: set, snapshots: list, how="mul"):
    """toy_loss, but non-finite on the chosen (1-based) calls; records the weights each call sees.
    ``how``: "mul" (nan gradients too) or "add" (a nan term with finite gradients, like a nan
    teacher score: a gradient check alone would miss it)."""
    def loss_fn(model, batch):
        snapshots.append(params(model))
        loss = toy_loss(model, batch)
        if len(snapshots) in calls:
            return loss * float("nan") if how == "mul" else loss + float("inf")
        return loss
    return loss_fn


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.values(), b.values()))


@pytest.mark.parametrize("how", ["mul", "add"])
def test_a_non_finite_loss_skips_its_step_and_training_goes_on(tmp_path, caplog, how):
    # the old loop raised FloatingPointError at the first non-finite loss
    gen, n = batches_of(2)                  # 4 optimizer steps an epoch
    c = cfg(tmp_path, num_train_epochs=2, max_nonfinite_steps=3)
    model = lora_toy(c)
    snaps = []
    with caplog.at_level("WARNING", logger="helpers.train.loop"):
        rows = fit(model, nan_on({2, 3, 6}, snaps, how), gen, n, c)
    snaps.append(params(model))
    # a skipped step leaves the weights as they were; the others move them
    assert same(snaps[1], snaps[2]) and same(snaps[2], snaps[3]) and same(snaps[5], snaps[6])
    assert not same(snaps[0], snaps[1]) and not same(snaps[3], snaps[4]) and not same(snaps[6], snaps[7])
    assert all(torch.isfinite(p).all() for p in snaps[-1].values())
    assert [r.get("skipped_steps") for r in rows] == [2, 1]
    assert [r["global_step"] for r in rows] == [4, 8]        # the schedule keeps its length
    warned = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warned) == 3 and "(2 in a row, 2 this epoch; max_nonfinite_steps 3)" in warned[1]
    assert all(r["train_loss"] == r["train_loss"] for r in rows)             # no nan in the averages


def test_a_non_finite_loss_skips_the_whole_accumulation_group(tmp_path):
    gen, n = batches_of(2)                  # 4 batches, accumulation 2: 2 optimizer steps
    c = cfg(tmp_path, num_train_epochs=1, gradient_accumulation_steps=2)
    model = lora_toy(c)
    snaps = []
    rows = fit(model, nan_on({1}, snaps), gen, n, c)
    snaps.append(params(model))
    # calls 1-2 are step 1 (skipped: call 3 sees the start weights), calls 3-4 step 2 (taken)
    assert same(snaps[0], snaps[1]) and same(snaps[0], snaps[2]) and not same(snaps[2], snaps[4])
    assert rows[0]["skipped_steps"] == 1 and rows[0]["global_step"] == 2


def test_max_nonfinite_steps_in_a_row_stop_the_run(tmp_path):
    gen, n = batches_of(2)
    c = cfg(tmp_path, num_train_epochs=2, max_nonfinite_steps=3)
    # 2 bad, 1 good, then 3 bad in a row (across the epoch boundary): the run stops at the 3rd
    snaps = []
    with pytest.raises(FloatingPointError, match=r"3 optimizer steps in a row had a non-finite loss .*"
                                                 r"epoch 2, batch 2.*max_nonfinite_steps=3"):
        fit(lora_toy(c), nan_on({1, 2, 4, 5, 6}, snaps), gen, n, c)
    assert len(snaps) == 6


def test_fp16_skips_back_off_the_loss_scale_as_gradscaler_does(tmp_path, monkeypatch):
    import helpers.train.loop as loop
    monkeypatch.setattr(loop, "dtype_for", lambda device, fp16=True: torch.float16)   # GradScaler on CPU
    gen, n = batches_of(2)
    c = cfg(tmp_path, num_train_epochs=1)
    snaps = []
    rows = fit(lora_toy(c), nan_on({1, 3}, snaps, "add"), gen, n, c)     # finite gradients, nan loss
    assert same(snaps[0], snaps[1]) and same(snaps[2], snaps[3]) and not same(snaps[1], snaps[2])
    state = torch.load(tmp_path / "training_state.pt", weights_only=True)
    assert state["scaler"]["scale"] == 65536.0 * 0.5 ** 2 and rows[0]["skipped_steps"] == 2


def test_max_nonfinite_steps_is_a_stage_flag_passed_to_the_loop():
    from helpers.train.kd_finetune import build_parser
    from helpers.train.train_reranker import RerankerTrainArgs
    assert build_parser().parse_args(["--max_nonfinite_steps", "3"]).max_nonfinite_steps == 3
    a = RerankerTrainArgs(model_name_or_path="m", train_data="t", output_dir="o", max_nonfinite_steps=5)
    tc = a        # the loop reads the stage's own arguments
    assert tc.max_nonfinite_steps == 5 and "max_nonfinite_steps" not in resume_keys(tc)   # old runs resume


def test_a_run_saved_under_the_old_flag_names_still_resumes(tmp_path):
    """resume_keys written before the embedder block had one name per concept (fp16,
    eval_examples_for_task) are read with today's names."""
    gen, n = batches_of(4)
    c = cfg(tmp_path, num_train_epochs=1)
    fit(lora_toy(c), toy_loss, gen, n, c, run_keys={"examples_for_task": None})
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)      # as an older version wrote it
    keys = json.loads(state["resume_keys"])
    keys["fp16"], keys["eval_examples_for_task"] = keys.pop("use_fp16"), keys.pop("examples_for_task")
    state["resume_keys"] = json.dumps(keys)
    torch.save(state, tmp_path / STATE_FILE)
    c2 = cfg(tmp_path, num_train_epochs=2)
    assert len(fit(lora_toy(c2), toy_loss, gen, n, c2, run_keys={"examples_for_task": None})) == 2
    c3 = cfg(tmp_path, num_train_epochs=3, use_fp16=False)
    with pytest.raises(ValueError, match="other settings \\(use_fp16\\)"):
        fit(lora_toy(c3), toy_loss, gen, n, c3, run_keys={"examples_for_task": None})


def test_resume_keys_come_from_field_metadata():
    """What must match to resume is declared on the field: run bookkeeping is out, the recipe is in,
    and a field added later counts as its old value in a run saved before it existed."""
    from helpers.train.args import settings_diff
    from helpers.train.kd_finetune import KDArgs
    keys = resume_keys(KDArgs())
    assert {"learning_rate", "lora_rank", "train_data", "temperature", "query_max_len"} <= set(keys)
    assert not {"output_dir", "num_train_epochs", "devices", "embedder_batch_size", "deadline",
                "length_buckets", "share_prefix", "show_progress"} & set(keys)
    old = {k: v for k, v in keys.items() if k not in ("use_lora", "kd_weight", "group_by_length")}
    assert settings_diff(old, keys, KDArgs) == []                      # saved before those fields existed
    assert settings_diff(old, {**keys, "use_lora": False}, KDArgs) == ["use_lora"]
    assert settings_diff({**keys, "length_buckets": False}, keys, KDArgs) == []   # not a resume field


def test_an_fp16_overflow_is_a_counted_skip_and_the_history_stays_valid_json(tmp_path, monkeypatch):
    """T4 path on CPU: fp16 autocast with a GradScaler. One step's loss x 1e34 is finite, but its
    scaled gradients overflow: the step is skipped and counted like any non-finite one, no inf
    reaches loss_history.json, and the run resumes after it (the old loop wrote grad_norm: inf,
    and write_json raised at every epoch end and every resume)."""
    import helpers.train.loop as loop
    monkeypatch.setattr(loop, "dtype_for", lambda device, fp16=True: torch.float16)
    gen, n = batches_of(2)

    def big_on(calls: set, snapshots: list):
        def loss_fn(model, batch):
            snapshots.append(params(model))
            loss = toy_loss(model, batch)
            return loss * 1e34 if len(snapshots) in calls else loss
        return loss_fn
    for max_grad_norm in (1.0, 0.0):          # with and without clipping
        out = tmp_path / f"clip{max_grad_norm}"
        c = cfg(out / "plain", num_train_epochs=1, max_grad_norm=max_grad_norm)
        plain = fit(lora_toy(c), toy_loss, gen, n, c)[0].get("skipped_steps", 0)   # the scaler's own calibration
        c = cfg(out, num_train_epochs=1, max_grad_norm=max_grad_norm)
        snaps = []
        rows = fit(lora_toy(c), big_on({4}, snaps), gen, n, c)
        assert rows[0]["skipped_steps"] == plain + 1 and rows[0]["global_step"] == 4
        history = json.loads((out / "loss_history.json").read_text(),
                             parse_constant=lambda c: pytest.fail(f"{c} in loss_history.json"))
        assert all(h["grad_norm"] is None or h["grad_norm"] < 1e30 for h in history)
        c2 = cfg(out, num_train_epochs=2, max_grad_norm=max_grad_norm)        # resumes, no raise
        assert [r["epoch"] for r in fit(lora_toy(c2), toy_loss, gen, n, c2)] == [1, 2]


def test_a_nan_passage_embedding_skips_the_step_instead_of_raising(tmp_path):
    """A non-finite embedding used to raise ValueError inside the loss (and kill both DDP ranks);
    now the loss is NaN and the loop skips that step."""
    from helpers.train.losses import EmbedderLoss
    loss = EmbedderLoss(temperature=0.05)
    gen, n = batches_of(2)
    calls = []

    def loss_fn(model, batch):
        calls.append(1)
        q = torch.nn.functional.normalize(model.q_proj(batch["x"]), dim=-1)     # [2, 4]
        p = torch.nn.functional.normalize(model.q_proj(batch["x"].flip(0)), dim=-1)
        if len(calls) == 3:
            p = p.clone()
            p[1, 0] = float("nan")
        return loss(q, p)
    c = cfg(tmp_path, num_train_epochs=1)
    rows = fit(lora_toy(c), loss_fn, gen, n, c)
    assert rows[0]["skipped_steps"] == 1 and rows[0]["global_step"] == 4


def test_fault_steps_switch_makes_the_chosen_steps_bad_and_the_run_finishes(tmp_path, monkeypatch):
    """$EEDI_FAULT_STEPS (the GPU check's NaN / overflow step in a real run): the named optimizer
    steps' losses are multiplied, skipped and counted; the history stays valid JSON; a bad spec is
    one error naming the switch."""
    from helpers.train.loop import fault_steps
    assert fault_steps("") == {} and fault_steps("2:1e34, 4:nan")[2] == 1e34
    assert math.isnan(fault_steps("4:nan")[4])
    for bad in ("x:1", "0:2", "3"):
        with pytest.raises(ValueError, match="EEDI_FAULT_STEPS.*step:factor"):
            fault_steps(bad)
    gen, n = batches_of(2)
    monkeypatch.setenv("EEDI_FAULT_STEPS", "2:nan")
    c = cfg(tmp_path, num_train_epochs=1)
    rows = fit(lora_toy(c), toy_loss, gen, n, c)
    assert rows[0]["skipped_steps"] == 1 and rows[0]["global_step"] == 4
    json.loads((tmp_path / "loss_history.json").read_text(), parse_constant=lambda c: pytest.fail(c))
