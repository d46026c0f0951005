"""The one model contract shared by every variant, every baseline and the evaluator.

``loss(batch)`` returns a :class:`LossOutput` for trainable models; ``score_all(batch)`` returns
``(B, n_items + 1)`` scores over the whole catalog with column 0 (padding) at ``-inf``.
Baselines are fitted once from the train split (``fit``) and report ``trainable = False``.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from trainer.data import Batch, Cases


@dataclass
class LossOutput:
    total: torch.Tensor  # what backward() runs on
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # detached scalars: rec, item, sess
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # detached adaptive weights, mean 1


class Recommender(nn.Module):
    trainable = True

    def __init__(self, n_items: int) -> None:
        super().__init__()
        self.n_items = n_items

    def loss(self, batch: Batch) -> LossOutput:
        raise TypeError(f"{type(self).__name__} is fitted from counts (fit), not trained")

    def score_all(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def fit(self, train: Cases) -> None:
        """Statistics read once from the train split (baselines); trainable models ignore it."""

    def forward(self, batch: Batch) -> LossOutput:  # so that DistributedDataParallel wraps loss
        return self.loss(batch)

    @contextmanager
    def scoring(self):
        """Evaluation mode with per-evaluation caches (e.g. the fused item table) in place."""
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                yield self
        finally:
            self.train(was_training)

    @staticmethod
    def mask_padding(scores: torch.Tensor) -> torch.Tensor:
        scores[:, 0] = float("-inf")
        return scores
