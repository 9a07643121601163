"""Round 48 CLI/store hunt: stores that are not depthlab's (another program's, a newer
version's), two writers, unicode names, partly failing sweeps, progress without a terminal."""

from __future__ import annotations

import sqlite3

import pytest

from depthlab.experiments.store import STORE_VERSION, Store, StoreError


def _other_programs_db(path, *, version: int = 0, runs_columns: str = "a, b") -> bytes:
    """An SQLite file in rollback-journal mode (SQLite's default) with a ``runs`` table."""
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE runs ({runs_columns})")
    conn.execute("INSERT INTO runs VALUES (1, 2)" if runs_columns == "a, b" else "SELECT 1")
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()
    return path.read_bytes()


def test_a_writable_open_leaves_another_programs_database_untouched(tmp_path):
    db = tmp_path / "depthlab.db"
    before = _other_programs_db(db)
    with pytest.raises(StoreError, match=r"is not a depthlab results store: its table 'runs' "
                                         r"has columns \(a, b\)"):
        Store(tmp_path)
    assert db.read_bytes() == before  # was switched to WAL mode (header bytes 18-19) first
    assert not (tmp_path / "depthlab.db-wal").exists()


def test_a_writable_open_leaves_a_newer_store_untouched(tmp_path):
    db = tmp_path / "depthlab.db"
    before = _other_programs_db(db, version=STORE_VERSION + 5, runs_columns="id TEXT")
    with pytest.raises(StoreError, match=rf"written by a newer depthlab \(store version "
                                         rf"{STORE_VERSION + 5}"):
        Store(tmp_path)
    assert db.read_bytes() == before
