"""Round 42 (clihunt42): the CLI, the store, sweeps and data files under inputs nobody tried."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.cli import assert_one_line_error, run_cli


@pytest.fixture
def net_and_x(tmp_path, monkeypatch):
    """A saved network of 3 inputs and 2 rows of inputs, in the test's working folder."""
    import depthlab as dl

    monkeypatch.chdir(tmp_path)
    dl.save(dl.mlp([3, 2], seed=0), tmp_path / "net.npz")
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
    return "net.npz", "x.npy"


def test_predict_to_a_file_in_a_missing_folder_is_refused_as_init_refuses_it(net_and_x, tmp_path,
                                                                            capsys):
    # `predict --to typo/sub/p.csv` created typo/sub silently (a typo in a folder name left the
    # predictions in a new tree); `init typo/x` refused it: an output FILE's folder must exist,
    # an output FOLDER (--out DIR, export --to DIR) is created
    for target, folder in (("nodir/sub/p.csv", "nodir/sub"), ("nodir/p.csv", "nodir")):
        code, out, err = run_cli(capsys, "predict", *net_and_x, "--to", target)
        assert_one_line_error(code, err, f"--to {target!r}", f"folder {folder!r} does not exist")
        assert out == ""
    code, out, err = run_cli(capsys, "init", "nodir/x")
    assert_one_line_error(code, err, "folder 'nodir' does not exist")
    assert not (tmp_path / "nodir").exists()
    (tmp_path / "notes.txt").write_text("x")  # a file above: named as a file, not "missing"
    code, out, err = run_cli(capsys, "predict", *net_and_x, "--to", "notes.txt/sub/p.csv")
    assert_one_line_error(code, err, "'notes.txt' is a file, not a folder")
    (tmp_path / "sub").mkdir()
    code, out, err = run_cli(capsys, "predict", *net_and_x, "--to", "sub/p.csv")
    assert code == 0 and (tmp_path / "sub" / "p.csv").read_text().startswith("class,output_0")


def test_both_interrupt_exit_timers_are_armed_by_one_rule(monkeypatch):
    # the rule "only the process's own command arms the exit timer" was written twice (the
    # command's signal handling and the sweep's); one helper now holds it
    import depthlab.cli as cli
    import depthlab.cli.common as common

    assert cli._ENTRY is common._ENTRY  # one record of the commands running, read by both
    armed = []
    monkeypatch.setattr(common, "exit_within", lambda s, code: armed.append((s, code)))
    monkeypatch.setattr(common, "_ENTRY", [])
    common.arm_shutdown_timer(130)  # no command running
    common._ENTRY.append(False)  # a main() call in a program
    common.arm_shutdown_timer(130)
    assert armed == []
    common._ENTRY.append(True)  # the process's own command
    common.arm_shutdown_timer(143)
    assert armed == [(common.SHUTDOWN_GRACE_S, 143)]


def test_an_export_stops_on_ctrl_c_during_a_long_table_scan(tmp_path):
    # one SQLite statement (the export's scan of a big table for its column types) ran to its
    # end before Python saw the Ctrl-C: 5-10 s for a 490,000-row histogram table. The signal is
    # sent once the scan has started; the export stops well before the scan could finish
    import os
    import signal
    import sqlite3
    import threading
    import time

    from depthlab.experiments.store import Store

    path = tmp_path / "depthlab.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.executemany("INSERT INTO histograms (run_id, step, layer, kind, bin_left, bin_right, "
                     "count) VALUES ('r', ?, 0, 'a', 0.0, 1.0, 1)",
                     ((i,) for i in range(100_000)))
    conn.commit()
    conn.close()
    store = Store(path, create=False, readonly=True)
    cols = [d[0] for d in store._conn.execute("SELECT * FROM histograms LIMIT 1").description]
    t0 = time.perf_counter()
    store._column_kinds("histograms", cols)  # the export's scan, to its end
    whole_scan = time.perf_counter() - t0
    started = threading.Event()
    store._conn.set_trace_callback(lambda sql: "typeof" in sql and "histograms" in sql
                                   and started.set())
    stopped = []

    def interrupt() -> None:
        started.wait()
        stopped.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)

    sender = threading.Thread(target=interrupt, daemon=True)
    sender.start()
    raised = None
    try:
        store.export(tmp_path / "e")
    except KeyboardInterrupt as e:
        raised = e
    took = time.perf_counter() - stopped[0] if stopped else None
    try:  # a signal that came after the export ended is taken here, not by a later test
        sender.join()
        signal.pthread_sigmask(signal.SIG_BLOCK, [])  # (a call: a pending handler runs here)
    except KeyboardInterrupt:
        pass
    store.close()
    assert raised is not None and took < whole_scan / 2, (raised, took, whole_scan)
    assert not (tmp_path / "e").exists()  # nothing half-written, no empty folder


def test_a_sigterm_whose_exception_a_library_dropped_still_ends_as_sigterm():
    # sqlite3 drops an exception raised in its progress callback (the signal handler's
    # Terminated) and fails the statement as "interrupted", which the store raises as a plain
    # KeyboardInterrupt: the command ended "interrupted", 130, instead of SIGTERM's 143
    import os
    import signal

    from depthlab.cli import _interrupts
    from depthlab.cli.common import Terminated

    raised = None
    try:
        with _interrupts(entry=False):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                signal.pthread_sigmask(signal.SIG_BLOCK, [])  # (a call: the handler runs here)
            except Terminated:
                pass  # dropped, as sqlite3 drops it
            raise KeyboardInterrupt
    except KeyboardInterrupt as e:  # (Terminated is one)
        raised = e
    assert isinstance(raised, Terminated), repr(raised)


def test_predict_of_a_run_id_in_a_missing_results_folder_names_the_folder(net_and_x, capsys):
    # `predict 3e9c x.npy --dir reslts` (a typo, or no ./depthlab-out here) said "'3e9c' is
    # neither a .npz file nor a run with a saved network in 'reslts/models'": the id looked wrong
    for given in (["--dir", "reslts"], []):
        code, out, err = run_cli(capsys, "predict", "3e9c", "x.npy", *given)
        folder = given[1] if given else "depthlab-out"
        assert_one_line_error(code, err, f"--dir {folder!r} does not exist")
    code, out, err = run_cli(capsys, "predict", "gone.npz", "x.npy", "--dir", "reslts")
    assert_one_line_error(code, err, "'gone.npz': no such file")  # a file: named as before


def test_predict_to_a_name_ending_in_a_slash_is_refused_as_a_folder(net_and_x, tmp_path, capsys):
    # `predict --to newdir/` wrote a FILE named newdir ("predictions for 2 rows: newdir/");
    # `init newdir/` refuses such a name as a folder's
    code, out, err = run_cli(capsys, "predict", *net_and_x, "--to", "newdir/")
    assert_one_line_error(code, err, "--to 'newdir/'", "folder", "expected a file")
    assert not (tmp_path / "newdir").exists()


@pytest.mark.parametrize("given, named", [
    ('optimizer_kwargs = {momentum = "a"}', "train.optimizer_kwargs.momentum"),
    ('optimizer = "adam"\noptimizer_kwargs = {betas = [0.9]}', "train.optimizer_kwargs.betas"),
    ('momentum = "a"', "train.momentum")])
def test_a_bad_optimizer_value_is_named_where_the_config_gives_it(given, named, tmp_path,
                                                                   capsys):
    # `optimizer_kwargs = {momentum = "a"}` was refused as "train.momentum = "a" has the wrong
    # type": a key the file does not hold (an unknown key was already named where it is given)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "clusters"\nn = 60\n[model]\nsizes = ["auto", 4, "auto"]\n'
                   f'[train]\nepochs = 1\n{given}\n')
    code, out, err = run_cli(capsys, "run", cfg, "--out", tmp_path / "r", "-q")
    line = assert_one_line_error(code, err, f"{named} = ")
    assert not (tmp_path / "r").exists(), line


def test_an_out_name_ending_in_a_slash_is_a_folder_even_with_a_db_suffix(tmp_path, capsys):
    # `--out runs.db/` made a store FILE runs.db (Path drops the slash); a name ending in a
    # slash is a folder, as `predict --to NAME/` and `init NAME/` read it
    from depthlab.experiments.store import resolve_db_path

    assert resolve_db_path(f"{tmp_path}/runs.db/") == tmp_path / "runs.db" / "depthlab.db"
    assert resolve_db_path(f"{tmp_path}/runs.db") == tmp_path / "runs.db"  # a file: as before
