"""SASRec with gated multimodal item fusion and MACL's contrastive tasks: every neural variant.

``--model`` picks the parts (see ``trainer.config.VARIANTS``): ``sasrec`` (ID only),
``sasrec_mm`` (fusion), ``macl`` (fusion + item/session contrast + adaptive weights),
``macl_noadp`` (uniform weights), ``macl_com`` (CL4SRec ID augmentations as the session views).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainer.config import RunConfig
from trainer.data import Batch, Catalog
from trainer.features import FeatureBank
from trainer.models.augment import augment_ids
from trainer.models.base import LossOutput, Recommender
from trainer.models.contrast import (
    AdaptiveWeights,
    info_nce,
    normalised_weights,
    paper_code_contrast,
    projection_head,
)
from trainer.models.encoder import PaperCodeEncoder, SASRecEncoder, last_valid_index
from trainer.models.fusion import ItemEncoder


class SessionModel(Recommender):
    def __init__(self, cfg: RunConfig, catalog: Catalog, bank: FeatureBank | None) -> None:
        super().__init__(catalog.n_items)
        variant = cfg.variant
        arch, self.lcfg = cfg.arch, cfg.loss
        self.paper = arch.paper_code
        self.contrast = variant["contrast"]
        self.adaptive = variant["adaptive"]
        self.tau = 1.0 if self.paper else self.lcfg.tau
        dim = arch.dim
        attrs = {k: torch.from_numpy(v) for k, v in catalog.attributes.items()}
        self.items = ItemEncoder(catalog.n_items, dim, bank, variant["fusion"], attrs,
                                 catalog.attribute_sizes, self.paper, arch.dropout)
        if self.paper:
            self.encoder = PaperCodeEncoder(dim, arch.heads, arch.attn_dropout)
        else:
            self.encoder = SASRecEncoder(dim, arch.layers, arch.heads, arch.ffn_dim, arch.dropout,
                                         arch.attn_dropout, cfg.data.max_len)
        self._table: torch.Tensor | None = None
        if self.contrast == "views":
            self._init_pool(bank)
            heads = 1 + len(self.pool) if self.paper else 1
            self.item_heads = nn.ModuleList(projection_head(dim, self.paper, arch.dropout)
                                            for _ in range(heads))
            self.sess_heads = nn.ModuleList(projection_head(dim, self.paper, arch.dropout)
                                            for _ in range(heads))
        elif self.contrast == "id_aug":
            self.sess_heads = nn.ModuleList([projection_head(dim, False, arch.dropout)])
        if self.contrast and self.adaptive:
            self.item_weights = AdaptiveWeights(dim, self.lcfg.adaptive_hidden, self.paper,
                                                arch.dropout)
            self.sess_weights = AdaptiveWeights(dim, self.lcfg.adaptive_hidden, self.paper,
                                                arch.dropout)
        self._init_parameters(dim)

    # ---- set-up ------------------------------------------------------------------------------
    def _init_pool(self, bank: FeatureBank) -> None:
        self.pool = [(m, k) for m, k in bank.pool if m in self.items.modalities]
        mods = self.items.modalities
        self.register_buffer("pool_mod", torch.tensor([mods.index(m) for m, _ in self.pool]),
                             persistent=False)
        self.register_buffer("pool_k", torch.tensor([k for _, k in self.pool]), persistent=False)
        ok = [torch.nonzero(bank.masks[m][k, 1:]).squeeze(1) + 1 for m, k in self.pool]
        counts = torch.tensor([len(o) for o in ok])
        table = torch.zeros(len(ok), max(int(counts.max()), 1), dtype=torch.int64)
        for p, o in enumerate(ok):
            table[p, :len(o)] = o
        self.register_buffer("ok_items", table, persistent=False)
        self.register_buffer("ok_counts", counts, persistent=False)

    def _init_parameters(self, dim: int) -> None:
        if self.paper:  # the official code: every parameter uniform(-1/sqrt(d), 1/sqrt(d))
            bound = 1.0 / math.sqrt(dim)
            for p in self.parameters():
                nn.init.uniform_(p, -bound, bound)
        else:
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, std=0.02)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
                elif isinstance(module, nn.Embedding):
                    nn.init.normal_(module.weight, std=0.02)
        with torch.no_grad():
            self.items.id_emb.weight[0].zero_()
            for emb in self.items.attr_emb.values():
                emb.weight[0].zero_()

    # ---- the contract --------------------------------------------------------------------------
    def score_all(self, batch: Batch) -> torch.Tensor:
        table = self._table if self._table is not None else self.items.table()
        h = self.encode(F.embedding(batch.items, table), batch.items > 0)
        return self.mask_padding(h @ table.T)

    def scoring(self):
        return _TableCache(self)

    def encode(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Session vector: the encoder output at the last (always valid) position."""
        last = torch.full((x.shape[0],), x.shape[1] - 1, dtype=torch.long, device=x.device)
        return self.encoder(x, valid, at=last)

    def loss(self, batch: Batch) -> LossOutput:
        cfg = self.lcfg
        items, valid = batch.items, batch.items > 0
        dev = items.device
        negs = None
        if cfg.rec_softmax == "full" or (self.contrast == "views" and cfg.item_anchors == "all"):
            table = self.items.table()
            lookup = lambda idx: F.embedding(idx, table)  # noqa: E731
        else:
            negs = torch.randint(1, self.n_items + 1, (cfg.sampled_negatives,), device=dev)
            uniq = torch.unique(torch.cat([items.flatten(), batch.target, negs]))
            vecs = self.items.fused(uniq)
            lookup = lambda idx: vecs[torch.searchsorted(uniq, idx)]  # noqa: E731
            table = None
        if cfg.rec_positions == "last":
            h = self.encode(lookup(items), valid)
            query, target = h, batch.target
        else:
            H = self.encoder(lookup(items), valid)
            h = H[:, -1]
            query, target = H[valid], batch.targets_all[valid]
        if table is not None and cfg.rec_softmax == "full":
            logits = self.mask_padding(query @ table.T)
            rec = F.cross_entropy(logits.float(), target)
        else:
            if negs is None:
                negs = torch.randint(1, self.n_items + 1, (cfg.sampled_negatives,), device=dev)
            pos = (query * lookup(target)).sum(-1, keepdim=True)
            neg = (query @ lookup(negs).T).masked_fill(negs[None, :] == target[:, None],
                                                        float("-inf"))
            rec = F.cross_entropy(torch.cat([pos, neg], 1).float(),
                                  torch.zeros_like(target))
        out = LossOutput(total=rec, parts={"rec": rec.detach()})
        if self.contrast == "views":
            item_loss, w_item = self._item_contrast(items, valid, batch.target, lookup)
            sess_loss, w_sess = self._session_contrast_views(items, valid, h)
        elif self.contrast == "id_aug":
            item_loss, w_item = None, None
            sess_loss, w_sess = self._session_contrast_ids(items, h, lookup)
        else:
            return out
        if item_loss is not None:
            out.total = out.total + cfg.alpha * item_loss
            out.parts["item"] = item_loss.detach()
            out.weights["item"] = w_item.detach()
        if sess_loss is not None:
            out.total = out.total + cfg.beta * sess_loss
            out.parts["sess"] = sess_loss.detach()
            out.weights["sess"] = w_sess.detach()
        return out

    # ---- feature pool helpers ------------------------------------------------------------------
    def _project_pool(self, view: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """P_m(v) of (pool table, item) pairs, each distinct pair projected once."""
        shape = items.shape
        view, items = view.reshape(-1), items.reshape(-1)
        key = view * (self.n_items + 1) + items
        uniq, inverse = torch.unique(key, return_inverse=True)
        u_view, u_item = uniq // (self.n_items + 1), uniq % (self.n_items + 1)
        out = None
        for mi, m in enumerate(self.items.modalities):
            sel = self.pool_mod[u_view] == mi
            if not bool(sel.any()):
                continue
            z = self.items.project(m, self.pool_k[u_view[sel]], u_item[sel])
            if out is None:
                out = z.new_zeros(len(uniq), z.shape[-1])
            out = out.index_put((torch.nonzero(sel).squeeze(1),), z)
        return out[inverse].reshape(*shape, -1)

    def _available(self, items: torch.Tensor) -> torch.Tensor:
        """(N, P) bool: which pool tables hold an ok row for each item."""
        return torch.stack([self.items.feature_mask(m, k, items) for m, k in self.pool], dim=-1)

    def _sample_ok(self, view: torch.Tensor, count: int) -> torch.Tensor:
        """``count`` random items with an ok row in each given pool table: (len(view), count)."""
        n_ok = self.ok_counts[view].clamp(min=1)
        r = (torch.rand(len(view), count, device=view.device) * n_ok[:, None]).long()
        return self.ok_items[view[:, None], r]

    def _heads(self, heads: nn.ModuleList, x: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """Default: one shared head. paper_code: head 1 + v for pool table v (per row)."""
        if not self.paper:
            return heads[0](x)
        out = torch.empty_like(x)
        for p in torch.unique(view).tolist():
            sel = view == p
            out[sel] = heads[1 + p](x[sel])
        return out

    def _weights(self, mlp_name: str, a, p, mean_n) -> tuple[torch.Tensor | None, torch.Tensor]:
        n = a.shape[0]
        logits = getattr(self, mlp_name)(a, p, mean_n) if self.adaptive else None
        return logits, normalised_weights(logits, n, a)

    # ---- item-level contrast -------------------------------------------------------------------
    def _item_contrast(self, items, valid, target, lookup):
        cfg = self.lcfg
        dev = items.device
        if cfg.item_anchors == "all" or self.paper:
            anchors = torch.arange(1, self.n_items + 1, device=dev)
        else:
            anchors = torch.unique(torch.cat([items[valid], target]))
        avail = self._available(anchors)
        has = avail.any(1)
        anchors, avail = anchors[has], avail[has]
        if cfg.item_anchors == "batch" and not self.paper and len(anchors) > cfg.max_item_anchors:
            pick = torch.randperm(len(anchors), device=dev)[:cfg.max_item_anchors]
            anchors, avail = anchors[pick], avail[pick]
        if len(anchors) < 2:
            return None, None
        view = torch.multinomial(avail.float(), 1).squeeze(1)
        M = cfg.item_negatives
        a = self.item_heads[0](lookup(anchors))
        p = self._heads(self.item_heads, self._project_pool(view, anchors), view)
        if self.paper:  # M random items per anchor in its view, as the official code
            neg_items = self._sample_ok(view, M)
            z = self._project_pool(view[:, None].expand(-1, M), neg_items)
            n = self._heads(self.item_heads, z.reshape(-1, z.shape[-1]),
                            view.repeat_interleave(M)).reshape(z.shape)
            _, w = self._weights("item_weights", a, p, n.mean(1))
            return paper_code_contrast(a, p, n, w / len(a)), w
        P = len(self.pool)
        tables = torch.arange(P, device=dev)
        if cfg.negatives == "hard":
            cand = self._sample_ok(tables, cfg.hard_pool)  # (P, C) shared candidates per table
            zc = self.item_heads[0](self._project_pool(tables[:, None].expand_as(cand), cand))
            with torch.no_grad():
                sim = torch.einsum("ad,acd->ac", F.normalize(a, dim=-1),
                                   F.normalize(zc[view], dim=-1))
                sim = sim.masked_fill(cand[view] == anchors[:, None], float("-inf"))
                nearest = sim.topk(M, dim=1).indices  # (A, M)
            n = zc[view[:, None], nearest]
            neg_items = cand[view[:, None], nearest]
        else:  # M random items per table, shared by the anchors whose positive is in that table
            neg_items_pt = self._sample_ok(tables, M)
            zn = self.item_heads[0](self._project_pool(tables[:, None].expand_as(neg_items_pt),
                                                       neg_items_pt))
            n, neg_items = zn[view], neg_items_pt[view]
        _, w = self._weights("item_weights", a, p, n.mean(1))
        return info_nce(a, p, n, self.tau, w, neg_items == anchors[:, None]), w

    # ---- session-level contrast ----------------------------------------------------------------
    def _view_sessions(self, items, valid, p: int):
        """Sessions re-encoded in pool table p (items without an ok row there are left out)."""
        m, k = self.pool[p]
        vvalid = valid & self.items.feature_mask(m, k, items)
        x = torch.zeros(*items.shape, self.items.dim, device=items.device,
                        dtype=self.items.id_emb.weight.dtype)
        if bool(vvalid.any()):
            uniq, inv = torch.unique(items[vvalid], return_inverse=True)
            z = self.items.project(m, k, uniq)
            x = x.index_put(torch.nonzero(vvalid, as_tuple=True), z[inv].to(x.dtype))
        hv = self.encoder(x, vvalid, at=last_valid_index(vvalid))
        return hv, vvalid.any(1)

    def _session_contrast_views(self, items, valid, h):
        dev = items.device
        if not self.paper:
            p = int(torch.randint(len(self.pool), (1,), device=dev))
            hv, keep = self._view_sessions(items, valid, p)
            if int(keep.sum()) < 2:
                return None, None
            a = self.sess_heads[0](h[keep])
            z = self.sess_heads[0](hv[keep])
            B = a.shape[0]
            mean_n = (z.sum(0, keepdim=True) - z) / (B - 1)
            _, w = self._weights("sess_weights", a, z, mean_n)
            eye = torch.eye(B, dtype=torch.bool, device=dev)
            return info_nce(a, z, z, self.tau, w, eye), w
        # paper_code: every view encoded; a random available view per session is its positive;
        # the negatives are all sessions of the batch in that view (itself included, as there)
        P = len(self.pool)
        zs, avail = [], []
        for p in range(P):
            hv, keep = self._view_sessions(items, valid, p)
            zs.append(self.sess_heads[1 + p](hv))
            avail.append(keep)
        Z, avail = torch.stack(zs), torch.stack(avail, 1)  # (P, B, d), (B, P)
        keep = avail.any(1)
        if int(keep.sum()) < 2:
            return None, None
        view = torch.multinomial(avail[keep].float(), 1).squeeze(1)
        a = self.sess_heads[0](h[keep])
        rows = torch.nonzero(keep).squeeze(1)
        pz = Z[view, rows]
        n = Z[view][:, keep]  # (B', B', d)
        _, w = self._weights("sess_weights", a, pz, n.mean(1))
        return paper_code_contrast(a, pz, n, w / len(a)), w

    def _session_contrast_ids(self, items, h, lookup):
        cfg = self.lcfg
        aug = augment_ids(items, self.items.mask_token, cfg.com_crop, cfg.com_mask, cfg.com_reorder)
        is_mask = (aug == self.items.mask_token).unsqueeze(-1)
        x = torch.where(is_mask, self.items.base(torch.full_like(aug[:1, :1], self.items.mask_token)),
                        lookup(aug.clamp(max=self.n_items)))
        ha = self.encoder(x, aug > 0, at=last_valid_index(aug > 0))
        a, z = self.sess_heads[0](h), self.sess_heads[0](ha)
        B = a.shape[0]
        if B < 2:
            return None, None
        mean_n = (z.sum(0, keepdim=True) - z) / (B - 1)
        _, w = self._weights("sess_weights", a, z, mean_n)
        eye = torch.eye(B, dtype=torch.bool, device=items.device)
        return info_nce(a, z, z, self.tau, w, eye), w


class _TableCache:
    """``with model.scoring():`` — eval + inference mode with the fused table computed once."""

    def __init__(self, model: SessionModel) -> None:
        self.model = model
        self.inner = Recommender.scoring(model)

    def __enter__(self):
        self.inner.__enter__()
        self.model._table = self.model.items.table()
        return self.model

    def __exit__(self, *exc):
        self.model._table = None
        return self.inner.__exit__(*exc)
