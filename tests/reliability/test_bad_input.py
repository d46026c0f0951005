"""Bad input, one test per item of issue 7's list, end to end where the item reaches that far.

Each bad input ends as a clear error naming the file, the column and the row (ingest, readers,
CLI exit code 2), or as a feature row with status ``missing``/``error`` and a reason that the
audit then reports (the item is listed as lacking coverage, the reason is counted); never a
crash or a silent drop.

One module fixture does the expensive part once: a ``table`` source with the problem images and
texts is ingested (``macl ingest table``), rows that no ingest adapter would produce but another
tool might write into ``catalog/items.parquet`` are appended, features are extracted with the
packaged encoders, and the store is audited.
"""
from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.cli import main as macl
from pipeline.audit import audit_store
from pipeline.features import FeaturesConfig, compute_part, plan_run
from schemas.errors import ContractError
from schemas.fs import Workspace
from schemas.io import ITEMS_PATH, read_items, write_items
from schemas.store import read_view_rows
from schemas.tables import SCHEMA_VERSION, read_info
from tests.pipeline.ingest_helpers import write_csv
from tests.pipeline.tiny_catalog import draw_image

CONFIG = {"shard_size": 16, "loader_workers": 1, "prefetch_batches": 1,
          "image": {"batch_size": 4, "device": "cpu", "views": {"orig": {}}},
          "text": {"batch_size": 4, "device": "cpu", "max_length": 32, "views": {"orig": {}}}}
MEGABYTE_TEXT = "soft cotton jersey " * 55_189  # 1,048,591 characters
#: what the ingested source holds: sku -> (picture, name, blurb)
SOURCE_ROWS = {
    "good": ("pics/good.jpg", "Red mug", "A ceramic mug"),
    "truncated": ("pics/truncated.jpg", "Blue tee", ""),
    "zero": ("pics/zero.jpg", "Green cap", ""),
    "notimage": ("pics/notimage.jpg", "Grey sock", ""),
    "bomb": ("pics/bomb.png", "Black boot", ""),
    "notext": ("pics/good.jpg", "", ""),
    "megatext": ("pics/good.jpg", "Long page", MEGABYTE_TEXT),
    "nofile": ("pics/nofile.jpg", "Lost photo", ""),
}
#: rows another tool might write straight into catalog/items.parquet: item_id -> image_uri
CATALOG_ROWS = {
    "cat-missing": "images/nope.jpg",
    "cat-traversal": "../../etc/passwd",
    "cat-outside": "/etc/hostname",
    "cat-allowed": None,  # an absolute path under an allowed root (filled in by the fixture)
    "cat-url": "https://example.com/x.jpg",
    "cat-file-uri": "file:///etc/hostname",
    "cat-blank": "images/good-copy.jpg",  # text "   "
}


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG that claims width x height pixels in a few dozen bytes (a decompression
    bomb's shape: decoding it would allocate width*height pixels)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def make_source(root: Path) -> Path:
    pics = root / "pics"
    pics.mkdir(parents=True)
    draw_image(pics / "good.jpg", 1)
    good = (pics / "good.jpg").read_bytes()
    (pics / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (pics / "zero.jpg").write_bytes(b"")
    (pics / "notimage.jpg").write_text("this is a text file with a .jpg name\n")
    (pics / "bomb.png").write_bytes(png_header_only(8000, 8000))  # 64M pixels > 40M allowed
    write_csv(root / "items.csv", ["sku", "name", "blurb", "picture"],
              [[sku, *row[1:], row[0]] for sku, row in SOURCE_ROWS.items()])
    write_csv(root / "events.csv", ["visit", "sku"],
              [[f"v{i // 2}", sku] for i, sku in enumerate(SOURCE_ROWS)])
    return root


def ingest_args(source: Path, ws: Path, items: str = "items.csv",
                events: str = "events.csv") -> list[str]:
    return ["ingest", "table", "--source", str(source), "--workspace", str(ws),
            "--events", events, "--items", items, "--no-progress",
            "--events-map", "session_id=visit,item_id=sku",
            "--items-map", "item_id=sku,image=picture", "--text-columns", "name,blurb"]


def bad_source(tmp_path: Path, items: list[list[str]], events: list[list[str]],
               header: tuple[str, ...] = ("visit", "sku"),
               item_header: tuple[str, ...] = ("sku", "name", "blurb", "picture")) -> Path:
    """The fixture source plus ``i.csv`` / ``e.csv`` holding one bad input each."""
    source = make_source(tmp_path / "src")
    write_csv(source / "i.csv", list(item_header), items)
    write_csv(source / "e.csv", list(header), events)
    return source


class Extracted:
    """The module's workspace after ingest -> features -> audit."""

    def __init__(self, root: Path) -> None:
        self.source = make_source(root / "source")
        self.allowed = root / "allowed"
        self.allowed.mkdir()
        draw_image(self.allowed / "ok.jpg", 2)
        self.ws = Workspace.open(root / "ws")
        assert macl(ingest_args(self.source, root / "ws")) == 0
        items = read_items(self.ws)
        shutil.copy(self.source / "pics" / "good.jpg", root / "ws" / "images-good-copy.jpg")
        (root / "ws" / "images").mkdir(exist_ok=True)
        shutil.move(root / "ws" / "images-good-copy.jpg", root / "ws" / "images" / "good-copy.jpg")
        uris = {**CATALOG_ROWS, "cat-allowed": str(self.allowed / "ok.jpg")}
        n = items.num_rows
        extra = pa.table({
            "item_id": list(uris), "item_idx": pa.array(range(n + 1, n + 1 + len(uris)),
                                                        pa.int64()),
            "text": ["   " if i == "cat-blank" else f"catalog row {i}" for i in uris],
            "image_uri": list(uris.values())})
        write_items(self.ws, pa.concat_tables([items, extra], promote_options="default"),
                    info=read_info(items.schema))
        self.config = FeaturesConfig.from_dict(CONFIG)
        plan = plan_run(self.ws, self.config, allow_roots=[str(self.allowed)])
        for part in plan.parts:
            compute_part(self.ws, self.config, part, [str(self.allowed)])
        self.rows = {m: {r["item_id"]: r for r in read_view_rows(self.ws, m, "orig").to_pylist()}
                     for m in ("image", "text")}
        self.report = audit_store(self.ws, expected=self.config.expected_views(),
                                  allowed_roots=[str(self.allowed)], min_coverage=1.0)

    def row(self, modality: str, item_id: str) -> tuple[str, str | None]:
        r = self.rows[modality][item_id]
        assert (r["embedding"] is None) == (r["status"] != "ok")
        return r["status"], r["reason"]

    def audited(self, modality: str, item_id: str, reason: str) -> None:
        """The audit lists the item as lacking an ok row and counts its reason."""
        [cov] = [c for c in self.report.coverage if c["modality"] == modality]
        assert item_id in cov["lacking_items"]
        examples = [r["example"] for r in self.report.reasons if r["modality"] == modality]
        assert reason in examples or any(r["reason"] in reason for r in self.report.reasons
                                         if r["modality"] == modality)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> Extracted:
    return Extracted(tmp_path_factory.mktemp("bad_input"))


def test_the_audit_fails_only_coverage_and_counts_every_row(extracted):
    report = extracted.report
    assert report.failed_gates == ["coverage"]  # bad inputs are reasoned rows, not broken rows
    n = len(SOURCE_ROWS) + len(CATALOG_ROWS)  # nothing dropped: 'nofile' stays, without image
    assert report.items == n and report.rows == 2 * n
    good = {"good", "notext", "megatext", "cat-allowed", "cat-blank"}
    assert {i for i, r in extracted.rows["image"].items() if r["status"] == "ok"} == good


def test_truncated_jpeg(extracted):
    status, reason = extracted.row("image", "truncated")
    assert status == "error" and reason.startswith(("truncated or corrupt image", "cannot open"))
    extracted.audited("image", "truncated", reason)


def test_zero_byte_file(extracted):
    status, reason = extracted.row("image", "zero")
    assert status == "error" and reason.startswith("empty image file (0 bytes)")
    extracted.audited("image", "zero", reason)


def test_non_image_file_with_a_jpg_name(extracted):
    assert extracted.row("image", "notimage") == (
        "error", "not an image file (format not recognised)")
    extracted.audited("image", "notimage", "not an image file (format not recognised)")


def test_decompression_bomb_sized_image(extracted):
    status, reason = extracted.row("image", "bomb")
    assert status == "error"
    assert reason == ("image too large to decode safely: 8000x8000 pixels > 40000000 "
                      "(possible decompression bomb)")
    extracted.audited("image", "bomb", reason)


def test_missing_file(extracted):
    # the ingest keeps the item without an image and says so; a catalog naming a lost file
    # gives a 'missing' row naming it
    catalog = {r["item_id"]: r for r in read_items(extracted.ws).to_pylist()}
    assert catalog["nofile"]["image_uri"] is None
    assert extracted.row("image", "nofile") == ("missing", "no image_uri in the catalog")
    assert extracted.row("image", "cat-missing") == (
        "missing", "image file not found: images/nope.jpg")
    extracted.audited("image", "cat-missing", "image file not found: images/nope.jpg")


def test_path_traversal_in_image_uri(extracted, tmp_path, capsys):
    assert extracted.row("image", "cat-traversal") == (
        "error", "image_uri '../../etc/passwd' escapes the workspace")
    extracted.audited("image", "cat-traversal", "image_uri '../../etc/passwd' escapes the "
                                                "workspace")
    source = bad_source(tmp_path, [["good", "x", "", "pics/good.jpg"],
                                   ["bad", "y", "", "../../etc/passwd"]],
                        [["v", "good"], ["v", "bad"]])
    assert macl(ingest_args(source, tmp_path / "ws", "i.csv", "e.csv")) == 2
    err = capsys.readouterr().err
    assert "i.csv: column 'picture': image paths must be files under" in err
    assert "row 1 ('../../etc/passwd')" in err


def test_absolute_paths_outside_the_workspace_unless_allowed(extracted):
    assert extracted.row("image", "cat-outside") == (
        "error", "image_uri '/etc/hostname' is an absolute path outside the workspace and "
                 "allowed roots")
    assert extracted.row("image", "cat-file-uri") == (
        "error", "image_uri '/etc/hostname' is an absolute path outside the workspace and "
                 "allowed roots")
    assert extracted.row("image", "cat-allowed")[0] == "ok"  # under --allow-root
    extracted.audited("image", "cat-outside", "image_uri '/etc/hostname' is an absolute path "
                                              "outside the workspace and allowed roots")


def test_url_where_a_path_is_expected(extracted, tmp_path, capsys):
    assert extracted.row("image", "cat-url") == (
        "error", "image_uri is a URL (https://), expected a path: download images first")
    extracted.audited("image", "cat-url", "image_uri is a URL (https://), expected a path: "
                                          "download images first")
    source = bad_source(tmp_path, [["good", "x", "", "https://example.com/a.jpg"]],
                        [["v", "good"]])
    assert macl(ingest_args(source, tmp_path / "ws", "i.csv", "e.csv")) == 2
    err = capsys.readouterr().err
    assert "i.csv: column 'picture'" in err and "URLs are never fetched" in err
    assert "row 0 ('https://example.com/a.jpg')" in err


def test_non_utf8_text(tmp_path, capsys):
    source = make_source(tmp_path / "src")
    with open(source / "latin1.csv", "wb") as f:
        f.write(b"sku,name,blurb,picture\ngood,Caf\xe9 cr\xe8me,,pics/good.jpg\n")
    assert macl(ingest_args(source, tmp_path / "ws", "latin1.csv")) == 2
    err = capsys.readouterr().err
    assert ("latin1.csv: column 'name': text is not valid UTF-8 (re-encode the file as UTF-8); "
            "1 row(s), first: row 0") in err
    # a catalog written by another tool: Parquet does not enforce UTF-8, the reader does
    ws = Workspace.open(tmp_path / "ws2")
    raw = [b"caf\xe9", b"fine"]
    data = b"".join(raw)
    offsets = pa.array([0, len(raw[0]), len(data)], pa.int32())
    text = pa.Array.from_buffers(pa.string(), 2, [None, offsets.buffers()[1], pa.py_buffer(data)])
    (tmp_path / "ws2" / "catalog").mkdir(parents=True)
    pq.write_table(pa.table({"item_id": ["a", "b"], "item_idx": pa.array([1, 2], pa.int64()),
                             "text": text}), ws.path(*ITEMS_PATH))
    with pytest.raises(ContractError) as err:
        read_items(ws)
    assert err.value.column == "text" and err.value.rows == [0]
    assert "items.parquet: column 'text': text is not valid UTF-8" in str(err.value)


def test_empty_text(extracted):
    assert extracted.row("text", "notext") == ("missing", "no text in the catalog")
    assert extracted.row("text", "cat-blank") == ("missing", "empty text")
    extracted.audited("text", "notext", "no text in the catalog")
    extracted.audited("text", "cat-blank", "empty text")


def test_a_one_megabyte_text(extracted):
    """Encoded (cut to max_chars before augmenting, then to max_length tokens); its hash is of
    the whole text, so the audit finds it current."""
    from schemas.hashing import sha256_text

    items = {r["item_id"]: r for r in read_items(extracted.ws).to_pylist()}
    assert len(items["megatext"]["text"]) > 1_000_000
    row = extracted.rows["text"]["megatext"]
    assert row["status"] == "ok" and row["source_sha256"] == sha256_text(items["megatext"]["text"])
    assert sum(q["stale"] for q in extracted.report.quality) == 0


def test_duplicate_item_id(tmp_path, capsys):
    source = bad_source(tmp_path, [["a", "x", "", ""], ["b", "y", "", ""], ["a", "z", "", ""]],
                        [["v", "a"], ["v", "b"]])
    assert macl(ingest_args(source, tmp_path / "ws", "i.csv", "e.csv")) == 2
    err = capsys.readouterr().err
    assert "i.csv: column 'sku': duplicate item ids; 1 row(s), first: row 2 ('a')" in err
    with pytest.raises(ContractError, match="duplicate item_id") as exc:  # any other writer
        write_items(Workspace.open(tmp_path / "ws2"),
                    pa.table({"item_id": ["a", "a"], "item_idx": [1, 2]}))
    assert exc.value.rows == [1]


def test_events_for_unknown_items(tmp_path, capsys):
    source = bad_source(tmp_path, [["a", "x", "", ""]], [["v", "a"], ["v", "ghost"]])
    assert macl(ingest_args(source, tmp_path / "ws", "i.csv", "e.csv")) == 2
    err = capsys.readouterr().err
    assert "e.csv: column 'sku'" in err and "row 1 ('ghost')" in err


@pytest.mark.parametrize("stamp,unit,needle", [
    ("2024-13-45T10:00:00", None, "unparsable timestamps; 1 row(s), first: row 1 "
                                  "('2024-13-45T10:00:00')"),
    ("-5", "s", "negative values; 1 row(s), first: row 1 (-5.0)"),
])
def test_unparsable_or_negative_timestamps(tmp_path, capsys, stamp, unit, needle):
    first = "2024-01-02T10:00:00" if unit is None else "5"
    source = bad_source(tmp_path, [["a", "x", "", ""]], [["v", "a", first], ["v", "a", stamp]],
                        header=("visit", "sku", "when"))
    args = ingest_args(source, tmp_path / "ws", "i.csv", "e.csv")
    args[args.index("session_id=visit,item_id=sku")] = "session_id=visit,item_id=sku,timestamp=when"
    if unit:
        args += ["--timestamp-unit", unit]
    assert macl(args) == 2
    err = capsys.readouterr().err
    assert "e.csv: column 'when'" in err and needle in err


def test_a_column_of_the_wrong_type(tmp_path, capsys):
    source = bad_source(tmp_path, [["a", "x", "", "", "9.5"], ["b", "y", "", "", "cheap"]],
                        [["v", "a"], ["v", "b"]],
                        item_header=("sku", "name", "blurb", "picture", "cost"))
    args = ingest_args(source, tmp_path / "ws", "i.csv", "e.csv")
    args[args.index("item_id=sku,image=picture")] = "item_id=sku,image=picture,price=cost"
    assert macl(args) == 2
    err = capsys.readouterr().err
    assert "i.csv: column 'cost': values are not numbers; 1 row(s), first: row 1 ('cheap')" in err
    # a catalog file whose key column holds text: every reader names file, column and rows
    ws = Workspace.open(tmp_path / "ws2")
    (tmp_path / "ws2" / "catalog").mkdir(parents=True)
    pq.write_table(pa.table({"item_id": ["a", "b"], "item_idx": ["1", "two"]}),
                   ws.path(*ITEMS_PATH))
    with pytest.raises(ContractError) as exc:
        read_items(ws)
    assert exc.value.column == "item_idx" and exc.value.rows == [1]
    assert "has type string, expected int64" in str(exc.value)


def test_a_schema_version_from_the_future(extracted, tmp_path, capsys):
    """Every command that reads the catalog stops with exit code 2 naming the file."""
    ws = Workspace.open(tmp_path / "ws")
    shutil.copytree(extracted.ws.root, tmp_path / "ws", dirs_exist_ok=True)
    table = pq.read_table(ws.path(*ITEMS_PATH))
    meta = {**table.schema.metadata, b"macl.schema_version": str(SCHEMA_VERSION + 1).encode()}
    pq.write_table(table.replace_schema_metadata(meta), ws.path(*ITEMS_PATH))
    needle = (f"catalog/items.parquet: was written with schema version {SCHEMA_VERSION + 1}, "
              f"newer than this macl")
    for argv in (["audit", "--workspace", ws.root, "--no-config"],
                 ["split", "--workspace", ws.root, "--protocol", "macl"],
                 ["train", "--workspace", ws.root, "--model", "pop"]):
        assert macl(argv) == 2, argv
        assert needle in capsys.readouterr().err, argv
    with pytest.raises(ContractError, match=needle):
        plan_run(ws, extracted.config)
