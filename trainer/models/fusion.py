"""Item representations: ID (+ attributes) fused with gated, projected image/text features.

``e_i = e_id + sum_m mask_m(i) * g_m(i) ⊙ P_m(v_m(i))``. ``P_m`` is one learned projection
shared by every view of modality m. The default gate is ``sigmoid(W_m [e_id; P_m(v)])``; the
``paper_code`` gate is the official one (``tanh`` of a merger MLP over [id; img; txt] plus the
modality vector). A masked modality contributes nothing: its term is multiplied by the mask
bit and, in the merger, its block of the first layer is dropped, so no gate reads a filler.
"""
from __future__ import annotations

import torch
from torch import nn

from trainer.features import FeatureBank
from trainer.models.ops import Dropout


class ItemEncoder(nn.Module):
    def __init__(self, n_items: int, dim: int, bank: FeatureBank | None, fuse: bool,
                 attributes: dict[str, torch.Tensor], attribute_sizes: dict[str, int],
                 paper_code: bool, dropout: float) -> None:
        super().__init__()
        self.n_items = n_items
        self.dim = dim
        self.mask_token = n_items + 1  # the CL4SRec mask item (macl_com); never a target
        self.id_emb = nn.Embedding(n_items + 2, dim, padding_idx=0)
        self.attr_emb = nn.ModuleDict({name: nn.Embedding(attribute_sizes[name], dim,
                                                          padding_idx=0) for name in attributes})
        for name, codes in attributes.items():
            self.register_buffer(f"attr_{name}", torch.cat([codes, codes.new_zeros(1)]),
                                 persistent=False)
        self.bank = bank
        self.modalities = bank.modalities if (bank is not None and fuse) else []
        self.proj = nn.ModuleDict({m: nn.Linear(bank.dim(m), dim) for m in self.modalities})
        self.paper_code = paper_code
        if paper_code:
            self.merge_id = nn.Linear(dim, dim)
            self.merge_mod = nn.ModuleDict({m: nn.Linear(dim, dim, bias=False)
                                            for m in self.modalities})
            self.merge2 = nn.Linear(dim, dim)
            self.merge_drop = Dropout(dropout)
            self.gate_t = nn.ModuleDict({m: nn.Linear(dim, dim) for m in self.modalities})
            self.gate_v = nn.ModuleDict({m: nn.Linear(dim, dim) for m in self.modalities})
        else:
            self.gate = nn.ModuleDict({m: nn.Linear(2 * dim, dim) for m in self.modalities})
        # the feature tables stay outside the state dict (they are data, and may be memory-mapped)
        self._values: dict[str, torch.Tensor] = {}
        self._masks: dict[str, torch.Tensor] = {}
        if bank is not None:
            self._values = dict(bank.values)
            self._masks = dict(bank.masks)

    # ---- devices: feature tables follow the model unless they are memory-mapped -------------
    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        device = self.id_emb.weight.device
        if self.bank is not None:
            keep_on_host = self.bank.mapped
            self._values = {m: v if keep_on_host else v.to(device) for m, v in self.bank.values.items()}
            self._masks = {m: v.to(device) for m, v in self.bank.masks.items()}
        return out

    def feature_rows(self, modality: str, table: torch.Tensor | int,
                     items: torch.Tensor) -> torch.Tensor:
        """Raw feature rows (float32) of ``items`` in table(s) ``table`` of one modality."""
        values = self._values[modality]
        device = self.id_emb.weight.device
        if values.device != device:
            t = table.cpu() if isinstance(table, torch.Tensor) else table
            return values[t, items.cpu()].to(device, torch.float32)
        return values[table, items].float()

    def feature_mask(self, modality: str, table: torch.Tensor | int,
                     items: torch.Tensor) -> torch.Tensor:
        return self._masks[modality][table, items]

    def project(self, modality: str, table: torch.Tensor | int, items: torch.Tensor) -> torch.Tensor:
        return self.proj[modality](self.feature_rows(modality, table, items))

    # ---- representations -----------------------------------------------------------------
    def base(self, items: torch.Tensor) -> torch.Tensor:
        """ID embedding plus optional attribute embeddings (absent attribute = padding row)."""
        e = self.id_emb(items)
        for name, emb in self.attr_emb.items():
            e = e + emb(getattr(self, f"attr_{name}")[items])
        return e

    def fused(self, items: torch.Tensor) -> torch.Tensor:
        """Fused vectors of any index tensor (mask token and padding get ID/base only)."""
        e_id = self.id_emb(items)
        e = self.base(items) if self.attr_emb else e_id
        if not self.modalities:
            return e
        real = items <= self.n_items
        safe = torch.where(real, items, torch.zeros_like(items))
        proj, mask = {}, {}
        for m in self.modalities:
            k = self.bank.fusion[m]
            proj[m] = self.project(m, k, safe)
            mask[m] = (self.feature_mask(m, k, safe) & real).unsqueeze(-1).to(e.dtype)
        if self.paper_code:
            pre = self.merge_id(e_id)
            for m in self.modalities:
                pre = pre + mask[m] * self.merge_mod[m](proj[m])
            t = self.merge_drop(torch.tanh(self.merge2(self.merge_drop(torch.tanh(pre)))))
            for m in self.modalities:
                g = torch.tanh(self.gate_t[m](t) + self.gate_v[m](proj[m]))
                e = e + mask[m] * g * proj[m]
            return e
        for m in self.modalities:
            g = torch.sigmoid(self.gate[m](torch.cat([e_id, proj[m]], dim=-1)))
            e = e + mask[m] * g * proj[m]
        return e

    def table(self) -> torch.Tensor:
        """(n_items + 1, d) fused vectors of the whole catalog (row 0 = padding)."""
        return self.fused(torch.arange(self.n_items + 1, device=self.id_emb.weight.device))
