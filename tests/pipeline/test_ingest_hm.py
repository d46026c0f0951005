import os

import pytest

from pipeline.ingest import ingest
from pipeline.sources import ImageResolver
from schemas.errors import ContractError
from schemas.fs import Workspace
from schemas.io import read_items
from schemas.tables import read_info
from tests.pipeline.ingest_helpers import catalog, events, run_cli, tiny_image, write_csv

TX = ["t_dat", "customer_id", "article_id", "price", "sales_channel_id"]
ART = ["article_id", "prod_name", "product_type_name", "product_group_name", "colour_group_name",
       "perceived_colour_value_name", "section_name", "garment_group_name", "index_name",
       "detail_desc"]


def article(aid, name, desc="Soft jersey top."):
    return [aid, name, "Top", "Garment Upper body", "Black", "Dark", "Womens Basics", "Jersey",
            "Ladieswear", desc]


def make_hm(root, tx=None, articles=None, images=("0100000001", "0100000002")):
    """A1 has text + image, A2 only an image, A3 only text; A4 is an article nobody bought."""
    tx = tx or [
        ["2020-01-01", "c1", "0100000001", "0.02", "1"],
        ["2020-01-01", "c1", "0100000001", "0.02", "1"],
        ["2020-01-01", "c1", "0100000002", "0.03", "2"],
        ["2020-01-02", "c1", "0100000003", "0.01", "2"],
        ["2020-01-01", "c2", "0100000002", "0.05", "2"],
        ["2020-01-01", "c2", "0100000001", "0.04", "1"],
    ]
    articles = articles or [article("0100000001", "Basic tee"), article("0100000003", "Long skirt"),
                            article("0100000004", "Never sold")]
    write_csv(root / "transactions.csv", TX, tx)
    write_csv(root / "articles.csv", ART, articles)
    for aid in images:
        tiny_image(root / "images" / f"{aid}.jpg")
    return root


def test_missing_modalities_survive(tmp_path, workspace):
    src = make_hm(tmp_path / "hm")
    summary = ingest("hm", src, workspace, progress=False)
    assert (summary.items, summary.with_image, summary.with_text) == (3, 2, 2)
    assert (summary.events, summary.sessions) == (6, 3)  # c1 on two days, c2 on one
    items = catalog(workspace)
    a1, a2, a3 = items["0100000001"], items["0100000002"], items["0100000003"]
    assert a1["title"] == "Basic tee" and a1["category"] == "Top"
    assert a1["text"].startswith("Basic tee. Type: Top.") and "Colour: Black (Dark)." in a1["text"]
    assert a1["price"] == pytest.approx(0.02)  # the median of 0.02, 0.02, 0.04 (not the mean)
    assert a2["text"] is None and a2["image_uri"] == str(src / "images" / "0100000002.jpg")
    assert a3["image_uri"] is None and a3["text"].startswith("Long skirt.")
    info = read_info(read_items(workspace).schema)
    assert info["image_roots"] == [str(src / "images")]
    assert ImageResolver(workspace, info["image_roots"]).read(a1["image_uri"]).ok
    ev = events(workspace)
    assert [e["item_id"] for e in ev][:3] == ["0100000001", "0100000001", "0100000002"]
    assert {e["user_id"] for e in ev} == {"c1", "c2"} and ev[0]["session_id"] is None
    assert "never purchased" in summary.render()


def test_catalog_all_keeps_unsold_articles_with_text_and_no_image(tmp_path, workspace):
    summary = ingest("hm", make_hm(tmp_path / "hm"), workspace, catalog="all", progress=False)
    row = catalog(workspace)["0100000004"]
    assert summary.items == 4 and row["image_uri"] is None and row["text"].startswith("Never sold")


def test_copy_images_makes_workspace_relative_uris(tmp_path, workspace):
    src = make_hm(tmp_path / "hm")
    summary = ingest("hm", src, workspace, copy_images=True, progress=False)
    uri = catalog(workspace)["0100000001"]["image_uri"]
    assert uri == "images/0100000001.jpg" and summary.copied_images == 2
    original = (src / "images" / "0100000001.jpg").read_bytes()
    assert ImageResolver(workspace).read(uri).data == original
    again = ingest("hm", src, workspace, copy_images=True, progress=False)
    assert again.copied_images == 0  # identical copies are kept: a rerun does no work


def test_reingest_keeps_item_idx_and_appends(tmp_path, workspace):
    ingest("hm", make_hm(tmp_path / "a"), workspace, progress=False)
    before = {k: v["item_idx"] for k, v in catalog(workspace).items()}
    tx = [["2020-02-01", "c9", "0000000009", "0.01", "1"],
          ["2020-02-01", "c9", "0100000002", "0.01", "1"]]
    summary = ingest("hm", make_hm(tmp_path / "b", tx=tx), workspace, progress=False)
    after = {k: v["item_idx"] for k, v in catalog(workspace).items()}
    assert all(after[k] == v for k, v in before.items())
    assert after["0000000009"] == 4  # appended, although it sorts first
    assert (summary.new_items, summary.updated_items, summary.kept_items) == (1, 1, 2)
    assert len(events(workspace)) == 2  # events are the new source's


@pytest.mark.parametrize("case,needle,column,rows", [
    ("missing_column", "missing column(s) ['customer_id']", "customer_id", []),
    ("bad_date", "unparsable timestamps", "t_dat", [1]),
    ("empty_article", "null or empty key values", "article_id", [0]),
    ("negative_price", "negative values", "price", [1]),
])
def test_bad_transactions_are_refused_with_file_column_rows(tmp_path, workspace, case, needle,
                                                             column, rows):
    good = ["2020-01-01", "c1", "0100000001", "0.02", "1"]
    table = {
        "missing_column": None,
        "bad_date": [good, ["2020-13-45", "c1", "0100000001", "0.02", "1"]],
        "empty_article": [["2020-01-01", "c1", "", "0.02", "1"], good],
        "negative_price": [good, ["2020-01-01", "c1", "0100000001", "-1", "1"]],
    }[case]
    src = make_hm(tmp_path / "hm", tx=table or [good])
    if case == "missing_column":
        write_csv(src / "transactions.csv", ["t_dat", "article_id"], [["2020-01-01", "01"]])
    with pytest.raises(ContractError) as err:
        ingest("hm", src, workspace, progress=False)
    assert "transactions.csv" in str(err.value) and needle in str(err.value)
    assert err.value.column == column and err.value.rows == rows


def test_non_utf8_and_conflicting_duplicates_in_articles(tmp_path, workspace):
    src = make_hm(tmp_path / "hm")
    raw = (src / "articles.csv").read_bytes().replace(b"Soft jersey", b"Soft \xff jersey", 1)
    (src / "articles.csv").write_bytes(raw)
    with pytest.raises(ContractError) as err:
        ingest("hm", src, workspace, progress=False)
    assert "not valid UTF-8" in str(err.value) and "articles.csv" in str(err.value)
    assert err.value.column == "detail_desc" and err.value.rows == [0]

    same = article("0100000001", "Basic tee")
    make_hm(src, articles=[same, same, article("0100000003", "Skirt")])
    assert ingest("hm", src, workspace, progress=False).items == 3  # exact repeat: dropped
    make_hm(src, articles=[same, article("0100000001", "Other name")])
    with pytest.raises(ContractError) as err:
        ingest("hm", src, workspace, progress=False)
    assert "duplicate ids with different values" in str(err.value) and err.value.rows == [1]


def test_cli_ingest_and_split_report_errors_with_exit_code_2(tmp_path, capsys):
    src = make_hm(tmp_path / "hm")
    ws = str(tmp_path / "ws")
    assert run_cli(["ingest", "hm", "--source", str(src), "--workspace", ws]) == 0
    out = capsys.readouterr().out
    assert "ingested hm" in out and "with image" in out
    assert run_cli(["split", "--workspace", ws, "--protocol", "macl", "--min-item-count", "1",
                    "--test-fraction", "0.34"]) == 0
    assert "split 'macl'" in capsys.readouterr().out
    assert run_cli(["split", "--workspace", ws, "--protocol", "loo", "--test-days", "3"]) == 2
    assert "takes no parameter" in capsys.readouterr().err
    os.remove(src / "transactions.csv")
    assert run_cli(["ingest", "hm", "--source", str(src), "--workspace", ws]) == 2
    assert "transactions.csv: not found" in capsys.readouterr().out


@pytest.mark.data
def test_real_hm_counts_match_its_readme(shared_data, tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    s = ingest("hm", shared_data / "hm", ws, progress=False)
    assert (s.items, s.with_image, s.with_text) == (17_033, 17_033, 4_116)
    assert (s.events, s.sessions) == (31_662, 8_802)
    from pipeline.splits import SplitConfig, run_split

    r = run_split(ws, SplitConfig.for_protocol("macl"))
    f = {x.name: x for x in r.filters}
    assert f["consecutive repeats collapsed"].events == 3_146  # the README's 2,894 duplicates +
    # 252 same-day repeats of one article that differ in price or channel
    kept = run_split(ws, SplitConfig.for_protocol("macl", collapse_repeats=False), name="kept")
    # the README: 6,245 of the 8,802 (customer, day) sessions have 2 or more purchases
    assert {x.name: x for x in kept.filters}["short sessions (< 2) before item filter"].sessions \
        == 8_802 - 6_245
