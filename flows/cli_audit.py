"""``macl audit``: the DuckDB audit of a workspace's feature store, with gates for scheduling."""
from __future__ import annotations

import argparse
import sys
from typing import Any

DESCRIPTION = """\
Audit the feature store of a workspace with in-process DuckDB: coverage per modality x view x
sample, quality (dimensions, NaN/Inf, all-zero vectors, duplicate keys, orphan rows), staleness
(rows whose source text/image changed since extraction), provenance (one encoder per modality,
views made as the features config asks), the reasons behind missing/error rows, and corrupted
part files.

exit status: 0 every gate passed, 1 a gate failed, 2 bad input (e.g. an unreadable catalog)."""


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a fraction in [0, 1] (e.g. 0.95), got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("audit", help="audit the feature store (DuckDB): coverage, "
                              "quality, staleness, provenance; non-zero exit when a gate fails",
                              description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workspace", required=True, help="workspace folder or URI")
    p.add_argument("--format", choices=("table", "json", "markdown"), default="table",
                   help="report format (default: table)")
    p.add_argument("--min-coverage", type=_fraction, default=0.0, metavar="F",
                   help="fail when a view covers less than this fraction of the catalog "
                        "(default: 0)")
    p.add_argument("--allow-stale", action="store_true",
                   help="report stale rows without failing")
    p.add_argument("--limit", type=_positive, default=20, metavar="N",
                   help="items listed per problem (default: 20)")
    p.add_argument("--sql", action="store_true",
                   help="print the audit as SQL for the duckdb CLI (this workspace's paths "
                        "filled in) instead of the report")
    p.add_argument("--config", metavar="F",
                   help="features config (YAML or preset) whose views the store must match "
                        "(default: the default features config)")
    p.add_argument("--no-config", action="store_true",
                   help="skip the checks against a features config")
    p.add_argument("--allow-root", action="append", default=[], metavar="DIR",
                   help="also read images under this folder/URI (repeatable; the catalog's "
                        "image_roots are always allowed)")
    p.add_argument("--rehash-images", action="store_true",
                   help="read every image again instead of trusting unchanged size+mtime")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.audit import audit_store, expected_from_config, render

    expected = None if args.no_config else expected_from_config(args.config)
    label = (f"the features config {args.config}" if args.config else
             "the default features config (pass --config F, the one `macl features` ran with)")
    report = audit_store(args.workspace, min_coverage=args.min_coverage,
                         allow_stale=args.allow_stale, limit=args.limit, expected=expected,
                         allowed_roots=args.allow_root, rehash_images=args.rehash_images,
                         config_label=label, progress=True)
    if args.sql:
        sys.stdout.write(report.sql)
        return 0
    sys.stdout.write(render(report, args.format))
    return report.exit_code
