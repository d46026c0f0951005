"""Session encoders over left-padded item-vector sequences.

Sequences are right-aligned (padding on the left), so the last input item always sits in the
last column and its position embedding is the same whatever the batch's padded width.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def last_valid(h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, L, d) -> (B, d): the output at each row's last valid position."""
    L = valid.shape[1]
    idx = (L - 1) - torch.flip(valid, dims=[1]).to(torch.int8).argmax(dim=1)
    return h[torch.arange(h.shape[0], device=h.device), idx]


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, out_proj: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim) if out_proj else nn.Identity()
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``mask`` (B, 1, L, L) bool: True where a query may attend to a key."""
        B, L, d = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(o.transpose(1, 2).reshape(B, L, d))


class Block(nn.Module):
    """Post-LayerNorm transformer block (as SASRec/BERT): attention, then a GELU FFN."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.attn = SelfAttention(dim, heads, attn_dropout)
        self.norm1 = nn.LayerNorm(dim, eps=1e-12)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
        self.norm2 = nn.LayerNorm(dim, eps=1e-12)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.attn(x, mask)))
        return self.norm2(x + self.drop(self.ffn(x)))


class SASRecEncoder(nn.Module):
    """Learned positions + causal self-attention blocks (configurable depth and heads)."""

    def __init__(self, dim: int, layers: int, heads: int, ffn_dim: int, dropout: float,
                 attn_dropout: float, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.pos = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, ffn_dim, dropout, attn_dropout)
                                    for _ in range(layers))

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        L = x.shape[1]
        h = self.drop(self.norm(x + self.pos.weight[self.max_len - L:]))
        causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
        # padded query rows may attend to themselves only, so no softmax row is empty
        mask = (causal & valid[:, None, None, :]) | torch.eye(L, dtype=torch.bool, device=x.device)
        for block in self.blocks:
            h = block(h, mask)
        return h


class PaperCodeEncoder(nn.Module):
    """The official MACL encoder: one multi-head attention layer over the session, no positions,
    no FFN, no LayerNorm, padding masked (not causal); the session is read at its last item."""

    def __init__(self, dim: int, heads: int, attn_dropout: float) -> None:
        super().__init__()
        self.attn = SelfAttention(dim, heads, attn_dropout, out_proj=False)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        L = x.shape[1]
        mask = valid[:, None, None, :] | torch.eye(L, dtype=torch.bool, device=x.device)
        return self.attn(x, mask)
