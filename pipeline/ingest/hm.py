"""H&M Personalized Fashion Recommendations layout: transactions, articles, images by article id.

``transactions.csv`` (t_dat, customer_id, article_id[, price]) gives the events: one per row,
dated by day, owned by the customer (sessions are cut later, by customer + day). The catalog
is every purchased article (``catalog="all"`` adds article rows never purchased). Text comes from
the article row and is null where the article has none; the image is ``images/<article_id>.jpg``
and null where that file is missing: missing modalities stay missing.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.ingest.base import (
    SourceData,
    catalog_ids,
    compose_text,
    events_table,
    image_index,
    key_column,
    match_rows,
    numbers,
    read_csv,
    require_file,
    source_items,
    unique_items,
)
from pipeline.sessions import SessionRule
from schemas.validate import coerce_timestamps

FORMAT = "hm"
ARTICLE_FIELDS = (
    "prod_name",
    "product_type_name",
    "product_group_name",
    "colour_group_name",
    "perceived_colour_value_name",
    "section_name",
    "garment_group_name",
    "index_name",
    "detail_desc",
)


def load(source: Path, *, catalog: str = "events") -> SourceData:
    source = Path(source).resolve()
    tx_path = require_file(source / "transactions.csv", "H&M transactions")
    tx = read_csv(tx_path, required=("t_dat", "customer_id", "article_id"))
    shown = str(tx_path)
    article_ids = key_column(tx, "article_id", shown)
    customers = key_column(tx, "customer_id", shown)
    when = coerce_timestamps(tx.column("t_dat"), shown, "t_dat")
    prices = numbers(tx, "price", shown, non_negative=True) if "price" in tx.column_names else None

    art_path = source / "articles.csv"
    articles = None
    notes = []
    if art_path.is_file():
        articles = read_csv(art_path, required=("article_id",))
        key_column(articles, "article_id", str(art_path))
        present = [f for f in ARTICLE_FIELDS if f in articles.column_names]
        articles = unique_items(articles, "article_id", present, str(art_path))
    else:
        notes.append("no articles.csv: every item has text = null")

    purchased = pc.unique(article_ids)
    listed = None if articles is None else articles.column("article_id").combine_chunks()
    ids = catalog_ids(catalog, purchased, listed)
    n = len(ids)

    text = title = category = None
    if articles is not None:
        has_row, field = match_rows(ids, articles, "article_id")

        colour = [
            None if c is None else (f"{c} ({v})" if v else c)
            for c, v in zip(
                field("colour_group_name").to_pylist(),
                field("perceived_colour_value_name").to_pylist(),
            )
        ]
        text = compose_text(
            [
                ("", field("prod_name")),
                ("Type", field("product_type_name")),
                ("Group", field("product_group_name")),
                ("Colour", colour),
                ("Section", field("section_name")),
                ("Garment", field("garment_group_name")),
                ("Department", field("index_name")),
                ("", field("detail_desc")),
            ],
            n,
        )
        title = field("prod_name")
        category = field("product_type_name")
        no_row = int((~has_row).sum())
        if no_row:
            notes.append(f"{no_row:,} items have no article row: text = null (image kept)")
        unsold = articles.num_rows - int(
            pc.sum(pc.is_in(articles.column("article_id"), value_set=purchased)).as_py()
        )
        if unsold and catalog != "all":
            notes.append(
                f"{unsold:,} article rows were never purchased and are not in the "
                "catalog (--catalog all keeps them)"
            )

    images = image_index(source / "images")
    paths = [images.get(i) for i in ids.to_pylist()]
    missing = sum(p is None for p in paths)
    if missing:
        notes.append(f"{missing:,} items have no image file: image_uri = null (text kept)")

    price = None
    if prices is not None:
        import pandas as pd

        med = (
            pd.Series(prices.to_numpy(zero_copy_only=False))
            .groupby(article_ids.to_numpy(zero_copy_only=False))
            .median()
        )
        price = med.reindex(ids.to_pylist()).to_numpy()
        price = pa.array(price, pa.float64(), from_pandas=True)

    items = source_items(
        ids, title=title, text=text, image_path=paths, category=category, price=price
    )
    events = events_table(article_ids, user_id=customers, timestamp=when)
    return SourceData(
        FORMAT,
        str(source),
        items,
        events,
        SessionRule("day"),
        image_roots=[str((source / "images").resolve())] if images else [],
        notes=notes,
        info={"price": "median transaction price"},
    )
