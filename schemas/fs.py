"""Workspace paths on any pyarrow filesystem (local path or URI), and atomic writes.

A workspace is a folder holding catalog/, events/, splits/, features/ and runs/. It may be a
local path or a URI that pyarrow understands (``s3://bucket/prefix``). Every write goes to a
temporary name first and is renamed into place, so readers never see a partial file (on object
stores a single PUT is already atomic).
"""
from __future__ import annotations

import io
import json
import os
import posixpath
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


def _is_uri(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


@dataclass(frozen=True)
class Workspace:
    """A dataset folder on a filesystem; all paths inside it are '/'-joined strings."""

    fs: pafs.FileSystem
    root: str
    uri: str

    @classmethod
    def open(cls, location: str | os.PathLike[str]) -> "Workspace":
        location = os.fspath(location)
        if _is_uri(location):
            fs, root = pafs.FileSystem.from_uri(location)
            return cls(fs=fs, root=root.rstrip("/"), uri=location.rstrip("/"))
        if location.startswith("file://"):
            location = location[len("file://"):]
        root = os.path.abspath(location)
        return cls(fs=pafs.LocalFileSystem(), root=root, uri=root)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts) if not self.is_local else os.path.join(self.root, *parts)

    def display(self, *parts: str) -> str:
        """A path as a user would type it: scheme://bucket/key for object stores, without the
        URI's query options (endpoint, credentials) that ``uri`` keeps for reopening."""
        if self.is_local:
            return self.path(*parts)
        return f"{self.uri.split('://', 1)[0]}://{posixpath.join(self.root, *parts)}"

    def child_uri(self, *parts: str) -> str:
        """Where a folder inside this workspace is, as a location that reopens on the same
        filesystem: unlike ``display``, URI query options (endpoint, scheme) are kept."""
        if self.is_local:
            return self.path(*parts)
        base, sep, query = self.uri.partition("?")
        return "/".join([base.rstrip("/"), *parts]) + sep + query

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def makedirs(self, *parts: str) -> None:
        self.fs.create_dir(self.path(*parts), recursive=True)

    def listdir(self, *parts: str) -> list[str]:
        """Names directly inside a folder, sorted; [] when the folder does not exist."""
        base = self.path(*parts)
        if self.fs.get_file_info(base).type == pafs.FileType.NotFound:
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=False))
        return sorted(posixpath.basename(i.path.rstrip("/")) for i in infos)

    def read_bytes(self, *parts: str) -> bytes:
        with self.fs.open_input_stream(self.path(*parts)) as f:
            return f.read()

    def read_json(self, *parts: str) -> Any:
        return json.loads(self.read_bytes(*parts).decode("utf-8"))

    def write_bytes_atomic(self, data: bytes, *parts: str) -> None:
        write_bytes_atomic(self.fs, self.path(*parts), data)

    def write_json_atomic(self, obj: Any, *parts: str) -> None:
        self.write_bytes_atomic(
            (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8"), *parts
        )

    def write_parquet_atomic(self, table: pa.Table, *parts: str, **kwargs: Any) -> None:
        write_parquet_atomic(self.fs, self.path(*parts), table, **kwargs)

    def delete(self, *parts: str) -> None:
        p = self.path(*parts)
        if self.fs.get_file_info(p).type != pafs.FileType.NotFound:
            self.fs.delete_file(p)


def temp_name(path: str) -> str:
    """A hidden sibling name: pyarrow datasets, DuckDB globs (*.parquet) and humans skip it."""
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.tmp-{uuid.uuid4().hex}")


def write_bytes_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    parent = posixpath.dirname(path) if not isinstance(fs, pafs.LocalFileSystem) else os.path.dirname(path)
    fs.create_dir(parent, recursive=True)
    if not isinstance(fs, pafs.LocalFileSystem):
        with fs.open_output_stream(path) as out:  # one PUT: atomic on object stores
            out.write(data)
        return
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_parquet_atomic(
    fs: pafs.FileSystem, path: str, table: pa.Table, *, compression: str = "zstd",
    write_page_checksum: bool = True, **kwargs: Any
) -> None:
    """Write to a temporary name, then rename: no reader ever sees a half-written file. Pages
    carry CRCs so that readers (which verify them) turn a flipped bit into an error."""
    kwargs["write_page_checksum"] = write_page_checksum
    if not isinstance(fs, pafs.LocalFileSystem):
        buf = io.BytesIO()
        pq.write_table(table, buf, compression=compression, **kwargs)
        write_bytes_atomic(fs, path, buf.getvalue())
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = temp_name(path)
    try:
        pq.write_table(table, tmp, compression=compression, **kwargs)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
