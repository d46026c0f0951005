"""read_feature_matrix streams parts into a caller's array (`out`) and still checks keys."""
import numpy as np
import pytest

from schemas.errors import ContractError
from schemas.store import read_feature_matrix, write_feature_part
from tests.trainer.synthetic import _provenance, feature_table


def _write(ws, shard, idx, values, ok, view="orig"):
    table = feature_table("image", view, values, ok, [f"i{i}" for i in idx])
    table = table.set_column(0, "item_idx", __import__("pyarrow").array(idx, "int64"))
    write_feature_part(ws, "image", view, shard, table, _provenance("image", view, values.shape[1]))


def test_out_is_filled_in_place_across_parts_and_stale_rows_are_zeroed(workspace):
    rng = np.random.default_rng(0)
    v = rng.normal(size=(6, 3)).astype(np.float32)
    _write(workspace, 0, [4, 2, 6], v[:3], np.array([True, True, False]))
    _write(workspace, 1, [1, 5, 3], v[3:], np.array([True, False, True]))
    out = np.full((7, 3), 99.0, dtype=np.float16)
    fm = read_feature_matrix(workspace, "image", "orig", 0, 6, out=out)
    assert fm.values is out
    assert fm.mask.tolist() == [False, True, True, True, True, False, False]
    np.testing.assert_allclose(out[[4, 2, 1, 3]], v[[0, 1, 3, 5]].astype(np.float16))
    assert (out[[0, 5, 6]] == 0).all()  # never a stale or fill value where there is no ok row
    plain = read_feature_matrix(workspace, "image", "orig", 0, 6)
    assert plain.values.dtype == np.float32 and (plain.mask == fm.mask).all()
    with pytest.raises(ValueError, match="shape"):
        read_feature_matrix(workspace, "image", "orig", 0, 6, out=np.zeros((7, 4)))


def test_duplicates_across_parts_are_refused(workspace):
    v = np.ones((2, 3), dtype=np.float32)
    _write(workspace, 0, [1, 2], v, np.array([True, True]))
    _write(workspace, 1, [2, 3], v, np.array([True, True]))
    with pytest.raises(ContractError, match="duplicate rows for item_idx"):
        read_feature_matrix(workspace, "image", "orig", 0, 3)
