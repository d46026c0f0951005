"""The feature store read into per-modality tables keyed by item_idx, with mask bits.

One table per (modality, view, sample); the tables of one modality are stacked into a
``(n_tables, n_items + 1, dim)`` array so that a view pick is an index, not a Python branch.
Items without an ``ok`` row get ``mask = False`` and a row that is never read as a feature.
Large stacks live in a memory-mapped file built once per (store manifest, selection) and
reused by later runs; the copy-on-write mapping keeps resident memory to the pages touched.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from schemas.errors import ContractError
from schemas.fs import Workspace
from schemas.hashing import sha256_bytes, sha256_json
from schemas.store import (FEATURES_DIR, MANIFEST_NAME, list_parts, list_views,
                           read_feature_matrix, read_manifest, read_part_info, read_view_info,
                           view_dir)


@dataclass(frozen=True)
class ViewKey:
    modality: str
    view: str
    sample: int

    @property
    def name(self) -> str:
        return f"{self.modality}/{self.view}/{self.sample}"


@dataclass
class FeatureBank:
    """Feature tables of the fused modalities and the contrast pool.

    ``values[m][k]`` is table k of modality m; ``pool`` lists every table as (modality, k) in
    a fixed order; ``fusion[m]`` is the table of the fusion view (sample 0) of modality m.
    """

    n_items: int
    values: dict[str, torch.Tensor]  # m -> (K_m, n_items + 1, d_m)
    masks: dict[str, torch.Tensor]  # m -> (K_m, n_items + 1) bool
    keys: dict[str, list[ViewKey]]  # m -> K_m keys
    fusion: dict[str, int]  # m -> k of the fusion view
    store_sha256: str | None
    mapped: bool = False  # True when values are a memory-mapped cache file
    pool: list[tuple[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.pool:
            self.pool = [(m, k) for m in self.modalities for k in range(len(self.keys[m]))]

    @property
    def modalities(self) -> list[str]:
        return sorted(self.values)

    def dim(self, modality: str) -> int:
        return int(self.values[modality].shape[-1])

    def pool_names(self) -> list[str]:
        return [self.keys[m][k].name for m, k in self.pool]

    def coverage(self) -> dict[str, float]:
        """Share of items with an ok row, per table (a report and manifest figure)."""
        return {self.keys[m][k].name: float(self.masks[m][k, 1:].float().mean())
                for m, k in self.pool}

    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.values.values())


def store_sha256(ws: Workspace) -> str | None:
    """sha256 of ``features/_manifest.json``; without a manifest, of every part's name, size and
    footer provenance (cheap: no data pages are read). None when there is no store."""
    if ws.exists(FEATURES_DIR, MANIFEST_NAME):
        return sha256_bytes(ws.read_bytes(FEATURES_DIR, MANIFEST_NAME))
    parts = []
    for m, v in list_views(ws):
        for name in list_parts(ws, m, v):
            size = ws.fs.get_file_info(ws.path(*view_dir(m, v), name)).size
            parts.append([m, v, name, size, read_part_info(ws, m, v, name)])
    return sha256_json(parts) if parts else None


def has_store(ws: Workspace) -> bool:
    return bool(list_views(ws))


def _samples_of(ws: Workspace, modality: str, view: str) -> int:
    manifest = read_manifest(ws)
    entry = manifest.views.get(f"{modality}/{view}") if manifest else None
    if entry is not None:
        return int(entry.samples)
    return int(read_view_info(ws, modality, view).get("samples", 1))


def select_tables(ws: Workspace, modalities: list[str] | None, views: list[str] | None,
                  samples: int | None, fusion_view: str) -> dict[str, list[ViewKey]]:
    """The tables to load: the fusion view of each modality first, then the contrast pool."""
    stored = list_views(ws)
    present = sorted({m for m, _ in stored})
    wanted = present if modalities is None else modalities
    missing = [m for m in wanted if m not in present]
    if missing:
        raise ContractError(ws.display(FEATURES_DIR), f"modalities {missing} are not in the store "
                            f"(found {present or 'none'}); run macl features or change "
                            "features.modalities")
    pool = None
    if views is not None:
        pool = set()
        for spec in views:
            m, sep, v = spec.partition("/")
            if not sep or (m, v) not in stored:
                raise ContractError(ws.display(FEATURES_DIR), f"features.views entry {spec!r} is "
                                    f"not a stored modality/view; stored: "
                                    f"{[f'{a}/{b}' for a, b in stored]}")
            pool.add((m, v))
    out: dict[str, list[ViewKey]] = {}
    for m in wanted:
        names = [v for mm, v in stored if mm == m]
        if fusion_view not in names:
            raise ContractError(ws.display(*view_dir(m, fusion_view)),
                                f"fusion view {fusion_view!r} of modality {m!r} is not in the "
                                f"store (views: {names}); set features.fusion_view")
        order = [fusion_view] + [v for v in names if v != fusion_view]
        keys = []
        for v in order:
            if v != fusion_view and pool is not None and (m, v) not in pool:
                continue
            n = _samples_of(ws, m, v)
            n = n if samples is None else min(n, samples)
            keys.extend(ViewKey(m, v, s) for s in range(max(n, 1)))
        out[m] = keys
    return out


def load_feature_bank(ws: Workspace, n_items: int, *, modalities: list[str] | None = None,
                      views: list[str] | None = None, samples: int | None = None,
                      fusion_view: str = "orig", dtype: str = "float16",
                      mmap_threshold_mb: int = 512, cache_dir: str | None = None,
                      progress: bool = False) -> FeatureBank:
    """Read the selected tables; peak memory stays near the stacked tables plus one part."""
    keys = select_tables(ws, modalities, views, samples, fusion_view)
    sha = store_sha256(ws)
    np_dtype = np.dtype(dtype)
    dims = {m: _dim_of(ws, ks[0]) for m, ks in keys.items()}
    for m, ks in keys.items():
        for key in {(k.modality, k.view) for k in ks}:
            dim = _dim_of(ws, ViewKey(*key, 0))
            if dim != dims[m]:
                raise ContractError(ws.display(*view_dir(*key)), f"embedding dim {dim} differs "
                                    f"from the {dims[m]} of modality {m!r}'s other views")
    total = sum(len(ks) * (n_items + 1) * dims[m] * np_dtype.itemsize for m, ks in keys.items())
    mapped = total > mmap_threshold_mb * 2 ** 20
    ident = sha256_json({"store": sha, "keys": {m: [k.name for k in ks] for m, ks in keys.items()},
                         "n_items": n_items, "dtype": dtype})[:16]
    base = Path(cache_dir or os.path.join(tempfile.gettempdir(), "macl-features")) / ident
    values, masks = {}, {}
    bar = _bar(sum(len(k) for k in keys.values()), progress)
    for m, ks in keys.items():
        shape = (len(ks), n_items + 1, dims[m])
        done = base.with_name(f"{ident}-{m}.done")
        if mapped and done.exists():
            arr = np.memmap(base.with_name(f"{ident}-{m}.values"), dtype=np_dtype, mode="c",
                            shape=shape)
            mask = np.load(base.with_name(f"{ident}-{m}.mask.npy"))
            bar.update(len(ks))
        else:
            if mapped:
                base.parent.mkdir(parents=True, exist_ok=True)
                tmp = base.with_name(f".{ident}-{m}.values.tmp-{os.getpid()}")
                arr = np.memmap(tmp, dtype=np_dtype, mode="w+", shape=shape)
            else:
                arr = np.empty(shape, dtype=np_dtype)
            mask = np.zeros(shape[:2], dtype=bool)
            for k, key in enumerate(ks):  # each table is scattered straight into the stack
                fm = read_feature_matrix(ws, key.modality, key.view, key.sample, n_items, dtype,
                                         out=arr[k])
                mask[k] = fm.mask
                bar.update(1)
            if mapped:
                arr.flush()
                np.save(base.with_name(f"{ident}-{m}.mask.npy"), mask)
                final = base.with_name(f"{ident}-{m}.values")
                os.replace(tmp, final)
                done.write_text(json.dumps({"keys": [k.name for k in ks], "store": sha}))
                arr = np.memmap(final, dtype=np_dtype, mode="c", shape=shape)
        values[m] = torch.from_numpy(arr)
        masks[m] = torch.from_numpy(mask)
    bar.close()
    return FeatureBank(n_items=n_items, values=values, masks=masks, keys=keys,
                       fusion={m: 0 for m in keys}, store_sha256=sha, mapped=mapped)


def _dim_of(ws: Workspace, key: ViewKey) -> int:
    """Embedding width from the first part's schema (the fixed-size list length)."""
    part = list_parts(ws, key.modality, key.view)[0]
    with ws.fs.open_input_file(ws.path(*view_dir(key.modality, key.view), part)) as f:
        return int(pq.read_schema(f).field("embedding").type.list_size)


def _bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="load features", unit="table", disable=not enabled, leave=False)
