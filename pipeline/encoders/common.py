"""What both encoders share: devices, autocast, offline policy, weights hashes, versions."""
from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Callable, Generic, Hashable, Iterable, Iterator, TypeVar

#: The project's offline switch: ``pipeline.runtime`` sets it to 1 by default; a user with
#: internet sets ``HF_HUB_OFFLINE=0`` to let transformers *and* torchvision download weights.
OFFLINE_ENV = "HF_HUB_OFFLINE"


class EncoderUnavailable(RuntimeError):
    """A configured model cannot be loaded here; the message says what is missing and how to
    supply it."""


def downloads_allowed() -> bool:
    return os.environ.get(OFFLINE_ENV, "0").strip().lower() not in ("1", "true", "yes", "on")


def resolve_device(name: str) -> "torch.device":  # noqa: F821 - torch imported lazily
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EncoderUnavailable(f"device {name!r} requested but CUDA is not available here; "
                                 "use device: auto or cpu")
    return device


def compute_dtype(device: "torch.device") -> str:  # noqa: F821
    """bfloat16 autocast on CUDA, float32 elsewhere (recorded in provenance)."""
    return "bfloat16" if device.type == "cuda" else "float32"


@contextlib.contextmanager
def inference(device: "torch.device") -> Iterator[None]:  # noqa: F821
    import torch

    with torch.inference_mode():
        if device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                yield
        else:
            yield


class LoadedEncoder:
    """What the feature pipeline reads off every loaded encoder: its spec and name, the device
    it runs on and its provenance ``info`` (``dim``: the size of its vectors)."""

    def __init__(self, spec: Any, describe: Callable[[Any], dict[str, Any]]) -> None:
        self.spec = spec
        self.name = spec.name
        self.device = resolve_device(spec.device)
        self.info = describe(spec)
        self.dim = self.info["dim"]


SpecT = TypeVar("SpecT", bound=Hashable)
ModelT = TypeVar("ModelT")


class SharedModels(Generic[SpecT, ModelT]):
    """One loaded model per spec and process, built on first use (tasks of a run share it)."""

    def __init__(self, build: Callable[[SpecT], ModelT]) -> None:
        self._build = build
        self._models: dict[SpecT, ModelT] = {}
        self._lock = threading.Lock()

    def get(self, spec: SpecT) -> ModelT:
        with self._lock:
            if spec not in self._models:
                self._models[spec] = self._build(spec)
            return self._models[spec]


_SHA_LOCK = threading.Lock()
_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def _cache_file() -> Path:
    root = os.environ.get("MACL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "macl")
    return Path(root) / "weights-sha256.json"


def weights_sha256(paths: Iterable[str | os.PathLike[str]]) -> str:
    """sha256 of the weight files (one file: its own hash; several: hash of 'name:hash' lines).

    Hashes are cached in memory and in ``$MACL_CACHE_DIR/weights-sha256.json`` keyed by
    (real path, size, mtime), so a 400 MB checkpoint is hashed once, not once per shard.
    """
    import hashlib

    from schemas.fs import write_bytes_atomic

    files = sorted(Path(os.path.realpath(p)) for p in paths)
    if not files:
        raise EncoderUnavailable("no weight files to hash")
    cache_path = _cache_file()
    with _SHA_LOCK:
        try:
            disk = json.loads(cache_path.read_text())
        except (OSError, ValueError):
            disk = {}
        hashes, dirty = [], False
        for f in files:
            st = f.stat()
            key = (str(f), st.st_size, st.st_mtime_ns)
            digest = _SHA_MEMO.get(key) or disk.get(f"{key[0]}|{key[1]}|{key[2]}")
            if digest is None:
                h = hashlib.sha256()
                with open(f, "rb") as fh:
                    while chunk := fh.read(1 << 22):
                        h.update(chunk)
                digest, dirty = h.hexdigest(), True
                disk[f"{key[0]}|{key[1]}|{key[2]}"] = digest
            _SHA_MEMO[key] = digest
            hashes.append((f.name, digest))
        if dirty:
            try:
                import pyarrow.fs as pafs

                write_bytes_atomic(pafs.LocalFileSystem(), str(cache_path),
                                   json.dumps(disk, indent=1, sort_keys=True).encode())
            except OSError:
                pass  # a read-only home only costs rehashing next time
    if len(hashes) == 1:
        return hashes[0][1]
    return hashlib.sha256("".join(f"{n}:{d}\n" for n, d in hashes).encode()).hexdigest()


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("macl", "torch", "torchvision", "transformers", "albumentations", "nlpaug",
                 "nltk", "pillow", "numpy", "pyarrow", "efficientnet-lite-pytorch"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def describe(obj: Any) -> str:
    """A stable text form of a transform or config object, for provenance."""
    return " ".join(repr(obj).split())
