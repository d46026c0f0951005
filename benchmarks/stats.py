"""Per-case metrics from stored ranks, and paired bootstrap confidence intervals between runs.

Test sets of the benchmark datasets are small (a few hundred cases for H&M and ML-100K), so a
difference between two models is only reported as a win when its bootstrap interval over test
cases excludes zero. Both models are scored on the same cases, so the resampling is paired:
one draw of case indices is applied to both, which removes the between-case variance that an
unpaired comparison would count twice.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: resamples drawn at once; bounds the (chunk, n_cases) index matrix to a few tens of MB
MAX_CHUNK_CELLS = 4_000_000


def read_test_ranks(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """(1-based target ranks, targets) of a finished run's test cases, in case order, from its
    ``test_ranks.parquet``."""
    import pyarrow.parquet as pq

    t = pq.read_table(run / "test_ranks.parquet").sort_by("row")
    return (t.column("rank").to_numpy().astype(np.int64),
            t.column("target").to_numpy().astype(np.int64))


def per_case(ranks: np.ndarray, metric: str, k: int) -> np.ndarray:
    """Per-case HR/MRR/NDCG@k from 1-based target ranks (a rank above k scores 0, so ranks
    stored as ``max(ks) + 1`` = "below the cut-off" are exact for every k <= max(ks))."""
    r = np.asarray(ranks, dtype=np.float64)
    hit = r <= k
    if metric == "hr":
        return hit.astype(np.float64)
    if metric == "mrr":
        return np.where(hit, 1.0 / r, 0.0)
    if metric == "ndcg":
        return np.where(hit, 1.0 / np.log2(r + 1.0), 0.0)
    raise ValueError(f"unknown metric {metric!r} (hr, mrr, ndcg)")


@dataclass(frozen=True)
class PairedDiff:
    """``a`` vs ``b`` on the same cases: means, difference, relative difference, intervals."""

    n: int
    mean_a: float
    mean_b: float
    diff: float  # mean_a - mean_b
    rel: float  # diff / mean_b (nan when mean_b == 0)
    diff_ci: tuple[float, float]
    rel_ci: tuple[float, float]
    level: float

    @property
    def significant(self) -> bool:
        """The interval of the difference excludes zero."""
        return self.diff_ci[0] > 0 or self.diff_ci[1] < 0

    def verdict(self) -> str:
        if not self.significant:
            return "within noise"
        return "better" if self.diff > 0 else "worse"


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, n_boot: int = 10_000, seed: int = 0,
                     level: float = 0.95) -> PairedDiff:
    """Percentile bootstrap of ``mean(a) - mean(b)`` and ``mean(a) / mean(b) - 1`` over cases.

    ``a[i]`` and ``b[i]`` belong to the same test case. The draws depend only on ``seed``,
    ``n_boot`` and ``len(a)``, so the result is the same whatever chunking memory allows.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-d and of one length, got {a.shape} and {b.shape}")
    n = len(a)
    if n == 0:
        raise ValueError("no cases to compare")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    chunk = max(1, MAX_CHUNK_CELLS // n)
    sums_a = np.empty(n_boot)
    sums_b = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        idx = rng.integers(0, n, size=(stop - start, n))
        sums_a[start:stop] = a[idx].sum(axis=1)
        sums_b[start:stop] = b[idx].sum(axis=1)
    diffs = (sums_a - sums_b) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        rels = np.where(sums_b > 0, sums_a / sums_b - 1.0, np.nan)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    mean_a, mean_b = float(a.mean()), float(b.mean())
    finite = rels[np.isfinite(rels)]
    rel_ci = tuple(float(x) for x in np.percentile(finite, q)) if len(finite) else (np.nan, np.nan)
    return PairedDiff(n=n, mean_a=mean_a, mean_b=mean_b, diff=mean_a - mean_b,
                      rel=(mean_a / mean_b - 1.0) if mean_b > 0 else float("nan"),
                      diff_ci=tuple(float(x) for x in np.percentile(diffs, q)),
                      rel_ci=rel_ci, level=level)
