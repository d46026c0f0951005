"""Fuzzing the ingest adapters and the store readers with damaged bytes (hypothesis).

Each example takes a valid source file (or a valid store file), damages its bytes (flipped
bits, truncation, inserted or overwritten runs, a duplicated or dropped line) and feeds it to
the real reader. The invariant: the reader either raises ``ContractError`` (a message naming
the file) or succeeds with a result that passes the contracts; for feature parts a success must
also return exactly the stored numbers (a damaged part never yields wrong vectors). Any other
exception is a crash and fails the test. The default suite runs a fixed, derandomised sample;
the ``slow`` variant runs many more examples.
"""
from __future__ import annotations

import json
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.errors import ContractError
from schemas.fs import Workspace

FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def damaged(draw, data: bytes) -> bytes:
    """``data`` with one random kind of damage."""
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "overwrite", "lines"]))
    n = len(data)
    if kind == "flip":
        flips = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 7)), min_size=1,
                              max_size=4))
        out = bytearray(data)
        for pos, bit in flips:
            out[pos] ^= 1 << bit
        return bytes(out)
    if kind == "truncate":
        return data[:draw(st.integers(0, n - 1))]
    if kind == "insert":
        pos = draw(st.integers(0, n))
        return data[:pos] + draw(st.binary(min_size=1, max_size=16)) + data[pos:]
    if kind == "overwrite":
        pos = draw(st.integers(0, n - 1))
        junk = draw(st.binary(min_size=1, max_size=16))
        return data[:pos] + junk + data[pos + len(junk):]
    lines = data.split(b"\n")
    i = draw(st.integers(0, len(lines) - 1))
    if draw(st.booleans()):
        lines.insert(i, lines[i])
    else:
        del lines[i]
    return b"\n".join(lines)


# ------------------------------------------------------------------ ingest adapters


def _table_source(root: Path) -> dict:
    from tests.pipeline.ingest_helpers import tiny_image, write_csv

    write_csv(root / "events.csv", ["visit", "sku", "when"],
              [["v1", "A", "1700000300"], ["v1", "B", "1700000100"], ["v2", "A", "1700000500"]])
    write_csv(root / "items.csv", ["sku", "name", "cost", "picture"],
              [["A", "Red mug", "9.5", "pics/a.jpg"], ["B", "Blue tee", "", ""]])
    tiny_image(root / "pics" / "a.jpg")
    return dict(events="events.csv", items="items.csv",
                events_map="session_id=visit,item_id=sku,timestamp=when", timestamp_unit="s",
                items_map="item_id=sku,title=name,price=cost,image=picture")


def _srgnn_source(root: Path) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    (root / "all_train_seq.txt").write_bytes(pickle.dumps([[1, 2], [3, 4, 5], [2, 4], [5, 1, 2]]))
    (root / "test.txt").write_bytes(pickle.dumps(([[2, 4], [2], [9, 1]], [6, 4, 3])))
    return dict(files="pickle")


def _recbole_source(root: Path) -> dict:
    from tests.pipeline.test_ingest_recbole import make_plain

    make_plain(root)
    return {}


def _movielens_source(root: Path) -> dict:
    from tests.pipeline.test_ingest_movielens import make_ml100k

    make_ml100k(root)
    return {}


def _hm_source(root: Path) -> dict:
    from tests.pipeline.test_ingest_hm import make_hm

    make_hm(root)
    return {}


def _amazon_source(root: Path) -> dict:
    from tests.pipeline.test_ingest_amazon2018 import make_amazon

    make_amazon(root)
    return dict(category="Cell_Phones_and_Accessories")


ADAPTERS: dict[str, tuple[Callable[[Path], dict], list[str]]] = {
    "table": (_table_source, ["events.csv", "items.csv"]),
    "srgnn": (_srgnn_source, ["all_train_seq.txt", "test.txt"]),
    "recbole": (_recbole_source, ["shop.inter", "shop.item"]),
    "movielens": (_movielens_source, ["items.csv", "ratings.csv"]),
    "hm": (_hm_source, ["transactions.csv", "articles.csv"]),
    "amazon2018": (_amazon_source, ["Cell_Phones_and_Accessories_5.json.gz",
                                    "meta_Cell_Phones_and_Accessories.json.gz"]),
}


def _valid_sources() -> dict[str, tuple[dict, dict[str, bytes]]]:
    """Options and the bytes of each fuzzed file, per adapter (built once)."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (build, files) in ADAPTERS.items():
            options = build(Path(tmp) / name)
            out[name] = (options, {f: (Path(tmp) / name / f).read_bytes() for f in files})
    return out


SOURCES = _valid_sources()


def _ingest_damaged(adapter: str, file: str, data: bytes) -> None:
    from pipeline.ingest import ingest
    from schemas.io import read_events, read_items

    build, _ = ADAPTERS[adapter]
    with tempfile.TemporaryDirectory() as tmp:
        options = build(Path(tmp) / "src")
        (Path(tmp) / "src" / file).write_bytes(data)
        ws = Workspace.open(Path(tmp) / "ws")
        try:
            ingest(adapter, Path(tmp) / "src", ws, progress=False, **options)
        except ContractError as exc:
            assert str(exc) and exc.path  # names the file
            return
        items = read_items(ws)  # whatever was accepted is a valid, readable workspace
        read_events(ws, items)
        assert items.num_rows >= 1


@st.composite
def damaged_source(draw):
    adapter = draw(st.sampled_from(sorted(ADAPTERS)))
    file = draw(st.sampled_from(ADAPTERS[adapter][1]))
    return adapter, file, draw(damaged(SOURCES[adapter][1][file]))


@FAST
@given(damaged_source())
def test_ingest_adapters_refuse_or_accept_damaged_files_cleanly(case):
    _ingest_damaged(*case)


@pytest.mark.slow
@LONG
@given(damaged_source())
def test_ingest_adapters_long_fuzz(case):
    _ingest_damaged(*case)


# ------------------------------------------------------------------ store readers


def _valid_store() -> tuple[Path, dict[str, bytes]]:
    """A synthetic store (two parts per view, one float16 view), a split and a manifest; the
    bytes of every file the readers below open."""
    from benchmarks.synthetic_store import write_synthetic_store
    from schemas.io import write_split

    root = Path(tempfile.mkdtemp(prefix="macl-fuzz-store-"))
    ws = Workspace.open(root)
    write_synthetic_store(ws, 6, views=(("image", "orig"), ("text", "orig")), dim=4,
                          shard_size=3, record_sha256=False, image_files=False)
    write_split(ws, "p", "train", pa.table({
        "session_id": ["s1", "s2"], "items": pa.array([[1, 2], [3]], pa.list_(pa.int64())),
        "target": pa.array([3, 4], pa.int64())}), {"fuzz": True}, 6)
    files = ["catalog/items.parquet", "splits/p/train.parquet", "features/_manifest.json",
             "features/modality=text/view=orig/part-00000.parquet",
             "features/modality=text/view=orig/part-00001.parquet"]
    return root, {f: (root / f).read_bytes() for f in files}


STORE_ROOT, STORE_FILES = _valid_store()


def _read_all(ws: Workspace) -> dict:
    """Everything the trainer and the audit read from a store, as plain values."""
    from schemas.io import read_items, read_split
    from schemas.store import read_feature_matrix, read_manifest, read_view_rows

    items = read_items(ws)
    read_split(ws, "p", "train")
    read_manifest(ws)
    matrix = read_feature_matrix(ws, "text", "orig", 0, items.num_rows)
    rows = read_view_rows(ws, "text", "orig", ["item_idx", "status"]).to_pydict()
    return {"values": matrix.values.tolist(), "mask": matrix.mask.tolist(), "rows": rows}


REFERENCE = _read_all(Workspace.open(STORE_ROOT))


@st.composite
def damaged_store_file(draw):
    file = draw(st.sampled_from(sorted(STORE_FILES)))
    return file, draw(damaged(STORE_FILES[file]))


def _read_damaged(file: str, data: bytes) -> None:
    from pipeline.audit import audit_store
    from schemas.store import verify_part_bytes

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(STORE_ROOT, tmp, dirs_exist_ok=True)
        Path(tmp, file).write_bytes(data)
        ws = Workspace.open(tmp)
        try:
            got = _read_all(ws)
        except ContractError as exc:
            assert str(exc) and exc.path
        else:
            if file.endswith(".parquet") and "features" in file:
                assert got == REFERENCE  # a part that reads must read the stored numbers
            else:
                assert got["values"] == REFERENCE["values"]
        if file.startswith("features/modality"):
            name = Path(file).name
            sha, problem = verify_part_bytes(ws, "text", "orig", name)
            if data != STORE_FILES[file]:
                assert problem is not None or _same_numbers(ws, name)
            try:
                report = audit_store(ws)  # the audit never crashes on a damaged store
            except ContractError:
                return
            assert report.passed or "integrity" in report.failed_gates or report.failed_gates


def _same_numbers(ws: Workspace, name: str) -> bool:
    """A damaged part that passes its checks: only harmless bytes changed (e.g. statistics)."""
    import pyarrow.parquet as pq

    got = pq.read_table(ws.path("features", "modality=text", "view=orig", name))
    ref = pq.read_table(pa.BufferReader(STORE_FILES[f"features/modality=text/view=orig/{name}"]))
    return got.equals(ref)


@FAST
@given(damaged_store_file())
def test_store_readers_refuse_or_return_the_stored_values(case):
    _read_damaged(*case)


@pytest.mark.slow
@LONG
@given(damaged_store_file())
def test_store_readers_long_fuzz(case):
    _read_damaged(*case)


@FAST
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=3)
                    | st.dictionaries(st.sampled_from(["kind", "views", "schema_version",
                                                       "parts", "dim", "modality", "x"]),
                                      kids, max_size=4), max_leaves=12))
def test_manifest_reader_refuses_any_malformed_json(obj):
    from schemas.store import read_manifest

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(tmp)
        ws.write_json_atomic(obj if not isinstance(obj, dict) else
                             {"kind": "feature_store_manifest", **obj}, "features",
                             "_manifest.json")
        try:
            manifest = read_manifest(ws)
        except ContractError as exc:
            assert exc.path.endswith("_manifest.json")
            return
        assert manifest is not None and all(isinstance(k, str) for k in manifest.views)
        json.dumps(manifest.to_json())


def test_the_fuzzed_reference_store_is_valid():
    """The undamaged files pass every reader, so refusals above come from the damage."""
    assert REFERENCE["mask"] == [False] + [True] * 6
    assert np.asarray(REFERENCE["values"]).shape == (7, 4)
