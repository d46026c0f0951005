"""Resolve and read an item's source inputs (image bytes, text) safely, with a reason on failure.

Shared by feature extraction and the audit so that both hash exactly the same bytes. Image paths
are confined: a relative ``image_uri`` must stay inside the workspace, an absolute one must lie
under an allowed root (the catalog's ``image_roots`` recorded at ingest, plus any the user
allows); URLs are refused (download images first).
"""
from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import Iterable

import pyarrow.fs as pafs

from schemas.fs import Workspace
from schemas.hashing import sha256_bytes, sha256_text

MAX_IMAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Source:
    """One item's input for one modality: ``status`` ok|missing|error, ``reason`` when not ok."""

    status: str
    reason: str | None = None
    data: bytes | str | None = None
    sha256: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def text_source(text: str | None) -> Source:
    if text is None:
        return Source("missing", "no text in the catalog")
    if not text.strip():
        return Source("missing", "empty text", sha256=sha256_text(text))
    return Source("ok", data=text, sha256=sha256_text(text))


class ImageResolver:
    """Turns catalog ``image_uri`` values into bytes, refusing anything outside allowed roots."""

    def __init__(self, ws: Workspace, allowed_roots: Iterable[str] = ()) -> None:
        self.ws = ws
        self.local_roots = [os.path.realpath(ws.root)] if ws.is_local else []
        self.remote_roots: list[tuple[pafs.FileSystem, str]] = [] if ws.is_local else [(ws.fs, ws.root)]
        for root in allowed_roots:
            if "://" in root and not root.startswith("file://"):
                fs, path = pafs.FileSystem.from_uri(root)
                self.remote_roots.append((fs, path.rstrip("/")))
            else:
                self.local_roots.append(os.path.realpath(root.removeprefix("file://")))

    def locate(self, image_uri: str | None) -> tuple[pafs.FileSystem, str] | Source:
        """(filesystem, path) of an image, or a non-ok Source saying why it cannot be used."""
        if image_uri is None or not str(image_uri).strip():
            return Source("missing", "no image_uri in the catalog")
        uri = str(image_uri).strip()
        scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
        if scheme in ("http", "https", "ftp"):
            return Source("error", f"image_uri is a URL ({scheme}://), expected a path: "
                                   "download images first")
        if scheme and scheme != "file":
            fs, path = pafs.FileSystem.from_uri(uri)
            for root_fs, root in self.remote_roots:
                if type(root_fs) is type(fs) and _within(posixpath.normpath(path), root):
                    return fs, path
            return Source("error", f"image_uri {uri!r} is outside the workspace and allowed roots")
        uri = uri.removeprefix("file://")
        if self.ws.is_local or os.path.isabs(uri):
            full = uri if os.path.isabs(uri) else os.path.join(self.ws.root, uri)
            real = os.path.realpath(full)
            if not any(_within(real, root) for root in self.local_roots):
                where = "escapes the workspace" if not os.path.isabs(uri) else \
                    "is an absolute path outside the workspace and allowed roots"
                return Source("error", f"image_uri {uri!r} {where}")
            return pafs.LocalFileSystem(), real
        norm = posixpath.normpath(posixpath.join(self.ws.root, uri))
        if not _within(norm, self.ws.root):
            return Source("error", f"image_uri {uri!r} escapes the workspace")
        return self.ws.fs, norm

    def read(self, image_uri: str | None) -> Source:
        """Raw bytes and their sha256, or a missing/error Source with the reason."""
        located = self.locate(image_uri)
        if isinstance(located, Source):
            return located
        fs, path = located
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            return Source("missing", f"image file not found: {image_uri}")
        if info.type != pafs.FileType.File:
            return Source("error", f"image_uri is not a file: {image_uri}")
        if info.size == 0:
            return Source("error", f"empty image file (0 bytes): {image_uri}")
        if info.size is not None and info.size > MAX_IMAGE_BYTES:
            return Source("error", f"image file too large ({info.size} bytes > {MAX_IMAGE_BYTES})")
        try:
            with fs.open_input_stream(path) as f:
                data = f.read()
        except OSError as exc:
            return Source("error", f"cannot read image file {image_uri}: {exc}")
        return Source("ok", data=data, sha256=sha256_bytes(data))


def _within(path: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root + "/")
