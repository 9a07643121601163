"""Round 27 hardening: bad input, atomic writes, memory refusals and interrupts across the CLI."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from depthlab.atomic import atomic_write_all, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
posix_only = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")


def _open_reader(fifo: Path) -> int:
    return os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # lets a writer open it at once


@posix_only
def test_an_atomic_write_into_a_fifo_writes_through_it_and_keeps_it(tmp_path):
    # renaming the temporary onto an existing device or FIFO replaced it by a plain file: as
    # root, `depthlab predict ... --to /dev/null --force` turned /dev/null into a file
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    rfd = _open_reader(fifo)
    try:
        atomic_write_text(fifo, "a,b\n1,2\n")
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
        assert os.read(rfd, 100) == b"a,b\n1,2\n"
        atomic_write_all([(fifo, lambda fh: fh.write(b"x\n")), (tmp_path / "t.csv",
                                                             lambda fh: fh.write(b"y\n"))])
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
        assert os.read(rfd, 100) == b"x\n"
        assert (tmp_path / "t.csv").read_bytes() == b"y\n"
    finally:
        os.close(rfd)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe", "t.csv"]


def test_an_atomic_write_through_a_symlink_keeps_the_link(tmp_path):
    target = tmp_path / "real.csv"
    target.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    atomic_write_text(link, "new\n")
    assert link.is_symlink() and target.read_text() == "new\n"


@posix_only
def test_predict_to_a_fifo_with_force_keeps_the_fifo(tmp_path):
    import depthlab as dl

    net = dl.mlp([4, 3, 2], seed=0)
    model = tmp_path / "net.npz"
    dl.save(net, model)
    np.save(tmp_path / "x.npy", np.ones((3, 4)))
    fifo = tmp_path / "out.csv"
    os.mkfifo(fifo)
    rfd = _open_reader(fifo)
    try:
        proc = subprocess.run([sys.executable, "-m", "depthlab", "predict", str(model),
                               str(tmp_path / "x.npy"), "--to", str(fifo), "--force"],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
        assert os.read(rfd, 10000).decode().startswith("class,output_0,output_1\n")
    finally:
        os.close(rfd)


def test_the_memory_groups_of_a_whole_grid_walk_only_the_memory_keys(monkeypatch):
    # `sweep --jobs 2 --yes` of a 729,000,000-point grid walked every point in Python to group
    # them by memory before its first point (~25 min here, silent); the whole grid's groups
    # are the memory keys' product, each holding the product of the free keys' sizes
    import itertools

    from depthlab.experiments import grid as grid_mod

    walked = [0]
    real_product = itertools.product

    class _Counting:
        def __getattr__(self, name):
            return getattr(itertools, name)

        @staticmethod
        def product(*its):
            for combo in real_product(*its):
                walked[0] += 1
                yield combo

    monkeypatch.setattr(grid_mod, "itertools", _Counting())
    raw = {"name": "g", "data": {"name": "spirals", "n": 64},
           "model": {"sizes": ["auto", "auto"], "depth": 1, "width": 4},
           "train": {"epochs": 1}}
    grid = {"model.width": [4, 8], "train.seed": list(range(300)),
            "train.lr": [0.1 * (i + 1) for i in range(100)], "data.seed": list(range(10))}
    raw["sweep"] = grid
    groups = grid_mod.memory_groups(raw, grid)
    assert [(cfg["model"]["width"], n) for cfg, n in groups] == [(4, 300_000), (8, 300_000)]
    assert walked[0] < 100  # not the 600,000 points
    # a --limit still counts the first N points of each group
    groups = grid_mod.memory_groups(raw, grid, limit=300_001)
    assert [(cfg["model"]["width"], n) for cfg, n in groups] == [(4, 300_000), (8, 1)]


def test_a_failed_export_leaves_no_new_empty_folder(tmp_path, monkeypatch):
    # an export that failed (a full disk, a Ctrl-C) left the folders it had created, empty
    from depthlab.experiments import store as store_mod
    from depthlab.experiments.store import Store

    st = Store(tmp_path / "res")

    def boom(self, out, fmt):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_mod.Store, "_export", boom)
    (tmp_path / "kept").mkdir()
    with pytest.raises(OSError):
        st.export(tmp_path / "kept" / "a" / "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "res"]
    assert list((tmp_path / "kept").iterdir()) == []
