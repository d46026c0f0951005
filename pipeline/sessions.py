"""Sessionization: events -> ordered item sequences, held as flat arrays (CSR) for speed.

A ``Sessions`` value keeps every session's items back to back in one int64 array with an
``offsets`` array (session ``i`` is ``items[offsets[i]:offsets[i+1]]``). Every operation here is
a handful of numpy calls over those arrays, so a million events take well under a second; no
Python loop runs per event or per session.

Rules that cut events into sessions (``SessionRule.by``):
  ``id``   the source's ``session_id``;
  ``user`` one sequence per user (leave-one-out over whole histories);
  ``gap``  a user's events, cut where two consecutive events are more than ``gap_minutes`` apart;
  ``day``  a user's events on one UTC calendar day (the MACL paper's Amazon recipe).
Inside a session, events are ordered by timestamp, then by source order (``seq``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.errors import ContractError

RULES = ("id", "user", "gap", "day")
US_PER_DAY = 86_400_000_000
US_PER_MINUTE = 60_000_000
MAX_SHOWN = 5


@dataclass(frozen=True)
class SessionRule:
    """How events become sessions; ``describe()`` is what summaries print."""

    by: str
    gap_minutes: float = 30.0

    def __post_init__(self) -> None:
        if self.by not in RULES:
            raise ValueError(f"session rule must be one of {RULES}, got {self.by!r}")
        if self.by == "gap" and not self.gap_minutes > 0:
            raise ValueError(f"gap_minutes must be > 0, got {self.gap_minutes}")

    @property
    def needs_time(self) -> bool:
        return self.by in ("gap", "day")

    def describe(self) -> str:
        return {
            "id": "by session_id",
            "user": "one per user",
            "gap": f"user + {self.gap_minutes:g} min gap",
            "day": "user + calendar day",
        }[self.by]

    def to_dict(self) -> dict:
        return (
            {"by": self.by, "gap_minutes": self.gap_minutes}
            if self.by == "gap"
            else {"by": self.by}
        )


@dataclass
class Sessions:
    """Sessions as flat arrays: ``items[offsets[i]:offsets[i+1]]`` is session ``i`` in order.

    ``times`` (UTC epoch microseconds per event) is None for ID-only sources; ``seqs`` is each
    event's source row order; ``keys`` are the session ids written into splits.
    """

    keys: np.ndarray
    offsets: np.ndarray
    items: np.ndarray
    seqs: np.ndarray
    times: np.ndarray | None = None

    @classmethod
    def from_lists(cls, sequences: list[list[int]], keys: list[str] | None = None) -> "Sessions":
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        items = np.fromiter(
            (i for s in sequences for i in s), dtype=np.int64, count=int(lengths.sum())
        )
        offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        if keys is None:
            keys = [str(i) for i in range(len(sequences))]
        return cls(np.asarray(keys, dtype=object), offsets, items, np.arange(len(items)))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def owner(self) -> np.ndarray:
        """The session index of every event."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.lengths)

    @property
    def position(self) -> np.ndarray:
        """Every event's 0-based position inside its session."""
        return np.arange(len(self.items), dtype=np.int64) - np.repeat(
            self.offsets[:-1], self.lengths
        )

    @property
    def end_times(self) -> np.ndarray:
        """Time of each session's last event (sessions must be non-empty)."""
        if self.times is None:
            raise ValueError("these sessions have no timestamps")
        return self.times[self.offsets[1:] - 1]

    @property
    def first_seqs(self) -> np.ndarray:
        """Source order of each session's first event: the order sessions appeared in."""
        first = np.full(len(self), np.iinfo(np.int64).max, dtype=np.int64)
        nonempty = self.lengths > 0
        if nonempty.any():
            first[nonempty] = np.minimum.reduceat(self.seqs, self.offsets[:-1][nonempty])
        return first

    def to_lists(self) -> list[list[int]]:
        return [self.items[a:b].tolist() for a, b in zip(self.offsets[:-1], self.offsets[1:])]

    def keep_events(self, mask: np.ndarray) -> "Sessions":
        """Drop the events where ``mask`` is False; sessions stay (possibly shorter or empty)."""
        lengths = np.bincount(self.owner[mask], minlength=len(self))
        offsets = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return Sessions(
            self.keys,
            offsets,
            self.items[mask],
            self.seqs[mask],
            None if self.times is None else self.times[mask],
        )

    def select(self, which: np.ndarray) -> "Sessions":
        """The sessions picked by a boolean mask or an index array, in that order."""
        index = np.flatnonzero(which) if which.dtype == bool else np.asarray(which, dtype=np.int64)
        lengths = self.lengths[index]
        offsets = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        starts = self.offsets[:-1][index]
        gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        return Sessions(
            self.keys[index],
            offsets,
            self.items[gather],
            self.seqs[gather],
            None if self.times is None else self.times[gather],
        )

    def drop_tail(self, n: int) -> "Sessions":
        """Every session without its last ``n`` events (leave-one-out's training part)."""
        return self.keep_events(self.position < np.repeat(self.lengths - n, self.lengths))


def collapse_repeats(sessions: Sessions) -> tuple[Sessions, int]:
    """Merge runs of one item inside a session into one event; returns how many were removed.

    H&M records several units of one article bought together as separate rows; left in, they
    turn "predict the item just bought" into a large share of the test cases.
    """
    owner = sessions.owner
    repeat = np.zeros(len(sessions.items), dtype=bool)
    repeat[1:] = (sessions.items[1:] == sessions.items[:-1]) & (owner[1:] == owner[:-1])
    removed = int(repeat.sum())
    return (sessions.keep_events(~repeat) if removed else sessions), removed


def sessionize(events: pa.Table, item_idx: np.ndarray, rule: SessionRule, path: str) -> Sessions:
    """Cut validated events into sessions under ``rule``; ``item_idx`` is each event's item.

    Sessions come out in the order their first event appears in the source. Timestamps must be
    present on every event or on none (an ID-only source); a rule that needs time refuses
    events without it, naming the rows.
    """
    if events.num_rows == 0:
        raise ContractError(path, "has no events")
    seqs = events.column("seq").to_numpy().astype(np.int64, copy=False)
    times = _event_times(events, path, required=rule.needs_time)
    if rule.by in ("id", "user"):
        column = "session_id" if rule.by == "id" else "user_id"
        codes, names = _codes(events, column, path)
    else:
        user_codes, users = _codes(events, "user_id", path)
        if rule.by == "day":
            day = times // US_PER_DAY
            day0 = int(day.min())
            span = int(day.max()) - day0 + 1
            uniq, codes = np.unique(user_codes * span + (day - day0), return_inverse=True)
            names = np.array(
                [f"{users[u]}@{_iso_day(d + day0)}" for u, d in zip(uniq // span, uniq % span)],
                dtype=object,
            )
        else:
            codes, names = _gap_sessions(user_codes, users, times, seqs, rule.gap_minutes)
    tie = times if times is not None else np.zeros_like(seqs)
    order = np.lexsort((seqs, tie, codes))
    codes = codes[order]
    lengths = np.bincount(codes, minlength=len(names))
    offsets = np.zeros(len(names) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    sessions = Sessions(
        names,
        offsets,
        item_idx[order].astype(np.int64, copy=False),
        seqs[order],
        None if times is None else times[order],
    )
    return sessions.select(np.argsort(sessions.first_seqs, kind="stable"))


def _iso_day(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=int(day))).isoformat()


def _codes(events: pa.Table, column: str, path: str) -> tuple[np.ndarray, np.ndarray]:
    """Dense integer codes of a key column (first-appearance order) and the distinct values."""
    col = events.column(column).combine_chunks()
    if col.null_count:
        rows = np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))
        hint = {
            "session_id": "choose another --sessions rule (user, gap or day)",
            "user_id": "choose --sessions id, or ingest user ids",
        }[column]
        raise ContractError(
            path,
            f"null values where the session rule needs them; {hint}",
            column=column,
            rows=rows[:MAX_SHOWN].tolist(),
            total=int(rows.size),
        )
    encoded = pc.dictionary_encode(col)
    return (
        encoded.indices.to_numpy().astype(np.int64),
        np.asarray(encoded.dictionary.to_pylist(), dtype=object),
    )


def _event_times(events: pa.Table, path: str, *, required: bool) -> np.ndarray | None:
    ts = events.column("timestamp").combine_chunks()
    if ts.null_count == len(ts):
        if required and len(ts):
            raise ContractError(
                path,
                "the events have no timestamps (an ID-only source); this rule/protocol needs time",
                column="timestamp",
            )
        return None
    if ts.null_count:
        rows = np.flatnonzero(ts.is_null().to_numpy(zero_copy_only=False))
        raise ContractError(
            path,
            "timestamps must be present on every event or on none",
            column="timestamp",
            rows=rows[:MAX_SHOWN].tolist(),
            total=int(rows.size),
        )
    return ts.cast(pa.int64()).to_numpy()


def _gap_sessions(
    user_codes: np.ndarray,
    users: np.ndarray,
    times: np.ndarray,
    seqs: np.ndarray,
    gap_minutes: float,
) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((seqs, times, user_codes))
    u, t = user_codes[order], times[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (u[1:] != u[:-1]) | (np.diff(t) > gap_minutes * US_PER_MINUTE)
    sorted_codes = np.cumsum(new) - 1
    codes = np.empty_like(sorted_codes)
    codes[order] = sorted_codes
    # number each user's sessions 1, 2, ... in time order
    starts = np.flatnonzero(new)
    start_user = u[starts]
    user_first = np.flatnonzero(np.r_[True, start_user[1:] != start_user[:-1]])
    rank = np.arange(len(starts)) - np.repeat(user_first, np.diff(np.r_[user_first, len(starts)]))
    names = np.array([f"{users[x]}#{r + 1}" for x, r in zip(start_user, rank)], dtype=object)
    return codes, names


# -- cases: (input prefix, target) pairs gathered from flat arrays ------------------------------


@dataclass
class CaseIndex:
    """Where each case's input and target sit in a flat item array.

    ``session`` is the session of every case, ``offsets`` delimit the inputs inside ``gather``
    (indices into the flat array), ``target`` indexes each case's target.
    """

    session: np.ndarray
    offsets: np.ndarray
    gather: np.ndarray
    target: np.ndarray


def _case_index(
    starts: np.ndarray, case_session: np.ndarray, k: np.ndarray, max_input: int | None
) -> CaseIndex:
    """Cases predicting position ``k`` of their session from (up to ``max_input``) items before."""
    in_len = k if max_input is None else np.minimum(k, max_input)
    offsets = np.zeros(len(k) + 1, dtype=np.int64)
    np.cumsum(in_len, out=offsets[1:])
    first = starts[case_session] + k - in_len
    gather = np.repeat(first - offsets[:-1], in_len) + np.arange(offsets[-1], dtype=np.int64)
    return CaseIndex(case_session, offsets, gather, starts[case_session] + k)


def last_item_cases(offsets: np.ndarray, max_len: int | None = None) -> CaseIndex:
    """One case per session of length >= 2: all items but the last -> the last item.

    ``max_len`` caps input + target (the MACL recipe's truncation to the last 20 items).
    """
    lengths = np.diff(offsets)
    sess = np.flatnonzero(lengths >= 2)
    return _case_index(offsets[:-1], sess, lengths[sess] - 1, _max_input(max_len))


def prefix_cases(offsets: np.ndarray, max_len: int | None = None) -> CaseIndex:
    """Every prefix of every session: s[:k] -> s[k] for k = 1..len-1 (SR-GNN's augmentation)."""
    lengths = np.diff(offsets)
    n_cases = np.maximum(lengths - 1, 0)
    sess = np.repeat(np.arange(len(lengths), dtype=np.int64), n_cases)
    case_first = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(n_cases, out=case_first[1:])
    k = np.arange(len(sess), dtype=np.int64) - np.repeat(case_first[:-1], n_cases) + 1
    return _case_index(offsets[:-1], sess, k, _max_input(max_len))


def _max_input(max_len: int | None) -> int | None:
    if max_len is None:
        return None
    if max_len < 2:
        raise ValueError(f"max_len must be >= 2 (an input item and a target), got {max_len}")
    return max_len - 1
