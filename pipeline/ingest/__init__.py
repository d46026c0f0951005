"""Ingest adapters: one module per source layout, all writing the same workspace contracts.

``load_source(format, source, **options)`` reads a source into a ``SourceData``;
``ingest(...)`` also writes it into a workspace and returns the printed summary.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from pipeline.ingest.base import IngestSummary, SourceData, write_source
from schemas.fs import Workspace

FORMATS = ("hm", "movielens", "srgnn", "amazon2018", "recbole", "table")


def load_source(fmt: str, source: str | Path, **options: Any) -> SourceData:
    if fmt not in FORMATS:
        raise ValueError(f"unknown ingest format {fmt!r}; choose one of {FORMATS}")
    module = importlib.import_module(f"pipeline.ingest.{fmt}")
    return module.load(Path(source), **options)


def ingest(
    fmt: str,
    source: str | Path,
    workspace: str | Workspace,
    *,
    copy_images: bool = False,
    progress: bool = True,
    **options: Any,
) -> IngestSummary:
    """Read ``source`` in layout ``fmt`` and write catalog, events (and a given split)."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
    data = load_source(fmt, source, **options)
    return write_source(ws, data, copy_images=copy_images, progress=progress)


__all__ = ["FORMATS", "IngestSummary", "SourceData", "ingest", "load_source"]
