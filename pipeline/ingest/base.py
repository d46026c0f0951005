"""What every ingest adapter shares: reading source files strictly, and writing the workspace.

An adapter turns one source layout into a ``SourceData`` (items as the source describes them,
events in source order, optionally the source's own split); ``write_source`` then assigns stable
item indices, references or copies images, writes the catalog, the events and the given split
through ``schemas.io`` (validated, atomic) and returns the summary the command prints.

Rows in error messages are 0-based data rows (the header is not counted), as pandas shows them.
"""

from __future__ import annotations

import csv
import filecmp
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, NoReturn, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from pipeline.sessions import SessionRule, sessionize
from pipeline.splits import render_table
from schemas.errors import ContractError
from schemas.fs import Workspace, temp_name
from schemas.hashing import sha256_json
from schemas.ids import assign_item_idx
from schemas.io import (
    EVENTS_PATH,
    ITEMS_PATH,
    list_protocols,
    read_items,
    write_events,
    write_items,
    write_split,
)
from schemas.tables import SPLIT, read_info

NULL_VALUES = ["", "NA", "NaN", "nan", "null", "NULL"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
MAX_SHOWN = 5
GIVEN = "given"

#: the source-side item columns an adapter fills (``image_path``: absolute local path or None)
SOURCE_ITEMS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("text", pa.string()),
        pa.field("image_path", pa.string()),
        pa.field("category", pa.string()),
        pa.field("brand", pa.string()),
        pa.field("price", pa.float64()),
    ]
)


@dataclass
class SourceData:
    """One source read into memory, before item indices exist.

    ``given`` holds a pre-split source's cases with items as 0-based positions into ``items``
    rows; ``sessions`` is the rule ``macl split --sessions auto`` will use for these events.
    """

    format: str
    source: str
    items: pa.Table
    events: pa.Table
    sessions: SessionRule
    image_roots: list[str] = field(default_factory=list)
    given: dict[str, pa.Table] | None = None
    given_info: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class IngestSummary:
    format: str
    source: str
    workspace: str
    items: int
    new_items: int
    updated_items: int
    kept_items: int
    with_image: int
    with_text: int
    events: int
    sessions: int
    session_rule: str
    given: dict[str, int] | None
    copied_images: int
    notes: list[str]

    def render(self) -> str:
        rows = [
            ["items", self.items],
            ["  new", self.new_items],
            ["  already in the catalog (updated)", self.updated_items],
            ["  kept from before (not in this source)", self.kept_items],
            ["with image", self.with_image],
            ["with text", self.with_text],
            ["events", self.events],
            [f"sessions ({self.session_rule})", self.sessions],
        ]
        if self.copied_images:
            rows.append(["images copied", self.copied_images])
        if self.given:
            rows.extend([f"given {part} cases", n] for part, n in self.given.items())
        out = [
            f"ingested {self.format} from {self.source} into {self.workspace}",
            render_table(["", "count"], rows),
        ]
        out.extend(f"note: {n}" for n in self.notes)
        return "\n".join(out)


# -- reading source files -----------------------------------------------------------------------


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ContractError(str(path), f"not found ({what})")
    return path


def read_csv(
    path: Path,
    *,
    delimiter: str = ",",
    quoting: bool = True,
    required: Sequence[str] = (),
    column_names: Sequence[str] | None = None,
) -> pa.Table:
    """A CSV/TSV file with every column as a string; bad UTF-8 or rows are named precisely.

    ``column_names`` reads a file without a header line.
    """
    shown = str(path)
    header = list(column_names) if column_names else _header(path, delimiter, quoting)
    try:
        table = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(column_names=header if column_names else None),
            parse_options=pa_csv.ParseOptions(
                delimiter=delimiter, quote_char='"' if quoting else False
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                null_values=NULL_VALUES,
                strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid as exc:
        if "UTF8" in str(exc):
            raise _utf8_error(path, header, delimiter, quoting, bool(column_names)) from None
        kind = "TSV" if delimiter == "\t" else "CSV"
        raise ContractError(shown, f"cannot be parsed as {kind}: {exc}") from None
    require_columns(table, required, shown)
    return table


def _header(path: Path, delimiter: str, quoting: bool) -> list[str]:
    with open(path, "rb") as f:
        first = f.readline()
    try:
        line = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ContractError(str(path), "header line is not valid UTF-8") from None
    reader = csv.reader(
        [line], delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE
    )
    try:
        header = next(reader, [])
    except csv.Error as exc:
        raise ContractError(str(path), f"header line cannot be parsed ({exc})") from None
    if not header or not any(h.strip() for h in header):
        raise ContractError(str(path), "is empty or has no header line")
    return header


def _utf8_error(
    path: Path, header: list[str], delimiter: str, quoting: bool, headerless: bool
) -> ContractError:
    """Find the data rows (and the column) holding bytes that are not UTF-8."""
    rows: list[int] = []
    column = None
    total = 0
    with open(path, "rb") as f:
        if not headerless:
            f.readline()
        for row, raw in enumerate(f):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                total += 1
                if len(rows) < MAX_SHOWN:
                    rows.append(row)
                if column is None:
                    text = raw.decode("utf-8", errors="replace")
                    try:
                        fields = next(
                            csv.reader(
                                [text],
                                delimiter=delimiter,
                                quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE,
                            ),
                            [],
                        )
                    except csv.Error:  # the row is broken beyond its encoding: no column
                        fields = []
                    bad = [i for i, v in enumerate(fields) if "\ufffd" in v]
                    column = header[bad[0]] if bad and bad[0] < len(header) else None
    return ContractError(
        str(path),
        "text is not valid UTF-8 (re-encode the file as UTF-8)",
        column=column,
        rows=rows,
        total=total,
    )


def read_table_file(path: Path, *, delimiter: str = ",", required: Sequence[str] = ()) -> pa.Table:
    """A CSV/TSV or Parquet file (by extension); Parquet strings are checked to be UTF-8."""
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise ContractError(str(path), f"is not a readable Parquet file ({exc})") from None
        for name in table.column_names:
            col = table.column(name)
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                try:
                    col.validate(full=True)
                except pa.ArrowInvalid:
                    raise ContractError(str(path), "text is not valid UTF-8", column=name) from None
        require_columns(table, required, str(path))
        return table
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else delimiter
    return read_csv(path, delimiter=sep, required=required)


def require_columns(table: pa.Table, names: Iterable[str], path: str) -> None:
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise ContractError(
            path, f"missing column(s) {missing}; found {table.column_names}", column=missing[0]
        )


def first_rows(mask: np.ndarray) -> tuple[list[int], int]:
    rows = np.flatnonzero(mask)
    return rows[:MAX_SHOWN].tolist(), int(rows.size)


def refuse_rows(
    mask: np.ndarray, path: str, problem: str, *, column: str, values: Any = None
) -> NoReturn:
    """Raise the ``ContractError`` naming the first rows where ``mask`` is set.

    ``values`` (an Arrow array or anything indexable by row) shows each named row's value.
    """
    rows, total = first_rows(mask)
    shown = None
    if values is not None:
        shown = [v.as_py() if isinstance(v, pa.Scalar) else v for v in (values[r] for r in rows)]
    raise ContractError(path, problem, column=column, rows=rows, values=shown, total=total)


def key_column(table: pa.Table, name: str, path: str) -> pa.Array:
    """A key column as non-empty strings; null or empty keys are refused with their rows."""
    require_columns(table, [name], path)
    col = table.column(name).combine_chunks()
    if not pa.types.is_string(col.type):
        col = col.cast(pa.string())
    bad = pc.or_kleene(col.is_null(), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0))
    mask = bad.fill_null(True).to_numpy(zero_copy_only=False)
    if mask.any():
        refuse_rows(mask, path, "null or empty key values", column=name)
    return col


def numbers(
    table: pa.Table, name: str, path: str, *, integer: bool = False, non_negative: bool = False
) -> pa.Array:
    """A numeric column parsed from text; unparsable (or negative) values are named."""
    require_columns(table, [name], path)
    col = table.column(name).combine_chunks()
    target = pa.int64() if integer else pa.float64()
    try:
        values = col if col.type == target else col.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = None
    if values is None:
        bad = []
        for i, v in enumerate(col.to_pylist()):
            if v is None:
                continue
            try:
                int(v) if integer else float(v)
            except (TypeError, ValueError):
                bad.append(i)
        shown = bad[:MAX_SHOWN]
        raise ContractError(
            path,
            f"values are not {'integers' if integer else 'numbers'}",
            column=name,
            rows=shown,
            values=[col[i].as_py() for i in shown],
            total=len(bad),
        )
    if non_negative:
        neg = pc.less(values, 0).fill_null(False).to_numpy(zero_copy_only=False)
        if neg.any():
            refuse_rows(neg, path, "negative values", column=name, values=values)
    return values


def refuse_duplicates(col: pa.Array, path: str, column: str, problem: str) -> None:
    """Refuse repeated values in a column that must be unique, naming the repeats."""
    values = col.to_numpy(zero_copy_only=False)
    _, first = np.unique(values, return_index=True)
    if len(first) != len(values):
        mask = np.ones(len(values), dtype=bool)
        mask[first] = False
        refuse_rows(mask, path, problem, column=column, values=values)


def unique_items(table: pa.Table, key: str, fields: Sequence[str], path: str) -> pa.Table:
    """Drop rows that repeat an earlier row exactly; refuse ids repeated with other values.

    Some sources repeat catalog rows verbatim (ML-100K's items.csv, Amazon meta files); a
    repeat that disagrees on a field used downstream is ambiguous and refused.
    """
    if table.num_rows == 0:
        return table
    frame = table.select([key, *[f for f in fields if f != key]]).to_pandas()
    dup_key = frame.duplicated(subset=[key], keep="first").to_numpy()
    if not dup_key.any():
        return table
    same = frame.duplicated(keep="first").to_numpy()
    conflict = dup_key & ~same
    if conflict.any():
        refuse_rows(
            conflict, path, "duplicate ids with different values", column=key,
            values=frame[key].to_numpy(),
        )
    return table.filter(pa.array(~dup_key))


def compose_text(
    parts: Sequence[tuple[str, pa.Array | Sequence[str | None]]], n: int
) -> list[str | None]:
    """Join labelled fields into one text per row ('label: value. ...'); None if all are empty.

    An empty label joins the bare value. The text is what the encoders see, so it names each
    field the way a product page would.
    """
    columns = [
        (
            label,
            values.to_pylist() if isinstance(values, (pa.Array, pa.ChunkedArray)) else list(values),
        )
        for label, values in parts
    ]
    out: list[str | None] = []
    for i in range(n):
        pieces = []
        for label, values in columns:
            v = values[i]
            if v is None:
                continue
            v = " ".join(str(v).split())
            if not v:
                continue
            if not v.endswith((".", "!", "?")):
                v += "."
            pieces.append(f"{label}: {v}" if label else v)
        out.append(" ".join(pieces) if pieces else None)
    return out


def positions(values: pa.Array, value_set: pa.Array) -> np.ndarray:
    """Position of each value in ``value_set``, -1 where it is absent."""
    return pc.index_in(values, value_set=value_set).fill_null(-1).to_numpy().astype(np.int64)


def match_rows(ids: pa.Array, table: pa.Table, key: str):
    """Align ``table``'s rows to ``ids``: (has_row mask, field(name) -> column, null if no row)."""
    pos = positions(ids, table.column(key).combine_chunks())
    has_row = pos >= 0
    rows = table.take(pa.array(np.where(has_row, pos, 0))) if table.num_rows else table
    mask = pa.array(has_row)

    def field(name: str) -> pa.Array:
        if name not in rows.column_names or len(ids) == 0 or not table.num_rows:
            kind = table.schema.field(name).type if name in table.column_names else pa.string()
            return pa.nulls(len(ids), kind)
        return pc.if_else(mask, rows.column(name).combine_chunks(), None)

    return has_row, field


def image_index(folder: Path | None) -> dict[str, str]:
    """Image files in ``folder`` by file stem (one directory listing, not one stat per item)."""
    if folder is None or not folder.is_dir():
        return {}
    found: dict[str, str] = {}
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            stem, ext = os.path.splitext(entry.name)
            if ext.lower() in IMAGE_EXTENSIONS and entry.is_file() and stem not in found:
                found[stem] = os.path.abspath(entry.path)
    return found


def source_items(item_ids: Sequence[str] | pa.Array, **columns: Any) -> pa.Table:
    """A ``SOURCE_ITEMS`` table; absent columns are nulls."""
    ids = item_ids if isinstance(item_ids, pa.Array) else pa.array(list(item_ids), pa.string())
    arrays = []
    for f in SOURCE_ITEMS:
        if f.name == "item_id":
            arrays.append(ids.cast(pa.string()))
        elif f.name in columns and columns[f.name] is not None:
            value = columns[f.name]
            arrays.append(
                value.cast(f.type)
                if isinstance(value, (pa.Array, pa.ChunkedArray))
                else pa.array(value, type=f.type)
            )
        else:
            arrays.append(pa.nulls(len(ids), f.type))
    return pa.Table.from_arrays(arrays, schema=SOURCE_ITEMS)


def events_table(
    item_ids: pa.Array,
    *,
    session_id: pa.Array | None = None,
    user_id: pa.Array | None = None,
    timestamp: pa.Array | None = None,
) -> pa.Table:
    """Events in source order; ``seq`` is the source row order (the tie-break inside a session)."""
    n = len(item_ids)
    return pa.table(
        {
            "session_id": session_id if session_id is not None else pa.nulls(n, pa.string()),
            "user_id": user_id if user_id is not None else pa.nulls(n, pa.string()),
            "item_id": item_ids,
            "timestamp": timestamp
            if timestamp is not None
            else pa.nulls(n, pa.timestamp("us", "UTC")),
            "seq": pa.array(np.arange(n, dtype=np.int64)),
        }
    )


def catalog_ids(catalog: str, event_ids: pa.Array, listed_ids: pa.Array | None) -> pa.Array:
    """The item ids a ``--catalog`` choice keeps, in first-seen order: ``events``, the items
    with events; ``all``, those and then every other item the source lists (``listed_ids``)."""
    if catalog not in ("events", "all"):
        raise ValueError(f"catalog must be 'events' or 'all', got {catalog!r}")
    ids = pc.unique(event_ids)
    if catalog == "all" and listed_ids is not None:
        ids = pc.unique(pa.concat_arrays([ids, listed_ids]))
    return ids


def check_known_items(item_ids: pa.Array, catalog_ids: pa.Array, path: str, column: str) -> None:
    """Refuse events whose item the source's own catalog does not describe."""
    unknown = pc.invert(pc.is_in(item_ids, value_set=catalog_ids)).to_numpy(zero_copy_only=False)
    if unknown.any():
        refuse_rows(
            unknown, path, "events reference items that the item file does not list",
            column=column, values=item_ids,
        )


# -- writing the workspace ----------------------------------------------------------------------


def write_source(
    ws: Workspace, data: SourceData, *, copy_images: bool = False, progress: bool = True
) -> IngestSummary:
    """Write catalog, events and given split; existing item indices are kept, new ones appended."""
    existing = read_items(ws) if ws.exists(*ITEMS_PATH) else None
    old_info = read_info(existing.schema) if existing is not None else {}
    known = (
        dict(zip(existing.column("item_id").to_pylist(), existing.column("item_idx").to_pylist()))
        if existing is not None
        else {}
    )
    new_ids = data.items.column("item_id")
    mapping = assign_item_idx(new_ids.to_pylist(), known)
    idx = np.array([mapping[i] for i in new_ids.to_pylist()], dtype=np.int64)

    paths = data.items.column("image_path").to_pylist()
    copied = 0
    if copy_images:
        uris, copied = _copy_images(ws, new_ids.to_pylist(), paths, progress)
        roots = list(old_info.get("image_roots", []))
    else:
        uris = paths
        roots = sorted(set(old_info.get("image_roots", [])) | set(data.image_roots))
    fresh = pa.table(
        {
            "item_id": new_ids,
            "item_idx": pa.array(idx),
            "title": data.items.column("title"),
            "text": data.items.column("text"),
            "image_uri": pa.array(uris, pa.string()),
            "category": data.items.column("category"),
            "brand": data.items.column("brand"),
            "price": data.items.column("price"),
        }
    )
    kept = 0
    if existing is not None:
        old = existing.filter(pc.invert(pc.is_in(existing.column("item_id"), value_set=new_ids)))
        kept = old.num_rows
        fresh = pa.concat_tables(
            [old.select(fresh.column_names).cast(fresh.schema), fresh.cast(fresh.schema)]
        )
    info = {"format": data.format, "source": data.source, "image_roots": roots, **data.info}
    catalog = write_items(ws, fresh, info=info)

    events_info = {
        "format": data.format,
        "source": data.source,
        "sessions": data.sessions.to_dict(),
        "timestamps": data.events.column("timestamp").null_count < data.events.num_rows,
        **data.info,
    }
    events = write_events(ws, data.events, catalog, info=events_info)
    n_sessions = len(
        sessionize(
            events,
            np.zeros(events.num_rows, dtype=np.int64),
            data.sessions,
            ws.display(*EVENTS_PATH),
        )
    )

    notes = list(data.notes)
    stale = [p for p in list_protocols(ws) if p != GIVEN]
    given_counts = None
    if data.given is not None:
        given_counts = _write_given(ws, data, idx, len(mapping))
    elif GIVEN in list_protocols(ws):
        for part in ("train", "valid", "test"):
            ws.delete("splits", GIVEN, f"{part}.parquet")
        notes.append("removed the previous source's given split (this source has none)")
    if stale:
        notes.append(
            f"existing splits {stale} were made from the previous events; run `macl split` again"
        )
    text = catalog.column("text")
    with_text = int(
        pc.sum(
            pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0).fill_null(False)
        ).as_py()
        or 0
    )
    return IngestSummary(
        format=data.format,
        source=data.source,
        workspace=ws.display(),
        items=catalog.num_rows,
        new_items=len(mapping) - len(known),
        updated_items=len(new_ids) - (len(mapping) - len(known)),
        kept_items=kept,
        with_image=catalog.num_rows - catalog.column("image_uri").null_count,
        with_text=with_text,
        events=events.num_rows,
        sessions=n_sessions,
        session_rule=data.sessions.describe(),
        given=given_counts,
        copied_images=copied,
        notes=notes,
    )


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")


def image_name(item_id: str, source_path: str) -> str:
    """A file name for an item's copied image: the id when it is a safe name, else its hash."""
    ext = os.path.splitext(source_path)[1].lower() or ".img"
    stem = item_id if _SAFE_NAME.match(item_id) else "id-" + sha256_json(item_id)[:24]
    return f"{stem}{ext}"


def _copy_images(
    ws: Workspace, ids: list[str], paths: list[str | None], progress: bool
) -> tuple[list[str | None], int]:
    """Copy images into ``W/images``; an identical copy already there is kept (resumable)."""
    from tqdm import tqdm

    uris: list[str | None] = []
    copied = 0
    todo = sum(p is not None for p in paths)
    with tqdm(
        total=todo, desc="copy images", unit="img", disable=not progress or todo < 200, leave=False
    ) as bar:
        for item_id, path in zip(ids, paths):
            if path is None:
                uris.append(None)
                continue
            name = image_name(item_id, path)
            copied += _copy_one(ws, path, ("images", name))
            uris.append(f"images/{name}")
            bar.update()
    return uris, copied


def _copy_one(ws: Workspace, path: str, target: tuple[str, str]) -> int:
    """Copy one file unless an identical one is there; 1 if copied. Local: temp + rename."""
    if ws.is_local:
        dest = ws.path(*target)
        if os.path.isfile(dest) and filecmp.cmp(path, dest, shallow=False):
            return 0
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = temp_name(dest)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return 1
    data = Path(path).read_bytes()
    if ws.exists(*target) and ws.read_bytes(*target) == data:
        return 0
    ws.write_bytes_atomic(data, *target)
    return 1


def remap_cases(table: pa.Table, lookup: np.ndarray) -> pa.Table:
    """Cases whose items are source-row positions -> the same cases in catalog item_idx."""
    items = table.column("items").combine_chunks()
    values = lookup[items.values.to_numpy()]
    offsets = items.offsets
    return pa.Table.from_arrays(
        [
            table.column("session_id"),
            pa.ListArray.from_arrays(offsets, pa.array(values, pa.int64())),
            pa.array(lookup[table.column("target").to_numpy()], pa.int64()),
        ],
        schema=SPLIT,
    )


def _write_given(ws: Workspace, data: SourceData, idx: np.ndarray, n_items: int) -> dict[str, int]:
    assert data.given is not None
    parts = {part: remap_cases(data.given[part], idx) for part in ("train", "valid", "test")}
    info = {
        "protocol": GIVEN,
        "format": data.format,
        "source": data.source,
        **data.given_info,
        "cases": {p: t.num_rows for p, t in parts.items()},
    }
    info["split_id"] = sha256_json(info)[:16]
    for part in ("valid", "test", "train"):
        write_split(ws, GIVEN, part, parts[part], info, n_items=n_items)
    return {p: t.num_rows for p, t in parts.items()}


def read_bytes_lines(path: Path) -> Iterable[bytes]:
    """Lines of a plain or gzip file, as bytes; a damaged gzip stream is a ContractError."""
    import gzip
    import zlib

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            yield from f
    except (OSError, EOFError, zlib.error) as exc:
        raise ContractError(str(path), f"cannot be read ({type(exc).__name__}: {exc})") from None
