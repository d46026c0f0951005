import os
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ingest import ingest
from pipeline.ingest.srgnn import continues_previous, restricted_load
from schemas.errors import ContractError
from schemas.fs import Workspace
from schemas.io import read_split
from tests.pipeline.ingest_helpers import catalog, events


def srgnn_cases(sessions):
    """SR-GNN's test.txt form: s[:-1] -> s[-1], s[:-2] -> s[-2], ... for every session."""
    inputs, targets = [], []
    for s in sessions:
        for i in range(1, len(s)):
            inputs.append(s[:-i])
            targets.append(s[-i])
    return inputs, targets


def write_pair(root, stem, obj, twin=True):
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{stem}.txt").write_bytes(pickle.dumps(obj))
    if not twin:
        return
    if isinstance(obj, list):
        table = pa.table({"items": pa.array(obj, pa.list_(pa.int32()))})
    else:
        table = pa.table({"input": pa.array(obj[0], pa.list_(pa.int32())),
                          "target": pa.array(obj[1], pa.int32())})
    pq.write_table(table, root / f"{stem}.parquet")


TRAIN = [[1, 2], [3, 4, 5], [6, 7], [1, 3, 5, 7], [2, 4], [8, 9, 8], [1, 9], [2, 2, 3],
         [4, 6], [5, 1, 2]]
TEST = [[2, 4, 6], [9, 1], [3, 5, 7, 1]]


def split_rows(ws, part):
    table, info = read_split(ws, "given", part)
    return [(r["session_id"], r["items"], r["target"]) for r in table.to_pylist()], info


@pytest.mark.parametrize("files", ["pickle", "parquet"])
def test_sessions_form_keeps_the_given_split(tmp_path, files):
    write_pair(tmp_path / "src", "all_train_seq", TRAIN)
    write_pair(tmp_path / "src", "test", srgnn_cases(TEST))
    ws = Workspace.open(tmp_path / "ws")
    s = ingest("srgnn", tmp_path / "src", ws, files=files, progress=False)
    assert (s.items, s.with_image, s.with_text) == (9, 0, 0)
    assert s.given == {"train": 14, "valid": 2, "test": 6}
    train, info = split_rows(ws, "train")
    valid, _ = split_rows(ws, "valid")
    test, _ = split_rows(ws, "test")
    idx = {k: v["item_idx"] for k, v in catalog(ws).items()}
    assert all(idx[str(i)] == i for i in range(1, 10))  # dense integer ids keep their value
    assert train[:3] == [("train:0", [1], 2), ("train:1", [3], 4), ("train:1", [3, 4], 5)]
    assert valid == [("train:9", [5], 1), ("train:9", [5, 1], 2)]  # the last session's prefixes
    assert test[:3] == [("test:0", [2, 4], 6), ("test:0", [2], 4), ("test:1", [9], 1)]
    assert info["protocol"] == "given" and info["test"]["prefix_expanded"] is True
    ev = events(ws)
    assert len(ev) == sum(map(len, TRAIN)) + sum(map(len, TEST))  # no event counted twice
    assert ev[0]["timestamp"] is None and ev[0]["user_id"] is None
    assert [e["item_id"] for e in ev if e["session_id"] == "test:2"] == ["3", "5", "7", "1"]


def test_pickle_and_parquet_twins_give_identical_workspaces(tmp_path):
    write_pair(tmp_path / "src", "all_train_seq", TRAIN)
    write_pair(tmp_path / "src", "test", srgnn_cases(TEST))
    a, b = Workspace.open(tmp_path / "a"), Workspace.open(tmp_path / "b")
    ingest("srgnn", tmp_path / "src", a, files="pickle", progress=False)
    ingest("srgnn", tmp_path / "src", b, files="parquet", progress=False)
    for part in ("train", "valid", "test"):
        assert read_split(a, "given", part)[0].equals(read_split(b, "given", part)[0])
    assert events(a) == events(b)


def test_cases_form_like_the_macl_splits(tmp_path):
    train = ([[1], [3, 4], [6], [8], [10, 1], [2], [4, 3], [5], [7], [9]],
             [2, 5, 7, 9, 11, 3, 1, 6, 8, 10])
    write_pair(tmp_path / "src", "train", train, twin=False)
    write_pair(tmp_path / "src", "test", ([[2, 3], [11]], [4, 1]), twin=False)
    ws = Workspace.open(tmp_path / "ws")
    s = ingest("srgnn", tmp_path / "src", ws, progress=False)
    assert s.given == {"train": 9, "valid": 1, "test": 2} and s.items == 11
    assert split_rows(ws, "valid")[0] == [("train:9", [9], 10)]
    assert split_rows(ws, "test")[0] == [("test:0", [2, 3], 4), ("test:1", [11], 1)]
    assert s.events == sum(len(i) + 1 for i in train[0]) + 3 + 2  # one session per case


def test_expanded_train_cases_are_carved_between_sessions(tmp_path):
    sessions = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [1, 5, 9]]
    write_pair(tmp_path / "src", "train", srgnn_cases(sessions), twin=False)
    write_pair(tmp_path / "src", "test", srgnn_cases([[2, 3, 4]]), twin=False)
    ws = Workspace.open(tmp_path / "ws")
    s = ingest("srgnn", tmp_path / "src", ws, valid_fraction=0.25, progress=False)
    valid, _ = split_rows(ws, "valid")
    assert valid == [("train:3", [1, 5], 9), ("train:3", [1], 5)]  # one whole session
    assert s.events == 3 + 2 + 4 + 3 + 3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(1, 6), min_size=2, max_size=7), min_size=1, max_size=20))
def test_folding_recovers_sessions_from_prefix_expanded_cases(sessions):
    inputs, targets = srgnn_cases(sessions)
    lengths = np.array([len(i) for i in inputs])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = np.array([x for i in inputs for x in i], dtype=np.int64)
    cont, direction = continues_previous(values, offsets, np.array(targets))
    # a session of length n gives n - 1 cases, all but its first continue the one before
    starts = np.flatnonzero(~cont)
    assert len(starts) == len(sessions)
    assert [inputs[i] + [targets[i]] for i in starts] == sessions
    assert direction == "longest-first" or not cont.any()


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize("payload,needle", [
    (Evil(), "refers to the global"),
    ([[1, 2], os.system], "refers to the global"),
    ([[1, 2.5]], "only ints"),
    ([[1, True]], "only ints"),
    ([[1, "2"]], "only ints"),
    ([{1: 2}], "rows must be lists"),
])
def test_restricted_unpickler_refuses_everything_but_lists_tuples_ints(tmp_path, payload, needle,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_pair(tmp_path / "src", "all_train_seq", payload, twin=False)
    write_pair(tmp_path / "src", "test", srgnn_cases(TEST), twin=False)
    with pytest.raises(ContractError) as err:
        ingest("srgnn", tmp_path / "src", Workspace.open(tmp_path / "ws"), progress=False)
    assert needle in str(err.value) and "all_train_seq.txt" in str(err.value)
    assert not (tmp_path / "pwned").exists()  # nothing was executed


def test_unreadable_and_malformed_files(tmp_path):
    (tmp_path / "t.txt").write_bytes(pickle.dumps([[1, 2]])[:-3])
    with pytest.raises(ContractError, match="not a readable pickle"):
        restricted_load(tmp_path / "t.txt")
    write_pair(tmp_path / "src", "all_train_seq", [[1, 2], [3]], twin=False)
    write_pair(tmp_path / "src", "test", srgnn_cases(TEST), twin=False)
    with pytest.raises(ContractError) as err:
        ingest("srgnn", tmp_path / "src", Workspace.open(tmp_path / "ws"), progress=False)
    assert "at least 2 items" in str(err.value) and err.value.rows == [1]
    write_pair(tmp_path / "src", "all_train_seq", TRAIN)
    pq.write_table(pa.table({"input": pa.array([["a"]]), "target": [1]}),
                   tmp_path / "src" / "test.parquet")
    with pytest.raises(ContractError) as err:
        ingest("srgnn", tmp_path / "src", Workspace.open(tmp_path / "ws"), files="parquet",
               progress=False)
    assert "test.parquet" in str(err.value) and "list of integers" in str(err.value)
    assert err.value.column == "input"
    with pytest.raises(ContractError, match="needs all_train_seq or train, and test"):
        ingest("srgnn", tmp_path, Workspace.open(tmp_path / "ws"), progress=False)


SBR = {  # README counts: train sessions, prefix-expanded train cases, test cases, items
    "diginetica": (186_670, 719_470, 60_858, 43_097),
    "tmall": (65_286, 351_268, 25_898, 40_727),
    "nowplaying": (128_077, 825_304, 89_824, 60_416),
    "yoochoose1_64": (116_167, 369_859, 55_898, 17_745),
    "retailrocket": (126_168, 559_816, 15_132, 36_968),
}
MACL = {  # README counts: train samples, test samples, items
    "Cell_Phones_and_Accessories": (41_615, 4_644, 10_213),
    "Grocery_and_Gourmet_Food": (43_270, 4_770, 7_877),
    "Instacart": (47_640, 5_286, 12_616),
}


@pytest.mark.data
def test_diginetica_given_split_reproduces_the_published_counts(shared_data, tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    s = ingest("srgnn", shared_data / "sbr" / "diginetica", ws, progress=False)
    assert s.given["train"] + s.given["valid"] == 719_470
    assert s.given["test"] == 60_858 and s.items == 43_097
    train, info = read_split(ws, "given", "train")
    valid, _ = read_split(ws, "given", "valid")
    sessions = set(train.column("session_id").to_pylist()) | set(
        valid.column("session_id").to_pylist())
    assert len(sessions) == 186_670 and info["n_items"] == 43_097


@pytest.mark.data
@pytest.mark.parametrize("name", sorted(MACL))
def test_macl_splits_reproduce_the_paper_counts(shared_data, tmp_path, name):
    ws = Workspace.open(tmp_path / "ws")
    s = ingest("srgnn", shared_data / "macl_splits" / name, ws, files="pickle", progress=False)
    train, test, items = MACL[name]
    assert (s.given["train"] + s.given["valid"], s.given["test"], s.items) == (train, test, items)
    assert s.sessions == train + test  # one session per case, nothing folded


@pytest.mark.data
@pytest.mark.parametrize("name", sorted(set(SBR) - {"diginetica"}))
def test_other_sbr_datasets_reproduce_their_readme_counts(shared_data, tmp_path, name):
    ws = Workspace.open(tmp_path / "ws")
    s = ingest("srgnn", shared_data / "sbr" / name, ws, progress=False)
    sessions, cases, test, items = SBR[name]
    assert (s.given["train"] + s.given["valid"], s.given["test"], s.items) == (cases, test, items)
    assert s.sessions > sessions  # train sessions + the folded test sessions
