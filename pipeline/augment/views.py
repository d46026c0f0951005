"""The augmentation pool as data: view names, default parameters, and per-item seeds.

Kept free of heavy imports so that configuration and audit code can list views and their
parameters without loading albumentations, nlpaug or a model.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

MODALITIES = ("image", "text")


@dataclass(frozen=True)
class ViewDef:
    """One view of the pool: its parameters' defaults and whether it draws random numbers."""

    modality: str
    name: str
    stochastic: bool
    defaults: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


_RANDOM_WORDS = {"aug_p": 0.1, "aug_min": 1, "aug_max": 10}

IMAGE_VIEWS: dict[str, ViewDef] = {v.name: v for v in (
    ViewDef("image", "orig", False, {}, "the decoded image as is"),
    ViewDef("image", "hflip", False, {}, "horizontal mirror"),
    ViewDef("image", "blur", True, {"blur_limit": [3, 7], "sigma_limit": [0.5, 1.5]},
            "Gaussian blur (albumentations GaussianBlur)"),
    ViewDef("image", "noise", True, {"std_range": [0.02, 0.08]},
            "additive Gaussian noise, std as a fraction of 255 (albumentations GaussNoise)"),
    ViewDef("image", "crop", True, {"scale": [0.7, 1.0], "ratio": [0.75, 1.3333]},
            "random resized crop keeping 70-100% of the area, back to the input size"),
    ViewDef("image", "jitter", True,
            {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.05},
            "colour jitter (albumentations ColorJitter)"),
)}

TEXT_VIEWS: dict[str, ViewDef] = {v.name: v for v in (
    ViewDef("text", "orig", False, {}, "the catalog text as is"),
    ViewDef("text", "swap", True, dict(_RANDOM_WORDS), "swap random adjacent words (nlpaug)"),
    ViewDef("text", "delete", True, dict(_RANDOM_WORDS), "delete random words (nlpaug)"),
    ViewDef("text", "synonym", True, dict(_RANDOM_WORDS),
            "replace words by WordNet synonyms (nlpaug SynonymAug, untagged)"),
    ViewDef("text", "ctx_sub", True, {**_RANDOM_WORDS, "top_k": 10},
            "contextual substitution: masked-LM when the text model has an MLM head, else "
            "nearest neighbours in the model's input token-embedding table"),
)}

VIEWS: dict[str, dict[str, ViewDef]] = {"image": IMAGE_VIEWS, "text": TEXT_VIEWS}


def view_def(modality: str, name: str) -> ViewDef:
    if modality not in VIEWS:
        raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
    try:
        return VIEWS[modality][name]
    except KeyError:
        raise ValueError(f"unknown {modality} view {name!r}; known: "
                         f"{sorted(VIEWS[modality])}") from None


def resolve_params(modality: str, name: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults merged with user overrides; unknown parameter names are refused."""
    vd = view_def(modality, name)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(vd.defaults))
    if unknown:
        raise ValueError(f"{modality} view {name!r} has no parameter(s) {unknown}; "
                         f"it takes {sorted(vd.defaults) or 'none'}")
    return {**vd.defaults, **overrides}


def derive_seed(seed: int, modality: str, view: str, item_id: str, sample: int) -> int:
    """A 63-bit seed owned by one (item, view, draw): independent of batching, sharding, order."""
    text = f"{seed}\x1f{modality}\x1f{view}\x1f{item_id}\x1f{sample}"
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1
