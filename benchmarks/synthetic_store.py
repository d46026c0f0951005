"""Synthetic feature stores for benchmarks and scale tests: rows generated, not extracted.

Writes a real catalog (``schemas.io.write_items``), optional tiny image files, and feature parts
through ``schemas.store.write_feature_part`` with full provenance plus ``_manifest.json``, so
every reader (audit, trainer) treats the result exactly like an extracted store. Embeddings are
random; ``source_sha256`` is the true hash of each item's text / image bytes, so a fresh
synthetic store audits clean.

    python -m benchmarks.synthetic_store --workspace /tmp/ws --items 100000 --dim 16
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from schemas.fs import Workspace
from schemas.hashing import sha256_file
from schemas.io import write_items
from schemas.store import StoreManifest, ViewEntry, view_dir, write_feature_part, write_manifest

#: 10 views: 5 image + 5 text, a subset of the default augmentation pool
DEFAULT_VIEWS: tuple[tuple[str, str], ...] = (
    ("image", "orig"), ("image", "hflip"), ("image", "blur"), ("image", "noise"),
    ("image", "crop"), ("text", "orig"), ("text", "swap"), ("text", "delete"),
    ("text", "synonym"), ("text", "ctx_sub"),
)
_WORDS = np.array("red blue green cotton wool denim shirt dress sock boot hat scarf soft "
                  "slim warm light dark long short classic sport".split())


@dataclass
class SyntheticStore:
    """What was written, including the view expectations a matching config would state."""

    workspace: Workspace
    n_items: int
    dim: int
    views: tuple[tuple[str, str], ...]
    samples: int
    expected: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    rows: int = 0


def view_params(modality: str, view: str) -> dict[str, Any]:
    """Deterministic, view-specific parameters recorded in provenance."""
    return {"kind": view, "p": 1.0 if view == "orig" else 0.5}


def encoder_info(modality: str, dim: int) -> dict[str, Any]:
    name = f"synthetic-{modality}"
    return {"name": name, "source": "synthetic", "weights_sha256": hashlib.sha256(
        name.encode()).hexdigest(), "dim": dim, "preprocessing": {}, "pooling": "none",
        "dtype": "float32"}


def write_synthetic_store(
    location: str | os.PathLike[str] | Workspace,
    n_items: int,
    *,
    views: Sequence[tuple[str, str]] = DEFAULT_VIEWS,
    dim: int = 16,
    samples: int = 1,
    shard_size: int = 100_000,
    image_files: bool = True,
    record_sha256: bool = True,
    seed: int = 0,
    progress: bool = False,
) -> SyntheticStore:
    """Write catalog (+ image files) and a complete store of ``n_items`` × views × samples.

    ``record_sha256`` records each part's file hash in the manifest, which lets the audit check
    integrity by hashing instead of decoding every page.
    """
    ws = location if isinstance(location, Workspace) else Workspace.open(location)
    rng = np.random.default_rng(seed)
    idx = np.arange(1, n_items + 1, dtype=np.int64)
    item_ids = pa.array([f"item{i:08d}" for i in idx.tolist()])
    words = _WORDS[rng.integers(0, len(_WORDS), size=(n_items, 4))]
    texts = [" ".join(w) + f" #{i}" for i, w in zip(idx.tolist(), words.tolist())]
    uris = [f"images/{i // 1000:05d}/{i}.jpg" for i in idx.tolist()]
    text_sha = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
    image_sha = _write_images(ws, uris, rng, progress) if image_files else [None] * n_items
    write_items(ws, pa.table({
        "item_id": item_ids, "item_idx": idx, "title": texts, "text": texts,
        "image_uri": uris if image_files else [None] * n_items,
    }), info={"source": "synthetic", "image_roots": []})
    sha = {"text": pa.array(text_sha), "image": pa.array(image_sha, pa.string())}
    store = SyntheticStore(ws, n_items, dim, tuple(views), samples)
    manifest = StoreManifest(code_version="synthetic")
    bar = _progress(len(views) * -(-n_items // shard_size), "synthetic parts", progress)
    for position, (modality, view) in enumerate(views):
        encoder = encoder_info(modality, dim)
        params = view_params(modality, view)
        vseed = seed + 1 + position
        store.expected[(modality, view)] = {"encoder": encoder["name"], "view_params": params,
                                            "seed": vseed, "samples": samples}
        entry = ViewEntry(modality, view, dim, "float32", samples, vseed, params, encoder)
        for shard, start in enumerate(range(0, n_items, shard_size)):
            stop = min(start + shard_size, n_items)
            table = _rows(modality, view, idx[start:stop], item_ids[start:stop],
                          sha[modality][start:stop], samples, dim, rng)
            info = {"modality": modality, "view": view, "shard": shard,
                    "cache_key": f"synthetic-{modality}-{view}-{shard}-{seed}",
                    "encoder": encoder, "view_params": params, "seed": vseed,
                    "samples": samples, "versions": {"macl": "synthetic"},
                    "created_at": "1970-01-01T00:00:00+00:00",
                    "counts": {"rows": table.num_rows}}
            name = write_feature_part(ws, modality, view, shard, table, info)
            entry.parts[name] = {"cache_key": info["cache_key"], "rows": table.num_rows}
            if record_sha256:
                entry.parts[name]["sha256"] = sha256_file(ws, *view_dir(modality, view), name)
            store.rows += table.num_rows
            bar.update(1)
        manifest.views[f"{modality}/{view}"] = entry
    bar.close()
    write_manifest(ws, manifest)
    return store


def _rows(modality: str, view: str, idx: np.ndarray, item_ids: pa.Array, sha: pa.Array,
          samples: int, dim: int, rng: np.random.Generator) -> pa.Table:
    n = len(idx) * samples
    values = rng.standard_normal(n * dim, dtype=np.float32)
    status = "ok" if modality == "text" or sha.null_count == 0 else None
    tile = np.tile(np.arange(len(idx)), samples)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(values), dim)
    if status is None:  # no image files: every image row is a reasoned 'missing'
        emb = pa.nulls(n, emb.type)
    return pa.table({
        "item_idx": pa.array(np.tile(idx, samples)),
        "item_id": item_ids.take(pa.array(tile)),
        "modality": pa.array([modality] * n),
        "view": pa.array([view] * n),
        "sample": pa.array(np.repeat(np.arange(samples, dtype=np.int32), len(idx))),
        "embedding": emb,
        "source_sha256": sha.take(pa.array(tile)),
        "status": pa.array([status or "missing"] * n),
        "reason": pa.array([None if status else "no image_uri in the catalog"] * n, pa.string()),
    })


def _write_images(ws: Workspace, uris: list[str], rng: np.random.Generator,
                  progress: bool) -> list[str]:
    """Tiny distinct files (not decodable images: the audit hashes bytes, it never decodes)."""
    payload = rng.integers(0, 256, size=(len(uris), 48), dtype=np.uint8)
    shas = []
    made: set[str] = set()
    bar = _progress(len(uris), "synthetic images", progress)
    for uri, row in zip(uris, payload):
        data = b"\xff\xd8synthetic" + row.tobytes()
        folder = uri.rsplit("/", 1)[0]
        if folder not in made:
            ws.makedirs(folder)
            made.add(folder)
        if ws.is_local:
            with open(ws.path(uri), "wb") as f:
                f.write(data)
        else:
            ws.write_bytes_atomic(data, uri)
        shas.append(hashlib.sha256(data).hexdigest())
        bar.update(1)
    bar.close()
    return shas


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, file=sys.stderr, leave=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--shard-size", type=int, default=100_000)
    parser.add_argument("--no-image-files", action="store_true",
                        help="leave image_uri empty: image rows become reasoned 'missing' rows")
    parser.add_argument("--no-part-sha256", action="store_true",
                        help="do not record part file hashes in the manifest")
    args = parser.parse_args(argv)
    store = write_synthetic_store(args.workspace, args.items, dim=args.dim, samples=args.samples,
                                  shard_size=args.shard_size,
                                  image_files=not args.no_image_files,
                                  record_sha256=not args.no_part_sha256, progress=True)
    print(f"wrote {store.rows} rows ({store.n_items} items x {len(store.views)} views x "
          f"{store.samples} samples, dim {store.dim}) to {store.workspace.display()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
