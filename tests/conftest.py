"""Shared fixtures: offline environment, temporary workspaces, and the shared real data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.runtime import configure_environment

REPO = Path(__file__).resolve().parents[1]
configure_environment(prefect_home=REPO / ".prefect")

SHARED_DATA = Path(os.environ.get("MACL_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_collection_modifyitems(config, items):
    if SHARED_DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"needs the shared data folder {SHARED_DATA} (absent)")
    for item in items:
        if "data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def shared_data() -> Path:
    return SHARED_DATA


@pytest.fixture
def workspace(tmp_path):
    from schemas.fs import Workspace

    return Workspace.open(tmp_path / "ws")
