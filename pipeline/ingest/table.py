"""Any events table (CSV/TSV/Parquet) plus an optional items table, with a column mapping.

``events_map`` maps contract fields to source columns for the events (item_id is required;
session_id and/or user_id; timestamp optional: numbers need ``timestamp_unit``, text is read as
ISO-8601). ``items_map`` does the same for items (item_id, title, text, image, category, brand,
price); ``text_columns`` builds the text from several columns when there is no single one.
Image paths are relative to ``image_dir`` (default: the items file's folder) or absolute under
it. When an items table is given it is the catalog: events naming other items are refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.ingest.base import (
    SourceData,
    check_known_items,
    compose_text,
    events_table,
    key_column,
    match_rows,
    numbers,
    read_table_file,
    refuse_duplicates,
    refuse_rows,
    source_items,
)
from pipeline.sessions import SessionRule
from schemas.errors import ContractError
from schemas.validate import coerce_timestamps

FORMAT = "table"
EVENT_FIELDS = ("item_id", "session_id", "user_id", "timestamp")
ITEM_FIELDS = ("item_id", "title", "text", "image", "category", "brand", "price")
DEFAULT_NAMES = ("events", "items")
TABLE_EXTS = (".csv", ".tsv", ".parquet")


def parse_mapping(
    spec: str | Mapping[str, str] | None, allowed: Sequence[str], option: str
) -> dict[str, str]:
    """'field=column,field=column' (or a dict) -> {field: column}; unknown fields refused."""
    if spec is None:
        return {}
    pairs = (
        spec.items()
        if isinstance(spec, Mapping)
        else (p.split("=", 1) for p in str(spec).split(",") if p.strip())
    )
    out = {}
    for pair in pairs:
        if len(pair) != 2 or not pair[0].strip() or not pair[1].strip():
            raise ValueError(f"{option}: expected field=column pairs, got {spec!r}")
        key, value = pair[0].strip(), pair[1].strip()
        if key not in allowed:
            raise ValueError(f"{option}: unknown field {key!r}; fields are {list(allowed)}")
        out[key] = value
    return out


def _locate(source: Path, given: str | Path | None, stem: str) -> Path | None:
    if given is not None:
        path = Path(given)
        path = path if path.is_absolute() else source / path
        if not path.is_file():
            raise ContractError(str(path), "not found")
        return path.resolve()
    if source.is_file():
        return source.resolve() if stem == "events" else None
    for ext in TABLE_EXTS:
        if (source / f"{stem}{ext}").is_file():
            return (source / f"{stem}{ext}").resolve()
    return None


def load(
    source: Path,
    *,
    events: str | Path | None = None,
    items: str | Path | None = None,
    events_map: str | Mapping[str, str] | None = None,
    items_map: str | Mapping[str, str] | None = None,
    text_columns: Sequence[str] | str | None = None,
    timestamp_unit: str | None = None,
    sort_by: Sequence[str] | str | None = None,
    image_dir: str | Path | None = None,
    sessions: str | None = None,
    gap_minutes: float = 30.0,
    catalog: str = "events",
    delimiter: str = ",",
    info: Mapping[str, object] | None = None,
) -> SourceData:
    source = Path(source).resolve()
    ev_path = _locate(source, events, "events")
    if ev_path is None:
        raise ContractError(
            str(source), "no events table (events.csv/.tsv/.parquet); pass --events"
        )
    it_path = _locate(source if source.is_dir() else source.parent, items, "items")
    emap = {f: f for f in EVENT_FIELDS}
    emap.update(parse_mapping(events_map, EVENT_FIELDS, "--events-map"))
    imap = {f: f for f in ITEM_FIELDS}
    imap.update(parse_mapping(items_map, ITEM_FIELDS, "--items-map"))
    if isinstance(text_columns, str):
        text_columns = [c.strip() for c in text_columns.split(",") if c.strip()]
    if isinstance(sort_by, str):
        sort_by = [c.strip() for c in sort_by.split(",") if c.strip()]

    table = read_table_file(ev_path, delimiter=delimiter, required=[emap["item_id"]])
    shown = str(ev_path)
    if sort_by:
        missing = [c for c in sort_by if c not in table.column_names]
        if missing:
            raise ContractError(
                shown,
                f"--sort-by column(s) {missing} not found; found {table.column_names}",
                column=missing[0],
            )
        sortable = {}
        for i, c in enumerate(sort_by):
            col = table.column(c)
            if pa.types.is_string(col.type):
                try:
                    col = col.cast(pa.float64())
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    pass
            sortable[f"k{i}"] = col
        order = pc.sort_indices(
            pa.table(sortable), sort_keys=[(k, "ascending") for k in sortable]
        )  # stable
        table = table.take(order)

    def column(field: str) -> str | None:
        name = emap[field]
        explicit = field in parse_mapping(events_map, EVENT_FIELDS, "--events-map")
        if name in table.column_names:
            return name
        if explicit:
            raise ContractError(
                shown,
                f"column {name!r} (mapped to {field}) not found; found {table.column_names}",
                column=name,
            )
        return None

    item_ids = key_column(table, emap["item_id"], shown)
    sess_col, user_col, time_col = column("session_id"), column("user_id"), column("timestamp")
    if sess_col is None and user_col is None:
        raise ContractError(
            shown,
            "events need a session_id or a user_id column (map one with "
            "--events-map session_id=COL)",
            column="session_id",
        )
    session = key_column(table, sess_col, shown) if sess_col else None
    user = table.column(user_col).combine_chunks().cast(pa.string()) if user_col else None
    when = None
    if time_col:
        raw = table.column(time_col).combine_chunks()
        if pa.types.is_string(raw.type) and timestamp_unit:
            raw = numbers(table, time_col, shown, non_negative=True)
        elif pa.types.is_string(raw.type) and _all_numeric(raw):
            raise ContractError(
                shown,
                "numeric timestamps need a unit (--timestamp-unit s, ms or us)",
                column=time_col,
            )
        when = coerce_timestamps(raw, shown, time_col, unit=timestamp_unit)

    notes: list[str] = []
    image_roots: list[str] = []
    if it_path is not None:
        items_table = read_table_file(it_path, delimiter=delimiter, required=[imap["item_id"]])
        ishown = str(it_path)
        catalog_ids = key_column(items_table, imap["item_id"], ishown)
        refuse_duplicates(catalog_ids, ishown, imap["item_id"], "duplicate item ids")
        check_known_items(item_ids, catalog_ids, shown, emap["item_id"])
        if catalog == "events":
            ids = pc.unique(item_ids)
        elif catalog == "all":
            ids = catalog_ids
        else:
            raise ValueError(f"catalog must be 'events' or 'all', got {catalog!r}")
        items_table = items_table.set_column(
            items_table.column_names.index(imap["item_id"]), imap["item_id"], catalog_ids
        )
        image_root = Path(image_dir).resolve() if image_dir else it_path.parent
        image_col = imap["image"]
        if image_col in items_table.column_names:
            file_paths = _image_paths(
                items_table.column(image_col).combine_chunks().cast(pa.string()),
                image_root,
                ishown,
                image_col,
            )
        elif "image" in parse_mapping(items_map, ITEM_FIELDS, "--items-map"):
            raise ContractError(
                ishown,
                f"column {image_col!r} (mapped to image) not found; found "
                f"{items_table.column_names}",
                column=image_col,
            )
        else:
            file_paths = [None] * items_table.num_rows
        items_table = items_table.append_column("__image_path", pa.array(file_paths, pa.string()))
        _, field = match_rows(ids, items_table, imap["item_id"])

        def mapped(name: str) -> pa.Array | None:
            col = imap[name]
            if col in items_table.column_names:
                return pc.cast(field(col), pa.string())
            if name in parse_mapping(items_map, ITEM_FIELDS, "--items-map"):
                raise ContractError(
                    ishown,
                    f"column {col!r} (mapped to {name}) not found; found "
                    f"{items_table.column_names}",
                    column=col,
                )
            return None

        if text_columns:
            missing = [c for c in text_columns if c not in items_table.column_names]
            if missing:
                raise ContractError(
                    ishown, f"--text-columns {missing} not found", column=missing[0]
                )
            text = compose_text(
                [
                    (
                        "" if i == 0 else c.replace("_", " ").capitalize(),
                        pc.cast(field(c), pa.string()),
                    )
                    for i, c in enumerate(text_columns)
                ],
                len(ids),
            )
        else:
            text = mapped("text")
        price = None
        if imap["price"] in items_table.column_names:
            numbers(items_table, imap["price"], ishown, non_negative=True)
            price = pc.cast(field(imap["price"]), pa.float64())
        paths = field("__image_path").to_pylist()
        if any(p is not None for p in paths):
            image_roots = [str(image_root)]
        missing_files = sum(p is not None and not os.path.isfile(p) for p in paths)
        if missing_files:
            notes.append(f"{missing_files:,} image paths name no file: image_uri = null")
            paths = [p if p is not None and os.path.isfile(p) else None for p in paths]
        items = source_items(
            ids,
            title=mapped("title"),
            text=text,
            image_path=paths,
            category=mapped("category"),
            brand=mapped("brand"),
            price=price,
        )
    else:
        items = source_items(pc.unique(item_ids))
        notes.append("no items table: ID-only items")

    rule = SessionRule(sessions or ("id" if session is not None else "day"), gap_minutes)
    ev = events_table(item_ids, session_id=session, user_id=user, timestamp=when)
    return SourceData(
        FORMAT,
        str(source),
        items,
        ev,
        rule,
        image_roots=image_roots,
        notes=notes,
        info=dict(info or {}),
    )


def _all_numeric(values: pa.Array) -> bool:
    try:
        values.drop_null().cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _image_paths(values: pa.Array, root: Path, path: str, column: str) -> list[str | None]:
    """Absolute image paths under ``root``; a path that leaves it is refused with its row."""
    out: list[str | None] = []
    outside = []
    for v in values.to_pylist():
        if v is None or not v.strip():
            out.append(None)
            continue
        if "://" in v:
            outside.append(len(out))
            out.append(None)
            continue
        full = os.path.realpath(v if os.path.isabs(v) else root / v)
        if not (full == str(root) or full.startswith(str(root) + os.sep)):
            outside.append(len(out))
        out.append(full)
    if outside:
        mask = np.zeros(len(out), dtype=bool)
        mask[outside] = True
        refuse_rows(
            mask,
            path,
            f"image paths must be files under {root} (set --image-dir; URLs are never fetched)",
            column=column,
            values=values,
        )
    return out
