"""Dense item indices: assigned once, stable forever, new items appended.

``item_idx`` runs 1..N with 0 reserved for padding. An item keeps its index across re-ingests;
items never seen before get the next indices in a deterministic order (numeric order when every
new id is an integer string, else lexicographic), whatever order the source rows came in.
"""
from __future__ import annotations

from typing import Iterable, Mapping


def _order_key(ids: list[str]):
    if all(i.isdigit() for i in ids):
        return lambda s: (len(s.lstrip("0")), s.lstrip("0"), s)
    return lambda s: s


def assign_item_idx(new_ids: Iterable[str], existing: Mapping[str, int] | None = None) -> dict[str, int]:
    """Map every id to its item_idx: existing ids keep theirs, unseen ids are appended.

    Duplicates in ``new_ids`` are fine (an id gets one index). ``existing`` must itself be dense
    1..M; the result is dense 1..N with N = M + number of unseen ids.
    """
    mapping = dict(existing or {})
    if mapping and sorted(mapping.values()) != list(range(1, len(mapping) + 1)):
        raise ValueError("existing item_idx values are not dense 1..M")
    unseen = sorted({str(i) for i in new_ids} - mapping.keys())
    unseen.sort(key=_order_key(unseen))
    start = len(mapping) + 1
    for offset, item_id in enumerate(unseen):
        mapping[item_id] = start + offset
    return mapping
