"""The DuckDB audit: each planted fault is reported exactly and fails exactly its gate.

Stores come from ``benchmarks.synthetic_store`` (real catalog, image files, parts written with
``write_feature_part`` and a manifest); faults are planted by rewriting single parts or files.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.synthetic_store import write_synthetic_store
from pipeline.audit import GATES, audit_store, render
from schemas.hashing import sha256_bytes
from schemas.io import read_items, write_items
from schemas.store import (StoreManifest, ViewEntry, read_manifest, read_part_info, view_dir,
                           write_feature_part, write_manifest)
from schemas.tables import read_info

REPO = Path(__file__).resolve().parents[2]
VIEWS = (("image", "orig"), ("image", "hflip"), ("text", "orig"), ("text", "swap"))
N_ITEMS = 6


@pytest.fixture
def store(workspace):
    """6 items, 4 views, 2 parts (items 1-3, 4-6) per view, page CRCs, no part hashes."""
    return write_synthetic_store(workspace, N_ITEMS, views=VIEWS, dim=4, shard_size=3,
                                 record_sha256=False)


def audit(store, **kw):
    kw.setdefault("expected", store.expected)
    return audit_store(store.workspace, **kw)


def failed(report):
    return sorted(report.failed_gates)


def rewrite_part(ws, modality, view, shard, change_rows=None, **info_changes):
    """Rewrite one part through the real writer: ``change_rows(list of row dicts)``.

    The manifest's row count follows (as a features run would rebuild it); a recorded file
    hash does not.
    """
    name = f"part-{shard:05d}.parquet"
    table = pq.read_table(ws.path(*view_dir(modality, view), name))
    info = {**read_part_info(ws, modality, view, name), **info_changes}
    if change_rows:
        rows = table.to_pylist()
        change_rows(rows)
        table = pa.Table.from_pylist(rows, schema=table.schema)
        info["counts"] = {**info.get("counts", {}), "rows": table.num_rows}
    write_feature_part(ws, modality, view, shard, table, info)
    manifest = read_manifest(ws)
    manifest.views[f"{modality}/{view}"].parts[name]["rows"] = table.num_rows
    write_manifest(ws, manifest)
    return ws.path(*view_dir(modality, view), name)


def row_of(rows, item_idx):
    return next(r for r in rows if r["item_idx"] == item_idx)


def test_clean_store_passes(store):
    report = audit(store)
    assert report.passed and report.exit_code == 0
    assert [g.name for g in report.gates] == list(GATES)
    assert report.rows == N_ITEMS * len(VIEWS) and report.parts == report.readable_parts == 8
    assert [(r["modality"], r["view"], r["covered"], r["pct"]) for r in report.coverage] == [
        ("image", "hflip", 6, 100.0), ("image", "orig", 6, 100.0),
        ("text", "orig", 6, 100.0), ("text", "swap", 6, 100.0)]
    assert not report.problems and not report.duplicates and not report.reasons
    assert not report.findings
    assert [(e["modality"], e["stored_dims"], e["views"]) for e in report.encoders] == [
        ("image", [4], ["hflip", "orig"]), ("text", [4], ["orig", "swap"])]


def test_missing_image_lowers_coverage_and_is_reasoned(store):
    ws = store.workspace
    os.remove(ws.path("images/00000/2.jpg"))
    for view in ("orig", "hflip"):
        def drop(rows):
            r = row_of(rows, 2)
            r.update(status="missing", embedding=None, source_sha256=None,
                     reason="image file not found: images/00000/2.jpg")
        rewrite_part(ws, "image", view, 0, drop)
    report = audit(store)
    assert report.passed  # --min-coverage 0: a reasoned gap is allowed
    cov = {(r["modality"], r["view"]): r for r in report.coverage}
    assert cov[("image", "orig")]["covered"] == 5 and cov[("image", "orig")]["lacking_items"] \
        == ["item00000002"]
    assert cov[("text", "orig")]["covered"] == 6
    assert [(r["view"], r["status"], r["reason"], r["rows"]) for r in report.reasons] == [
        ("hflip", "missing", "image file not found", 1),
        ("orig", "missing", "image file not found", 1)]
    strict = audit(store, min_coverage=1.0)
    assert failed(strict) == ["coverage"] and strict.exit_code == 1
    assert "image/orig#0 5/6" in next(g.detail for g in strict.gates if g.name == "coverage")
    assert audit(store, min_coverage=5 / 6).passed


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), None])
def test_nan_or_inf_row(store, bad):
    rewrite_part(store.workspace, "text", "orig", 0,
                 lambda rows: row_of(rows, 3)["embedding"].__setitem__(2, bad))
    report = audit(store)
    assert failed(report) == ["non_finite"]
    assert [(p["problem"], p["view"], p["items"]) for p in report.problems] == [
        ("non_finite", "orig", [3])]


def test_all_zero_row(store):
    rewrite_part(store.workspace, "image", "hflip", 1,
                 lambda rows: row_of(rows, 5).update(embedding=[0.0] * 4))
    report = audit(store)
    assert failed(report) == ["all_zero"]
    assert [(p["problem"], p["modality"], p["view"], p["items"]) for p in report.problems] == [
        ("all_zero", "image", "hflip", [5])]


def test_tiny_but_nonzero_vector_is_not_all_zero(store):
    rewrite_part(store.workspace, "image", "hflip", 1,
                 lambda rows: row_of(rows, 5).update(embedding=[0.0, 0.0, 1e-3, 0.0]))
    assert audit(store).passed


def test_float32_overflow_and_underflow_are_not_faults(store):
    """The float32 fast path squares 3e38 to Inf and 1e-30 to 0: such rows are decided exactly
    in DOUBLE, also beside a null element that makes the fast path give up on the batch."""
    def change(rows):
        row_of(rows, 1)["embedding"][1] = None
        row_of(rows, 2).update(embedding=[3e38, -3e38, 0.0, 1.0])
        row_of(rows, 3).update(embedding=[1e-30, 0.0, 0.0, 0.0])

    rewrite_part(store.workspace, "text", "orig", 0, change)
    report = audit(store)
    assert failed(report) == ["non_finite"]
    assert [(p["problem"], p["view"], p["items"]) for p in report.problems] == [
        ("non_finite", "orig", [1])]


def test_duplicate_key_across_parts(store):
    ws = store.workspace
    extra = pq.read_table(ws.path(*view_dir("image", "orig"), "part-00001.parquet")).to_pylist()

    def add(rows):
        rows.append(row_of(extra, 4))
    rewrite_part(ws, "image", "orig", 0, add)
    report = audit(store)
    assert failed(report) == ["duplicates"]
    assert [(d["view"], d["item_idx"], d["rows"], [Path(p).name for p in d["parts"]])
            for d in report.duplicates] == [
        ("orig", 4, 2, ["part-00000.parquet", "part-00001.parquet"])]
    assert {r["view"]: r["covered"] for r in report.coverage if r["modality"] == "image"} == \
        {"orig": 6, "hflip": 6}


def test_orphan_row(store):
    def add(rows):
        rows.append({**rows[0], "item_idx": 99, "item_id": "ghost"})
    rewrite_part(store.workspace, "text", "swap", 1, add)
    report = audit(store)
    assert failed(report) == ["orphans"]
    assert [(p["problem"], p["view"], p["items"]) for p in report.problems] == [
        ("orphan", "swap", [99])]
    assert all(r["covered"] == 6 for r in report.coverage)


def test_row_whose_item_id_disagrees_with_the_catalog(store):
    rewrite_part(store.workspace, "text", "swap", 0,
                 lambda rows: row_of(rows, 2).update(item_id="someone-else"))
    report = audit(store)
    assert failed(report) == ["orphans"]
    assert [(p["problem"], p["items"]) for p in report.problems] == [("id_mismatch", [2])]


def test_non_ok_row_with_a_vector_breaks_the_row_contract(store):
    rewrite_part(store.workspace, "text", "orig", 1,
                 lambda rows: row_of(rows, 6).update(status="error", reason="boom"))
    report = audit(store)
    assert failed(report) == ["row_contract"]
    assert [(p["problem"], p["items"]) for p in report.problems] == [("invalid", [6])]


def test_edited_text_makes_its_rows_stale(store):
    ws = store.workspace
    items = read_items(ws).to_pylist()
    items[4]["text"] = "a completely new description"
    write_items(ws, pa.Table.from_pylist(items), info={"image_roots": []})
    report = audit(store)
    assert failed(report) == ["stale"]
    assert sorted((p["view"], p["items"]) for p in report.problems) == [
        ("orig", [5]), ("swap", [5])]
    assert {(q["modality"], q["view"]): q["stale"] for q in report.quality} == {
        ("image", "hflip"): 0, ("image", "orig"): 0, ("text", "orig"): 1, ("text", "swap"): 1}
    allowed = audit(store, allow_stale=True)
    assert allowed.passed and "(allowed)" in next(g.detail for g in allowed.gates
                                                  if g.name == "stale")


def test_edited_image_makes_its_rows_stale_despite_the_cache(store):
    ws = store.workspace
    first = audit(store)
    assert first.passed and ws.exists("audit", "image_sha256.parquet")
    assert audit(store).notes[-1].startswith("images: 0 hashed, 6 unchanged")
    Path(ws.path("images/00000/6.jpg")).write_bytes(b"\xff\xd8 a different picture")
    report = audit(store)
    assert failed(report) == ["stale"]
    assert "images: 1 hashed, 5 unchanged" in report.notes[-1]
    assert sorted((p["modality"], p["view"], p["items"]) for p in report.problems) == [
        ("image", "hflip", [6]), ("image", "orig", [6])]


def test_image_deleted_after_extraction_is_stale(store):
    os.remove(store.workspace.path("images/00000/1.jpg"))
    report = audit(store)
    assert failed(report) == ["stale"]
    assert "1 unusable now" in report.notes[-1]
    assert {p["items"][0] for p in report.problems} == {1}


def test_images_outside_the_workspace_need_an_allowed_root(store, tmp_path):
    ws = store.workspace
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    items = read_items(ws).to_pylist()
    src = Path(ws.path(items[0]["image_uri"]))
    (outside / "1.jpg").write_bytes(src.read_bytes())
    items[0]["image_uri"] = str(outside / "1.jpg")
    write_items(ws, pa.Table.from_pylist(items), info={"image_roots": []})
    assert failed(audit(store)) == ["stale"]  # refused path: no current hash
    assert audit(store, allowed_roots=[str(outside)]).passed
    write_items(ws, pa.Table.from_pylist(items), info={"image_roots": [str(outside)]})
    assert audit(store).passed  # the catalog's own image_roots count too


def test_second_encoder(store):
    ws = store.workspace
    other = {**read_part_info(ws, "image", "hflip", "part-00000.parquet")["encoder"],
             "name": "other-cnn", "weights_sha256": "f" * 64}
    for shard in (0, 1):
        rewrite_part(ws, "image", "hflip", shard, encoder=other)
    report = audit(store)
    assert failed(report) == ["provenance"]
    problems = [(f.subject, f.problem) for f in report.findings]
    assert any(s == "image" and "more than one encoder" in p and "other-cnn" in p
               for s, p in problems)
    assert any(s == "image/hflip" and "encoder 'other-cnn'" in p for s, p in problems)
    assert {f.subject for f in report.findings} == {"image", "image/hflip"}
    assert len([e for e in report.encoders if e["modality"] == "image"]) == 2
    # without a config, the two-encoders finding alone still fails the gate
    assert failed(audit(store, expected=None)) == ["provenance"]


def test_view_made_with_other_parameters_than_the_config(store):
    for shard in (0, 1):
        rewrite_part(store.workspace, "text", "swap", shard, view_params={"kind": "swap",
                                                                          "p": 0.9})
    report = audit(store)
    assert failed(report) == ["provenance"]
    [finding] = report.findings
    assert finding.subject == "text/swap" and "view parameters" in finding.problem
    assert '"p": 0.9' in finding.problem and '"p": 0.5' in finding.problem


def test_parts_of_one_view_that_disagree(store):
    rewrite_part(store.workspace, "text", "orig", 1, seed=12345)
    report = audit(store)
    assert failed(report) == ["provenance"]
    assert {f.subject for f in report.findings} == {"text/orig"}
    assert any("disagree" in f.problem for f in report.findings)
    assert any("seed 12345" in f.problem for f in report.findings)


def test_config_view_absent_fails_extra_view_warns(store):
    expected = dict(store.expected)
    swap = expected.pop(("text", "swap"))
    expected[("text", "delete")] = swap
    report = audit(store, expected=expected)
    assert failed(report) == ["provenance"]
    by_subject = {f.subject: f for f in report.findings}
    assert by_subject["text/delete"].severity == "fail"
    assert by_subject["text/swap"].severity == "warn"
    cov = {(r["modality"], r["view"]): r for r in report.coverage}
    assert cov[("text", "delete")]["covered"] == 0  # expected groups appear in coverage
    assert cov[("text", "delete")]["lacking_items"][:2] == ["item00000001", "item00000002"]


def test_float16_parts_read_with_float32_parts(store):
    ws = store.workspace
    for shard in (0, 1):
        path = ws.path(*view_dir("text", "swap"), f"part-0000{shard}.parquet")
        table = pq.read_table(path)
        half = table.column("embedding").cast(pa.list_(pa.float16(), 4))
        table = table.set_column(table.schema.get_field_index("embedding"), "embedding", half)
        write_feature_part(ws, "text", "swap", shard, table,
                           read_part_info(ws, "text", "swap", f"part-0000{shard}.parquet"))
    report = audit(store)
    assert report.passed
    assert {(q["view"], q["max_dim"]) for q in report.quality if q["modality"] == "text"} == {
        ("orig", 4), ("swap", 4)}


def test_part_with_other_columns_is_left_out(store):
    path = store.workspace.path(*view_dir("image", "orig"), "part-00001.parquet")
    table = pq.read_table(path)
    pq.write_table(table.select(["item_id", *[c for c in table.column_names if c != "item_id"]]
                                ).replace_schema_metadata(table.schema.metadata), path)
    report = audit(store)
    assert failed(report) == ["integrity"]
    assert report.findings[0].problem.startswith("has columns ['item_id', 'item_idx'")


def test_stored_dimension_differs_from_the_declared_one(store):
    ws = store.workspace
    path = ws.path(*view_dir("text", "orig"), "part-00001.parquet")
    table = pq.read_table(path)
    wider = pa.array([[1.0] * 5] * table.num_rows, pa.list_(pa.float32(), 5))
    table = table.set_column(table.schema.get_field_index("embedding"), "embedding", wider)
    write_feature_part(ws, "text", "orig", 1, table,
                       read_part_info(ws, "text", "orig", "part-00001.parquet"))
    report = audit(store)
    assert failed(report) == ["dimensions"]
    assert {f.problem for f in report.findings} == {
        "one encoder stores vectors of dimensions [4, 5]"}
    assert [(q["view"], q["min_dim"], q["max_dim"]) for q in report.quality
            if q["modality"] == "text"] == [("orig", 4, 5), ("swap", 4, 4)]


def truncate(path):
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])


def flip_embedding_bit(path):
    meta = pq.ParquetFile(path).metadata.row_group(0)
    emb = next(meta.column(i) for i in range(meta.num_columns)
               if meta.column(i).path_in_schema.startswith("embedding"))
    start = emb.dictionary_page_offset or emb.data_page_offset
    data = bytearray(Path(path).read_bytes())
    data[start + emb.total_compressed_size - 8] ^= 0x10  # inside the last data page's body
    Path(path).write_bytes(bytes(data))


@pytest.mark.parametrize("damage,needle", [(truncate, "unreadable Parquet"),
                                           (flip_embedding_bit, "CRC")])
def test_corrupted_part_is_a_finding_naming_the_file(store, damage, needle):
    ws = store.workspace
    path = ws.path(*view_dir("text", "orig"), "part-00001.parquet")
    damage(path)
    report = audit(store)
    assert failed(report) == ["integrity"]
    [finding] = report.findings
    assert finding.subject == path and needle in finding.problem
    assert report.readable_parts == 7
    cov = {(r["modality"], r["view"]): r["covered"] for r in report.coverage}
    assert cov[("text", "orig")] == 3 and cov[("text", "swap")] == 6


@pytest.mark.parametrize("relabel,needle", [
    (False, "provenance says text/orig but the part lies in text/swap"),
    (True, "holds rows with view 'orig'..'orig', not 'swap'")])
def test_part_in_the_wrong_folder(store, relabel, needle):
    ws = store.workspace
    table = pq.read_table(ws.path(*view_dir("text", "orig"), "part-00000.parquet"))
    if relabel:  # provenance claims the folder's view, the rows say otherwise
        info = {**read_info(table.schema), "view": "swap"}
        meta = {**table.schema.metadata, b"macl.info": json.dumps(info).encode()}
        table = table.replace_schema_metadata(meta)
    stray = ws.path(*view_dir("text", "swap"), "part-00002.parquet")
    pq.write_table(table, stray)
    report = audit(store)
    assert failed(report) == ["integrity"]
    [finding] = report.findings
    assert finding.subject == stray and finding.problem == needle
    assert report.rows == N_ITEMS * len(VIEWS)  # the stray part is left out of every count


def test_manifest_hash_catches_any_change(workspace):
    store = write_synthetic_store(workspace, N_ITEMS, views=VIEWS, dim=4, shard_size=3)
    assert audit(store).passed
    path = rewrite_part(workspace, "image", "orig", 0, created_at="later")  # valid, other bytes
    report = audit(store)
    assert failed(report) == ["integrity"]
    assert report.findings[0].subject == path
    assert "differ from the sha256 the manifest recorded" in report.findings[0].problem


def test_manifest_lists_a_part_that_is_gone(store):
    ws = store.workspace
    os.remove(ws.path(*view_dir("image", "hflip"), "part-00001.parquet"))
    report = audit(store)
    assert failed(report) == ["integrity"]
    [finding] = report.findings
    assert finding.problem == "listed in the manifest but missing"
    assert finding.subject.endswith("modality=image/view=hflip/part-00001.parquet")


def test_unreadable_manifest_is_a_finding(store):
    Path(store.workspace.path("features", "_manifest.json")).write_text("{ not json")
    report = audit(store)
    assert failed(report) == ["integrity"]
    assert report.findings[0].subject.endswith("_manifest.json")


def test_samples_are_audited_separately(workspace):
    store = write_synthetic_store(workspace, 4, views=(("text", "swap"),), dim=3, samples=2,
                                  shard_size=4, record_sha256=False)
    rewrite_part(workspace, "text", "swap", 0,
                 lambda rows: next(r for r in rows if r["item_idx"] == 2 and r["sample"] == 1)
                 .update(status="error", embedding=None, reason="augmenter failed: x"))
    report = audit(store, min_coverage=1.0)
    assert [(r["sample"], r["covered"], r["lacking_items"]) for r in report.coverage] == [
        (0, 4, []), (1, 3, ["item00000002"])]
    assert failed(report) == ["coverage"]
    assert report.reasons[0]["reason"] == "augmenter failed"
    assert report.reasons[0]["example"] == "augmenter failed: x"


def test_limit_caps_the_lists(store):
    ws = store.workspace
    items = read_items(ws).to_pylist()
    for item in items:
        item["text"] = item["text"] + " (edited)"
    write_items(ws, pa.Table.from_pylist(items), info={"image_roots": []})
    report = audit(store, limit=2)
    assert {tuple(p["items"]) for p in report.problems} == {(1, 2)}
    assert {q["stale"] for q in report.quality if q["modality"] == "text"} == {6}


def test_arrow_source_reads_the_same_numbers(store):
    ws = store.workspace
    rewrite_part(ws, "text", "orig", 0,
                 lambda rows: row_of(rows, 1)["embedding"].__setitem__(0, float("nan")))
    flip_embedding_bit(ws.path(*view_dir("image", "orig"), "part-00001.parquet"))
    a = audit(store, source="duckdb", min_coverage=0.9)
    b = audit(store, source="arrow", min_coverage=0.9)
    for field in ("coverage", "quality", "problems", "reasons", "encoders", "provenance"):
        assert getattr(a, field) == getattr(b, field), field
    assert failed(a) == failed(b) == ["coverage", "integrity", "non_finite"]


def test_workspace_on_object_storage(tmp_path, monkeypatch):
    """An S3 workspace (moto on loopback): parts, catalog, images and the hash cache all go
    through pyarrow's filesystem; the paths shown are s3://bucket/key."""
    import boto3
    from moto.server import ThreadedMotoServer

    from schemas.fs import Workspace

    for key, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        boto3.client("s3", endpoint_url=f"http://{host}:{port}").create_bucket(Bucket="macl")
        ws = Workspace.open(f"s3://macl/ws?endpoint_override={host}:{port}&scheme=http")
        store = write_synthetic_store(ws, 4, views=VIEWS[1:3], dim=3, shard_size=2)
        assert audit(store).passed
        truncate_s3 = ws.path(*view_dir("text", "orig"), "part-00001.parquet")
        data = ws.fs.open_input_stream(truncate_s3).read()
        with ws.fs.open_output_stream(truncate_s3) as out:
            out.write(data[:100])
        report = audit(store)
        assert failed(report) == ["integrity"]
        assert report.findings[0].subject == "s3://macl/ws/features/modality=text/view=orig/" \
                                             "part-00001.parquet"
        assert "images: 0 hashed, 4 unchanged" in report.notes[-1]
        assert [r["covered"] for r in report.coverage] == [4, 2]
        assert "read_parquet(['s3://macl/ws/features/modality=image/view=hflip/part-00000" \
            in report.sql
    finally:
        server.stop()


def test_paths_with_glob_characters_are_read_literally(tmp_path):
    from schemas.fs import Workspace

    ws = Workspace.open(tmp_path / "shop[1]*")
    store = write_synthetic_store(ws, 4, views=VIEWS[2:], dim=3, shard_size=2)
    report = audit(store)
    assert report.passed and report.rows == 8


def test_empty_or_missing_inputs_are_contract_errors(workspace):
    from schemas.errors import ContractError

    with pytest.raises(ContractError, match="file not found"):
        audit_store(workspace)
    write_items(workspace, pa.table({"item_id": ["a"], "item_idx": [1]}))
    with pytest.raises(ContractError, match="no feature parts"):
        audit_store(workspace)


def run_script(script):
    """Execute the --sql script as an analyst would, statement group by statement group."""
    con = duckdb.connect()
    chunks = script.split("\n-- name: ")
    con.execute(chunks[0])
    results = {}
    for chunk in chunks[1:]:
        name, sql = chunk.split("\n", 1)
        cur = con.execute(sql)
        if cur.description:
            cols = [d[0] for d in cur.description]
            results[name] = [dict(zip(cols, r)) for r in cur.fetchall()]
    return results


@pytest.mark.parametrize("corrupt", [False, True])
def test_sql_script_gives_the_same_numbers(store, corrupt):
    ws = store.workspace
    rewrite_part(ws, "image", "orig", 1, lambda rows: row_of(rows, 5).update(
        status="missing", embedding=None, reason="image file not found: 'x.jpg'"))
    if corrupt:
        truncate(ws.path(*view_dir("text", "swap"), "part-00000.parquet"))
    report = audit(store)
    script = report.sql
    assert "$n_items" not in script and "$limit" not in script  # parameters filled in
    assert ("modality=*/view=*/part-*.parquet" in script) is not corrupt
    results = run_script(script)
    assert results["coverage"] == [
        {k: r[k] for k in ("modality", "view", "sample", "items", "covered")} |
        {"pct": pytest.approx(r["pct"])} for r in report.coverage]
    assert results["quality"] == report.quality
    assert results["reasons"] == report.reasons
    assert results["encoders"] == report.encoders
    assert [r["covered"] for r in results["coverage"]] == (
        [6, 5, 6, 3] if corrupt else [6, 5, 6, 6])


@given(st.lists(st.tuples(st.integers(1, 8), st.sampled_from(["ok", "ok", "missing"])),
                max_size=14),
       st.integers(1, 7))
@settings(max_examples=12, deadline=None)
def test_counts_match_a_brute_force_count(tmp_path_factory, rows, split):
    """Coverage, duplicates and orphans equal a direct count over random rows (6 items)."""
    from schemas.fs import Workspace

    ws = Workspace.open(tmp_path_factory.mktemp("ws"))
    write_items(ws, pa.table({"item_id": [f"i{i}" for i in range(1, 7)],
                              "item_idx": list(range(1, 7)),
                              "text": [f"text {i}" for i in range(1, 7)]}))
    info = {"modality": "text", "view": "orig", "shard": 0, "cache_key": "k",
            "encoder": {"name": "e", "weights_sha256": "w", "dim": 2}, "view_params": {},
            "seed": 0, "samples": 1, "versions": {}, "created_at": "now"}
    for shard, chunk in enumerate((rows[:split], rows[split:])):
        if not chunk:
            continue
        write_feature_part(ws, "text", "orig", shard, pa.table({
            "item_idx": [i for i, _ in chunk], "item_id": [f"i{i}" for i, _ in chunk],
            "modality": ["text"] * len(chunk), "view": ["orig"] * len(chunk),
            "sample": pa.array([0] * len(chunk), pa.int32()),
            "embedding": pa.array([[1.0, float(i)] if s == "ok" else None for i, s in chunk],
                                  pa.list_(pa.float32(), 2)),
            "source_sha256": [sha256_bytes(f"text {i}".encode()) for i, _ in chunk],
            "status": [s for _, s in chunk],
            "reason": [None if s == "ok" else "empty text" for _, s in chunk]}),
            {**info, "shard": shard})
    if not rows:
        return
    report = audit_store(ws)
    in_catalog = [(i, s) for i, s in rows if i <= 6]
    [cov] = report.coverage
    assert cov["covered"] == len({i for i, s in in_catalog if s == "ok"})
    assert sorted(cov["lacking_items"]) == sorted(
        f"i{i}" for i in set(range(1, 7)) - {i for i, s in in_catalog if s == "ok"})
    [q] = report.quality
    assert q["duplicates"] == len(in_catalog) - len({i for i, _ in in_catalog})
    assert q["orphans"] == len(rows) - len(in_catalog)
    assert (q["ok"], q["missing"]) == (sum(s == "ok" for _, s in rows),
                                       sum(s == "missing" for _, s in rows))


# --------------------------------------------------------------------------- CLI


def macl(*args):
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_cli_formats_and_exit_codes(store, tmp_path):
    ws = store.workspace.root
    ok = macl("audit", "--workspace", ws, "--no-config", "--format", "json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["passed"] is True
    rewrite_part(store.workspace, "text", "orig", 0,
                 lambda rows: row_of(rows, 1).update(embedding=[0.0] * 4))
    table = macl("audit", "--workspace", ws, "--no-config")
    assert table.returncode == 1
    assert "audit FAILED (all_zero)" in table.stdout and "Coverage" in table.stdout
    md = macl("audit", "--workspace", ws, "--no-config", "--format", "markdown",
              "--min-coverage", "1")
    assert md.returncode == 1 and "| modality | view |" in md.stdout
    sql = macl("audit", "--workspace", ws, "--no-config", "--sql")
    assert sql.returncode == 0 and sql.stdout.startswith("-- `macl audit --sql`")
    assert run_script(sql.stdout)["coverage"][0]["covered"] == 6
    bad = macl("audit", "--workspace", ws, "--min-coverage", "95")
    assert bad.returncode == 2 and "fraction" in bad.stderr
    missing = macl("audit", "--workspace", str(tmp_path / "nowhere"), "--no-config")
    assert missing.returncode == 2 and "items.parquet" in missing.stderr


def test_render_formats(store):
    report = audit(store, min_coverage=1.0)
    text = render(report, "table")
    assert text.splitlines()[0] == f"macl audit of {report.workspace}"
    assert text.rstrip().endswith("audit PASSED")
    md = render(report, "markdown")
    assert md.startswith("# macl audit of") and "## Gates" in md
    data = json.loads(render(report, "json"))
    assert data["passed"] is True and data["failed_gates"] == []
    assert {g["name"] for g in data["gates"]} == set(GATES)
    with pytest.raises(ValueError, match="format"):
        render(report, "html")


def test_synthetic_store_is_a_real_store(workspace):
    """The generator writes what extraction writes: a manifest and readable provenance."""
    store = write_synthetic_store(workspace, 5, views=VIEWS[:2], dim=3, shard_size=2)
    manifest = read_manifest(workspace)
    assert isinstance(manifest, StoreManifest) and isinstance(manifest.views["image/orig"],
                                                              ViewEntry)
    assert sorted(manifest.views["image/orig"].parts) == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert all("sha256" in p for p in manifest.views["image/orig"].parts.values())
    assert read_info(pq.read_schema(workspace.path("catalog", "items.parquet")))[
        "image_roots"] == []
    assert store.rows == 10 and np.isclose(store.expected[("image", "orig")]["view_params"]["p"], 1)
    write_manifest(workspace, manifest)
