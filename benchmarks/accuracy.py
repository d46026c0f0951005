"""Accuracy benchmark on real data: every variant x seed through the real CLI, then the tables.

For each dataset: ``macl ingest`` -> ``macl split`` (unless the source is pre-split) ->
``macl features`` (multimodal datasets) -> a small validation grid for MACL's contrastive
weights (seed 0, chosen on VALIDATION hr@20; written to ``benchmarks/configs/``) -> ``macl
train`` for every variant x seed (each run selects its epoch on validation and reports test
there) -> ``benchmarks/RESULTS.md``: mean ± std over seeds, the long-tail slice, and paired
bootstrap confidence intervals over test cases for each MACL-vs-baseline difference (per-case
ranks from each run's ``test_ranks.parquet``, averaged over seeds case by case), plus
diagnostics where MACL does not win (feature-only retrieval, view similarity, adaptive weights).

Resumable: finished steps are skipped (a run with ``summary.json`` is done, a run with
``last.pt`` is resumed with ``macl train --resume``), so the script can be killed and rerun.
Work goes to ``benchmarks/out/accuracy/`` (git-ignored); only RESULTS.md and the chosen configs
are meant for git.

Usage::

    .venv/bin/python benchmarks/accuracy.py                       # everything (hours on 2 cores)
    .venv/bin/python benchmarks/accuracy.py --datasets ml100k hm  # some datasets
    .venv/bin/python benchmarks/accuracy.py --jobs 2 --seeds 3    # 2 runs at once, 3 seeds
    .venv/bin/python benchmarks/accuracy.py --dry-run             # print the plan
    .venv/bin/python benchmarks/accuracy.py --datasets scientific --variants sasrec_mm macl
    .venv/bin/python benchmarks/accuracy.py --report-only         # tables from finished runs
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import results as res  # noqa: E402
from benchmarks.stats import paired_bootstrap, per_case  # noqa: E402

CONFIGS = REPO / "benchmarks" / "configs"
MACL = [str(Path(sys.executable).with_name("macl"))]
ALL_VARIANTS = ("pop", "sknn", "sasrec", "sasrec_mm", "macl_com", "macl_noadp", "macl",
                "macl+paper_code")
ID_VARIANTS = ("pop", "sknn", "sasrec", "macl_com")
DETERMINISTIC = ("pop", "sknn")  # fitted from train: one run, the seed changes nothing
TUNED = ("macl", "macl_noadp", "macl_com", "macl+paper_code")  # take the grid's choice
BASELINES = ("pop", "sknn", "sasrec", "sasrec_mm")  # "best baseline" of the paper's claim
KS = (5, 10, 20)
#: the paper's claims (relative differences, %): MACL vs the best baseline, vs ID augmentation
PAPER = {"best_hr20": (4.14, 11.90), "best_mrr20": (2.25, 27.34), "idaug_hr20": (2.85, 4.68)}


@dataclass
class Dataset:
    name: str
    title: str
    ingest: list[str]  # macl ingest arguments after the format (paths relative to --data)
    protocol: str
    split: list[str] | None  # macl split arguments; None = the source's own split (given)
    features: str | None  # features config under benchmarks/configs; None = ID only
    variants: tuple[str, ...]
    grid: tuple[tuple[float, float, float], ...] = ()  # (alpha, beta, tau) for macl, seed 0
    train_set: list[str] = field(default_factory=list)  # extra --set for every trained run
    note: str = ""


def alpha_beta_grid(weights: Sequence[float], taus: Sequence[float]) -> tuple:
    """(alpha, beta, tau) points with alpha = beta (the paper ties the two task weights)."""
    return tuple((w, w, t) for w in weights for t in taus)


GRID = alpha_beta_grid((0.005, 0.02, 0.1, 0.5), (0.1, 0.2, 0.5))
# where a run costs minutes: a cross around (0.02, 0.02, 0.2)
GRID_CROSS = ((0.005, 0.005, 0.2), (0.02, 0.02, 0.1), (0.02, 0.02, 0.2), (0.02, 0.02, 0.5),
              (0.1, 0.1, 0.2))
DATASETS = [
    Dataset("ml100k", "MovieLens-100K (posters + TMDB overviews)",
            ["movielens", "--source", "{data}/ml100k_mm"], "macl", ["--protocol", "macl"],
            "features_default.yaml", ALL_VARIANTS, GRID,
            note="sessions = a user's ratings cut at 30-minute gaps; protocol `macl` (the paper's "
                 "recipe: items with >= 5 events, sessions >= 2, last item = target, inputs "
                 "truncated to 19, time-ordered 80/10/10)"),
    Dataset("scientific", "Amazon Industrial & Scientific (text only)",
            ["recbole", "--source", "{data}/amazon_scientific"], "given", None,
            "features_text_only.yaml", ALL_VARIANTS, GRID_CROSS,
            train_set=["train.epochs=5"],
            note="the RecBole/UniSRec leave-one-out split as given (user histories up to 50); "
                 "item text only (title, categories, brand): the text modality alone, like the "
                 "paper's Instacart. 34,101 training cases; a MACL epoch takes ~32 s on an "
                 "otherwise idle core of the 2-core machine (~2 min under the shared load of "
                 "earlier sessions). Runs are capped at 5 epochs with a 5-point grid, a cross "
                 "around (0.02, 0.02, 0.2): alpha = beta in 0.005, 0.02, 0.1 at tau 0.2, and "
                 "tau 0.1, 0.5 at 0.02. Most select their last epoch, but the cap costs "
                 "nothing measurable: uncapped runs (30 max, patience 3; docs/readme/trainer.md) "
                 "select epoch 4-5 too, and their macl vs sasrec_mm gap is the same"),
    Dataset("hm", "H&M (photos for all items, text for a quarter)",
            ["hm", "--source", "{data}/hm"], "macl_min2",
            ["--protocol", "macl", "--min-item-count", "2", "--name", "macl_min2"],
            "features_hm.yaml", ALL_VARIANTS,
            alpha_beta_grid((0.005, 0.02, 0.1), (0.1, 0.2, 0.5)),
            note="sessions = customer + day; protocol `macl` with items kept from 2 events "
                 "(the paper's >= 5 leaves 88 test cases over 137 items: too few to compare); "
                 "features computed for the items this split keeps only (`items_from_split`), "
                 "image views orig/hflip/crop and all 5 text views; a 9-point grid (alpha = beta "
                 "in 0.005, 0.02, 0.1 x tau in 0.1, 0.2, 0.5)"),
    Dataset("cell", "Cell_Phones_and_Accessories (the paper's split, ID only)",
            ["srgnn", "--source", "{data}/macl_splits/Cell_Phones_and_Accessories"], "given",
            None, None, ID_VARIANTS,
            note="the MACL authors' own split; their feature matrices are not available, so "
                 "only ID variants run (sasrec_mm, macl, macl_noadp and paper_code need "
                 "features)"),
    Dataset("grocery", "Grocery_and_Gourmet_Food (the paper's split, ID only)",
            ["srgnn", "--source", "{data}/macl_splits/Grocery_and_Gourmet_Food"], "given", None,
            None, ID_VARIANTS, note="as Cell_Phones"),
    Dataset("instacart", "Instacart (the paper's split, ID only)",
            ["srgnn", "--source", "{data}/macl_splits/Instacart"], "given", None, None,
            ID_VARIANTS, note="as Cell_Phones"),
    Dataset("diginetica", "Diginetica (SR-GNN split, ID-only sanity check of the evaluator)",
            ["srgnn", "--source", "{data}/sbr/diginetica"], "given", None, None,
            ("pop", "sknn", "sasrec"), train_set=["train.epochs=3"],
            note="sanity check against published numbers (SR-GNN P@20 50.7 / MRR@20 17.6; "
                 "session-rec SKNN HR@20 0.485 / MRR@20 0.174): sasrec for 3 epochs "
                 "(650k training cases; ~16 min per epoch on one idle core)"),
]
BY_NAME = {d.name: d for d in DATASETS}


# ---------------------------------------------------------------------------------- runs

def model_of(variant: str) -> tuple[str, list[str]]:
    if variant == "macl+paper_code":
        return "macl", ["arch.paper_code=true"]
    return variant, []


def run_id(variant: str, seed: int) -> str:
    return f"{variant.replace('+', '-')}-s{seed}"


def grid_id(alpha: float, beta: float, tau: float) -> str:
    return f"grid-macl-a{alpha:g}-b{beta:g}-t{tau:g}"


def tuned_config_path(ds: Dataset) -> Path:
    return CONFIGS / f"macl_{ds.name}.yaml"


def seed_config_sha(run: Path) -> str:
    """sha256 of a run's resolved config without its seed: equal for all seeds of a variant."""
    import yaml

    from schemas.hashing import sha256_json

    cfg = yaml.safe_load((run / "config.resolved.yaml").read_text())
    cfg.pop("seed", None)
    cfg.get("train", {}).pop("progress", None)
    return sha256_json(cfg)[:12]


@dataclass
class Job:
    """One CLI command; ``done()`` says it need not run, ``after`` runs once it succeeded."""

    key: str
    argv: Callable[[], list[str]]
    log: Path
    done: Callable[[], bool]
    deps: list[str] = field(default_factory=list)
    weight: int = 1  # CPU threads it keeps busy (the scheduler's capacity is --jobs)
    after: Callable[[], None] | None = None
    prepare: Callable[[], None] | None = None


class Plan:
    def __init__(self, work: Path, data: Path, seeds: int, threads: int,
                 variants: Sequence[str] | None = None) -> None:
        self.work, self.data, self.seeds, self.threads = work, data, seeds, threads
        self.variants = variants  # None = every variant of each dataset
        self.jobs: dict[str, Job] = {}

    def add(self, job: Job) -> str:
        self.jobs[job.key] = job
        return job.key

    # -- dataset steps -------------------------------------------------------------------------
    def dataset(self, ds: Dataset) -> None:
        ws = self.work / ds.name
        logs = self.work / "logs" / ds.name
        fmt, *rest = ds.ingest
        ingest_args = [a.format(data=self.data) for a in rest]
        given = ds.split is None
        ingest = self.add(Job(
            f"{ds.name}:ingest", lambda: MACL + ["ingest", fmt, *ingest_args, "--workspace",
                                                 str(ws), "--no-progress"],
            logs / "ingest.log",
            lambda: (ws / "catalog" / "items.parquet").exists()
            and (ws / "events" / "events.parquet").exists()
            and (not given or _split_done(ws, ds.protocol))))
        last = ingest
        if not given:
            last = self.add(Job(f"{ds.name}:split",
                                lambda: MACL + ["split", "--workspace", str(ws), *ds.split],
                                logs / "split.log", lambda: _split_done(ws, ds.protocol), [last]))
        if ds.features:
            cfg = CONFIGS / ds.features
            last = self.add(Job(
                f"{ds.name}:features",
                lambda: MACL + ["features", "--workspace", str(ws), "--config", str(cfg)],
                logs / "features.log", lambda: _features_stamp(ws, cfg) == _stamp_file(ws),
                [last], weight=2, after=lambda: _write_stamp(ws, cfg)))
        prep = last
        grid_keys = []
        if ds.grid and "macl" in ds.variants:
            for a, b, t in ds.grid:
                grid_keys.append(self.train(ds, "macl", grid_id(a, b, t), 0, [prep],
                                            [f"loss.alpha={a}", f"loss.beta={b}", f"loss.tau={t}"],
                                            None))
            choose = self.add(Job(f"{ds.name}:choose", lambda: [], logs / "choose.log",
                                  lambda: _grid_matches(ds, ws),
                                  grid_keys, weight=0, after=lambda: choose_on_valid(ds, ws)))
        for variant in ds.variants:
            if self.variants is not None and variant not in self.variants:
                continue
            for seed in (range(1) if variant in DETERMINISTIC else range(self.seeds)):
                tuned = variant in TUNED and bool(ds.grid)
                model, extra = model_of(variant)
                self.train(ds, variant, run_id(variant, seed), seed,
                           [prep] + ([choose] if tuned else []), extra,
                           tuned_config_path(ds) if tuned else None, model)

    def train(self, ds: Dataset, variant: str, rid: str, seed: int, deps: list[str],
              extra: list[str], config: Path | None, model: str | None = None) -> str:
        ws = self.work / ds.name
        run = ws / "bench_runs" / rid
        model = model or variant
        sets = [f"seed={seed}", f"train.threads={self.threads}", "train.progress=false",
                *ds.train_set, *extra]

        def argv() -> list[str]:
            if (run / "last.pt").exists():
                return MACL + ["train", "--resume", str(run)]
            cmd = MACL + ["train", "--workspace", str(ws), "--model", model, "--protocol",
                          ds.protocol, "--runs-dir", str(ws / "bench_runs"), "--run-id", rid]
            if config is not None:
                cmd += ["--config", str(config)]
            for s in sets:
                cmd += ["--set", s]
            return cmd

        def prepare() -> None:
            if run.exists() and not (run / "last.pt").exists():
                shutil.rmtree(run)  # killed before its first checkpoint: start again
            if run.exists():
                _check_same_config(run, model, config, sets, ds.protocol)

        return self.add(Job(f"{ds.name}:{rid}", argv, self.work / "logs" / ds.name / f"{rid}.log",
                            lambda: (run / "summary.json").exists()
                            and _check_same_config(run, model, config, sets, ds.protocol),
                            deps, weight=self.threads, prepare=prepare))


def _split_done(ws: Path, protocol: str) -> bool:
    return all((ws / "splits" / protocol / f"{p}.parquet").exists()
               for p in ("train", "valid", "test"))


def _stamp_file(ws: Path) -> str | None:
    p = ws / "features" / ".bench_stamp.json"
    return p.read_text() if p.exists() else None


def _features_stamp(ws: Path, cfg: Path) -> str:
    """What a finished features run depended on: its config, the catalog, the splits."""
    from schemas.hashing import sha256_json

    def sha(p: Path) -> str | None:
        import hashlib

        return hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None

    splits = sorted((ws / "splits").glob("*/*.parquet")) if (ws / "splits").exists() else []
    return json.dumps({"config": sha(cfg), "catalog": sha(ws / "catalog" / "items.parquet"),
                       "splits": sha256_json([[str(p.relative_to(ws)), sha(p)] for p in splits]),
                       "manifest": (ws / "features" / "_manifest.json").exists()}, sort_keys=True)


def _write_stamp(ws: Path, cfg: Path) -> None:
    (ws / "features" / ".bench_stamp.json").write_text(_features_stamp(ws, cfg))


def _check_same_config(run: Path, model: str, config: Path | None, sets: list[str],
                       protocol: str) -> bool:
    """A run folder made with other settings is never silently reused."""
    from trainer.config import RunConfig, resolve_config

    want = resolve_config(model, config, [s for s in sets if not s.startswith("train.progress")])
    want.data.protocol = protocol  # given on the command line (--protocol), not by --set
    have = RunConfig.from_yaml((run / "config.resolved.yaml").read_text())
    want.train.progress = have.train.progress = False
    if want.to_dict() != have.to_dict():
        raise SystemExit(f"{run} was made with another config than this script now asks for; "
                         "delete the folder to rerun it")
    return True


# ---------------------------------------------------------------------------------- tuning

def _grid_matches(ds: Dataset, ws: Path) -> bool:
    """The tuned config exists and was chosen from this dataset's current grid."""
    sidecar = ws / "grid.json"
    if not (tuned_config_path(ds).exists() and sidecar.exists()):
        return False
    return json.loads(sidecar.read_text())["grid"] == [list(g) for g in ds.grid]


def grid_table(ds: Dataset, ws: Path) -> list[dict]:
    rows = []
    for a, b, t in ds.grid:
        run = ws / "bench_runs" / grid_id(a, b, t)
        s = json.loads((run / "summary.json").read_text())
        rows.append({"alpha": a, "beta": b, "tau": t, "epoch": s["best_epoch"],
                     "valid_hr20": s["valid"]["metrics"]["hr@20"],
                     "valid_mrr20": s["valid"]["metrics"]["mrr@20"]})
    return rows


def choose_on_valid(ds: Dataset, ws: Path) -> None:
    """Best validation hr@20 of the grid (ties: valid mrr@20, then the smaller weights and tau).
    Writes a plain trainer config (``--config``) and the grid's numbers next to the runs."""
    import yaml

    rows = grid_table(ds, ws)
    best = max(rows, key=lambda r: (r["valid_hr20"], r["valid_mrr20"], -r["alpha"], -r["tau"]))
    grid = ", ".join(f"({a:g}, {b:g}, {t:g})" for a, b, t in ds.grid)
    text = (f"# {ds.name}: chosen on VALIDATION by benchmarks/accuracy.py (never on test).\n"
            f"# macl, seed 0, over (alpha, beta, tau) in {grid};\n"
            f"# best valid hr@20 = {best['valid_hr20']:.4f} (mrr@20 {best['valid_mrr20']:.4f}).\n"
            "# Used by macl, macl_noadp, macl_com (beta, tau) and macl+paper_code (alpha, beta;\n"
            "# that formulation fixes tau = 1).\n")
    text += yaml.safe_dump({"loss": {"alpha": best["alpha"], "beta": best["beta"],
                                     "tau": best["tau"]}}, sort_keys=False)
    tuned_config_path(ds).write_text(text)
    (ws / "grid.json").write_text(json.dumps({"grid": [list(g) for g in ds.grid], "rows": rows,
                                              "chosen": best}, indent=1))


# ---------------------------------------------------------------------------------- scheduler

def run_plan(plan: Plan, capacity: int, dry_run: bool = False) -> dict[str, str]:
    """Run the jobs whose dependencies succeeded, at most ``capacity`` threads busy at once.
    Returns key -> 'done' | 'skipped' (already done) | 'failed' | 'blocked'."""
    import subprocess

    state: dict[str, str] = {}
    for key, job in plan.jobs.items():
        if job.done():
            state[key] = "skipped"
    if dry_run:
        for key, job in plan.jobs.items():
            cmd = job.argv()
            print(f"[{state.get(key, 'todo'):7s}] {key}: "
                  f"{' '.join(cmd) if cmd else '(in-process)'}")
        return state
    running: dict[int, tuple[str, subprocess.Popen, float, object]] = {}
    journal = plan.work / "logs" / "jobs.jsonl"
    journal.parent.mkdir(parents=True, exist_ok=True)
    total = len(plan.jobs)

    def ready(key: str) -> bool:
        return key not in state and all(state.get(d) in ("done", "skipped")
                                        for d in plan.jobs[key].deps)

    while True:
        for key, job in plan.jobs.items():  # a failed dependency blocks its dependents
            if key not in state and any(state.get(d) in ("failed", "blocked") for d in job.deps):
                state[key] = "blocked"
        busy = sum(plan.jobs[k].weight for k, *_ in running.values())
        inline = False
        for key in [k for k in plan.jobs if ready(k)]:
            job = plan.jobs[key]
            if running and busy + job.weight > capacity:
                break  # in plan order: a waiting 2-thread job is not starved by later ones
            if job.prepare:
                job.prepare()
            cmd = job.argv()
            if not cmd:  # in-process step
                inline = True
                try:
                    if job.after:
                        job.after()
                    state[key] = "done"
                except Exception as exc:  # noqa: BLE001 - reported, dependents blocked
                    print(f"FAILED {key}: {exc}", flush=True)
                    state[key] = "failed"
                continue
            job.log.parent.mkdir(parents=True, exist_ok=True)
            log = open(job.log, "a")
            log.write(f"\n$ {' '.join(cmd)}\n")
            log.flush()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
            running[proc.pid] = (key, proc, time.time(), log)
            state[key] = "running"
            busy += job.weight
            print(f"{time.strftime('%H:%M:%S')} start {key} (load {res.load_average()}; "
                  f"{sum(v in ('done', 'skipped') for v in state.values())}/{total} done)",
                  flush=True)
        if not running:
            if inline:
                continue
            break
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        key, proc, started, log = running.pop(pid)
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.close()
        wall = time.time() - started
        job = plan.jobs[key]
        ok = proc.returncode == 0
        if ok and job.after:
            try:
                job.after()
            except Exception as exc:  # noqa: BLE001
                print(f"FAILED {key} (after): {exc}", flush=True)
                ok = False
        state[key] = "done" if ok else "failed"
        with open(journal, "a") as f:
            f.write(json.dumps({"key": key, "rc": proc.returncode, "wall_s": round(wall, 1),
                                "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
                                "max_rss_mb": round(usage.ru_maxrss / 1024),
                                "load": res.load_average(), "end": time.strftime("%F %T")})
                    + "\n")
        print(f"{time.strftime('%H:%M:%S')} {'done' if ok else 'FAILED'} {key} in {wall:.0f} s"
              f"{'' if ok else f' (rc {proc.returncode}, see {job.log})'}", flush=True)
    for key in plan.jobs:
        state.setdefault(key, "blocked")
    return state


# ---------------------------------------------------------------------------------- report

@dataclass
class Run:
    variant: str
    seed: int
    path: Path
    summary: dict
    ranks: Any  # numpy int64 per test case, in case order
    targets: Any
    config_sha: str


def load_runs(ds: Dataset, ws: Path, seeds: int) -> dict[str, list[Run]]:
    from benchmarks.stats import read_test_ranks

    out: dict[str, list[Run]] = {}
    for variant in ds.variants:
        n_seeds = 1 if variant in DETERMINISTIC else seeds
        for seed in range(n_seeds):
            path = ws / "bench_runs" / run_id(variant, seed)
            if not (path / "summary.json").exists():
                continue
            ranks, targets = read_test_ranks(path)
            out.setdefault(variant, []).append(Run(
                variant, seed, path, json.loads((path / "summary.json").read_text()),
                ranks, targets, seed_config_sha(path)))
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    import numpy as np

    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def fmt(values: list[float]) -> str:
    if not values:
        return "—"
    m, s = _mean_std(values)
    return f"{m:.4f}" if len(values) == 1 else f"{m:.4f} ± {s:.4f}"


def case_metric(runs: list[Run], metric: str, k: int, tail=None):
    """Per test case, the metric averaged over the variant's seeds."""
    import numpy as np

    vals = np.mean([per_case(r.ranks, metric, k) for r in runs], axis=0)
    return vals if tail is None else vals[tail]


def compare(a: list[Run], b: list[Run], metric: str, k: int, tail=None, seed: int = 0) -> dict:
    d = paired_bootstrap(case_metric(a, metric, k, tail), case_metric(b, metric, k, tail),
                         seed=seed)
    return {"a": d.mean_a, "b": d.mean_b, "rel": d.rel * 100, "rel_ci": [x * 100 for x in d.rel_ci],
            "diff_ci": list(d.diff_ci), "verdict": d.verdict(), "n": d.n}


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{x:+.1f}%"


def dataset_results(ds: Dataset, ws: Path, seeds: int) -> dict:
    """Everything the report shows for one dataset (also written to results.json)."""
    import numpy as np

    runs = load_runs(ds, ws, seeds)
    out: dict = {"dataset": ds.name, "variants": {}, "comparisons": [], "missing": []}
    if not runs:
        return out
    targets = next(iter(runs.values()))[0].targets
    for variant, rs in runs.items():
        if any(not np.array_equal(r.targets, targets) for r in rs):
            raise SystemExit(f"{ds.name}/{variant}: test cases differ between runs")
        shas = sorted({r.config_sha for r in rs})
        metrics = {f"{m}@{k}": [r.summary["test"]["metrics"][f"{m}@{k}"] for r in rs]
                   for k in KS for m in ("hr", "mrr", "ndcg")}
        tail = {f"{m}@20": [r.summary["test"]["slices"]["tail"][f"{m}@20"] for r in rs]
                for m in ("hr", "mrr")}
        out["variants"][variant] = {
            "runs": len(rs), "seeds": [r.seed for r in rs], "config_sha": shas,
            "epochs": [r.summary["best_epoch"] for r in rs], "test": metrics, "tail": tail,
            "tail_n": rs[0].summary["test"]["slices"]["tail"]["n"],
            "n_test": rs[0].summary["test"]["n_cases"],
            "valid_hr20": [r.summary["valid"]["metrics"]["hr@20"] for r in rs
                           if "valid" in r.summary],
            "buckets": _mean_buckets(rs),
            "train_samples_per_s": [r.summary.get("train_samples_per_s", 0.0) for r in rs]}
    n_planned = {v: 1 if v in DETERMINISTIC else seeds for v in ds.variants}
    out["missing"] = [f"{v} ({len(runs.get(v, []))}/{n} runs)" for v, n in n_planned.items()
                      if len(runs.get(v, [])) < n]
    main = "macl" if "macl" in runs else ("macl_com" if "macl_com" in runs else None)
    out["main"] = main
    if main is None:
        return out
    mean = lambda v, key: float(np.mean(out["variants"][v]["test"][key]))  # noqa: E731
    baselines = [v for v in BASELINES if v in runs]
    if main == "macl_com":  # ID-only datasets: the contrastive variant against the ID ones
        baselines = [v for v in ("pop", "sknn", "sasrec") if v in runs]
    tail_mask = _tail_mask(ws, ds, runs[main][0])
    pairs: list[tuple[str, str, str]] = []
    for key, label in (("hr@20", "best baseline by HR@20"), ("mrr@20", "best baseline by MRR@20")):
        if baselines:
            best = max(baselines, key=lambda v: mean(v, key))
            out[f"best_{key}"] = best
            pairs.append((label, best, key))
    others = [v for v in ("sasrec", "sasrec_mm", "sknn", "macl_com", "macl_noadp",
                          "macl+paper_code") if v in runs and v != main]
    for v in others:
        pairs += [(v, v, "hr@20"), (v, v, "mrr@20")]
    for label, other, key in pairs:
        metric, k = key.split("@")
        c = compare(runs[main], runs[other], metric, int(k))
        out["comparisons"].append({"label": label, "other": other, "metric": key, **c})
    for other in [v for v in ("sasrec", "sasrec_mm") if v in runs and v != main]:
        c = compare(runs[main], runs[other], "hr", 20, tail_mask)
        out["comparisons"].append({"label": f"{other}, long-tail targets", "other": other,
                                   "metric": "tail hr@20", **c})
    return out


def _mean_buckets(rs: list[Run]) -> list[dict]:
    """HR@20 per train-popularity bucket, averaged over the seeds (same buckets in each)."""
    per = [r.summary["test"].get("buckets", []) for r in rs]
    if not per or not per[0] or any(len(p) != len(per[0]) for p in per):
        return []
    return [{"label": b["label"], "n": b["n"],
             "hr@20": sum(p[i]["hr@20"] for p in per) / len(per)} for i, b in enumerate(per[0])]


def _tail_mask(ws: Path, ds: Dataset, run: Run):
    """Test cases whose target is in the long tail, computed the trainer's way (and checked
    against the count in the run's summary)."""
    from schemas.fs import Workspace
    from trainer.config import RunConfig
    from trainer.data import (item_popularity, long_tail_items, read_cases, read_catalog,
                              train_sessions)

    share = RunConfig.from_yaml((run.path / "config.resolved.yaml").read_text()).eval.tail_share
    w = Workspace.open(str(ws))
    n = read_catalog(w, []).n_items
    train = read_cases(w, ds.protocol, "train", n)
    mask = long_tail_items(item_popularity(train_sessions(train), n), share)[run.targets]
    if int(mask.sum()) != run.summary["test"]["slices"]["tail"]["n"]:
        raise SystemExit(f"{run.path}: long-tail cases do not match the run's summary")
    return mask


def _cell(c: dict | None) -> str:
    if c is None:
        return "—"
    return f"{_pct(c['rel'])} [{_pct(c['rel_ci'][0])}, {_pct(c['rel_ci'][1])}] {c['verdict']}"


def _find(r: dict, label: str, metric: str) -> dict | None:
    return next((c for c in r["comparisons"] if c["label"] == label and c["metric"] == metric),
                None)


def render_dataset(ds: Dataset, ws: Path, r: dict, seeds: int) -> str:
    from benchmarks import diagnostics as diag

    lines = [f"### {ds.title} (`{ds.name}`)", "", ds.note + "."]
    if not r["variants"]:
        return "\n".join(lines + ["", "_No finished runs yet._", ""])
    any_run = next(iter(load_runs(ds, ws, 99).values()))[0]
    manifest = json.loads((any_run.path / "manifest.json").read_text())
    cases = manifest["extra"]["cases"]
    lines.append(f"Cases: {cases['train']:,} train / {cases['valid']:,} valid / "
                 f"{cases['test']:,} test; {manifest['extra']['n_items']:,} catalog items ranked "
                 f"(full ranking, pessimistic ties); long-tail test targets: "
                 f"{next(iter(r['variants'].values()))['tail_n']:,}.")
    mm = next((v for v in ("macl", "sasrec_mm") if v in r["variants"]), None)
    if mm:
        m = json.loads((ws / "bench_runs" / run_id(mm, 0) / "manifest.json").read_text())
        feats = m["extra"].get("features") or {}
        cov = feats.get("coverage", {})
        shown = sorted({k.rsplit("/", 1)[0] for k in cov})
        lines.append(f"Feature tables ({len(cov)}): " + ", ".join(
            f"{k} ({cov[k + '/0'] * 100:.0f}% of items)" for k in shown if k + "/0" in cov) + ".")
    if r["missing"]:
        lines.append("Not finished: " + ", ".join(r["missing"]) + ".")
    lines += ["", "| variant | runs | selected epochs | HR@20 | MRR@20 | NDCG@20 | tail HR@20 | "
              "tail MRR@20 | config |", "|---|---|---|---|---|---|---|---|---|"]
    for v, s in r["variants"].items():
        epochs = ", ".join(str(e) if e >= 0 else "—" for e in s["epochs"])
        lines.append(f"| {v} | {s['runs']} | {epochs}"
                     f" | {fmt(s['test']['hr@20'])} | {fmt(s['test']['mrr@20'])} | "
                     f"{fmt(s['test']['ndcg@20'])} | {fmt(s['tail']['hr@20'])} | "
                     f"{fmt(s['tail']['mrr@20'])} | `{','.join(s['config_sha'])}` |")
    lines += ["", "<details><summary>@5 and @10</summary>", "",
              "| variant | HR@5 | MRR@5 | NDCG@5 | HR@10 | MRR@10 | NDCG@10 |",
              "|---|---|---|---|---|---|---|"]
    for v, s in r["variants"].items():
        lines.append(f"| {v} | " + " | ".join(fmt(s["test"][f"{m}@{k}"]) for k in (5, 10)
                                               for m in ("hr", "mrr", "ndcg")) + " |")
    lines += ["", "</details>", ""]
    if r["comparisons"]:
        main = r["main"]
        n = r["comparisons"][0]["n"]
        lines += [f"`{main}` against the others: relative difference of the test means, 95% paired "
                  f"bootstrap interval over the {n:,} test cases (10,000 resamples; per-case "
                  "metrics averaged over seeds); \"within noise\" = the interval of the "
                  "difference contains 0.", "",
                  f"| {main} vs | metric | {main} | other | relative | 95% CI | verdict |",
                  "|---|---|---|---|---|---|---|"]
        for c in r["comparisons"]:
            other = c["label"] if c["label"] == c["other"] else f"{c['label']}: {c['other']}"
            lines.append(f"| {other} | {c['metric']} | {c['a']:.4f} | {c['b']:.4f} | "
                         f"{_pct(c['rel'])} | [{_pct(c['rel_ci'][0])}, {_pct(c['rel_ci'][1])}] "
                         f"| {c['verdict']} |")
        lines.append("")
    shown = [v for v in ("sknn", "sasrec", "sasrec_mm", "macl_com", "macl") if v in r["variants"]]
    buckets = {v: r["variants"][v].get("buckets") for v in shown}
    if any(buckets.values()):
        first = next(b for b in buckets.values() if b)
        lines += ["Test HR@20 by the target's train popularity (events; `unseen` = never in "
                  "train), mean over seeds:", "",
                  "| variant | " + " | ".join(f"{b['label']} (n={b['n']})" for b in first) + " |",
                  "|---|" + "---|" * len(first)]
        for v in shown:
            if buckets[v]:
                lines.append(f"| {v} | " + " | ".join(f"{b['hr@20']:.3f}" for b in buckets[v])
                             + " |")
        lines.append("")
    grid = ws / "grid.json"
    if ds.grid and grid.exists():
        g = json.loads(grid.read_text())
        lines += ["Validation grid (`macl`, seed 0; the chosen row is used by every tuned "
                  f"variant, see `benchmarks/configs/{tuned_config_path(ds).name}`):", "",
                  "| alpha | beta | tau | selected epoch | valid HR@20 | valid MRR@20 |",
                  "|---|---|---|---|---|---|"]
        for row in g["rows"]:
            star = " **chosen**" if row == g["chosen"] else ""
            lines.append(f"| {row['alpha']:g} | {row['beta']:g} | {row['tau']:g} | "
                         f"{row['epoch']} | {row['valid_hr20']:.4f}{star} | "
                         f"{row['valid_mrr20']:.4f} |")
        lines.append("")
    if ds.features and (ws / "features").exists():
        probe = diag.feature_retrieval(ws, ds.protocol)
        if probe:
            pop = r["variants"].get("pop", {}).get("test", {})
            lines += ["Diagnostics. Feature-only retrieval (items nearest to the last input "
                      "item by cosine of the frozen `orig` vectors, full ranking):", "",
                      "| features | test HR@20 | test MRR@20 | last item covered | "
                      "target covered |", "|---|---|---|---|---|"]
            for m, p in probe.items():
                lines.append(f"| {m} | {p['hr@20']:.4f} | {p['mrr@20']:.4f} | "
                             f"{p.get('cases with the last item covered', float('nan')):.2f} | "
                             f"{p.get('targets covered', float('nan')):.2f} |")
            if pop:
                lines.append(f"| (pop, for reference) | {fmt(pop['hr@20'])} | "
                             f"{fmt(pop['mrr@20'])} | | |")
            lines.append("")
        sims = diag.view_similarity(ws)
        if sims:
            lines += ["View similarity (contrastive positives vs random pairs):", "",
                      "| modality | view | items | cos(orig, view) | 5th pct | "
                      "cos(random pair) |", "|---|---|---|---|---|---|"]
            for s in sims:
                lines.append(f"| {s['modality']} | {s['view']} | {s['items']:,} | "
                             f"{s['cos(orig, view)']:.3f} | {s['p5 cos(orig, view)']:.3f} | "
                             f"{s['cos(random pair)']:.3f} |")
            lines.append("")
    wrows = []
    for v in ("macl", "macl+paper_code", "macl_com"):
        for seed in range(seeds):
            p = ws / "bench_runs" / run_id(v, seed)
            if (p / "summary.json").exists():
                w = diag.adaptive_weights(p)
                for key, val in w.items():
                    if key != "loss":
                        wrows.append(f"| {v} | {seed} | {key} | {val['std']:.3f} | "
                                     f"{val['p5']:.2f} – {val['p95']:.2f} | "
                                     f"{val['share_0.5_2'] * 100:.1f}% | " + ", ".join(
                                         f"{k} {x:.3f}" for k, x in w["loss"].items()) + " |")
    if wrows:
        lines += ["Adaptive weights at the selected epoch (weights have mean 1, except "
                  "paper_code where they sum to 1 per batch):", "",
                  "| variant | seed | task | std | 5th–95th pct | within [0.5, 2] | train "
                  "losses |",
                  "|---|---|---|---|---|---|---|"] + wrows + [""]
    return "\n".join(lines)


def render(all_results: list[tuple[Dataset, Path, dict]], seeds: int, threads: int,
           work: Path) -> str:
    jobs = []
    journal = work / "logs" / "jobs.jsonl"
    if journal.exists():
        jobs = [json.loads(x) for x in journal.read_text().splitlines() if x.strip()]
    cpu_h = sum(j["cpu_s"] for j in jobs) / 3600
    wall_h = sum(j["wall_s"] for j in jobs) / 3600
    extra = [("runs", f"{seeds} seeds per trained variant "
                      f"(pop and sknn are deterministic: one run), {threads} torch thread(s) "
                      "per run, 2 runs at a time"),
             ("compute", f"{len(jobs)} jobs, {cpu_h:.1f} CPU-hours, {wall_h:.1f} job-hours "
                         "(sum of the jobs' wall times) on the shared machine"),
             ("config hashes", "per variant in each table (`config`: sha256 of the resolved "
                               "trainer config without the seed, first 12 hex)")]
    out = ["## Accuracy", "", res.header("benchmarks/accuracy.py", extra), "",
           "Every number is a test metric at the epoch chosen on validation (HR@K is the "
           "paper's P@K), mean ± std over seeds. Hyper-parameters: the presets in "
           "`trainer/configs/` (d=64, 2 layers, 2 heads, dropout 0.2, Adam 1e-3, batch 256, "
           "30 epochs max, early stopping after 3 epochs without validation HR@20 gain), "
           "except MACL's alpha/beta/tau, chosen per dataset on validation (below).", "",
           "| dataset | test cases | MACL vs best baseline, HR@20 | MACL vs best baseline, "
           "MRR@20 | MACL vs ID augmentation (macl_com), HR@20 | MACL vs sasrec_mm, HR@20 |",
           "|---|---|---|---|---|---|"]
    for ds, ws, r in all_results:
        if not r.get("comparisons"):
            continue
        main = r["main"]
        n = r["comparisons"][0]["n"]
        if main == "macl":
            out.append(f"| {ds.name} | {n:,} | "
                       f"{_cell(_find(r, 'best baseline by HR@20', 'hr@20'))} "
                       f"({r.get('best_hr@20', '?')}) | "
                       f"{_cell(_find(r, 'best baseline by MRR@20', 'mrr@20'))} "
                       f"({r.get('best_mrr@20', '?')}) | {_cell(_find(r, 'macl_com', 'hr@20'))}"
                       f" | {_cell(_find(r, 'sasrec_mm', 'hr@20'))} |")
        else:
            out.append(f"| {ds.name} (ID only: `macl_com` in MACL's place) | {n:,} | "
                       f"{_cell(_find(r, 'best baseline by HR@20', 'hr@20'))} "
                       f"({r.get('best_hr@20', '?')}) | "
                       f"{_cell(_find(r, 'best baseline by MRR@20', 'mrr@20'))} "
                       f"({r.get('best_mrr@20', '?')}) | — | — |")
    lo, hi = PAPER["best_hr20"]
    out.append(f"| paper (Amazon Cell/Grocery, Instacart) | | +{lo}% to +{hi}% | "
               f"+{PAPER['best_mrr20'][0]}% to +{PAPER['best_mrr20'][1]}% | "
               f"+{PAPER['idaug_hr20'][0]}% to +{PAPER['idaug_hr20'][1]}% | |")
    out += ["", "Cells: relative difference of test means [95% paired bootstrap interval] and "
            "whether the interval of the difference excludes 0; the best baseline (in "
            "parentheses) is the best of pop, sknn, sasrec, sasrec_mm by that test metric.", ""]
    for ds, ws, r in all_results:
        out.append(render_dataset(ds, ws, r, seeds))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", choices=list(BY_NAME), default=list(BY_NAME))
    p.add_argument("--seeds", type=int, default=3, help="seeds per trained variant (default 3)")
    p.add_argument("--jobs", type=int, default=2, help="CPU threads busy at once (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training run")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--work", type=Path, default=REPO / "benchmarks" / "out" / "accuracy")
    p.add_argument("--variants", nargs="+", choices=ALL_VARIANTS,
                   help="train only these variants (the report still covers every finished "
                        "run); e.g. the comparison that matters first when time is short")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--report-only", action="store_true", help="only write the tables")
    args = p.parse_args(argv)
    from pipeline.runtime import configure_environment

    configure_environment(REPO / ".prefect")
    work = args.work.resolve()
    chosen = [d for d in DATASETS if d.name in args.datasets]
    if not args.report_only:
        data = args.data.resolve()
        plan = Plan(work, data, args.seeds, args.threads, args.variants)
        for ds in chosen:
            source = Path(ds.ingest[2].format(data=data))
            if source.exists():
                plan.dataset(ds)
            else:
                print(f"skip {ds.name}: {source} not found")
        state = run_plan(plan, args.jobs, args.dry_run)
        if args.dry_run:
            return 0
        bad = {k: v for k, v in state.items() if v in ("failed", "blocked")}
        for k, v in bad.items():
            print(f"{v}: {k}")
    results = []
    for ds in DATASETS:
        ws = work / ds.name
        if (ws / "bench_runs").exists():
            r = dataset_results(ds, ws, args.seeds)
            results.append((ds, ws, r))
    (work / "results.json").write_text(json.dumps([r for *_, r in results], indent=1))
    text = render(results, args.seeds, args.threads, work)
    res.update_section("accuracy", text)
    print(f"wrote {res.RESULTS.relative_to(REPO)} (accuracy section); details in "
          f"{work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
