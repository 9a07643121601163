"""Round 48 CLI/store hunt: stores that are not depthlab's (another program's, a newer
version's), two writers, unicode names, partly failing sweeps, progress without a terminal."""

from __future__ import annotations

import contextlib
import sqlite3
import sys

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


RAW = {"name": "t", "data": {"name": "clusters", "n": 60},
       "model": {"sizes": ["auto", 4, "auto"]},
       "train": {"epochs": 1, "batch_size": 20},
       "sweep": {"train.lr": [0.01, 0.1]}}


class _SpyBar:
    """A stand-in for the sweep's tqdm bar that records which lines were written while it
    was cleared (``external_write_mode``)."""

    cleared = False
    lines_cleared: list[tuple[str, bool]] = []

    def __init__(self, *args, **kwargs) -> None:
        pass

    @classmethod
    @contextlib.contextmanager
    def external_write_mode(cls, file=None):
        cls.cleared = True
        try:
            yield
        finally:
            cls.cleared = False

    def set_postfix_str(self, *args, **kwargs) -> None:
        pass

    def update(self, n=1) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_sweeps_own_lines_are_written_above_its_bar(tmp_path, monkeypatch):
    import depthlab.progress
    from depthlab.experiments import run_sweep

    monkeypatch.setattr(depthlab.progress, "tqdm_bar", lambda *a, **k: _SpyBar())
    said: list[tuple[str, bool]] = []
    run_sweep(RAW, tmp_path / "o", echo=lambda line: said.append((line, _SpyBar.cleared)),
              progress=True)
    running = [cleared for line, cleared in said if ": running on " in line]
    # was written over the bar: "0/2 [00:00<?, ?pt/s]sweep ...: running on this process"
    assert running == [True]
    assert all(cleared for line, cleared in said if line.startswith("["))


@pytest.mark.parametrize(("term", "bar"), [("dumb", False), ("DUMB", False),
                                           ("xterm-256color", True), ("", True)])
def test_progress_on_a_dumb_terminal_is_lines_not_a_bar(monkeypatch, term, bar):
    import argparse

    from depthlab.cli import common

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.setenv("TERM", term)
    args = argparse.Namespace(quiet=False)
    # TERM=dumb drew a bar whose every redraw stayed on the screen (Emacs' shell)
    assert common.progress_enabled(args) is bar
    assert common.progress_mode(args) == ("bar" if bar else "lines")
