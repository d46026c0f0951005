"""Speed benchmark: our trainer against RecBole's SASRec, evaluation against a bare loop, and
the feature-extraction ratios, measured side by side in one run.

1. **Training samples/s** on MovieLens-100K, leave-one-out by user (96,986 training samples),
   d=64, 2 layers, 2 heads, FFN 256, dropout 0.2, L=50, batch 256, full cross-entropy, one
   epoch, the same thread count: our ``sasrec`` and ``macl`` (both contrastive tasks on, the
   real ML-100K poster/overview features) through ``macl train``, and RecBole 1.2.1's SASRec
   through its own ``Trainer._train_epoch`` — as shipped (RecBole switches torch's anomaly
   detection on globally when it imports its model zoo) and with anomaly detection switched
   off ("patched"). RecBole is installed by this script into its own throwaway virtual
   environment (``benchmarks/out/speed/recbole-venv``); it is never a project dependency. The
   runs are interleaved (ours, RecBole shipped, RecBole patched, macl, ours again) and the load
   average is recorded with each, because the machine is shared. Peak memory = the peak
   resident set of each whole process.
2. **Full-rank evaluation** sessions/s of ``trainer.evaluate.evaluate`` (encode, score every
   item, rank with the tie policy, metrics) against a bare loop of encode + ``scores @ items.T``
   + ``topk(20)`` with the same model and batches (goal >= 0.8x).
3. **Extraction**: ``benchmarks/extract.py`` rerun (flow vs bare forward, text encoder vs
   sentence-transformers, incremental rerun).

Writes the ``speed`` section of ``benchmarks/RESULTS.md``. Usage::

    .venv/bin/python benchmarks/speed.py                  # CPU, 2 threads (about 20-30 min)
    .venv/bin/python benchmarks/speed.py --skip-extract   # training and evaluation only
    .venv/bin/python benchmarks/speed.py --device cuda    # on a GPU machine (benchmarks/gpu.sh)
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import results as res  # noqa: E402

MACL = [sys.executable, "-m", "flows.cli"]  # the `macl` command, also where it is not installed
RECBOLE_PINS = [["torch==2.13.0"], ["recbole==1.2.1"],
                ["setuptools<70", "numpy<2", "pandas<2.2", "scipy<1.14"]]
SHAPE = ["data.max_len=50", "train.batch_size=256", "arch.dim=64", "arch.layers=2",
         "arch.heads=2", "arch.ffn_dim=256", "arch.dropout=0.2", "arch.attn_dropout=0.2",
         "loss.rec_softmax=full", "loss.rec_positions=last"]
PROTOCOL = "loo_user"
GOALS = {"shipped": 3.0, "patched": 2.0, "macl": 1.0, "eval": 0.8}


def run_proc(cmd: list[str], log: Path, env: dict | None = None, cwd: Path = REPO) -> dict:
    """Run a command (output to ``log``); its wall time, CPU time and peak RSS (os.wait4)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    load_before = res.load_average()
    started = time.time()
    with open(log, "w") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": proc.returncode, "wall_s": time.time() - started,
            "cpu_s": usage.ru_utime + usage.ru_stime, "max_rss_mb": usage.ru_maxrss / 1024,
            "load_before": load_before, "load_after": res.load_average(),
            "stdout": log.read_text()}


# ---------------------------------------------------------------------------------- data

def prepare_workspace(ws: Path, data: Path, log_dir: Path) -> None:
    """ML-100K ingested with the real adapter, split leave-one-out per user."""
    if not (ws / "catalog" / "items.parquet").exists():
        r = run_proc(MACL + ["ingest", "movielens", "--source", str(data / "ml100k_mm"),
                               "--workspace", str(ws), "--no-progress"], log_dir / "ingest.log")
        _check(r, "ingest")
    if not (ws / "splits" / PROTOCOL / "test.parquet").exists():
        r = run_proc(MACL + ["split", "--workspace", str(ws), "--protocol", "loo",
                               "--sessions", "user", "--name", PROTOCOL], log_dir / "split.log")
        _check(r, "split")


def write_atomic_file(data: Path, out: Path) -> Path:
    """RecBole's atomic ``ml-100k.inter`` from the same ratings.csv (all ratings kept)."""
    target = out / "ml-100k" / "ml-100k.inter"
    if target.exists():
        return out
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    with open(data / "ml100k_mm" / "ratings.csv", newline="") as f, open(tmp, "w") as g:
        g.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for row in csv.DictReader(f):
            g.write(f"{row['user_id']}\t{row['movie_id']}\t{row['rating']}\t"
                    f"{row['unix_timestamp']}\n")
    os.replace(tmp, target)
    return out


def ensure_features(ws: Path, source: Path | None, log_dir: Path, config: Path | None) -> str:
    """The ML-100K feature store: hard-linked from the accuracy benchmark's workspace when it
    holds the same catalog (same ingest), else computed with ``macl features`` (or, where
    Prefect is not installed, with the flow's plain functions)."""
    from schemas.hashing import sha256_bytes

    if (ws / "features" / "_manifest.json").exists():
        return "present"
    cat = lambda w: sha256_bytes((w / "catalog" / "items.parquet").read_bytes())  # noqa: E731
    if source is not None and (source / "features" / "_manifest.json").exists() \
            and cat(source) == cat(ws):
        tmp = ws / ".features-link"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source / "features", tmp, copy_function=os.link,
                        ignore=shutil.ignore_patterns(".*"))
        os.replace(tmp, ws / "features")
        return f"linked from {source}"
    import importlib.util

    if importlib.util.find_spec("prefect") is None:
        from pipeline.features import FeaturesConfig, compute_part, plan_run, write_store_manifest
        from schemas.fs import Workspace

        w, cfg = Workspace.open(str(ws)), FeaturesConfig.load(config)
        plan = plan_run(w, cfg)
        for part in plan.parts:
            compute_part(w, cfg, part)
        write_store_manifest(w, plan.catalog_sha256)
        return f"computed here without Prefect ({config.name if config else 'default'} config)"
    cmd = MACL + ["features", "--workspace", str(ws)]
    r = run_proc(cmd + (["--config", str(config)] if config else []), log_dir / "features.log")
    _check(r, "features")
    return f"computed here ({config.name if config else 'default'} config)"


def ensure_recbole(venv: Path, log: Path) -> str:
    py = venv / "bin" / "python"
    probe = [str(py), "-c", "import recbole, torch; print(recbole.__version__, torch.__version__)"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return subprocess.run(probe, capture_output=True, text=True).stdout.strip()
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    with open(log, "a") as f:
        for pins in RECBOLE_PINS:
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *pins], check=True,
                           stdout=f, stderr=subprocess.STDOUT)
    return subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()


def _check(r: dict, what: str) -> None:
    if r["rc"] != 0:
        raise SystemExit(f"{what} failed (rc {r['rc']}):\n{r['stdout'][-3000:]}")


# ---------------------------------------------------------------------------------- training

def ours(model: str, ws: Path, out: Path, tag: str, threads: int, device: str) -> dict:
    runs = out / "runs"
    shutil.rmtree(runs / tag, ignore_errors=True)
    cmd = MACL + ["train", "--workspace", str(ws), "--model", model, "--protocol", PROTOCOL,
                  "--runs-dir", str(runs), "--run-id", tag]
    for s in SHAPE + ["train.epochs=1", f"train.threads={threads}", "train.progress=false",
                      f"train.device={device}", "seed=0"]:
        cmd += ["--set", s]
    r = run_proc(cmd, out / "logs" / f"{tag}.log")
    _check(r, f"macl train --model {model}")
    epoch = json.loads((runs / tag / "metrics.jsonl").read_text().splitlines()[0])["train"]
    manifest = json.loads((runs / tag / "manifest.json").read_text())
    feats = manifest["extra"].get("features") or {}
    return {"what": f"ours `{model}`", "samples": epoch["samples"], "seconds": epoch["seconds"],
            "samples_per_s": epoch["samples_per_s"], "max_rss_mb": r["max_rss_mb"],
            "load": f"{r['load_before']} → {r['load_after']}", "run": str(runs / tag),
            "tables": len(feats.get("tables", [])), "loss": epoch.get("loss", {})}


def recbole(python: str, data_path: Path, anomaly: str, out: Path, threads: int,
            device: str) -> dict:
    cmd = [python, str(REPO / "benchmarks" / "recbole_runner.py"),
           "--data-path", str(data_path), "--anomaly", anomaly, "--threads", str(threads),
           "--device", device, "--checkpoint-dir", str(out / "recbole-saved")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    # RecBole writes log/ and log_tensorboard/ into its working directory: keep them under out
    r = run_proc(cmd, out / "logs" / f"recbole-{anomaly}.log", env=env, cwd=out)
    _check(r, f"recbole ({anomaly})")
    line = next(x for x in reversed(r["stdout"].splitlines()) if x.startswith("{"))
    got = json.loads(line)
    label = "as shipped (anomaly detection on)" if anomaly == "shipped" else \
        "patched (anomaly detection off)"
    return {"what": f"RecBole SASRec, {label}", **got, "max_rss_mb": r["max_rss_mb"],
            "load": f"{r['load_before']} → {r['load_after']}"}


# ---------------------------------------------------------------------------------- evaluation

def eval_bench(run: str, n_sessions: int, batch_sizes: list[int], repeats: int, threads: int,
               device: str) -> list[dict]:
    """Sessions/s of the trainer's full-rank evaluation vs a bare encode + matmul + topk loop."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from trainer.data import Cases
    from trainer.evaluate import evaluate
    from trainer.inference import load_run

    torch.set_num_threads(threads)
    loaded = load_run(run, device=device)
    model, dev, L = loaded.model, loaded.device, loaded.cfg.data.max_len
    src = loaded.data.train
    n = min(n_sessions, len(src))
    cases = Cases(session_ids=src.session_ids.slice(0, n), flat=src.flat[: src.offsets[n]],
                  offsets=src.offsets[: n + 1], targets=src.targets[:n], info={})

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def ours_rate(bs: int) -> float:
        sync()
        t = time.perf_counter()
        evaluate(model, cases, ks=[5, 10, 20], max_len=L, batch_size=bs, device=dev,
                 tie_policy="pessimistic")
        sync()
        return n / (time.perf_counter() - t)

    def bare_rate(bs: int) -> float:
        sync()
        t = time.perf_counter()
        with torch.inference_mode():
            model.eval()
            table = model.items.table()
            for start in range(0, n, bs):
                items = torch.from_numpy(cases.window(np.arange(start, min(start + bs, n)),
                                                      L)).to(dev)
                h = model.encode(F.embedding(items, table), items > 0)
                (h @ table.T).topk(20, dim=1)
        sync()
        return n / (time.perf_counter() - t)

    rows = []
    for bs in batch_sizes:
        ours_rate(bs), bare_rate(bs)  # warm-up
        o, b = [], []
        for _ in range(repeats):  # interleaved, best of each: damps other jobs' noise
            o.append(ours_rate(bs))
            b.append(bare_rate(bs))
        rows.append({"batch": bs, "sessions": n, "ours": max(o), "bare": max(b),
                     "ratio": max(o) / max(b), "load": res.load_average()})
    return rows


# ---------------------------------------------------------------------------------- report

def render(train: list[dict], evals: list[dict], extract: str | None, meta: dict) -> str:
    a = [r for r in train if r["what"] == "ours `sasrec`"]
    sas = sum(r["samples_per_s"] for r in a) / len(a)
    shipped = next((r for r in train if "shipped" in r["what"]), None)
    patched = next((r for r in train if "patched" in r["what"]), None)
    macl = next((r for r in train if r["what"] == "ours `macl`"), None)
    peer = meta.get("recbole_error", "not run")
    if shipped:
        peer = (f"{meta['recbole']} (torch {shipped['torch']}) in its own environment; anomaly "
                f"detection on after importing its models: "
                f"{shipped['anomaly_enabled_after_import']}; {shipped['samples']:,} samples")
    extra = [("data", f"MovieLens-100K `ml100k_mm`, leave-one-out per user: "
                      f"{a[0]['samples']:,} training samples"),
             ("shape", "d=64, 2 layers, 2 heads, FFN 256, dropout 0.2, L=50, batch 256, full "
                       f"cross-entropy, one epoch, {meta['threads']} threads, device "
                       f"{meta['device']}"),
             ("peer", peer), ("features for `macl`", meta["features"])]
    out = ["## Speed", "", res.header("benchmarks/speed.py", extra), "",
           "### Training throughput (one epoch each, run in this order)", "",
           "| run | samples/s | epoch seconds | peak RSS (MB) | load before → after |",
           "|---|---|---|---|---|"]
    for r in train:
        out.append(f"| {r['what']} | {r['samples_per_s']:,.0f} | {r['seconds']:.1f} | "
                   f"{r['max_rss_mb']:,.0f} | {r['load']} |")
    rows = []
    if shipped and patched:
        rows = [("ours `sasrec` / RecBole as shipped", sas / shipped["samples_per_s"],
                 GOALS["shipped"]),
                ("ours `sasrec` / RecBole patched", sas / patched["samples_per_s"],
                 GOALS["patched"])]
        if macl:
            rows += [("ours `macl` / RecBole as shipped",
                      macl["samples_per_s"] / shipped["samples_per_s"], GOALS["macl"]),
                     ("ours `macl` / RecBole patched",
                      macl["samples_per_s"] / patched["samples_per_s"], GOALS["macl"])]
    out += ["", f"Ours `sasrec` = mean of its {len(a)} runs (before and after the others)."]
    if rows:
        out += ["", "| ratio | measured | goal |", "|---|---|---|"]
    for name, value, goal in rows:
        out.append(f"| {name} | **{value:.2f}x** | >= {goal:g}x "
                   f"{'met' if value >= goal else 'NOT met'} |")
    if macl:
        out += ["", f"`macl` ran with {macl['tables']} feature tables (both contrastive tasks, "
                    f"alpha = beta = 0.1); its epoch losses: " + ", ".join(
                        f"{k} {v:.3f}" for k, v in macl["loss"].items()) + "."]
    if evals:
        out += ["", "### Full-rank evaluation", "",
                f"{evals[0]['sessions']:,} ML-100K sessions (training cases as queries), the "
                "`sasrec` model above; ours = `trainer.evaluate.evaluate` (encode, score all "
                "items, pessimistic-tie ranks exact to 20, HR/MRR/NDCG@5/10/20); bare = encode "
                "+ `scores @ items.T` + `topk(20)`. Best of interleaved repeats.", "",
                "| batch | ours sessions/s | bare sessions/s | ratio | goal |",
                "|---|---|---|---|---|"]
        for e in evals:
            out.append(f"| {e['batch']} | {e['ours']:,.0f} | {e['bare']:,.0f} | "
                       f"**{e['ratio']:.2f}x** | >= {GOALS['eval']}x "
                       f"{'met' if e['ratio'] >= GOALS['eval'] else 'NOT met'} |")
    if extract:
        out += ["", "### Feature extraction (`benchmarks/extract.py`)", "",
                f"Command: `{meta['extract_cmd']}` (run {meta['extract_when']})", "", "```",
                extract.strip(), "```"]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "speed")
    p.add_argument("--features-from", type=Path,
                   default=REPO / "benchmarks" / "out" / "accuracy" / "ml100k",
                   help="an ML-100K workspace whose feature store may be reused (same catalog)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--eval-sessions", type=int, default=8192)
    p.add_argument("--eval-batches", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-recbole", action="store_true")
    p.add_argument("--recbole-python", help="a Python that imports recbole (default: a "
                   "throwaway venv under --out, created by this script)")
    p.add_argument("--features-config", type=Path, help="features config when the ML-100K "
                   "store must be computed here (default: the default preset)")
    p.add_argument("--skip-extract", action="store_true",
                   help="do not rerun extract.py; the table shows its last run's figures, dated")
    p.add_argument("--extract-args", default="--items 300 --repeats 2 --views image/orig "
                   "image/noise text/orig text/ctx_sub",
                   help="arguments for benchmarks/extract.py")
    p.add_argument("--no-write", action="store_true", help="print, do not touch RESULTS.md")
    args = p.parse_args(argv)
    from pipeline.runtime import configure_environment

    configure_environment(REPO / ".prefect")
    out = args.out.resolve()
    ws = out / "ml100k"
    logs = out / "logs"
    prepare_workspace(ws, args.data, logs)
    meta = {"threads": args.threads, "device": args.device,
            "features": ensure_features(ws, args.features_from.resolve(), logs,
                                        args.features_config)}
    venv = out / "recbole-venv"
    train: list[dict] = []
    say = lambda r: print(f"{r['what']}: {r['samples_per_s']:,.0f} samples/s, "  # noqa: E731
                          f"{r['max_rss_mb']:,.0f} MB, load {r['load']}", flush=True)
    train.append(ours("sasrec", ws, out, "sasrec-1", args.threads, args.device))
    say(train[-1])
    if not args.skip_recbole:
        if args.recbole_python:
            python = args.recbole_python
            meta["recbole"] = "RecBole (given Python)"
        else:
            python = str(venv / "bin" / "python")
            version = ensure_recbole(venv, logs / "recbole-venv.log").split()[0]
            meta["recbole"] = f"RecBole {version}"
        data_path = write_atomic_file(args.data, out / "recbole-data")
        for mode in ("shipped", "off"):
            try:
                train.append(recbole(python, data_path, mode, out, args.threads, args.device))
            except SystemExit as exc:  # reported in the tables; our figures still count
                meta["recbole_error"] = f"RecBole failed here: {str(exc).splitlines()[0]}"
                print(meta["recbole_error"], flush=True)
                break
            say(train[-1])
    train.append(ours("macl", ws, out, "macl-1", args.threads, args.device))
    say(train[-1])
    train.append(ours("sasrec", ws, out, "sasrec-2", args.threads, args.device))
    say(train[-1])
    evals = eval_bench(train[0]["run"], args.eval_sessions, args.eval_batches, args.repeats,
                       args.threads, args.device)
    for e in evals:
        print(f"eval batch {e['batch']}: ours {e['ours']:,.0f} vs bare {e['bare']:,.0f} "
              f"sessions/s = {e['ratio']:.2f}x", flush=True)
    extract = None
    extract_log = logs / "extract.log"
    if not args.skip_extract:
        cmd = [sys.executable, str(REPO / "benchmarks" / "extract.py"), *args.extract_args.split()]
        r = run_proc(cmd, extract_log)
        _check(r, "benchmarks/extract.py")
    if extract_log.exists():  # with --skip-extract: the previous run's figures, dated
        lines = extract_log.read_text().splitlines()
        meta["extract_cmd"] = (lines[0].removeprefix("$ ").replace(sys.executable, "python")
                               .replace(str(REPO) + "/", ""))
        meta["extract_when"] = time.strftime("%Y-%m-%d %H:%M UTC",
                                             time.gmtime(extract_log.stat().st_mtime))
        extract = "\n".join(x for x in lines[1:] if "it/s]" not in x and "item-view/s" not in x)
        print(extract)
    (out / "speed.json").write_text(json.dumps({"train": train, "eval": evals, "meta": meta},
                                               indent=1, default=str))
    if args.skip_recbole:
        meta["recbole_error"] = "skipped (--skip-recbole)"
    text = render(train, evals, extract, meta)
    (out / "speed.md").write_text(text)
    print(text)
    if args.no_write or "recbole_error" in meta:
        print(f"RESULTS.md not touched (--no-write or no RecBole figures); see {out / 'speed.md'}")
    else:
        res.update_section("speed", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
