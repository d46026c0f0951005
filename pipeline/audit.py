"""DuckDB audit of the feature store: can it be trusted before anyone trains on it?

One in-process DuckDB connection reads the catalog and every readable feature part and runs the
statements of ``pipeline/sql/audit.sql`` -- the same text ``macl audit --sql`` prints, so an
analyst gets the same numbers in the ``duckdb`` CLI. Python supplies only what SQL cannot:

- the integrity of each part file (footer, schema, provenance, and its bytes: the sha256 the
  manifest recorded, else every page decoded with its CRC checked), so one corrupted part is a
  finding that names the file instead of an error that stops the audit;
- the current sha256 of every catalog image, read through ``ImageResolver`` (confined to the
  workspace and allowed roots) and kept in ``audit/image_sha256.parquet`` keyed by size and
  mtime, so a re-audit only stats unchanged files;
- the views, parameters, seeds and encoders the features config asks for.

Gates turn the numbers into pass/fail checks, so a scheduled flow can stop on a bad store.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import re
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.sources import ImageResolver
from schemas.errors import ContractError
from schemas.fs import Workspace
from schemas.hashing import sha256_stream
from schemas.io import ITEMS_PATH, read_items
from schemas.store import (
    FEATURES_DIR,
    MANIFEST_NAME,
    PROVENANCE_KEYS,
    StoreManifest,
    list_parts,
    list_views,
    decode_every_page,
    footer_problem,
    read_manifest,
    view_dir,
)
from schemas.tables import META_INFO, feature_schema, read_info
from schemas.validate import check_version

SQL_FILE = Path(__file__).with_name("sql") / "audit.sql"
IMAGE_HASHES_PATH = ("audit", "image_sha256.parquet")
GATES = ("coverage", "non_finite", "all_zero", "duplicates", "orphans", "row_contract", "stale",
         "dimensions", "provenance", "integrity")
FORMATS = ("table", "json", "markdown")
_FEATURE_COLUMNS = feature_schema(1).names
_HASH_BATCH = 4096
_IMAGE_WORKERS = 8
_STAT_BATCH = 16384

#: Expected views: (modality, view) -> {"encoder": name, "view_params": {...}, "seed", "samples"}
Expected = Mapping[tuple[str, str], Mapping[str, Any]]


# --------------------------------------------------------------------------- report


@dataclass
class Finding:
    """A problem that is not a row count: a corrupt part, a provenance or dimension mismatch."""

    check: str  # integrity | provenance | dimensions
    severity: str  # fail | warn
    subject: str  # a part's path or 'modality/view'
    problem: str


@dataclass
class Gate:
    name: str
    passed: bool
    detail: str


@dataclass
class AuditReport:
    """Everything the audit found; ``gates`` decide the exit code."""

    workspace: str
    items: int
    parts: int
    readable_parts: int
    rows: int
    seconds: float
    coverage: list[dict[str, Any]]
    quality: list[dict[str, Any]]
    problems: list[dict[str, Any]]
    duplicates: list[dict[str, Any]]
    reasons: list[dict[str, Any]]
    encoders: list[dict[str, Any]]
    provenance: list[dict[str, Any]]
    findings: list[Finding]
    gates: list[Gate]
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    sql: str = ""

    @property
    def failed_gates(self) -> list[str]:
        return [g.name for g in self.gates if not g.passed]

    @property
    def passed(self) -> bool:
        return not self.failed_gates

    @property
    def exit_code(self) -> int:
        """0 when every gate passes, 1 otherwise (bad input is a ContractError: exit 2)."""
        return 0 if self.passed else 1

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("sql")
        out["passed"] = self.passed
        out["failed_gates"] = self.failed_gates
        return out


# --------------------------------------------------------------------------- SQL


@dataclass(frozen=True)
class Statement:
    name: str
    sql: str

    @property
    def creates(self) -> bool:
        return _code(self.sql).lstrip().upper().startswith("CREATE")

    @property
    def reads_features(self) -> bool:
        return re.search(r"\bfeature(s|_flags)\b", _code(self.sql)) is not None

    @property
    def params(self) -> list[str]:
        return sorted(set(re.findall(r"\$(\w+)", _code(self.sql))))


def _code(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))


def load_statements(path: Path = SQL_FILE) -> tuple[str, list[Statement]]:
    """The file's header comment and its ``-- name:`` sections, in order."""
    header: list[str] = []
    statements: list[Statement] = []
    name, body = None, []
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"--\s*name:\s*(\w+)\s*$", line)
        if m:
            if name:
                statements.append(Statement(name, "\n".join(body).strip()))
            name, body = m.group(1), []
        elif name:
            body.append(line)
        else:
            header.append(line)
    if name:
        statements.append(Statement(name, "\n".join(body).strip()))
    return "\n".join(header).strip(), statements


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# --------------------------------------------------------------------------- part integrity


@dataclass
class Part:
    """One feature part file and what its integrity check found."""

    modality: str
    view: str
    name: str
    path: str  # as the filesystem (and DuckDB's ``filename``) knows it
    display: str  # as a user types it
    metadata: dict[bytes, bytes] | None = None
    rows: int = 0
    dim: int | None = None  # the fixed size of its embedding lists
    problem: str | None = None


def check_part(ws: Workspace, part: Part, recorded: Mapping[str, Any] | None) -> Part:
    """Footer, schema, provenance, then the bytes: manifest sha256 if recorded, else page CRCs."""
    try:
        with ws.fs.open_input_file(part.path) as f:
            pf = pq.ParquetFile(f, page_checksum_verification=True)
            schema = pf.schema_arrow
            check_version(schema, part.display, "features")
            part.problem = _schema_problem(pf) \
                or _provenance_problem(schema, part) \
                or _folder_problem(pf.metadata, part)
            if part.problem:
                return part
            part.rows = pf.metadata.num_rows
            part.dim = schema.field("embedding").type.list_size
            if recorded and recorded.get("cache_key") not in (None, _cache_key(schema)):
                recorded = None  # rewritten since the manifest (a killed rerun): CRCs decide
            if recorded and recorded.get("rows") not in (None, part.rows):
                part.problem = (f"holds {part.rows} rows, the manifest recorded "
                                f"{recorded['rows']}")
                return part
            if recorded and recorded.get("sha256"):
                f.seek(0)
                if sha256_stream(f) != recorded["sha256"]:
                    part.problem = ("file bytes differ from the sha256 the manifest recorded "
                                    "(corrupted, or rewritten outside the features flow; "
                                    "rerun `macl features` to recompute it)")
                    return part
            else:  # the footer was checked above (_schema_problem)
                decode_every_page(pf)
            part.metadata = dict(schema.metadata or {})
    except ContractError as exc:
        part.problem = exc.problem
    except (OSError, ValueError, pa.ArrowException) as exc:
        part.problem = f"unreadable Parquet ({type(exc).__name__}: {exc})"
    return part


def _cache_key(schema: pa.Schema) -> str | None:
    try:
        return read_info(schema).get("cache_key")
    except ValueError:
        return None


def _schema_problem(pf: pq.ParquetFile) -> str | None:
    """The writer's exact columns and types, in order (so DuckDB may read parts by position),
    and the row count the part's provenance recorded (the footer has no checksum)."""
    if pf.schema_arrow.names != _FEATURE_COLUMNS:
        return f"has columns {pf.schema_arrow.names}, expected {_FEATURE_COLUMNS}"
    return footer_problem(pf)


def _provenance_problem(schema: pa.Schema, part: Part) -> str | None:
    try:
        info = read_info(schema)
    except ValueError as exc:
        return f"provenance metadata is not valid JSON ({exc})"
    if not isinstance(info, dict) or not info:
        return "has no provenance metadata (macl.info)"
    missing = [k for k in PROVENANCE_KEYS if k not in info]
    if missing:
        return f"provenance lacks {missing}"
    if (info.get("modality"), info.get("view")) != (part.modality, part.view):
        return (f"provenance says {info.get('modality')}/{info.get('view')} but the part lies in "
                f"{part.modality}/{part.view}")
    return None


def _folder_problem(meta: pq.FileMetaData, part: Part) -> str | None:
    """Rows must belong to the folder's modality/view (checked from column statistics)."""
    for column, want in (("modality", part.modality), ("view", part.view)):
        index = next(i for i in range(meta.num_columns)
                     if meta.schema.column(i).path == column)
        for group in range(meta.num_row_groups):
            stats = meta.row_group(group).column(index).statistics
            if stats is not None and stats.has_min_max and (stats.min, stats.max) != (want, want):
                return f"holds rows with {column} {stats.min!r}..{stats.max!r}, not {want!r}"
    return None


def _list_store_parts(ws: Workspace) -> list[Part]:
    parts = []
    for modality, view in list_views(ws):
        for name in list_parts(ws, modality, view):
            rel = (*view_dir(modality, view), name)
            parts.append(Part(modality, view, name, ws.path(*rel), ws.display(*rel)))
    return parts


def _manifest_findings(ws: Workspace, parts: list[Part]) -> tuple[StoreManifest | None,
                                                                    list[Finding], list[str]]:
    shown = ws.display(FEATURES_DIR, MANIFEST_NAME)
    try:
        manifest = read_manifest(ws)
    except (ContractError, ValueError, OSError) as exc:
        problem = exc.problem if isinstance(exc, ContractError) else str(exc)
        return None, [Finding("integrity", "fail", shown, f"unreadable manifest: {problem}")], []
    if manifest is None:
        return None, [], [f"no {shown}: part files not compared with a manifest"]
    findings: list[Finding] = []
    notes: list[str] = []
    on_disk = {(p.modality, p.view, p.name) for p in parts}
    listed = set()
    for entry in manifest.views.values():
        for name in entry.parts:
            listed.add((entry.modality, entry.view, name))
            if (entry.modality, entry.view, name) not in on_disk:
                findings.append(Finding("integrity", "fail",
                                        ws.display(*view_dir(entry.modality, entry.view), name),
                                        "listed in the manifest but missing"))
    unlisted = sorted(on_disk - listed)
    if unlisted:
        notes.append(f"{len(unlisted)} part(s) not in the manifest (an unfinished run?), e.g. "
                     + ws.display(*view_dir(unlisted[0][0], unlisted[0][1]), unlisted[0][2]))
    return manifest, findings, notes


def _recorded(manifest: StoreManifest | None, part: Part) -> Mapping[str, Any] | None:
    if manifest is None:
        return None
    entry = manifest.views.get(f"{part.modality}/{part.view}")
    return entry.parts.get(part.name) if entry else None


# --------------------------------------------------------------------------- image hashes


@dataclass
class ImageHashes:
    """Current sha256 per catalog ``image_uri``; unusable images (missing/refused) are absent."""

    table: pa.Table  # image_uri, sha256
    hashed: int
    reused: int
    unusable: int
    saved: bool
    note: str | None = None


_CACHE_SCHEMA = pa.schema([("image_uri", pa.string()), ("sha256", pa.string()),
                           ("path", pa.string()), ("local", pa.bool_()), ("size", pa.int64()),
                           ("mtime_ns", pa.int64())])


def current_image_hashes(ws: Workspace, image_uris: pa.Array | pa.ChunkedArray,
                         allowed_roots: Iterable[str] = (), *, rehash: bool = False,
                         progress: bool = False) -> ImageHashes:
    """Hash every distinct image through the resolver; reuse cached hashes of unchanged files.

    A cached hash is reused while the resolved file keeps its size and mtime and the allowed
    roots are unchanged; ``rehash`` reads every file again. The refreshed table is saved to
    ``audit/image_sha256.parquet`` (the ``--sql`` script reads it).
    """
    uris = pc.unique(pc.drop_null(image_uris))
    resolver = ImageResolver(ws, allowed_roots)
    roots = sorted(resolver.local_roots) + sorted(r for _, r in resolver.remote_roots)
    cached = None if rehash else _load_image_cache(ws, roots)
    kept = _CACHE_SCHEMA.empty_table()
    if cached is not None:
        kept = _unchanged(ws, cached.filter(pc.is_in(cached.column("image_uri"), value_set=uris)))
    if kept.num_rows == len(uris):  # kept holds distinct uris, all of them in uris: nothing new
        todo = []
    else:
        todo = uris.filter(pc.invert(pc.is_in(uris, value_set=kept.column("image_uri"))))
        todo = todo.to_pylist()
    fresh = [r for r in _hash_images(ws, resolver, todo, progress) if r is not None]
    new_entries = pa.Table.from_pylist([r for r in fresh if r["path"] is not None],
                                       schema=_CACHE_SCHEMA)
    cache = pa.concat_tables([kept, new_entries])
    elsewhere = pa.Table.from_pylist([r for r in fresh if r["path"] is None],
                                     schema=_CACHE_SCHEMA)
    table = pa.concat_tables([cache, elsewhere]).select(["image_uri", "sha256"])
    result = ImageHashes(table, hashed=len(todo), reused=kept.num_rows,
                         unusable=len(uris) - table.num_rows, saved=True)
    if cached is None or todo or kept.num_rows != cached.num_rows:
        try:
            _save_image_cache(ws, roots, cache)
        except (OSError, pa.ArrowException) as exc:
            result.saved = False
            result.note = f"image hashes not saved to {ws.display(*IMAGE_HASHES_PATH)} ({exc})"
    return result


def _unchanged(ws: Workspace, cached: pa.Table) -> pa.Table:
    """Cached entries whose file still has the recorded size and mtime (bulk stats, in threads:
    a million stats are syscall-bound, and pyarrow releases the GIL while it makes them)."""
    kept = []
    for local in (True, False):
        sub = cached.filter(pc.equal(cached.column("local"), local))
        if not sub.num_rows:
            continue
        fs = pafs.LocalFileSystem() if local else ws.fs
        paths = sub.column("path").to_pylist()
        chunks = [paths[i:i + _STAT_BATCH] for i in range(0, len(paths), _STAT_BATCH)]
        with concurrent.futures.ThreadPoolExecutor(_IMAGE_WORKERS) as pool:
            infos = [i for chunk in pool.map(fs.get_file_info, chunks) for i in chunk]
        size = pa.array([i.size for i in infos], pa.int64())  # None when gone or not a file
        mtime = pa.array([i.mtime_ns for i in infos], pa.int64())
        same = pc.and_(pc.equal(size, sub.column("size")), pc.equal(mtime, sub.column("mtime_ns")))
        kept.append(sub.filter(pc.fill_null(same, False)))
    return pa.concat_tables(kept) if kept else cached.slice(0, 0)


def _hash_images(ws: Workspace, resolver: ImageResolver, uris: list[str],
                 progress: bool) -> list[dict[str, Any] | None]:
    """A cache row per uri (path None: hashed but not cacheable) or None when unusable."""
    out: list[dict[str, Any] | None] = []
    if not uris:
        return out
    bar = _progress(len(uris), "hashing images", progress)
    with concurrent.futures.ThreadPoolExecutor(_IMAGE_WORKERS) as pool:
        for start in range(0, len(uris), _HASH_BATCH):
            batch = uris[start:start + _HASH_BATCH]
            out.extend(pool.map(lambda u: _hash_image(ws, resolver, u), batch))
            bar.update(len(batch))
    bar.close()
    return out


def _hash_image(ws: Workspace, resolver: ImageResolver, uri: str) -> dict[str, Any] | None:
    located = resolver.locate(uri)
    if not isinstance(located, tuple):
        return None
    fs, path = located
    before = fs.get_file_info(path)  # stat before reading: an edit after it changes size/mtime
    source = resolver.read(uri)
    if not source.ok:
        return None
    local = isinstance(fs, pafs.LocalFileSystem)
    cacheable = local or fs is ws.fs  # files on another object store are hashed every time
    return {"image_uri": uri, "sha256": source.sha256, "path": path if cacheable else None,
            "local": local, "size": before.size, "mtime_ns": before.mtime_ns}


def _load_image_cache(ws: Workspace, roots: list[str]) -> pa.Table | None:
    if not ws.exists(*IMAGE_HASHES_PATH):
        return None
    try:
        table = pq.read_table(ws.path(*IMAGE_HASHES_PATH), filesystem=ws.fs)
    except (OSError, pa.ArrowException):
        return None  # a damaged cache is only a slower audit
    if read_info(table.schema).get("roots") != roots or not table.schema.equals(
            _CACHE_SCHEMA, check_metadata=False):
        return None
    return table.replace_schema_metadata(None)


def _save_image_cache(ws: Workspace, roots: list[str], cache: pa.Table) -> None:
    from schemas.tables import stamp

    schema = stamp(_CACHE_SCHEMA, "audit_image_hashes", {"roots": roots})
    ws.write_parquet_atomic(cache.sort_by("image_uri").replace_schema_metadata(schema.metadata),
                            *IMAGE_HASHES_PATH)


# --------------------------------------------------------------------------- relation sources


_ARROW_FEATURES = pa.schema([
    ("item_idx", pa.int64()), ("item_id", pa.string()), ("modality", pa.string()),
    ("view", pa.string()), ("sample", pa.int32()), ("embedding", pa.list_(pa.float32())),
    ("source_sha256", pa.string()), ("status", pa.string()), ("reason", pa.string()),
    ("filename", pa.string()),
])


class DuckDBParquetSource:
    """``features`` through DuckDB's own Parquet reader: fastest, for paths DuckDB can open."""

    rescans = False  # a view: DuckDB reads the files again whenever a statement needs them

    def __init__(self, ws: Workspace, parts: list[Part]) -> None:
        self.paths = [p.path for p in parts]

    def register(self, con: Any) -> None:
        if not self.paths:
            con.register("features", _ARROW_FEATURES.empty_table())
            return
        rel = con.read_parquet(self.paths, hive_partitioning=True, filename=True)
        rel.create_view("features", replace=True)


class ArrowSource:
    """``features`` streamed through pyarrow from any pyarrow filesystem (object stores).

    Each part is cast to one schema (variable-length float32 lists), so parts of different
    dimensions or float16 parts stream together; a stream is read once, so it is registered
    again before every statement that reads it.
    """

    rescans = True

    def __init__(self, ws: Workspace, parts: list[Part]) -> None:
        self.ws = ws
        self.parts = parts

    def register(self, con: Any) -> None:
        con.register("features", pa.RecordBatchReader.from_batches(_ARROW_FEATURES,
                                                                   self._batches()))

    def _batches(self) -> Iterator[pa.RecordBatch]:
        names = [n for n in _ARROW_FEATURES.names if n != "filename"]
        for part in self.parts:
            with self.ws.fs.open_input_file(part.path) as f:
                for batch in pq.ParquetFile(f).iter_batches(columns=names):
                    cols = [batch.column(n) for n in names]
                    cols[names.index("embedding")] = cols[names.index("embedding")].cast(
                        pa.list_(pa.float32()))
                    yield pa.RecordBatch.from_arrays(
                        [*cols, pa.array([part.path] * batch.num_rows, pa.string())],
                        schema=_ARROW_FEATURES)


SOURCES = {"duckdb": DuckDBParquetSource, "arrow": ArrowSource}


def _default_source(ws: Workspace, parts: list[Part]) -> str:
    """DuckDB's reader for local files, unless a path holds glob characters (DuckDB would
    expand them, so a folder named ``view=*`` could pull in other parts): then pyarrow."""
    if not ws.is_local or any(c in p.path for p in parts for c in "*?[]{}"):
        return "arrow"
    return "duckdb"


# --------------------------------------------------------------------------- the audit


def audit_store(workspace: str | os.PathLike[str] | Workspace, *, min_coverage: float = 0.0,
                allow_stale: bool = False, limit: int = 20, expected: Expected | None = None,
                allowed_roots: Sequence[str] = (), rehash_images: bool = False,
                source: str | None = None, config_label: str | None = None,
                progress: bool = False) -> AuditReport:
    """Audit a workspace's feature store against its catalog (and the config's expectations).

    ``expected`` (from ``expected_from_config``; ``config_label`` names it in the notes)
    enables the config checks; ``source`` picks how DuckDB reads the parts ('duckdb' for local
    paths by default, 'arrow' for any pyarrow filesystem).
    """
    import duckdb

    started = time.perf_counter()
    if not 0.0 <= min_coverage <= 1.0:
        raise ValueError(f"min_coverage is a fraction in [0, 1], got {min_coverage}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
    clock = _Clock()
    items = read_items(ws)
    if items.num_rows == 0:
        raise ContractError(ws.display(*ITEMS_PATH), "the catalog is empty: nothing to audit")
    parts = _list_store_parts(ws)
    if not parts and not expected:
        raise ContractError(ws.display(FEATURES_DIR), "no feature parts found: run "
                                                      "`macl features` first")
    manifest, findings, notes = _manifest_findings(ws, parts)
    notes.append(f"views checked against {config_label or 'the given expectations'}"
                 if expected is not None else
                 "no features config: provenance checked for consistency only")
    clock.lap("catalog")
    roots = [*read_info(items.schema).get("image_roots", []), *allowed_roots]
    # image stats/hashes and part hashes are both I/O and GIL-free hashing: run them side by
    # side; "images" is then the time the images took beyond the parts
    with concurrent.futures.ThreadPoolExecutor(1) as background:
        hashing = background.submit(current_image_hashes, ws, items.column("image_uri"), roots,
                                    rehash=rehash_images, progress=progress)
        parts = _check_parts(ws, parts, manifest, progress)
        clock.lap("parts")
        images = hashing.result()
    readable = [p for p in parts if p.problem is None]
    findings += [Finding("integrity", "fail", p.display, p.problem) for p in parts if p.problem]
    notes.append(f"images: {images.hashed} hashed, {images.reused} unchanged since the last "
                 f"audit, {images.unusable} unusable now (missing/refused)")
    if images.note:
        notes.append(images.note)
    clock.lap("images")

    groups = _expected_groups(expected)
    inputs = {"items": items, "image_sources": images.table,
              "part_metadata": _part_metadata(readable),
              "part_dims": pa.table({"part": [p.path for p in readable],
                                     "dim": pa.array([p.dim for p in readable], pa.int64())}),
              "expected_groups": groups}
    kind = source or _default_source(ws, readable)
    params = {"n_items": items.num_rows, "limit": limit}
    try:
        results = _query(inputs, SOURCES[kind](ws, readable), params, progress, clock)
    except duckdb.Error as exc:
        if kind != "duckdb" or source is not None:
            raise
        # every part passed pyarrow's checks, but DuckDB's own reader is stricter about a
        # damaged footer: the same statements over the parts as pyarrow reads them
        notes.append(f"DuckDB's Parquet reader refused a part ({exc}); parts read through "
                     "pyarrow instead")
        results = _query(inputs, ArrowSource(ws, readable), params, progress, clock)

    coverage = _coverage_rows(results["coverage"], results["lacking"])
    findings += _provenance_findings(results["provenance"], results["encoders"], expected)
    findings += _dimension_findings(results["encoders"])
    gates = _gates(coverage, results["quality"], findings, min_coverage, allow_stale)
    report = AuditReport(
        workspace=ws.display(), items=items.num_rows, parts=len(parts),
        readable_parts=len(readable), rows=sum(r["rows"] for r in results["quality"]),
        seconds=round(time.perf_counter() - started, 3), coverage=coverage,
        quality=results["quality"], problems=results["problems"],
        duplicates=results["duplicates"], reasons=results["reasons"],
        encoders=results["encoders"], provenance=results["provenance"], findings=findings,
        gates=gates, notes=notes, timings=clock.laps)
    report.sql = audit_script(ws, parts, groups, items.num_rows, limit, images.saved)
    return report


def _query(inputs: Mapping[str, Any], src: Any, params: dict[str, Any], progress: bool,
           clock: "_Clock") -> dict[str, list[dict[str, Any]]]:
    """One in-process DuckDB connection over the inputs and the parts; audit.sql's results."""
    import duckdb

    con = duckdb.connect()
    try:
        # DuckDB's own bar would write to stdout (where --format json goes); ours is on stderr
        con.execute("SET enable_progress_bar = false")
        for name, table in inputs.items():
            con.register(name, table)
        src.register(con)
        clock.lap("setup")
        return _run_statements(con, src, params, progress, clock)
    finally:
        con.close()


class _Clock:
    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.last, 3)
        self.last = now


def _check_parts(ws: Workspace, parts: list[Part], manifest: StoreManifest | None,
                 progress: bool) -> list[Part]:
    bar = _progress(len(parts), "checking parts", progress)
    workers = max(1, min(4, os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(check_part, ws, p, _recorded(manifest, p)) for p in parts]
        for fut in concurrent.futures.as_completed(futures):
            fut.result()
            bar.update(1)
    bar.close()
    return parts


def _part_metadata(parts: list[Part]) -> pa.Table:
    """Same shape as DuckDB's ``parquet_kv_metadata``: file_name, key, value."""
    rows = [(p.path, k, v) for p in parts for k, v in (p.metadata or {}).items()
            if k == META_INFO]
    return pa.table({"file_name": pa.array([r[0] for r in rows], pa.string()),
                     "key": pa.array([r[1] for r in rows], pa.binary()),
                     "value": pa.array([r[2] for r in rows], pa.binary())})


def _expected_groups(expected: Expected | None) -> pa.Table:
    rows = [(m, v, s) for (m, v), want in sorted((expected or {}).items())
            for s in range(int(want.get("samples", 1)))]
    return pa.table({"modality": pa.array([r[0] for r in rows], pa.string()),
                     "view": pa.array([r[1] for r in rows], pa.string()),
                     "sample": pa.array([r[2] for r in rows], pa.int32())})


#: statements that list examples by scanning the store again, and the query (over group_stats
#: and coverage) that says whether there is anything to list
_SKIPPABLE = {
    "problems": "SELECT count(*) FROM group_stats WHERE invalid + non_finite + all_zero + orphans"
                " + id_mismatch + stale > 0",
    "duplicates": "SELECT count(*) FROM coverage WHERE duplicate_rows > 0",
    "reasons": "SELECT count(*) FROM group_stats WHERE missing + error > 0",
}


def _run_statements(con: Any, src: Any, params: dict[str, Any], progress: bool,
                    clock: "_Clock") -> dict[str, list[dict[str, Any]]]:
    """Run audit.sql in order; SELECTs come back as lists of dicts keyed by statement name."""
    _, statements = load_statements()
    results: dict[str, list[dict[str, Any]]] = {}
    bar = _progress(len(statements), "audit queries", progress)
    for st in statements:
        bar.update(1)
        if st.name in _SKIPPABLE and not con.execute(_SKIPPABLE[st.name]).fetchall()[0][0]:
            results[st.name] = []  # nothing to list: spare the scan that would list it
            continue
        if st.reads_features and src.rescans:
            src.register(con)
        cur = con.execute(st.sql, {k: params[k] for k in st.params})
        if not st.creates:
            cols = [d[0] for d in cur.description]
            results[st.name] = [dict(zip(cols, row)) for row in cur.fetchall()]
        clock.lap(f"sql:{st.name}")
    bar.close()
    return results


def _coverage_rows(coverage: list[dict[str, Any]],
                   lacking: list[dict[str, Any]]) -> list[dict[str, Any]]:
    missing: dict[tuple[str, str, int], list[str]] = defaultdict(list)
    for row in lacking:
        missing[(row["modality"], row["view"], row["sample"])].append(row["item_id"])
    out = []
    for row in coverage:
        key = (row["modality"], row["view"], row["sample"])
        out.append({**row, "pct": float(row["pct"]), "lacking": row["items"] - row["covered"],
                    "lacking_items": missing.get(key, [])})
    return out


def _provenance_findings(provenance: list[dict[str, Any]], encoders: list[dict[str, Any]],
                         expected: Expected | None) -> list[Finding]:
    findings = []
    by_modality: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in encoders:
        by_modality[row["modality"]].append(row)
    for modality, rows in sorted(by_modality.items()):
        if len({(r["encoder"], r["weights_sha256"]) for r in rows}) > 1:
            used = "; ".join(f"{r['encoder']} (weights {str(r['weights_sha256'])[:12]}) in "
                             f"views {', '.join(r['views'])}" for r in rows)
            findings.append(Finding("provenance", "fail", modality,
                                    f"more than one encoder/weights in one modality: {used}"))
    by_view: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in provenance:
        by_view[(row["modality"], row["view"])].append(row)
    for (modality, view), rows in sorted(by_view.items()):
        if len(rows) > 1:
            made = "; ".join(f"{r['parts']} part(s) by {r['encoder']} with {r['view_params']} "
                             f"seed {r['seed']} samples {r['samples']}" for r in rows)
            findings.append(Finding("provenance", "fail", f"{modality}/{view}",
                                    f"parts disagree on how the view was made: {made}"))
    if expected is None:
        return findings
    for (modality, view), want in sorted(expected.items()):
        rows = by_view.get((modality, view), [])
        subject = f"{modality}/{view}"
        if not rows:
            findings.append(Finding("provenance", "fail", subject, "the config asks for this "
                                    "view but the store has no readable part of it"))
        for row in rows:
            for problem in _config_mismatches(row, want):
                findings.append(Finding("provenance", "fail", subject, problem))
    for modality, view in sorted(set(by_view) - set(expected)):
        findings.append(Finding("provenance", "warn", f"{modality}/{view}", "not asked for by "
                                "the config (left over from an earlier config?)"))
    return findings


def _config_mismatches(row: Mapping[str, Any], want: Mapping[str, Any]) -> list[str]:
    out = []
    if "encoder" in want and row["encoder"] != want["encoder"]:
        out.append(f"extracted with encoder {row['encoder']!r}, the config asks for "
                   f"{want['encoder']!r}")
    if "view_params" in want:
        have = json.loads(row["view_params"]) if row["view_params"] is not None else None
        asked = json.loads(json.dumps(want["view_params"], sort_keys=True, default=str))
        if have != asked:
            out.append(f"extracted with view parameters {json.dumps(have, sort_keys=True)}, "
                       f"the config asks for {json.dumps(asked, sort_keys=True)}")
    for key in ("seed", "samples"):
        if key in want and row[key] != int(want[key]):
            out.append(f"extracted with {key} {row[key]}, the config asks for {want[key]}")
    return out


def _dimension_findings(encoders: list[dict[str, Any]]) -> list[Finding]:
    findings = []
    for row in encoders:
        subject = f"{row['modality']}/{row['encoder']}"
        dims = row["stored_dims"] or []
        if len(dims) > 1:
            findings.append(Finding("dimensions", "fail", subject,
                                    f"one encoder stores vectors of dimensions {dims}"))
        elif row["declared_dim"] is not None and dims and dims[0] != row["declared_dim"]:
            findings.append(Finding("dimensions", "fail", subject,
                                    f"provenance declares dim {row['declared_dim']} but the "
                                    f"parts store dim {dims[0]}"))
    return findings


def _gates(coverage: list[dict[str, Any]], quality: list[dict[str, Any]],
           findings: list[Finding], min_coverage: float, allow_stale: bool) -> list[Gate]:
    def total(column: str) -> int:
        return int(sum(r[column] for r in quality))

    low = [f"{r['modality']}/{r['view']}#{r['sample']} {r['covered']}/{r['items']} "
           f"({r['pct']:.2f}%)" for r in coverage
           if r["covered"] < min_coverage * r["items"]]
    gates = [Gate("coverage", not low, f"every view >= {100 * min_coverage:.2f}%" if not low
                  else "below " + f"{100 * min_coverage:.2f}%: " + "; ".join(low))]
    for name, column, what in (("non_finite", "non_finite", "rows with NaN/Inf/null elements"),
                               ("all_zero", "all_zero", "all-zero vectors"),
                               ("duplicates", "duplicates", "duplicate rows")):
        n = total(column)
        gates.append(Gate(name, n == 0, f"{n} {what}"))
    orphans, mismatched = total("orphans"), total("id_mismatch")
    gates.append(Gate("orphans", orphans + mismatched == 0,
                      f"{orphans} rows for items not in the catalog, {mismatched} rows whose "
                      f"item_id disagrees with the catalog"))
    invalid = total("invalid")
    gates.append(Gate("row_contract", invalid == 0, f"{invalid} rows break the row contract"))
    stale = total("stale")
    gates.append(Gate("stale", stale == 0 or allow_stale,
                      f"{stale} stale rows" + (" (allowed)" if stale and allow_stale else "")))
    for check in ("dimensions", "provenance", "integrity"):
        bad = [f for f in findings if f.check == check and f.severity == "fail"]
        gates.append(Gate(check, not bad, f"{len(bad)} finding(s)"))
    return gates


def expected_from_config(path: str | os.PathLike[str] | None) -> dict[tuple[str, str],
                                                                      dict[str, Any]]:
    """What the features config (default config when ``path`` is None) asks the store for."""
    from pipeline.features import FeaturesConfig

    return FeaturesConfig.load(path).expected_views()


# --------------------------------------------------------------------------- --sql script


def audit_script(ws: Workspace, parts: list[Part], groups: pa.Table, n_items: int, limit: int,
                 images_saved: bool) -> str:
    """The audit as a script for the ``duckdb`` CLI, with this workspace's paths filled in."""
    header, statements = load_statements()
    readable = [p for p in parts if p.problem is None]
    if len(readable) == len(parts):
        source = _sql_literal(ws.display(FEATURES_DIR, "modality=*", "view=*",
                                         "part-*.parquet"))
    else:
        source = "[" + ",\n    ".join(_sql_literal(p.display) for p in readable) + "]"
    lines = [
        "-- `macl audit --sql`: paste into the duckdb CLI (DuckDB 2.x) to get the numbers of",
        f"-- `macl audit` for {ws.display()}. Paths are filled in for display only.",
    ]
    if len(readable) < len(parts):
        lines.append(f"-- {len(parts) - len(readable)} unreadable part(s) are left out, as the "
                     "audit leaves them out.")
    if not ws.is_local:
        lines.append("-- Object storage: INSTALL httpfs; LOAD httpfs; and a CREATE SECRET first.")
    shown_header = [line for line in header.splitlines() if "$" not in line]
    lines += [
        *shown_header,
        f"-- Filled in: catalog size {n_items}, {limit} examples per list.", "",
        "CREATE OR REPLACE TEMP VIEW items AS",
        f"SELECT * FROM read_parquet({_sql_literal(ws.display(*ITEMS_PATH))});",
    ]
    if images_saved:
        lines += ["CREATE OR REPLACE TEMP VIEW image_sources AS",
                  f"SELECT image_uri, sha256 FROM read_parquet("
                  f"{_sql_literal(ws.display(*IMAGE_HASHES_PATH))});"]
    else:
        lines += ["-- the image hashes could not be saved: image rows will read as stale here",
                  "CREATE OR REPLACE TEMP VIEW image_sources AS",
                  "SELECT NULL::VARCHAR AS image_uri, NULL::VARCHAR AS sha256 WHERE false;"]
    lines += [
        "CREATE OR REPLACE TEMP VIEW features AS",
        f"SELECT * FROM read_parquet({source},",
        "    hive_partitioning = true, filename = true);",
        "CREATE OR REPLACE TEMP VIEW part_metadata AS",
        f"SELECT * FROM parquet_kv_metadata({source});",
        "-- the audit reads each part's dimension from its footer; this scan finds the same",
        "CREATE OR REPLACE TEMP VIEW part_dims AS",
        "SELECT filename AS part, max(len(embedding)) AS dim FROM features GROUP BY ALL;",
        "CREATE OR REPLACE TEMP TABLE expected_groups AS",
    ]
    rows = list(zip(*(groups.column(c).to_pylist() for c in groups.column_names)))
    if rows:
        values = ",\n    ".join(f"({_sql_literal(m)}, {_sql_literal(v)}, {s})"
                               for m, v, s in rows)
        lines.append(f"SELECT * FROM (VALUES\n    {values}) AS t(modality, view, sample);")
    else:
        lines.append("SELECT NULL::VARCHAR AS modality, NULL::VARCHAR AS view, "
                     "NULL::INTEGER AS sample WHERE false;")
    values = {"n_items": str(int(n_items)), "limit": str(int(limit))}
    for st in statements:
        sql = re.sub(r"\$(\w+)", lambda m: values[m.group(1)], st.sql)
        lines += ["", f"-- name: {st.name}", sql]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- rendering


def render(report: AuditReport, fmt: str = "table") -> str:
    """The report as an aligned text table, Markdown, or JSON."""
    if fmt == "json":
        return json.dumps(report.to_json(), indent=2, default=str)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    md = fmt == "markdown"
    out = []
    title = f"macl audit of {report.workspace}"
    out.append(f"# {title}" if md else title)
    out.append(f"{report.items} catalog items, {report.readable_parts}/{report.parts} parts "
               f"readable, {report.rows} rows, {report.seconds:.1f} s")
    for name, columns, rows in _sections(report):
        if rows:
            out += ["", f"## {name}" if md else name, _table(columns, rows, md)]
    verdict = "PASSED" if report.passed else "FAILED (" + ", ".join(report.failed_gates) + ")"
    out += ["", f"**audit {verdict}**" if md else f"audit {verdict}"]
    return "\n".join(out) + "\n"


def _sections(report: AuditReport) -> list[tuple[str, list[str], list[list[Any]]]]:
    def items(values: Sequence[Any], total: int | None = None) -> str:
        text = ", ".join(str(v) for v in values)
        more = (total or len(values)) - len(values)
        return text + (f" (+{more})" if more > 0 else "")

    q_cols = ["modality", "view", "sample", "rows", "ok", "missing", "error", "non_finite",
              "all_zero", "duplicates", "orphans", "id_mismatch", "invalid", "stale", "dim"]
    return [
        ("Coverage (catalog items with an ok row)",
         ["modality", "view", "sample", "covered", "items", "pct", "lacking"],
         [[r["modality"], r["view"], r["sample"], r["covered"], r["items"], f"{r['pct']:.2f}%",
           items(r["lacking_items"], r["lacking"])] for r in report.coverage]),
        ("Quality", q_cols,
         [[*(r[c] for c in q_cols[:-1]), r["min_dim"] if r["min_dim"] == r["max_dim"]
           else f"{r['min_dim']}..{r['max_dim']}"] for r in report.quality]),
        ("Bad rows (first items)", ["problem", "modality", "view", "sample", "item_idx"],
         [[r["problem"], r["modality"], r["view"], r["sample"], items(r["items"])]
          for r in report.problems]),
        ("Duplicate keys", ["modality", "view", "sample", "item_idx", "rows", "parts"],
         [[r["modality"], r["view"], r["sample"], r["item_idx"], r["rows"],
           items([_short(p) for p in r["parts"]])] for r in report.duplicates]),
        ("Reasons for missing/error rows", ["modality", "view", "status", "reason", "rows",
                                            "example"],
         [[r["modality"], r["view"], r["status"], r["reason"], r["rows"], r["example"]]
          for r in report.reasons]),
        ("Encoders", ["modality", "encoder", "weights", "declared_dim", "stored_dims", "views",
                      "parts"],
         [[r["modality"], r["encoder"], str(r["weights_sha256"])[:12], r["declared_dim"],
           items(r["stored_dims"] or []), items(r["views"]), r["parts"]]
          for r in report.encoders]),
        ("Findings", ["check", "severity", "subject", "problem"],
         [[f.check, f.severity, f.subject, f.problem] for f in report.findings]),
        ("Notes", ["note"], [[n] for n in report.notes]),
        ("Gates", ["gate", "result", "detail"],
         [[g.name, "pass" if g.passed else "FAIL", g.detail] for g in report.gates]),
    ]


def _short(path: str) -> str:
    """'modality=image/view=orig/part-00003.parquet' out of a full part path."""
    return "/".join(re.split(r"[\\/]", path)[-3:])


def _table(columns: list[str], rows: list[list[Any]], markdown: bool) -> str:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    if markdown:
        def esc(s: str) -> str:
            return s.replace("|", "\\|").replace("\n", " ")
        lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
        lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*columns).rstrip(), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row).rstrip() for row in cells]
    return "\n".join(lines)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False,
                disable=None if enabled else True)
