"""Atomic writes (reports, claims, exports, caches): all or nothing, nothing left behind."""

from __future__ import annotations

import pytest

from depthlab.atomic import atomic_write, atomic_write_bytes, atomic_write_text


def test_atomic_write_cleans_up(tmp_path):
    target = tmp_path / "report.html"
    target.write_text("old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # fails while writing the temporary file
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    assert target.stat().st_mode & 0o644 == 0o644


def test_writer_failure_keeps_the_old_file_and_text_creates_folders(tmp_path):
    target = tmp_path / "deep" / "claims.json"
    assert atomic_write_text(target, "[]") == target and target.read_text() == "[]"

    def half(fh):
        fh.write(b"[{")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, half)
    assert target.read_text() == "[]"
    assert [p.name for p in target.parent.iterdir()] == ["claims.json"]


def test_replace_marked_block(tmp_path):
    """The README generators' one block writer: markers and block replaced in place, the rest
    kept; without the markers the file is untouched and the error names it."""
    from depthlab.atomic import replace_marked_block

    path = tmp_path / "README.md"
    path.write_text("intro\n<!-- a -->\nold\n<!-- /a -->\noutro <!-- a -->\n")
    replace_marked_block(path, "<!-- a -->", "<!-- /a -->", "<!-- a -->\nnew\n<!-- /a -->")
    assert path.read_text() == "intro\n<!-- a -->\nnew\n<!-- /a -->\noutro <!-- a -->\n"
    before = path.read_text()
    with pytest.raises(ValueError, match="README.md.*<!-- b -->"):
        replace_marked_block(path, "<!-- b -->", "<!-- /b -->", "x")
    assert path.read_text() == before
