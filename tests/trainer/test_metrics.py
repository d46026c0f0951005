"""Ranks and metrics against hand-computed values, including the tie policy."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.evaluate import metrics_from_ranks, target_ranks

NEG = float("-inf")
# 5 items + padding column 0 (already masked to -inf, as every model's score_all returns)
SCORES = torch.tensor([
    [NEG, 0.9, 0.5, 0.7, 0.1, 0.3],  # target 3 (0.7): one item higher -> rank 2
    [NEG, 0.5, 0.5, 0.5, 0.2, 0.1],  # target 2 (0.5): two other items tie with it
    [NEG, 0.4, 0.3, 0.2, 0.1, 0.0],  # target 5: last
])
TARGET = torch.tensor([3, 2, 5])


def test_pessimistic_ranks_count_ties_against_the_target():
    assert target_ranks(SCORES, TARGET, "pessimistic").tolist() == [2, 3, 5]


def test_optimistic_ranks_ignore_ties():
    assert target_ranks(SCORES, TARGET, "optimistic").tolist() == [2, 1, 5]


def test_padding_column_never_outranks_a_target():
    low = torch.tensor([[NEG, -5.0, -6.0, -7.0, -8.0, -9.0]])
    assert target_ranks(low, torch.tensor([5]), "pessimistic").tolist() == [5]


def test_metrics_hand_computed_pessimistic():
    m = metrics_from_ranks(np.array([2, 3, 5]), [1, 3])
    assert m["hr@1"] == 0.0
    assert m["hr@3"] == pytest.approx(2 / 3)
    assert m["mrr@3"] == pytest.approx((1 / 2 + 1 / 3) / 3)
    assert m["ndcg@3"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / 3)
    assert m["mrr@1"] == 0.0 and m["ndcg@1"] == 0.0


def test_metrics_hand_computed_optimistic():
    m = metrics_from_ranks(np.array([2, 1, 5]), [1, 3, 5])
    assert m["hr@1"] == pytest.approx(1 / 3)
    assert m["mrr@3"] == pytest.approx((1 / 2 + 1) / 3)
    assert m["ndcg@3"] == pytest.approx((1 / math.log2(3) + 1) / 3)
    assert m["hr@5"] == 1.0
    assert m["mrr@5"] == pytest.approx((1 / 2 + 1 + 1 / 5) / 3)


def test_constant_scorer_gains_nothing_from_ties():
    scores = torch.zeros(4, 101)
    scores[:, 0] = NEG
    ranks = target_ranks(scores, torch.tensor([1, 7, 50, 100]), "pessimistic")
    assert ranks.tolist() == [100] * 4
    assert metrics_from_ranks(ranks, [20])["hr@20"] == 0.0


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 6), st.integers(2, 40), st.integers(1, 45), st.integers(0, 10_000),
       st.sampled_from(["pessimistic", "optimistic"]))
def test_cutoff_ranks_agree_with_full_ranks(rows, n, cutoff, seed, policy):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 4, (rows, n + 1), generator=g).float()  # many ties
    scores[:, 0] = NEG
    target = torch.randint(1, n + 1, (rows,), generator=g)
    full = target_ranks(scores, target, policy)
    cut = target_ranks(scores, target, policy, cutoff)
    assert cut.tolist() == torch.clamp(full, max=cutoff + 1).tolist()
