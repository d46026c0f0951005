"""Prefect ``audit`` flow: the DuckDB audit as a (weekly) run that fails when a gate fails.

The work is ``pipeline.audit.audit_store``; this module only gives it a task (visible in the
Prefect UI, never cached: an audit must look at the store as it is now) and turns failed gates
into a failed flow run.
"""
from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from pipeline.audit import AuditReport, audit_store, expected_from_config, render


class AuditGateFailed(RuntimeError):
    """Raised by the flow when the store fails a gate; the message names gates and details."""


@task(name="audit-store", cache_policy=NONE)
def audit_task(workspace: str, min_coverage: float, allow_stale: bool, limit: int,
               config: str | None, check_config: bool,
               allowed_roots: list[str]) -> AuditReport:
    expected = expected_from_config(config) if check_config else None
    label = f"the features config {config}" if config else "the default features config"
    return audit_store(workspace, min_coverage=min_coverage, allow_stale=allow_stale,
                       limit=limit, expected=expected, allowed_roots=allowed_roots,
                       config_label=label)


@flow(name="audit")
def audit_flow(workspace: str, min_coverage: float = 0.0, allow_stale: bool = False,
               limit: int = 20, config: str | None = None, check_config: bool = True,
               allowed_roots: list[str] | None = None) -> dict[str, Any]:
    """Audit ``workspace``; the run fails (AuditGateFailed) when any gate fails.

    ``config`` is the features config the store must match (None: the default config);
    ``check_config=False`` skips those checks.
    """
    report = audit_task(workspace, min_coverage, allow_stale, limit, config, check_config,
                        list(allowed_roots or []))
    logger = get_run_logger()
    logger.info("%s", render(report, "table"))
    if not report.passed:
        failed = "; ".join(f"{g.name}: {g.detail}" for g in report.gates if not g.passed)
        raise AuditGateFailed(f"feature store audit of {report.workspace} failed: {failed}")
    return report.to_json()
