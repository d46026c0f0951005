"""Model registry: ``build_model(cfg, catalog, bank)`` for every ``--model``."""
from __future__ import annotations

from trainer.config import RunConfig
from trainer.data import Catalog
from trainer.features import FeatureBank
from trainer.models.base import LossOutput, Recommender


def build_model(cfg: RunConfig, catalog: Catalog, bank: FeatureBank | None) -> Recommender:
    from trainer.models.baselines import SKNN, Pop, SPop
    from trainer.models.session import SessionModel

    if cfg.model == "pop":
        return Pop(catalog.n_items)
    if cfg.model == "spop":
        return SPop(catalog.n_items)
    if cfg.model == "sknn":
        return SKNN(catalog.n_items, cfg.baseline)
    return SessionModel(cfg, catalog, bank)


__all__ = ["build_model", "LossOutput", "Recommender"]
