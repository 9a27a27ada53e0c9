"""A fused forward/backward for peft's LoRA ``Linear`` on CPU (training speed; same maths).

peft computes ``base(x) + B(A(dropout(x))) * scaling``: on CPU the dropout mask of every adapted
input (one float Bernoulli draw per element, 6-7 inputs per layer) and the full-size temporaries
(the dropped copy, the ``[N, out]`` LoRA output, its scaled copy) cost more than the LoRA matmuls
themselves. Here, in one autograd function:

- the dropout mask is drawn as 16-bit integers from 64-bit random words (4 elements per draw,
  torch's seeded CPU generator) and kept as ``bool``; the keep probability is ``p`` rounded to
  1/65536 (0.1 -> 0.100006) and the scale uses that exact probability, so the dropout is unbiased;
- ``scaling / keep`` is folded into one ``addmm`` onto the base output (no ``[N, out]`` temporaries);
- backward recomputes nothing large: it keeps the dropped input (needed for dA, as peft) and the
  ``[N, r]`` intermediate (for dB); the frozen base weight gets no gradient.

Used only where it is the same computation: a plain ``nn.Linear`` base on CPU, one active adapter,
no DoRA / LoRA bias / merged weights / per-call adapter names, no autocast. Anything else (CUDA,
QLoRA, eval-time mixes) goes through peft's own forward. :func:`enable` patches the modules of one
model (instance attributes, so saving, merging and unloading are peft's).
"""
from __future__ import annotations

import torch

_RES = 65536


def dropout_mask(shape, p: float, device="cpu") -> tuple[torch.Tensor, float]:
    """-> (bool keep-mask of ``shape``, the exact keep probability)."""
    n = 1
    for s in shape:
        n *= int(s)
    drop = min(_RES, max(0, round(p * _RES)))
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-2 ** 63, 2 ** 63 - 1)
    u16 = words.view(torch.int16)[:n]                 # uniform over [-32768, 32767]
    keep = u16 >= (drop - 32768)
    return keep.view(shape), 1.0 - drop / _RES


class _LoraLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, A, B, scaling: float, p: float):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        y = torch.nn.functional.linear(x2, weight, bias)
        if p > 0:
            mask, keep = dropout_mask(x2.shape, p, x2.device)
            xd = x2 * mask                               # as nn.Dropout: a product (2x faster than where)
            s = scaling / keep
        else:
            mask, xd, s = None, x2, scaling
        h = xd @ A.t()                                   # [N, r]
        y.addmm_(h, B.t(), alpha=s)
        ctx.save_for_backward(xd, mask, h, weight, A, B)
        ctx.s, ctx.shape = s, shape
        return y.view(*shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, g):
        xd, mask, h, weight, A, B = ctx.saved_tensors
        s = ctx.s
        g2 = g.reshape(-1, g.shape[-1])
        gB = g2 @ B                                       # [N, r]
        grad_A = (gB.t() @ xd).mul_(s) if ctx.needs_input_grad[3] else None
        grad_B = (g2.t() @ h).mul_(s) if ctx.needs_input_grad[4] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            lora = (gB @ A).mul_(s)
            if mask is not None:
                lora.mul_(mask)
            grad_x = torch.addmm(lora, g2, weight).view(ctx.shape)
        return grad_x, None, None, grad_A, grad_B, None, None


def _fast_forward(module, original):
    def forward(x, *args, **kwargs):
        if args or kwargs or not _eligible(module, x):
            return original(x, *args, **kwargs)
        name = module.active_adapters[0]
        drop = module.lora_dropout[name]
        p = float(getattr(drop, "p", 0.0)) if drop.training else 0.0
        base = module.base_layer
        return _LoraLinear.apply(x, base.weight, base.bias, module.lora_A[name].weight,
                                 module.lora_B[name].weight, float(module.scaling[name]), p)
    return forward


def _eligible(module, x) -> bool:
    if x.device.type != "cpu" or torch.is_autocast_enabled("cpu") or not torch.is_grad_enabled():
        return False
    if module.merged or module.disable_adapters or len(module.active_adapters) != 1:
        return False
    name = module.active_adapters[0]
    if name not in module.lora_A or module.use_dora.get(name, False):
        return False
    if getattr(module, "lora_bias", {}).get(name, False):
        return False
    base = module.base_layer
    if type(base) is not torch.nn.Linear or base.weight.requires_grad:
        return False
    A, B = module.lora_A[name].weight, module.lora_B[name].weight
    return x.dtype == base.weight.dtype == A.dtype == B.dtype and getattr(module.lora_A[name], "bias", None) is None


def enable(model) -> int:
    """Patch every peft LoRA ``Linear`` of ``model`` -> how many."""
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:
        return 0
    n = 0
    for m in model.modules():
        if type(m) is LoraLinear and not getattr(m, "_fast_lora", False):
            m.forward = _fast_forward(m, m.forward)
            m._fast_lora = True
            n += 1
    return n
