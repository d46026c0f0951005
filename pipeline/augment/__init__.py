"""Augmentation pool: image views (albumentations) and text views (nlpaug), seeded per item.

``views`` holds the pool as data (names, defaults, seeds) and imports nothing heavy; ``image``
and ``text`` hold the implementations.
"""
from pipeline.augment.views import (
    IMAGE_VIEWS,
    MODALITIES,
    TEXT_VIEWS,
    VIEWS,
    ViewDef,
    derive_seed,
    resolve_params,
    view_def,
)

__all__ = ["IMAGE_VIEWS", "MODALITIES", "TEXT_VIEWS", "VIEWS", "ViewDef", "derive_seed",
           "resolve_params", "view_def"]
