"""Validation of every table against its contract, with errors that point at file/column/rows."""
from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.errors import ContractError
from schemas.tables import (
    EVENTS,
    EVENTS_REQUIRED,
    FEATURE_STATUS,
    ITEMS,
    ITEMS_REQUIRED,
    META_INFO,
    META_KIND,
    META_VERSION,
    SCHEMA_VERSION,
    SPLIT,
    SPLIT_REQUIRED,
)

MAX_SHOWN = 5


def check_version(schema: pa.Schema, path: str, kind: str) -> None:
    """Refuse files of another kind or from a future schema version, or whose JSON info does
    not parse; unstamped files pass."""
    meta = schema.metadata or {}
    info = meta.get(META_INFO)
    if info is not None:
        try:
            parsed = json.loads(info)
        except ValueError as exc:  # JSON and UTF-8 errors
            raise ContractError(path, f"its metadata {META_INFO.decode()} is not valid JSON "
                                      f"({exc})") from None
        if not isinstance(parsed, dict):
            raise ContractError(path, f"its metadata {META_INFO.decode()} is not a JSON object")
    found_kind = meta.get(META_KIND)
    if found_kind is not None and found_kind.decode() != kind:
        raise ContractError(path, f"is a '{found_kind.decode()}' table, expected '{kind}'")
    raw = meta.get(META_VERSION)
    if raw is None:
        return
    try:
        version = int(raw)
    except ValueError:
        raise ContractError(path, f"schema version {raw!r} is not an integer") from None
    if version > SCHEMA_VERSION:
        raise ContractError(
            path,
            f"was written with schema version {version}, newer than this macl (version "
            f"{SCHEMA_VERSION}); upgrade macl to read it",
        )


def _first_true(mask: np.ndarray) -> tuple[list[int], int]:
    rows = np.flatnonzero(mask)
    return rows[:MAX_SHOWN].tolist(), int(rows.size)


def _column_values(col: pa.ChunkedArray | pa.Array, rows: Sequence[int]) -> list[object]:
    return [col[r].as_py() for r in rows]


def conform(table: pa.Table, schema: pa.Schema, required: Sequence[str], path: str) -> pa.Table:
    """Return ``table`` with exactly ``schema``'s columns and types, or raise naming the problem.

    Missing required columns and nulls in them are errors; missing optional columns become
    nulls; other columns of the source are dropped; types are cast safely (no silent truncation).
    """
    names = set(table.column_names)
    missing = [c for c in required if c not in names]
    if missing:
        raise ContractError(
            path,
            f"missing required column(s) {missing}; found {sorted(names)}",
            column=missing[0],
        )
    arrays = []
    for field in schema:
        if field.name not in names:
            arrays.append(pa.nulls(table.num_rows, field.type))
            continue
        col = table.column(field.name)
        if not col.type.equals(field.type):
            col = _safe_cast(col, field.type, path, field.name)
        if field.name in required and col.null_count:
            rows, total = _first_true(np.asarray(col.is_null().to_numpy(zero_copy_only=False)))
            raise ContractError(path, "null values in a key column", column=field.name,
                                rows=rows, total=total)
        arrays.append(col)
    return pa.Table.from_arrays(arrays, schema=schema.with_metadata(table.schema.metadata or {}))


def _safe_cast(col: pa.ChunkedArray, target: pa.DataType, path: str, name: str) -> pa.ChunkedArray:
    try:
        return col.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        pass
    bad_rows: list[int] = []
    bad_values: list[object] = []
    total = 0
    flat = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    for i in range(len(flat)):
        try:
            flat.slice(i, 1).cast(target, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            total += 1
            if len(bad_rows) < MAX_SHOWN:
                bad_rows.append(i)
                bad_values.append(flat[i].as_py())
    raise ContractError(
        path,
        f"has type {col.type}, expected {target} (values cannot be converted)",
        column=name,
        rows=bad_rows,
        values=bad_values,
        total=total or len(flat),
    )


def require_utf8(table: pa.Table, path: str) -> None:
    """Strings must be valid UTF-8: Parquet does not enforce it, and a stray Latin-1 byte would
    otherwise crash whatever first turns the value into text (hashing, tokenising, printing)."""
    for name in table.column_names:
        col = table.column(name)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            continue
        try:
            col.validate(full=True)
        except pa.ArrowInvalid:
            raw = col.cast(pa.large_binary() if pa.types.is_large_string(col.type)
                           else pa.binary()).to_pylist()
            bad = np.array([v is not None and not _is_utf8(v) for v in raw])
            rows, total = _first_true(bad)
            raise ContractError(path, "text is not valid UTF-8", column=name, rows=rows,
                                values=[raw[r] for r in rows], total=total) from None


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def validate_items(table: pa.Table, path: str) -> pa.Table:
    table = conform(table, ITEMS, ITEMS_REQUIRED, path)
    require_utf8(table, path)
    ids = table.column("item_id")
    empty = pc.equal(pc.utf8_length(ids), 0).to_numpy(zero_copy_only=False)
    if empty.any():
        rows, total = _first_true(empty)
        raise ContractError(path, "empty item_id", column="item_id", rows=rows, total=total)
    dup = _duplicate_mask(ids)
    if dup.any():
        rows, total = _first_true(dup)
        raise ContractError(path, "duplicate item_id", column="item_id", rows=rows,
                            values=_column_values(ids, rows), total=total)
    idx = table.column("item_idx").to_numpy()
    n = len(idx)
    bad = (idx < 1) | (idx > n)
    if bad.any():
        rows, total = _first_true(bad)
        raise ContractError(path, f"item_idx must be dense 1..{n} (0 is padding)",
                            column="item_idx", rows=rows, values=idx[rows].tolist(), total=total)
    dup_idx = _duplicate_mask(table.column("item_idx"))
    if dup_idx.any():
        rows, total = _first_true(dup_idx)
        raise ContractError(path, "duplicate item_idx", column="item_idx", rows=rows,
                            values=idx[rows].tolist(), total=total)
    return table


def validate_events(table: pa.Table, path: str, known_item_ids: pa.Array | None = None) -> pa.Table:
    table = conform(table, EVENTS, EVENTS_REQUIRED, path)
    require_utf8(table, path)
    if known_item_ids is not None:
        unknown = pc.invert(pc.is_in(table.column("item_id"), value_set=known_item_ids))
        mask = unknown.to_numpy(zero_copy_only=False)
        if mask.any():
            rows, total = _first_true(mask)
            raise ContractError(path, "events reference items that are not in the catalog",
                                column="item_id", rows=rows,
                                values=_column_values(table.column("item_id"), rows), total=total)
    ts = table.column("timestamp").cast(pa.int64()).fill_null(0).to_numpy()
    neg = ts < 0
    if neg.any():
        rows, total = _first_true(neg)
        raise ContractError(path, "timestamps before 1970-01-01 (negative)", column="timestamp",
                            rows=rows, values=_column_values(table.column("timestamp"), rows),
                            total=total)
    both = pc.and_(table.column("session_id").is_null(), table.column("user_id").is_null())
    mask = both.to_numpy(zero_copy_only=False)
    if mask.any():
        rows, total = _first_true(mask)
        raise ContractError(path, "an event needs a session_id or a user_id",
                            column="session_id", rows=rows, total=total)
    return table


def validate_split(table: pa.Table, path: str, n_items: int | None = None) -> pa.Table:
    table = conform(table, SPLIT, SPLIT_REQUIRED, path)
    items = table.column("items").combine_chunks()
    lengths = pc.list_value_length(items).to_numpy(zero_copy_only=False)
    empty = lengths == 0
    if empty.any():
        rows, total = _first_true(empty)
        raise ContractError(path, "empty input sequence", column="items", rows=rows, total=total)
    flat = items.flatten()
    if flat.null_count:
        owner = np.repeat(np.arange(len(lengths)), lengths)
        rows, total = _first_true(np.bincount(owner[flat.is_null().to_numpy(zero_copy_only=False)],
                                              minlength=len(lengths)) > 0)
        raise ContractError(path, "null item inside a sequence", column="items", rows=rows,
                            total=total)
    if n_items is not None:
        values = flat.to_numpy()
        owner = np.repeat(np.arange(len(lengths)), lengths)
        out = (values < 1) | (values > n_items)
        if out.any():
            rows, total = _first_true(np.bincount(owner[out], minlength=len(lengths)) > 0)
            raise ContractError(path, f"item_idx outside 1..{n_items}", column="items",
                                rows=rows, total=total)
        target = table.column("target").to_numpy()
        out = (target < 1) | (target > n_items)
        if out.any():
            rows, total = _first_true(out)
            raise ContractError(path, f"target outside 1..{n_items}", column="target", rows=rows,
                                values=target[rows].tolist(), total=total)
    return table


def validate_feature_rows(table: pa.Table, path: str) -> pa.Table:
    """Status values are known; ok rows carry a finite-shaped embedding, others a reason."""
    status = table.column("status")
    bad = pc.invert(pc.is_in(status, value_set=pa.array(FEATURE_STATUS))).to_numpy(
        zero_copy_only=False)
    if bad.any():
        rows, total = _first_true(bad)
        raise ContractError(path, f"status must be one of {FEATURE_STATUS}", column="status",
                            rows=rows, values=_column_values(status, rows), total=total)
    is_ok = pc.equal(status, "ok").to_numpy(zero_copy_only=False)
    emb_null = table.column("embedding").is_null().to_numpy(zero_copy_only=False)
    wrong = is_ok & emb_null
    if wrong.any():
        rows, total = _first_true(wrong)
        raise ContractError(path, "status 'ok' without an embedding", column="embedding",
                            rows=rows, total=total)
    reason_null = table.column("reason").is_null().to_numpy(zero_copy_only=False)
    wrong = ~is_ok & reason_null
    if wrong.any():
        rows, total = _first_true(wrong)
        raise ContractError(path, "a missing/error row must give a reason", column="reason",
                            rows=rows, total=total)
    return table


def _duplicate_mask(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """True for every occurrence after the first of a repeated value."""
    values = col.to_numpy(zero_copy_only=False)
    _, first = np.unique(values, return_index=True)
    mask = np.ones(len(values), dtype=bool)
    mask[first] = False
    return mask


def coerce_timestamps(values: Sequence[object] | pa.Array, path: str, column: str,
                      unit: str | None = None) -> pa.Array:
    """Parse timestamps into UTC microseconds, naming the rows that cannot be parsed.

    ``unit`` ('s', 'ms', 'us') reads integers as Unix epochs; otherwise strings are parsed as
    ISO-8601 dates or datetimes (naive values are taken as UTC). Negative epochs are refused.
    """
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    target = pa.timestamp("us", tz="UTC")
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        if unit is None:
            raise ContractError(path, "numeric timestamps need a unit (s, ms or us)", column=column)
        nums = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(nums) | (nums < 0)
        if bad.any():
            rows, total = _first_true(bad)
            raise ContractError(path, "negative or non-finite timestamps", column=column,
                                rows=rows, values=nums[rows].tolist(), total=total)
        scale = {"s": 1_000_000, "ms": 1_000, "us": 1}[unit]
        return pa.array((nums * scale).astype(np.int64), type=pa.int64()).cast(target)
    if pa.types.is_timestamp(arr.type):
        out = arr.cast(target) if arr.type.tz else pc.assume_timezone(arr, "UTC").cast(target)
    else:
        strings = arr.cast(pa.string())
        parsed = []
        bad_rows: list[int] = []
        bad_values: list[object] = []
        total = 0
        for i, s in enumerate(strings.to_pylist()):
            ts = _parse_one(s)
            if ts is None:
                total += 1
                if len(bad_rows) < MAX_SHOWN:
                    bad_rows.append(i)
                    bad_values.append(s)
            parsed.append(ts)
        if total:
            raise ContractError(path, "unparsable timestamps", column=column, rows=bad_rows,
                                values=bad_values, total=total)
        out = pa.array(parsed, type=pa.int64()).cast(target)
    ints = out.cast(pa.int64()).to_numpy(zero_copy_only=False)
    neg = ints < 0
    if neg.any():
        rows, total = _first_true(neg)
        raise ContractError(path, "timestamps before 1970-01-01", column=column, rows=rows,
                            total=total)
    return out


def _parse_one(value: object) -> int | None:
    """ISO-8601 date/datetime -> UTC epoch microseconds; None when it cannot be parsed."""
    import datetime as dt

    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        d = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    delta = d - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return delta.days * 86_400_000_000 + delta.seconds * 1_000_000 + delta.microseconds
