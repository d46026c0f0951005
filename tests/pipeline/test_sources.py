import hashlib

import pytest

from pipeline.sources import ImageResolver, text_source
from schemas.fs import Workspace


@pytest.fixture
def layout(tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    (tmp_path / "ws" / "images").mkdir(parents=True)
    (tmp_path / "ws" / "images" / "a.jpg").write_bytes(b"jpegbytes")
    (tmp_path / "ws" / "images" / "empty.jpg").write_bytes(b"")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "b.jpg").write_bytes(b"other")
    (tmp_path / "secret.txt").write_text("secret")
    return ws, tmp_path


def test_relative_path_inside_workspace(layout):
    ws, _ = layout
    src = ImageResolver(ws).read("images/a.jpg")
    assert src.ok and src.data == b"jpegbytes"
    assert src.sha256 == hashlib.sha256(b"jpegbytes").hexdigest()


@pytest.mark.parametrize("uri,status,needle", [
    (None, "missing", "no image_uri"),
    ("", "missing", "no image_uri"),
    ("images/nope.jpg", "missing", "not found"),
    ("images/empty.jpg", "error", "0 bytes"),
    ("../secret.txt", "error", "escapes the workspace"),
    ("images/../../secret.txt", "error", "escapes the workspace"),
    ("/etc/passwd", "error", "outside the workspace"),
    ("https://example.com/a.jpg", "error", "URL"),
    ("images", "error", "not a file"),
])
def test_refusals_carry_reasons(layout, uri, status, needle):
    ws, _ = layout
    src = ImageResolver(ws).read(uri)
    assert src.status == status and needle in src.reason and src.data is None


def test_allowed_roots_admit_absolute_paths(layout):
    ws, tmp = layout
    path = str(tmp / "outside" / "b.jpg")
    assert ImageResolver(ws).read(path).status == "error"
    assert ImageResolver(ws, [str(tmp / "outside")]).read(path).data == b"other"


def test_symlink_escape_is_refused(layout):
    ws, tmp = layout
    (tmp / "ws" / "images" / "link.jpg").symlink_to(tmp / "secret.txt")
    assert "escapes" in ImageResolver(ws).read("images/link.jpg").reason


def test_text_source():
    assert text_source(None).status == "missing"
    assert text_source("   ").reason == "empty text"
    ok = text_source("red shirt")
    assert ok.ok and ok.sha256 == hashlib.sha256("red shirt".encode()).hexdigest()
