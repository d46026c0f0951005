"""Feature extraction as plain functions: configuration, shard planning, one part, the manifest.

The Prefect flow (``flows.features``) only wraps these. A run is planned as one part per
(modality, view, shard); shards are ``item_idx`` ranges. Each part's cache key hashes the
shard's item keys and source hashes with everything that determines its numbers (encoder weights
and preprocessing, view parameters, seed, draws, storage dtype), so a rerun recomputes exactly
the parts whose inputs changed, and within such a part reuses the rows of unchanged items.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar, get_args, get_origin, \
    get_type_hints

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.augment.views import MODALITIES, VIEWS, derive_seed, resolve_params, view_def
from pipeline.sources import ImageResolver, Source, text_source
from schemas.errors import ContractError
from schemas.fs import Workspace
from schemas.hashing import sha256_file, sha256_json
from schemas.io import ITEMS_PATH, list_protocols, read_items, read_split
from schemas.store import (
    FEATURES_DIR,
    StoreManifest,
    ViewEntry,
    list_parts,
    list_views,
    part_name,
    read_manifest,
    read_part_info,
    verify_part_bytes,
    view_dir,
    write_feature_part,
    write_manifest,
)
from schemas.tables import read_info
from schemas.validate import check_version, validate_feature_rows

#: Bump when the way parts are computed changes in a way that alters their numbers.
PART_FORMAT = 1
PRESETS = ("default", "paper")
T = TypeVar("T")


# --------------------------------------------------------------------------- configuration


@dataclass
class ViewConfig:
    """One view of the run: parameter overrides, number of random draws, seed override."""

    params: dict[str, Any] = field(default_factory=dict)
    samples: int = 1
    seed: int | None = None


def _all_views(modality: str) -> dict[str, ViewConfig]:
    return {name: ViewConfig() for name in VIEWS[modality]}


@dataclass
class ImageConfig:
    encoder: str = "efficientnet-lite0"  # or googlenet (the paper's)
    weights: str | None = None  # a weights file; None: packaged / torchvision's cache
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_size: int = 32
    max_pixels: int = 40_000_000  # larger images are refused as possible decompression bombs
    views: dict[str, ViewConfig] = field(default_factory=lambda: _all_views("image"))


@dataclass
class TextConfig:
    model: str | None = None  # HF name or path; None: the packaged all-MiniLM-L6-v2
    pooling: str = "mean"  # cls | mean | pooler
    normalize: bool = True
    max_length: int = 256  # tokens
    max_chars: int = 20_000  # text is cut here before augmentation (the encoder truncates anyway)
    device: str = "auto"
    batch_size: int = 64
    views: dict[str, ViewConfig] = field(default_factory=lambda: _all_views("text"))


@dataclass
class FeaturesConfig:
    """Everything a features run needs; loads from YAML and refuses unknown keys."""

    preset: str = "default"
    seed: int = 0
    shard_size: int = 1024  # items per part
    storage_dtype: str = "float32"  # float32 | float16
    loader_workers: int = 2  # threads that read, decode and augment ahead of the model
    prefetch_batches: int = 4  # batches prepared ahead of the forward pass
    task_workers: int = 1  # parts run at once (each already keeps the model busy)
    io_retries: int = 2  # Prefect retries of a part, for I/O errors only
    #: encode only the items that occur in ``splits/<name>/`` (inputs or targets of any part);
    #: the others get ``missing`` rows saying so. For large catalogs of which a filtered split
    #: keeps a small share; None = every catalog item.
    items_from_split: str | None = None
    image: ImageConfig = field(default_factory=ImageConfig)
    text: TextConfig = field(default_factory=TextConfig)

    # -- construction

    @classmethod
    def preset_config(cls, name: str) -> "FeaturesConfig":
        if name == "default":
            return cls()
        if name == "paper":
            return cls(preset="paper",
                       image=ImageConfig(encoder="googlenet"),
                       text=TextConfig(model="bert-base-uncased", pooling="cls",
                                       normalize=False, max_length=512))
        raise ContractError(None, f"unknown features preset {name!r}; presets: {PRESETS}")

    @classmethod
    def load(cls, path_or_none: str | os.PathLike[str] | None = None) -> "FeaturesConfig":
        """None: the default preset; a YAML file (may start from ``preset: paper``); or a
        preset name."""
        if path_or_none is None:
            return cls()
        path = Path(path_or_none)
        if not path.is_file():
            if str(path_or_none) in PRESETS:
                return cls.preset_config(str(path_or_none))
            raise ContractError(str(path), f"no such config file (presets: {', '.join(PRESETS)})")
        import yaml

        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ContractError(str(path), f"is not valid YAML ({exc})") from None
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "<config>") -> "FeaturesConfig":
        if not isinstance(data, Mapping):
            raise ContractError(where, "a features config must be a mapping")
        base = cls.preset_config(str(data.get("preset", "default")))
        merged = _merge(base.to_dict(), dict(data))
        config = _build(cls, merged, where, "")
        config.validate(where)
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # -- validation

    def validate(self, where: str = "<config>") -> None:
        from pipeline.encoders import IMAGE_ENCODERS, POOLINGS

        def bad(key: str, problem: str) -> ContractError:
            return ContractError(where, f"{key}: {problem}")

        if self.shard_size < 1:
            raise bad("shard_size", "must be >= 1")
        if self.storage_dtype not in ("float32", "float16"):
            raise bad("storage_dtype", "must be float32 or float16")
        for key in ("loader_workers", "prefetch_batches", "task_workers", "io_retries"):
            if getattr(self, key) < (1 if key in ("prefetch_batches", "task_workers") else 0):
                raise bad(key, "out of range")
        if self.image.encoder not in IMAGE_ENCODERS:
            raise bad("image.encoder", f"must be one of {IMAGE_ENCODERS}")
        if self.text.pooling not in POOLINGS:
            raise bad("text.pooling", f"must be one of {POOLINGS}")
        for modality in MODALITIES:
            section = self.section(modality)
            if section.batch_size < 1:
                raise bad(f"{modality}.batch_size", "must be >= 1")
            for name, vc in section.views.items():
                try:
                    vd = view_def(modality, name)
                    resolve_params(modality, name, vc.params)
                except ValueError as exc:
                    raise bad(f"{modality}.views.{name}", str(exc)) from None
                if vc.samples < 1:
                    raise bad(f"{modality}.views.{name}.samples", "must be >= 1")
                if vc.samples > 1 and not vd.stochastic:
                    raise bad(f"{modality}.views.{name}.samples",
                              "a deterministic view has exactly one draw")

    # -- queries

    def section(self, modality: str) -> ImageConfig | TextConfig:
        return {"image": self.image, "text": self.text}[modality]

    def view_seed(self, modality: str, view: str) -> int:
        vc = self.section(modality).views[view]
        return self.seed if vc.seed is None else vc.seed

    def encoder_name(self, modality: str) -> str:
        from pipeline.encoders import PACKAGED_NAME

        return self.image.encoder if modality == "image" else (self.text.model or PACKAGED_NAME)

    def image_spec(self) -> "ImageEncoderSpec":  # noqa: F821
        from pipeline.encoders import ImageEncoderSpec

        return ImageEncoderSpec(name=self.image.encoder, weights=self.image.weights,
                                device=self.image.device)

    def text_spec(self) -> "TextEncoderSpec":  # noqa: F821
        from pipeline.encoders import TextEncoderSpec

        return TextEncoderSpec(model=self.text.model, pooling=self.text.pooling,
                               normalize=self.text.normalize, max_length=self.text.max_length,
                               device=self.text.device)

    def expected_views(self) -> dict[tuple[str, str], dict[str, Any]]:
        """(modality, view) -> what its provenance must say: encoder name, view_params, seed,
        samples. The audit compares the store against this."""
        return {(m, v): {"encoder": self.encoder_name(m),
                         "view_params": resolve_params(m, v, vc.params),
                         "seed": self.view_seed(m, v), "samples": vc.samples}
                for m in MODALITIES for v, vc in self.section(m).views.items()}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Overlay a user mapping on a preset; a ``views`` mapping replaces the preset's views."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict) and key != "views":
            out[key] = _merge(out[key], dict(value))
        else:
            out[key] = value
    return out


def _build(cls: type[T], data: Any, where: str, prefix: str) -> T:
    """Typed dataclass from a mapping: unknown keys and wrong types are ContractErrors."""
    if not isinstance(data, Mapping):
        raise ContractError(where, f"{prefix or 'config'}: expected a mapping, got "
                                   f"{type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ContractError(where, f"unknown key(s) {unknown} in "
                                   f"{prefix.rstrip('.') or 'the top level'}; known: "
                                   f"{sorted(names)}")
    return cls(**{k: _convert(hints[k], v, where, f"{prefix}{k}") for k, v in data.items()})


def _convert(tp: Any, value: Any, where: str, key: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where, key + ".")
    if origin is dict:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ContractError(where, f"{key}: expected a mapping")
        if args and dataclasses.is_dataclass(args[1]):
            return {str(k): _build(args[1], v if v is not None else {}, where, f"{key}.{k}.")
                    for k, v in value.items()}
        return dict(value)
    if args and type(None) in args:  # Optional[X]
        if value is None:
            return None
        tp = next(a for a in args if a is not type(None))
    if tp is bool:
        if not isinstance(value, bool):
            raise ContractError(where, f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ContractError(where, f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ContractError(where, f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ContractError(where, f"{key}: expected a string, got {value!r}")
        return value
    return value


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class PartPlan:
    """One unit of work: a (modality, view) over the items ``first_idx..last_idx``."""

    modality: str
    view: str
    shard: int
    first_idx: int
    last_idx: int
    cache_key: str
    view_key: str
    #: sha256 of the stored part as the store manifest recorded it for this cache key (None:
    #: not recorded, so its page CRCs are checked instead); not part of the part's identity
    recorded_sha256: str | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        return part_name(self.shard)

    @property
    def n_items(self) -> int:
        return self.last_idx - self.first_idx + 1


@dataclass
class RunPlan:
    workspace: str
    views: list[tuple[str, str]]
    parts: list[PartPlan]
    encoders: dict[str, dict[str, Any]]  # modality -> encoder provenance
    augmenters: dict[tuple[str, str], dict[str, Any]]
    n_items: int
    catalog_sha256: str
    allowed_roots: list[str]


def select_views(config: FeaturesConfig, requested: Iterable[str] | None
                 ) -> list[tuple[str, str]]:
    """The configured views, optionally narrowed by ``image``, ``text/swap``, ``orig``, ..."""
    configured = [(m, v) for m in MODALITIES for v in config.section(m).views]
    if not requested:
        return configured
    chosen: list[tuple[str, str]] = []
    for token in requested:
        token = token.strip().replace(":", "/")
        if token in MODALITIES:
            hits = [mv for mv in configured if mv[0] == token]
        elif "/" in token:
            hits = [mv for mv in configured if f"{mv[0]}/{mv[1]}" == token]
        else:
            hits = [mv for mv in configured if mv[1] == token]
        if not hits:
            raise ContractError(None, f"--views {token!r} matches no configured view; configured: "
                                      f"{', '.join(f'{m}/{v}' for m, v in configured)}")
        chosen += [mv for mv in hits if mv not in chosen]
    return [mv for mv in configured if mv in chosen]


def shard_ranges(n_items: int, shard_size: int) -> list[tuple[int, int, int]]:
    """(shard, first item_idx, last item_idx) covering 1..n_items."""
    return [(s, s * shard_size + 1, min((s + 1) * shard_size, n_items))
            for s in range((n_items + shard_size - 1) // shard_size)]


def image_resolver(ws: Workspace, items_schema: pa.Schema, allow_roots: Iterable[str] = ()
                   ) -> ImageResolver:
    """Confined to the workspace, the catalog's recorded ``image_roots`` and the user's roots."""
    roots = list(read_info(items_schema).get("image_roots", [])) + list(allow_roots)
    return ImageResolver(ws, roots)


def split_items(ws: Workspace, name: str) -> frozenset[int]:
    """item_idx of every item in ``splits/<name>/`` (inputs and targets of all parts)."""
    if name not in list_protocols(ws):
        raise ContractError(ws.display("splits", name), f"items_from_split: no split {name!r} "
                            f"in this workspace (found {list_protocols(ws) or 'none'})")
    import pyarrow.compute as pc

    found: set[int] = set()
    for part in ("train", "valid", "test"):
        if not ws.exists("splits", name, f"{part}.parquet"):
            continue
        table, _ = read_split(ws, name, part)
        found.update(pc.unique(pc.list_flatten(table.column("items"))).to_pylist())
        if "target" in table.column_names:
            found.update(pc.unique(table.column("target").drop_null()).to_pylist())
    return frozenset(found)


def selection_of(ws: Workspace, config: "FeaturesConfig") -> frozenset[int] | None:
    return None if config.items_from_split is None else split_items(ws, config.items_from_split)


def selected_source(src: Source, item_idx: int, selection: frozenset[int] | None,
                    split: str | None) -> Source:
    """An item outside the selection is ``missing`` (its source hash kept: the row stays
    current for the audit); items without a usable source keep their own reason."""
    if selection is None or item_idx in selection or not src.ok:
        return src
    return Source("missing", f"not in split {split!r} (items_from_split)", None, src.sha256)


def _material(item_idx: int, item_id: str, src: Source) -> list[Any]:
    return [item_idx, item_id, src.status, src.sha256, None if src.ok else src.reason]


def source_material(ws: Workspace, items: pa.Table, modality: str, resolver: ImageResolver,
                    workers: int, selection: frozenset[int] | None = None,
                    split: str | None = None) -> list[list[Any]]:
    """Per item: what its part key depends on (id, source status and hash, reason)."""
    idx = items.column("item_idx").to_pylist()
    ids = items.column("item_id").to_pylist()
    if modality == "text":
        return [_material(i, d, selected_source(text_source(t), i, selection, split))
                for i, d, t in zip(idx, ids, items.column("text").to_pylist())]
    uris = items.column("image_uri").to_pylist()
    hashed = lambda u: _stripped(resolver.read(u))  # noqa: E731 - keep bytes out of memory
    return [_material(i, d, selected_source(s, i, selection, split))
            for i, d, s in zip(idx, ids, ordered_prefetch(
                hashed, uris, workers=max(workers, 1) * 4, window=256))]


def _stripped(src: Source) -> Source:
    return Source(src.status, src.reason, None, src.sha256)


def view_key(config: FeaturesConfig, modality: str, view: str, encoder: Mapping[str, Any],
             augmenter: Mapping[str, Any]) -> str:
    """Hash of everything but the items that determines a view's numbers."""
    vc = config.section(modality).views[view]
    limits = ({"max_pixels": config.image.max_pixels} if modality == "image"
              else {"max_chars": config.text.max_chars})
    return sha256_json({
        "format": PART_FORMAT, "modality": modality, "view": view,
        "view_params": resolve_params(modality, view, vc.params),
        "seed": config.view_seed(modality, view), "samples": vc.samples,
        "encoder": {k: v for k, v in encoder.items() if k != "source"},
        "augmenter": augmenter, "storage_dtype": config.storage_dtype, "limits": limits})


def part_key(vkey: str, first: int, last: int, material: list[list[Any]]) -> str:
    return sha256_json({"view_key": vkey, "first_idx": first, "last_idx": last,
                        "items": material})


def describe_encoder(config: FeaturesConfig, modality: str) -> dict[str, Any]:
    from pipeline.encoders import describe_image_encoder, describe_text_encoder

    if modality == "image":
        return describe_image_encoder(config.image_spec())
    return describe_text_encoder(config.text_spec())


def describe_encoders(config: FeaturesConfig, selected: Iterable[tuple[str, str]]
                      ) -> dict[str, dict[str, Any]]:
    """Provenance of the encoders the selected views need; raises ``EncoderUnavailable`` (what
    is missing, how to supply it) when one cannot be had here."""
    from pipeline.encoders import EncoderUnavailable

    needed = {m for m, _ in selected}
    out, missing = {}, []
    for m in MODALITIES:
        if m in needed:
            try:
                out[m] = describe_encoder(config, m)
            except EncoderUnavailable as exc:
                missing.append(f"[{m}] {exc}")
    if missing:
        raise EncoderUnavailable("\n".join(missing))
    return out


def describe_augmenter(modality: str, view: str, encoder: Mapping[str, Any]) -> dict[str, Any]:
    if modality == "image":
        from pipeline.augment.image import describe_image_view

        return describe_image_view(view)
    from pipeline.augment.text import describe_text_view, wordnet_available

    return describe_text_view(view, wordnet=view == "synonym" and wordnet_available(),
                              mlm_head=bool(encoder.get("mlm_head")))


def plan_run(ws: Workspace, config: FeaturesConfig, views: Iterable[str] | None = None,
             allow_roots: Iterable[str] = ()) -> RunPlan:
    """Read the catalog, hash every source once, and key every part of the selected views.

    Raises ``EncoderUnavailable`` (before any work) when a configured model cannot be had.
    """
    selected = select_views(config, views)
    items = read_items(ws)
    allow_roots = list(allow_roots)
    resolver = image_resolver(ws, items.schema, allow_roots)
    n_items = items.num_rows
    ranges = shard_ranges(n_items, config.shard_size)
    encoders = describe_encoders(config, selected)
    augmenters = {(m, v): describe_augmenter(m, v, encoders[m]) for m, v in selected}
    selection = selection_of(ws, config)
    recorded = recorded_part_hashes(ws)
    parts: list[PartPlan] = []
    for modality in encoders:
        material = source_material(ws, items, modality, resolver, config.loader_workers,
                                   selection, config.items_from_split)
        for m, v in selected:
            if m != modality:
                continue
            vkey = view_key(config, m, v, encoders[m], augmenters[(m, v)])
            for shard, first, last in ranges:
                key = part_key(vkey, first, last, material[first - 1:last])
                known = recorded.get((m, v, part_name(shard)))
                parts.append(PartPlan(m, v, shard, first, last, key, vkey,
                                      known[1] if known and known[0] == key else None))
    return RunPlan(workspace=ws.uri, views=selected, parts=parts, encoders=encoders,
                   augmenters=augmenters, n_items=n_items,
                   catalog_sha256=sha256_file(ws, *ITEMS_PATH), allowed_roots=allow_roots)


# --------------------------------------------------------------------------- the store


class StoreBusy(RuntimeError):
    """Another features run holds this workspace's store."""


class StoreLock:
    """Exclusive right to write a local store, released by the kernel if the process dies.

    Object-store workspaces are not locked (one PUT per file is atomic there, and no temporary
    files exist to clean); do not run two flows on the same object-store workspace at once.
    """

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self._fh = None

    def __enter__(self) -> "StoreLock":
        if not self.ws.is_local:
            return self
        import fcntl

        self.ws.makedirs(FEATURES_DIR)
        self._fh = open(self.ws.path(FEATURES_DIR, ".lock"), "a+")
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            self._fh = None
            raise StoreBusy(f"another `macl features` run is writing "
                            f"{self.ws.display(FEATURES_DIR)}; wait for it to finish") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()  # closing releases the flock
            self._fh = None


def clean_store(ws: Workspace, plan: RunPlan) -> list[str]:
    """Remove what a killed run can leave (hidden temp files) and parts the plan no longer has
    (the catalog shrank or the shard size changed), so no reader ever sees duplicates."""
    removed = []
    wanted: dict[tuple[str, str], set[str]] = {}
    for p in plan.parts:
        wanted.setdefault((p.modality, p.view), set()).add(p.name)
    for name in ws.listdir(FEATURES_DIR):
        if name.startswith(".") and ".tmp-" in name:
            ws.delete(FEATURES_DIR, name)
            removed.append(f"{FEATURES_DIR}/{name}")
    for m, v in list_views(ws):
        vdir = view_dir(m, v)
        for name in ws.listdir(*vdir):
            stale_tmp = name.startswith(".") and ".tmp-" in name
            stale_part = (m, v) in wanted and name in list_parts(ws, m, v) and \
                name not in wanted[(m, v)]
            if stale_tmp or stale_part:
                ws.delete(*vdir, name)
                removed.append("/".join((*vdir, name)))
    return removed


def stored_info(ws: Workspace, plan: PartPlan) -> dict[str, Any] | None:
    """The provenance of a plan's part on disk, or None when absent or unreadable."""
    if not ws.exists(*view_dir(plan.modality, plan.view), plan.name):
        return None
    try:
        return read_part_info(ws, plan.modality, plan.view, plan.name)
    except ContractError:
        return None


def current_part_sha256(ws: Workspace, plan: PartPlan) -> tuple[str | None, str | None]:
    """(sha256, None) when the stored part carries the plan's key and its bytes are intact;
    (None, why not) otherwise: absent, made from other inputs, or damaged (truncated,
    bit-flipped), so a rerun recomputes it instead of trusting a name that exists."""
    info = stored_info(ws, plan)
    if info is None:
        return None, "absent or unreadable footer"
    if info.get("cache_key") != plan.cache_key:
        return None, "made from other inputs"
    sha, problem = verify_part_bytes(ws, plan.modality, plan.view, plan.name,
                                     plan.recorded_sha256)
    return (None, problem) if problem else (sha, None)


def part_is_current(ws: Workspace, plan: PartPlan) -> bool:
    return current_part_sha256(ws, plan)[0] is not None


def recorded_part_hashes(ws: Workspace) -> dict[tuple[str, str, str], tuple[str, str]]:
    """(modality, view, part name) -> (cache_key, sha256) as the store manifest recorded them;
    empty when there is no readable manifest (parts are then checked by their page CRCs)."""
    try:
        manifest = read_manifest(ws)
    except (ContractError, ValueError, OSError):
        return {}
    out = {}
    for entry in (manifest.views.values() if manifest else ()):
        for name, part in entry.parts.items():
            if part.get("cache_key") and part.get("sha256"):
                out[(entry.modality, entry.view, name)] = (part["cache_key"], part["sha256"])
    return out


def build_manifest(ws: Workspace, catalog_sha256: str | None,
                   hashes: Mapping[tuple[str, str, str], tuple[str, str]] | None = None
                   ) -> StoreManifest:
    """features/_manifest.json rebuilt from the parts' own provenance (the store is the truth).

    ``hashes``: (modality, view, part) -> (cache_key, sha256) of parts written or verified by
    this run; other parts keep the hash the previous manifest recorded for the same cache key.
    A part's entry gets ``sha256`` only when the hash belongs to the cache key its footer holds.
    """
    from pipeline.encoders import library_versions

    known = {**recorded_part_hashes(ws), **(hashes or {})}
    views: dict[str, ViewEntry] = {}
    for m, v in list_views(ws):
        entry: ViewEntry | None = None
        parts: dict[str, dict[str, Any]] = {}
        for name in list_parts(ws, m, v):
            try:
                info = read_part_info(ws, m, v, name)
            except ContractError as exc:
                parts[name] = {"unreadable": str(exc)}
                continue
            parts[name] = {"cache_key": info.get("cache_key"), "created_at": info.get("created_at"),
                           **info.get("items", {}), **info.get("counts", {})}
            hashed = known.get((m, v, name))
            if hashed and hashed[0] == info.get("cache_key"):
                parts[name]["sha256"] = hashed[1]
            if entry is None:
                enc = info.get("encoder", {})
                entry = ViewEntry(modality=m, view=v, dim=int(enc.get("dim", 0)),
                                  dtype=info.get("storage_dtype", "float32"),
                                  samples=int(info.get("samples", 1)),
                                  seed=int(info.get("seed", 0)),
                                  view_params=info.get("view_params", {}), encoder=enc)
        if entry is not None:
            entry.parts = parts
            views[f"{m}/{v}"] = entry
    return StoreManifest(views=views, catalog_sha256=catalog_sha256,
                         code_version=library_versions().get("macl"),
                         updated_at=_now())


def write_store_manifest(ws: Workspace, catalog_sha256: str | None,
                         hashes: Mapping[tuple[str, str, str], tuple[str, str]] | None = None
                         ) -> StoreManifest:
    manifest = build_manifest(ws, catalog_sha256, hashes)
    write_manifest(ws, manifest)
    return manifest


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- computing a part


@dataclass
class PartResult:
    modality: str
    view: str
    shard: int
    computed: bool  # False: the stored part was already current
    items: int
    rows: int
    ok: int
    missing: int
    error: int
    reused_items: int = 0
    seconds: float = 0.0
    forward_seconds: float = 0.0  # inside the model's forward pass (the rest is I/O and waiting)
    cache_key: str = ""
    sha256: str = ""  # of the part file as written or verified by this run
    damaged: str = ""  # why the stored part with this key was not trusted (then recomputed)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_shard_items(ws: Workspace, first: int, last: int) -> pa.Table:
    """Catalog rows first..last (row-group pruning keeps this cheap for big catalogs)."""
    shown = ws.display(*ITEMS_PATH)
    try:
        table = pq.read_table(ws.path(*ITEMS_PATH), filesystem=ws.fs,
                              columns=["item_id", "item_idx", "text", "image_uri"],
                              filters=[("item_idx", ">=", first), ("item_idx", "<=", last)])
    except (pa.ArrowInvalid, OSError) as exc:
        raise ContractError(shown, f"is not a readable Parquet file ({exc})") from exc
    check_version(table.schema, shown, "items")
    table = table.sort_by("item_idx")
    got = table.column("item_idx").to_pylist()
    if got != list(range(first, last + 1)):
        raise ContractError(shown, f"item_idx {first}..{last} is not dense in the catalog "
                                   "(it changed during the run?)", column="item_idx")
    return table


@dataclass
class _Unit:
    """One (item, draw) prepared for the model, or the reason it cannot be encoded."""

    row: int
    status: str = "ok"
    reason: str | None = None
    value: Any = None  # preprocessed tensor (image) or augmented text
    sort_key: int = 0


@dataclass
class _Prepared:
    item_pos: int
    sha256: str | None
    units: list[_Unit]
    reused: bool = False


class _ViewCache:
    """Augmenters per process, keyed by view, parameters and encoder (tasks share them)."""

    _lock = threading.Lock()
    _views: dict[tuple[Any, ...], Any] = {}

    @classmethod
    def get(cls, modality: str, view: str, params: dict[str, Any], encoder: Any) -> Any:
        key = (modality, view, sha256_json(params), id(encoder))
        with cls._lock:
            if key not in cls._views:
                if modality == "image":
                    from pipeline.augment.image import ImageView

                    cls._views[key] = ImageView(view, params)
                else:
                    from pipeline.augment.text import TextView

                    cls._views[key] = TextView(view, params, encoder)
            return cls._views[key]


def compute_part(ws: Workspace, config: FeaturesConfig, plan: PartPlan,
                 allow_roots: Iterable[str] = (), *, force: bool = False) -> PartResult:
    """Compute (or confirm) one part and write it atomically; returns its row counts.

    Skips the work when the stored part already carries ``plan.cache_key`` (unless ``force``).
    Every item gets ``samples`` rows keyed by (item_idx, sample): ``ok`` with an embedding, or
    ``missing``/``error`` with a reason; rows of unchanged items are reused from the previous
    version of the part when its view key matches.
    """
    started = time.perf_counter()
    m, v = plan.modality, plan.view
    info = None if force else stored_info(ws, plan)
    damaged = ""
    if info is not None and info.get("cache_key") == plan.cache_key:
        sha, problem = verify_part_bytes(ws, m, v, plan.name, plan.recorded_sha256)
        if problem is None:
            c = info.get("counts", {})
            return PartResult(m, v, plan.shard, False, plan.n_items, int(c.get("rows", 0)),
                              int(c.get("ok", 0)), int(c.get("missing", 0)),
                              int(c.get("error", 0)), seconds=time.perf_counter() - started,
                              cache_key=plan.cache_key, sha256=sha)
        damaged, info = problem, None  # neither trusted nor reused: computed again
    items = read_shard_items(ws, plan.first_idx, plan.last_idx)
    section = config.section(m)
    vc = section.views[v]
    params = resolve_params(m, v, vc.params)
    seed = config.view_seed(m, v)
    samples = vc.samples
    if m == "image":
        from pipeline.encoders import load_image_encoder

        encoder = load_image_encoder(config.image_spec())
        resolver = image_resolver(ws, items.schema, allow_roots)
    else:
        from pipeline.encoders import load_text_encoder

        encoder = load_text_encoder(config.text_spec())
        resolver = None
    augmenter = _ViewCache.get(m, v, params, encoder)
    reuse = _reusable_rows(ws, plan) if info is not None else {}
    selection = selection_of(ws, config)

    idx = items.column("item_idx").to_pylist()
    ids = items.column("item_id").to_pylist()
    inputs = (items.column("image_uri") if m == "image" else items.column("text")).to_pylist()
    n_rows = len(idx) * samples
    emb = np.zeros((n_rows, encoder.dim), dtype=np.float32)
    status = ["ok"] * n_rows
    reason: list[str | None] = [None] * n_rows
    sha: list[str | None] = [None] * len(idx)
    material: list[list[Any]] = []

    def prepare(pos: int) -> _Prepared:
        src = resolver.read(inputs[pos]) if resolver is not None else text_source(inputs[pos])
        src = selected_source(src, idx[pos], selection, config.items_from_split)
        rows = [pos * samples + s for s in range(samples)]
        material.append(_material(idx[pos], ids[pos], src))
        if not src.ok:
            return _Prepared(pos, src.sha256, [_Unit(r, src.status, src.reason) for r in rows])
        old = reuse.get(idx[pos])
        if old is not None and old[0] == ids[pos] and old[1] == src.sha256:
            return _Prepared(pos, src.sha256, [_Unit(r, value=old[2][s])
                                               for s, r in enumerate(rows)], reused=True)
        if m == "image":
            return _prepare_image(pos, src, rows)
        return _prepare_text(pos, src, rows)

    def _prepare_image(pos: int, src: Source, rows: list[int]) -> _Prepared:
        from pipeline.augment.image import ImageDecodeError, decode_image

        try:
            image = decode_image(src.data, config.image.max_pixels)
        except ImageDecodeError as exc:
            return _Prepared(pos, src.sha256, [_Unit(r, "error", str(exc)) for r in rows])
        units = []
        for s, r in enumerate(rows):
            try:
                view_seed = derive_seed(seed, m, v, ids[pos], s)
                units.append(_Unit(r, value=encoder.preprocess(augmenter.apply(image, view_seed))))
            except Exception as exc:  # a library failing on one odd image must not stop a shard
                units.append(_Unit(r, "error", f"augmentation/preprocessing failed: {exc}"))
        return _Prepared(pos, src.sha256, units)

    def _prepare_text(pos: int, src: Source, rows: list[int]) -> _Prepared:
        text = src.data[: config.text.max_chars]
        units = []
        for s, r in enumerate(rows):
            try:
                out = augmenter.apply(text, derive_seed(seed, m, v, ids[pos], s))
                units.append(_Unit(r, value=out, sort_key=len(out)))
            except Exception as exc:  # nlpaug failing on one odd text must not stop a shard
                units.append(_Unit(r, "error", f"augmentation failed: {exc}"))
        return _Prepared(pos, src.sha256, units)

    # Text waits for a few batches and sorts them by length (less padding); images go at once.
    chunk = section.batch_size * (4 if m == "text" else 1)
    pending: list[_Unit] = []
    reused_items = 0
    forward_seconds = 0.0

    def flush(units: list[_Unit]) -> None:
        nonlocal forward_seconds
        if m == "text":
            units = sorted(units, key=lambda u: u.sort_key)
        for start in range(0, len(units), section.batch_size):
            batch = units[start:start + section.batch_size]
            if m == "image":
                import torch

                inputs = torch.stack([u.value for u in batch])
            else:
                inputs = [u.value for u in batch]
            began = time.perf_counter()
            out = encoder.forward(inputs)
            forward_seconds += time.perf_counter() - began
            for u, vec in zip(batch, out):
                if np.isfinite(vec).all():
                    emb[u.row] = vec
                else:
                    status[u.row], reason[u.row] = "error", "encoder output is not finite"

    window = config.prefetch_batches * section.batch_size
    for prepared in ordered_prefetch(prepare, range(len(idx)), workers=config.loader_workers,
                                     window=window):
        sha[prepared.item_pos] = prepared.sha256
        reused_items += prepared.reused
        for u in prepared.units:
            if u.status != "ok":
                status[u.row], reason[u.row] = u.status, u.reason
            elif prepared.reused:
                emb[u.row] = u.value
            else:
                pending.append(u)
        if len(pending) >= chunk:
            flush(pending)
            pending = []
    if pending:
        flush(pending)

    material.sort(key=lambda row: row[0])
    actual_key = part_key(plan.view_key, plan.first_idx, plan.last_idx, material)
    table = _part_table(m, v, idx, ids, samples, emb, status, reason, sha, config.storage_dtype)
    counts = {"rows": n_rows, "ok": status.count("ok"), "missing": status.count("missing"),
              "error": status.count("error")}
    from pipeline.encoders import library_versions

    provenance = {
        "modality": m, "view": v, "shard": plan.shard, "cache_key": actual_key,
        "view_key": plan.view_key, "encoder": encoder.info, "view_params": params, "seed": seed,
        "samples": samples, "versions": library_versions(), "created_at": _now(),
        "augmenter": augmenter.provenance() if m == "image" else augmenter.info,
        "items": {"first_item_idx": plan.first_idx, "last_item_idx": plan.last_idx,
                  "n_items": len(idx)},
        "counts": counts, "storage_dtype": config.storage_dtype,
    }
    write_feature_part(ws, m, v, plan.shard, table, provenance)
    written = sha256_file(ws, *view_dir(m, v), plan.name)  # recorded in the store manifest
    return PartResult(m, v, plan.shard, True, len(idx), n_rows, counts["ok"], counts["missing"],
                      counts["error"], reused_items, time.perf_counter() - started,
                      forward_seconds, actual_key, written, damaged)


def _reusable_rows(ws: Workspace, plan: PartPlan) -> dict[int, tuple[str, str, list[np.ndarray]]]:
    """item_idx -> (item_id, source_sha256, embeddings per draw) from the stored part, for items
    whose every draw is ``ok`` and whose view key matches the plan's."""
    info = stored_info(ws, plan)
    if info is None or info.get("view_key") != plan.view_key:
        return {}
    parts = (*view_dir(plan.modality, plan.view), plan.name)
    try:  # page CRCs checked: rows of a damaged part are never copied forward
        table = pq.read_table(ws.path(*parts), filesystem=ws.fs, page_checksum_verification=True)
        validate_feature_rows(table, ws.display(*parts))
    except (ContractError, OSError, ValueError, pa.ArrowException):
        return {}
    samples = int(info.get("samples", 1))
    keys = table.select(["item_idx", "item_id", "sample", "status", "source_sha256"]).to_pydict()
    emb = table.column("embedding").combine_chunks()
    dim = emb.type.list_size
    values = emb.values.slice(emb.offset * dim, len(emb) * dim).to_numpy(
        zero_copy_only=False).astype(np.float32).reshape(len(emb), dim)
    grouped: dict[int, list[int]] = {}
    for r, i in enumerate(keys["item_idx"]):
        grouped.setdefault(i, []).append(r)
    out: dict[int, tuple[str, str, list[np.ndarray]]] = {}
    for i, rs in grouped.items():
        rs = sorted(rs, key=lambda r: keys["sample"][r])
        if [keys["sample"][r] for r in rs] != list(range(samples)):
            continue
        if any(keys["status"][r] != "ok" or keys["source_sha256"][r] is None for r in rs):
            continue
        out[i] = (keys["item_id"][rs[0]], keys["source_sha256"][rs[0]], [values[r] for r in rs])
    return out


def _part_table(modality: str, view: str, idx: list[int], ids: list[str], samples: int,
                emb: np.ndarray, status: list[str], reason: list[str | None],
                sha: list[str | None], storage_dtype: str) -> pa.Table:
    n = len(status)
    ok = np.array([s == "ok" for s in status], dtype=bool)
    values = pa.array(emb.astype(np.float16 if storage_dtype == "float16" else np.float32)
                      .reshape(-1))
    embedding = pa.FixedSizeListArray.from_arrays(values, emb.shape[1],
                                                  mask=pa.array(~ok, type=pa.bool_()))
    return pa.table({
        "item_idx": pa.array(np.repeat(np.asarray(idx, dtype=np.int64), samples)),
        "item_id": pa.array([i for i in ids for _ in range(samples)], pa.string()),
        "modality": pa.array([modality] * n, pa.string()),
        "view": pa.array([view] * n, pa.string()),
        "sample": pa.array(np.tile(np.arange(samples, dtype=np.int32), len(idx))),
        "embedding": embedding,
        "source_sha256": pa.array([h for h in sha for _ in range(samples)], pa.string()),
        "status": pa.array(status, pa.string()),
        "reason": pa.array(reason, pa.string()),
    })


# --------------------------------------------------------------------------- helpers


def ordered_prefetch(fn: Callable[[Any], T], items: Iterable[Any], *, workers: int,
                     window: int) -> Iterator[T]:
    """``map(fn, items)`` computed by ``workers`` threads up to ``window`` items ahead, yielded
    in input order: decoding and augmenting overlap the model's forward pass."""
    if workers <= 0:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="macl-prepare")
    try:
        it = iter(items)
        pending = deque(pool.submit(fn, x) for x in itertools.islice(it, max(window, 1)))
        while pending:
            result = pending.popleft().result()
            for x in itertools.islice(it, 1):
                pending.append(pool.submit(fn, x))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class ViewSummary:
    modality: str
    view: str
    parts_computed: int = 0
    parts_skipped: int = 0
    rows: int = 0
    ok: int = 0
    missing: int = 0
    error: int = 0
    items: int = 0
    encoded_items: int = 0  # items of computed parts that went through the model
    seconds: float = 0.0
    forward_seconds: float = 0.0


def summarize(results: Iterable[PartResult]) -> list[ViewSummary]:
    """Per (modality, view) totals, in run order."""
    out: dict[tuple[str, str], ViewSummary] = {}
    for r in results:
        s = out.setdefault((r.modality, r.view), ViewSummary(r.modality, r.view))
        s.parts_computed += r.computed
        s.parts_skipped += not r.computed
        s.rows += r.rows
        s.ok += r.ok
        s.missing += r.missing
        s.error += r.error
        s.items += r.items
        if r.computed:
            s.encoded_items += r.items - r.reused_items
            s.seconds += r.seconds
            s.forward_seconds += r.forward_seconds
    return list(out.values())


def format_summary(views: list[ViewSummary], wall_seconds: float) -> str:
    """A readable table: rows ok/missing/error per view, parts computed/skipped, items/s, and
    the share of the parts' time spent in the model's forward pass."""
    head = (f"{'modality':<8} {'view':<8} {'rows':>8} {'ok':>8} {'missing':>8} {'error':>6} "
            f"{'parts':>11} {'seconds':>8} {'items/s':>8} {'model':>6}")
    lines = [head, "-" * len(head)]
    for s in views:
        rate = f"{s.encoded_items / s.seconds:8.1f}" if s.seconds > 0 and s.encoded_items else \
            f"{'-':>8}"
        parts = f"{s.parts_computed} new/{s.parts_skipped} ok"
        model = f"{s.forward_seconds / s.seconds:6.0%}" if s.seconds > 0 else f"{'-':>6}"
        lines.append(f"{s.modality:<8} {s.view:<8} {s.rows:>8} {s.ok:>8} {s.missing:>8} "
                     f"{s.error:>6} {parts:>11} {s.seconds:8.1f} {rate} {model}")
    total_rows = sum(s.rows for s in views)
    computed = sum(s.parts_computed for s in views)
    skipped = sum(s.parts_skipped for s in views)
    encoded = sum(s.encoded_items for s in views)
    lines.append("-" * len(head))
    lines.append(f"{len(views)} views, {total_rows} rows; parts: {computed} computed, {skipped} "
                 f"already current; {wall_seconds:.1f} s wall"
                 + (f", {encoded / wall_seconds:.1f} item-views/s" if wall_seconds > 0 and
                    encoded else ""))
    return "\n".join(lines)
