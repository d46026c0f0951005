import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.errors import ContractError
from schemas.fs import Workspace
from schemas.ids import assign_item_idx
from schemas.io import (
    read_events,
    read_items,
    read_split,
    write_events,
    write_items,
    write_split,
)
from schemas.tables import SCHEMA_VERSION, feature_schema, stamp
from schemas.validate import coerce_timestamps, validate_feature_rows


def items_table(ids, **extra):
    mapping = assign_item_idx(ids)
    cols = {"item_id": list(ids), "item_idx": [mapping[i] for i in ids]}
    cols.update(extra)
    return pa.table(cols)


def events_table(item_ids, sessions=None):
    n = len(item_ids)
    return pa.table(
        {
            "session_id": sessions or [f"s{i // 2}" for i in range(n)],
            "item_id": item_ids,
            "timestamp": coerce_timestamps(list(range(n)), "ev", "timestamp", unit="s"),
            "seq": list(range(n)),
        }
    )


def test_items_roundtrip_fills_optional_columns(workspace):
    written = write_items(workspace, items_table(["b", "a", "c"], title=["B", "A", "C"]))
    back = read_items(workspace)
    assert back.equals(written)
    assert back.column("item_idx").to_pylist() == [1, 2, 3]
    assert back.column("item_id").to_pylist() == ["a", "b", "c"]
    assert back.column("text").null_count == 3


def test_missing_column_names_file_and_column(workspace):
    with pytest.raises(ContractError) as err:
        write_items(workspace, pa.table({"item_idx": [1]}))
    assert "items.parquet" in str(err.value) and "item_id" in str(err.value)


def test_duplicate_item_id_names_rows(workspace):
    t = pa.table({"item_id": ["a", "b", "a"], "item_idx": [1, 2, 3]})
    with pytest.raises(ContractError) as err:
        write_items(workspace, t)
    assert err.value.column == "item_id" and err.value.rows == [2]
    assert "duplicate" in str(err.value) and "'a'" in str(err.value)


def test_null_key_and_non_dense_idx(workspace):
    with pytest.raises(ContractError, match="null values"):
        write_items(workspace, pa.table({"item_id": ["a", None], "item_idx": [1, 2]}))
    with pytest.raises(ContractError, match="dense"):
        write_items(workspace, pa.table({"item_id": ["a", "b"], "item_idx": [1, 5]}))


def test_wrong_type_names_first_bad_rows(workspace):
    t = pa.table({"item_id": ["a", "b", "c"], "item_idx": [1, 2, 3],
                  "price": ["1.5", "cheap", "2"]})
    with pytest.raises(ContractError) as err:
        write_items(workspace, t)
    assert err.value.column == "price" and err.value.rows == [1]
    assert "'cheap'" in str(err.value)


def test_events_for_unknown_items(workspace):
    items = write_items(workspace, items_table(["a", "b"]))
    with pytest.raises(ContractError) as err:
        write_events(workspace, events_table(["a", "zz", "b"]), items)
    assert err.value.column == "item_id" and err.value.rows == [1]


def test_events_roundtrip(workspace):
    items = write_items(workspace, items_table(["a", "b"]))
    written = write_events(workspace, events_table(["a", "b", "a"]), items)
    assert read_events(workspace, items).equals(written)


def test_unparsable_and_negative_timestamps():
    with pytest.raises(ContractError) as err:
        coerce_timestamps(["2020-01-01", "yesterday", "2020-01-03"], "t.csv", "t_dat")
    assert err.value.rows == [1] and "t.csv" in str(err.value) and "t_dat" in str(err.value)
    with pytest.raises(ContractError, match="negative"):
        coerce_timestamps([5, -1], "r.csv", "ts", unit="s")
    with pytest.raises(ContractError, match="1970"):
        coerce_timestamps(["1969-12-31"], "r.csv", "ts")
    ok = coerce_timestamps(["2020-01-01", "2020-01-01T12:00:00+02:00"], "x", "ts")
    assert ok.to_pylist()[1] == dt.datetime(2020, 1, 1, 10, tzinfo=dt.timezone.utc)


def test_future_schema_version_is_refused(workspace):
    write_items(workspace, items_table(["a"]))
    path = workspace.path("catalog", "items.parquet")
    t = pq.read_table(path)
    meta = dict(t.schema.metadata)
    meta[b"macl.schema_version"] = str(SCHEMA_VERSION + 1).encode()
    pq.write_table(t.replace_schema_metadata(meta), path)
    with pytest.raises(ContractError, match="newer than this macl"):
        read_items(workspace)


def test_corrupt_parquet_is_named(workspace):
    workspace.write_bytes_atomic(b"PAR1 not really", "catalog", "items.parquet")
    with pytest.raises(ContractError, match="not a readable Parquet"):
        read_items(workspace)


def test_split_roundtrip_and_range(workspace):
    t = pa.table({"session_id": ["s1", "s2"], "items": [[1, 2], [3]], "target": [3, 1]})
    write_split(workspace, "macl", "train", t, {"seed": 1}, n_items=3)
    back, info = read_split(workspace, "macl", "train")
    assert back.column("items").to_pylist() == [[1, 2], [3]]
    assert info["protocol"] == "macl" and info["seed"] == 1 and info["n_items"] == 3
    with pytest.raises(ContractError, match="outside 1..3"):
        write_split(workspace, "macl", "test", t.set_column(2, "target", pa.array([4, 1])),
                    {}, n_items=3)
    with pytest.raises(ContractError, match="empty input"):
        write_split(workspace, "macl", "test",
                    pa.table({"session_id": ["s"], "items": [[]], "target": [1]}), {}, n_items=3)


def test_feature_rows_contract():
    schema = stamp(feature_schema(2), "features")
    rows = pa.table(
        {"item_idx": [1, 2], "item_id": ["a", "b"], "modality": ["text"] * 2,
         "view": ["orig"] * 2, "sample": pa.array([0, 0], pa.int32()),
         "embedding": pa.array([[0.1, 0.2], None], pa.list_(pa.float32(), 2)),
         "source_sha256": ["x", None], "status": ["ok", "missing"], "reason": [None, "no text"]},
        schema=schema)
    validate_feature_rows(rows, "p")
    bad = rows.set_column(rows.schema.get_field_index("reason"), "reason", pa.array([None, None],
                                                                                       pa.string()))
    with pytest.raises(ContractError, match="reason"):
        validate_feature_rows(bad, "p")


def test_atomic_write_leaves_no_temp_files(tmp_path):
    ws = Workspace.open(tmp_path)
    ws.write_json_atomic({"a": 1}, "x", "m.json")
    ws.write_json_atomic({"a": 2}, "x", "m.json")
    assert ws.listdir("x") == ["m.json"] and ws.read_json("x", "m.json") == {"a": 2}


ids_strategy = st.lists(st.one_of(st.integers(0, 10**6).map(str),
                                  st.text("abcxyz", min_size=1, max_size=6)), max_size=40)


@given(ids_strategy, ids_strategy)
@settings(max_examples=100, deadline=None)
def test_item_idx_is_dense_stable_and_appends(first, second):
    m1 = assign_item_idx(first)
    assert sorted(m1.values()) == list(range(1, len(set(first)) + 1))
    assert assign_item_idx(list(reversed(first))) == m1  # order of source rows is irrelevant
    m2 = assign_item_idx(second, existing=m1)
    assert all(m2[k] == v for k, v in m1.items())  # assigned once, stable
    assert sorted(m2.values()) == list(range(1, len(set(first) | set(second)) + 1))
    assert all(m2[k] > len(m1) for k in set(second) - set(first))  # new items appended


def test_numeric_ids_sort_numerically():
    assert assign_item_idx(["10", "9", "0100"]) == {"9": 1, "10": 2, "0100": 3}


@given(st.lists(st.tuples(st.text(min_size=1, max_size=8),
                          st.one_of(st.none(), st.text(max_size=30)),
                          st.one_of(st.none(), st.floats(allow_nan=False, width=64))),
                unique_by=lambda r: r[0], min_size=1, max_size=30))
@settings(max_examples=50, deadline=None)
def test_items_roundtrip_property(tmp_path_factory, rows):
    ws = Workspace.open(tmp_path_factory.mktemp("ws"))
    ids = [r[0] for r in rows]
    t = items_table(ids, text=[r[1] for r in rows], price=[r[2] for r in rows])
    written = write_items(ws, t)
    back = read_items(ws)
    assert back.equals(written)
    by_id = dict(zip(back.column("item_id").to_pylist(), back.column("text").to_pylist()))
    assert by_id == {r[0]: r[1] for r in rows}
    assert np.array_equal(np.sort(back.column("item_idx").to_numpy()), np.arange(1, len(rows) + 1))


def _feature_rows(modality, view, idx, dim=3, status=None):
    n = len(idx)
    status = status or ["ok"] * n
    emb = [[float(i)] * dim if s == "ok" else None for i, s in zip(idx, status)]
    return pa.table({
        "item_idx": idx, "item_id": [f"i{i}" for i in idx], "modality": [modality] * n,
        "view": [view] * n, "sample": pa.array([0] * n, pa.int32()),
        "embedding": pa.array(emb, pa.list_(pa.float32(), dim)),
        "source_sha256": ["h"] * n, "status": status,
        "reason": [None if s == "ok" else "no image" for s in status]})


PROV = {"modality": "image", "view": "orig", "shard": 0, "cache_key": "k", "encoder": {"name": "e"},
        "view_params": {}, "seed": 0, "samples": 1, "versions": {}, "created_at": "now"}


def test_feature_matrix_is_keyed_by_item_idx_not_row_order(workspace):
    from schemas.store import read_feature_matrix, read_view_info, write_feature_part

    write_feature_part(workspace, "image", "orig", 1, _feature_rows("image", "orig", [5, 3]), PROV)
    write_feature_part(workspace, "image", "orig", 0,
                       _feature_rows("image", "orig", [2, 1], status=["ok", "missing"]), PROV)
    fm = read_feature_matrix(workspace, "image", "orig", 0, n_items=6)
    assert fm.values.shape == (7, 3)
    assert fm.mask.tolist() == [False, False, True, True, False, True, False]
    assert fm.values[5, 0] == 5 and fm.values[3, 0] == 3 and fm.values[2, 0] == 2
    assert not fm.values[1].any()  # a missing row is never filled
    assert read_view_info(workspace, "image", "orig")["cache_key"] == "k"


def test_feature_matrix_refuses_duplicates(workspace):
    from schemas.store import read_feature_matrix, write_feature_part

    write_feature_part(workspace, "text", "orig", 0, _feature_rows("text", "orig", [1, 2]),
                       {**PROV, "modality": "text"})
    write_feature_part(workspace, "text", "orig", 1, _feature_rows("text", "orig", [2]),
                       {**PROV, "modality": "text"})
    with pytest.raises(ContractError, match="duplicate"):
        read_feature_matrix(workspace, "text", "orig", 0, n_items=2)


def test_feature_part_rejects_wrong_view(workspace):
    from schemas.store import write_feature_part

    with pytest.raises(ContractError, match="another modality/view"):
        write_feature_part(workspace, "image", "hflip", 0, _feature_rows("image", "orig", [1]),
                           PROV)


def test_display_drops_uri_options_but_uri_keeps_them():
    ws = Workspace.open("s3://bucket/ws?region=us-east-1&endpoint_override=localhost:9")
    assert ws.display("features", "x.parquet") == "s3://bucket/ws/features/x.parquet"
    assert "endpoint_override" in ws.uri
