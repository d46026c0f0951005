"""The Prefect features flow: caching, repair, incremental reruns, kill -9 and rerun, CLI, Dask.

The ``prefect_server`` fixture (tests/conftest.py) is one Prefect API server for the whole
session, in process and in the CLI subprocesses, so its start-up is paid once.
"""
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.features import FeaturesConfig, compute_part, plan_run
from schemas.store import list_parts, list_views, read_part_info, read_view_rows
from tests.pipeline.tiny_catalog import WORDS, build_catalog
from tests.store_snapshots import assert_same_store, store_rows

REPO = Path(__file__).resolve().parents[2]
CONFIG = {"shard_size": 2, "loader_workers": 1, "prefetch_batches": 1,
          "image": {"batch_size": 2, "device": "cpu", "views": {"orig": {}, "hflip": {}}},
          "text": {"batch_size": 2, "device": "cpu", "views": {"orig": {}, "swap": {}}}}


def write_config(path: Path, **over) -> Path:
    path.write_text(yaml.safe_dump({**CONFIG, **over}))
    return path


def reference_store(tmp_path: Path, n: int, cfg_path: Path, texts=None) -> dict:
    """An uninterrupted run from scratch (the plain functions, no flow) on an identical
    catalog."""
    ws = build_catalog(tmp_path / "reference", n, texts=texts)
    cfg = FeaturesConfig.load(cfg_path)
    for p in plan_run(ws, cfg).parts:
        compute_part(ws, cfg, p)
    return store_rows(tmp_path / "reference")


def test_flow_caches_repairs_and_trusts_the_store(prefect_server, tmp_path, monkeypatch):
    from flows.features import run_features

    ws_root = tmp_path / "ws"
    build_catalog(ws_root, 4)
    cfg = write_config(tmp_path / "f.yaml", image={**CONFIG["image"], "views": {"orig": {}}},
                       text={**CONFIG["text"], "views": {"orig": {}}})
    first = run_features(str(ws_root), str(cfg))
    views = {(v["modality"], v["view"]): v for v in first["views"]}
    assert views[("image", "orig")]["parts_computed"] == 2 and views[("image", "orig")]["ok"] == 4
    assert (ws_root / "features" / "_manifest.json").exists()

    again = run_features(str(ws_root), str(cfg))
    assert sum(v["parts_computed"] for v in again["views"]) == 0

    part = ws_root / "features" / "modality=text" / "view=orig" / "part-00001.parquet"
    part.unlink()  # Prefect's cache still says "done": the store check must notice
    repaired = run_features(str(ws_root), str(cfg))
    assert sum(v["parts_computed"] for v in repaired["views"]) == 1 and part.exists()

    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: str(tmp_path / "wiped")}):
        wiped = run_features(str(ws_root), str(cfg))  # no Prefect cache at all: the store decides
    assert sum(v["parts_computed"] for v in wiped["views"]) == 0


def test_incremental_rerun_recomputes_only_changed_shards(prefect_server, tmp_path):
    from flows.features import run_features

    ws_root = tmp_path / "ws"
    build_catalog(ws_root, 5)
    cfg = write_config(tmp_path / "f.yaml")
    run_features(str(ws_root), str(cfg))
    from schemas.fs import Workspace

    ws = Workspace.open(ws_root)
    before = {(m, v, n): read_part_info(ws, m, v, n)["created_at"]
              for m, v in list_views(ws) for n in list_parts(ws, m, v)}
    texts = [f"{WORDS[i % len(WORDS)]} item {i}" for i in range(1, 7)]
    texts[0] = "an edited first description"  # item 1 (shard 0) edited, item 6 (shard 2) added
    build_catalog(ws_root, 6, texts=texts)
    time.sleep(1.1)  # created_at has one-second resolution
    summary = run_features(str(ws_root), str(cfg))
    computed = {(v["modality"], v["view"]): v["parts_computed"] for v in summary["views"]}
    assert computed == {("image", "orig"): 1, ("image", "hflip"): 1, ("text", "orig"): 2,
                        ("text", "swap"): 2}
    after = {(m, v, n): read_part_info(ws, m, v, n)["created_at"]
             for m, v in list_views(ws) for n in list_parts(ws, m, v)}
    redone = {k for k in after if after[k] != before.get(k)}
    assert redone == {("image", "orig", "part-00002.parquet"),
                      ("image", "hflip", "part-00002.parquet"),
                      ("text", "orig", "part-00000.parquet"),
                      ("text", "swap", "part-00000.parquet"),
                      ("text", "orig", "part-00002.parquet"),
                      ("text", "swap", "part-00002.parquet")}
    assert_same_store(store_rows(ws_root), reference_store(tmp_path, 6, cfg, texts))
    rows = store_rows(ws_root)[("text", "orig")]
    assert rows["item_idx"] == [1, 2, 3, 4, 5, 6] and set(rows["status"]) == {"ok"}


def cli(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=REPO,
                            env={**os.environ, **env}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def visible_parts(root: Path) -> list[Path]:
    return sorted(root.glob("features/modality=*/view=*/part-*.parquet"))


IMAGE_ONLY = {"image": {**CONFIG["image"], "views": {"orig": {}, "hflip": {}, "blur": {}}},
              "text": {**CONFIG["text"], "views": {}}}


def kill_at_random_point(proc: subprocess.Popen, root: Path, n_parts: int,
                         rng: random.Random) -> None:
    """SIGKILL the run once a random number of parts is visible, plus a random delay."""
    target = rng.randrange(0, n_parts)
    while proc.poll() is None and len(visible_parts(root)) < target:
        time.sleep(0.02)
    time.sleep(rng.uniform(0, 0.4))
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and anything it started
    proc.communicate()


def finished_parts(root: Path) -> dict[Path, str]:
    """Visible parts (each must be whole and readable) and their creation stamps."""
    from schemas.fs import Workspace

    ws = Workspace.open(root)
    for m, v in list_views(ws):
        read_view_rows(ws, m, v)  # raises on a partial or corrupt visible file
    for f in root.glob("features/**/*"):
        assert f.is_dir() or f.name.startswith(".") or f.name.endswith(".parquet") \
            or f.name == "_manifest.json", f
    return {p: read_part_info(ws, p.parent.parent.name[len("modality="):],
                              p.parent.name[len("view="):], p.name)["created_at"]
            for p in visible_parts(root)}


def kill_and_rerun(tmp_path: Path, env: dict, trials: int, kills_per_trial: int, n: int,
                   seed: int, **config) -> None:
    """Each trial kills the CLI ``kills_per_trial`` times in a row at random points, then lets
    it finish; the store must equal an uninterrupted run's and survivors must not be redone."""
    cfg = write_config(tmp_path / "f.yaml", **config)
    reference = reference_store(tmp_path, n, cfg)
    n_parts = len(plan_run(build_catalog(tmp_path / "reference", n),
                           FeaturesConfig.load(cfg)).parts)
    rng = random.Random(seed)
    for trial in range(trials):
        root = tmp_path / f"trial{trial}"
        build_catalog(root, n)
        args = ["features", "--workspace", str(root), "--config", str(cfg)]
        survived: dict[Path, str] = {}
        for _ in range(kills_per_trial):
            kill_at_random_point(cli(args, env), root, n_parts, rng)
            now = finished_parts(root)
            assert all(now.get(p) == c for p, c in survived.items())  # not redone
            survived = now
        time.sleep(1.1)  # created_at has one-second resolution
        done = cli(args, env)
        out, err = done.communicate(timeout=600)
        assert done.returncode == 0, err[-2000:]
        assert "rows" in out and "parts:" in out  # the summary table
        assert_same_store(store_rows(root), reference)
        assert not list(root.glob("features/**/.*.tmp-*"))  # stale temp files cleaned
        final = finished_parts(root)
        assert all(final[p] == c for p, c in survived.items())  # finished parts not redone
        shutil.rmtree(root)


def test_kill_and_rerun_gives_the_uninterrupted_store(prefect_server, tmp_path):
    kill_and_rerun(tmp_path, prefect_server, trials=1, kills_per_trial=2, n=6, seed=1,
                   **IMAGE_ONLY)


@pytest.mark.slow
def test_kill_and_rerun_many_times(prefect_server, tmp_path):
    kill_and_rerun(tmp_path, prefect_server, trials=20, kills_per_trial=1, n=8, seed=2)


@pytest.mark.slow
def test_dask_runner_writes_the_same_store(prefect_server, tmp_path):
    from flows.features import run_features

    cfg = write_config(tmp_path / "f.yaml")
    for runner in ("thread", "dask"):
        build_catalog(tmp_path / runner, 4)
        run_features(str(tmp_path / runner), str(cfg), runner=runner)
    assert_same_store(store_rows(tmp_path / "thread"), store_rows(tmp_path / "dask"))


def test_serve_flows_needs_a_local_server(monkeypatch):
    from flows.deployments import ServerNotConfigured, server_api_url
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: None}):
        monkeypatch.delenv("PREFECT_API_URL", raising=False)
        with pytest.raises(ServerNotConfigured, match="prefect server start --host 127.0.0.1"):
            server_api_url()
    monkeypatch.setenv("PREFECT_API_URL", "https://api.prefect.cloud/api/accounts/x")
    with pytest.raises(ServerNotConfigured, match="not a loopback"):
        server_api_url()


def test_serve_flows_registers_cron_deployments(prefect_server, tmp_path):
    build_catalog(tmp_path / "ws", 2)
    proc = cli(["serve-flows", "--workspace", str(tmp_path / "ws"), "--register-only",
                "--features-cron", "30 1 * * *"], prefect_server)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert "features/nightly-features" in out and "'30 1 * * *'" in out
    assert "audit/weekly-audit" in out and "'0 4 * * 0'" in out
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("features/nightly-features")
    assert dep.parameters["workspace"] == str(tmp_path / "ws")
    assert dep.schedules[0].schedule.cron == "30 1 * * *"
