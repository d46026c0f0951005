"""Decode image bytes safely and apply image views with albumentations 2.0.8.

Decoding turns every kind of bad file (not an image, truncated, a decompression bomb) into an
``ImageDecodeError`` with a reason the store records; it never returns a partial image. Each
view is a fresh ``A.Compose`` seeded per (item, view, draw), so a result never depends on which
thread, batch or shard computed it.
"""
from __future__ import annotations

import io
import os
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.augment.views import resolve_params, view_def

#: Refuse images above this many pixels before decoding them (decompression bombs).
DEFAULT_MAX_PIXELS = 40_000_000


class ImageDecodeError(ValueError):
    """Bytes that cannot become an RGB image; the message is the row's reason."""


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Bytes -> RGB uint8 array (H, W, 3), EXIF orientation applied, alpha flattened on white."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(_reason_for(exc)) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError(f"cannot open image: {exc}") from None
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageDecodeError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageDecodeError(f"image too large to decode safely: {width}x{height} pixels > "
                               f"{max_pixels} (possible decompression bomb)")
    try:
        img.load()
        img = ImageOps.exif_transpose(img)
        rgb = _to_rgb(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"truncated or corrupt image: {exc}") from None
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def _reason_for(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not an image file (format not recognised)"
    return f"image too large to decode safely (possible decompression bomb): {exc}"


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        return background
    return img.convert("RGB")


class ImageView:
    """One image view with resolved parameters; ``apply`` is thread-safe and pure per seed."""

    def __init__(self, name: str, params: dict[str, Any] | None = None) -> None:
        self.name = name
        self.params = resolve_params("image", name, params)
        self.stochastic = view_def("image", name).stochastic

    def provenance(self) -> dict[str, Any]:
        return describe_image_view(self.name)

    def apply(self, image: np.ndarray, seed: int) -> np.ndarray:
        if self.name == "orig":
            return image
        A = _albumentations()

        height, width = image.shape[:2]
        p = self.params
        transform = {
            "hflip": lambda: A.HorizontalFlip(p=1.0),
            "blur": lambda: A.GaussianBlur(blur_limit=tuple(p["blur_limit"]),
                                           sigma_limit=tuple(p["sigma_limit"]), p=1.0),
            "noise": lambda: A.GaussNoise(std_range=tuple(p["std_range"]), p=1.0),
            "crop": lambda: A.RandomResizedCrop(size=(height, width), scale=tuple(p["scale"]),
                                                ratio=tuple(p["ratio"]), p=1.0),
            "jitter": lambda: A.ColorJitter(brightness=p["brightness"], contrast=p["contrast"],
                                            saturation=p["saturation"], hue=p["hue"], p=1.0),
        }[self.name]()
        out = A.Compose([transform], seed=seed)(image=image)["image"]
        return np.ascontiguousarray(out)


def describe_image_view(name: str) -> dict[str, Any]:
    """How a view is produced (library and method), for provenance and cache keys."""
    from importlib.metadata import version

    return {"library": f"albumentations {version('albumentations')}",
            "method": "identity" if name == "orig" else name}


def _albumentations():
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no version check on import
    import albumentations

    return albumentations
