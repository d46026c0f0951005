"""SR-GNN / GCE-GNN session pickles and the MACL paper's (inputs, targets) splits, ID-only.

Two forms, each as a pickle (``.txt``) or its Parquet twin:
  sessions form: ``all_train_seq`` = a list of sessions (lists of int item ids);
  cases form:    ``train``/``test`` = a tuple (inputs: list of lists of int, targets: list of int).
A folder holds ``all_train_seq`` or ``train``, plus ``test``. Pickles are read with an
unpickler that refuses every global (no class, no function: nothing can run) and then checked to
hold only lists, tuples and ints.

The source's split is kept: ``W/splits/given/``. Training sessions are prefix-expanded (every
s[:k] -> s[k]); training cases stay as given; validation is the last ``valid_fraction`` of the
training sessions (cases form: of the training cases, cut where a session starts). Test cases
stay exactly as given.

Events (documented choice: no timestamps are invented): one event per item of every session
the files let us rebuild, in file order, with ``session_id`` "train:<n>" / "test:<n>", no
user, no timestamp. A prefix-expanded cases file (SR-GNN writes s[:-1]->s[-1], s[:-2]->s[-2],
... on consecutive rows) is folded back into its sessions, so no event is counted twice; a
cases file that is not expanded (the MACL splits) gives one session per case.
"""

from __future__ import annotations

import io
import pickle
from itertools import chain
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.ingest.base import SourceData, events_table, source_items
from pipeline.sessions import SessionRule, Sessions, prefix_cases
from pipeline.splits import carve, cases_table
from schemas.errors import ContractError
from schemas.tables import SPLIT

FORMAT = "srgnn"
EXPANDED_SHARE = 0.5  # a cases file is prefix-expanded when this share of rows continue the last


class RestrictedUnpickler(pickle.Unpickler):
    """Admits the opcodes that build lists, tuples and ints; refuses every global lookup."""

    def __init__(self, file: io.BufferedIOBase, path: str) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):  # noqa: D102 - refusing is the point
        raise ContractError(
            self.path,
            f"the pickle refers to the global {module}.{name}; only "
            "lists, tuples and ints are admitted (nothing is executed)",
        )

    def persistent_load(self, pid):  # noqa: D102
        raise ContractError(
            self.path, "the pickle uses persistent ids; only lists, tuples and ints are admitted"
        )


def restricted_load(path: Path) -> object:
    """Load a pickle of plain containers and ints; anything else is a ContractError."""
    with open(path, "rb") as f:
        try:
            return RestrictedUnpickler(f, str(path)).load()
        except ContractError:
            raise
        except (
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            AttributeError,
            IndexError,
            KeyError,
            OverflowError,
            MemoryError,
        ) as exc:
            raise ContractError(str(path), f"is not a readable pickle ({exc})") from None


def _int_lists(value: object, path: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """A list of int lists -> (flat values, offsets); the first non-conforming row is named."""
    if type(value) not in (list, tuple):
        raise ContractError(
            path, f"{what} must be a list of lists of int, got {type(value).__name__}"
        )
    bad = [i for i, s in enumerate(value) if type(s) not in (list, tuple)]
    if bad:
        raise ContractError(
            path,
            f"{what}: rows must be lists of int",
            column=what,
            rows=bad[:5],
            values=[type(value[i]).__name__ for i in bad[:5]],
            total=len(bad),
        )
    lengths = np.fromiter(map(len, value), dtype=np.int64, count=len(value))
    if set(map(type, chain.from_iterable(value))) - {int}:
        bad = [i for i, s in enumerate(value) if set(map(type, s)) - {int}][:5]
        raise ContractError(
            path,
            f"{what}: only ints are admitted inside the rows",
            column=what,
            rows=bad,
            values=[value[i][:10] for i in bad],
        )
    try:
        flat = np.fromiter(chain.from_iterable(value), dtype=np.int64, count=int(lengths.sum()))
    except OverflowError:
        raise ContractError(path, f"{what}: an item id does not fit in 64 bits") from None
    offsets = np.zeros(len(value) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return flat, offsets


def _ints(value: object, path: str, what: str) -> np.ndarray:
    if type(value) not in (list, tuple) or set(map(type, value)) - {int}:
        raise ContractError(path, f"{what} must be a list of int")
    return np.fromiter(value, dtype=np.int64, count=len(value))


def _read_pickle(path: Path, form: str):
    obj = restricted_load(path)
    shown = str(path)
    if form == "sessions":
        return _int_lists(obj, shown, "sessions")
    if type(obj) not in (list, tuple) or len(obj) != 2:
        raise ContractError(shown, "must be a pair (inputs, targets)")
    values, offsets = _int_lists(obj[0], shown, "inputs")
    targets = _ints(obj[1], shown, "targets")
    if len(targets) != len(offsets) - 1:
        raise ContractError(shown, f"{len(offsets) - 1} inputs but {len(targets)} targets")
    return values, offsets, targets


def _list_column(table: pa.Table, name: str, path: str) -> tuple[np.ndarray, np.ndarray]:
    col = table.column(name).combine_chunks()
    if not (
        pa.types.is_list(col.type) or pa.types.is_large_list(col.type)
    ) or not pa.types.is_integer(col.type.value_type):
        raise ContractError(path, f"must be a list of integers, found {col.type}", column=name)
    if col.null_count or col.values.null_count:
        rows = np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))
        raise ContractError(path, "null rows or null items", column=name, rows=rows[:5].tolist())
    lengths = pc.list_value_length(col).to_numpy().astype(np.int64)
    offsets = np.zeros(len(col) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return col.flatten().to_numpy().astype(np.int64), offsets


def _read_parquet(path: Path, form: str):
    shown = str(path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ContractError(shown, f"is not a readable Parquet file ({exc})") from None
    if form == "sessions":
        name = "items" if "items" in table.column_names else None
        if name is None:
            raise ContractError(
                shown, f"missing column 'items'; found {table.column_names}", column="items"
            )
        return _list_column(table, name, shown)
    for c in ("input", "target"):
        if c not in table.column_names:
            raise ContractError(
                shown, f"missing column {c!r}; found {table.column_names}", column=c
            )
    values, offsets = _list_column(table, "input", shown)
    target = table.column("target").combine_chunks()
    if not pa.types.is_integer(target.type) or target.null_count:
        raise ContractError(
            shown, f"must be non-null integers, found {target.type}", column="target"
        )
    return values, offsets, target.to_numpy().astype(np.int64)


def _find(source: Path, stem: str, files: str) -> Path | None:
    order = {"auto": (".parquet", ".txt"), "parquet": (".parquet",), "pickle": (".txt",)}[files]
    for ext in order:
        if (source / f"{stem}{ext}").is_file():
            return source / f"{stem}{ext}"
    return None


def _read(path: Path, form: str):
    return _read_parquet(path, form) if path.suffix == ".parquet" else _read_pickle(path, form)


def continues_previous(
    values: np.ndarray, offsets: np.ndarray, targets: np.ndarray
) -> tuple[np.ndarray, str]:
    """Which cases continue the case before them in a prefix-expanded file, and the direction.

    ``longest-first`` (SR-GNN): case i's input + [target] equals case i-1's input;
    ``shortest-first``: case i's input equals case i-1's input + [target].
    """
    n = len(targets)
    lengths = np.diff(offsets)
    best = (np.zeros(n, dtype=bool), "none")
    for direction in ("longest-first", "shortest-first"):
        cont = np.zeros(n, dtype=bool)
        if n > 1:
            i = np.arange(1, n)
            if direction == "longest-first":
                cand = i[lengths[i] + 1 == lengths[i - 1]]
                short, long_, short_t = cand, cand - 1, targets[cand]
            else:
                cand = i[lengths[i] == lengths[i - 1] + 1]
                short, long_, short_t = cand - 1, cand, targets[cand - 1]
            k = lengths[short]
            owner = np.repeat(np.arange(len(cand)), k)
            rel = np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k)
            same = values[offsets[short][owner] + rel] == values[offsets[long_][owner] + rel]
            ok = np.bincount(owner[~same], minlength=len(cand)) == 0
            ok &= short_t == values[offsets[long_] + k]
            cont[cand[ok]] = True
        if cont.sum() > best[0].sum():
            best = (cont, direction)
    return best


def _with_targets(
    values: np.ndarray, offsets: np.ndarray, targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each case's input followed by its target, as (values, offsets)."""
    full = np.insert(values, offsets[1:], targets)
    return full, offsets + np.arange(len(offsets), dtype=np.int64)


def _fold_cases(values, offsets, targets, expanded: str, prefix: str):
    """Rebuild the sessions behind a cases file: (Sessions of the full sequences, case -> session).

    Not expanded: one session per case. Expanded: runs of continuing cases are one session,
    whose full sequence is the longest case's input + target.
    """
    cont, direction = continues_previous(values, offsets, targets)
    share = cont.mean() if len(cont) else 0.0
    is_expanded = share >= EXPANDED_SHARE if expanded == "auto" else expanded == "yes"
    if not is_expanded:
        cont = np.zeros(len(targets), dtype=bool)
    session_of_case = np.cumsum(~cont) - 1
    starts = np.flatnonzero(~cont)
    ends = np.r_[starts[1:], len(targets)] - 1
    longest = starts if direction != "shortest-first" else ends
    full, full_off = _with_targets(values, offsets, targets)
    keys = np.array([f"{prefix}:{i}" for i in range(len(starts))], dtype=object)
    cases = Sessions(
        np.zeros(len(targets), dtype=object), full_off, full, np.arange(len(full), dtype=np.int64)
    )
    sessions = cases.select(longest)
    sessions.keys = keys
    return (
        sessions,
        session_of_case,
        {
            "prefix_expanded": bool(is_expanded),
            "continuing_share": round(float(share), 4),
            "direction": direction if is_expanded else None,
        },
    )


def _cases_from_arrays(values, offsets, targets, keys) -> pa.Table:
    items = pa.ListArray.from_arrays(
        pa.array(offsets.astype(np.int32)), pa.array(values, pa.int64())
    )
    return pa.Table.from_arrays(
        [pa.array(keys, pa.string()), items, pa.array(targets, pa.int64())], schema=SPLIT
    )


def load(
    source: Path, *, files: str = "auto", expanded: str = "auto", valid_fraction: float = 0.1
) -> SourceData:
    source = Path(source).resolve()
    if files not in ("auto", "parquet", "pickle"):
        raise ValueError(f"files must be auto, parquet or pickle, got {files!r}")
    if expanded not in ("auto", "yes", "no"):
        raise ValueError(f"expanded must be auto, yes or no, got {expanded!r}")
    if not 0 <= valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    train_path = _find(source, "all_train_seq", files)
    train_form = "sessions"
    if train_path is None:
        train_path, train_form = _find(source, "train", files), "cases"
    test_path = _find(source, "test", files)
    if train_path is None or test_path is None:
        want = {"auto": ".txt or .parquet", "parquet": ".parquet", "pickle": ".txt"}[files]
        raise ContractError(str(source), f"needs all_train_seq or train, and test ({want})")

    test_values, test_offsets, test_targets = _read(test_path, "cases")
    if train_form == "sessions":
        tv, to = _read(train_path, "sessions")
        short = np.flatnonzero(np.diff(to) < 2)
        if short.size:
            raise ContractError(
                str(train_path),
                "sessions need at least 2 items",
                column="sessions",
                rows=short[:5].tolist(),
                total=int(short.size),
            )
        train_targets = None
    else:
        tv, to, train_targets = _read(train_path, "cases")
    for path, off in ((test_path, test_offsets), (train_path, to)):
        empty = np.flatnonzero(np.diff(off) == 0)
        if empty.size:
            raise ContractError(
                str(path), "empty input sequences", rows=empty[:5].tolist(), total=int(empty.size)
            )

    pieces = [tv, test_values, test_targets] + (
        [train_targets] if train_targets is not None else []
    )
    ids = np.unique(np.concatenate(pieces))
    local = lambda a: np.searchsorted(ids, a)  # noqa: E731 - ids are sorted and hold every value

    given_info = {
        "files": {"train": train_path.name, "test": test_path.name},
        "train_form": train_form,
        "valid_fraction": valid_fraction,
    }
    test_sessions, test_case_session, test_fold = _fold_cases(
        local(test_values), test_offsets, local(test_targets), expanded, "test"
    )
    given_info["test"] = test_fold
    test_table = _cases_from_arrays(
        local(test_values), test_offsets, local(test_targets), test_sessions.keys[test_case_session]
    )
    if train_form == "sessions":
        train_sessions = Sessions(
            np.array([f"train:{i}" for i in range(len(to) - 1)], dtype=object),
            to,
            local(tv),
            np.arange(len(tv), dtype=np.int64),
        )
        fit, valid = carve(train_sessions, valid_fraction)
        train_table = cases_table(fit, prefix_cases(fit.offsets))
        valid_table = cases_table(valid, prefix_cases(valid.offsets))
        given_info["valid"] = (
            f"last {valid_fraction:.0%} of the training sessions; train and "
            "valid sessions prefix-expanded"
        )
    else:
        train_sessions, case_session, train_fold = _fold_cases(
            local(tv), to, local(train_targets), expanded, "train"
        )
        given_info["train"] = train_fold
        all_train = _cases_from_arrays(
            local(tv), to, local(train_targets), train_sessions.keys[case_session]
        )
        n_sessions = len(train_sessions)
        n_valid = int(round(n_sessions * valid_fraction))
        if valid_fraction > 0 and n_valid == 0 and n_sessions >= 2:
            n_valid = 1
        cut = (
            int(np.searchsorted(case_session, n_sessions - n_valid))
            if n_valid
            else len(case_session)
        )
        train_table, valid_table = all_train.slice(0, cut), all_train.slice(cut)
        given_info["valid"] = (
            f"last {valid_fraction:.0%} of the training cases, cut where a session starts"
        )
    given_info["test_cases"] = "as given"

    all_sessions = [train_sessions, test_sessions]
    keys = np.concatenate([s.keys[np.repeat(np.arange(len(s)), s.lengths)] for s in all_sessions])
    flat = np.concatenate([s.items for s in all_sessions])
    item_ids = pa.array(ids.astype(str), pa.string())
    events = events_table(item_ids.take(pa.array(flat)), session_id=pa.array(keys, pa.string()))
    notes = [
        f"ID-only source: no text, no images, no timestamps; events rebuild "
        f"{len(train_sessions):,} train + {len(test_sessions):,} test sessions"
    ]
    if test_fold["prefix_expanded"]:
        notes.append(
            f"test cases are prefix-expanded ({test_fold['direction']}); "
            f"{len(test_table):,} cases fold into {len(test_sessions):,} sessions"
        )
    return SourceData(
        FORMAT,
        str(source),
        source_items(item_ids),
        events,
        SessionRule("id"),
        given={"train": train_table, "valid": valid_table, "test": test_table},
        given_info=given_info,
        notes=notes,
        info={"id_only": True},
    )
