"""Round 32 (clidata32): the CLI, the run store and data loading as a demanding user meets them."""

from __future__ import annotations

import numpy as np
from helpers.cli import TINY, one_blas_thread, run_cli


def _runs(out):
    from depthlab.experiments import Store

    with Store(out, create=False, readonly=True) as store:
        return list(store.runs()["id"])


def test_ctrl_c_while_the_network_is_saved_stores_nothing(tmp_path, capsys, monkeypatch):
    """README: Ctrl-C during `depthlab run` -> status 130, nothing stored. A Ctrl-C while the
    trained network was written (seconds for a large one) left the run stored without its
    network: the same command was then refused as already stored, and `predict` had no
    network for it."""
    one_blas_thread(monkeypatch)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "results"
    real = np.savez

    def ctrl_c(*args, **kwargs):  # the network's file is being written
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", ctrl_c)
    code, _, err = run_cli(capsys, "run", config, "--out", out, "--quiet")
    assert code == 130, err
    assert _runs(out) == []
    assert not (out / "models").exists() or not any((out / "models").iterdir())
    monkeypatch.setattr(np, "savez", real)
    code, _, err = run_cli(capsys, "run", config, "--out", out, "--quiet")  # not "stored"
    assert code == 0, err
    (rid,) = _runs(out)
    assert (out / "models" / f"{rid}.npz").is_file()


def test_ctrl_c_while_the_run_is_stored_leaves_no_network(tmp_path, capsys, monkeypatch):
    """The other side: interrupted while its record is written, a run leaves no network file
    (nor a temporary) beside a store that does not hold it."""
    from depthlab.experiments import Store

    one_blas_thread(monkeypatch)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "results"

    def ctrl_c(self, record, replace=True):
        raise KeyboardInterrupt

    monkeypatch.setattr(Store, "add_run", ctrl_c)
    code, _, err = run_cli(capsys, "run", config, "--out", out, "--quiet")
    assert code == 130, err
    assert not (out / "models").exists() or not any((out / "models").iterdir())
