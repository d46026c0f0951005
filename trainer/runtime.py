"""What a run reads and builds before its first step: device, data, features, slices, model.

Shared by training, ``macl evaluate`` and ``macl recommend`` so all three see the same data
the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from schemas.errors import ContractError
from schemas.fs import Workspace
from schemas.io import split_path

from trainer.config import RunConfig
from trainer.data import (
    Cases,
    Catalog,
    choose_protocol,
    item_popularity,
    long_tail_items,
    popularity_buckets,
    read_cases,
    read_catalog,
    train_sessions,
)
from trainer.distributed import DistContext
from trainer.evaluate import Slices
from trainer.features import FeatureBank, has_store, load_feature_bank
from trainer.models import Recommender, build_model


def pick_device(spec: str, ctx: DistContext) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda" and ctx.active:
        return torch.device("cuda", ctx.local_rank)
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ContractError("train.device", "CUDA was requested but no CUDA device is available")
    return device


def amp_dtype(spec: str, device: torch.device) -> torch.dtype | None:
    """Mixed precision only on CUDA: bf16 by default, fp16 (with a grad scaler) on request."""
    if device.type != "cuda" or spec == "off":
        return None
    return torch.float16 if spec == "fp16" else torch.bfloat16


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) and numpy. CPU kernels used here are deterministic for a fixed
    thread count; on CUDA cuDNN autotuning is switched off. (``use_deterministic_algorithms``
    is not called: it imports torch's compiler stack, ~10 s per process on this machine.)"""
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


@dataclass
class RunData:
    ws: Workspace
    protocol: str
    catalog: Catalog
    train: Cases
    valid: Cases | None
    test: Cases
    bank: FeatureBank | None
    slices: Slices
    popularity: np.ndarray


def load_data(cfg: RunConfig, workspace: str, progress: bool = False) -> RunData:
    ws = Workspace.open(workspace)
    catalog = read_catalog(ws, cfg.data.attributes)
    protocol = choose_protocol(ws, cfg.data.protocol)
    n = catalog.n_items
    train = read_cases(ws, protocol, "train", n)
    test = read_cases(ws, protocol, "test", n)
    valid = read_cases(ws, protocol, "valid", n) if ws.exists(*split_path(protocol, "valid")) \
        else None
    if valid is None and not cfg.train.select_on_test and not cfg.is_baseline:
        raise ContractError(ws.display(*split_path(protocol, "valid")),
                            "no validation split: the epoch is chosen on validation (re-split "
                            "with a validation share, or pass --select-on-test to reproduce "
                            "paper-style reporting)")
    bank = None
    fusion = None if cfg.is_baseline else cfg.variant["fusion"]
    if fusion == "required" and not has_store(ws):
        raise ContractError(ws.display("features"), f"model {cfg.model!r} fuses item features but "
                            "this workspace has no feature store; run `macl features` first, or "
                            "choose sasrec, macl_com, pop, spop or sknn for ID-only data")
    if fusion and has_store(ws) and cfg.features.modalities != []:
        f = cfg.features
        bank = load_feature_bank(ws, n, modalities=f.modalities, views=f.views, samples=f.samples,
                                 fusion_view=f.fusion_view, dtype=f.dtype,
                                 mmap_threshold_mb=f.mmap_threshold_mb, cache_dir=f.cache_dir,
                                 progress=progress)
    if fusion == "required" and bank is None:
        raise ContractError(ws.display("features"), f"model {cfg.model!r} needs at least one "
                            "modality, but features.modalities is empty")
    popularity = item_popularity(train_sessions(train), n)
    bucket, labels = popularity_buckets(popularity, cfg.eval.popularity_buckets)
    slices = Slices(tail=long_tail_items(popularity, cfg.eval.tail_share), bucket=bucket,
                    bucket_labels=labels)
    return RunData(ws=ws, protocol=protocol, catalog=catalog, train=train, valid=valid, test=test,
                   bank=bank, slices=slices, popularity=popularity)


def make_model(cfg: RunConfig, data: RunData, device: torch.device) -> Recommender:
    if cfg.model in ("macl", "macl_noadp") and not data.bank.pool:
        raise ContractError(data.ws.display("features"), "the contrast pool is empty")
    model = build_model(cfg, data.catalog, data.bank)
    if not model.trainable:
        model.fit(data.train)
    return model.to(device)
