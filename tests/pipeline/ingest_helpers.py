"""Small helpers shared by the ingest tests: tiny images, CSV writers, reading a workspace back."""
from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from PIL import Image

from schemas.fs import Workspace
from schemas.io import read_events, read_items


def tiny_image(path: Path, colour=(200, 30, 30), fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format=fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def write_csv(path: Path, header: list[str], rows: list[list], delimiter: str = ",") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter=delimiter, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def catalog(ws: Workspace) -> dict[str, dict]:
    """item_id -> catalog row."""
    return {r["item_id"]: r for r in read_items(ws).to_pylist()}


def events(ws: Workspace) -> list[dict]:
    return read_events(ws, read_items(ws)).to_pylist()


def run_cli(argv: list[str]) -> int:
    """Run one of the data subcommands the way ``macl`` does (ContractError -> exit 2)."""
    from flows import cli_data
    from schemas.errors import ContractError

    parser = argparse.ArgumentParser(prog="macl")
    cli_data.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ContractError as exc:
        print(f"macl {args.command}: error: {exc}")
        return 2
