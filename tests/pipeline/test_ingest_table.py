import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.ingest import ingest
from schemas.errors import ContractError
from schemas.io import read_items
from schemas.tables import read_info
from tests.pipeline.ingest_helpers import catalog, events, run_cli, tiny_image, write_csv


def make_table(root):
    write_csv(root / "clicks.csv", ["visit", "who", "sku", "when", "order"],
              [["v1", "u1", "A", "1700000300", "2"], ["v1", "u1", "B", "1700000100", "1"],
               ["v2", "u2", "A", "1700000500", "1"]])
    write_csv(root / "catalog.csv", ["sku", "name", "blurb", "kind", "cost", "picture"],
              [["A", "Red mug", "A ceramic mug", "mug", "9.5", "pics/a.jpg"],
               ["B", "Blue tee", "", "shirt", "", ""], ["C", "Unsold", "x", "misc", "1", ""]])
    tiny_image(root / "pics" / "a.jpg")
    return root


MAPS = dict(events="clicks.csv", items="catalog.csv",
            events_map="session_id=visit,user_id=who,item_id=sku,timestamp=when",
            items_map="item_id=sku,title=name,category=kind,price=cost,image=picture",
            text_columns="name,blurb", timestamp_unit="s")


def test_mapped_columns(tmp_path, workspace):
    root = make_table(tmp_path / "t")
    s = ingest("table", root, workspace, sort_by="visit,order", progress=False, **MAPS)
    assert (s.items, s.with_image, s.with_text, s.events, s.sessions) == (2, 1, 2, 3, 2)
    items = catalog(workspace)
    assert items["A"]["text"] == "Red mug. Blurb: A ceramic mug."
    assert items["B"]["text"] == "Blue tee." and items["B"]["price"] is None
    assert (items["A"]["title"], items["A"]["category"], items["A"]["price"]) == ("Red mug", "mug",
                                                                                  9.5)
    assert items["A"]["image_uri"] == str(root / "pics" / "a.jpg")
    assert read_info(read_items(workspace).schema)["image_roots"] == [str(root)]
    ev = events(workspace)
    assert [e["item_id"] for e in ev] == ["B", "A", "A"]  # --sort-by visit, order
    assert ev[0]["session_id"] == "v1" and ev[0]["timestamp"].timestamp() == 1700000100


def test_parquet_events_without_items_and_iso_times(tmp_path, workspace):
    pq.write_table(pa.table({"session_id": ["s1", "s1"], "item_id": [7, 8],
                             "timestamp": ["2024-01-02T10:00:00Z", "2024-01-02T10:05:00"]}),
                   tmp_path / "events.parquet")
    s = ingest("table", tmp_path, workspace, progress=False)
    assert (s.items, s.with_text, s.events, s.sessions) == (2, 0, 2, 1)
    assert events(workspace)[1]["timestamp"].isoformat() == "2024-01-02T10:05:00+00:00"


@pytest.mark.parametrize("change,file,column,rows,needle", [
    ({"events_map": "session_id=visit,item_id=sku,timestamp=missing"}, "clicks.csv", "missing",
     [], "not found"),
    ({"timestamp_unit": None}, "clicks.csv", "when", [], "need a unit"),
    ({"items": "bad_items.csv"}, "clicks.csv", "sku", [1], "item file does not list"),
    ({"items": "dup_items.csv"}, "dup_items.csv", "sku", [2], "duplicate item ids"),
    ({"items": "escape.csv"}, "escape.csv", "picture", [0], "image paths must be files under"),
    ({"events": "negative.csv"}, "negative.csv", "when", [1], "negative values"),
])
def test_bad_tables_name_file_column_rows(tmp_path, workspace, change, file, column, rows,
                                          needle):
    root = make_table(tmp_path / "t")
    write_csv(root / "bad_items.csv", ["sku", "name"], [["A", "x"]])
    write_csv(root / "dup_items.csv", ["sku", "name"], [["A", "x"], ["B", "y"], ["A", "z"]])
    write_csv(root / "escape.csv", ["sku", "picture"], [["A", "../../etc/passwd"], ["B", ""]])
    write_csv(root / "negative.csv", ["visit", "who", "sku", "when"],
              [["v", "u", "A", "5"], ["v", "u", "B", "-5"]])
    options = {**MAPS, **change}
    with pytest.raises(ContractError) as err:
        ingest("table", root, workspace, progress=False, **options)
    assert file in str(err.value) and needle in str(err.value)
    assert err.value.column == column and err.value.rows == rows


def test_cli_table_ingest_with_copied_images(tmp_path, capsys):
    root = make_table(tmp_path / "t")
    ws = tmp_path / "ws"
    argv = ["ingest", "table", "--source", str(root), "--workspace", str(ws), "--copy-images",
            "--events", "clicks.csv", "--items", "catalog.csv", "--events-map",
            MAPS["events_map"], "--items-map", MAPS["items_map"], "--timestamp-unit", "s"]
    assert run_cli(argv) == 0
    assert "images copied" in capsys.readouterr().out
    assert (ws / "images" / "A.jpg").read_bytes() == (root / "pics" / "a.jpg").read_bytes()
    assert run_cli(argv[:-2] + ["--timestamp-unit", "s", "--events-map", "bogus=x"]) == 2
    assert "unknown field 'bogus'" in capsys.readouterr().err


@pytest.mark.data
def test_raw_diginetica_sample(shared_data, tmp_path):
    from schemas.fs import Workspace

    ws = Workspace.open(tmp_path / "ws")
    s = ingest("table", shared_data / "sbr" / "sample_train-item-views.csv", ws, delimiter=";",
               events_map="timestamp=eventdate", sort_by="session_id,timeframe", progress=False)
    assert (s.events, s.sessions, s.items) == (12_391, 2_986, 7_139)  # its README's counts
    assert sum(e["user_id"] == "NA" or e["user_id"] is None for e in events(ws)) == 7_681
