"""The run manifest: what a training run read and how, so any number can be traced back."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from schemas.errors import ContractError
from schemas.tables import SCHEMA_VERSION


@dataclass
class RunManifest:
    run_id: str
    model: str
    workspace: str
    protocol: str
    config_sha256: str
    data_sha256: dict[str, str]  # split part / catalog -> sha256 of the file bytes
    store_sha256: str | None  # sha256 of features/_manifest.json, None for ID-only runs
    seed: int
    versions: dict[str, str]  # python, torch, macl, ...
    created_at: str
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return {"kind": "run_manifest", **asdict(self)}

    @classmethod
    def from_json(cls, obj: dict[str, Any], path: str = "manifest.json") -> "RunManifest":
        if obj.get("kind") != "run_manifest":
            raise ContractError(path, "is not a run manifest (kind missing or wrong)")
        if int(obj.get("schema_version", 0)) > SCHEMA_VERSION:
            raise ContractError(path, "was written by a newer macl; upgrade macl to read it")
        body = {k: v for k, v in obj.items() if k != "kind"}
        try:
            return cls(**body)
        except TypeError as exc:
            raise ContractError(path, f"malformed run manifest ({exc})") from exc
