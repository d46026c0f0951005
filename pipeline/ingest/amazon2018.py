"""Amazon Review Data 2018 (McAuley lab), the files the MACL paper used.

``<Category>_5.json.gz`` (5-core reviews, JSON lines: reviewerID, asin, unixReviewTime, ...)
gives the events; ``meta_<Category>.json.gz`` (asin, title, description, brand, price,
category, imageURLHighRes, ...) the item text; a local folder of downloaded images named by
ASIN (``<asin>.jpg``/``.png``/...) the images: image URLs are never fetched. Reviews of items
without a meta row keep the item with text = null. Sessions are cut later by user + calendar
day, the paper's recipe.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from pipeline.ingest.base import (
    SourceData,
    catalog_ids,
    compose_text,
    events_table,
    image_index,
    key_column,
    match_rows,
    read_bytes_lines,
    refuse_rows,
    source_items,
    unique_items,
)
from pipeline.sessions import SessionRule
from schemas.errors import ContractError
from schemas.validate import coerce_timestamps

FORMAT = "amazon2018"
REVIEW_FIELDS = {"reviewerID": pa.string(), "asin": pa.string(), "unixReviewTime": pa.int64()}
META_TEXT = ("title", "brand", "category", "description")
_TAGS = re.compile(r"<[^>]+>")
_PRICE = re.compile(r"^\s*\$?\s*([0-9][0-9,]*(?:\.[0-9]+)?)\s*$")


def _find_pair(source: Path, category: str | None) -> tuple[str, Path, Path]:
    if category is None:
        found = sorted(p.name[: -len("_5.json.gz")] for p in source.glob("*_5.json.gz"))
        found += sorted(p.name[: -len("_5.json")] for p in source.glob("*_5.json"))
        if len(found) != 1:
            raise ContractError(
                str(source), f"expected one <Category>_5.json.gz, found {found}; pass --category"
            )
        category = found[0]
    for ext in (".json.gz", ".json"):
        reviews = source / f"{category}_5{ext}"
        if reviews.is_file():
            break
    else:
        raise ContractError(str(source / f"{category}_5.json.gz"), "not found (reviews)")
    meta = next(
        (
            source / f"meta_{category}{e}"
            for e in (".json.gz", ".json")
            if (source / f"meta_{category}{e}").is_file()
        ),
        None,
    )
    if meta is None:
        raise ContractError(str(source / f"meta_{category}.json.gz"), "not found (item metadata)")
    return category, reviews, meta


def _stream(path: Path) -> pa.NativeFile:
    return pa.input_stream(str(path), compression="gzip" if path.suffix == ".gz" else None)


def _json_lines(path: Path, wanted: tuple[str, ...]) -> list[dict]:
    """Parse JSON lines strictly in Python, naming the first bad line (slow path, exact errors)."""
    rows = []
    for row, raw in enumerate(read_bytes_lines(path)):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ContractError(str(path), "text is not valid UTF-8", rows=[row]) from None
        except json.JSONDecodeError as exc:
            raise ContractError(
                str(path), f"is not valid JSON lines ({exc.msg})", rows=[row]
            ) from None
        if not isinstance(obj, dict):
            raise ContractError(str(path), "each line must be a JSON object", rows=[row])
        rows.append({k: obj.get(k) for k in wanted})
    return rows


def _reviews(path: Path) -> pa.Table:
    schema = pa.schema(REVIEW_FIELDS)
    try:
        table = pa_json.read_json(
            _stream(path),
            parse_options=pa_json.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="ignore"
            ),
        )
    except (pa.ArrowInvalid, OSError):
        rows = _json_lines(path, tuple(REVIEW_FIELDS))
        bad = [
            i
            for i, r in enumerate(rows)
            if not isinstance(r["unixReviewTime"], (int, type(None)))
            or isinstance(r["unixReviewTime"], bool)
        ]
        if bad:
            raise ContractError(
                str(path),
                "unixReviewTime must be an integer",
                column="unixReviewTime",
                rows=bad[:5],
                values=[rows[i]["unixReviewTime"] for i in bad[:5]],
                total=len(bad),
            ) from None
        table = pa.Table.from_pylist(rows, schema=schema)
    return table


def _as_text(value: object) -> str | None:
    """Meta fields are strings or lists of strings (with HTML); one clean string or None."""
    if value is None:
        return None
    if isinstance(value, list):
        value = " ".join(str(v) for v in value if v is not None)
    text = " ".join(html.unescape(_TAGS.sub(" ", str(value))).split())
    return text or None


def _meta(path: Path) -> pa.Table:
    rows = _json_lines(path, ("asin", *META_TEXT, "main_cat", "price", "imageURLHighRes"))
    out = {
        "asin": [],
        "title": [],
        "brand": [],
        "category": [],
        "description": [],
        "main_cat": [],
        "price": [],
        "has_url": [],
    }
    for r in rows:
        out["asin"].append(r["asin"] if isinstance(r["asin"], str) else None)
        for k in ("title", "brand", "description", "main_cat"):
            out[k].append(_as_text(r[k]))
        cats = (
            r["category"]
            if isinstance(r["category"], list)
            else ([r["category"]] if r["category"] else [])
        )
        cats = [c for c in (_as_text(c) for c in cats) if c]
        out["category"].append(" > ".join(cats) or None)
        price = _PRICE.match(r["price"]) if isinstance(r["price"], str) else None
        out["price"].append(price.group(1).replace(",", "") if price else None)
        out["has_url"].append(bool(r["imageURLHighRes"]))
    return pa.table(
        {k: pa.array(v, pa.bool_() if k == "has_url" else pa.string()) for k, v in out.items()}
    )


def load(
    source: Path,
    *,
    category: str | None = None,
    images: Path | None = None,
    catalog: str = "events",
) -> SourceData:
    source = Path(source).resolve()
    category, reviews_path, meta_path = _find_pair(source, category)
    reviews = _reviews(reviews_path)
    shown = str(reviews_path)
    if not reviews.num_rows:
        raise ContractError(shown, "holds no reviews (no events to ingest)")
    asins = key_column(reviews, "asin", shown)
    users = key_column(reviews, "reviewerID", shown)
    times = reviews.column("unixReviewTime").combine_chunks()
    if times.null_count:
        refuse_rows(
            times.is_null().to_numpy(zero_copy_only=False),
            shown,
            "missing unixReviewTime",
            column="unixReviewTime",
        )
    when = coerce_timestamps(times, shown, "unixReviewTime", unit="s")

    meta = _meta(meta_path)
    key_column(meta, "asin", str(meta_path))
    meta = unique_items(meta, "asin", [*META_TEXT, "main_cat", "price"], str(meta_path))
    ids = catalog_ids(catalog, asins, meta.column("asin").combine_chunks())
    ids = pa.array(sorted(ids.to_pylist()), pa.string())
    has_row, field = match_rows(ids, meta, "asin")
    text = compose_text(
        [
            ("", field("title")),
            ("Brand", field("brand")),
            ("Category", field("category")),
            ("", field("description")),
        ],
        len(ids),
    )
    cat_path = field("category").to_pylist()
    main = field("main_cat").to_pylist()
    leaf = [c.split(" > ")[-1] if c else m for c, m in zip(cat_path, main)]
    price = pc.cast(field("price"), pa.float64())

    image_dir = Path(images).resolve() if images else source / "images"
    found = image_index(image_dir)
    paths = [found.get(a) for a in ids.to_pylist()]
    notes = []
    no_meta = int((~has_row).sum())
    if no_meta:
        notes.append(f"{no_meta:,} reviewed items have no meta row: text = null")
    url_only = int(
        np.sum(
            np.array([p is None for p in paths])
            & field("has_url").fill_null(False).to_numpy(zero_copy_only=False)
        )
    )
    if url_only:
        notes.append(
            f"{url_only:,} items list imageURLHighRes but have no file in {image_dir} "
            "(download images first; URLs are never fetched)"
        )
    items = source_items(
        ids,
        title=field("title"),
        text=text,
        image_path=paths,
        category=pa.array(leaf, pa.string()),
        brand=field("brand"),
        price=price,
    )
    events = events_table(asins, user_id=users, timestamp=when)
    return SourceData(
        FORMAT,
        str(source),
        items,
        events,
        SessionRule("day"),
        image_roots=[str(image_dir)] if found else [],
        notes=notes,
        info={"category": category},
    )
