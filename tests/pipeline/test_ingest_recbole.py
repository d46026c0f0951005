import pytest

from pipeline.ingest import ingest
from pipeline.ingest.recbole import rebuild_sequences
from pipeline.splits import SplitConfig, run_split
from schemas.errors import ContractError
from schemas.fs import Workspace
from schemas.io import read_split
from tests.pipeline.ingest_helpers import catalog, events, write_csv


def make_plain(root, inter=None, items=None):
    inter = inter or [[1, "a", 100], [1, "b", 200], [2, "a", 50], [2, "c", 70]]
    items = items or [["a", "Red mug", "Kitchen Mugs", "Acme", 9.5], ["b", "Blue cup", "Kitchen",
                                                                      "Acme", 4.0],
                      ["c", "Teapot", "Kitchen", "", 20.0], ["z", "Unsold", "Misc", "", 1.0]]
    write_csv(root / "shop.inter", ["user_id:token", "item_id:token", "timestamp:float"], inter,
              delimiter="\t")
    write_csv(root / "shop.item", ["item_id:token", "title:token_seq", "categories:token_seq",
                                   "brand:token", "price:float"], items, delimiter="\t")
    return root


def test_plain_inter_and_item(tmp_path, workspace):
    s = ingest("recbole", make_plain(tmp_path / "rb"), workspace, progress=False)
    assert (s.items, s.with_text, s.events, s.sessions, s.given) == (3, 3, 4, 2, None)
    a = catalog(workspace)["a"]
    assert a["text"] == "Red mug. Categories: Kitchen Mugs. Brand: Acme."
    assert (a["title"], a["category"], a["brand"], a["price"]) == ("Red mug", "Kitchen Mugs",
                                                                    "Acme", 9.5)
    assert events(workspace)[2]["timestamp"].timestamp() == 50


def test_plain_inter_refuses_unknown_items_and_duplicate_item_rows(tmp_path, workspace):
    root = make_plain(tmp_path / "rb", inter=[[1, "a", 1], [1, "q", 2]])
    with pytest.raises(ContractError) as err:
        ingest("recbole", root, workspace, progress=False)
    assert "shop.inter" in str(err.value) and err.value.rows == [1] and err.value.values == ["q"]
    make_plain(root, items=[["a", "x", "y", "z", 1.0], ["a", "x", "y", "z", 1.0]])
    with pytest.raises(ContractError) as err:
        ingest("recbole", root, workspace, progress=False)
    assert "shop.item" in str(err.value) and "duplicate item_id" in str(err.value)


def make_unisrec(root, users):
    """The UniSRec/CoWPiRec layout: indices in the .inter files, ids in the index files."""
    asins = [f"B{i:03d}" for i in range(8)]
    write_csv(root / "Sci.text", ["item_id:token", "text:token_seq"],
              [[a, f"Item {a}. Tools. Acme. "] for a in asins], delimiter="\t")
    (root / "Sci.item2index").write_text("".join(f"{a}\t{i}\n" for i, a in enumerate(asins)))
    (root / "Sci.user2index").write_text("".join(f"R{u}\t{u}\n" for u in range(len(users))))
    parts = {"train": [], "valid": [], "test": []}
    for u, seq in enumerate(users):
        for k in range(len(seq) - 3, 0, -1):  # RecBole writes the longest prefix first
            parts["train"].append([u, " ".join(map(str, seq[:k][-3:])), seq[k]])
        parts["valid"].append([u, " ".join(map(str, seq[:-2][-3:])), seq[-2]])
        parts["test"].append([u, " ".join(map(str, seq[:-1][-3:])), seq[-1]])
    for part, rows in parts.items():
        write_csv(root / f"Sci.{part}.inter",
                  ["user_id:token", "item_id_list:token_seq", "item_id:token"], rows,
                  delimiter="\t")
    return root


USERS = [[0, 1, 2, 3, 4, 5], [5, 6, 7, 6], [2, 2, 3, 4, 1]]


def test_unisrec_layout_keeps_its_split_and_loo_rebuilds_it(tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    s = ingest("recbole", make_unisrec(tmp_path / "sci", USERS), ws, progress=False)
    assert s.given == {"train": 3 + 1 + 2, "valid": 3, "test": 3}
    assert (s.items, s.with_text, s.events) == (8, 8, 15)
    assert catalog(ws)["B000"]["text"] == "Item B000. Tools. Acme."
    assert [e["item_id"] for e in events(ws) if e["user_id"] == "R0"] == [
        f"B00{i}" for i in USERS[0]]  # histories are capped at 3 items, yet rebuilt in full
    test, _ = read_split(ws, "given", "test")
    assert test.to_pylist()[0] == {"session_id": "R0", "items": [3, 4, 5], "target": 6}
    run_split(ws, SplitConfig.for_protocol("loo", order="source", collapse_repeats=False,
                                           max_len=4))
    for part in ("train", "valid", "test"):
        given, _ = read_split(ws, "given", part)
        loo, _ = read_split(ws, "loo", part)
        key = lambda t: sorted(zip(t.column("session_id").to_pylist(),  # noqa: E731
                                   map(tuple, t.column("items").to_pylist()),
                                   t.column("target").to_pylist()))
        assert key(given) == key(loo)


def test_rebuild_refuses_rows_that_do_not_chain():
    assert rebuild_sequences(["u", "u"], [["a"], ["a", "b"]], ["b", "c"]) == (
        ["u"], [["a", "b", "c"]])
    with pytest.raises(ValueError):
        rebuild_sequences(["u", "u"], [["a"], ["x", "y"]], ["b", "c"])


def test_unknown_index_is_refused(tmp_path, workspace):
    root = make_unisrec(tmp_path / "sci", USERS)
    write_csv(root / "Sci.test.inter", ["user_id:token", "item_id_list:token_seq",
                                        "item_id:token"], [[0, "1 2", 99]], delimiter="\t")
    with pytest.raises(ContractError) as err:
        ingest("recbole", root, workspace, progress=False)
    assert "Sci.test.inter" in str(err.value) and err.value.column == "item_id"
    assert err.value.values == [99]


@pytest.mark.data
def test_real_amazon_scientific(shared_data, tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    s = ingest("recbole", shared_data / "amazon_scientific", ws, progress=False)
    assert (s.items, s.with_text, s.with_image) == (4_385, 4_385, 0)
    assert s.given == {"train": 34_101, "valid": 8_442, "test": 8_442}
    assert s.sessions == 8_442
    run_split(ws, SplitConfig.for_protocol("loo", order="source", collapse_repeats=False))
    for part in ("train", "valid", "test"):
        given, _ = read_split(ws, "given", part)
        loo, _ = read_split(ws, "loo", part)
        assert sorted(map(str, given.to_pylist())) == sorted(map(str, loo.to_pylist()))
