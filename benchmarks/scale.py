"""Scale figures for 100k and 1M items (prints them; JSON + Markdown in benchmarks/out/scale).

For each N (default 100k and 1M) the synthetic store of ``benchmarks.audit`` (catalog, one
tiny image file per item, random float32 embeddings of dim 16 for 10 views, parts of 100k
rows; generated, not extracted) is reused or written, plus a synthetic session split.
Every figure is measured in a fresh child process, so imports and earlier work stay out of it:

- audit:  ``pipeline.audit.audit_store`` run twice in one process; the second (warm: images
          only stat-ed, parts checked by their recorded sha256) is reported. A cold audit
          (every image read and hashed) is ``benchmarks.audit``'s job: minutes at 1M.
- load:   ``trainer.features.load_feature_bank`` of all 10 tables, as ``sasrec_mm``/``macl``
          load them, in float16 (the config default) and float32, after the catalog and a
          split (as the trainer reads them first). Peak memory = the child's peak RSS during
          the load (``VmHWM`` after ``/proc/self/clear_refs`` reset it) minus its RSS before,
          against the bytes of the tables and masks the loader returns.
- train:  ``sasrec``, one epoch over one case per synthetic session (N sessions, Zipf item
          popularity), sampled softmax (``loss.rec_softmax=sampled``, 1024 negatives: a full
          softmax over 1M items is a 256 x 1M x 64 product per step), through
          ``trainer.loop.Trainer``. Where the epoch has more than ``--train-steps`` steps, that
          many are timed and the epoch is extrapolated (labelled so).

    python -m benchmarks.scale --items 100000 1000000
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PROTOCOL = "scale"
EVAL_CASES = 2000  # valid and test cases: the epoch end ranks them against every item
RESULT = "SCALE_RESULT "


# --------------------------------------------------------------------------- sessions


def session_table(n_items: int, n_sessions: int, seed: int, zipf: float = 1.1,
                  mean_length: float = 5.0, max_length: int = 50):
    """Sessions of 2..max_length items (geometric lengths), items drawn with Zipf popularity
    (rank r has weight r^-zipf; ranks are a random permutation of the catalog)."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    lengths = np.minimum(2 + rng.geometric(1.0 / (mean_length - 1.0), n_sessions) - 1,
                         max_length)
    weights = np.arange(1, n_items + 1, dtype=np.float64) ** -zipf
    item_of_rank = rng.permutation(n_items) + 1
    flat = item_of_rank[rng.choice(n_items, size=int(lengths.sum()), p=weights / weights.sum())]
    ends = np.cumsum(lengths)
    targets = flat[ends - 1]
    keep = np.ones(flat.size, dtype=bool)
    keep[ends - 1] = False  # the last item is the target, the rest the input
    offsets = np.concatenate([[0], np.cumsum(lengths - 1)]).astype(np.int32)
    items = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat[keep].astype(np.int64)))
    ids = pa.array([f"s{seed}-{i:08d}" for i in range(n_sessions)])
    return pa.table({"session_id": ids, "items": items, "target": pa.array(targets)})


def ensure_sessions(root: Path, n_items: int, n_sessions: int) -> None:
    """splits/scale/{train,valid,test}.parquet unless present with the same parameters."""
    from schemas.fs import Workspace
    from schemas.io import read_split, write_split

    ws = Workspace.open(str(root))
    params = {"generator": "benchmarks.scale", "sessions": n_sessions, "eval_cases": EVAL_CASES}
    if ws.exists("splits", PROTOCOL, "test.parquet"):
        _, info = read_split(ws, PROTOCOL, "test")
        if {k: info.get(k) for k in params} == params and info.get("n_items") == n_items:
            return
    for seed, (part, count) in enumerate((("train", n_sessions), ("valid", EVAL_CASES),
                                          ("test", EVAL_CASES))):
        write_split(ws, PROTOCOL, part, session_table(n_items, count, seed), params, n_items)


# --------------------------------------------------------------------------- memory


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def reset_peak_rss() -> int:
    """Hand freed memory back to the system (so that reusing it cannot hide an allocation),
    then reset the kernel's peak-RSS mark (VmHWM) to the current RSS; returns that RSS."""
    import ctypes
    import gc

    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS") * 1024


def peak_rss() -> int:
    return _status_kib("VmHWM") * 1024


# --------------------------------------------------------------------------- children


def child_audit(root: Path) -> dict[str, Any]:
    from pipeline.audit import audit_store

    runs = []
    for _ in range(2):
        started = time.perf_counter()
        report = audit_store(root)
        runs.append((time.perf_counter() - started, report))
    seconds, report = runs[-1]
    if not report.passed:
        raise SystemExit(f"the synthetic store failed the audit: {report.failed_gates}")
    return {"audit_s": seconds, "audit_first_s": runs[0][0], "rows": report.rows,
            "audit_phases": {k: v for k, v in report.timings.items() if v >= 0.05}}


def child_load(root: Path, n_items: int, dtype: str) -> dict[str, Any]:
    import torch  # noqa: F401  (imports stay out of the figure)

    from schemas.fs import Workspace
    from trainer.data import read_cases, read_catalog
    from trainer.features import load_feature_bank

    ws = Workspace.open(str(root))
    # what the trainer reads before the features (it also initialises pyarrow's kernels,
    # one-time memory that is no copy of the tables)
    catalog, cases = read_catalog(ws, []), read_cases(ws, PROTOCOL, "test", n_items)
    del catalog, cases
    with tempfile.TemporaryDirectory(prefix="macl-scale-cache-") as cache:
        before = reset_peak_rss()
        started = time.perf_counter()
        bank = load_feature_bank(ws, n_items, dtype=dtype, cache_dir=cache)
        seconds = time.perf_counter() - started
        peak = peak_rss() - before
        held = bank.nbytes() + sum(m.numel() * m.element_size() for m in bank.masks.values())
        tables = sum(v.shape[0] for v in bank.values.values())
        mapped = bank.mapped
        del bank
    return {"dtype": dtype, "load_s": seconds, "peak_bytes": peak, "tensor_bytes": held,
            "ratio": peak / held, "tables": tables, "memory_mapped": mapped}


def child_train(root: Path, n_items: int, steps: int, threads: int) -> dict[str, Any]:
    import torch  # noqa: F401

    from trainer.config import resolve_config
    from trainer.distributed import init_distributed
    from trainer.loop import Trainer
    from trainer.runs import RunDir

    overrides = [f"data.protocol={PROTOCOL}", "train.epochs=1", "loss.rec_softmax=sampled",
                 "loss.sampled_negatives=1024", f"train.max_steps_per_epoch={steps}",
                 "train.checkpoint_every_steps=0", "train.progress=false",
                 f"train.threads={threads}", "eval.batch_size=128"]
    cfg = resolve_config("sasrec", overrides=overrides)
    with tempfile.TemporaryDirectory(prefix="macl-scale-run-") as tmp:
        run = RunDir.create(tmp)
        started = time.perf_counter()
        trainer = Trainer(cfg, str(root), run, init_distributed())
        setup = time.perf_counter() - started
        full_steps = math.ceil(len(trainer.data.train) / cfg.train.batch_size)
        started = time.perf_counter()
        trainer.fit()
        fit = time.perf_counter() - started
        record = trainer.state.history[0]["train"]
    step_s = record["seconds"] / max(trainer.steps_per_epoch, 1)
    return {"sessions": len(trainer.data.train), "batch_size": cfg.train.batch_size,
            "setup_s": setup, "steps_timed": trainer.steps_per_epoch, "epoch_steps": full_steps,
            "step_s": step_s, "samples_per_s": record["samples_per_s"],
            "epoch_s": step_s * full_steps, "extrapolated": trainer.steps_per_epoch < full_steps,
            "valid_eval_s": fit - record["seconds"],
            "params": sum(p.numel() for p in trainer.model.parameters())}


def run_child(args: list[str]) -> dict[str, Any]:
    """One measurement in a fresh interpreter; its last RESULT line is the figure."""
    cmd = [sys.executable, "-m", "benchmarks.scale", "--child", *args]
    done = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {done.returncode})")
    return json.loads(lines[-1][len(RESULT):])


# --------------------------------------------------------------------------- report


def _mib(n: float) -> str:
    return f"{n / 2 ** 20:,.0f}"


def markdown(results: list[dict[str, Any]], machine: str) -> str:
    cols = ["figure"] + [f"{r['items']:,} items" for r in results]
    if len(results) > 1:
        cols.append(f"{results[-1]['items'] // results[0]['items']}x items: growth")
    rows: list[tuple[str, list[float | None], str]] = []

    def add(label: str, values: list[float | None], fmt: str) -> None:
        rows.append((label, values, fmt))

    add("audit, warm (s)", [r["audit"]["audit_s"] for r in results], "{:.1f}")
    for dtype in ("float16", "float32"):
        loads = [r["load"][dtype] for r in results]
        add(f"feature load {dtype} (s)", [x["load_s"] for x in loads], "{:.2f}")
        add(f"feature load {dtype}: tensors held (MiB)", [x["tensor_bytes"] for x in loads], "mib")
        add(f"feature load {dtype}: peak RSS increase (MiB)", [x["peak_bytes"] for x in loads],
            "mib")
        add(f"feature load {dtype}: peak / tensors", [x["ratio"] for x in loads], "{:.2f}x")
    add("training: cases (sessions)", [r["train"]["sessions"] for r in results], "{:,}")
    add("training: s per step (batch 256)", [r["train"]["step_s"] for r in results], "{:.3f}")
    add("training: samples/s", [r["train"]["samples_per_s"] for r in results], "{:,.0f}")
    add("training: one epoch (s)", [r["train"]["epoch_s"] for r in results], "{:,.0f}")
    out = ["| " + " | ".join(cols) + " |", "|---" + "|---:" * (len(cols) - 1) + "|"]
    for label, values, fmt in rows:
        shown = [_mib(v) if fmt == "mib" else fmt.format(v) for v in values]
        if label == "training: one epoch (s)":
            shown = [s + (f" (extrapolated from {r['train']['steps_timed']} of "
                          f"{r['train']['epoch_steps']} steps)" if r["train"]["extrapolated"]
                          else " (full epoch)") for s, r in zip(shown, results)]
        if len(values) > 1:
            shown.append(f"{values[-1] / values[0]:.1f}x" if values[0] else "-")
        out.append(f"| {label} | " + " | ".join(shown) + " |")
    return "\n".join(out) + f"\n\n{machine}\n"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--sessions-per-item", type=float, default=1.0)
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "out" / "audit",
                        help="where the synthetic stores live (shared with benchmarks.audit)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "scale")
    parser.add_argument("--train-steps", type=int, default=400,
                        help="time at most this many steps and extrapolate the epoch")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        kind, root, n = args.child[0], Path(args.child[1]), int(args.child[2])
        if kind == "audit":
            result = child_audit(root)
        elif kind == "load":
            result = child_load(root, n, args.child[3])
        else:
            result = child_train(root, n, int(args.child[3]), int(args.child[4]))
        print(RESULT + json.dumps(result), flush=True)
        return 0

    from benchmarks.audit import ensure_store

    results = []
    for n in args.items:
        root = ensure_store(args.workdir / f"items-{n}", n, 16, 100_000)
        ensure_sessions(root, n, int(n * args.sessions_per_item))
        entry: dict[str, Any] = {"items": n, "loadavg_start": os.getloadavg()}
        print(f"{n} items: audit ...", file=sys.stderr, flush=True)
        entry["audit"] = run_child(["audit", str(root), str(n)])
        entry["load"] = {}
        for dtype in ("float16", "float32"):
            print(f"{n} items: feature load {dtype} ...", file=sys.stderr, flush=True)
            entry["load"][dtype] = run_child(["load", str(root), str(n), dtype])
        print(f"{n} items: training ...", file=sys.stderr, flush=True)
        entry["train"] = run_child(["train", str(root), str(n), str(args.train_steps),
                                    str(args.threads)])
        entry["loadavg_end"] = os.getloadavg()
        results.append(entry)
        print(json.dumps(entry), file=sys.stderr, flush=True)

    loads = [f"{r['loadavg_start'][0]:.1f}-{r['loadavg_end'][0]:.1f}" for r in results]
    machine = (f"Machine: {_cpu_model()}, {os.cpu_count()} cores, "
               f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2 ** 30:.0f} GiB, "
               f"no GPU; 1-minute load average during each size: {', '.join(loads)}.")
    table = markdown(results, machine)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps({"machine": machine, "results": results},
                                                    indent=2))
    (args.out / "scale.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
