"""``macl train``, ``macl evaluate`` and ``macl recommend``.

Heavy imports (torch, the trainer) happen inside the handlers so that ``macl --help`` is fast.
"""
from __future__ import annotations

import argparse
import os
import sys

MODEL_CHOICES = ("sasrec", "sasrec_mm", "macl", "macl_noadp", "macl_com", "pop", "spop", "sknn")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train (or resume) a model and evaluate it by full ranking",
                       description="Train a variant on a workspace's split (and feature store), "
                                   "select the epoch on validation, report test at that epoch.")
    p.add_argument("--workspace", help="dataset folder or URI (catalog/, splits/, features/)")
    p.add_argument("--model", choices=MODEL_CHOICES, help="variant or baseline")
    p.add_argument("--protocol", help="split protocol under splits/ (default: the only one)")
    p.add_argument("--config", help="YAML file with config overrides (see docs/readme/trainer.md)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--select-on-test", action="store_true",
                   help="choose the epoch on TEST (only to reproduce the paper's reporting; "
                        "labelled as such in every output)")
    p.add_argument("--resume", metavar="RUN", help="continue a killed run (folder or run id)")
    p.add_argument("--runs-dir", help="where run folders go (default: <workspace>/runs)")
    p.add_argument("--run-id", help="name of the run folder (default: <model>-<time>-<hex>)")
    p.set_defaults(handler=_train)

    e = sub.add_parser("evaluate", help="evaluate finished runs; several runs print a comparison",
                       description="Re-evaluate a run's selected checkpoint on a split, or compare "
                                   "several finished runs as one table.")
    e.add_argument("--run", action="append", required=True, metavar="RUN",
                   help="run folder or id (repeat to compare runs)")
    e.add_argument("--workspace", help="workspace of the run (default: from its manifest)")
    e.add_argument("--split", default="test", choices=("test", "valid"))
    e.add_argument("--checkpoint", default="best.pt", choices=("best.pt", "last.pt"))
    e.set_defaults(handler=_evaluate)

    r = sub.add_parser("recommend", help="top-k items for a session (or a file of sessions)",
                       description="Recommend with a finished run. Items are the catalog's "
                                   "item_id strings.")
    r.add_argument("--run", required=True, metavar="RUN", help="run folder or id")
    r.add_argument("--workspace", help="workspace of the run (default: from its manifest)")
    r.add_argument("--items", help="comma-separated item_ids of one session, oldest first")
    r.add_argument("--input", help="Parquet with session_id and items (list of item_id)")
    r.add_argument("--output", help="Parquet for batch results (with --input)")
    r.add_argument("-k", type=int, default=20, help="how many items (default 20)")
    r.add_argument("--exclude-seen", action="store_true", help="never recommend session items")
    r.set_defaults(handler=_recommend)


def _fail(command: str, message: str) -> int:
    print(f"macl {command}: error: {message}", file=sys.stderr)
    return 2


def _train(args: argparse.Namespace) -> int:
    from trainer.config import ConfigError, resolve_config
    from trainer.loop import run_training
    from trainer.runs import summary_table

    try:
        if args.resume:
            if args.model or args.overrides or args.config or args.protocol:
                return _fail("train", "--resume continues a run with its saved config; drop "
                                      "--model/--config/--set/--protocol")
            run, summary = run_training(None, args.workspace, resume=args.resume)
        else:
            if not args.workspace or not args.model:
                return _fail("train", "a new run needs --workspace and --model")
            overrides = list(args.overrides)
            if args.protocol:
                overrides.append(f"data.protocol={args.protocol}")
            if args.select_on_test:
                overrides.append("train.select_on_test=true")
            cfg = resolve_config(args.model, args.config, overrides)
            run, summary = run_training(cfg, args.workspace, runs_dir=args.runs_dir,
                                        run_id=args.run_id)
    except ConfigError as exc:
        return _fail("train", str(exc))
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
    cfg = run.read_config()
    print(f"run folder: {run.location}")
    print(summary_table(summary, cfg.eval.ks))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from trainer.inference import evaluate_run, load_run
    from trainer.runs import SELECT_ON_TEST_LABEL, compare_runs, summary_table

    if len(args.run) > 1:
        print(compare_runs(args.run, split=args.split))
        return 0
    loaded = load_run(args.run[0], args.workspace, args.checkpoint)
    res = evaluate_run(loaded, args.split, progress=True)
    summary = loaded.run.read_summary() or {}
    info = {"run_id": summary.get("run_id", loaded.run.location), "model": loaded.cfg.model,
            "best_epoch": summary.get("best_epoch", "?"),
            "select_on_test": loaded.cfg.train.select_on_test, args.split: res.to_json()}
    loaded.run.ws.write_json_atomic({"checkpoint": args.checkpoint, **info},
                                    f"eval-{args.split}.json")
    print(summary_table(info, loaded.cfg.eval.ks))
    if loaded.cfg.train.select_on_test:
        print(f"note: {SELECT_ON_TEST_LABEL}")
    return 0


def _recommend(args: argparse.Namespace) -> int:
    from trainer.inference import load_run, read_sessions_file, recommend
    from trainer.runs import format_table

    if bool(args.items) == bool(args.input):
        return _fail("recommend", "give either --items or --input")
    if args.input and not args.output:
        return _fail("recommend", "--input needs --output")
    if args.k < 1:
        return _fail("recommend", "-k must be >= 1")
    loaded = load_run(args.run, args.workspace)
    if args.items:
        session = [s.strip() for s in args.items.split(",") if s.strip()]
        table = recommend(loaded, [session], k=args.k, exclude_seen=args.exclude_seen)
        cols = [c for c in ("rank", "item_id", "title", "score") if c in table.column_names]
        rows = [[r[c] for c in cols] for r in table.select(cols).to_pylist()]
        print(format_table(cols, rows))
        return 0
    import io

    import pyarrow.parquet as pq

    from schemas.fs import Workspace, write_bytes_atomic

    ids, sessions = read_sessions_file(args.input)
    table = recommend(loaded, sessions, k=args.k, exclude_seen=args.exclude_seen, session_ids=ids)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    out = Workspace.open(args.output)
    write_bytes_atomic(out.fs, out.root, buf.getvalue())
    print(f"wrote {table.num_rows} recommendations for {len(sessions)} sessions to {args.output}")
    return 0
