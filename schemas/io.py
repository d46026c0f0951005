"""Readers and writers for the catalog, events and splits, shared by both halves.

Every reader checks the schema version and validates; every writer validates, stamps the
schema version and writes atomically.
"""
from __future__ import annotations

from typing import Any, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.errors import ContractError
from schemas.fs import Workspace
from schemas.tables import EVENTS, ITEMS, SPLIT, SPLIT_PARTS, read_info, stamp
from schemas.validate import check_version, validate_events, validate_items, validate_split

ITEMS_PATH = ("catalog", "items.parquet")
EVENTS_PATH = ("events", "events.parquet")


def split_path(protocol: str, part: str) -> tuple[str, str, str]:
    if part not in SPLIT_PARTS:
        raise ValueError(f"split part must be one of {SPLIT_PARTS}, got {part!r}")
    return ("splits", protocol, f"{part}.parquet")


def read_parquet(ws: Workspace, *parts: str, columns: list[str] | None = None) -> pa.Table:
    """Read one Parquet file of the workspace; unreadable files raise naming the file. Page
    checksums are verified where the writer stored them (every file macl writes), so a
    flipped bit is an error, not a wrong number."""
    shown = ws.display(*parts)
    if not ws.exists(*parts):
        raise ContractError(shown, "file not found")
    try:
        table = pq.read_table(ws.path(*parts), filesystem=ws.fs, columns=columns,
                              page_checksum_verification=True)
        table.schema.names  # a damaged footer may hold names that are not UTF-8
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise ContractError(shown, f"is not a readable Parquet file ({exc})") from exc
    return table


def write_items(ws: Workspace, table: pa.Table, info: Mapping[str, Any] | None = None) -> pa.Table:
    shown = ws.display(*ITEMS_PATH)
    table = validate_items(table, shown).sort_by("item_idx")
    table = table.replace_schema_metadata(stamp(ITEMS, "items", info).metadata)
    ws.write_parquet_atomic(table, *ITEMS_PATH)
    return table


def read_items(ws: Workspace) -> pa.Table:
    shown = ws.display(*ITEMS_PATH)
    table = read_parquet(ws, *ITEMS_PATH)
    check_version(table.schema, shown, "items")
    return validate_items(table, shown)


def write_events(ws: Workspace, table: pa.Table, items: pa.Table,
                 info: Mapping[str, Any] | None = None) -> pa.Table:
    shown = ws.display(*EVENTS_PATH)
    table = validate_events(table, shown, known_item_ids=items.column("item_id").combine_chunks())
    table = table.replace_schema_metadata(stamp(EVENTS, "events", info).metadata)
    ws.write_parquet_atomic(table, *EVENTS_PATH)
    return table


def read_events(ws: Workspace, items: pa.Table | None = None) -> pa.Table:
    shown = ws.display(*EVENTS_PATH)
    table = read_parquet(ws, *EVENTS_PATH)
    check_version(table.schema, shown, "events")
    known = items.column("item_id").combine_chunks() if items is not None else None
    return validate_events(table, shown, known_item_ids=known)


def write_split(ws: Workspace, protocol: str, part: str, table: pa.Table,
                info: Mapping[str, Any], n_items: int) -> pa.Table:
    """``info`` records the protocol and its parameters in the file's metadata."""
    parts = split_path(protocol, part)
    table = validate_split(table, ws.display(*parts), n_items=n_items)
    full_info = {"protocol": protocol, "part": part, "n_items": n_items, **info}
    table = table.replace_schema_metadata(stamp(SPLIT, "split", full_info).metadata)
    ws.write_parquet_atomic(table, *parts)
    return table


def read_split(ws: Workspace, protocol: str, part: str) -> tuple[pa.Table, dict[str, Any]]:
    parts = split_path(protocol, part)
    shown = ws.display(*parts)
    table = read_parquet(ws, *parts)
    check_version(table.schema, shown, "split")
    info = read_info(table.schema)
    return validate_split(table, shown, n_items=info.get("n_items")), info


def list_protocols(ws: Workspace) -> list[str]:
    return [p for p in ws.listdir("splits") if ws.exists("splits", p, "train.parquet")]
