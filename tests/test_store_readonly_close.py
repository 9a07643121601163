"""A read-only store leaves nothing beside ``depthlab.db`` when it closes (``depthlab report``
left empty ``-wal``/``-shm`` files) and still refuses every write."""

from __future__ import annotations

import sqlite3

import pytest

from depthlab.experiments.store import Store
from tests.helpers.cli import run_cli

CONFIG = """\
[data]
name = "digits"
n = 200
[model]
sizes = ["auto", 8, "auto"]
[train]
loss = "cross_entropy"
max_steps = 5
"""


def test_report_and_readers_leave_only_the_database(tmp_path, capsys):
    cfg = tmp_path / "r.toml"
    cfg.write_text(CONFIG)
    out = tmp_path / "runs"
    assert run_cli(capsys, "run", cfg, "--out", out)[0] == 0
    assert run_cli(capsys, "report", out)[0] == 0
    assert run_cli(capsys, "runs", out)[0] == 0
    left = sorted(p.name for p in out.iterdir() if p.name.startswith("depthlab.db"))
    assert left == ["depthlab.db"]
    with Store(out, readonly=True) as store:
        assert len(store.statuses()) == 1
        with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
            store._conn.execute("DELETE FROM runs")
    with Store(out, readonly=True) as store:
        assert len(store.statuses()) == 1
