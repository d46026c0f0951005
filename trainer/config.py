"""Typed run configuration: nested dataclasses that round-trip to YAML and reject unknown keys.

Resolution order (later wins): field defaults -> the variant's preset
(``trainer/configs/<model>.yaml``) -> a user file (``--config``) -> ``--set key=value``
overrides. Every value is checked against its field's type on the way in, so a typo in a key or
a string where a number belongs fails at start-up with the key's dotted name, never mid-run.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from schemas.hashing import sha256_json

PRESET_DIR = Path(__file__).resolve().parent / "configs"

#: variant name -> parts. ``fusion``: "required" (needs a feature store), "optional" (fuses the
#: store's modalities when there is one) or None; ``contrast``: None, "views" (multimodal views)
#: or "id_aug" (CL4SRec crop/mask/reorder). One table decides what each ``--model`` means, so a
#: variant cannot be contradicted by a loose flag.
VARIANTS: dict[str, dict[str, Any]] = {
    "sasrec": {"fusion": None, "contrast": None, "adaptive": False},
    "sasrec_mm": {"fusion": "required", "contrast": None, "adaptive": False},
    "macl": {"fusion": "required", "contrast": "views", "adaptive": True},
    "macl_noadp": {"fusion": "required", "contrast": "views", "adaptive": False},
    "macl_com": {"fusion": "optional", "contrast": "id_aug", "adaptive": True},
}
BASELINES = ("pop", "spop", "sknn")
MODELS = (*VARIANTS, *BASELINES)


class ConfigError(ValueError):
    """A configuration key or value that does not fit the typed config."""


@dataclass
class DataConfig:
    protocol: str | None = None  # split protocol folder; None = the only one in the workspace
    max_len: int = 50  # the last max_len items of a case feed the encoder
    attributes: list[str] = field(default_factory=list)  # extra item embeddings: category, brand


@dataclass
class FeatureConfig:
    fusion_view: str = "orig"  # the view whose features enter e_i (per modality)
    modalities: list[str] | None = None  # modalities to fuse; None = every modality in the store
    views: list[str] | None = None  # contrast pool as "modality/view"; None = every stored view
    samples: int | None = None  # draws per stochastic view to load; None = all stored
    dtype: Literal["float16", "float32"] = "float16"  # storage of the loaded tables
    mmap_threshold_mb: int = 512  # tables larger than this are memory-mapped from cache_dir
    cache_dir: str | None = None  # where memory-mapped tables live; None = system temp dir


@dataclass
class ArchConfig:
    dim: int = 64
    layers: int = 2
    heads: int = 2
    ffn_dim: int = 256
    dropout: float = 0.2
    attn_dropout: float = 0.2
    #: the official code's formulation: one attention layer without positions, tanh gates,
    #: log10 contrast with tau = 1, weights on the positive term only (features really loaded)
    paper_code: bool = False


@dataclass
class LossConfig:
    rec_positions: Literal["last", "all"] = "last"  # where the recommendation CE is applied
    rec_softmax: Literal["full", "sampled"] = "full"  # over all items, or sampled negatives
    sampled_negatives: int = 1024
    alpha: float = 0.1  # weight of the item-level contrast
    beta: float = 0.1  # weight of the session-level contrast
    tau: float = 0.2  # InfoNCE temperature (paper_code forces 1)
    item_negatives: int = 50  # M negatives per anchor, in the positive's view
    negatives: Literal["random", "hard"] = "random"
    hard_pool: int = 512  # candidates per view from which the M nearest are kept ('hard')
    item_anchors: Literal["batch", "all"] = "batch"  # anchors: items of the batch, or every item
    max_item_anchors: int = 256  # cap on batch anchors per step (a random subset beyond it)
    adaptive_hidden: int = 32  # hidden width of the adaptive-weight MLP
    com_crop: float = 0.6  # CL4SRec crop keeps this share of the sequence (macl_com)
    com_mask: float = 0.3  # CL4SRec mask replaces this share of items by a mask token
    com_reorder: float = 0.3  # CL4SRec reorder shuffles a segment of this share


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    scheduler: Literal["none", "cosine"] = "none"
    warmup_steps: int = 0
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    patience: int = 3  # epochs without validation gain before stopping
    select_metric: str = "hr@20"
    select_on_test: bool = False  # ONLY to reproduce the paper's reporting; labelled everywhere
    max_steps_per_epoch: int = 0  # 0 = the whole training split each epoch
    checkpoint_every_steps: int = 200  # mid-epoch last.pt for resume; 0 = epoch ends only
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"  # auto = bf16 on CUDA, off on CPU
    threads: int = 0  # torch CPU threads; 0 = torch's default
    progress: bool = True


@dataclass
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    tie_policy: Literal["pessimistic", "optimistic"] = "pessimistic"
    full_ranks: bool = False  # exact ranks beyond max(ks) (slower); else max(ks)+1 = "below"
    tail_share: float = 0.2  # long tail = least popular items carrying this share of train events
    popularity_buckets: int = 5
    batch_size: int = 1024


@dataclass
class BaselineConfig:
    sknn_k: int = 100  # neighbour sessions
    sknn_sample: int = 500  # most recent candidate sessions considered; 0 = all
    sknn_batch: int = 128  # query sessions scored at once (bounds the sessions x batch matrix)


@dataclass
class RunConfig:
    model: str = "sasrec"
    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    arch: ArchConfig = field(default_factory=ArchConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)

    # ---- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], source: str = "config") -> "RunConfig":
        cfg = _build(cls, obj, source, "")
        cfg.check()
        return cfg

    @classmethod
    def from_yaml(cls, text: str, source: str = "config") -> "RunConfig":
        return cls.from_dict(yaml.safe_load(text) or {}, source)

    def sha256(self) -> str:
        return sha256_json(self.to_dict())

    # ---- semantics ---------------------------------------------------------------------------
    @property
    def variant(self) -> dict[str, Any]:
        return VARIANTS[self.model]

    @property
    def is_baseline(self) -> bool:
        return self.model in BASELINES

    def check(self) -> None:
        """Cross-field rules that types alone cannot express."""
        if self.model not in MODELS:
            raise ConfigError(f"model: unknown variant {self.model!r}; choose from {list(MODELS)}")
        if self.arch.dim % self.arch.heads:
            raise ConfigError(f"arch.dim ({self.arch.dim}) must be divisible by arch.heads "
                              f"({self.arch.heads})")
        for key, value in (("data.max_len", self.data.max_len), ("train.batch_size",
                           self.train.batch_size), ("arch.dim", self.arch.dim),
                           ("arch.layers", self.arch.layers), ("eval.batch_size",
                           self.eval.batch_size), ("loss.item_negatives", self.loss.item_negatives)):
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        if not self.eval.ks or min(self.eval.ks) < 1:
            raise ConfigError(f"eval.ks must be positive cut-offs, got {self.eval.ks}")
        metric, _, k = self.train.select_metric.partition("@")
        if metric not in ("hr", "mrr", "ndcg") or not k.isdigit() or int(k) not in self.eval.ks:
            raise ConfigError(f"train.select_metric must be hr|mrr|ndcg@K with K in eval.ks "
                              f"{self.eval.ks}, got {self.train.select_metric!r}")
        if not 0 < self.eval.tail_share < 1:
            raise ConfigError(f"eval.tail_share must be in (0, 1), got {self.eval.tail_share}")
        for attr in self.data.attributes:
            if attr not in ("category", "brand"):
                raise ConfigError(f"data.attributes: {attr!r} is not a catalog attribute "
                                  "(category, brand)")
        for key in ("com_crop", "com_mask", "com_reorder"):
            if not 0 < getattr(self.loss, key) <= 1:
                raise ConfigError(f"loss.{key} must be in (0, 1]")
        if self.loss.negatives == "hard" and self.loss.hard_pool < self.loss.item_negatives:
            raise ConfigError("loss.hard_pool must be >= loss.item_negatives")
        if self.arch.paper_code and self.model not in ("macl", "macl_noadp"):
            raise ConfigError("arch.paper_code reproduces the official MACL code; it applies to "
                              "macl and macl_noadp only")


def _build(cls: type, obj: Any, source: str, prefix: str) -> Any:
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'top level'} must be a mapping, "
                          f"got {type(obj).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(obj) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {[prefix + k for k in unknown]}; known keys "
                          f"here: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in obj.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, source, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, tp, f"{source}: {prefix}{name}")
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against a field type; ints widen to floats, nothing else converts."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: must be one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: must be a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported field type {tp}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value), the value read as YAML (``1e-3``, ``[5,10]``, ``null``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {text!r}")
    value = yaml.safe_load(raw) if raw.strip() else ""
    if isinstance(value, str) and _looks_like_float(value):  # YAML 1.1 reads "1e-3" as a string
        value = float(value)
    return key.strip().split("."), value


def _looks_like_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return any(c in s.lower() for c in "e.") and s.strip().lower() not in ("nan", "inf", "-inf")


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_preset(model: str) -> dict[str, Any]:
    path = PRESET_DIR / f"{model}.yaml"
    if model not in MODELS or not path.exists():
        raise ConfigError(f"--model: unknown variant {model!r}; choose from {list(MODELS)}")
    return yaml.safe_load(path.read_text()) or {}


def resolve_config(model: str, config_file: str | Path | None = None,
                   overrides: list[str] | None = None) -> RunConfig:
    """Defaults <- preset of ``model`` <- ``config_file`` <- ``overrides`` (``key=value``)."""
    merged = _merge(RunConfig().to_dict(), load_preset(model))
    if config_file is not None:
        text = Path(config_file).read_text()
        user = yaml.safe_load(text) or {}
        RunConfig.from_dict(_merge(merged, user), str(config_file))  # unknown keys named by file
        merged = _merge(merged, user)
    merged["model"] = model
    for text in overrides or []:
        path, value = parse_override(text)
        node = merged
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"--set {text}: unknown key {'.'.join(path)}")
            node = node[part]
        if path[-1] not in node:
            raise ConfigError(f"--set {text}: unknown key {'.'.join(path)}")
        if path == ["model"]:
            raise ConfigError("--set model=...: choose the variant with --model")
        node[path[-1]] = value
    return RunConfig.from_dict(merged, "resolved config")
