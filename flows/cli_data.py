"""``macl ingest``, ``macl split`` and ``macl demo``: the data subcommands.

Handlers import the pipeline lazily so that ``macl --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    _register_ingest(sub)
    _register_split(sub)
    _register_demo(sub)


# -- ingest -------------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, *, images: bool = True, catalog: bool = True) -> None:
    p.add_argument("--source", required=True, help="the source folder (or file, for table)")
    p.add_argument("--workspace", required=True, help="the workspace folder or URI to write")
    if images:
        p.add_argument(
            "--copy-images",
            action="store_true",
            help="copy images into W/images (default: reference them where they are)",
        )
    if catalog:
        p.add_argument(
            "--catalog",
            choices=("events", "all"),
            default="events",
            help="items in the catalog: those with events (default) or every item row",
        )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _register_ingest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="read a dataset into a workspace (catalog + events)",
        description="Read a source layout into W/catalog/items.parquet and "
        "W/events/events.parquet (and W/splits/given/ for pre-split sources).",
    )
    fmts = p.add_subparsers(dest="format", required=True, metavar="FORMAT")

    hm = fmts.add_parser("hm", help="H&M: transactions.csv, articles.csv, images/<article_id>.jpg")
    _common(hm)

    ml = fmts.add_parser(
        "movielens",
        help="MovieLens: ml100k_mm (items.csv) or ml-latest (movies.csv) + ratings.csv + posters/",
    )
    _common(ml)
    ml.add_argument("--min-rating", type=float, help="keep ratings >= this value only")
    ml.add_argument("--posters", help="poster folder (default SOURCE/posters)")

    sr = fmts.add_parser(
        "srgnn",
        help="SR-GNN/GCE-GNN pickles (all_train_seq/train + test) or "
        "their Parquet twins; ID-only, pre-split",
    )
    _common(sr, images=False, catalog=False)
    sr.add_argument(
        "--files",
        choices=("auto", "parquet", "pickle"),
        default="auto",
        help="which twin to read (auto: Parquet when present)",
    )
    sr.add_argument(
        "--expanded",
        choices=("auto", "yes", "no"),
        default="auto",
        help="are cases files prefix-expanded (auto: detect)",
    )
    sr.add_argument(
        "--valid-fraction",
        type=float,
        default=0.1,
        help="share of training sessions carved off as validation (default 0.1)",
    )

    am = fmts.add_parser(
        "amazon2018",
        help="Amazon 2018: <Category>_5.json.gz + meta_<Category>.json.gz + images/<asin>.jpg",
    )
    _common(am)
    am.add_argument("--category", help="which <Category> when the folder holds several")
    am.add_argument("--images", help="folder of downloaded images (default SOURCE/images)")

    rb = fmts.add_parser(
        "recbole",
        help="RecBole atomic files (.inter/.item, or the UniSRec "
        ".text/.item2index/.train.inter layout)",
    )
    _common(rb, images=False)
    rb.add_argument("--dataset", help="dataset name when the folder holds several")
    rb.add_argument(
        "--valid-fraction",
        type=float,
        default=0.1,
        help="validation share of the training rows when there is no .valid.inter",
    )
    rb.add_argument("--timestamp-unit", choices=("s", "ms", "us"), default="s")

    tb = fmts.add_parser("table", help="any CSV/TSV/Parquet events (+ items) with a column mapping")
    _common(tb)
    tb.add_argument(
        "--events",
        help="events file (default SOURCE/events.{csv,tsv,parquet}, or "
        "SOURCE itself when it is a file)",
    )
    tb.add_argument(
        "--items", help="items file (default SOURCE/items.{csv,tsv,parquet} if present)"
    )
    tb.add_argument(
        "--events-map",
        help="field=column pairs, e.g. "
        "'item_id=article,session_id=visit,timestamp=ts' (fields: item_id, "
        "session_id, user_id, timestamp)",
    )
    tb.add_argument(
        "--items-map",
        help="field=column pairs (fields: item_id, title, text, image, category, brand, price)",
    )
    tb.add_argument("--text-columns", help="comma-separated item columns joined into the text")
    tb.add_argument(
        "--timestamp-unit",
        choices=("s", "ms", "us"),
        help="numeric timestamps are epochs in this unit (text is read as ISO-8601)",
    )
    tb.add_argument("--sort-by", help="comma-separated event columns that give the source order")
    tb.add_argument(
        "--image-dir",
        help="folder that image paths are relative to (default: the items file's folder)",
    )
    tb.add_argument("--delimiter", default=",", help="CSV delimiter (default ',')")
    tb.add_argument(
        "--sessions",
        choices=("id", "user", "gap", "day"),
        help="session rule recorded for `macl split --sessions auto` (default: id "
        "when a session column exists, else day)",
    )
    p.set_defaults(handler=_ingest)


_INGEST_OPTIONS = {
    "hm": ("catalog",),
    "movielens": ("catalog", "min_rating", "posters"),
    "srgnn": ("files", "expanded", "valid_fraction"),
    "amazon2018": ("catalog", "category", "images"),
    "recbole": ("catalog", "dataset", "valid_fraction", "timestamp_unit"),
    "table": (
        "catalog",
        "events",
        "items",
        "events_map",
        "items_map",
        "text_columns",
        "timestamp_unit",
        "sort_by",
        "image_dir",
        "delimiter",
        "sessions",
    ),
}


def _ingest(args: argparse.Namespace) -> int:
    from pipeline.ingest import ingest
    from schemas.errors import ContractError

    options = {
        k: getattr(args, k) for k in _INGEST_OPTIONS[args.format] if getattr(args, k) is not None
    }
    try:
        summary = ingest(
            args.format,
            args.source,
            args.workspace,
            copy_images=getattr(args, "copy_images", False),
            progress=not args.no_progress,
            **options,
        )
    except ContractError:
        raise
    except ValueError as exc:
        print(f"macl ingest: error: {exc}", file=sys.stderr)
        return 2
    print(summary.render())
    return 0


# -- split --------------------------------------------------------------------------------------


def _register_split(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "split",
        help="cut events into sessions and write train/valid/test cases",
        description="Write W/splits/<name>/{train,valid,test}.parquet under a "
        "protocol. Unset options take the protocol's defaults (see docs).",
    )
    p.add_argument("--workspace", required=True)
    p.add_argument(
        "--protocol",
        choices=("macl", "srgnn", "loo"),
        help="macl (paper recipe), srgnn (time split, prefixes), loo (leave-one-out)",
    )
    p.add_argument(
        "--config",
        help="YAML/JSON split config (protocol + parameters); options "
        "given on the command line override it",
    )
    p.add_argument("--name", help="output folder name under W/splits (default: the protocol)")
    p.add_argument(
        "--sessions",
        choices=("auto", "id", "user", "gap", "day"),
        help="session rule (auto: what the ingest adapter recorded)",
    )
    p.add_argument("--gap-minutes", type=float, help="gap that cuts sessions (--sessions gap)")
    p.add_argument(
        "--keep-repeats",
        action="store_true",
        help="keep consecutive repeats of one item (collapsed by default)",
    )
    p.add_argument("--min-item-count", type=int, help="drop items with fewer events")
    p.add_argument("--min-session-len", type=int, help="drop sessions with fewer items")
    p.add_argument("--max-len", type=int, help="cap input + target to the last N items (0: no cap)")
    p.add_argument(
        "--order",
        choices=("time", "session_id", "source"),
        help="session order for the macl test cut / loo output",
    )
    p.add_argument("--test-fraction", type=float, help="macl: share of sessions to test")
    p.add_argument("--test-days", type=float, help="srgnn: the last N days go to test")
    p.add_argument(
        "--valid-fraction",
        type=float,
        help="macl/srgnn: share of training sessions carved off as validation",
    )
    unseen = p.add_mutually_exclusive_group()
    unseen.add_argument(
        "--drop-unseen-test-items", dest="drop_unseen_test_items", action="store_true", default=None
    )
    unseen.add_argument(
        "--keep-unseen-test-items", dest="drop_unseen_test_items", action="store_false"
    )
    prefixes = p.add_mutually_exclusive_group()
    prefixes.add_argument(
        "--train-prefixes",
        dest="train_prefixes",
        action="store_true",
        default=None,
        help="every prefix of a training session is a case",
    )
    prefixes.add_argument(
        "--train-last-only",
        dest="train_prefixes",
        action="store_false",
        help="one (prefix, last item) case per training session",
    )
    p.set_defaults(handler=_split)


_SPLIT_OPTIONS = (
    "sessions",
    "gap_minutes",
    "min_item_count",
    "min_session_len",
    "order",
    "test_fraction",
    "test_days",
    "valid_fraction",
    "drop_unseen_test_items",
    "train_prefixes",
)


def _split(args: argparse.Namespace) -> int:
    from pipeline.splits import SplitConfig, run_split
    from schemas.errors import ContractError
    from schemas.fs import Workspace

    try:
        base = SplitConfig.from_file(args.config).to_dict() if args.config else {}
        protocol = args.protocol or base.get("protocol")
        if protocol is None:
            raise ValueError("give --protocol or a --config that names one")
        if base and base["protocol"] != protocol:
            raise ValueError(f"--config is for protocol {base['protocol']!r}, not {protocol!r}")
        base.pop("protocol", None)
        overrides = {k: getattr(args, k) for k in _SPLIT_OPTIONS if getattr(args, k) is not None}
        if args.keep_repeats:
            overrides["collapse_repeats"] = False
        if args.max_len is not None:
            overrides["max_len"] = args.max_len or None
        config = SplitConfig.for_protocol(protocol, **{**base, **overrides})
    except ContractError:
        raise
    except ValueError as exc:
        print(f"macl split: error: {exc}", file=sys.stderr)
        return 2
    ws = Workspace.open(args.workspace)
    result = run_split(ws, config, name=args.name)
    print(result.render(ws.display()))
    return 0


# -- demo ---------------------------------------------------------------------------------------


def _register_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="run the whole product on a generated SYNTHETIC shop",
        description="Generate a SYNTHETIC shop, ingest and split it, extract features (Prefect), "
                    "audit the store (DuckDB), train pop, sasrec and macl, and compare them.")
    p.add_argument("--workspace", default="demo_workspace", help="(default: demo_workspace)")
    p.add_argument("--size", type=int, default=600, help="number of items (default 600)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from flows.demo import FULL_STEPS, DemoAuditFailed
    from pipeline.demo import DemoConfig, run_demo

    try:
        run_demo(DemoConfig(workspace=args.workspace, size=args.size, seed=args.seed), FULL_STEPS)
    except DemoAuditFailed as exc:
        print(f"{exc}\nmacl demo: the feature store failed its audit; stopping", file=sys.stderr)
        return 1
    return 0
