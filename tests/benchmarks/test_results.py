"""RESULTS.md sections: each benchmark script rewrites its own section and nothing else."""
from benchmarks.results import TITLE, header, update_section


def test_sections_are_replaced_in_place_and_others_kept(tmp_path):
    path = tmp_path / "RESULTS.md"
    update_section("accuracy", "## Accuracy\nold", path)
    update_section("speed", "## Speed\nfast", path)
    update_section("accuracy", "## Accuracy\nnew $1 \\1 text", path)  # no regex escapes
    text = path.read_text()
    assert text.startswith(TITLE)
    assert text.count("<!-- section:accuracy -->") == 1 and "old" not in text
    assert "new $1 \\1 text" in text and "## Speed\nfast" in text
    assert text.index("section:accuracy") < text.index("section:speed")


def test_header_names_the_machine_versions_and_commit():
    h = header("benchmarks/x.py", [("config", "abc")])
    for key in ("generated", "machine", "load average", "versions", "git commit", "config"):
        assert f"| {key}" in h
    assert "torch" in h and "CPU cores" in h
