"""Scheduled deployments on a local Prefect server: nightly incremental features, weekly audit.

``macl serve-flows`` registers both against the server named by ``PREFECT_API_URL`` (a
``prefect server start --host 127.0.0.1`` on this machine, SQLite-backed) and then serves them:
the serving process picks up each scheduled or manually triggered run and executes it here.
"""
from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse

DEFAULT_FEATURES_CRON = "0 2 * * *"  # every night at 02:00
DEFAULT_AUDIT_CRON = "0 4 * * 0"  # Sundays at 04:00
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ServerNotConfigured(RuntimeError):
    """No local Prefect server to register against; the message says how to start one."""


def server_api_url() -> str:
    """The loopback API URL the deployments go to, or ServerNotConfigured explaining setup."""
    from prefect.settings import PREFECT_API_URL

    url = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()
    how = ("start a local server with `prefect server start --host 127.0.0.1 --port 4200` "
           "(SQLite under $PREFECT_HOME), then `export "
           "PREFECT_API_URL=http://127.0.0.1:4200/api` and rerun `macl serve-flows`")
    if not url:
        raise ServerNotConfigured(f"PREFECT_API_URL is not set: {how}")
    host = urlparse(url).hostname
    if host not in LOOPBACK:
        raise ServerNotConfigured(f"PREFECT_API_URL={url} is not a loopback server; "
                                  f"serve-flows only registers with a local server: {how}")
    return url


def build_deployments(workspace: str, config: str | None = None,
                      features_cron: str = DEFAULT_FEATURES_CRON,
                      audit_cron: str = DEFAULT_AUDIT_CRON, min_coverage: float | None = None,
                      timezone: str = "UTC") -> list[Any]:
    """The two runner deployments with their cron schedules and parameters."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.deployments.runner import EntrypointType

    from flows.features import features_flow

    try:
        from flows.audit import audit_flow
    except ImportError as exc:
        raise ServerNotConfigured(f"the audit flow (flows.audit:audit_flow) cannot be imported "
                                  f"({exc})") from exc
    workspace = workspace if "://" in workspace else os.path.abspath(workspace)
    if config is not None and os.path.exists(config):
        config = os.path.abspath(config)  # served runs start in another working directory
    features = features_flow.to_deployment(
        name="nightly-features", schedules=[CronSchedule(cron=features_cron, timezone=timezone)],
        parameters={"workspace": workspace, "config": config}, tags=["macl", "features"],
        description="Incremental feature extraction: only parts whose inputs changed run.",
        entrypoint_type=EntrypointType.MODULE_PATH)
    audit_params: dict[str, Any] = {"workspace": workspace}
    if config is not None:  # the audit checks provenance against the same features config
        audit_params["config"] = config
    if min_coverage is not None:
        audit_params["min_coverage"] = min_coverage
    audit = audit_flow.to_deployment(
        name="weekly-audit", schedules=[CronSchedule(cron=audit_cron, timezone=timezone)],
        parameters=audit_params, tags=["macl", "audit"],
        description="DuckDB audit of the feature store: coverage, quality, staleness.",
        entrypoint_type=EntrypointType.MODULE_PATH)
    return [features, audit]


def register(deployments: list[Any]) -> list[str]:
    """Create or update the deployments on the server; returns their ids."""
    server_api_url()
    return [str(d.apply()) for d in deployments]


def serve(deployments: list[Any]) -> None:
    """Register, then execute scheduled and triggered runs until interrupted."""
    from prefect import serve as prefect_serve

    server_api_url()
    prefect_serve(*deployments, print_starting_message=True)
