"""Count-based baselines behind the same contract: popularity, session popularity, session kNN.

All are fitted once from whole train sessions (``trainer.data.train_sessions``) and score the
full catalog; ties between equal scores are settled by the evaluator's stated tie policy.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from trainer.config import BaselineConfig
from trainer.data import Batch, Cases, item_popularity, train_sessions
from trainer.models.base import Recommender


class _Fitted(Recommender):
    trainable = False

    def __init__(self, n_items: int) -> None:
        super().__init__(n_items)
        self.register_buffer("popularity", torch.zeros(n_items + 1), persistent=True)

    def fit(self, train: Cases) -> None:
        pop = item_popularity(train_sessions(train), self.n_items)
        self.popularity.copy_(torch.from_numpy(pop).float())


class Pop(_Fitted):
    """The same ranking for everyone: train events per item."""

    def score_all(self, batch: Batch) -> torch.Tensor:
        """A read-only broadcast view of one row (no per-batch copy of the catalog)."""
        row = self.popularity.clone()
        row[0] = float("-inf")
        return row.expand(len(batch), -1)


class SPop(_Fitted):
    """Items of the current session by their count in it, then everything by popularity."""

    def score_all(self, batch: Batch) -> torch.Tensor:
        scores = (self.popularity / (self.popularity.max() + 1)).expand(len(batch), -1).clone()
        ones = torch.ones_like(batch.items, dtype=scores.dtype)
        scores.scatter_add_(1, batch.items, ones)
        return self.mask_padding(scores)


class SKNN(_Fitted):
    """Session kNN (Jannach & Ludewig 2017): cosine similarity of item sets to train sessions,
    the ``sample`` most recent overlapping sessions as candidates, the ``k`` most similar as
    neighbours; an item scores the summed similarity of the neighbours that contain it."""

    def __init__(self, n_items: int, cfg: BaselineConfig) -> None:
        super().__init__(n_items)
        self.k, self.sample, self.chunk = cfg.sknn_k, cfg.sknn_sample, cfg.sknn_batch
        self._incidence: torch.Tensor | None = None  # sessions x items CSR, kept on the host

    def fit(self, train: Cases) -> None:
        super().fit(train)
        sessions = train_sessions(train)
        owner = np.repeat(np.arange(len(sessions)), np.diff(sessions.offsets))
        pairs = np.unique(owner * (self.n_items + 1) + sessions.flat)  # distinct items per session
        rows, cols = pairs // (self.n_items + 1), pairs % (self.n_items + 1)
        counts = np.bincount(rows, minlength=len(sessions))
        crow = np.concatenate([[0], np.cumsum(counts)])
        with warnings.catch_warnings():  # "sparse CSR support is in beta": CSR x dense is all we use
            warnings.simplefilter("ignore", UserWarning)
            self._incidence = torch.sparse_csr_tensor(
                torch.from_numpy(crow), torch.from_numpy(cols), torch.ones(len(cols)),
                size=(len(sessions), self.n_items + 1), check_invariants=True)
        self._crow, self._cols = torch.from_numpy(crow), torch.from_numpy(cols)
        self._sizes = torch.from_numpy(counts).float()

    def score_all(self, batch: Batch) -> torch.Tensor:
        if self._incidence is None:
            raise RuntimeError("SKNN.fit must run before scoring")
        out = [self._score(batch.items[i:i + self.chunk].cpu())
               for i in range(0, len(batch), self.chunk)]
        return self.mask_padding(torch.cat(out).to(batch.items.device))

    def _score(self, items: torch.Tensor) -> torch.Tensor:
        B = items.shape[0]
        query = torch.zeros(B, self.n_items + 1)
        query.scatter_(1, items, 1.0)
        query[:, 0] = 0
        overlap = (self._incidence @ query.T).T  # (B, sessions): shared distinct items
        sim = overlap / torch.sqrt(query.sum(1, keepdim=True) * self._sizes[None, :]).clamp(min=1)
        if self.sample and self.sample < overlap.shape[1]:
            # the most recent overlapping sessions (split order is time order)
            recency = torch.where(overlap > 0, torch.arange(overlap.shape[1], dtype=torch.float),
                                  torch.tensor(-1.0))
            cand = recency.topk(self.sample, dim=1).indices
            csim = sim.gather(1, cand)
        else:
            cand = torch.arange(overlap.shape[1]).expand(B, -1)
            csim = sim
        k = min(self.k, csim.shape[1])
        top = csim.topk(k, dim=1)
        neigh = cand.gather(1, top.indices)  # (B, k) session ids
        weight = top.values  # 0 for padding neighbours (no overlap): they add nothing
        starts, ends = self._crow[neigh], self._crow[neigh + 1]
        lens = (ends - starts).reshape(-1)
        row = torch.arange(B).repeat_interleave(k).repeat_interleave(lens)
        flat_w = weight.reshape(-1).repeat_interleave(lens)
        offs = torch.arange(int(lens.sum())) - torch.repeat_interleave(torch.cumsum(lens, 0) - lens, lens)
        col = self._cols[starts.reshape(-1).repeat_interleave(lens) + offs]
        scores = torch.zeros(B, self.n_items + 1)
        scores.index_put_((row, col), flat_w, accumulate=True)
        return scores
