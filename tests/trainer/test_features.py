"""Feature tables keyed by item_idx with mask bits; the memory-mapped path gives the same data."""
import numpy as np
import pytest

from schemas.errors import ContractError
from schemas.store import write_feature_part
from tests.trainer.synthetic import _provenance, feature_table, make_workspace
from trainer.features import load_feature_bank


def _store(ws, n=6, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, dim)).astype(np.float32)
    ok = np.array([True, False, True, True, True, False])
    ids = [f"i{i}" for i in range(1, n + 1)]
    table = feature_table("image", "orig", values, ok, ids)
    order = rng.permutation(n)  # rows on disk in no particular order
    write_feature_part(ws, "image", "orig", 0, table.take(order), _provenance("image", "orig", dim))
    return values, ok


def test_rows_land_at_their_item_idx_and_missing_items_are_masked(workspace):
    values, ok = _store(workspace)
    bank = load_feature_bank(workspace, 6, dtype="float32")
    v, m = bank.values["image"][0].numpy(), bank.masks["image"][0].numpy()
    assert m.tolist() == [False, *ok.tolist()]
    np.testing.assert_array_equal(v[1:][ok], values[ok])
    assert bank.coverage() == {"image/orig/0": pytest.approx(4 / 6)}


def test_memory_mapped_tables_equal_in_memory_ones_and_are_reused(workspace, tmp_path):
    _store(workspace)
    mem = load_feature_bank(workspace, 6, dtype="float16")
    mapped = load_feature_bank(workspace, 6, dtype="float16", mmap_threshold_mb=0,
                               cache_dir=str(tmp_path / "cache"))
    assert mapped.mapped and not mem.mapped
    m = mem.masks["image"]
    assert (mapped.masks["image"] == m).all()
    assert (mapped.values["image"][m] == mem.values["image"][m]).all()
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    again = load_feature_bank(workspace, 6, dtype="float16", mmap_threshold_mb=0,
                              cache_dir=str(tmp_path / "cache"))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == files
    assert (again.values["image"][m] == mem.values["image"][m]).all()


def test_fusion_view_order_and_pool_selection(tmp_path):
    ws = make_workspace(tmp_path / "ws", n_items=12, n_sessions=10)
    bank = load_feature_bank(ws, 12, views=["image/noise"])
    assert [k.name for k in bank.keys["image"]] == ["image/orig/0", "image/noise/0"]
    assert [k.name for k in bank.keys["text"]] == ["text/orig/0"]  # fusion view always loaded
    with pytest.raises(ContractError, match="image/blur"):
        load_feature_bank(ws, 12, views=["image/blur"])
    with pytest.raises(ContractError, match="fusion view 'raw'"):
        load_feature_bank(ws, 12, fusion_view="raw")
    with pytest.raises(ContractError, match="audio"):
        load_feature_bank(ws, 12, modalities=["audio"])
