"""Compare two groups of finished runs on the same test cases (paired bootstrap; prints figures).

Each group is one or more run folders (seeds of one model); per-case metrics are averaged over
a group's runs case by case, as ``benchmarks/accuracy.py`` does, so two models trained in
different workspaces with the same split can be compared, e.g. MACL on a store with every view
against MACL on a store with fewer views:

    .venv/bin/python benchmarks/compare_runs.py \
        --a benchmarks/out/hm_full/bench_runs/macl11-s{0,1,2} \
        --b benchmarks/out/accuracy/hm/bench_runs/macl-s{0,1,2}
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.stats import paired_bootstrap, per_case, read_test_ranks  # noqa: E402


def group_ranks(runs: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(ranks of shape (runs, cases), targets) of runs over one test set, cases in row order."""
    ranks, targets = [], None
    for run in runs:
        path = run / "test_ranks.parquet"
        if not path.exists():
            raise SystemExit(f"{path}: missing (is {run} a finished run?)")
        run_ranks, run_targets = read_test_ranks(run)
        if targets is not None and not np.array_equal(run_targets, targets):
            raise SystemExit(f"{path}: other test cases than {runs[0]} (not the same split)")
        targets = run_targets
        ranks.append(run_ranks)
    return np.stack(ranks), targets


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", nargs="+", type=Path, required=True, help="run folders of model A")
    p.add_argument("--b", nargs="+", type=Path, required=True, help="run folders of model B")
    p.add_argument("--metrics", nargs="+", default=["hr@20", "mrr@20", "ndcg@20"])
    p.add_argument("--resamples", type=int, default=10_000)
    args = p.parse_args(argv)
    ranks_a, targets_a = group_ranks(args.a)
    ranks_b, targets_b = group_ranks(args.b)
    if not np.array_equal(targets_a, targets_b):
        raise SystemExit("the two groups were tested on different cases: not comparable")
    print(f"A: {len(args.a)} run(s), B: {len(args.b)} run(s); {len(targets_a)} test cases; "
          f"{args.resamples} paired resamples, 95% intervals")
    print("| metric | A mean ± std over runs | B mean ± std over runs | A vs B | 95% CI | verdict |")
    print("|---|---|---|---|---|---|")
    for name in args.metrics:
        metric, k = name.split("@")
        per_run_a = np.stack([per_case(r, metric, int(k)) for r in ranks_a])
        per_run_b = np.stack([per_case(r, metric, int(k)) for r in ranks_b])
        d = paired_bootstrap(per_run_a.mean(0), per_run_b.mean(0), n_boot=args.resamples)
        spread = [f"{m.mean(1).mean():.4f} ± {m.mean(1).std(ddof=1) if len(m) > 1 else 0:.4f}"
                  for m in (per_run_a, per_run_b)]
        print(f"| {name} | {spread[0]} | {spread[1]} | {d.rel:+.1%} | "
              f"[{d.rel_ci[0]:+.1%}, {d.rel_ci[1]:+.1%}] | {d.verdict()} |")
    for label, runs in (("A", args.a), ("B", args.b)):
        epochs = [json.loads((r / "summary.json").read_text()).get("best_epoch") for r in runs]
        print(f"{label} selected epochs: {epochs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
