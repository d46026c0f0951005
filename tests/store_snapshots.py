"""Feature-store snapshots for comparing two runs (shared by the flow and reliability tests)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from schemas.fs import Workspace
from schemas.store import list_views, read_view_rows


def store_rows(ws: Workspace | Path) -> dict:
    """Every (modality, view) of a store (a workspace or its folder) as rows sorted by key."""
    if not isinstance(ws, Workspace):
        ws = Workspace.open(ws)
    out = {}
    for m, v in list_views(ws):
        t = read_view_rows(ws, m, v).sort_by([("item_idx", "ascending"), ("sample", "ascending")])
        out[(m, v)] = t.to_pydict()
    return out


def assert_same_store(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        for col in ("item_idx", "item_id", "sample", "status", "reason", "source_sha256"):
            assert a[key][col] == b[key][col], (key, col)
        ea = [e for e in a[key]["embedding"] if e is not None]
        eb = [e for e in b[key]["embedding"] if e is not None]
        np.testing.assert_allclose(np.array(ea), np.array(eb), rtol=1e-5, atol=1e-6)
