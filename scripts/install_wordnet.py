#!/usr/bin/env python3
"""Install the WordNet 3.0 database where NLTK finds it, from Debian's WordNet packages.

NLTK's own downloader reaches a host this project cannot use, and no Python registry ships the
NLTK ``wordnet`` corpus; Debian's ``wordnet-base`` holds the same WordNet 3.0 database files and
``wordnet-sense-index`` the ``index.sense`` file that NLTK's reader opens when it starts. NLTK
also wants a ``lexnames`` table, which the packages only document (man page ``lexnames.5WN``),
so it is generated from there. Files are copied, not linked: NLTK refuses links that leave its
data root.

Idempotent: when the target already holds a complete install it exits at once. Never fails the
setup: without apt (or a ``--deb`` file) it prints why and exits 0; the ``synonym`` text view then
records a fallback in its provenance.

Usage: ``python scripts/install_wordnet.py [--dest DIR] [--deb FILE ...]``; the default ``DIR`` is
``<sys.prefix>/nltk_data`` (``.venv/nltk_data`` for the project's venv), a directory NLTK
searches by default and ``pipeline.augment`` adds explicitly.
"""
from __future__ import annotations

import argparse
import gzip
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGES = ("wordnet-base", "wordnet-sense-index")
#: The database files NLTK's WordNetCorpusReader opens.
DB_FILES = ("cntlist.rev", "index.adj", "index.adv", "index.noun", "index.verb", "data.adj",
            "data.adv", "data.noun", "data.verb", "adj.exc", "adv.exc", "noun.exc", "verb.exc",
            "index.sense")
LEXNAMES_COUNT = 45
POS_NUMBER = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
STAMP = ".macl-wordnet"


def default_dest() -> Path:
    return Path(sys.prefix) / "nltk_data"


def is_installed(target: Path) -> bool:
    return (target / STAMP).is_file() and all((target / f).is_file()
                                               for f in (*DB_FILES, "lexnames"))


def fetch_debs(workdir: Path) -> list[Path]:
    """Download the .debs with apt (running ``apt-get update`` once if the lists are empty)."""
    if shutil.which("apt-get") is None:
        raise RuntimeError("apt-get is not available; pass --deb with downloaded "
                           f"{' and '.join(PACKAGES)} .deb files")
    cmd = ["apt-get", "download", "-q", *PACKAGES]
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True)
        done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    debs = sorted(workdir.glob("*.deb"))
    if done.returncode != 0 or len(debs) != len(PACKAGES):
        raise RuntimeError(f"'{' '.join(cmd)}' failed: "
                           f"{(done.stderr or done.stdout).strip()[-500:]}")
    return debs


def deb_members(deb: Path) -> dict[str, bytes]:
    """Files of a .deb (an ar archive holding data.tar.*), by path inside the package."""
    blob = deb.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise RuntimeError(f"{deb} is not a Debian package (no ar header)")
    pos, data_tar = 8, None
    while pos + 60 <= len(blob):
        header = blob[pos:pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = blob[pos + 60:pos + 60 + size]
        if name.startswith("data.tar"):
            data_tar = body
        pos += 60 + size + (size % 2)
    if data_tar is None:
        raise RuntimeError(f"{deb} has no data.tar member")
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data_tar), mode="r:*") as tar:
        for member in tar.getmembers():
            if member.isfile():
                out[member.name.lstrip("./")] = tar.extractfile(member).read()
    return out


def lexnames_from_manpage(man: str) -> str:
    """The 45-line ``lexnames`` table: 'NN<TAB>name<TAB>pos-number' for each lexicographer file."""
    rows = []
    for line in man.splitlines():
        m = re.match(r"^(\d\d)\t(\S+)\s*\t", line)
        if m and m.group(2).split(".")[0] in POS_NUMBER:
            rows.append((int(m.group(1)), m.group(2)))
    rows.sort()
    if [n for n, _ in rows] != list(range(LEXNAMES_COUNT)):
        raise RuntimeError(f"lexnames.5WN: expected files 00..{LEXNAMES_COUNT - 1}, "
                           f"found {len(rows)}")
    return "".join(f"{n:02d}\t{name}\t{POS_NUMBER[name.split('.')[0]]}\n" for n, name in rows)


def install(dest: Path, debs: list[Path] | None = None) -> Path:
    target = dest / "corpora" / "wordnet"
    if is_installed(target):
        return target
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="macl-wordnet-") as tmp:
        for deb in debs or fetch_debs(Path(tmp)):
            files.update(deb_members(deb))
    db = {Path(p).name: data for p, data in files.items() if p.startswith("usr/share/wordnet/")}
    missing = [f for f in DB_FILES if f not in db]
    if missing:
        raise RuntimeError(f"the packages lack the WordNet files {missing}")
    man = next((d for p, d in files.items() if p.endswith("lexnames.5WN.gz")), None)
    if man is None:
        raise RuntimeError("the packages lack the lexnames.5WN man page")
    staging = target.with_name(f".wordnet-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in DB_FILES:
        (staging / name).write_bytes(db[name])
    (staging / "lexnames").write_text(lexnames_from_manpage(gzip.decompress(man).decode()))
    (staging / STAMP).write_text("\n".join(PACKAGES) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=default_dest(),
                        help="NLTK data directory (default: %(default)s)")
    parser.add_argument("--deb", type=Path, nargs="+",
                        help=f"use these .deb files ({', '.join(PACKAGES)}) instead of apt")
    args = parser.parse_args(argv)
    target = args.dest / "corpora" / "wordnet"
    if is_installed(target):
        return 0
    try:
        install(args.dest, args.deb)
    except (RuntimeError, OSError, tarfile.TarError) as exc:
        print(f"[wordnet] not installed ({exc}); the 'synonym' text view will use its "
              "fallback", file=sys.stderr)
        return 0
    print(f"[wordnet] WordNet 3.0 installed in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
