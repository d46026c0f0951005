"""Session encoders over left-padded item-vector sequences.

Sequences are right-aligned (padding on the left), so the last input item always sits in the
last column and its position embedding is the same whatever the batch's padded width.

``forward(x, valid, at)``: with ``at=None`` every position's output (B, L, d); with ``at`` a
(B,) tensor of positions, only those outputs (B, d). Because attention is causal, the last
block then computes its queries, attention rows and FFN for those positions only — the same
numbers as reading them out of the full output, at about half the cost of a 2-layer model.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainer.models.ops import Dropout, dropout


def last_valid_index(valid: torch.Tensor) -> torch.Tensor:
    """(B, L) bool -> (B,) index of each row's last True column."""
    L = valid.shape[1]
    return (L - 1) - torch.flip(valid, dims=[1]).to(torch.int8).argmax(dim=1)


def attention_bias(valid: torch.Tensor, causal: bool) -> torch.Tensor:
    """(B, 1, L, L) additive mask: 0 where a query may attend to a key, else very negative.

    Padded keys get -1e9 (finite) and future keys -inf: a padded query row (left padding, so
    all its visible keys are padding) stays a finite softmax and is never read by valid rows.
    """
    L = valid.shape[1]
    key = torch.zeros(valid.shape, dtype=torch.float32, device=valid.device)
    key = key.masked_fill_(~valid, -1e9)[:, None, None, :]
    if not causal:
        return key.expand(-1, 1, L, L)
    future = torch.full((L, L), float("-inf"), device=valid.device).triu_(1)
    return key + future


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, out_proj: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim) if out_proj else nn.Identity()
        self.dropout = dropout

    def forward(self, x: torch.Tensor, bias: torch.Tensor,
                query: torch.Tensor | None = None) -> torch.Tensor:
        """Keys/values from ``x`` (B, L, d); queries from ``query`` (B, Lq, d), default ``x``;
        ``bias`` (B, 1, Lq, L)."""
        B, L, d = x.shape
        H, dh = self.heads, d // self.heads
        if query is None:
            q, k, v = self.qkv(x).split(d, dim=-1)
        else:
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(query, w[:d], b[:d])
            k, v = F.linear(x, w[d:], b[d:]).split(d, dim=-1)
        Lq = q.shape[1]
        q = q.view(B, Lq, H, dh).transpose(1, 2)
        k = k.view(B, L, H, dh).transpose(1, 2)
        v = v.view(B, L, H, dh).transpose(1, 2)
        p = self.dropout if self.training else 0.0
        if x.is_cuda:
            # finite floor: under fp16 autocast -1e9 would become -inf and empty padded rows
            mask = bias.to(q.dtype).clamp_min(torch.finfo(q.dtype).min)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        else:  # on CPU the explicit form is faster than SDPA's math path when dropout is on
            att = torch.softmax(q @ k.transpose(-1, -2) * (1.0 / math.sqrt(dh)) + bias, dim=-1)
            o = dropout(att, p, self.training) @ v
        return self.out(o.transpose(1, 2).reshape(B, Lq, d))


class Block(nn.Module):
    """Post-LayerNorm transformer block (as SASRec/BERT): attention, then a GELU FFN."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.attn = SelfAttention(dim, heads, attn_dropout)
        self.norm1 = nn.LayerNorm(dim, eps=1e-12)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
        self.norm2 = nn.LayerNorm(dim, eps=1e-12)
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor,
                query: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm1((x if query is None else query) + self.drop(self.attn(x, bias, query)))
        return self.norm2(h + self.drop(self.ffn(h)))


def _rows(t: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    return t[torch.arange(t.shape[0], device=t.device), at]


class SASRecEncoder(nn.Module):
    """Learned positions + causal self-attention blocks (configurable depth and heads)."""

    def __init__(self, dim: int, layers: int, heads: int, ffn_dim: int, dropout: float,
                 attn_dropout: float, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.pos = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.drop = Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, ffn_dim, dropout, attn_dropout)
                                    for _ in range(layers))

    def forward(self, x: torch.Tensor, valid: torch.Tensor,
                at: torch.Tensor | None = None) -> torch.Tensor:
        L = x.shape[1]
        h = self.drop(self.norm(x + self.pos.weight[self.max_len - L:]))
        bias = attention_bias(valid, causal=True)
        for block in self.blocks[:-1]:
            h = block(h, bias)
        last = self.blocks[-1]
        if at is None:
            return last(h, bias)
        q_bias = _rows(bias[:, 0], at)[:, None, None, :]  # (B, 1, 1, L)
        return last(h, q_bias, _rows(h, at)[:, None, :])[:, 0]


class PaperCodeEncoder(nn.Module):
    """The official MACL encoder: one multi-head attention layer over the session, no positions,
    no FFN, no LayerNorm, padding masked (not causal); the session is read at its last item."""

    def __init__(self, dim: int, heads: int, attn_dropout: float) -> None:
        super().__init__()
        self.attn = SelfAttention(dim, heads, attn_dropout, out_proj=False)

    def forward(self, x: torch.Tensor, valid: torch.Tensor,
                at: torch.Tensor | None = None) -> torch.Tensor:
        bias = attention_bias(valid, causal=False)
        if at is None:
            return self.attn(x, bias)
        q_bias = _rows(bias[:, 0], at)[:, None, None, :]
        return self.attn(x, q_bias, _rows(x, at)[:, None, :])[:, 0]
