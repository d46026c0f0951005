"""Checkpoints made of tensors and JSON text only, so ``torch.load(weights_only=True)`` reads them.

A checkpoint holds everything a resumed run needs to continue exactly where it stopped: model,
optimizer, scheduler and grad-scaler state, the RNG states, and the loop's progress (epoch,
step, early-stopping state, metric history, the running sums of the interrupted epoch) as JSON.
"""
from __future__ import annotations

import io
import json
from typing import Any

import torch

FORMAT = "macl-checkpoint/1"


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def to_bytes(*, model: dict, progress: dict, optimizer: dict | None = None,
             scheduler: dict | None = None, scaler: dict | None = None,
             rng: dict | None = None, config_yaml: str = "") -> bytes:
    payload = {
        "format": FORMAT,
        "model": model,
        "optimizer": optimizer or {},
        "scheduler": scheduler or {},
        "scaler": scaler or {},
        "rng": rng or {},
        "progress": json.dumps(progress, sort_keys=True),
        "config": config_yaml,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def from_bytes(data: bytes, where: str = "checkpoint") -> dict[str, Any]:
    """Load with ``weights_only=True`` (no arbitrary unpickling) and decode the JSON progress."""
    from schemas.errors import ContractError

    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise ContractError(where, f"is not a readable macl checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ContractError(where, f"is not a {FORMAT} checkpoint")
    payload["progress"] = json.loads(payload["progress"])
    return payload
