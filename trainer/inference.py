"""Finished runs put to use: re-evaluate a split, recommend for sessions given as item_ids."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from schemas.errors import ContractError

from trainer import checkpoint as ckpt
from trainer.config import RunConfig
from trainer.data import Batch
from trainer.distributed import DistContext
from trainer.evaluate import EvalResult, evaluate
from trainer.models import Recommender
from trainer.runs import BEST, LAST, RunDir
from trainer.runtime import RunData, load_data, make_model, pick_device


@dataclass
class LoadedRun:
    run: RunDir
    cfg: RunConfig
    data: RunData
    model: Recommender
    device: torch.device


def load_run(run: str, workspace: str | None = None, checkpoint: str = BEST,
             device: str | None = None) -> LoadedRun:
    """The run's model at its selected epoch (``best.pt``), on the data it was trained on."""
    rd = RunDir.open(run, workspace)
    cfg = rd.read_config()
    manifest = rd.read_manifest()
    dev = pick_device(device or cfg.train.device, DistContext())
    data = load_data(cfg, workspace or manifest.workspace)
    model = make_model(cfg, data, dev)  # baselines are refitted from the same train split
    if model.trainable:
        name = checkpoint if rd.exists(checkpoint) else LAST
        if not rd.exists(name):
            raise ContractError(rd.location, "has no checkpoint (best.pt / last.pt)")
        model.load_state_dict(ckpt.from_bytes(rd.read_bytes(name), rd.ws.display(name))["model"])
    model.eval()
    return LoadedRun(run=rd, cfg=cfg, data=data, model=model, device=dev)


def evaluate_run(loaded: LoadedRun, split: str = "test", progress: bool = False) -> EvalResult:
    cases = getattr(loaded.data, split)
    if cases is None:
        raise ContractError(loaded.run.location, f"its workspace has no {split} split")
    e = loaded.cfg.eval
    return evaluate(loaded.model, cases, ks=e.ks, max_len=loaded.cfg.data.max_len,
                    batch_size=e.batch_size, device=loaded.device, tie_policy=e.tie_policy, full_ranks=e.full_ranks,
                    slices=loaded.data.slices, progress=progress, desc=split)


def recommend(loaded: LoadedRun, sessions: list[list[str]], k: int = 20,
              exclude_seen: bool = False, session_ids: list[str] | None = None) -> pa.Table:
    """Top-k item_ids for each session (given as catalog item_id strings), one row per rank."""
    catalog = loaded.data.catalog
    if any(len(s) == 0 for s in sessions):
        raise ContractError("sessions", "a session needs at least one item")
    k = min(k, catalog.n_items)
    L = loaded.cfg.data.max_len
    ids = session_ids or [str(i) for i in range(len(sessions))]
    out_sid, out_rank, out_idx, out_score = [], [], [], []
    batch_size = loaded.cfg.eval.batch_size
    with loaded.model.scoring():
        for start in range(0, len(sessions), batch_size):
            chunk = sessions[start:start + batch_size]
            idx = [catalog.lookup(s, "sessions")[-L:] for s in chunk]
            width = max(len(i) for i in idx)
            items = torch.zeros(len(chunk), width, dtype=torch.int64)
            for r, seq in enumerate(idx):
                items[r, width - len(seq):] = torch.from_numpy(seq)
            batch = Batch(items=items, target=torch.zeros(len(chunk), dtype=torch.int64),
                          rows=torch.arange(len(chunk))).to(loaded.device)
            scores = loaded.model.score_all(batch).float()
            if exclude_seen:
                scores = scores.scatter(1, batch.items, float("-inf"))
            top = scores.topk(k, dim=1)
            out_sid.extend(np.repeat(ids[start:start + len(chunk)], k))
            out_rank.extend(np.tile(np.arange(1, k + 1), len(chunk)))
            out_idx.append(top.indices.cpu().numpy().reshape(-1))
            out_score.append(top.values.cpu().numpy().reshape(-1))
    item_idx = np.concatenate(out_idx) if out_idx else np.zeros(0, dtype=np.int64)
    columns = {"session_id": pa.array(out_sid, pa.string()),
               "rank": pa.array(out_rank, pa.int32()),
               "item_id": pa.array(catalog.item_ids[item_idx].tolist(), pa.string()),
               "item_idx": pa.array(item_idx, pa.int64()),
               "score": pa.array(np.concatenate(out_score) if out_score else [], pa.float32())}
    if catalog.titles is not None:
        columns["title"] = pa.array(catalog.titles[item_idx].tolist(), pa.string())
    return pa.table(columns)


def read_sessions_file(path: str) -> tuple[list[str], list[list[str]]]:
    """A Parquet file with ``session_id`` and ``items`` (list of item_id strings)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ContractError(path, f"is not a readable Parquet file ({exc})") from exc
    for col in ("session_id", "items"):
        if col not in table.column_names:
            raise ContractError(path, f"missing required column '{col}'", column=col)
    items = table.column("items")
    if not pa.types.is_list(items.type) and not pa.types.is_large_list(items.type):
        raise ContractError(path, "must be a list of item_id strings", column="items")
    sessions = [[str(x) for x in (s or [])] for s in items.to_pylist()]
    empty = [i for i, s in enumerate(sessions) if not s]
    if empty:
        raise ContractError(path, "empty session", column="items", rows=empty[:5],
                            total=len(empty))
    return [str(s) for s in table.column("session_id").to_pylist()], sessions
