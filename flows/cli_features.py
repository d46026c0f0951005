"""``macl features`` and ``macl serve-flows``."""
from __future__ import annotations

import argparse
import os
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "features", help="extract image/text features of every item and view into the store",
        description="Run the Prefect `features` flow: one task per (modality, view, shard); "
                    "parts whose inputs did not change are skipped.")
    p.add_argument("--workspace", required=True, help="workspace folder or URI")
    p.add_argument("--config", help="features YAML, or a preset name (default, paper); "
                                    "default: the `default` preset (packaged models, all views)")
    p.add_argument("--runner", choices=("thread", "dask"), default="thread",
                   help="Prefect task runner (default: thread)")
    p.add_argument("--address", help="Dask scheduler address (with --runner dask); without it "
                                     "a local cluster is started")
    p.add_argument("--views", nargs="+", metavar="VIEW",
                   help="only these views: image, text, image/orig, text/swap, orig, ...")
    p.add_argument("--allow-root", action="append", default=[], metavar="DIR",
                   help="also read images under DIR (repeatable)")
    p.add_argument("--log-level", default=None, choices=("debug", "info", "warning", "error"),
                   help="Prefect log level (default: warning; info shows one line per part)")
    p.set_defaults(handler=run_features_command)

    s = subparsers.add_parser(
        "serve-flows", help="register and serve scheduled flows on a local Prefect server",
        description="Register a nightly incremental `features` run and a weekly `audit` run "
                    "with cron schedules on the local Prefect server (PREFECT_API_URL), then "
                    "serve them: scheduled and UI-triggered runs execute in this process.")
    s.add_argument("--workspace", required=True)
    s.add_argument("--config", help="features YAML or preset for the nightly run")
    s.add_argument("--features-cron", default=None, help="cron for features (default 0 2 * * *)")
    s.add_argument("--audit-cron", default=None, help="cron for the audit (default 0 4 * * 0)")
    s.add_argument("--min-coverage", type=float, default=None,
                   help="coverage the weekly audit requires (the audit flow's default if unset)")
    s.add_argument("--timezone", default="UTC")
    s.add_argument("--register-only", action="store_true",
                   help="register the deployments and exit (runs wait for a later serve-flows)")
    s.set_defaults(handler=serve_flows_command)


def run_features_command(args: argparse.Namespace) -> int:
    if args.log_level:
        os.environ["PREFECT_LOGGING_LEVEL"] = args.log_level.upper()
    from flows.features import FeaturesFailed, run_features
    from pipeline.encoders import EncoderUnavailable
    from pipeline.features import StoreBusy, ViewSummary, format_summary

    try:
        summary = run_features(args.workspace, args.config, views=args.views,
                               allow_roots=args.allow_root, runner=args.runner,
                               address=args.address, progress=True)
    except (EncoderUnavailable, StoreBusy, FeaturesFailed) as exc:
        print(f"macl features: error: {exc}", file=sys.stderr)
        return 2
    print(format_summary([ViewSummary(**v) for v in summary["views"]], summary["wall_seconds"]))
    for line in summary.get("repaired", []):
        print(f"repaired damaged part {line}")
    return 0


def serve_flows_command(args: argparse.Namespace) -> int:
    from flows.deployments import (
        DEFAULT_AUDIT_CRON,
        DEFAULT_FEATURES_CRON,
        ServerNotConfigured,
        build_deployments,
        register,
        serve,
    )

    try:
        deployments = build_deployments(
            args.workspace, args.config, features_cron=args.features_cron or DEFAULT_FEATURES_CRON,
            audit_cron=args.audit_cron or DEFAULT_AUDIT_CRON, min_coverage=args.min_coverage,
            timezone=args.timezone)
        if args.register_only:
            for d, dep_id in zip(deployments, register(deployments)):
                cron = d.schedules[0].schedule.cron
                print(f"registered {d.flow_name}/{d.name} ({dep_id}) cron '{cron}'")
            return 0
        serve(deployments)
    except ServerNotConfigured as exc:
        print(f"macl serve-flows: error: {exc}", file=sys.stderr)
        return 2
    return 0
