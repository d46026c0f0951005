import csv
import dataclasses
import hashlib
import io
from collections import Counter
from itertools import combinations

import pytest
from PIL import Image

from pipeline.demo import DemoConfig, run_demo
from pipeline.demo_shop import PRODUCTS, ShopConfig, generate_shop
from schemas.io import list_protocols, read_items, read_split
from schemas.tables import read_info

SMALL = ShopConfig(size=60, seed=3, sessions_per_item=5.0, image_size=48)


def digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def rows(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shop")
    return folder, generate_shop(folder, SMALL, progress=False)


def test_deterministic_by_seed(shop, tmp_path):
    folder, _ = shop
    generate_shop(tmp_path / "again", SMALL, progress=False)
    generate_shop(tmp_path / "other", dataclasses.replace(SMALL, seed=4), progress=False)
    assert digest(tmp_path / "again") == digest(folder)
    other = digest(tmp_path / "other")
    assert other.keys() == digest(folder).keys() and other != digest(folder)


def test_clearly_labelled_and_well_formed(shop):
    folder, summary = shop
    assert (folder / "README.txt").read_text().startswith("SYNTHETIC DATA")
    items = rows(folder / "items.csv")
    assert len(items) == summary.items == 60
    assert all("SYNTHETIC" in r["brand"] and "SYNTHETIC" in r["description"] for r in items)
    attrs = {r["item_id"]: r for r in rows(folder / "attributes.csv")}
    for r in items:
        product = attrs[r["item_id"]]["product"]
        assert r["category"] == product
        assert any(name in r["title"].lower() for name in PRODUCTS[product][0])
        img = Image.open(io.BytesIO((folder / r["image"]).read_bytes()))
        assert img.size == (48, 48) and img.mode == "RGB"


def test_attributes_drive_co_occurrence_and_popularity_has_a_long_tail(shop):
    folder, summary = shop
    product = {r["item_id"]: r["product"] for r in rows(folder / "attributes.csv")}
    sessions = {}
    for e in rows(folder / "events.csv"):
        sessions.setdefault(e["session_id"], []).append(e["item_id"])
    pairs = [(a, b) for s in sessions.values() for a, b in combinations(sorted(set(s)), 2)]
    same = sum(product[a] == product[b] for a, b in pairs) / len(pairs)
    share = Counter(product.values())
    chance = sum((n / len(product)) ** 2 for n in share.values())
    assert same > 2 * chance  # shoppers' intents are about product types
    counts = Counter(e for s in sessions.values() for e in s)
    ranked = sorted(counts.values(), reverse=True)
    assert sum(ranked[: len(ranked) // 10]) > 0.25 * sum(ranked)
    assert summary.items_seen_under_5 > 0 and summary.events == sum(ranked)


def test_config_limits():
    with pytest.raises(ValueError, match="at least 20"):
        ShopConfig(size=5)


def test_demo_steps_generate_ingest_and_split(tmp_path):
    out = io.StringIO()
    ctx = run_demo(DemoConfig(workspace=str(tmp_path / "demo"), size=40, seed=1), out=out)
    text = out.getvalue()
    assert "[1/3] generate the SYNTHETIC demo shop" in text and "[3/3]" in text
    items = read_items(ctx.ws)
    assert items.num_rows == 40 and items.column("image_uri").null_count == 0
    assert all(u.startswith("images/") for u in items.column("image_uri").to_pylist())
    assert read_info(items.schema)["synthetic"] is True
    assert list_protocols(ctx.ws) == ["macl"]
    test, info = read_split(ctx.ws, "macl", "test")
    assert test.num_rows > 0 and info["params"]["min_item_count"] == 2
