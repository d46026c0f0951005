"""Batches, whole sessions, popularity and the long tail, against hand-computed values."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.data import (Cases, item_popularity, long_tail_items, make_batch,
                          popularity_buckets, train_sessions)


def test_window_right_aligns_and_pads_left():
    cases = Cases.from_lists([[1, 2, 3], [4], [5, 6, 7, 8, 9]], [4, 5, 1])
    assert cases.window(np.array([0, 1, 2]), 3).tolist() == [[1, 2, 3], [0, 0, 4], [7, 8, 9]]


def test_batch_is_as_wide_as_its_longest_case_and_shifts_targets():
    cases = Cases.from_lists([[1, 2, 3], [4], [5, 6, 7, 8, 9]], [4, 5, 1])
    b = make_batch(cases, np.array([0, 1]), max_len=50, all_positions=True)
    assert b.items.tolist() == [[1, 2, 3], [0, 0, 4]]
    assert b.targets_all.tolist() == [[2, 3, 4], [0, 0, 5]]
    assert b.target.tolist() == [4, 5] and b.rows.tolist() == [0, 1]
    b = make_batch(cases, np.array([2]), max_len=2)
    assert b.items.tolist() == [[8, 9]]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(1, 30), min_size=1, max_size=12), min_size=1, max_size=20),
       st.integers(1, 10))
def test_window_matches_a_plain_python_reference(seqs, max_len):
    cases = Cases.from_lists(seqs, [1] * len(seqs))
    rows = np.arange(len(seqs))[::-1]
    got = cases.window(rows, max_len).tolist()
    want = [[0] * (max_len - len(seqs[r][-max_len:])) + seqs[r][-max_len:] for r in rows]
    assert got == want


def test_train_sessions_take_each_sessions_longest_case():
    cases = Cases.from_lists([[1], [1, 2], [4], [1, 2, 3]], [2, 3, 5, 6],
                             session_ids=["a", "a", "b", "a"])
    s = train_sessions(cases)
    seqs = [s.flat[s.offsets[i]:s.offsets[i + 1]].tolist() for i in range(len(s))]
    assert seqs == [[4, 5], [1, 2, 3, 6]]  # in split order of the picked (longest) case
    pop = item_popularity(s, n_items=7)
    assert pop.tolist() == [0, 1, 1, 1, 1, 1, 1, 0]


def test_long_tail_is_least_popular_items_carrying_the_share():
    pop = np.array([0, 1, 1, 1, 1, 6, 0])  # item 6 never seen; total 10 events
    tail = long_tail_items(pop, 0.2)
    # ascending by count (ties by idx): 6 (0), 1, 2, 3, 4 (1 each), 5 -> cumsum 0,1,2,3,4,10
    assert np.flatnonzero(tail).tolist() == [1, 2, 6]


def test_popularity_buckets_put_unseen_items_first():
    pop = np.array([0, 0, 1, 2, 3, 50])
    bucket, labels = popularity_buckets(pop, 2)
    assert bucket[1] == 0 and labels[0] == "unseen"
    assert bucket[5] > bucket[2]
    assert all(lab != "-" for lab in labels[1:])
