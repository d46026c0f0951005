"""Small ops the hot path runs many times per step, written for CPU speed."""
from __future__ import annotations

import torch
from torch import nn


class _Dropout(torch.autograd.Function):
    """Inverted dropout whose mask comes from random bytes: one 64-bit draw feeds 8 elements,
    several times faster on CPU than the per-element ``bernoulli_`` of ``F.dropout``. The drop
    probability is therefore quantised to 1/256 (0.2 -> 51/256 = 0.199)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        n = x.numel()
        words = torch.randint(-2 ** 63, 2 ** 63 - 1, ((n + 7) // 8,), dtype=torch.int64)
        noise = words.view(torch.uint8)[:n].view(x.shape)
        threshold = int(round(p * 256))
        keep = (noise >= threshold).to(x.dtype).mul_(256.0 / (256 - threshold))
        ctx.save_for_backward(keep)
        return x * keep

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return grad * keep, None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if not training or p <= 0.0:
        return x
    if x.is_cuda or p * 256 > 255.5:
        return nn.functional.dropout(x, p, True)
    return _Dropout.apply(x, p)


class Dropout(nn.Module):
    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
