"""The incremental rerun at catalog scale: what adding 1% new items costs on a complete store.

``benchmarks/extract.py`` measures the +1% rerun on a few hundred items, where the rerun's fixed
costs (Prefect start, planning, one task per view) dominate. This script measures it on a whole
store, e.g. the full H&M catalog: on a copy of the workspace the last ``--fraction`` of the
catalog (by ``item_idx``) is removed and the store brought up to date (untimed), then those
items are added back, as a nightly run would find them, and the features rerun is timed.

    .venv/bin/python benchmarks/rerun_at_scale.py --workspace benchmarks/out/hm_full \
        --full-seconds 4100

``--full-seconds`` is the wall time of the full run to compare with (the copy's own full run
is not repeated: it takes hours on a CPU).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.runtime import configure_environment  # noqa: E402

configure_environment(REPO / ".prefect")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, required=True,
                        help="a workspace with a complete feature store")
    parser.add_argument("--config", help="features config of that store (default preset)")
    parser.add_argument("--fraction", type=float, default=0.01)
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "out" / "rerun")
    parser.add_argument("--full-seconds", type=float,
                        help="wall seconds of the full run, for the ratio")
    args = parser.parse_args()
    if not 0 < args.fraction < 1:
        parser.error("--fraction is in (0, 1)")

    from flows.features import run_features
    from schemas.fs import Workspace
    from schemas.io import read_items, write_items
    from schemas.tables import read_info

    shutil.rmtree(args.work, ignore_errors=True)
    for folder in ("catalog", "features"):
        shutil.copytree(args.workspace / folder, args.work / folder)
    ws = Workspace.open(str(args.work))
    items = read_items(ws)
    info = read_info(items.schema)
    n = items.num_rows
    added = math.ceil(n * args.fraction)
    kept = items.filter(items.column("item_idx").to_numpy() <= n - added)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"store {args.workspace}: {n} items; {added} ({added / n:.1%}) removed, then added "
          "back", flush=True)

    write_items(ws, kept, info)
    started = time.perf_counter()
    run_features(str(args.work), args.config)
    print(f"store brought up to date on {kept.num_rows} items in "
          f"{time.perf_counter() - started:.1f} s (untimed preparation)", flush=True)

    write_items(ws, items, info)
    started = time.perf_counter()
    summary = run_features(str(args.work), args.config)
    rerun = time.perf_counter() - started
    views = summary["views"]
    computed = sum(v["parts_computed"] for v in views)
    skipped = sum(v["parts_skipped"] for v in views)
    encoded = sum(v["encoded_items"] for v in views)
    print(f"rerun after +{added} items: {rerun:.1f} s; parts recomputed {computed}, skipped "
          f"{skipped}; item-views recomputed (not reused) {encoded}")
    if args.full_seconds:
        print(f"full run {args.full_seconds:.0f} s: ratio {rerun / args.full_seconds:.4f} "
              "(goal <= 0.02)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
