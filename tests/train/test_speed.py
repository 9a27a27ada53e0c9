"""Training-speed pieces: fused CPU LoRA (same maths as peft), length chunks (same embeddings),
length-grouped batches (seeded, every row once), the checkpointing rule, full fine-tuning."""
import copy
import random

import pytest
import torch

from helpers.train import fast_lora
from helpers.common.tensors import length_chunks
from helpers.train.kd_finetune import encode
from helpers.common.memory import checkpointing_rule
from helpers.train.args import TrainArgs
from helpers.train.lora import add_lora
from helpers.train.loop import fit
from helpers.train.groups import GroupBatches, batch_indices
from helpers.train.kd_finetune import KDArgs


class Two(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.q_proj = torch.nn.Linear(12, 20)
        self.v_proj = torch.nn.Linear(20, 12)

    def forward(self, x):
        return self.v_proj(torch.tanh(self.q_proj(x)))


def lora_pair(p):
    from peft import LoraConfig, get_peft_model
    ref = get_peft_model(Two(), LoraConfig(r=4, lora_alpha=8, lora_dropout=p, target_modules=["q_proj", "v_proj"]))
    for n, w in ref.named_parameters():
        if "lora_B" in n:
            w.data.normal_()
    fast = copy.deepcopy(ref)
    assert fast_lora.enable(fast) == 2
    return ref, fast


def grads(m):
    return {n: w.grad.clone() for n, w in m.named_parameters() if w.requires_grad}


def test_fused_lora_equals_peft_without_dropout():
    ref, fast = lora_pair(0.0)
    x = torch.randn(3, 5, 12)
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    yr, yf = ref.train()(xr), fast.train()(xf)
    yr.square().sum().backward()
    yf.square().sum().backward()
    torch.testing.assert_close(yf, yr)
    torch.testing.assert_close(xf.grad, xr.grad)
    gr, gf = grads(ref), grads(fast)
    assert gr.keys() == gf.keys()
    for k in gr:
        torch.testing.assert_close(gf[k], gr[k])


def test_fused_lora_dropout_is_x_times_mask_over_keep():
    """With dropout: the output and gradients of base(x) + s/keep * B(A(x * mask)) for the mask drawn."""
    _, fast = lora_pair(0.25)
    lin = fast.base_model.model.q_proj
    W, b = lin.base_layer.weight, lin.base_layer.bias
    A, B = lin.lora_A["default"].weight, lin.lora_B["default"].weight
    s = lin.scaling["default"]
    x = torch.randn(7, 12)
    torch.manual_seed(5)
    y = lin.train()(x.clone().requires_grad_())
    torch.manual_seed(5)
    mask, keep = fast_lora.dropout_mask((7, 12), 0.25)
    ref = x @ W.t() + b + (s / keep) * ((x * mask) @ A.t()) @ B.t()
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    torch.manual_seed(5)
    xf = x.clone().requires_grad_()
    da, db, dx = torch.autograd.grad(lin(xf), (A, B, xf), g)
    xr = x.clone().requires_grad_()
    ea, eb, ex = torch.autograd.grad(xr @ W.t() + b + (s / keep) * ((xr * mask) @ A.t()) @ B.t(), (A, B, xr), g)
    for u, v in ((da, ea), (db, eb), (dx, ex)):
        torch.testing.assert_close(u, v)


def test_dropout_mask_rate_and_seeding():
    torch.manual_seed(1)
    m, keep = fast_lora.dropout_mask((400, 500), 0.1)
    assert abs(keep - 0.9) < 1e-4 and abs(m.float().mean().item() - keep) < 0.005
    torch.manual_seed(1)
    assert fast_lora.dropout_mask((400, 500), 0.1)[0].equal(m)
    assert fast_lora.dropout_mask((3,), 0.0)[0].all()


def test_fused_lora_falls_back_to_peft_in_eval_and_no_grad(monkeypatch):
    ref, fast = lora_pair(0.3)
    x = torch.randn(2, 12)

    def refuse(*a):
        raise AssertionError("fused path used")
    monkeypatch.setattr(fast_lora._LoraLinear, "apply", refuse)
    with torch.no_grad():
        fast.train()(x)                                   # no gradient: peft's own forward
        torch.testing.assert_close(fast.eval()(x), ref.eval()(x))


def test_length_chunks_cover_every_row_once():
    rng = random.Random(0)
    for _ in range(20):
        ln = [rng.randint(1, 200) for _ in range(rng.randint(1, 40))]
        ch = length_chunks(ln)
        assert sorted(i for c in ch for i in c) == list(range(len(ln)))
        assert sum(len(c) * max(ln[i] for i in c) for c in ch) <= len(ln) * max(ln)
    assert length_chunks([5, 5, 5]) == [[0, 1, 2]]                  # nothing to gain: one forward
    assert len(length_chunks([300] * 4 + [10] * 28)) == 2


@pytest.mark.parametrize("side", ["right", "left"])
def test_in_length_chunks_cuts_each_chunk_and_keeps_the_row_order(side):
    from helpers.common.tensors import in_length_chunks, pad
    seqs = [[7] * n for n in (20, 2, 19, 3, 18, 1)]
    ids, mask = pad(seqs, 0, side)
    widths = []

    def fn(input_ids, attention_mask, token_type_ids):
        widths.append(input_ids.shape[1])
        assert attention_mask.any(dim=0).all()           # every kept column is used by some row
        return torch.stack([(input_ids * attention_mask).sum(1), token_type_ids.sum(1)], 1)

    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": mask * 2}
    got = in_length_chunks(fn, inputs, overhead=4)
    assert got.tolist() == [[7 * len(s), 2 * len(s)] for s in seqs]
    assert len(widths) == 2 and sorted(widths) == [3, 20]
    widths.clear()
    assert in_length_chunks(fn, inputs, overhead=10 ** 6).tolist() == got.tolist() and widths == [20]
    with pytest.raises(ValueError, match="attention_mask"):
        in_length_chunks(fn, {"input_ids": ids, "attention_mask": mask[0]})


@pytest.mark.parametrize("side", ["right", "left"])
def test_bucketed_encode_equals_plain(side):
    """Right padding on an encoder (absolute positions), left padding on a RoPE decoder."""
    from tests.fixtures.models import tiny_bert, tiny_llama
    size = dict(vocab_size=50, hidden_size=16, intermediate_size=32, num_attention_heads=2, max_position_embeddings=64)
    model = (tiny_bert(seed=0, **size) if side == "right" else tiny_llama(seed=0, **size)).eval()
    lens = [30, 3, 28, 4, 5, 29, 2, 27]
    T = max(lens)
    ids = torch.zeros(len(lens), T, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lens):
        sl = slice(T - n, T) if side == "left" else slice(0, n)
        ids[i, sl] = torch.randint(1, 50, (n,))
        mask[i, sl] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    assert len(length_chunks(lens, 16)) > 1
    for pooling in (("mean", "cls", "last_token") if side == "right" else ("mean", "last_token")):
        with torch.no_grad():
            plain, fast = encode(model, batch, pooling), encode(model, batch, pooling, True, overhead=16)
        torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def test_length_grouped_batches_seeded_and_every_row_once():
    n, bs, lengths = 203, 8, [random.Random(i).randint(5, 300) for i in range(203)]
    a = batch_indices(n, bs, 3, 1, lengths=lengths, window=4)
    assert a == batch_indices(n, bs, 3, 1, lengths=lengths, window=4)           # resume-exact
    assert a != batch_indices(n, bs, 3, 2, lengths=lengths, window=4)
    plain = batch_indices(n, bs, 3, 1)
    assert sorted(i for b in a for i in b) == sorted(i for b in plain for i in b)  # same rows, same remainder
    assert len(a) == len(plain) and all(len(b) == bs for b in a)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in a)
    spread_plain = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plain)
    assert spread < spread_plain / 2
    assert batch_indices(n, bs, 3, 1, shuffle=False, drop_last=False, lengths=lengths) == \
        batch_indices(n, bs, 3, 1, shuffle=False, drop_last=False)              # evaluation: unchanged


def test_group_batches_group_by_length_is_reproducible():
    from transformers import AutoTokenizer
    from helpers.common.models import resolve_model
    tok = AutoTokenizer.from_pretrained(resolve_model("demo:all-minilm-l6-v2"))
    rows = [{"query": "word " * (1 + (i * 7) % 40), "pos": [f"p {i}"], "neg": [f"n {i} {j}" for j in range(3)]}
            for i in range(40)]
    cfg = KDArgs(embedder_model_class="encoder-only-base", train_group_size=2, query_max_len=64, passage_max_len=16,
                 knowledge_distillation=False, query_instruction_format="{}{}", group_by_length=True, max_examples=0)
    gb = GroupBatches(rows, tok, cfg, 4, seed=0, append_eos=False, length_window=5)
    b1, b2 = list(gb(1)), list(gb(1))
    assert len(b1) == len(gb) == 10
    for x, y in zip(b1, b2):
        assert x["queries"]["input_ids"].equal(y["queries"]["input_ids"])
    widths = [b["queries"]["input_ids"].shape[1] for b in b1]
    from dataclasses import replace
    gb_plain = GroupBatches(rows, tok, replace(cfg, group_by_length=False), 4, seed=0, append_eos=False, length_window=5)
    assert sum(widths) < sum(b["queries"]["input_ids"].shape[1] for b in gb_plain(1))


def test_checkpointing_rule(monkeypatch):
    import helpers.common.memory as T
    model = torch.nn.Linear(2, 2)
    assert checkpointing_rule(True, model, "cpu", 10, 10, 1) == (True, "as requested")
    assert checkpointing_rule(False, model, "cpu", 10, 10, 1) == (False, "as requested")
    monkeypatch.setattr(T, "_available_memory", lambda d: (64 * 2 ** 30, "test memory"))
    on, why = checkpointing_rule(None, model, "cpu", tokens=1000, longest=100, texts=8)
    assert not on and "off" in why and "auto" in why
    monkeypatch.setattr(T, "_available_memory", lambda d: (2 ** 20, "test memory"))
    on, why = checkpointing_rule(None, model, "cuda:0", tokens=100000, longest=512, texts=64)
    assert on and "memory needs it" in why


def test_full_finetuning_trains_every_weight(tmp_path):
    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.q_proj, self.head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)

        def forward(self, x):
            return self.head(torch.tanh(self.q_proj(x))).squeeze(-1)

        def save_pretrained(self, path, safe_serialization=True):
            torch.save(self.state_dict(), f"{path}/weights.pt")

    cfg = TrainArgs(output_dir=str(tmp_path), learning_rate=0.05, num_train_epochs=1, warmup_ratio=0.0,
                      use_lora=False, gradient_checkpointing=False, show_progress=False)
    m = add_lora(Toy(), cfg)
    assert type(m).__name__ == "Toy" and all(p.requires_grad for p in m.parameters())
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    x, y = torch.randn(8, 4), torch.randn(8)
    rows = fit(m, lambda mod, b: ((mod(b["x"]) - b["y"]) ** 2).mean(),
               lambda epoch: iter([{"x": x, "y": y}]), 1, cfg)
    assert rows[0]["global_step"] == 1
    assert all(not p.detach().equal(before[n]) for n, p in m.named_parameters())
    assert (tmp_path / "lora_epoch_1" / "weights.pt").exists()
