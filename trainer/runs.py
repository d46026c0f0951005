"""Run folders: ``runs/<run_id>/`` with the resolved config, manifest, checkpoints, metrics log,
summary and report; and a comparison table over finished runs.

Every file is written atomically through a :class:`schemas.fs.Workspace` rooted at the run
folder, so a run folder may live on any filesystem pyarrow reaches (local disk, S3).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import secrets
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from schemas.errors import ContractError
from schemas.fs import Workspace
from schemas.hashing import sha256_bytes
from schemas.io import ITEMS_PATH, split_path
from schemas.runs import RunManifest

from trainer.config import RunConfig

CONFIG_NAME = "config.resolved.yaml"
MANIFEST_NAME = "manifest.json"
METRICS_NAME = "metrics.jsonl"
SUMMARY_NAME = "summary.json"
LAST, BEST = "last.pt", "best.pt"
SELECT_ON_TEST_LABEL = "SELECTED ON TEST (paper-style reporting, optimistic)"


def new_run_id(model: str) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{model}-{stamp}-{secrets.token_hex(2)}"


@dataclass
class RunDir:
    ws: Workspace

    @classmethod
    def create(cls, location: str) -> "RunDir":
        ws = Workspace.open(location)
        ws.makedirs()
        return cls(ws)

    @classmethod
    def open(cls, run: str, workspace: str | None = None) -> "RunDir":
        """A run folder path/URI, or a run id under ``<workspace>/runs``."""
        candidates = [run]
        if workspace is not None:
            candidates.append(Workspace.open(workspace).child_uri("runs", run))
        for c in candidates:
            ws = Workspace.open(c)
            if ws.exists(CONFIG_NAME):
                return cls(ws)
        raise ContractError(run, f"is not a run folder (no {CONFIG_NAME})")

    @property
    def location(self) -> str:
        return self.ws.display()

    def exists(self, name: str) -> bool:
        return self.ws.exists(name)

    def read_config(self) -> RunConfig:
        return RunConfig.from_yaml(self.ws.read_bytes(CONFIG_NAME).decode(),
                                   self.ws.display(CONFIG_NAME))

    def write_config(self, cfg: RunConfig) -> None:
        self.ws.write_bytes_atomic(cfg.to_yaml().encode(), CONFIG_NAME)

    def read_manifest(self) -> RunManifest:
        return RunManifest.from_json(self.ws.read_json(MANIFEST_NAME), self.ws.display(MANIFEST_NAME))

    def write_manifest(self, manifest: RunManifest) -> None:
        self.ws.write_json_atomic(manifest.to_json(), MANIFEST_NAME)

    def write_metrics(self, records: list[dict[str, Any]]) -> None:
        """The whole log, rewritten: a resumed run never duplicates or keeps stale lines."""
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        self.ws.write_bytes_atomic(text.encode(), METRICS_NAME)

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.ws.exists(METRICS_NAME):
            return []
        return [json.loads(line) for line in self.ws.read_bytes(METRICS_NAME).decode().splitlines()
                if line.strip()]

    def write_summary(self, summary: dict[str, Any]) -> None:
        self.ws.write_json_atomic(summary, SUMMARY_NAME)

    def read_summary(self) -> dict[str, Any] | None:
        return self.ws.read_json(SUMMARY_NAME) if self.ws.exists(SUMMARY_NAME) else None

    def write_bytes(self, name: str, data: bytes) -> None:
        self.ws.write_bytes_atomic(data, name)

    def read_bytes(self, name: str) -> bytes:
        return self.ws.read_bytes(name)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("macl", "torch", "numpy", "pyarrow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def build_manifest(run_id: str, cfg: RunConfig, ws: Workspace, protocol: str,
                   store_sha: str | None, extra: dict[str, Any]) -> RunManifest:
    data = {"catalog": sha256_bytes(ws.read_bytes(*ITEMS_PATH))}
    for part in ("train", "valid", "test"):
        if ws.exists(*split_path(protocol, part)):
            data[part] = sha256_bytes(ws.read_bytes(*split_path(protocol, part)))
    return RunManifest(run_id=run_id, model=cfg.model, workspace=ws.display(), protocol=protocol,
                       config_sha256=cfg.sha256(), data_sha256=data, store_sha256=store_sha,
                       seed=cfg.seed, versions=versions(),
                       created_at=dt.datetime.now(dt.timezone.utc).isoformat(), extra=extra)


def default_runs_dir(workspace: str) -> str:
    return Workspace.open(workspace).child_uri("runs")


def join(location: str, name: str) -> str:
    """``location/name``; a URI keeps its query options (``?endpoint_override=...``)."""
    if "://" not in location:
        return os.path.join(location, name)
    base, sep, query = location.partition("?")
    return base.rstrip("/") + "/" + name + sep + query


# ---- tables ------------------------------------------------------------------------------------

def format_table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(header)]
    line = lambda vals: "  ".join(v.rjust(w) if i else v.ljust(w)  # noqa: E731
                                  for i, (v, w) in enumerate(zip(vals, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, cells)])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def summary_table(summary: dict[str, Any], ks: list[int]) -> str:
    """Metrics of one run at its selected epoch: one row per split/slice."""
    header = ["split", "n"] + [f"{m}@{k}" for k in ks for m in ("hr", "mrr", "ndcg")]
    rows = []
    for split in ("valid", "test"):
        res = summary.get(split)
        if not res:
            continue
        rows.append([split, res.get("n_cases", "")] + [res["metrics"][f"{m}@{k}"] for k in ks
                                                     for m in ("hr", "mrr", "ndcg")])
        for name, sl in res.get("slices", {}).items():
            rows.append([f"{split}:{name}", sl["n"]] + [sl[f"{m}@{k}"] for k in ks
                                                        for m in ("hr", "mrr", "ndcg")])
    epoch = summary["best_epoch"]
    title = f"{summary['model']}  run {summary['run_id']}  " + \
        (f"selected epoch {epoch}" if epoch >= 0 else "fitted from train (no epochs)")
    if summary.get("select_on_test"):
        title += f"  [{SELECT_ON_TEST_LABEL}]"
    return title + "\n" + format_table(header, rows)


def compare_runs(runs: list[str | Path | RunDir], split: str = "test",
                 ks: tuple[int, ...] = (5, 10, 20)) -> str:
    """One row per finished run: the split's metrics at each run's selected epoch."""
    header = ["model", "run_id", "selected_on", "epoch"] + \
             [f"{m}@{k}" for k in ks for m in ("hr", "mrr")] + ["tail hr@%d" % max(ks)]
    rows = []
    for run in runs:
        rd = run if isinstance(run, RunDir) else RunDir.open(str(run))
        s = rd.read_summary()
        if s is None or split not in s:
            raise ContractError(rd.location, f"has no finished {split} results (summary.json)")
        m = s[split]["metrics"]
        tail = s[split].get("slices", {}).get("tail", {}).get(f"hr@{max(ks)}", float("nan"))
        rows.append([s["model"], s["run_id"], "TEST (paper-style)" if s.get("select_on_test")
                     else "valid", s["best_epoch"] if s["best_epoch"] >= 0 else "-"]
                    + [m[f"{x}@{k}"] for k in ks
                                                       for x in ("hr", "mrr")] + [tail])
    return format_table(header, rows)
