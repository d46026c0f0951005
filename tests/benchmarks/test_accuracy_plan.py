"""The accuracy orchestrator's plan: which runs it schedules for a dataset."""
import re

from benchmarks.accuracy import BY_NAME, Plan


def _trained(plan: Plan, dataset: str) -> dict[str, set[int]]:
    runs: dict[str, set[int]] = {}
    for key in plan.jobs:
        name, _, job = key.partition(":")
        m = re.fullmatch(r"(.+)-s(\d+)", job)
        if name == dataset and m:
            runs.setdefault(m.group(1), set()).add(int(m.group(2)))
    return runs


def test_every_variant_gets_the_seeds_and_the_grid_comes_first(tmp_path):
    plan = Plan(tmp_path, tmp_path, seeds=3, threads=1)
    plan.dataset(BY_NAME["ml100k"])
    runs = _trained(plan, "ml100k")
    assert runs["pop"] == {0} and runs["sknn"] == {0}  # deterministic: one run
    assert runs["macl"] == runs["sasrec_mm"] == runs["macl-paper_code"] == {0, 1, 2}
    keys = list(plan.jobs)
    assert keys.index("ml100k:choose") < keys.index("ml100k:macl-s0")


def test_variants_limits_the_trained_runs_only(tmp_path):
    plan = Plan(tmp_path, tmp_path, seeds=3, threads=1, variants=("sasrec_mm", "macl"))
    plan.dataset(BY_NAME["ml100k"])
    assert _trained(plan, "ml100k") == {"sasrec_mm": {0, 1, 2}, "macl": {0, 1, 2}}
    assert "ml100k:features" in plan.jobs and "ml100k:choose" in plan.jobs
