"""Paired bootstrap and per-case metrics of the accuracy benchmark (hand-computed + properties)."""
import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import benchmarks.stats as stats
from benchmarks.stats import paired_bootstrap, per_case


def test_per_case_metrics_by_hand():
    ranks = np.array([1, 3, 20, 21])  # 21 = "below the cut-off" of a top-20 evaluation
    assert per_case(ranks, "hr", 20).tolist() == [1, 1, 1, 0]
    assert per_case(ranks, "hr", 5).tolist() == [1, 1, 0, 0]
    assert per_case(ranks, "mrr", 20).tolist() == pytest.approx([1, 1 / 3, 1 / 20, 0])
    assert per_case(ranks, "ndcg", 10).tolist() == pytest.approx([1, 0.5, 0, 0])
    with pytest.raises(ValueError, match="unknown metric"):
        per_case(ranks, "p", 20)


def test_point_estimates_by_hand_and_tiny_bootstrap():
    a = np.array([1.0, 0.0, 1.0, 1.0])
    b = np.array([0.0, 0.0, 1.0, 1.0])
    d = paired_bootstrap(a, b, n_boot=2000, seed=1)
    assert (d.mean_a, d.mean_b, d.diff, d.rel) == (0.75, 0.5, 0.25, 0.5)
    # per-case differences are (1, 0, 0, 0): a resample's difference is k/4 with k ~ Bin(4, 1/4)
    # (P(k=0) = 0.316 > 2.5%, P(k>=3) = 0.051 > 2.5%, P(k=4) = 0.004 < 2.5%)
    assert d.diff_ci == (0.0, 0.75)
    assert not d.significant and d.verdict() == "within noise"


def test_identical_runs_and_constant_shifts_have_degenerate_intervals():
    a = np.array([0.2, 0.5, 0.0, 1.0, 0.3])
    same = paired_bootstrap(a, a, n_boot=500)
    assert same.diff_ci == (0.0, 0.0) and same.rel_ci == (0.0, 0.0) and not same.significant
    shifted = paired_bootstrap(a + 0.1, a, n_boot=500)
    assert shifted.diff_ci == pytest.approx((0.1, 0.1)) and shifted.verdict() == "better"
    zero = paired_bootstrap(a, np.zeros(5), n_boot=50)
    assert math.isnan(zero.rel) and all(math.isnan(x) for x in zero.rel_ci)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 30), st.integers(1, 30)), min_size=1, max_size=40),
       st.integers(0, 2 ** 16))
def test_swapping_negates_and_chunking_changes_nothing(pairs, seed):
    ra, rb = (np.array(x) for x in zip(*pairs))
    a, b = per_case(ra, "mrr", 20), per_case(rb, "mrr", 20)
    ab = paired_bootstrap(a, b, n_boot=200, seed=seed)
    ba = paired_bootstrap(b, a, n_boot=200, seed=seed)
    assert ab.diff == -ba.diff
    assert ab.diff_ci == pytest.approx((-ba.diff_ci[1], -ba.diff_ci[0]), abs=1e-12)
    assert ab.diff_ci[0] <= ab.diff_ci[1]
    old = stats.MAX_CHUNK_CELLS
    try:
        stats.MAX_CHUNK_CELLS = 7  # a few resamples per chunk (one when n >= 4)
        small = paired_bootstrap(a, b, n_boot=200, seed=seed)
    finally:
        stats.MAX_CHUNK_CELLS = old
    np.testing.assert_equal(dataclasses.astuple(small), dataclasses.astuple(ab))  # nan == nan


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="one length"):
        paired_bootstrap(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="no cases"):
        paired_bootstrap(np.ones(0), np.ones(0))
