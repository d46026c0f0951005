"""Content hashes used for provenance, staleness checks and cache keys."""
from __future__ import annotations

import hashlib
import json
from typing import Any

from schemas.fs import Workspace

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-able object in canonical form (sorted keys, no whitespace)."""
    return sha256_text(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str))


def sha256_stream(f: Any) -> str:
    """Hash of what is left to read in an open binary file, read in chunks."""
    h = hashlib.sha256()
    while chunk := f.read(_CHUNK):
        h.update(chunk)
    return h.hexdigest()


def sha256_file(ws: Workspace, *parts: str) -> str:
    with ws.fs.open_input_stream(ws.path(*parts)) as f:
        return sha256_stream(f)
