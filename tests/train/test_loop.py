"""The generic LoRA loop on a toy model: schedule, accumulation, clipping, resume, refusal."""
import json

import pytest
import torch

from helpers.train.loop import TrainConfig, add_lora, fit, linear_schedule


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


def cfg(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), learning_rate=0.05, num_train_epochs=2, warmup_ratio=0.0,
                lora_rank=2, lora_alpha=4, lora_dropout=0.0, target_modules=("q_proj",),
                gradient_checkpointing=False, show_progress=False, max_grad_norm=0.0)
    base.update(kw)
    return TrainConfig(**base)


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
    c = cfg(tmp_path, num_train_epochs=1, resume_keys={"train_data": "a.jsonl"})
    fit(lora_toy(c), toy_loss, gen, n, c)
    c2 = cfg(tmp_path, num_train_epochs=2, resume_keys={"train_data": "b.jsonl"})
    with pytest.raises(ValueError, match="other settings \\(train_data\\)"):
        fit(lora_toy(c2), toy_loss, gen, n, c2)
    c3 = cfg(tmp_path, num_train_epochs=1, overwrite_output_dir=True, resume_keys={"train_data": "b.jsonl"})
    assert len(fit(lora_toy(c3), toy_loss, gen, n, c3)) == 1


def test_lora_targets_must_exist(tmp_path):
    with pytest.raises(ValueError, match="none is a linear layer.*'head'"):
        add_lora(Toy(), cfg(tmp_path, target_modules=("gate_proj",)))
