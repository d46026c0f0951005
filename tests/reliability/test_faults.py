"""Faults: damaged feature parts are found by the audit and repaired by rerunning the flow.

Kill -9 of the features flow at random points and kill -9 of training followed by ``--resume``
are tested where those pieces live (see docs/readme/reliability.md):
``tests/flows/test_features_flow.py::test_kill_and_rerun_gives_the_uninterrupted_store``
(default suite: two chained kills through the CLI) and ``::test_kill_and_rerun_many_times``
(slow: 20 trials), ``tests/trainer/test_training.py::test_resume_after_kill_reaches_the_same_final_metrics``.
"""
from pipeline.audit import audit_store, expected_from_config
from schemas.fs import Workspace
from schemas.store import read_manifest
from tests.pipeline.tiny_catalog import build_catalog
from tests.reliability.helpers import (ORIG_ONLY, flip_embedding_bit, part_path, stamps,
                                       truncate_part, write_config)
from tests.store_snapshots import assert_same_store, store_rows


def integrity_subjects(report) -> list[str]:
    return sorted(f.subject for f in report.findings if f.check == "integrity")


def test_damaged_parts_are_found_by_the_audit_and_repaired_by_a_rerun(prefect_server, tmp_path):
    from flows.features import run_features
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    ws = build_catalog(tmp_path / "ws", 4)
    cfg = write_config(tmp_path / "f.yaml", ORIG_ONLY)
    expected = expected_from_config(cfg)
    run_features(ws.root, cfg)
    good = store_rows(ws)
    manifest = read_manifest(ws)
    assert all(len(p.get("sha256", "")) == 64 for e in manifest.views.values()
               for p in e.parts.values())  # the flow records every part's hash
    assert audit_store(ws, expected=expected).passed

    # 1. with recorded hashes and Prefect's cache of the finished tasks: the run's own check of
    #    the store after the (cached) tasks must not trust the names
    truncated, flipped = part_path(ws, "image", "orig", 0), part_path(ws, "text", "orig", 1)
    truncate_part(ws, truncated)
    flip_embedding_bit(ws, flipped)
    report = audit_store(ws, expected=expected)
    assert report.failed_gates == ["integrity"]
    assert integrity_subjects(report) == sorted([truncated, flipped])
    before = stamps(ws)
    summary = run_features(ws.root, cfg)
    assert sorted(r.split(":")[0] for r in summary["repaired"]) == [
        "image/orig/part-00000.parquet", "text/orig/part-00001.parquet"]
    after = stamps(ws)
    assert {k for k in after if after[k] != before.get(k)} == {
        ("image", "orig", "part-00000.parquet"), ("text", "orig", "part-00001.parquet")}
    assert_same_store(store_rows(ws), good)
    assert audit_store(ws, expected=expected).passed

    # 2. no recorded hashes (manifest lost) and no Prefect cache: the tasks themselves check the
    #    page CRCs of the parts they would skip
    ws.delete("features", "_manifest.json")
    flip_embedding_bit(ws, part_path(ws, "image", "orig", 1))
    report = audit_store(ws, expected=expected)
    assert integrity_subjects(report) == [part_path(ws, "image", "orig", 1)]
    assert "CRC" in report.findings[0].problem
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: str(tmp_path / "wiped")}):
        summary = run_features(ws.root, cfg)
    assert [r.split(":")[0] for r in summary["repaired"]] == ["image/orig/part-00001.parquet"]
    assert sum(v["parts_computed"] for v in summary["views"]) == 1
    assert_same_store(store_rows(ws), good)
    assert audit_store(ws, expected=expected).passed


def test_readers_refuse_a_bit_flipped_part_instead_of_loading_wrong_numbers(tmp_path):
    """The trainer's reader checks page CRCs: a flipped bit is an error naming the file."""
    import pytest

    from benchmarks.synthetic_store import write_synthetic_store
    from schemas.errors import ContractError
    from schemas.store import read_feature_matrix, read_view_rows

    ws = Workspace.open(tmp_path / "ws")
    write_synthetic_store(ws, 6, views=(("text", "orig"),), dim=4, shard_size=3,
                          image_files=False)
    path = part_path(ws, "text", "orig", 1)
    flip_embedding_bit(ws, path)
    with pytest.raises(ContractError, match="CRC") as err:
        read_feature_matrix(ws, "text", "orig", 0, 6)
    assert err.value.path == path
    with pytest.raises(ContractError, match="CRC"):
        read_view_rows(ws, "text", "orig")
