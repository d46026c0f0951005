"""Splits and catalog read into flat arrays, and batches cut from them without Python loops.

A split part is kept as one CSR pair (``flat`` item_idx values + ``offsets``) plus ``targets``;
a batch is the last ``max_len`` items of each chosen case, left-padded with 0, gathered with
one vectorised index. Everything is keyed by ``item_idx`` (row 0 = padding).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from schemas.errors import ContractError
from schemas.fs import Workspace
from schemas.io import list_protocols, read_items, read_split


@dataclass
class Cases:
    """One split part: case i has input ``flat[offsets[i]:offsets[i+1]]`` and ``targets[i]``."""

    session_ids: pa.Array
    flat: np.ndarray  # int64
    offsets: np.ndarray  # int64, len = n_cases + 1
    targets: np.ndarray  # int64
    info: dict

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def from_table(cls, table: pa.Table, info: dict | None = None) -> "Cases":
        items = table.column("items").combine_chunks()
        offsets = items.offsets.to_numpy().astype(np.int64)
        flat = items.flatten().to_numpy().astype(np.int64, copy=False)
        offsets = offsets - offsets[0]
        return cls(session_ids=table.column("session_id").combine_chunks(), flat=flat,
                   offsets=offsets, targets=table.column("target").to_numpy().astype(np.int64),
                   info=dict(info or {}))

    @classmethod
    def from_lists(cls, sequences: list[list[int]], targets: list[int],
                   session_ids: list[str] | None = None) -> "Cases":
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = np.array([i for s in sequences for i in s], dtype=np.int64)
        ids = session_ids or [str(i) for i in range(len(sequences))]
        return cls(session_ids=pa.array(ids, pa.string()), flat=flat, offsets=offsets,
                   targets=np.asarray(targets, dtype=np.int64), info={})

    def window(self, rows: np.ndarray, max_len: int) -> np.ndarray:
        """(B, max_len) int64: the last items of each case, right-aligned, 0-padded on the left."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        cols = np.arange(max_len, dtype=np.int64)
        lens = np.minimum(ends - starts, max_len)
        src = ends[:, None] - max_len + cols[None, :]
        valid = cols[None, :] >= (max_len - lens)[:, None]
        return np.where(valid, self.flat[np.where(valid, src, 0)], 0)


@dataclass
class Batch:
    """Tensors of one batch; ``rows`` are the case indices in their split part."""

    items: torch.Tensor  # (B, L) long, left-padded
    target: torch.Tensor  # (B,) long
    rows: torch.Tensor  # (B,) long
    targets_all: torch.Tensor | None = None  # (B, L) next item at every position (0 = none)

    def to(self, device: torch.device | str) -> "Batch":
        if torch.device(device).type == "cpu":
            return self
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.items), move(self.target), move(self.rows), move(self.targets_all))

    def __len__(self) -> int:
        return int(self.target.shape[0])


def make_batch(cases: Cases, rows: np.ndarray, max_len: int, all_positions: bool = False) -> Batch:
    """The batch is only as wide as its longest case (at most ``max_len``): short-session data
    does not pay for padding columns, and right alignment keeps every position embedding."""
    rows = np.asarray(rows, dtype=np.int64)
    longest = (cases.offsets[rows + 1] - cases.offsets[rows]).max() if len(rows) else 1
    width = int(min(max_len, longest))
    items = cases.window(rows, width)
    targets_all = None
    if all_positions:
        # next item at every position: the input shifted left by one, the case target last
        nxt = np.zeros_like(items)
        nxt[:, :-1] = items[:, 1:]
        nxt[:, -1] = cases.targets[rows]
        nxt[items == 0] = 0
        targets_all = torch.from_numpy(nxt)
    return Batch(items=torch.from_numpy(items), target=torch.from_numpy(cases.targets[rows]),
                 rows=torch.from_numpy(np.asarray(rows, dtype=np.int64)), targets_all=targets_all)


def iterate_batches(cases: Cases, batch_size: int, max_len: int, rows: np.ndarray | None = None):
    """Evaluation order: consecutive slices of ``rows`` (default all cases)."""
    rows = np.arange(len(cases)) if rows is None else rows
    for start in range(0, len(rows), batch_size):
        yield make_batch(cases, rows[start:start + batch_size], max_len)


# ---- sessions and popularity --------------------------------------------------------------------

@dataclass
class Sessions:
    """Whole train sessions (input + target of each session's longest case), in split order."""

    flat: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return int(self.offsets.shape[0] - 1)


def train_sessions(cases: Cases) -> Sessions:
    """One sequence per session_id: its longest case plus that case's target.

    A prefix-expanded split has one case per prefix; counting every case would count early
    items many times. The longest case of a session already holds all of its events.
    """
    codes = pc.dictionary_encode(cases.session_ids).indices.to_numpy(zero_copy_only=False)
    lengths = cases.lengths
    order = np.lexsort((np.arange(len(cases)), lengths, codes))  # by session, then length, row
    last = np.r_[codes[order][1:] != codes[order][:-1], True]
    pick = np.sort(order[last])  # longest case per session, in split (time) order
    starts, n_in = cases.offsets[pick], lengths[pick]
    offsets = np.concatenate([[0], np.cumsum(n_in + 1)]).astype(np.int64)
    owner = np.repeat(np.arange(len(pick)), n_in)
    j = np.arange(int(n_in.sum())) - np.repeat(np.cumsum(n_in) - n_in, n_in)
    flat = np.empty(offsets[-1], dtype=np.int64)
    flat[offsets[owner] + j] = cases.flat[starts[owner] + j]
    flat[offsets[1:] - 1] = cases.targets[pick]
    return Sessions(flat=flat, offsets=offsets)


def item_popularity(sessions: Sessions, n_items: int) -> np.ndarray:
    """Train events per item_idx (index 0 = padding, always 0)."""
    counts = np.bincount(sessions.flat, minlength=n_items + 1).astype(np.int64)
    counts[0] = 0
    return counts


def long_tail_items(popularity: np.ndarray, share: float) -> np.ndarray:
    """Boolean mask over item_idx: the least popular items that together carry ``share`` of the
    train events (items never seen in train are in the tail). Ties broken by item_idx."""
    counts = popularity[1:]
    order = np.lexsort((np.arange(counts.size), counts))
    cum = np.cumsum(counts[order])
    total = max(int(cum[-1]) if cum.size else 0, 1)
    in_tail = cum <= share * total
    tail = np.zeros(popularity.size, dtype=bool)
    tail[1 + order[in_tail]] = True
    return tail


def popularity_buckets(popularity: np.ndarray, n_buckets: int) -> tuple[np.ndarray, list[str]]:
    """Bucket id per item_idx by train-popularity quantiles of the seen items; bucket 0 holds
    the items never seen in train. Labels give each bucket's count range."""
    seen = popularity[1:][popularity[1:] > 0]
    edges = np.unique(np.quantile(seen, np.linspace(0, 1, n_buckets + 1)[1:-1])) if seen.size else []
    bucket = np.zeros(popularity.size, dtype=np.int64)
    bucket[popularity > 0] = 1 + np.searchsorted(edges, popularity[popularity > 0], side="right")
    labels = ["unseen"]
    for b in range(1, len(edges) + 2):
        members = popularity[bucket == b]
        labels.append(f"{members.min()}-{members.max()}" if members.size else "-")
    return bucket, labels


# ---- catalog --------------------------------------------------------------------------------------

@dataclass
class Catalog:
    """What the trainer needs from the catalog, indexed by item_idx (row 0 = padding)."""

    n_items: int
    item_ids: np.ndarray  # object, '' at 0
    titles: np.ndarray | None  # object or None
    attributes: dict[str, np.ndarray]  # name -> int64 code per item (0 = absent)
    attribute_sizes: dict[str, int]  # name -> codes incl. 0

    def lookup(self, ids: list[str], where: str = "--items") -> np.ndarray:
        index = {iid: i for i, iid in enumerate(self.item_ids) if i}
        unknown = [i for i in ids if i not in index]
        if unknown:
            raise ContractError(where, f"unknown item_id(s) {unknown[:5]}"
                                + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
                                + " (not in the run's catalog)")
        return np.array([index[i] for i in ids], dtype=np.int64)


def read_catalog(ws: Workspace, attributes: list[str]) -> Catalog:
    table = read_items(ws)
    idx = table.column("item_idx").to_numpy()
    n_items = len(idx)  # read_items has checked that item_idx is dense 1..N
    ids = np.empty(n_items + 1, dtype=object)
    ids[0] = ""
    ids[idx] = np.asarray(table.column("item_id").to_pylist(), dtype=object)
    titles = None
    if table.column("title").null_count < table.num_rows:
        titles = np.empty(n_items + 1, dtype=object)
        titles[idx] = np.asarray(table.column("title").to_pylist(), dtype=object)
    attrs, sizes = {}, {}
    for name in attributes:
        col = pc.dictionary_encode(table.column(name).combine_chunks())
        codes = col.indices.to_numpy(zero_copy_only=False)
        code = np.zeros(n_items + 1, dtype=np.int64)
        present = ~np.asarray(col.indices.is_null().to_numpy(zero_copy_only=False))
        code[idx[present]] = codes[present].astype(np.int64) + 1
        attrs[name] = code
        sizes[name] = len(col.dictionary) + 1
    return Catalog(n_items=n_items, item_ids=ids, titles=titles, attributes=attrs,
                   attribute_sizes=sizes)


def choose_protocol(ws: Workspace, protocol: str | None) -> str:
    found = list_protocols(ws)
    if protocol is not None:
        if protocol not in found:
            raise ContractError(ws.display("splits"), f"no split protocol {protocol!r}; found "
                                f"{found or 'none (run macl split first)'}")
        return protocol
    if len(found) != 1:
        raise ContractError(ws.display("splits"), "choose a split protocol with --protocol; "
                            f"found {found or 'none (run macl split first)'}")
    return found[0]


def read_cases(ws: Workspace, protocol: str, part: str, n_items: int) -> Cases:
    table, info = read_split(ws, protocol, part)
    split_n = info.get("n_items")
    if split_n is not None and int(split_n) > n_items:
        raise ContractError(ws.display("splits", protocol, f"{part}.parquet"),
                            f"split was made for {split_n} items but the catalog has {n_items}")
    return Cases.from_table(table, info)
