"""RecBole atomic files: ``.inter`` + ``.item`` (and the UniSRec/CoWPiRec text layout).

Headers are ``name:type`` (token, token_seq, float, float_seq), files tab-separated, unquoted.
Two shapes of interactions are read:
  plain       ``<name>.inter`` (user_id, item_id[, timestamp][, session_id]): the events;
  sequential  ``<name>.train.inter`` / ``.valid.inter`` / ``.test.inter``
              (user_id, item_id_list, item_id): a pre-split source, kept as the given split
              (validation = the last 10% of training rows, cut between users, when there is
              no valid file).
Items come from ``<name>.item`` (text = its text fields in order, title/categories/brand/price
picked out) or ``<name>.text`` (item_id, text). With ``<name>.item2index`` /
``<name>.user2index`` the ``.inter`` files hold indices, mapped back to the original ids.

Events of a sequential source (documented choice, no timestamps invented): each user's
sequence rebuilt from its rows (every row's history is a window ending where the next row's
target follows), one event per item, user_id set, no session_id, no timestamp. ``macl split
--protocol loo --sessions user --order source --keep-repeats`` then rebuilds the given split.
"""

from __future__ import annotations

from collections import defaultdict, deque
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.ingest.base import (
    SourceData,
    catalog_ids,
    check_known_items,
    compose_text,
    events_table,
    key_column,
    match_rows,
    numbers,
    positions,
    read_csv,
    refuse_duplicates,
    refuse_rows,
    source_items,
)
from pipeline.sessions import SessionRule
from schemas.errors import ContractError
from schemas.tables import SPLIT
from schemas.validate import coerce_timestamps

FORMAT = "recbole"
PARTS = ("train", "valid", "test")
TEXT_TYPES = ("token", "token_seq")


def _read_atomic(path: Path) -> tuple[pa.Table, dict[str, str]]:
    """An atomic file with ``name:type`` headers renamed to ``name``; returns the types too."""
    table = read_csv(path, delimiter="\t", quoting=False)
    names, types = [], {}
    for header in table.column_names:
        name, _, kind = header.partition(":")
        names.append(name)
        types[name] = kind or "token"
    return table.rename_columns(names), types


def _dataset_name(source: Path, dataset: str | None) -> str:
    if dataset:
        return dataset
    stems = set()
    for p in source.iterdir():
        for suffix in (".train.inter", ".valid.inter", ".test.inter", ".inter", ".item", ".text"):
            if p.name.endswith(suffix):
                stems.add(p.name[: -len(suffix)])
                break
    if len(stems) != 1:
        raise ContractError(
            str(source), f"expected the files of one dataset, found {sorted(stems)}; pass --dataset"
        )
    return stems.pop()


def _index_map(path: Path, what: str) -> pa.Table:
    """``<name>.item2index``/``user2index``: original id -> index, both unique."""
    table = read_csv(path, delimiter="\t", quoting=False, column_names=["id", "index"])
    ids = key_column(table, "id", str(path))
    index = numbers(table, "index", str(path), integer=True, non_negative=True)
    refuse_duplicates(ids, str(path), "id", f"duplicate {what} ids")
    refuse_duplicates(index, str(path), "index", f"duplicate {what} indices")
    return pa.table({"id": ids, "index": index})


def _decode(values: pa.Array, index: pa.Table | None, path: str, column: str) -> pa.Array:
    """Indices -> original ids through an index file (unknown indices are refused)."""
    if index is None:
        return values
    ints = numbers(pa.table({column: values}), column, path, integer=True)
    pos = positions(ints, index.column("index").combine_chunks())
    if (pos < 0).any():
        refuse_rows(
            pos < 0, path, "indices missing from the index file", column=column, values=ints
        )
    return index.column("id").combine_chunks().take(pa.array(pos))


def _items(source: Path, name: str) -> tuple[pa.Table | None, str | None]:
    """The item file as SOURCE-like columns (item_id, title, text, category, brand, price)."""
    item_path, text_path = source / f"{name}.item", source / f"{name}.text"
    if item_path.is_file():
        table, types = _read_atomic(item_path)
        shown = str(item_path)
        ids = key_column(table, "item_id", shown)
        refuse_duplicates(ids, shown, "item_id", "duplicate item_id")
        fields = [c for c in table.column_names if c != "item_id" and types[c] in TEXT_TYPES]
        text = compose_text(
            [
                ("" if c == "title" else c.replace("_", " ").capitalize(), table.column(c))
                for c in fields
            ],
            table.num_rows,
        )

        def pick(*names: str) -> pa.ChunkedArray | None:
            return next((table.column(n) for n in names if n in table.column_names), None)

        price = numbers(table, "price", shown) if "price" in table.column_names else None
        columns = {
            "item_id": ids,
            "title": pick("title", "movie_title"),
            "text": pa.array(text, pa.string()),
            "category": pick("categories", "category", "genre", "class"),
            "brand": pick("brand"),
            "price": price,
        }  # fields the file lacks stay absent (null in the catalog)
        return pa.table({k: v for k, v in columns.items() if v is not None}), shown
    if text_path.is_file():
        table, _ = _read_atomic(text_path)
        shown = str(text_path)
        if "item_id" not in table.column_names or "text" not in table.column_names:
            raise ContractError(
                shown,
                f"needs columns item_id and text; found {table.column_names}",
                column="item_id",
            )
        ids = key_column(table, "item_id", shown)
        refuse_duplicates(ids, shown, "item_id", "duplicate item_id")
        text = [
            None if t is None else " ".join(t.split()) or None
            for t in table.column("text").to_pylist()
        ]
        return pa.table({"item_id": ids, "text": pa.array(text, pa.string())}), shown
    return None, None


def rebuild_sequences(
    groups: list[str], histories: list[list[str]], targets: list[str]
) -> tuple[list[str], list[list[str]]]:
    """Each group's full sequence from its (history -> target) rows, in first-appearance order.

    A row's history is the window (at most ``cap`` items, the longest history seen) that ends
    just before its target; start from the shortest history and follow the windows. Rows that
    do not chain are bad input.
    """
    cap = max((len(h) for h in histories), default=0)
    rows: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        rows[g].append(i)
    out_groups, out_seqs = [], []
    for g, idx in rows.items():
        idx.sort(key=lambda i: len(histories[i]))
        first = idx[0]
        seq = [*histories[first], targets[first]]
        pending: dict[tuple, deque] = defaultdict(deque)
        for i in idx[1:]:
            pending[tuple(histories[i])].append(targets[i])
        left = len(idx) - 1
        while left:
            queue = pending.get(tuple(seq[-cap:]))
            if not queue:
                break
            seq.append(queue.popleft())
            left -= 1
        if left:
            raise ValueError(g)
        out_groups.append(g)
        out_seqs.append(seq)
    return out_groups, out_seqs


def _sequential_part(path: Path, user_index: pa.Table | None, item_index: pa.Table | None):
    table, _ = _read_atomic(path)
    shown = str(path)
    group = "user_id" if "user_id" in table.column_names else "session_id"
    for c in (group, "item_id_list", "item_id"):
        if c not in table.column_names:
            raise ContractError(
                shown, f"missing column {c!r}; found {table.column_names}", column=c
            )
    users = _decode(key_column(table, group, shown), user_index, shown, group)
    hist = table.column("item_id_list").combine_chunks()
    empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(hist.fill_null(""))), 0)
    mask = empty.to_numpy(zero_copy_only=False)
    if mask.any():
        refuse_rows(mask, shown, "empty history", column="item_id_list")
    lists = pc.split_pattern_regex(pc.utf8_trim_whitespace(hist), r"\s+")
    flat = _decode(lists.flatten(), item_index, shown, "item_id_list")
    target = _decode(key_column(table, "item_id", shown), item_index, shown, "item_id")
    offsets = lists.offsets
    return users, pa.ListArray.from_arrays(offsets, flat), target


def load(
    source: Path,
    *,
    dataset: str | None = None,
    catalog: str = "events",
    valid_fraction: float = 0.1,
    timestamp_unit: str = "s",
) -> SourceData:
    source = Path(source).resolve()
    name = _dataset_name(source, dataset)
    item_index = (
        _index_map(source / f"{name}.item2index", "item")
        if (source / f"{name}.item2index").is_file()
        else None
    )
    user_index = (
        _index_map(source / f"{name}.user2index", "user")
        if (source / f"{name}.user2index").is_file()
        else None
    )
    catalog_rows, catalog_path = _items(source, name)
    parts = {
        p: source / f"{name}.{p}.inter" for p in PARTS if (source / f"{name}.{p}.inter").is_file()
    }
    plain = source / f"{name}.inter"
    notes: list[str] = []
    given = given_info = None
    if parts:
        if "train" not in parts or "test" not in parts:
            raise ContractError(
                str(source),
                f"pre-split files need {name}.train.inter and "
                f"{name}.test.inter; found {sorted(parts)}",
            )
        header = (_read_atomic(parts["train"])[0]).column_names
        if "item_id_list" not in header:
            raise ContractError(
                str(parts["train"]),
                "pre-split files must be sequential "
                "(user_id, item_id_list, item_id); merge plain pre-split files "
                "into one .inter and use `macl split`",
                column="item_id_list",
            )
        read = {p: _sequential_part(path, user_index, item_index) for p, path in parts.items()}
        all_ids = pa.concat_arrays([a for u, h, t in read.values() for a in (h.values, t)])
        if catalog_rows is not None:
            for p, (_, h, t) in read.items():
                check_known_items(
                    h.values,
                    catalog_rows.column("item_id").combine_chunks(),
                    str(parts[p]),
                    "item_id_list",
                )
                check_known_items(
                    t, catalog_rows.column("item_id").combine_chunks(), str(parts[p]), "item_id"
                )
        groups, histories, targets = [], [], []
        for p in PARTS:
            if p in read:
                u, h, t = read[p]
                groups += u.to_pylist()
                histories += h.to_pylist()
                targets += t.to_pylist()
        try:
            users, sequences = rebuild_sequences(groups, histories, targets)
        except ValueError as exc:
            raise ContractError(
                str(source),
                f"the rows of user {exc} do not form one sequence "
                "(each history must end just before the next target)",
            ) from None
        lengths = [len(s) for s in sequences]
        event_items = pa.array([i for s in sequences for i in s], pa.string())
        event_users = pa.array(np.repeat(np.array(users, dtype=object), lengths), pa.string())
        events = events_table(event_items, user_id=event_users)
        sessions_rule = SessionRule("user")
        ids = _catalog_ids(all_ids, catalog_rows, catalog)
        lookup = ids
        given = {}
        for p in ("train", "valid", "test"):
            if p not in read:
                continue
            u, h, t = read[p]
            pos_items = positions(h.values, lookup)
            given[p] = pa.Table.from_arrays(
                [
                    u,
                    pa.ListArray.from_arrays(h.offsets, pa.array(pos_items, pa.int64())),
                    pa.array(positions(t, lookup), pa.int64()),
                ],
                schema=SPLIT,
            )
        if "valid" not in given:
            given["train"], given["valid"] = _carve_rows(given["train"], valid_fraction)
            given_info = {
                "valid": f"last {valid_fraction:.0%} of the training rows, cut between users"
            }
        else:
            given_info = {"valid": "as given"}
        given_info.update(
            {"files": {p: path.name for p, path in parts.items()}, "sequences_rebuilt": len(users)}
        )
        notes.append(
            f"pre-split sequential source: events rebuild {len(users):,} user sequences "
            "(no timestamps in the source)"
        )
    elif plain.is_file():
        table, types = _read_atomic(plain)
        shown = str(plain)
        for c in ("item_id",):
            if c not in table.column_names:
                raise ContractError(
                    shown, f"missing column 'item_id'; found {table.column_names}", column="item_id"
                )
        item_ids = _decode(key_column(table, "item_id", shown), item_index, shown, "item_id")
        if catalog_rows is not None:
            check_known_items(
                item_ids, catalog_rows.column("item_id").combine_chunks(), shown, "item_id"
            )
        session = (
            key_column(table, "session_id", shown) if "session_id" in table.column_names else None
        )
        user = (
            _decode(key_column(table, "user_id", shown), user_index, shown, "user_id")
            if "user_id" in table.column_names
            else None
        )
        if session is None and user is None:
            raise ContractError(shown, "needs a user_id or a session_id column", column="user_id")
        when = None
        if "timestamp" in table.column_names:
            when = coerce_timestamps(
                numbers(table, "timestamp", shown, non_negative=True),
                shown,
                "timestamp",
                unit=timestamp_unit,
            )
        events = events_table(item_ids, session_id=session, user_id=user, timestamp=when)
        sessions_rule = SessionRule("id") if session is not None else SessionRule("user")
        ids = _catalog_ids(item_ids, catalog_rows, catalog)
    else:
        raise ContractError(str(source), f"no {name}.inter and no {name}.train.inter found")

    if catalog_rows is not None:
        _, field = match_rows(ids, catalog_rows, "item_id")
        items = source_items(
            ids,
            title=field("title") if "title" in catalog_rows.column_names else None,
            text=field("text"),
            category=field("category") if "category" in catalog_rows.column_names else None,
            brand=field("brand") if "brand" in catalog_rows.column_names else None,
            price=pc.cast(field("price"), pa.float64())
            if "price" in catalog_rows.column_names
            else None,
        )
        unused = catalog_rows.num_rows - int(
            pc.sum(pc.is_in(catalog_rows.column("item_id"), value_set=ids)).as_py()
        )
        if unused:
            notes.append(
                f"{unused:,} rows of {Path(catalog_path).name} have no interaction and are "
                "not in the catalog (--catalog all keeps them)"
            )
    else:
        items = source_items(ids)
        notes.append("no .item or .text file: ID-only items")
    return SourceData(
        FORMAT,
        str(source),
        items,
        events,
        sessions_rule,
        given=given,
        given_info=given_info or {},
        notes=notes,
        info={"dataset": name},
    )


def _catalog_ids(used: pa.Array, catalog_rows: pa.Table | None, catalog: str) -> pa.Array:
    listed = None if catalog_rows is None else catalog_rows.column("item_id").combine_chunks()
    return pa.array(sorted(catalog_ids(catalog, used, listed).to_pylist()), pa.string())


def _carve_rows(train: pa.Table, fraction: float) -> tuple[pa.Table, pa.Table]:
    """The last ``fraction`` of rows, moved back to where a user's rows start."""
    n = train.num_rows
    cut = n - int(round(n * fraction))
    users = train.column("session_id").to_pylist()
    while 0 < cut < n and users[cut] == users[cut - 1]:
        cut -= 1
    return train.slice(0, cut), train.slice(cut)
