"""The command line as a new user follows the README, probed for round 5: output paths of
``predict`` (``--to -``, folders, missing folders), ``reproduce --data`` typos, the
``DEPTHLAB_*`` environment settings, the progress bar on a terminal that reports no width,
the README's shell examples (every ``depthlab`` line parses; the saved-network block runs as
written) and Ctrl-C during ``depthlab run``."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.cli import ENV, assert_one_line_error, one_blas_thread, run_cli

ROOT = Path(__file__).resolve().parents[1]

TINY = """\
name = "tiny"
[data]
name = "digits"
[model]
sizes = ["auto", 8, "auto"]
[train]
epochs = 1
batch_size = 64
[probes]
every = 10
"""


@pytest.fixture
def saved_net(tmp_path):
    """A network of digits' shape saved by ``dl.save`` (no training)."""
    import depthlab as dl

    return dl.save(dl.mlp([64, 8, 10], activation="tanh", seed=0), tmp_path / "net.npz")


# --- predict: where the predictions go -------------------------------------------------------


def test_predict_to_dash_is_stdout(tmp_path, saved_net, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "x.npy", np.zeros((3, 64), dtype=np.float32))
    code, out, err = run_cli(capsys, "predict", saved_net, "x.npy", "--to", "-")
    assert code == 0, err
    assert out.splitlines()[0].startswith("class,output_0") and len(out.splitlines()) == 4
    assert not (tmp_path / "-").exists()  # was: the CSV written to a file named "-"


@pytest.mark.parametrize("where", ["folder", "under a file"])
def test_predict_to_unusable_target_is_one_line(tmp_path, saved_net, capsys, where):
    (tmp_path / "notes.txt").write_text("x")
    target = tmp_path if where == "folder" else tmp_path / "notes.txt" / "p.csv"
    # digits: labelled rows, whose accuracy line came before the write error (2 lines)
    code, out, err = run_cli(capsys, "predict", saved_net, "digits", "--to", target)
    line = assert_one_line_error(code, err, str(target) if where == "folder" else "notes.txt")
    assert "is a folder" in line if where == "folder" else True
    assert out == "" and (tmp_path / "notes.txt").read_text() == "x"


# --- reproduce --data ------------------------------------------------------------------------


def test_reproduce_unknown_data_is_one_line_before_any_experiment(tmp_path, capsys):
    out_dir = tmp_path / "rx"
    code, out, err = run_cli(capsys, "reproduce", "xu2016", "--quick", "--data", "digitz",
                             "--out", out_dir)
    assert_one_line_error(code, err, "--data 'digitz'", "digits")  # was: "experiment 1/1" first
    assert not out_dir.exists()


def test_reproduce_empty_data_is_refused(tmp_path, capsys):
    code, _, err = run_cli(capsys, "reproduce", "xu2016", "--quick", "--data", "",
                           "--out", tmp_path / "rx")  # was: ran on the default data set
    assert_one_line_error(code, err, "--data ''", "empty")
    assert not (tmp_path / "rx").exists()


@pytest.mark.parametrize("name", ["ioffe2015", "all"])
def test_reproduce_data_an_experiment_refuses_is_one_line_before_any_runs(tmp_path, capsys,
                                                                          name):
    out_dir = tmp_path / "rp"  # "all" ran three experiments (minutes), then stopped there
    code, _, err = run_cli(capsys, "reproduce", name, "--quick", "--data", "digits",
                           "--out", out_dir)
    assert_one_line_error(code, err, "ioffe2015: data='digits'", "mnist5k")
    assert not out_dir.exists()


def test_reproduce_data_alias_is_accepted_where_its_name_is():
    from depthlab.reproduce.base import load_data

    _, name = load_data("ioffe2015", "MNIST5K", "mnist5k", accepted=("mnist5k",), n=300)
    assert name == "MNIST5K"  # was: refused, as not literally in the accepted names


# --- environment settings --------------------------------------------------------------------


@pytest.mark.parametrize("var, value", [("DEPTHLAB_PROBE_KERNELS", "nmupy"),
                                        ("DEPTHLAB_MEMORY_LIMIT", "8 gigs")])
def test_bad_environment_setting_is_one_line_naming_it(var, value, capsys, monkeypatch):
    monkeypatch.setenv(var, value)
    code, _, err = run_cli(capsys, "datasets")  # was: ignored (status 0)
    assert_one_line_error(code, err, f"{var}={value!r}", "accepted")


def test_memory_limit_typo_is_not_blamed_on_the_config(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "tiny.toml"  # depth and width: the config's check reads the limit
    cfg.write_text(TINY.replace('sizes = ["auto", 8, "auto"]',
                                'sizes = ["auto", "auto"]\ndepth = 2\nwidth = 8'))
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "lots")
    code, _, err = run_cli(capsys, "run", cfg, "--out", tmp_path / "out")
    line = assert_one_line_error(code, err, "DEPTHLAB_MEMORY_LIMIT='lots'")
    assert "tiny.toml" not in line  # was: "depthlab: error: tiny.toml: DEPTHLAB_MEMORY_LIMIT=..."
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["numpy", "NumPy", "numba", ""])
def test_accepted_probe_kernel_settings_pass(value, capsys, monkeypatch):
    monkeypatch.setenv("DEPTHLAB_PROBE_KERNELS", value)
    code, out, err = run_cli(capsys, "datasets", "--json")
    assert code == 0, err
    assert any(d["name"] == "digits" for d in json.loads(out))


# --- progress on a terminal ------------------------------------------------------------------


def test_progress_bar_shows_on_a_terminal_that_reports_no_width(monkeypatch):
    import pty
    import select

    from depthlab.progress import make_progress

    master, slave = pty.openpty()  # a fresh pty reports 0 columns and 0 rows
    try:
        stream = os.fdopen(slave, "w", encoding="utf-8", closefd=False)
        monkeypatch.setattr(sys, "stderr", stream)
        assert os.get_terminal_size(slave).columns == 0
        bar = make_progress(10, "bar")
        for _ in range(10):
            bar.update(1)
        bar.close()
        stream.flush()
        chunks = []
        while select.select([master], [], [], 0.5)[0]:  # everything written, in pieces
            chunks.append(os.read(master, 65536))
        drawn = b"".join(chunks).decode("utf-8", "replace")
    finally:
        os.close(slave)
        os.close(master)
    assert "10/10" in drawn, repr(drawn)  # was: only "\r\n" (a bar of width 0)


# --- the README's shell examples ---------------------------------------------------------------


def _readme_sh_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].split("|")[0].strip()
            if line.startswith("depthlab "):
                lines.append(line)
    return lines


def test_every_readme_depthlab_line_parses():
    from depthlab.cli import build_parser

    commands = _readme_sh_commands()
    assert len(commands) >= 10
    parser = build_parser()
    for line in commands:
        argv = shlex.split(line.replace("<id>", "abc123").replace("$(hostname)", "head"))[1:]
        try:
            parser.parse_args(argv)
        except SystemExit:  # pragma: no cover - the message names the line
            pytest.fail(f"README line does not parse: {line}")


def test_readme_saved_network_block_runs_as_written(tmp_path, capsys, monkeypatch):
    """``init`` → ``run`` → ``predict <id>`` → ``run --json`` → ``report``, as the README
    writes them (the run's own CSV line needs a CSV-trained run and is left out)."""
    one_blas_thread(monkeypatch)
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```sh\n(.*?)```", text, flags=re.S)
                 if "depthlab init myexp" in b)
    np.savetxt(tmp_path / "new_inputs.csv", np.zeros((4, 64)), delimiter=",")
    run_id = None
    for raw in block.splitlines():
        line = raw.split("  #")[0].strip()
        if not line or "train.csv" in line:
            continue
        piped = "| jq" in line
        argv = shlex.split(line.split("|")[0].replace("<id>", run_id or "<id>"))[1:]
        if argv[0] == "init":
            (tmp_path / "myexp.toml").write_text(TINY)  # the starter is kept small here
            continue
        code, out, err = run_cli(capsys, *argv)
        assert code == 0, (line, err)
        if piped:
            assert "metrics" in json.loads(out)  # stdout holds the JSON only
        if argv[0] == "run" and run_id is None:
            run_id = re.search(r"models/([0-9a-f]+)\.npz", out).group(1)
        if argv[0] == "predict":
            assert len(out.splitlines()) == 5
    assert (tmp_path / "results" / "report.html").is_file()


# --- Ctrl-C during a run ---------------------------------------------------------------------


@pytest.mark.parametrize("sig, code, message", [
    (signal.SIGINT, 130, "depthlab: interrupted"),
    (signal.SIGTERM, 143, "depthlab: terminated (SIGTERM)")])  # was: killed by the signal
def test_ctrl_c_during_run_exits_130_and_stores_nothing_half_done(tmp_path, sig, code,
                                                                   message, capsys):
    cfg = tmp_path / "long.toml"
    cfg.write_text(TINY.replace("epochs = 1", "epochs = 100000"))
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "depthlab", "run", cfg, "--out", out],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV,
                         cwd=ROOT)
    lines: list[str] = []
    trained = threading.Event()

    def read() -> None:  # the progress lines: signal once training has taken steps
        for line in p.stderr:
            lines.append(line)
            if re.match(r"step [1-9]", line):
                trained.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert trained.wait(90), "".join(lines)
    p.send_signal(sig)
    t0 = time.monotonic()
    p.wait(timeout=30)
    reader.join(10)
    err = "".join(lines)
    assert p.returncode == code, err
    assert time.monotonic() - t0 < 10
    assert err.strip().splitlines()[-1] == message and "Traceback" not in err
    assert "not stored" not in err
    # the store as the next command finds it (in this process: the listing is no process
    # behaviour; the interrupted run above is a real process)
    # a run with whole epochs is kept as "interrupted" (clihunt51), never as finished
    listed, stdout, stderr = run_cli(capsys, "runs", out, "--json")
    assert listed == 0 and all(r["status"] == "interrupted" for r in json.loads(stdout)), stderr
    assert not list((out / "models").glob("*.npz")) if (out / "models").exists() else True


# --- the playground's URL in a pipe ----------------------------------------------------------


def test_playground_url_reaches_a_pipe_while_it_serves():
    """``--port 0`` picks a free port that only the printed URL tells: into a pipe (no
    ``PYTHONUNBUFFERED``) it must arrive while the server runs, not when it stops."""
    import selectors

    pytest.importorskip("uvicorn")
    env = {k: v for k, v in ENV.items() if k != "PYTHONUNBUFFERED"}
    p = subprocess.Popen([sys.executable, "-m", "depthlab", "playground", "--no-browser",
                          "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env, cwd=ROOT)
    try:
        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout=60)
        line = p.stdout.readline() if ready else ""
        assert re.search(r"http://127\.0\.0\.1:\d+/", line), line  # was: nothing until exit
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(timeout=30)
    assert p.returncode == 130


# --- Ctrl-C under a progress bar -------------------------------------------------------------


@pytest.mark.parametrize("when", ["on_train_begin", "after_update"])
def test_interrupted_training_ends_its_progress_bar_line(when, monkeypatch):
    """On a terminal ``depthlab: interrupted`` was written onto the bar's line (the bar was
    left open, then redrawn after the message when it was collected)."""
    import io

    import depthlab as dl
    from depthlab.training import Callback

    class CtrlC(Callback):
        def on_train_begin(self, trainer):
            if when == "on_train_begin":
                raise KeyboardInterrupt

        def after_update(self, trainer, step, loss):
            if step == 3:
                raise KeyboardInterrupt

    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype(np.float32), rng.integers(0, 2, 64)
    net = dl.mlp([4, 8, 2], seed=0)
    with pytest.raises(KeyboardInterrupt) as info:  # keeps the frames (and the bar) alive
        dl.fit(net, x, y, batch_size=8, epochs=2, progress="bar", callbacks=[CtrlC()])
    drawn = stream.getvalue()
    assert info.value is not None and drawn.endswith("\n"), repr(drawn[-120:])


# --- init: the commands it suggests paste as they are ----------------------------------------


def test_init_quotes_a_name_with_spaces_in_the_commands_it_suggests(tmp_path, capsys,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "init", "my exp")
    assert code == 0, err
    suggested = shlex.split(out.split("train it with: ")[1])
    assert suggested == ["depthlab", "run", "my exp.toml", "--out", "results"]
    header = (tmp_path / "my exp.toml").read_text().splitlines()[0]
    assert shlex.split(header.split("Train it with:")[1])[2] == "my exp.toml"


def test_init_with_an_empty_example_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "init", "x", "--example", "")
    assert_one_line_error(code, err, "--example ''", "digits_run")  # was: the starter written
    assert not (tmp_path / "x.toml").exists()


def test_init_with_a_newline_in_the_name_writes_a_valid_config(tmp_path, capsys,
                                                                 monkeypatch):
    from depthlab.experiments import load_config

    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "init", "two\nlines")
    assert code == 0, err
    assert load_config(tmp_path / "two\nlines.toml")["name"] == "two\nlines"


# --- predict on a stored run without a network ------------------------------------------------


def test_predict_on_a_stored_run_without_a_network_says_why(tmp_path, capsys, monkeypatch):
    from depthlab.experiments import RunRecord, Store

    with Store(tmp_path / "res") as store:
        store.add_run(RunRecord(id="abc123def456", name="p", kind="sweep-point",
                                status="finished", config={}, metrics={}))
    code, _, err = run_cli(capsys, "predict", "abc1", "digits", "--dir", tmp_path / "res")
    # was: "'abc1' is neither a .npz file nor a run with a saved network"
    assert_one_line_error(code, err, "sweep-point abc123def456", "no saved network",
                          "depthlab run")


# --- run of a config with a [sweep] table ------------------------------------------------------


def test_run_refusing_a_config_with_a_sweep_table_is_one_line(tmp_path, capsys, monkeypatch):
    one_blas_thread(monkeypatch)
    cfg = tmp_path / "grid.toml"
    cfg.write_text(TINY + '[sweep]\n"train.seed" = [0, 1]\n')
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "run", cfg, "--out", out, "-q")
    assert code == 0 and "[sweep] table is ignored" in err, err
    code, _, err = run_cli(capsys, "run", cfg, "--out", out, "-q")
    assert_one_line_error(code, err, "--overwrite")  # was: the note, then the error


# --- stdout that takes no output ---------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
@pytest.mark.parametrize("buffered", [True, False])
def test_full_stdout_is_one_line_exit_2(buffered):
    env = {k: v for k, v in ENV.items() if k != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    with open("/dev/full", "w") as full:
        p = subprocess.run([sys.executable, "-m", "depthlab", "datasets"], stdout=full,
                           stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, timeout=120)
    # was: exit 120 and "Exception ignored in: <_io.TextIOWrapper name='<stdout>'...>"
    # (buffered), or "[Errno 28] No space left on device" naming nothing (unbuffered)
    assert_one_line_error(p.returncode, p.stderr, "stdout", "No space left on device")


def test_closed_stdout_is_not_an_internal_error():
    p = subprocess.run([sys.executable, "-m", "depthlab", "datasets"], stdout=None,
                       stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT, timeout=120,
                       preexec_fn=lambda: os.close(1))  # as `depthlab datasets >&-`
    assert p.returncode == 0 and p.stderr == "", p.stderr


@pytest.mark.parametrize("args, code", [(["run", "no-such.toml"], 2), (["datasets"], 0)])
def test_closed_stderr_keeps_the_exit_status(args, code):
    p = subprocess.run([sys.executable, "-m", "depthlab", *args], capture_output=True,
                       text=True, env=ENV, cwd=ROOT, timeout=120,
                       preexec_fn=lambda: os.close(2))  # as `depthlab ... 2>&-`
    assert p.returncode == code  # was: 1 (writing the message to a missing stderr failed)


# --- warnings from the command line ------------------------------------------------------------


@pytest.mark.parametrize("command", [["run"], ["sweep", "--jobs", "2"]])
def test_a_warning_is_one_line_on_stderr(tmp_path, command):
    """Also from a sweep's worker process."""
    cfg = tmp_path / "bn.toml"  # digits' 1258 training rows in batches of 3 leave one row
    cfg.write_text(TINY.replace("batch_size = 64", "batch_size = 3").replace(
        "[model]\n", "[model]\nbatchnorm = true\n") + '[sweep]\n"train.seed" = [0]\n')
    p = subprocess.run([sys.executable, "-m", "depthlab", command[0], cfg, *command[1:],
                        "--out", tmp_path / "out", "-q"], capture_output=True, text=True,
                       env=ENV, cwd=ROOT, timeout=120)
    lines = p.stderr.splitlines()
    if command[0] == "run":  # the note that [sweep] is ignored comes first
        assert lines.pop(0).startswith("depthlab: note:"), p.stderr
    assert p.returncode == 0, p.stderr
    # was: ".../runner.py:225: UserWarning: batch normalization: ..." and a line of source
    assert lines == [
        "depthlab: warning: batch normalization: 1258 rows in batches of 3 leave 1 row for the "
        "last batch of each epoch; it is merged into the batch before it (4 rows)"], p.stderr
