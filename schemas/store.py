"""Feature-store layout, manifest and the keyed reader both halves share.

Layout: ``features/modality=<m>/view=<v>/part-<shard>.parquet`` (hive partitions) plus
``features/_manifest.json``. Rows are keyed by ``item_idx``/``item_id``/``sample``: readers
scatter them into a table indexed by ``item_idx`` and never rely on row order.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.errors import ContractError
from schemas.fs import Workspace
from schemas.io import read_parquet
from schemas.tables import SCHEMA_VERSION, read_info
from schemas.validate import check_version, validate_feature_rows

FEATURES_DIR = "features"
MANIFEST_NAME = "_manifest.json"
MODALITIES = ("image", "text")
_PART = re.compile(r"^part-\d+\.parquet$")


def view_dir(modality: str, view: str) -> tuple[str, str, str]:
    return (FEATURES_DIR, f"modality={modality}", f"view={view}")


def part_name(shard: int) -> str:
    return f"part-{shard:05d}.parquet"


def list_views(ws: Workspace) -> list[tuple[str, str]]:
    """(modality, view) pairs present on disk, sorted."""
    out = []
    for m in ws.listdir(FEATURES_DIR):
        if not m.startswith("modality="):
            continue
        for v in ws.listdir(FEATURES_DIR, m):
            if v.startswith("view="):
                out.append((m.split("=", 1)[1], v.split("=", 1)[1]))
    return sorted(out)


def list_parts(ws: Workspace, modality: str, view: str) -> list[str]:
    return [n for n in ws.listdir(*view_dir(modality, view)) if _PART.match(n)]


@dataclass
class ViewEntry:
    """What one (modality, view) of the store holds and how it was made."""

    modality: str
    view: str
    dim: int
    dtype: str
    samples: int
    seed: int
    view_params: dict[str, Any]
    encoder: dict[str, Any]  # name, weights_sha256, preprocessing, pooling, library versions
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)  # part name -> key, rows, ...


@dataclass
class StoreManifest:
    """features/_manifest.json: one entry per (modality, view), keyed 'modality/view'."""

    views: dict[str, ViewEntry] = field(default_factory=dict)
    catalog_sha256: str | None = None
    code_version: str | None = None
    updated_at: str | None = None
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return {"kind": "feature_store_manifest", **asdict(self)}

    @classmethod
    def from_json(cls, obj: Any, path: str = MANIFEST_NAME) -> "StoreManifest":
        if not isinstance(obj, dict) or obj.get("kind") != "feature_store_manifest":
            raise ContractError(path, "is not a feature-store manifest (kind missing or wrong)")
        version = obj.get("schema_version", 0)
        if isinstance(version, bool) or not isinstance(version, int):
            raise ContractError(path, f"schema_version {version!r} is not an integer")
        if version > SCHEMA_VERSION:
            raise ContractError(path, f"was written with schema version {version}, newer than "
                                      f"this macl ({SCHEMA_VERSION}); upgrade macl to read it")
        allowed = {"views", "catalog_sha256", "code_version", "updated_at", "schema_version"}
        unknown = set(obj) - allowed - {"kind"}
        if unknown:
            raise ContractError(path, f"unknown manifest keys {sorted(unknown)}")
        views_obj = obj.get("views", {})
        if not isinstance(views_obj, dict):
            raise ContractError(path, "views must map 'modality/view' to view entries")
        try:
            views = {k: ViewEntry(**v) for k, v in views_obj.items()}
        except TypeError as exc:
            raise ContractError(path, f"malformed view entry ({exc})") from exc
        for key, entry in views.items():
            problem = _entry_problem(entry)
            if problem:
                raise ContractError(path, f"malformed view entry {key!r}: {problem}")
        return cls(views=views, **{k: obj[k] for k in allowed - {"views"} if k in obj})


def _entry_problem(entry: ViewEntry) -> str | None:
    """Field types of a manifest view entry (the JSON may come from anywhere)."""
    for name in ("modality", "view", "dtype"):
        if not isinstance(getattr(entry, name), str):
            return f"{name} must be a string"
    for name in ("dim", "samples", "seed"):
        value = getattr(entry, name)
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{name} must be an integer"
    for name in ("view_params", "encoder", "parts"):
        if not isinstance(getattr(entry, name), dict):
            return f"{name} must be a mapping"
    if not all(isinstance(p, dict) for p in entry.parts.values()):
        return "every part must be a mapping"
    return None


def read_manifest(ws: Workspace) -> StoreManifest | None:
    if not ws.exists(FEATURES_DIR, MANIFEST_NAME):
        return None
    shown = ws.display(FEATURES_DIR, MANIFEST_NAME)
    try:
        obj = ws.read_json(FEATURES_DIR, MANIFEST_NAME)
    except (ValueError, OSError) as exc:  # JSON and UTF-8 errors are ValueErrors
        raise ContractError(shown, f"is not readable JSON ({exc})") from None
    return StoreManifest.from_json(obj, shown)


def write_manifest(ws: Workspace, manifest: StoreManifest) -> None:
    ws.write_json_atomic(manifest.to_json(), FEATURES_DIR, MANIFEST_NAME)


def read_view_rows(ws: Workspace, modality: str, view: str,
                   columns: list[str] | None = None) -> pa.Table:
    """All rows of one (modality, view), every part checked for version and row contract."""
    tables = []
    for name in list_parts(ws, modality, view):
        parts = (*view_dir(modality, view), name)
        t = read_parquet(ws, *parts)
        check_version(t.schema, ws.display(*parts), "features")
        problem = part_layout_problem(t.schema, t.num_rows)
        if problem:
            raise ContractError(ws.display(*parts), problem)
        validate_feature_rows(t, ws.display(*parts))
        tables.append(t.select(columns) if columns else t)
    if not tables:
        raise ContractError(ws.display(*view_dir(modality, view)), "no feature parts found")
    return pa.concat_tables(tables, promote_options="none")


def read_view_info(ws: Workspace, modality: str, view: str) -> dict[str, Any]:
    """Provenance of a view, as stored in its first part's Parquet metadata."""
    parts = list_parts(ws, modality, view)
    if not parts:
        raise ContractError(ws.display(*view_dir(modality, view)), "no feature parts found")
    return read_part_info(ws, modality, view, parts[0])


@dataclass
class FeatureMatrix:
    """Embeddings of one (modality, view, sample) indexed by item_idx (row 0 = padding).

    ``mask[i]`` is True only where item i has an ``ok`` row; other rows are zeros that must
    never be used as features (the trainer masks them out).
    """

    values: np.ndarray  # (n_items + 1, dim)
    mask: np.ndarray  # (n_items + 1,) bool
    modality: str
    view: str
    sample: int


def _part_schema(ws: Workspace, path: tuple[str, ...]) -> pa.Schema:
    import pyarrow.parquet as pq

    try:
        with ws.fs.open_input_file(ws.path(*path)) as f:
            return pq.read_schema(f)
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise ContractError(ws.display(*path), f"is not a readable Parquet file ({exc})") from exc


def _part_batches(ws: Workspace, path: tuple[str, ...], columns: list[str],
                  batch_rows: int = 16_384):
    """One feature part as tables of at most ``batch_rows`` rows, after the schema-version
    check. Pages are streamed through a 1 MiB buffer instead of reading whole column chunks:
    together with the small batches that halves the reader's working set per part."""
    import pyarrow.parquet as pq

    where = ws.display(*path)
    try:
        with ws.fs.open_input_file(ws.path(*path)) as f:
            pf = pq.ParquetFile(f, page_checksum_verification=True,  # a flipped bit fails
                                buffer_size=1 << 20)
            check_version(pf.schema_arrow, where, "features")
            problem = footer_problem(pf)
            if problem:
                raise ContractError(where, problem)
            missing = [c for c in columns if c not in pf.schema_arrow.names]
            if missing:
                raise ContractError(where, f"missing required column(s) {missing}",
                                    column=missing[0])
            for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
                yield pa.Table.from_batches([batch])
    except ContractError:
        raise
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise ContractError(where, f"is not a readable Parquet file ({exc})") from exc


def read_feature_matrix(ws: Workspace, modality: str, view: str, sample: int, n_items: int,
                        dtype: str = "float32", out: np.ndarray | None = None) -> FeatureMatrix:
    """Scatter the ``ok`` rows of one sample into a dense item_idx-indexed matrix.

    Parts are read one at a time (only the columns needed) and scattered straight into the
    result, so peak memory is the matrix plus one part. ``out`` — an ``(n_items + 1, dim)``
    array such as one slice of a stacked or memory-mapped table — is filled in place instead of
    allocating a new matrix; its rows without an ``ok`` row are zeroed.
    """
    shown = ws.display(*view_dir(modality, view))
    names = list_parts(ws, modality, view)
    if not names:
        raise ContractError(shown, "no feature parts found")
    values = None
    mask = np.zeros(n_items + 1, dtype=bool)
    seen = np.zeros(n_items + 1, dtype=bool)
    for name in names:
        path = (*view_dir(modality, view), name)
        where = ws.display(*path)
        for t in _part_batches(ws, path, ["item_idx", "sample", "embedding", "status", "reason"]):
            validate_feature_rows(t, where)
            dim = t.schema.field("embedding").type.list_size
            if values is None:
                if out is None:
                    values = np.zeros((n_items + 1, dim), dtype=np.dtype(dtype))
                elif out.shape != (n_items + 1, dim):
                    raise ValueError(f"out has shape {out.shape}, expected {(n_items + 1, dim)}")
                else:
                    values = out
                    values[...] = 0
            elif dim != values.shape[1]:
                raise ContractError(where, f"embedding dim {dim} differs from the view's "
                                    f"{values.shape[1]}", column="embedding")
            # masks instead of filtered copies of the table: only the ok rows' vectors are
            # gathered once, and cast straight into ``values``
            chosen = pc.fill_null(pc.equal(t.column("sample"), sample), False).to_numpy(
                zero_copy_only=False)
            idx = t.column("item_idx").to_numpy()[chosen]
            if idx.size and (idx.min() < 1 or idx.max() > n_items):
                bad = np.flatnonzero((idx < 1) | (idx > n_items))
                raise ContractError(where, f"item_idx outside the catalog 1..{n_items}",
                                    column="item_idx", rows=bad[:5].tolist(),
                                    values=idx[bad[:5]].tolist(), total=bad.size)
            uniq, counts = np.unique(idx, return_counts=True)
            dup = np.union1d(uniq[counts > 1], uniq[seen[uniq]])
            if dup.size:
                raise ContractError(shown, f"duplicate rows for item_idx in sample {sample}",
                                    column="item_idx", values=dup[:5].tolist(), rows=[],
                                    total=int(dup.size))
            seen[idx] = True
            ok = pc.fill_null(pc.equal(t.column("status"), "ok"), False).to_numpy(
                zero_copy_only=False)
            keep = ok & chosen
            if keep.any():
                emb = t.column("embedding").combine_chunks()
                vectors = emb.values.slice(emb.offset * dim, len(emb) * dim)
                vectors = vectors.to_numpy(zero_copy_only=False).reshape(-1, dim)
                rows = idx[ok[chosen]]  # item_idx of the kept rows, in row order
                values[rows] = vectors[keep]
                mask[rows] = True
        pa.default_memory_pool().release_unused()  # freed read buffers go back to the system
    if values is None:  # parts without rows: the width comes from the schema
        dim = _part_schema(ws, (*view_dir(modality, view), names[0])).field("embedding").type
        values = np.zeros((n_items + 1, dim.list_size), dtype=np.dtype(dtype)) if out is None \
            else out
        values[...] = 0
    return FeatureMatrix(values=values, mask=mask, modality=modality, view=view, sample=sample)


#: Keys of the provenance JSON (Parquet metadata ``macl.info`` of every part, and the manifest's
#: view entries): modality, view, shard, cache_key, encoder{name, source, weights_sha256, dim,
#: preprocessing, pooling, dtype}, view_params, seed, samples, versions{...}, created_at.
PROVENANCE_KEYS = ("modality", "view", "shard", "cache_key", "encoder", "view_params", "seed",
                   "samples", "versions", "created_at")


def write_feature_part(ws: Workspace, modality: str, view: str, shard: int, table: pa.Table,
                       info: dict[str, Any]) -> str:
    """Validate, stamp provenance and atomically write one shard; returns the part name."""
    from schemas.tables import feature_schema, stamp

    missing = [k for k in PROVENANCE_KEYS if k not in info]
    if missing:
        raise ValueError(f"feature part provenance lacks {missing}")
    name = part_name(shard)
    shown = ws.display(*view_dir(modality, view), name)
    emb_type = table.schema.field("embedding").type
    dtype = "float16" if emb_type.value_type == pa.float16() else "float32"
    schema = stamp(feature_schema(emb_type.list_size, dtype), "features", info)
    from schemas.validate import conform

    table = conform(table, schema, ("item_idx", "item_id", "modality", "view", "sample", "status"),
                    shown)
    validate_feature_rows(table, shown)
    wrong = pc.or_(pc.not_equal(table.column("modality"), modality),
                   pc.not_equal(table.column("view"), view)).to_numpy(zero_copy_only=False)
    if wrong.any():
        raise ContractError(shown, f"rows of another modality/view than {modality}/{view}",
                            column="view", rows=np.flatnonzero(wrong)[:5].tolist(),
                            total=int(wrong.sum()))
    # page CRCs let a reader that verifies them (the audit) detect any flipped bit in the data
    ws.write_parquet_atomic(table.replace_schema_metadata(schema.metadata), *view_dir(modality, view),
                            name, write_page_checksum=True)
    return name


def part_layout_problem(schema: pa.Schema, num_rows: int) -> str | None:
    """What makes a part's footer disagree with the contract or with its own provenance:
    columns or types other than the writer's, or another row count than it recorded.

    The footer carries no checksum; a flipped bit there can make a reader return other types
    or silently fewer rows, which these checks turn into a named problem.
    """
    from schemas.tables import feature_schema

    emb = schema.field("embedding").type if "embedding" in schema.names else None
    if emb is None or not pa.types.is_fixed_size_list(emb) or \
            emb.value_type not in (pa.float32(), pa.float16()):
        return f"embedding has type {emb}, expected a fixed-size list of float32/float16"
    want = feature_schema(emb.list_size, "float16" if emb.value_type == pa.float16()
                          else "float32")
    if schema.names != want.names:
        return f"has columns {schema.names}, expected {want.names}"
    wrong = [f"{f.name}: {f.type}" for f, w in zip(schema, want) if not f.type.equals(w.type)]
    if wrong:
        return f"column types differ from the contract ({', '.join(wrong)})"
    try:
        info = read_info(schema)
    except ValueError as exc:
        return f"provenance metadata is not valid JSON ({exc})"
    recorded = _recorded_rows(info)
    if recorded is not None and recorded != num_rows:
        return f"holds {num_rows} rows, its provenance recorded {recorded}"
    return None


def footer_problem(pf: Any) -> str | None:
    """``part_layout_problem`` of an opened ``pyarrow.parquet.ParquetFile``, plus the footer's
    own consistency: its row groups must add up to the row count it states."""
    meta = pf.metadata
    groups = sum(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
    if groups != meta.num_rows:
        return f"footer says {meta.num_rows} rows but its row groups hold {groups}"
    return part_layout_problem(pf.schema_arrow, groups)


def _recorded_rows(info: Any) -> int | None:
    """Rows a part's provenance says it holds (counts.rows, else items x samples), if stated."""
    if not isinstance(info, dict):
        return None
    counts, items, samples = info.get("counts"), info.get("items"), info.get("samples")
    if isinstance(counts, dict) and type(counts.get("rows")) is int:
        return counts["rows"]
    if isinstance(items, dict) and type(items.get("n_items")) is int and type(samples) is int:
        return items["n_items"] * samples
    return None


def verify_part_bytes(ws: Workspace, modality: str, view: str, name: str,
                      recorded_sha256: str | None = None) -> tuple[str | None, str | None]:
    """(sha256 of the part file, what is wrong with its bytes or None when intact).

    A part whose name exists is not trusted for that: with a ``recorded_sha256`` (taken when
    the part was written) the bytes must hash to it; without one every page is decoded and its
    Parquet CRC checked (parts are written with page checksums), so a truncated or bit-flipped
    part is caught either way. The file is read once.
    """
    import pyarrow.parquet as pq

    from schemas.hashing import sha256_bytes

    try:
        with ws.fs.open_input_stream(ws.path(*view_dir(modality, view), name)) as f:
            data = f.read()
    except OSError as exc:
        return None, f"unreadable file ({exc})"
    sha = sha256_bytes(data)
    if recorded_sha256 is not None:
        if sha != recorded_sha256:
            return sha, "file bytes differ from the sha256 recorded when it was written"
        return sha, None
    try:
        pf = pq.ParquetFile(pa.BufferReader(data), page_checksum_verification=True)
        problem = footer_problem(pf)
        decode_every_page(pf)
    except (OSError, ValueError, pa.ArrowException) as exc:
        return sha, f"unreadable Parquet ({type(exc).__name__}: {exc})"
    return sha, problem


def decode_every_page(pf: Any) -> None:
    """Read every row group of a ParquetFile opened with ``page_checksum_verification``: a bad
    CRC or a truncated page raises. The check of a part without a recorded sha256."""
    for group in range(pf.num_row_groups):
        pf.read_row_group(group)


def read_part_info(ws: Workspace, modality: str, view: str, name: str) -> dict[str, Any]:
    """Provenance of one part, read from its footer only (no data pages)."""
    import pyarrow.parquet as pq

    path = ws.path(*view_dir(modality, view), name)
    try:
        with ws.fs.open_input_file(path) as f:
            schema = pq.read_schema(f)
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise ContractError(ws.display(*view_dir(modality, view), name),
                            f"is not a readable Parquet file ({exc})") from exc
    check_version(schema, ws.display(*view_dir(modality, view), name), "features")
    return read_info(schema)
