"""Round 21, the command line and the experiment machinery."""

from __future__ import annotations

import errno

import numpy as np
import pandas as pd

from depthlab.cli import main


def _csv_config(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "label": y}).to_csv(
        tmp_path / "d.csv", index=False)
    config = tmp_path / "p.toml"
    config.write_text('[data]\npath = "d.csv"\n[model]\nsizes = ["auto", 8, "auto"]\n'
                      '[train]\nepochs = 2\n[probes]\nevery = 0\n')
    return config


def test_a_full_disk_while_saving_the_network_says_the_run_is_stored(tmp_path, capsys,
                                                                     monkeypatch):
    # a disk that filled up after the run was stored, while its network was saved, said
    # "cannot write 'r/models/ID.npz': no space left on device (the previous version is kept)":
    # there was no previous version, and nothing said that the run itself was stored (a rerun
    # of the config is refused as "already stored" without --overwrite)
    import depthlab.atomic as atomic

    config = _csv_config(tmp_path)
    out = tmp_path / "r"

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", no_space)
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "previous version" not in err
    assert "no space left on device" in err and "models" in err
    assert "is stored in" in err and "--overwrite" in err
    assert not list((out / "models").glob("*"))  # no temporary left
    monkeypatch.undo()
    assert main(["runs", str(out), "--json"]) == 0
    (row,) = __import__("json").loads(capsys.readouterr().out)
    assert row["id"] in err and row["status"] == "finished"
    # what the message says to do works: the network is saved
    assert main(["run", str(config), "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert (out / "models" / f"{row['id']}.npz").is_file()


def test_atomic_write_error_says_previous_version_kept_only_when_there_was_one(tmp_path):
    import pytest

    from depthlab.atomic import AtomicWriteError, atomic_write

    def full(fh):
        raise OSError(errno.ENOSPC, "No space left on device")

    target = tmp_path / "new.npz"
    with pytest.raises(AtomicWriteError) as info:
        atomic_write(target, full)
    assert str(info.value) == f"cannot write {str(target)!r}: no space left on device"
    assert not target.exists() and not list(tmp_path.iterdir())
