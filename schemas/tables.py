"""Arrow schemas of every table, with the schema version stamped into each file's metadata.

One module owns the exact column names and types; the pipeline writes with them and the trainer
reads with them. Bump ``SCHEMA_VERSION`` on any incompatible change: readers refuse files from a
future version with a clear message instead of misreading them.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

import pyarrow as pa

SCHEMA_VERSION = 1
META_KIND = b"macl.kind"
META_VERSION = b"macl.schema_version"
META_INFO = b"macl.info"  # JSON: protocol parameters, provenance, ...

#: catalog/items.parquet — one row per item; item_idx is dense 1..N, 0 is padding.
ITEMS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("item_idx", pa.int64(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("text", pa.string()),
        pa.field("image_uri", pa.string()),
        pa.field("category", pa.string()),
        pa.field("brand", pa.string()),
        pa.field("price", pa.float64()),
    ]
)
ITEMS_REQUIRED = ("item_id", "item_idx")

#: events/events.parquet — one row per interaction, in source order (``seq``).
EVENTS = pa.schema(
    [
        pa.field("session_id", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("timestamp", pa.timestamp("us", tz="UTC")),  # null only for ID-only sources
        pa.field("seq", pa.int64(), nullable=False),
    ]
)
EVENTS_REQUIRED = ("item_id", "seq")

#: splits/<protocol>/{train,valid,test}.parquet — one row per case: input prefix -> target.
SPLIT = pa.schema(
    [
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("items", pa.list_(pa.int64()), nullable=False),
        pa.field("target", pa.int64(), nullable=False),
    ]
)
SPLIT_REQUIRED = ("session_id", "items", "target")
SPLIT_PARTS = ("train", "valid", "test")

#: features/modality=<m>/view=<v>/part-*.parquet (embedding type is fixed per store).
FEATURE_STATUS = ("ok", "missing", "error")


def feature_schema(dim: int, dtype: str = "float32") -> pa.Schema:
    value = {"float32": pa.float32(), "float16": pa.float16()}.get(dtype)
    if value is None:
        raise ValueError(f"feature dtype must be float32 or float16, got {dtype!r}")
    return pa.schema(
        [
            pa.field("item_idx", pa.int64(), nullable=False),
            pa.field("item_id", pa.string(), nullable=False),
            pa.field("modality", pa.string(), nullable=False),
            pa.field("view", pa.string(), nullable=False),
            pa.field("sample", pa.int32(), nullable=False),
            pa.field("embedding", pa.list_(value, dim)),
            pa.field("source_sha256", pa.string()),
            pa.field("status", pa.string(), nullable=False),
            pa.field("reason", pa.string()),
        ]
    )


FEATURE_REQUIRED = ("item_idx", "item_id", "modality", "view", "sample", "embedding", "status")


def stamp(schema: pa.Schema, kind: str, info: Mapping[str, Any] | None = None) -> pa.Schema:
    """Attach the table kind, schema version and optional JSON info to a schema's metadata."""
    meta = dict(schema.metadata or {})
    meta[META_KIND] = kind.encode()
    meta[META_VERSION] = str(SCHEMA_VERSION).encode()
    if info is not None:
        meta[META_INFO] = json.dumps(info, sort_keys=True, default=str).encode()
    return schema.with_metadata(meta)


def read_info(schema: pa.Schema) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(META_INFO)
    return json.loads(raw) if raw else {}
