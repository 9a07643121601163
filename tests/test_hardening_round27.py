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
