"""Time a full ``macl audit`` over synthetic stores of N items x 10 views (prints figures).

For each size the store is generated once (``benchmarks.synthetic_store``: catalog, one tiny
image file per item, parts of 100k rows, manifest with part hashes) and reused by later runs.
Then, in one process with the libraries already imported:

- cold:  first audit, every image read and hashed (no image-hash cache yet);
- warm:  the same audit again: images only stat-ed (cache hit), part integrity by manifest hash;
- crc:   warm, but with the manifest's part hashes removed, so integrity decodes every page and
         checks its CRC (what a store without recorded hashes costs).

    python -m benchmarks.audit --items 100000 1000000 --dim 16
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.synthetic_store import DEFAULT_VIEWS, write_synthetic_store


def ensure_store(root: Path, n_items: int, dim: int, shard_size: int) -> Path:
    """Generate the store unless a finished one with the same parameters is there."""
    params = {"items": n_items, "dim": dim, "views": len(DEFAULT_VIEWS), "shard_size": shard_size}
    marker = root / "benchmark.json"
    if marker.exists() and json.loads(marker.read_text()) == params:
        return root
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    write_synthetic_store(root, n_items, dim=dim, shard_size=shard_size, progress=True)
    print(f"  generated {n_items} items x {len(DEFAULT_VIEWS)} views in "
          f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
    marker.write_text(json.dumps(params))
    return root


def without_part_hashes(root: Path) -> dict[str, Any]:
    """Drop the recorded part hashes from the manifest; returns the original to restore."""
    path = root / "features" / "_manifest.json"
    original = json.loads(path.read_text())
    stripped = json.loads(json.dumps(original))
    for view in stripped["views"].values():
        for part in view["parts"].values():
            part.pop("sha256", None)
    path.write_text(json.dumps(stripped))
    return original


def run_audit(root: Path, label: str) -> dict[str, Any]:
    from pipeline.audit import audit_store

    started = time.perf_counter()
    report = audit_store(root)
    seconds = time.perf_counter() - started
    if not report.passed:
        raise SystemExit(f"the synthetic store failed the audit: {report.failed_gates}")
    sql = sum(v for k, v in report.timings.items() if k.startswith("sql:"))
    return {"run": label, "seconds": seconds, "catalog": report.timings["catalog"],
            "parts": report.timings["parts"], "images": report.timings["images"],
            "sql": sql, "group_stats": report.timings["sql:group_stats"], "rows": report.rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--shard-size", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/macl-audit-bench"))
    parser.add_argument("--repeat", type=int, default=2, help="warm runs per size (best kept)")
    parser.add_argument("--runs", nargs="+", choices=("cold", "warm", "crc"),
                        default=["cold", "warm", "crc"])
    args = parser.parse_args(argv)

    import duckdb
    import pyarrow
    import pyarrow.dataset  # noqa: F401  (imports pandas: keep import time out of the figures)

    import pipeline.audit  # noqa: F401

    rows = []
    for n in args.items:
        root = ensure_store(args.workdir / f"items-{n}", n, args.dim, args.shard_size)
        if "cold" in args.runs:
            (root / "audit" / "image_sha256.parquet").unlink(missing_ok=True)
            rows.append({"items": n, **run_audit(root, "cold")})
        if "warm" in args.runs:
            warm = [run_audit(root, "warm") for _ in range(args.repeat)]
            rows.append({"items": n, **min(warm, key=lambda r: r["seconds"])})
        if "crc" in args.runs:
            original = without_part_hashes(root)
            try:
                crc = [run_audit(root, "crc") for _ in range(args.repeat)]
            finally:
                (root / "features" / "_manifest.json").write_text(json.dumps(original))
            rows.append({"items": n, **min(crc, key=lambda r: r["seconds"])})

    load = os.getloadavg()  # other work on a shared machine inflates every figure
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} at the end; "
          f"duckdb {duckdb.__version__}, pyarrow {pyarrow.__version__}; "
          f"{len(DEFAULT_VIEWS)} views, dim {args.dim} float32, parts of {args.shard_size} rows")
    cols = ["items", "rows", "run", "seconds", "catalog", "parts", "images", "sql",
            "group_stats"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---:" for _ in cols) + "|")
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c])
                                for c in cols) + " |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the process: {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
