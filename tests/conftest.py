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


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One private Prefect API server (own SQLite database and result storage in a temp dir)
    for every test that runs flows, in process and in CLI subprocesses: its start-up (~15 s on
    2 cores) is paid once per session. Yields the environment the CLI subprocesses need."""
    home = tmp_path_factory.mktemp("prefect")
    env = {"PREFECT_HOME": str(home),
           "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
           "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
    with pytest.MonkeyPatch.context() as mp:  # restores the environment afterwards
        for k, v in env.items():
            mp.setenv(k, v)
        from prefect.server.api.server import SubprocessASGIServer
        from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

        server = SubprocessASGIServer()
        server.start(timeout=180)
        try:
            with temporary_settings(updates={PREFECT_API_URL: server.api_url,
                                             PREFECT_LOCAL_STORAGE_PATH: str(home / "storage")}):
                yield {**env, "PREFECT_API_URL": server.api_url}
        finally:
            server.stop()
