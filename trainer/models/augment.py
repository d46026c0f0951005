"""CL4SRec item-sequence augmentations (crop, mask, reorder), vectorised over a batch.

Each row gets one augmentation drawn uniformly. Sequences are left-padded (valid items in the
last ``n`` columns), and stay so after augmentation.
"""
from __future__ import annotations

import torch


def augment_ids(items: torch.Tensor, mask_token: int, crop: float, mask: float,
                reorder: float) -> torch.Tensor:
    B, L = items.shape
    dev = items.device
    cols = torch.arange(L, device=dev).expand(B, L)
    n = (items > 0).sum(1)
    first = L - n  # first valid column
    kind = torch.randint(3, (B,), device=dev)

    # crop: keep a random contiguous span of max(1, floor(crop * n)) items, right-aligned
    c = torch.clamp((crop * n).floor().long(), min=1)
    start = first + (torch.rand(B, device=dev) * (n - c + 1)).floor().long()
    src = start[:, None] + cols - (L - c)[:, None]
    keep = cols >= (L - c)[:, None]
    cropped = torch.where(keep, items.gather(1, src.clamp(0, L - 1)), torch.zeros_like(items))

    # mask: each valid item replaced by the mask token with probability `mask`
    hit = (torch.rand(B, L, device=dev) < mask) & (items > 0)
    masked = torch.where(hit, torch.full_like(items, mask_token), items)

    # reorder: shuffle a random segment of max(1, floor(reorder * n)) items
    r = torch.clamp((reorder * n).floor().long(), min=1)
    seg = first + (torch.rand(B, device=dev) * (n - r + 1)).floor().long()
    inside = (cols >= seg[:, None]) & (cols < (seg + r)[:, None])
    key = torch.where(inside, seg[:, None].float() + torch.rand(B, L, device=dev) * r[:, None],
                      cols.float())
    reordered = items.gather(1, key.argsort(dim=1))

    out = torch.where((kind == 0)[:, None], cropped, masked)
    return torch.where((kind == 2)[:, None], reordered, out)
