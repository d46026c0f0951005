import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.sessions import (
    SessionRule,
    Sessions,
    collapse_repeats,
    last_item_cases,
    prefix_cases,
    sessionize,
)
from pipeline.splits import cases_table
from schemas.errors import ContractError
from schemas.validate import coerce_timestamps

MIN = 60
DAY = 86_400


def events(users, items, seconds, sessions=None):
    n = len(items)
    return pa.table(
        {
            "session_id": pa.array(sessions if sessions else [None] * n, pa.string()),
            "user_id": pa.array(users, pa.string()),
            "item_id": pa.array([str(i) for i in items]),
            "timestamp": coerce_timestamps(seconds, "ev", "timestamp", unit="s")
            if seconds is not None
            else pa.nulls(n, pa.timestamp("us", "UTC")),
            "seq": pa.array(np.arange(n, dtype=np.int64)),
        }
    )


def cut(table, rule):
    idx = np.array([int(i) for i in table.column("item_id").to_pylist()], dtype=np.int64)
    return sessionize(table, idx, rule, "events.parquet")


def test_gap_rule_cuts_at_gaps_longer_than_the_threshold():
    t = events(["a"] * 4 + ["b"] * 2, [1, 2, 3, 4, 5, 6], [0, 10 * MIN, 41 * MIN, 70 * MIN, 0, MIN])
    s = cut(t, SessionRule("gap", 30))
    # 10 -> 41 min is a 31-minute gap: new session; 41 -> 70 is 29 minutes: same session
    # sessions come in the order their first event appears in the source
    assert s.to_lists() == [[1, 2], [3, 4], [5, 6]]
    assert list(s.keys) == ["a#1", "a#2", "b#1"]


def test_day_rule_uses_utc_calendar_days_and_orders_by_time_then_source_order():
    # same day, out of source order in time; two events at the same second keep source order
    t = events(["u", "u", "u", "u"], [7, 8, 9, 5], [DAY + 500, DAY + 100, DAY + 100, 2 * DAY])
    s = cut(t, SessionRule("day"))
    assert s.to_lists() == [[8, 9, 7], [5]]
    assert list(s.keys) == ["u@1970-01-02", "u@1970-01-03"]


def test_id_rule_without_timestamps_follows_source_order():
    t = events([None] * 4, [3, 1, 2, 4], None, sessions=["x", "y", "x", "y"])
    s = cut(t, SessionRule("id"))
    assert s.to_lists() == [[3, 2], [1, 4]] and s.times is None


def test_rules_refuse_missing_keys_and_partial_timestamps():
    t = events(["a", None], [1, 2], [0, 1])
    with pytest.raises(ContractError) as err:
        cut(t, SessionRule("user"))
    assert err.value.column == "user_id" and err.value.rows == [1]
    with pytest.raises(ContractError, match="no timestamps"):
        cut(events(["a", "a"], [1, 2], None), SessionRule("day"))
    partial = events(["a", "a"], [1, 2], [0, 1]).set_column(
        3, "timestamp", pa.array([0, None], pa.int64()).cast(pa.timestamp("us", "UTC"))
    )
    with pytest.raises(ContractError) as err:
        cut(partial, SessionRule("user"))
    assert err.value.column == "timestamp" and err.value.rows == [1]


def test_collapse_repeats_only_inside_a_session():
    s = Sessions.from_lists([[1, 1, 2, 2, 1], [1, 3], [3, 3]])
    collapsed, removed = collapse_repeats(s)
    assert collapsed.to_lists() == [[1, 2, 1], [1, 3], [3]] and removed == 3


def test_cases_respect_max_len():
    s = Sessions.from_lists([[1, 2, 3, 4, 5]])
    last = cases_table(s, last_item_cases(s.offsets, max_len=3)).to_pylist()
    assert last == [{"session_id": "0", "items": [3, 4], "target": 5}]
    pre = cases_table(s, prefix_cases(s.offsets, max_len=3)).to_pylist()
    assert [(c["items"], c["target"]) for c in pre] == [
        ([1], 2),
        ([1, 2], 3),
        ([2, 3], 4),
        ([3, 4], 5),
    ]


sequences = st.lists(st.lists(st.integers(1, 9), min_size=0, max_size=8), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None)
@given(sequences)
def test_prefix_cases_are_every_prefix_exactly_once(seqs):
    s = Sessions.from_lists(seqs)
    got = cases_table(s, prefix_cases(s.offsets)).to_pylist()
    want = [
        {"session_id": str(i), "items": q[:k], "target": q[k]}
        for i, q in enumerate(seqs)
        for k in range(1, len(q))
    ]
    assert got == want


@settings(max_examples=60, deadline=None)
@given(sequences, st.integers(2, 6))
def test_last_item_cases_one_per_session(seqs, max_len):
    s = Sessions.from_lists(seqs)
    got = cases_table(s, last_item_cases(s.offsets, max_len)).to_pylist()
    want = [
        {"session_id": str(i), "items": q[:-1][-(max_len - 1) :], "target": q[-1]}
        for i, q in enumerate(seqs)
        if len(q) >= 2
    ]
    assert got == want


@settings(max_examples=60, deadline=None)
@given(sequences, st.data())
def test_select_and_keep_events_match_list_operations(seqs, data):
    s = Sessions.from_lists(seqs)
    pick = data.draw(st.lists(st.integers(0, len(seqs) - 1), max_size=10))
    assert s.select(np.array(pick, dtype=np.int64)).to_lists() == [seqs[i] for i in pick]
    keep = np.array(data.draw(st.lists(st.booleans(), min_size=len(s.items),
                                       max_size=len(s.items))), dtype=bool)
    kept = s.keep_events(keep)
    flat = iter(keep.tolist())
    assert kept.to_lists() == [[x for x in q if next(flat)] for q in seqs]
    assert s.drop_tail(1).to_lists() == [q[:-1] for q in seqs]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abc"), st.integers(1, 5), st.integers(0, 3 * DAY)),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from(["user", "day", "gap"]),
)
def test_sessionize_loses_no_event_and_orders_by_time(rows, by):
    users, items, secs = zip(*rows)
    t = events(list(users), list(items), list(secs))
    s = cut(t, SessionRule(by, 45))
    assert sorted(s.seqs.tolist()) == list(range(len(rows)))  # every event exactly once
    for a, b in zip(s.offsets[:-1], s.offsets[1:]):
        times = s.times[a:b]
        assert (np.diff(times) >= 0).all()
        owners = {users[q] for q in s.seqs[a:b]}
        assert len(owners) == 1
        if by == "day":
            assert len(set((times // (DAY * 1_000_000)).tolist())) == 1
        if by == "gap":
            assert (np.diff(times) <= 45 * MIN * 1_000_000).all()
