"""read_feature_matrix streams parts into a caller's array (`out`) and still checks keys."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_each_sample_gets_exactly_its_ok_rows(workspace, data):
    """Parts mixing samples and ok/missing rows, in shuffled order: every sample's matrix holds
    exactly its ok vectors (checked against a row-by-row reference), in any stored dtype."""
    import pyarrow as pa

    n, dim, samples = data.draw(st.integers(1, 9)), data.draw(st.integers(1, 4)), 2
    stored = data.draw(st.sampled_from(["float32", "float16"]))
    ok = np.array(data.draw(st.lists(st.booleans(), min_size=n * samples,
                                     max_size=n * samples)))
    order = np.array(data.draw(st.permutations(range(n * samples))))
    rng = np.random.default_rng(n)
    vec = rng.normal(size=(n * samples, dim)).astype(stored)
    idx, smp = np.tile(np.arange(1, n + 1), samples), np.repeat(np.arange(samples), n)
    emb = [vec[i].tolist() if ok[i] else None for i in order]
    value_type = pa.float16() if stored == "float16" else pa.float32()
    name = f"{stored}-{n}-{dim}"  # a fresh view per shape (the workspace is shared)
    table = pa.table({
        "item_idx": pa.array(idx[order], pa.int64()),
        "item_id": pa.array([f"i{i}" for i in idx[order]]),
        "modality": ["image"] * len(order), "view": [name] * len(order),
        "sample": pa.array(smp[order], pa.int32()),
        "embedding": pa.array([None if e is None else np.array(e, stored) for e in emb],
                              pa.list_(value_type, dim)),
        "source_sha256": ["0" * 64] * len(order),
        "status": ["ok" if ok[i] else "missing" for i in order],
        "reason": [None if ok[i] else "no input" for i in order],
    })
    cut = data.draw(st.integers(0, len(order)))
    info = _provenance("image", name, dim)
    write_feature_part(workspace, "image", name, 0, table.slice(0, cut), info)
    write_feature_part(workspace, "image", name, 1, table.slice(cut), info)
    for s in range(samples):
        fm = read_feature_matrix(workspace, "image", name, s, n, "float32")
        want = np.zeros((n + 1, dim), np.float32)
        want_mask = np.zeros(n + 1, bool)
        for i in range(n * samples):
            if smp[i] == s and ok[i]:
                want[idx[i]], want_mask[idx[i]] = vec[i], True
        np.testing.assert_array_equal(fm.values, want)
        assert fm.mask.tolist() == want_mask.tolist()
