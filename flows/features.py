"""The ``features`` Prefect flow: one task per (modality, view, shard) over ``pipeline.features``.

Tasks are cached by the part's content key (the shard's source hashes + encoder provenance +
view parameters; never run ids or DataFrames), and results are persisted, so a rerun reuses
finished parts. The store stays the source of truth: a part whose stored ``cache_key`` matches
is skipped even if Prefect's cache is gone, and a Prefect cache hit whose part is missing from
the store (deleted, or another workspace with the same content) is recomputed.
"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.futures import as_completed

from pipeline.features import (
    FeaturesConfig,
    PartPlan,
    PartResult,
    StoreLock,
    clean_store,
    compute_part,
    current_part_sha256,
    describe_encoders,
    plan_run,
    select_views,
    summarize,
    write_store_manifest,
)
from schemas.errors import ContractError
from schemas.fs import Workspace
from schemas.hashing import sha256_json

RUNNERS = ("thread", "dask")


@dataclass(frozen=True)
class PartJob:
    """What a task needs besides its plan, small and picklable (Dask ships it to workers)."""

    workspace: str
    config_json: str
    allow_roots: tuple[str, ...] = ()

    def open(self) -> tuple[Workspace, FeaturesConfig]:
        return _open_job(self.workspace, self.config_json)


_JOBS: dict[tuple[str, str], tuple[Workspace, FeaturesConfig]] = {}
_JOBS_LOCK = threading.Lock()


def _open_job(workspace: str, config_json: str) -> tuple[Workspace, FeaturesConfig]:
    with _JOBS_LOCK:
        key = (workspace, config_json)
        if key not in _JOBS:
            _JOBS[key] = (Workspace.open(workspace),
                          FeaturesConfig.from_dict(json.loads(config_json), "<run config>"))
        return _JOBS[key]


def _part_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    return parameters["prefect_key"]


def _retry_io_only(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a part only when it failed on I/O (a flaky disk or object store), never on a bug
    or bad input, which would fail the same way again."""
    try:
        state.result()
    except ContractError:
        return False
    except OSError:
        return True
    except BaseException:  # noqa: BLE001 - anything else is not retried
        return False
    return False


@task(name="features-part", task_run_name="{plan.modality}/{plan.view}/part-{plan.shard}",
      cache_key_fn=_part_cache_key, persist_result=True, retries=2, retry_delay_seconds=2,
      retry_condition_fn=_retry_io_only)
def extract_part(job: PartJob, plan: PartPlan, prefect_key: str, force: bool = False
                 ) -> dict[str, Any]:
    """Compute one part (or confirm the stored one is current) and return its counts."""
    ws, config = job.open()
    result = compute_part(ws, config, plan, job.allow_roots, force=force)
    logger = get_run_logger()
    if result.damaged:
        logger.warning("%s/%s part %d was damaged (%s): computed again", plan.modality,
                       plan.view, plan.shard, result.damaged)
    if result.computed:
        logger.info("%s/%s part %d: %d rows (%d ok, %d missing, %d error), %d items reused, "
                    "%.1f s", plan.modality, plan.view, plan.shard, result.rows, result.ok,
                    result.missing, result.error, result.reused_items, result.seconds)
    else:
        logger.info("%s/%s part %d already current", plan.modality, plan.view, plan.shard)
    return result.to_dict()


class FeaturesFailed(RuntimeError):
    """Some parts failed; the others are stored and a rerun only redoes the failed ones."""


@flow(name="features")
def features_flow(workspace: str, config: str | None = None, views: list[str] | None = None,
                  allow_roots: list[str] | None = None, progress: bool = False) -> dict[str, Any]:
    """Extract image and text features of every item in every configured view into the store.

    ``config``: a YAML file or a preset name (default: the ``default`` preset, packaged models).
    ``views``: narrow the run (``image``, ``text/swap``, ``orig``). ``allow_roots``: extra
    directories images may be read from.
    """
    logger = get_run_logger()
    started = time.perf_counter()
    cfg = FeaturesConfig.load(config)
    ws = Workspace.open(workspace)
    with StoreLock(ws):
        plan = plan_run(ws, cfg, views, allow_roots or [])
        removed = clean_store(ws, plan)
        if removed:
            logger.info("removed %d stale file(s): %s", len(removed), ", ".join(removed[:5]))
        job = PartJob(ws.uri, json.dumps(cfg.to_dict(), sort_keys=True),
                      tuple(plan.allowed_roots))
        logger.info("%d items, %d views, %d parts", plan.n_items, len(plan.views),
                    len(plan.parts))
        results, failures = _run_parts(ws, job, plan.parts, cfg, progress, force=False)
        stale = _verify_unchecked(ws, plan.parts, results, failures)
        if stale:  # Prefect cache hits whose parts are missing, replaced or damaged
            logger.info("recomputing %d part(s) missing from the store or damaged: %s",
                        len(stale), "; ".join(f"{p.modality}/{p.view}/{p.name} ({why})"
                                              for p, why in list(stale.items())[:5]))
            redo, more_failures = _run_parts(ws, job, list(stale), cfg, progress, force=True)
            for p, r in redo.items():
                r.damaged = r.damaged or stale[p]
            results = {**results, **redo}
            failures.update(more_failures)
        write_store_manifest(ws, plan.catalog_sha256,
                             {(p.modality, p.view, p.name): (r.cache_key, r.sha256)
                              for p, r in results.items() if r.sha256})
    wall = time.perf_counter() - started
    ordered = [results[p] for p in plan.parts if p in results]
    summary = {"workspace": ws.uri, "wall_seconds": wall, "n_items": plan.n_items,
               "views": [dataclasses.asdict(s) for s in summarize(ordered)],
               "parts": len(plan.parts), "removed": removed,
               "repaired": [f"{p.modality}/{p.view}/{p.name}: {r.damaged}"
                            for p, r in results.items() if r.damaged and r.computed],
               "failed": [f"{p.modality}/{p.view}/{p.name}: {e}" for p, e in failures.items()]}
    if failures:
        raise FeaturesFailed(f"{len(failures)} part(s) failed (the others are stored; rerun to "
                             "retry): " + "; ".join(summary["failed"][:5]))
    return summary


def _verify_unchecked(ws: Workspace, parts: list[PartPlan], results: dict[PartPlan, PartResult],
                      failures: dict[PartPlan, BaseException]) -> dict[PartPlan, str]:
    """Parts no task of this run wrote or verified (Prefect cache hits) are checked against the
    store: absent, made from other inputs or damaged -> {part: why}. Verified ones get their
    sha256 for the manifest."""
    from concurrent.futures import ThreadPoolExecutor

    todo = [p for p in parts if p not in failures and not (p in results and results[p].sha256)]
    with ThreadPoolExecutor(4) as pool:
        checked = list(pool.map(lambda p: current_part_sha256(ws, p), todo))
    stale = {}
    for p, (sha, why) in zip(todo, checked):
        if sha is None:
            stale[p] = why
        elif p in results:
            results[p].sha256 = sha
    return stale


def _prefect_key(ws: Workspace, plan: PartPlan) -> str:
    """Prefect's cache key: the part's content key, scoped to the workspace it is written to."""
    return sha256_json({"workspace": ws.uri, "part": plan.cache_key})


def _run_parts(ws: Workspace, job: PartJob, parts: list[PartPlan], cfg: FeaturesConfig,
               progress: bool, force: bool
               ) -> tuple[dict[PartPlan, PartResult], dict[PartPlan, BaseException]]:
    from tqdm import tqdm

    run = extract_part.with_options(retries=cfg.io_retries,
                                    refresh_cache=True if force else None)
    futures = {run.submit(job, p, prefect_key=_prefect_key(ws, p), force=force): p
               for p in parts}
    results: dict[PartPlan, PartResult] = {}
    failures: dict[PartPlan, BaseException] = {}
    with tqdm(total=sum(p.n_items for p in parts), unit="item-view", disable=not progress,
              desc="features" if not force else "features (repair)", dynamic_ncols=True) as bar:
        for fut in as_completed(list(futures)):
            p = futures[fut]
            try:
                result = PartResult(**fut.result())
            except Exception as exc:  # noqa: BLE001 - reported per part, the rest goes on
                failures[p] = exc
            else:
                if fut.state.name == "Cached":  # Prefect returned a finished run's result
                    result.computed, result.reused_items = False, 0
                    result.seconds = result.forward_seconds = 0.0
                    result.sha256 = result.damaged = ""  # the store is checked after the run
                results[p] = result
            bar.update(p.n_items)
    return results, failures


def task_runner(kind: str = "thread", address: str | None = None, workers: int = 1) -> Any:
    """Prefect's thread pool (default) or a Dask cluster (``address``, or a local cluster)."""
    if kind == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers)
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    raise ValueError(f"runner must be one of {RUNNERS}, got {kind!r}")


def run_features(workspace: str, config: str | None = None, views: list[str] | None = None,
                 allow_roots: list[str] | None = None, runner: str = "thread",
                 address: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Run the flow on the chosen task runner (what ``macl features`` calls).

    The models are checked first, so a missing one fails in seconds, before Prefect starts.
    """
    cfg = FeaturesConfig.load(config)
    describe_encoders(cfg, select_views(cfg, views))
    flow_fn = features_flow.with_options(
        task_runner=task_runner(runner, address, cfg.task_workers))
    return flow_fn(workspace=workspace, config=config, views=views, allow_roots=allow_roots,
                   progress=progress)
