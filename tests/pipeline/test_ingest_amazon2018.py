import gzip
import json

import pytest

from pipeline.ingest import ingest
from schemas.errors import ContractError
from tests.pipeline.ingest_helpers import catalog, events, tiny_image

DAY = 86_400


def review(user, asin, t):
    return {"overall": 5.0, "verified": True, "reviewTime": "09 18, 2013", "reviewerID": user,
            "asin": asin, "style": {"Color:": " Black"}, "reviewerName": "N", "reviewText": "ok",
            "summary": "fine", "unixReviewTime": t}


def meta(asin, title, **extra):
    row = {"category": ["Cell Phones & Accessories", "Cases, Holsters & Sleeves", "Basic Cases"],
           "description": ["A <b>sturdy</b> case &amp; a strap.", "Fits most phones."],
           "title": title, "brand": "Acme", "price": "$12.99", "asin": asin,
           "imageURLHighRes": [f"https://images.example/{asin}.jpg"], "main_cat": "Cell Phones",
           "also_buy": ["X"], "rank": "1 in Cases"}
    row.update(extra)
    return row


def write_lines(path, rows, raw_extra=b""):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(json.dumps(r).encode() + b"\n" for r in rows) + raw_extra
    path.write_bytes(gzip.compress(data))


def make_amazon(root, reviews=None, metas=None):
    reviews = reviews or [review("U1", "B001", 10 * DAY), review("U1", "B002", 10 * DAY + 50),
                          review("U1", "B003", 12 * DAY), review("U2", "B001", 10 * DAY)]
    metas = metas or [meta("B001", "Sturdy Case"), meta("B002", "Cable", price="$1.00 - $2.00",
                                                        category=[], description="Plain text"),
                      meta("B009", "Never reviewed")]
    write_lines(root / "Cell_Phones_and_Accessories_5.json.gz", reviews)
    write_lines(root / "meta_Cell_Phones_and_Accessories.json.gz", metas)
    tiny_image(root / "images" / "B001.jpg")
    return root


def test_reviews_meta_and_local_images(tmp_path, workspace):
    s = ingest("amazon2018", make_amazon(tmp_path / "amz"), workspace, progress=False)
    assert (s.items, s.with_image, s.with_text, s.events) == (3, 1, 2, 4)
    assert s.sessions == 3  # U1 on day 10 (two reviews) and day 12, U2 on day 10
    items = catalog(workspace)
    b1, b2, b3 = items["B001"], items["B002"], items["B003"]
    assert b1["text"] == ("Sturdy Case. Brand: Acme. Category: Cell Phones & Accessories > "
                          "Cases, Holsters & Sleeves > Basic Cases. A sturdy case & a strap. "
                          "Fits most phones.")
    assert (b1["title"], b1["brand"], b1["price"], b1["category"]) == (
        "Sturdy Case", "Acme", 12.99, "Basic Cases")
    assert b1["image_uri"].endswith("images/B001.jpg")
    assert b2["price"] is None and b2["category"] == "Cell Phones" and b2["image_uri"] is None
    assert b3["text"] is None and b3["title"] is None  # reviewed, no meta row: text stays null
    assert "no meta row" in s.render() and "URLs are never fetched" in s.render()
    assert [e["user_id"] for e in events(workspace)] == ["U1", "U1", "U1", "U2"]


def test_duplicate_meta_rows(tmp_path, workspace):
    root = make_amazon(tmp_path / "amz", metas=[meta("B001", "Case"), meta("B001", "Case")])
    assert ingest("amazon2018", root, workspace, progress=False).with_text == 1
    make_amazon(root, metas=[meta("B001", "Case"), meta("B002", "x"), meta("B001", "Other")])
    with pytest.raises(ContractError) as err:
        ingest("amazon2018", root, workspace, progress=False)
    assert "meta_Cell_Phones_and_Accessories.json.gz" in str(err.value)
    assert err.value.column == "asin" and err.value.rows == [2]


def test_bad_json_and_utf8_name_the_line(tmp_path, workspace):
    root = make_amazon(tmp_path / "amz")
    write_lines(root / "Cell_Phones_and_Accessories_5.json.gz",
                [review("U1", "B001", 5)], raw_extra=b'{"reviewerID": "U2", "asin": \n')
    with pytest.raises(ContractError) as err:
        ingest("amazon2018", root, workspace, progress=False)
    assert "not valid JSON lines" in str(err.value) and err.value.rows == [1]
    make_amazon(root)
    write_lines(root / "meta_Cell_Phones_and_Accessories.json.gz", [meta("B001", "Case")],
                raw_extra=b'{"asin": "B002", "title": "caf\xe9"}\n')
    with pytest.raises(ContractError) as err:
        ingest("amazon2018", root, workspace, progress=False)
    assert "not valid UTF-8" in str(err.value) and err.value.rows == [1]
    make_amazon(root, reviews=[review("U1", "B001", "yesterday")])
    with pytest.raises(ContractError) as err:
        ingest("amazon2018", root, workspace, progress=False)
    assert err.value.column == "unixReviewTime" and err.value.values == ["yesterday"]


def test_category_must_be_chosen_when_ambiguous(tmp_path, workspace):
    root = make_amazon(tmp_path / "amz")
    write_lines(root / "Grocery_5.json.gz", [review("U1", "G1", 5)])
    with pytest.raises(ContractError, match="pass --category"):
        ingest("amazon2018", root, workspace, progress=False)
    with pytest.raises(ContractError, match="meta_Grocery.json.gz"):
        ingest("amazon2018", root, workspace, category="Grocery", progress=False)
