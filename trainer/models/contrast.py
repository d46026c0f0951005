"""Contrastive objectives with adaptive per-anchor weights.

Default: InfoNCE with temperature tau on cosine similarities; an MLP reads (anchor, positive,
mean of negatives) and gives each anchor's signal set a weight; weights are a softmax over the
anchors scaled to mean 1, so uniform weights (``macl_noadp``) give the plain mean InfoNCE.

``paper_code``: the official code's formulation — log base 10, tau = 1, the weights (softmax
over anchors, summing to 1) multiply the positive term only, and the loss is a sum over anchors:
``sum_i log10(sum_j exp(cos(a_i, n_ij))) - sum_i w_i * log10(exp(cos(a_i, p_i)))``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainer.models.ops import Dropout


class AdaptiveWeights(nn.Module):
    """Per-anchor weight logits from (anchor, positive, mean negative)."""

    def __init__(self, dim: int, hidden: int, paper_code: bool, dropout: float) -> None:
        super().__init__()
        if paper_code:  # three tanh layers 3d -> 3d/4 -> 3d/8 -> 1, dropout on the input too
            d = 3 * dim
            self.net = nn.Sequential(Dropout(dropout), nn.Linear(d, d // 4), nn.Tanh(),
                                     Dropout(dropout), nn.Linear(d // 4, d // 8), nn.Tanh(),
                                     Dropout(dropout), nn.Linear(d // 8, 1), nn.Tanh())
        else:
            self.net = nn.Sequential(nn.Linear(3 * dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor,
                mean_negative: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([anchor, positive, mean_negative], dim=-1)).squeeze(-1)


def normalised_weights(logits: torch.Tensor | None, n: int, like: torch.Tensor) -> torch.Tensor:
    """Softmax over anchors scaled to mean 1; uniform ones when there is no weighting MLP."""
    if logits is None:
        return torch.ones(n, dtype=like.dtype, device=like.device)
    return torch.softmax(logits.float(), dim=0) * n


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, tau: float,
             weights: torch.Tensor, negative_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean InfoNCE. anchor/positive (A, d), negatives (A, M, d) or shared (M, d);
    ``negative_mask`` (A, M) True where a negative is invalid (e.g. the anchor itself)."""
    a = F.normalize(anchor.float(), dim=-1)
    p = F.normalize(positive.float(), dim=-1)
    n = F.normalize(negatives.float(), dim=-1)
    pos = (a * p).sum(-1, keepdim=True)
    neg = torch.einsum("ad,amd->am", a, n) if n.dim() == 3 else a @ n.T
    if negative_mask is not None:
        neg = neg.masked_fill(negative_mask, float("-inf"))
    logits = torch.cat([pos, neg], dim=1) / tau
    per_anchor = -torch.log_softmax(logits, dim=1)[:, 0]
    return (weights * per_anchor).mean()


def paper_code_contrast(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
                        weights: torch.Tensor) -> torch.Tensor:
    """The official loss; ``weights`` sum to 1 over anchors; negatives (A, M, d) or (M, d)."""
    a = F.normalize(anchor.float(), dim=-1, eps=1e-12)
    p = F.normalize(positive.float(), dim=-1, eps=1e-12)
    n = F.normalize(negatives.float(), dim=-1, eps=1e-12)
    pos = (a * p).sum(-1) / math.log(10.0)  # log10(exp(cos)) with tau = 1
    neg = torch.einsum("ad,amd->am", a, n) if n.dim() == 3 else a @ n.T
    neg_term = torch.logsumexp(neg, dim=1) / math.log(10.0)  # log10(sum exp(cos))
    return neg_term.sum() - (weights * pos).sum()


def projection_head(dim: int, paper_code: bool, dropout: float) -> nn.Module:
    """Maps representations into the contrast space (paper_code: tanh(Linear) with dropout)."""
    if paper_code:
        return nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), Dropout(dropout))
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
