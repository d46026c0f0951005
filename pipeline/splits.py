"""Split protocols: sessions -> train/valid/test cases under a named, recorded recipe.

``macl``  the MACL paper's recipe: items with < 5 events and sessions with < 2 items dropped,
          sessions truncated to their last 20 items, the last 10% of sessions (time order, or
          the paper's session-id order) to test, one (prefix, last item) case per session.
``srgnn`` SR-GNN's recipe: sessions that end in the last N days to test, test items never seen
          in training dropped, every prefix of every session a case.
``loo``   leave-one-out per user or session: the last item to test, the one before to
          validation, every earlier prefix to training (RecBole's sequential setting).

``macl`` and ``srgnn`` carve validation from the end of the (ordered) training sessions; for
``loo`` the end of each training sequence is its second-to-last item. Each file records the
protocol, its parameters and statistics in its metadata; ``split_id`` ties the three parts of
one run together.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.sessions import (
    US_PER_DAY,
    CaseIndex,
    SessionRule,
    Sessions,
    collapse_repeats,
    last_item_cases,
    prefix_cases,
    sessionize,
)
from schemas.errors import ContractError
from schemas.fs import Workspace
from schemas.hashing import sha256_file, sha256_json
from schemas.io import EVENTS_PATH, read_events, read_items, write_split
from schemas.tables import SPLIT, read_info

PROTOCOLS = ("macl", "srgnn", "loo")
ORDERS = ("time", "session_id", "source")
SESSION_CHOICES = ("auto", "id", "user", "gap", "day")

#: the parameters each protocol takes, with its defaults
PROTOCOL_DEFAULTS: dict[str, dict[str, Any]] = {
    "macl": {
        "sessions": "auto",
        "gap_minutes": 30.0,
        "collapse_repeats": True,
        "min_item_count": 5,
        "min_session_len": 2,
        "max_len": 20,
        "order": "time",
        "test_fraction": 0.1,
        "valid_fraction": 0.1,
        "drop_unseen_test_items": False,
        "train_prefixes": False,
    },
    "srgnn": {
        "sessions": "auto",
        "gap_minutes": 30.0,
        "collapse_repeats": True,
        "min_item_count": 5,
        "min_session_len": 2,
        "max_len": None,
        "test_days": 7.0,
        "valid_fraction": 0.1,
        "drop_unseen_test_items": True,
        "train_prefixes": True,
    },
    "loo": {
        "sessions": "auto",
        "gap_minutes": 30.0,
        "collapse_repeats": True,
        "min_item_count": 1,
        "min_session_len": 3,
        "max_len": 51,
        "order": "source",
        "train_prefixes": True,
    },
}


@dataclass
class SplitConfig:
    """A protocol and its parameters (fields a protocol does not take stay None).

    Build it with ``for_protocol`` / ``from_dict``: unknown keys and keys the protocol does not
    take are refused. ``to_dict`` holds exactly the parameters that shaped the split (what each
    output file records) and round-trips through YAML/JSON. ``max_len`` None means no cap.
    """

    protocol: str
    sessions: str = "auto"
    gap_minutes: float = 30.0
    collapse_repeats: bool = True
    min_item_count: int = 5
    min_session_len: int = 2
    max_len: int | None = None
    order: str | None = None
    test_fraction: float | None = None
    test_days: float | None = None
    valid_fraction: float | None = None
    drop_unseen_test_items: bool | None = None
    train_prefixes: bool | None = None

    @classmethod
    def for_protocol(cls, protocol: str, **overrides: Any) -> "SplitConfig":
        """The protocol's defaults with ``overrides`` applied (only keys the protocol takes)."""
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
        defaults = PROTOCOL_DEFAULTS[protocol]
        fields = {f.name for f in dataclasses.fields(cls)} - {"protocol"}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"unknown split parameter(s) {unknown}")
        foreign = sorted(set(overrides) - set(defaults))
        if foreign:
            raise ValueError(
                f"protocol {protocol!r} takes no parameter(s) {foreign}; it takes "
                f"{sorted(defaults)}"
            )
        return cls(protocol=protocol, **{**defaults, **overrides})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SplitConfig":
        data = dict(data)
        protocol = data.pop("protocol", None)
        if protocol is None:
            raise ValueError("a split config needs a 'protocol' key")
        return cls.for_protocol(protocol, **data)

    @classmethod
    def from_file(cls, path: str | Path) -> "SplitConfig":
        import yaml

        return cls.from_dict(yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {})

    @property
    def params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in PROTOCOL_DEFAULTS[self.protocol]}

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": self.protocol, **self.params}

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; choose one of {PROTOCOLS}")
        if self.sessions not in SESSION_CHOICES:
            raise ValueError(f"sessions must be one of {SESSION_CHOICES}, got {self.sessions!r}")
        if self.order is not None and self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")
        for key in ("test_fraction", "valid_fraction"):
            value = getattr(self, key)
            if value is not None and not 0 <= value < 1:
                raise ValueError(f"{key} must be in [0, 1), got {value}")
        if self.max_len is not None and self.max_len < 2:
            raise ValueError(f"max_len must be >= 2 or None (no cap), got {self.max_len}")
        if self.min_item_count < 1 or self.min_session_len < 2:
            raise ValueError("min_item_count must be >= 1 and min_session_len >= 2")
        if self.protocol == "loo" and self.min_session_len < 3:
            raise ValueError("loo needs min_session_len >= 3 (a train, a valid and a test item)")
        if self.test_days is not None and not self.test_days > 0:
            raise ValueError(f"test_days must be > 0, got {self.test_days}")
        if not self.gap_minutes > 0:
            raise ValueError(f"gap_minutes must be > 0, got {self.gap_minutes}")


@dataclass
class FilterStep:
    """One filter's effect, for the statistics table: what it removed."""

    name: str
    events: int = 0
    sessions: int = 0
    items: int = 0


@dataclass
class PartStats:
    part: str
    sessions: int
    cases: int
    items: int
    mean_session_len: float
    mean_input_len: float


@dataclass
class SplitResult:
    """What a split produced: the case tables and the statistics printed for the user."""

    name: str
    config: SplitConfig
    rule: SessionRule | None
    n_items: int
    tables: dict[str, pa.Table]
    parts: list[PartStats]
    filters: list[FilterStep]
    notes: list[str] = field(default_factory=list)

    def stats_dict(self) -> dict[str, Any]:
        return {
            "parts": [dataclasses.asdict(p) for p in self.parts],
            "filters": [dataclasses.asdict(f) for f in self.filters],
        }

    def render(self, workspace: str = "") -> str:
        head = f"split '{self.name}' (protocol {self.config.protocol}"
        if self.rule is not None:
            head += f", sessions {self.rule.describe()}"
        head += f", {self.n_items:,} catalog items)"
        if workspace:
            head += f" in {workspace}"
        lines = [head]
        if self.filters:
            lines.append(
                render_table(
                    ["filter", "events removed", "sessions dropped", "items dropped"],
                    [
                        [f.name, *(n or None for n in (f.events, f.sessions, f.items))]
                        for f in self.filters
                    ],
                )
            )
        lines.append(
            render_table(
                ["part", "sessions", "cases", "items", "mean session len", "mean input len"],
                [
                    [p.part, p.sessions, p.cases, p.items, p.mean_session_len, p.mean_input_len]
                    for p in self.parts
                ],
            )
        )
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def render_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain aligned text table; integers get thousands separators, floats two decimals."""

    def fmt(v: Any) -> str:
        if isinstance(v, bool) or v is None:
            return "" if v is None else str(v)
        if isinstance(v, (int, np.integer)):
            return f"{int(v):,}"
        if isinstance(v, (float, np.floating)):
            return f"{v:,.2f}"
        return str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    out = [
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths))
        )
    ]
    for r in cells:
        out.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
            )
        )
    return "\n".join(out)


# -- building blocks ------------------------------------------------------------------------


def cases_table(sessions: Sessions, index: CaseIndex) -> pa.Table:
    """Case rows (session_id, items, target) for the cases ``index`` picks from ``sessions``."""
    values = pa.array(sessions.items[index.gather], type=pa.int64())
    items = pa.ListArray.from_arrays(pa.array(index.offsets.astype(np.int32)), values)
    return pa.Table.from_arrays(
        [
            pa.array(sessions.keys[index.session], type=pa.string()),
            items,
            pa.array(sessions.items[index.target], type=pa.int64()),
        ],
        schema=SPLIT,
    )


def part_stats(part: str, sessions: Sessions, table: pa.Table) -> PartStats:
    """Counts for one part: sessions that yield cases, cases, distinct items, mean lengths."""
    n_cases = table.num_rows
    lengths = sessions.lengths
    used = lengths >= 2
    items_col = table.column("items").combine_chunks()
    distinct = (
        np.unique(np.concatenate([items_col.values.to_numpy(), table.column("target").to_numpy()]))
        if n_cases
        else []
    )
    input_lens = pc.list_value_length(items_col).to_numpy() if n_cases else np.zeros(0)
    return PartStats(
        part,
        int(used.sum()),
        n_cases,
        len(distinct),
        float(lengths[used].mean()) if used.any() else 0.0,
        float(input_lens.mean()) if n_cases else 0.0,
    )


def drop_short(sessions: Sessions, min_len: int, filters: list[FilterStep], name: str) -> Sessions:
    keep = sessions.lengths >= min_len
    filters.append(
        FilterStep(name, events=int(sessions.lengths[~keep].sum()), sessions=int((~keep).sum()))
    )
    return sessions.select(keep)


def drop_rare_items(sessions: Sessions, min_count: int, filters: list[FilterStep]) -> Sessions:
    counts = np.bincount(sessions.items)
    rare = (counts > 0) & (counts < min_count)
    mask = ~rare[sessions.items]
    filters.append(
        FilterStep(
            f"rare items (< {min_count} events)", events=int((~mask).sum()), items=int(rare.sum())
        )
    )
    return sessions.keep_events(mask)


def drop_unseen(
    sessions: Sessions, seen: Sessions, part: str, min_len: int, filters: list[FilterStep]
) -> Sessions:
    """Remove items the training part never shows, then sessions left too short."""
    known = np.zeros(
        max(int(sessions.items.max(initial=0)), int(seen.items.max(initial=0))) + 1, dtype=bool
    )
    known[seen.items] = True
    mask = known[sessions.items]
    unseen_items = np.unique(sessions.items[~mask]).size
    kept = sessions.keep_events(mask)
    short = kept.lengths < min_len
    filters.append(
        FilterStep(
            f"{part} items unseen in train",
            events=int((~mask).sum()),
            sessions=int(short.sum()),
            items=int(unseen_items),
        )
    )
    return kept.select(~short)


def order_sessions(sessions: Sessions, order: str, path: str) -> np.ndarray:
    """Session indices in time order (last event, then source order), session-id or source order."""
    first = sessions.first_seqs
    if order == "source":
        return np.argsort(first, kind="stable")
    if order == "time":
        if sessions.times is None:
            raise ContractError(
                path,
                "the events have no timestamps (an ID-only source); use "
                "--order source or --order session_id",
                column="timestamp",
            )
        return np.lexsort((first, sessions.end_times))
    keys = sessions.keys
    if all(isinstance(k, str) and k.isdigit() for k in keys):
        return np.lexsort((first, np.array([int(k) for k in keys], dtype=np.int64)))
    return np.lexsort((first, keys.astype(str)))


def carve(sessions: Sessions, fraction: float) -> tuple[Sessions, Sessions]:
    """The last ``fraction`` of (ordered) sessions as validation; at least one when possible."""
    n = len(sessions)
    n_valid = int(round(n * fraction))
    if fraction > 0 and n_valid == 0 and n >= 2:
        n_valid = 1
    cut = n - n_valid
    return sessions.select(np.arange(cut)), sessions.select(np.arange(cut, n))


# -- protocols ------------------------------------------------------------------------------


def resolve_rule(sessions: str, gap_minutes: float, events: pa.Table) -> SessionRule:
    """``auto``: the rule the ingest adapter recorded for its source, else by session_id when
    every event has one, else user + calendar day."""
    if sessions != "auto":
        return SessionRule(sessions, gap_minutes)
    hint = read_info(events.schema).get("sessions")
    if isinstance(hint, Mapping) and hint.get("by") in ("id", "user", "gap", "day"):
        return SessionRule(hint["by"], float(hint.get("gap_minutes", gap_minutes)))
    if events.column("session_id").null_count == 0:
        return SessionRule("id")
    return SessionRule("day")


def make_split(
    sessions: Sessions,
    config: SplitConfig,
    n_items: int,
    path: str,
    name: str | None = None,
    rule: SessionRule | None = None,
) -> SplitResult:
    """Apply ``config`` to ordered-within sessions; nothing is written here."""
    p = config.params
    filters: list[FilterStep] = []
    if p["collapse_repeats"]:
        sessions, removed = collapse_repeats(sessions)
        filters.append(FilterStep("consecutive repeats collapsed", events=removed))
    m = p["min_session_len"]
    sessions = drop_short(sessions, m, filters, f"short sessions (< {m}) before item filter")
    if p["min_item_count"] > 1:
        sessions = drop_rare_items(sessions, p["min_item_count"], filters)
        sessions = drop_short(sessions, m, filters, f"short sessions (< {m}) after item filter")
    if len(sessions) == 0:
        raise ContractError(
            path,
            f"no session survives the {config.protocol} filters ({json.dumps(p, default=str)})",
        )
    build = {"macl": _macl, "srgnn": _srgnn, "loo": _loo}[config.protocol]
    parts, notes = build(sessions, p, path, filters)
    tables = {part: cases_table(s, idx) for part, (s, idx) in parts.items()}
    stats = [part_stats(part, parts[part][0], tables[part]) for part in ("train", "valid", "test")]
    if tables["test"].num_rows == 0 or tables["train"].num_rows == 0:
        raise ContractError(
            path,
            f"the {config.protocol} split leaves no train or no test case; loosen its parameters",
        )
    return SplitResult(
        name or config.protocol, config, rule, n_items, tables, stats, filters, notes
    )


def _cases(s: Sessions, prefixes: bool, max_len: int | None) -> tuple[Sessions, CaseIndex]:
    return s, (
        prefix_cases(s.offsets, max_len) if prefixes else last_item_cases(s.offsets, max_len)
    )


def _held_out_parts(
    train_all: Sessions, test: Sessions, p: dict, filters: list[FilterStep], eval_prefixes: bool
) -> dict[str, tuple[Sessions, CaseIndex]]:
    """The cases of a split that holds whole sessions out: validation carved from the end of
    the training sessions, items unseen in training dropped from valid/test when asked, and
    valid/test cases on every prefix (``eval_prefixes``) or the last item only."""
    train, valid = carve(train_all, p["valid_fraction"])
    if p["drop_unseen_test_items"]:
        test = drop_unseen(test, train, "test", p["min_session_len"], filters)
        valid = drop_unseen(valid, train, "valid", p["min_session_len"], filters)
    ml = p["max_len"]
    return {
        "train": _cases(train, p["train_prefixes"], ml),
        "valid": _cases(valid, eval_prefixes, ml),
        "test": _cases(test, eval_prefixes, ml),
    }


def _macl(s: Sessions, p: dict, path: str, filters: list[FilterStep]):
    s = s.select(order_sessions(s, p["order"], path))
    n_test = int(round(len(s) * p["test_fraction"]))
    if n_test == 0 and p["test_fraction"] > 0 and len(s) >= 2:
        n_test = 1
    train_all, test = (
        s.select(np.arange(len(s) - n_test)),
        s.select(np.arange(len(s) - n_test, len(s))),
    )
    parts = _held_out_parts(train_all, test, p, filters, eval_prefixes=False)
    return parts, [
        f"order: {p['order']}; test = last {p['test_fraction']:.0%} of sessions, "
        f"valid = last {p['valid_fraction']:.0%} of the rest"
    ]


def _srgnn(s: Sessions, p: dict, path: str, filters: list[FilterStep]):
    if s.times is None:
        raise ContractError(
            path,
            "protocol srgnn splits by time, and these events have no "
            "timestamps (an ID-only source); use --protocol macl --order source "
            "or --protocol loo",
            column="timestamp",
        )
    s = s.select(order_sessions(s, "time", path))
    end = s.end_times
    split_at = int(end.max()) - int(p["test_days"] * US_PER_DAY)
    is_test = end > split_at
    train_all, test = s.select(~is_test), s.select(is_test)
    parts = _held_out_parts(train_all, test, p, filters, eval_prefixes=True)
    import datetime as dt

    when = dt.datetime.fromtimestamp(split_at / 1e6, tz=dt.timezone.utc).isoformat()
    return parts, [f"test = sessions ending after {when} (last {p['test_days']:g} days)"]


def _loo(s: Sessions, p: dict, path: str, filters: list[FilterStep]):
    s = s.select(order_sessions(s, p["order"], path))
    ml = p["max_len"]
    parts = {
        "train": _cases(s.drop_tail(2), p["train_prefixes"], ml),
        "valid": _cases(s.drop_tail(1), False, ml),
        "test": _cases(s, False, ml),
    }
    return parts, ["per sequence: last item -> test, second-to-last -> valid, earlier -> train"]


# -- the command's entry point --------------------------------------------------------------


def load_sessions(
    ws: Workspace, sessions: str, gap_minutes: float
) -> tuple[Sessions, SessionRule, int]:
    """Read and validate the workspace's catalog and events and cut them into sessions."""
    items = read_items(ws)
    events = read_events(ws, items)
    path = ws.display(*EVENTS_PATH)
    pos = pc.index_in(events.column("item_id"), value_set=items.column("item_id")).to_numpy()
    item_idx = items.column("item_idx").to_numpy()[pos]
    rule = resolve_rule(sessions, gap_minutes, events)
    return sessionize(events, item_idx, rule, path), rule, items.num_rows


def run_split(ws: Workspace, config: SplitConfig, name: str | None = None) -> SplitResult:
    """Split the workspace's events with ``config``; write ``splits/<name>/{train,valid,test}``."""
    sessions, rule, n_items = load_sessions(ws, config.sessions, config.gap_minutes)
    result = make_split(sessions, config, n_items, ws.display(*EVENTS_PATH), name, rule)
    write_result(
        ws,
        result,
        {"sessions_rule": rule.to_dict(), "events_sha256": sha256_file(ws, *EVENTS_PATH)},
    )
    return result


def write_result(ws: Workspace, result: SplitResult, extra: Mapping[str, Any]) -> None:
    """Write the three parts; they share a ``split_id`` so readers can tell they belong together."""
    info = {
        "protocol": result.config.protocol,
        "params": result.config.params,
        "stats": result.stats_dict(),
        **extra,
    }
    info["split_id"] = sha256_json(info)[:16]
    for part in ("valid", "test", "train"):  # train last: list_protocols looks for it
        write_split(ws, result.name, part, result.tables[part], info, n_items=result.n_items)
