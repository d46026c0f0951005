"""Count-based baselines behind the same contract: popularity, session popularity, session kNN.

All are fitted once from whole train sessions (``trainer.data.train_sessions``) and score the
full catalog; ties between equal scores are settled by the evaluator's stated tie policy.
"""
from __future__ import annotations

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
    neighbours (ties: the more recent first); an item scores the summed similarity of the
    neighbours that contain it.

    Works on (query, session) pairs found through an item -> sessions index, so the cost
    follows the overlaps, never queries x all sessions.
    """

    def __init__(self, n_items: int, cfg: BaselineConfig) -> None:
        super().__init__(n_items)
        self.k, self.sample, self.chunk = cfg.sknn_k, cfg.sknn_sample, cfg.sknn_batch
        self._fitted = False

    def fit(self, train: Cases) -> None:
        super().fit(train)
        sessions = train_sessions(train)
        owner = np.repeat(np.arange(len(sessions)), np.diff(sessions.offsets))
        pairs = np.unique(owner * (self.n_items + 1) + sessions.flat)  # distinct items per session
        rows, cols = pairs // (self.n_items + 1), pairs % (self.n_items + 1)
        self.n_sessions = len(sessions)
        # session -> items (CSR) and item -> sessions (CSC, sessions ascending = oldest first)
        self._s_ptr = torch.from_numpy(np.concatenate([[0], np.cumsum(
            np.bincount(rows, minlength=self.n_sessions))]))
        self._s_items = torch.from_numpy(cols)
        by_item = np.lexsort((rows, cols))
        self._i_ptr = torch.from_numpy(np.concatenate([[0], np.cumsum(
            np.bincount(cols, minlength=self.n_items + 1))]))
        self._i_sessions = torch.from_numpy(rows[by_item])
        self._sizes = torch.from_numpy(np.diff(self._s_ptr.numpy())).float()
        self._fitted = True

    def score_all(self, batch: Batch) -> torch.Tensor:
        if not self._fitted:
            raise RuntimeError("SKNN.fit must run before scoring")
        out = [self._score(batch.items[i:i + self.chunk].cpu())
               for i in range(0, len(batch), self.chunk)]
        return self.mask_padding(torch.cat(out).to(batch.items.device))

    @staticmethod
    def _expand(ptr: torch.Tensor, values: torch.Tensor, keys: torch.Tensor):
        """For each key, all values[ptr[key]:ptr[key+1]]: (owner index, value)."""
        starts = ptr[keys]
        lens = ptr[keys + 1] - starts
        owner = torch.repeat_interleave(torch.arange(len(keys)), lens)
        offset = torch.arange(int(lens.sum())) - torch.repeat_interleave(torch.cumsum(lens, 0) - lens,
                                                                         lens)
        return owner, values[starts[owner] + offset]

    @staticmethod
    def _first_per_group(group: torch.Tensor, count: int) -> torch.Tensor:
        """Mask of the first ``count`` rows of each run of equal (sorted) ``group`` values."""
        idx = torch.arange(len(group))
        new = torch.ones_like(group, dtype=torch.bool)
        new[1:] = group[1:] != group[:-1]
        start = torch.cummax(torch.where(new, idx, torch.zeros_like(idx)), 0).values
        return idx - start < count

    def _score(self, items: torch.Tensor) -> torch.Tensor:
        B, n1, S = items.shape[0], self.n_items + 1, self.n_sessions
        q = torch.unique(torch.arange(B)[:, None] * n1 + items)
        q = q[q % n1 != 0]  # distinct (row, item) pairs, padding dropped
        q_row, q_item = q // n1, q % n1
        q_size = torch.bincount(q_row, minlength=B).float()
        owner, sess = self._expand(self._i_ptr, self._i_sessions, q_item)
        pair, overlap = torch.unique(q_row[owner] * S + sess, return_counts=True)
        row, sess = pair // S, pair % S  # sorted by row, then session (oldest first)
        sim = overlap / torch.sqrt(q_size[row] * self._sizes[sess])
        if self.sample:  # the `sample` most recent overlapping sessions of each row
            order = torch.argsort(row * S + (S - 1 - sess))
            keep = order[self._first_per_group(row[order], self.sample)]
            row, sess, sim = row[keep], sess[keep], sim[keep]
        # the k most similar (ties: more recent first) per row
        order = torch.argsort(-sess, stable=True)
        order = order[torch.argsort(-sim[order], stable=True)]
        order = order[torch.argsort(row[order], stable=True)]
        keep = order[self._first_per_group(row[order], self.k)]
        row, sess, sim = row[keep], sess[keep], sim[keep]
        owner, item = self._expand(self._s_ptr, self._s_items, sess)
        scores = torch.zeros(B, n1)
        scores.index_put_((row[owner], item), sim[owner], accumulate=True)
        return scores
