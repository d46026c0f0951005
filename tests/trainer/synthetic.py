"""A tiny synthetic shop for trainer tests, written through the schemas writers.

Items belong to latent clusters; image and text features are noisy cluster centroids (so the
features carry signal), and sessions walk through one cluster in a fixed cyclic order (so the
next item is predictable). Some items have no text row ('missing' with a reason) and one has no
image, so masks are exercised.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from schemas.fs import Workspace
from schemas.io import write_items, write_split
from schemas.store import write_feature_part

PROTOCOL = "tiny"


def _provenance(modality: str, view: str, dim: int) -> dict:
    return {"modality": modality, "view": view, "shard": 0, "cache_key": f"test-{modality}-{view}",
            "encoder": {"name": "synthetic", "dim": dim}, "view_params": {}, "seed": 0,
            "samples": 1, "versions": {}, "created_at": "2024-01-01T00:00:00Z"}


def feature_table(modality: str, view: str, values: np.ndarray, ok: np.ndarray,
                  item_ids: list[str]) -> pa.Table:
    n, dim = values.shape
    emb = [values[i].astype(np.float32).tolist() if ok[i] else None for i in range(n)]
    return pa.table({
        "item_idx": pa.array(np.arange(1, n + 1), pa.int64()),
        "item_id": pa.array(item_ids, pa.string()),
        "modality": pa.array([modality] * n, pa.string()),
        "view": pa.array([view] * n, pa.string()),
        "sample": pa.array([0] * n, pa.int32()),
        "embedding": pa.array(emb, pa.list_(pa.float32(), dim)),
        "source_sha256": pa.array(["0" * 64] * n, pa.string()),
        "status": pa.array(["ok" if o else "missing" for o in ok], pa.string()),
        "reason": pa.array([None if o else "no input" for o in ok], pa.string()),
    })


def make_workspace(location, *, n_items: int = 40, n_clusters: int = 4, n_sessions: int = 160,
                   session_len: int = 6, with_store: bool = True, seed: int = 0,
                   img_dim: int = 16, txt_dim: int = 12) -> Workspace:
    rng = np.random.default_rng(seed)
    ws = Workspace.open(location)
    ids = [f"it{i:03d}" for i in range(1, n_items + 1)]
    cluster = np.arange(n_items) % n_clusters
    items = pa.table({
        "item_id": ids, "item_idx": pa.array(np.arange(1, n_items + 1), pa.int64()),
        "title": [f"Item {i} of cluster {c}" for i, c in zip(range(1, n_items + 1), cluster)],
        "text": [f"cluster {c} thing" for c in cluster],
        "category": [f"c{c}" for c in cluster],
    })
    write_items(ws, items)
    members = [np.flatnonzero(cluster == c) + 1 for c in range(n_clusters)]
    sessions = []
    for _ in range(n_sessions):
        m = members[rng.integers(n_clusters)]
        start = rng.integers(len(m))
        sessions.append([int(m[(start + j) % len(m)]) for j in range(session_len)])
    n_train = int(n_sessions * 0.8)
    n_valid = int(n_sessions * 0.1)
    train_seqs, train_tgt, train_sid = [], [], []
    for s, seq in enumerate(sessions[:n_train]):
        for k in range(1, len(seq)):
            train_seqs.append(seq[:k])
            train_tgt.append(seq[k])
            train_sid.append(f"s{s}")

    def part(rows, offset):
        return pa.table({"session_id": [f"s{offset + i}" for i in range(len(rows))],
                         "items": pa.array([r[:-1] for r in rows], pa.list_(pa.int64())),
                         "target": pa.array([r[-1] for r in rows], pa.int64())})

    write_split(ws, PROTOCOL, "train", pa.table({
        "session_id": train_sid, "items": pa.array(train_seqs, pa.list_(pa.int64())),
        "target": pa.array(train_tgt, pa.int64())}), {"synthetic": True}, n_items)
    write_split(ws, PROTOCOL, "valid", part(sessions[n_train:n_train + n_valid], n_train),
                {"synthetic": True}, n_items)
    write_split(ws, PROTOCOL, "test", part(sessions[n_train + n_valid:], n_train + n_valid),
                {"synthetic": True}, n_items)
    if with_store:
        img_c = rng.normal(size=(n_clusters, img_dim))
        txt_c = rng.normal(size=(n_clusters, txt_dim))
        img = img_c[cluster] + 0.3 * rng.normal(size=(n_items, img_dim))
        txt = txt_c[cluster] + 0.3 * rng.normal(size=(n_items, txt_dim))
        img_ok = np.ones(n_items, dtype=bool)
        img_ok[2] = False  # item 3 has no image
        txt_ok = rng.random(n_items) > 0.3  # about 30% without text
        for view, noise in (("orig", 0.0), ("noise", 0.2)):
            values = img + noise * rng.normal(size=img.shape)
            write_feature_part(ws, "image", view, 0,
                               feature_table("image", view, values, img_ok, ids),
                               _provenance("image", view, img_dim))
        for view, noise in (("orig", 0.0), ("swap", 0.2)):
            values = txt + noise * rng.normal(size=txt.shape)
            write_feature_part(ws, "text", view, 0, feature_table("text", view, values, txt_ok, ids),
                               _provenance("text", view, txt_dim))
    return ws


#: a config small enough for the default suite
TINY = ["arch.dim=16", "arch.heads=2", "arch.layers=1", "arch.ffn_dim=32", "data.max_len=8",
        "train.batch_size=32", "train.progress=false", "loss.item_negatives=8",
        "loss.max_item_anchors=32", "eval.batch_size=64"]
