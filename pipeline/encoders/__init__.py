"""Image and text encoders with their provenance (weights hash, preprocessing, pooling)."""
from pipeline.encoders.common import EncoderUnavailable, library_versions, weights_sha256
from pipeline.encoders.image import (
    IMAGE_ENCODERS,
    ImageEncoder,
    ImageEncoderSpec,
    describe_image_encoder,
    load_image_encoder,
)
from pipeline.encoders.text import (
    PACKAGED_NAME,
    POOLINGS,
    TextEncoder,
    TextEncoderSpec,
    describe_text_encoder,
    load_text_encoder,
)

__all__ = ["EncoderUnavailable", "IMAGE_ENCODERS", "ImageEncoder", "ImageEncoderSpec",
           "PACKAGED_NAME", "POOLINGS", "TextEncoder", "TextEncoderSpec", "describe_image_encoder",
           "describe_text_encoder", "library_versions", "load_image_encoder", "load_text_encoder",
           "weights_sha256"]
