"""``items_from_split``: only the items a split keeps go through the encoders."""
import pyarrow as pa
import pytest

from pipeline.features import (FeaturesConfig, compute_part, image_resolver, plan_run,
                               source_material, split_items)
from schemas.errors import ContractError
from schemas.io import write_split
from schemas.store import read_feature_matrix, read_view_rows
from tests.pipeline.tiny_catalog import build_catalog


def _split(ws, name, cases, n_items):
    for part, rows in cases.items():
        table = pa.table({"session_id": [f"{part}{i}" for i in range(len(rows))],
                          "items": pa.array([r[0] for r in rows], pa.list_(pa.int64())),
                          "target": pa.array([r[1] for r in rows], pa.int64())})
        write_split(ws, name, part, table, {}, n_items)


def _config(**over):
    return FeaturesConfig.from_dict({
        "shard_size": 4, "loader_workers": 0, **over,
        "image": {"batch_size": 2, "device": "cpu", "views": {"orig": {}}},
        "text": {"batch_size": 2, "device": "cpu", "views": {}}})


def test_items_outside_the_split_are_missing_with_a_reason_and_keys_follow_the_split(tmp_path):
    ws = build_catalog(tmp_path / "ws", 6)
    _split(ws, "s", {"train": [([2], 4)], "valid": [([4], 2)], "test": [([6, 2], 4)]}, 6)
    assert split_items(ws, "s") == {2, 4, 6}
    cfg = _config(items_from_split="s")
    plan = plan_run(ws, cfg)
    for p in plan.parts:
        compute_part(ws, cfg, p)
    rows = read_view_rows(ws, "image", "orig").to_pydict()
    assert rows["item_idx"] == [1, 2, 3, 4, 5, 6]
    assert rows["status"] == ["missing", "ok", "missing", "ok", "missing", "ok"]
    assert rows["reason"][0] == "not in split 's' (items_from_split)"
    assert all(h is not None for h in rows["source_sha256"])  # hashes stay for the audit
    assert read_feature_matrix(ws, "image", "orig", 0, 6).mask.tolist() == \
        [False, False, True, False, True, False, True]
    # text keys see the same selection (an item without text keeps its own reason)
    from schemas.io import read_items

    items = read_items(ws)
    text = source_material(ws, items, "text", image_resolver(ws, items.schema), 0,
                           split_items(ws, "s"), "s")
    assert [row[2] for row in text] == ["missing", "ok", "missing", "ok", "missing", "ok"]
    # item 1 joins the split: only the parts of its shard get new keys (a rerun recomputes them)
    _split(ws, "s", {"train": [([1], 2)]}, 6)
    before = {(p.modality, p.shard): p.cache_key for p in plan.parts}
    after = {(p.modality, p.shard): p.cache_key for p in plan_run(ws, cfg).parts}
    assert [k for k in before if before[k] != after[k]] == [("image", 0)]


def test_unknown_split_is_refused_before_work(tmp_path):
    ws = build_catalog(tmp_path / "ws", 2)
    with pytest.raises(ContractError, match="no split 'nope'"):
        plan_run(ws, _config(items_from_split="nope"))
