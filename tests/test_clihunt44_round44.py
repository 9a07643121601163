"""Round 44 (clihunt44): the CLI, the store, runs and sweeps, as a hostile but realistic user."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from tests.helpers.cli import assert_one_line_error, one_blas_thread, run_cli

_TINY = ('[data]\nname = "spirals"\nn = 40\n[model]\nsizes = ["auto", 4, "auto"]\n'
         '[train]\nepochs = 1\n')


def _data_files(tmp_path):
    """A .csv, an empty .csv, a .npz, a .npy and a .csv.gz of the same small data set."""
    import gzip

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 3)), rng.integers(0, 2, 20)
    rows = "\n".join(",".join(map(str, [*r, c])) for r, c in zip(x, y))
    files = {"data.csv": "a,b,c,label\n" + rows + "\n", "empty.csv": ""}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    np.save(tmp_path / "data.npy", np.c_[x, y])
    (tmp_path / "data.csv.gz").write_bytes(gzip.compress(files["data.csv"].encode()))
    return ["data.csv", "empty.csv", "data.npz", "data.npy", "data.csv.gz"]


@pytest.mark.parametrize("command", ["run", "sweep", "doctor"])
def test_a_data_file_given_as_the_config_is_named_as_data(command, tmp_path, capsys,
                                                          monkeypatch):
    # `depthlab run my.npz` said "not a UTF-8 text file: byte 0xd6 ... (re-save the file as
    # UTF-8)", `run my.csv` a TOML syntax error at line 1, `run empty.csv` "missing [data]
    # section": none said that the file is data, which a config's [data] path names
    one_blas_thread(monkeypatch)
    monkeypatch.chdir(tmp_path)
    for name in _data_files(tmp_path):
        code, _, err = run_cli(capsys, command, name, "--out", "r", "-q")
        line = assert_one_line_error(code, err, repr(name), "not a config",
                                     f'path = "{name}"', ".toml")
        assert "UTF-8" not in line and "TOML syntax error" not in line, line
    assert not (tmp_path / "r").exists()  # nothing written


def test_a_python_file_given_as_the_config_points_to_doctor_torch(tmp_path, capsys,
                                                                   monkeypatch):
    # `depthlab doctor model.py` was "TOML syntax error: Expected '=' after a key ... (read
    # as TOML ...)": a PyTorch model is diagnosed with --torch FILE.py:FUNCTION
    one_blas_thread(monkeypatch)
    (tmp_path / "model.py").write_text("import torch\n\ndef make():\n    return None\n")
    monkeypatch.chdir(tmp_path)
    for command in ("doctor", "run"):
        code, _, err = run_cli(capsys, command, "model.py", "--out", "r")
        assert_one_line_error(code, err, "'model.py' is a Python file, not a config",
                              "--torch model.py:FUNCTION")


def test_toml_and_json_configs_and_other_text_names_still_read(tmp_path):
    # the data-file check reads names and first bytes only: a config named run.txt or with no
    # suffix is still TOML; a .toml file that holds binary is still a UTF-8 error
    from depthlab.experiments.config import ConfigError, read_toml

    for name in ("run.txt", "run", "run.cfg", "run.toml"):
        (tmp_path / name).write_text(_TINY)
        assert read_toml(tmp_path / name)["data"]["name"] == "spirals"
    (tmp_path / "zip.toml").write_bytes(b"PK\x03\x04\xd6\x00")
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        read_toml(tmp_path / "zip.toml")
    (tmp_path / "noname").write_bytes(b"PK\x03\x04\xd6\x00rest")  # a zip without a suffix
    with pytest.raises(ConfigError, match=r"is a zip archive \(\.npz\), not a config"):
        read_toml(tmp_path / "noname")


@pytest.mark.parametrize("given, meant", [("locl:2", "local:2"), ("lokal:4", "local:4"),
                                          ("tcp://loacl:3", "local:3"),
                                          ("locla:8786", "local:N")])
def test_a_misspelt_local_cluster_suggests_local_n(given, meant, tmp_path, capsys,
                                                   monkeypatch):
    # --cluster locl:2 was read as the host 'locl', port 2, and said only "cannot reach the
    # Dask scheduler at tcp://locl:2: Name or service not known (start one with `dask
    # scheduler`, ...)": the near miss of local:N was not named
    pytest.importorskip("distributed")
    from depthlab.cli import main

    def unknown(address, timeout=None):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", unknown)
    cfg = tmp_path / "s.toml"
    cfg.write_text(_TINY + '[sweep]\n"train.lr" = [0.1, 0.2]\n')
    code = main(["sweep", str(cfg), "--out", str(tmp_path / "r"), "--cluster", given])
    err = capsys.readouterr().err
    assert_one_line_error(code, err, "Name or service not known", f"(did you mean {meant}?)")
    assert not (tmp_path / "r").exists()


def test_an_unknown_host_far_from_local_keeps_the_scheduler_hint(monkeypatch):
    pytest.importorskip("distributed")
    from depthlab.experiments.executors.dask import ClusterError, _local_meant, _probe

    def unknown(address, timeout=None):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", unknown)
    with pytest.raises(ClusterError, match="start one with `dask scheduler`") as info:
        _probe("tcp://headnode:8786", 1.0)
    assert "did you mean" not in str(info.value)
    assert _local_meant("local", "2") is None  # (local:2 never reaches a name lookup)
    assert _local_meant("cluster7", "2") is None

    def refused(address, timeout=None):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", refused)
    with pytest.raises(ClusterError, match="Connection refused.*start one with") as info:
        _probe("tcp://locl:2", 1.0)  # the name resolved: no spelling hint
    assert "did you mean" not in str(info.value)


def test_a_scheduler_lost_while_the_sweep_connects_is_said_without_dask_internals(
        tmp_path, capsys, monkeypatch):
    # a scheduler killed while `sweep --cluster tcp://...` checked its workers said "cannot
    # reach the Dask scheduler at tcp://127.0.0.1:8799: in <TCP (closed)
    # ConnectionPool.broadcast local=tcp://127.0.0.1:35036 remote=tcp://127.0.0.1:8799>:
    # Stream is closed": Dask's comm internals in the user's one line
    distributed = pytest.importorskip("distributed")
    from distributed.comm.core import CommClosedError

    from depthlab.cli import main
    from depthlab.experiments.executors import dask as dask_executor

    def closed(*args, **kwargs):
        raise CommClosedError("in <TCP (closed) ConnectionPool.broadcast local=tcp://127.0.0"
                              ".1:35036 remote=tcp://127.0.0.1:8799>: Stream is closed")

    monkeypatch.setattr(dask_executor, "_probe", lambda address, timeout: None)
    monkeypatch.setattr(dask_executor, "_handshake", lambda address, timeout: {})
    monkeypatch.setattr(distributed, "Client", closed)
    cfg = tmp_path / "s.toml"
    cfg.write_text(_TINY + '[sweep]\n"train.lr" = [0.1, 0.2]\n')
    code = main(["sweep", str(cfg), "--out", str(tmp_path / "r"), "--cluster",
                 "tcp://127.0.0.1:8799", "-q"])
    err = capsys.readouterr().err
    line = assert_one_line_error(code, err, "tcp://127.0.0.1:8799: the scheduler closed the "
                                 "connection (Stream is closed)")
    assert "ConnectionPool" not in line and "<TCP" not in line, line
    assert dask_executor._comm_reason(OSError("Timed out trying to connect")) == \
        "Timed out trying to connect"


def test_a_store_on_a_virtual_file_system_is_not_called_a_full_disk(tmp_path, capsys,
                                                                      monkeypatch):
    # `depthlab run c.toml --out /proc` said "cannot open results store '/proc/depthlab.db': no
    # space left on device (0 bytes free)": /proc (or /sys) holds 0 bytes in all, no disk
    import os

    if not os.path.isdir("/proc") or __import__("shutil").disk_usage("/proc").total != 0:
        pytest.skip("no /proc of 0 bytes here")
    one_blas_thread(monkeypatch)
    cfg = tmp_path / "c.toml"
    cfg.write_text(_TINY)
    code, _, err = run_cli(capsys, "run", cfg, "--out", "/proc", "-q")
    line = assert_one_line_error(code, err, "'/proc' is on a virtual file system")
    assert "no space left" not in line, line
