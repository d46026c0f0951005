"""The ``macl`` command: one parser, subcommands registered by the module that owns them.

Each subcommand module exposes ``register(subparsers)`` and imports its heavy dependencies
inside its handler, so ``macl --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from pipeline.runtime import configure_environment

#: modules that add subcommands, in help order
COMMAND_MODULES: list[str] = ["flows.cli_data", "flows.cli_features", "flows.cli_audit", "trainer.cli"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="macl",
        description="Multi-modal adaptive contrastive learning for session-based recommendation.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    configure_environment()
    args = build_parser().parse_args(argv)
    from schemas.errors import ContractError

    try:
        return int(args.handler(args) or 0)
    except ContractError as exc:
        print(f"macl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"macl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
