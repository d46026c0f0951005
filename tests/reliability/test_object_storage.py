"""A workspace on S3 (moto on loopback): ingest, features (Prefect, thread runner), audit,
repair of a damaged part, and training that reads the split and the store from S3 and writes
its run folder to S3 (or locally with --runs-dir).

What differs from a local workspace: there is no lock file (two features runs on one S3
workspace are not refused; do not start two), and no temporary files are written (each object
is one PUT or one multipart upload, visible only when complete); the flow still deletes hidden
``.tmp-`` objects another tool left. The slow tests add the Dask runner and torchrun on S3.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.audit import audit_store, expected_from_config
from schemas.fs import Workspace
from schemas.store import list_parts, read_manifest, view_dir
from tests.reliability.helpers import ORIG_ONLY, flip_embedding_bit, part_path, write_config
from tests.store_snapshots import assert_same_store, store_rows

REPO = Path(__file__).resolve().parents[2]
FEATURES = {**ORIG_ONLY, "shard_size": 10}
TRAIN = ["arch.dim=16", "arch.heads=2", "arch.layers=1", "arch.ffn_dim=32", "data.max_len=8",
         "train.batch_size=32", "train.progress=false", "loss.item_negatives=8",
         "loss.max_item_anchors=32", "eval.batch_size=64", "train.epochs=1"]


def shop_on_s3(tmp_path: Path, uri: str, size: int = 20) -> Workspace:
    """The SYNTHETIC demo shop generated locally, ingested (images copied) and split on S3."""
    from pipeline.demo import DEMO_SPLIT
    from pipeline.demo_shop import ShopConfig, generate_shop
    from pipeline.ingest import ingest
    from pipeline.splits import SplitConfig, run_split

    generate_shop(tmp_path / "shop", ShopConfig(size=size, seed=0))
    ws = Workspace.open(uri)
    ingest("table", tmp_path / "shop", ws, copy_images=True, text_columns=["title",
                                                                           "description"],
           progress=False)
    run_split(ws, SplitConfig.from_dict(DEMO_SPLIT))
    return ws


def test_features_audit_repair_and_training_on_s3(prefect_server, s3_bucket, tmp_path):
    from flows.cli import main as macl
    from flows.features import run_features
    from trainer.config import resolve_config
    from trainer.loop import run_training
    from trainer.runs import RunDir

    uri = f"{s3_bucket}/shop"
    ws = shop_on_s3(tmp_path, uri)
    assert ws.read_bytes("images", ws.listdir("images")[0])  # images live in the bucket
    cfg = write_config(tmp_path / "f.yaml", FEATURES)
    first = run_features(uri, cfg)
    assert sum(v["parts_computed"] for v in first["views"]) == 4
    assert not ws.exists("features", ".lock")  # object stores are not locked
    good = store_rows(ws)

    # a stray temporary object, a part outside the plan and a damaged part: the audit sees the
    # duplicates and the damage, one rerun cleans and repairs, the audit passes again
    expected = expected_from_config(cfg)
    assert audit_store(uri, expected=expected).passed
    assert ws.exists("audit", "image_sha256.parquet")
    ws.write_bytes_atomic(b"partial", *view_dir("image", "orig"), ".part-00000.parquet.tmp-dead")
    ws.write_bytes_atomic(ws.read_bytes(*view_dir("image", "orig"), "part-00001.parquet"),
                          *view_dir("image", "orig"), "part-00007.parquet")
    flip_embedding_bit(ws, part_path(ws, "text", "orig", 1))
    report = audit_store(uri, expected=expected)
    assert report.failed_gates == ["duplicates", "integrity"]  # items 11-20 twice in image/orig
    assert [f.subject for f in report.findings] == [
        f"{s3_bucket}/shop/features/modality=text/view=orig/part-00001.parquet"]
    again = run_features(uri, cfg)
    assert sorted(p.rsplit("/", 1)[1] for p in again["removed"]) == [
        ".part-00000.parquet.tmp-dead", "part-00007.parquet"]
    assert [r.split(":")[0] for r in again["repaired"]] == ["text/orig/part-00001.parquet"]
    assert sum(v["parts_computed"] for v in again["views"]) == 1
    assert list_parts(ws, "image", "orig") == ["part-00000.parquet", "part-00001.parquet"]
    assert_same_store(store_rows(ws), good)
    assert audit_store(uri, expected=expected).passed
    assert all(p.get("sha256") for e in read_manifest(ws).views.values()
               for p in e.parts.values())

    # training reads catalog, split and store from S3; the run folder goes to S3 by default
    run, summary = run_training(resolve_config("macl", None, TRAIN), uri, run_id="macl-s3")
    assert run.location == f"{s3_bucket}/shop/runs/macl-s3"
    for name in ("best.pt", "last.pt", "metrics.jsonl", "summary.json", "report.md"):
        assert run.exists(name), name
    assert macl(["evaluate", "--run", run.location]) == 0
    assert RunDir.open(run.location).read_summary()["test"]["metrics"] == \
        summary["test"]["metrics"]
    local, _ = run_training(resolve_config("pop", None, TRAIN), uri,
                            runs_dir=str(tmp_path / "runs"), run_id="pop-local")
    assert Path(local.location, "summary.json").is_file()  # --runs-dir: the run stays local


def test_uri_options_reach_every_file_of_a_run(s3_server, s3_bucket, tmp_path, monkeypatch):
    """Without AWS_ENDPOINT_URL, the endpoint can ride in the workspace URI: the run folder
    under it keeps the options (the printed locations do not, so credentials never show)."""
    from tests.trainer.synthetic import make_workspace
    from trainer.config import resolve_config
    from trainer.loop import run_training
    from trainer.runs import RunDir

    monkeypatch.delenv("AWS_ENDPOINT_URL")
    host_port = s3_server.split("://", 1)[1]
    uri = f"{s3_bucket}/tiny?endpoint_override={host_port}&scheme=http"
    ws = make_workspace(uri, n_items=12, n_sessions=40)
    assert ws.child_uri("runs", "x") == f"{s3_bucket}/tiny/runs/x?endpoint_override=" \
                                         f"{host_port}&scheme=http"
    cfg = resolve_config("sasrec_mm", None, TRAIN[:-1] + ["train.epochs=1"])
    run, summary = run_training(cfg, uri, run_id="opt")
    assert run.location == f"{s3_bucket}/tiny/runs/opt"  # shown without the options
    reopened = RunDir.open("opt", uri)  # a run id under the workspace URI
    assert reopened.read_summary()["test"]["metrics"] == summary["test"]["metrics"]


@pytest.mark.slow
def test_dask_runner_on_s3_writes_the_thread_runners_store(prefect_server, s3_bucket, tmp_path):
    """Workers of a Dask LocalCluster (separate processes) read images from and write parts
    to S3; the store equals a thread-runner run's (see also
    tests/flows/test_features_flow.py::test_dask_runner_writes_the_same_store, local)."""
    from flows.features import run_features

    cfg = write_config(tmp_path / "f.yaml", {**FEATURES, "task_workers": 2})
    for runner in ("thread", "dask"):
        shop_on_s3(tmp_path / runner, f"{s3_bucket}/{runner}")
        summary = run_features(f"{s3_bucket}/{runner}", cfg, runner=runner)
        assert sum(v["parts_computed"] for v in summary["views"]) == 4
    assert_same_store(store_rows(Workspace.open(f"{s3_bucket}/thread")),
                      store_rows(Workspace.open(f"{s3_bucket}/dask")))
    assert audit_store(f"{s3_bucket}/dask", expected=expected_from_config(cfg)).passed


@pytest.mark.slow
def test_torchrun_on_s3_matches_one_process(s3_bucket, tmp_path):
    """Two DDP ranks (gloo, CPU) read the workspace from S3 and rank 0 writes the run folder
    to S3: the metrics equal a single process's (no dropout, so the numbers are identical)."""
    from tests.trainer.synthetic import make_workspace
    from trainer.config import resolve_config
    from trainer.loop import run_training
    from trainer.runs import RunDir

    uri = f"{s3_bucket}/ddp"
    make_workspace(uri)
    sets = TRAIN + ["arch.dropout=0.0", "arch.attn_dropout=0.0"]
    _, single = run_training(resolve_config("sasrec_mm", None, sets), uri, run_id="single")
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "-m", "flows.cli", "train", "--workspace", uri, "--model", "sasrec_mm",
            "--run-id", "ddp"]
    for o in sets:
        args += ["--set", o]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ})
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = RunDir.open(f"{uri}/runs/ddp")
    assert ddp.read_summary()["test"]["metrics"] == pytest.approx(single["test"]["metrics"],
                                                                  abs=1e-9)
    assert ddp.read_manifest().extra["world_size"] == 2
