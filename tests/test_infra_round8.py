"""Round 8 of adversarial testing of sweeps, the store and the playground server (helper
"infra").

* a second click on **doctor** while one was running replaced the tab's doctor task: closing
  the tab then cancelled the finished second task, and the first doctor trained on for nobody
  (its thread still alive 15 s after the tab closed, 10,000+ steps);
* a binary WebSocket frame ended the tab (Starlette's ``receive_text`` raised ``KeyError:
  'text'``: a traceback in the server log, the socket dropped without a close frame);
* ``train.loss = binary_cross_entropy`` with a data set of 3 or more classes passed
  ``/api/check`` and ``/api/export`` (a TOML that ``depthlab run`` refuses) and failed only
  after the session was accepted, with no control named.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from depthlab.playground import app as playground_app
from depthlab.playground.doctor_task import run_doctor
from depthlab.playground.server import Background
from depthlab.playground.setup import SetupError

websockets = pytest.importorskip("websockets.sync.client")


@pytest.fixture(scope="module")
def server():
    with Background(memory_limit=256 * 2**20) as bg:
        yield bg


def _ws_url(server) -> str:
    return server.url.replace("http://", "ws://") + "ws"


def _until(ws, predicate, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        m = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if predicate(m):
            return m


def _doctor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "depthlab-playground-doctor"]


# -- playground ------------------------------------------------------------------------------
def test_a_second_doctor_click_leaves_the_first_stoppable_by_closing_the_tab(server,
                                                                              monkeypatch):
    steps: list[int] = []

    def endless(prep, setup, n_steps=None, stop=None):
        from depthlab.playground import doctor_task

        class Count(doctor_task._StopWhenSet):
            def after_update(self, trainer, step, loss):
                steps.append(step)
                super().after_update(trainer, step, loss)

        monkeypatch.setattr(doctor_task, "_StopWhenSet", Count)
        return run_doctor(prep, setup, 10**6, stop)  # an hour of training unless stopped

    monkeypatch.setattr(playground_app, "run_doctor", endless)
    with websockets.connect(_ws_url(server)) as ws:
        ws.send(json.dumps({"cmd": "setup", "query": {"model.depth": "3",
                                                      "model.width": "8"}}))
        _until(ws, lambda m: m["type"] == "ready")
        ws.send(json.dumps({"cmd": "doctor"}))
        deadline = time.monotonic() + 30
        while not steps and time.monotonic() < deadline:
            time.sleep(0.02)
        assert steps, "the doctor did not start training"
        ws.send(json.dumps({"cmd": "doctor"}))  # pressed again while it trains
        m = _until(ws, lambda m: m["type"] == "error")
        assert m["message"] == "the doctor is already running"
    t0 = time.monotonic()  # the tab is closed
    while _doctor_threads() and time.monotonic() - t0 < 20:
        time.sleep(0.05)
    # was: the first doctor's thread still trained 15 s later (its task had been replaced)
    assert not _doctor_threads(), f"the doctor trained on after its tab closed ({len(steps)})"
    assert len(steps) < 10**6


def test_a_binary_websocket_message_gets_one_error_and_the_tab_keeps_working(server):
    with websockets.connect(_ws_url(server)) as ws:
        ws.send(b'{"cmd": "ping"}')  # a binary frame, even of JSON
        m = json.loads(ws.recv(timeout=10))
        # was: KeyError 'text' in the server, the socket dropped without a close frame
        assert m["type"] == "error"
        assert m["message"].startswith("a binary message of 15 bytes is not a command")
        ws.send(json.dumps({"cmd": "ping"}))
        assert json.loads(ws.recv(timeout=10)) == {"type": "pong"}


@pytest.mark.parametrize("query", [
    {"train.loss": "binary_cross_entropy", "data.options.n_classes": "3"},
    {"train.loss": "binary_cross_entropy", "data.name": "digits"},
])
def test_binary_cross_entropy_on_more_than_two_classes_is_refused_before_a_session(server,
                                                                                   query):
    with pytest.raises(SetupError) as e:
        playground_app.check(query)
    assert e.value.key == "train.loss"
    assert "needs 2 classes" in str(e.value) and "expected cross_entropy" in str(e.value)
    text = urllib.parse.urlencode(query)
    with urllib.request.urlopen(server.url + "api/check?" + text, timeout=10) as r:
        body = json.loads(r.read())
    # was: {"ok": true}, and /api/export gave a TOML that `depthlab run` refuses
    assert body["ok"] is False and body["key"] == "train.loss"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(server.url + "api/export?" + text, timeout=10)
    assert err.value.code == 400
    two = {**query, "data.options.n_classes": "2", "data.name": "spirals"}
    assert playground_app.check(two)[0]["train.loss"] == "binary_cross_entropy"


# -- CLI -------------------------------------------------------------------------------------
def test_ctrl_c_while_the_cli_imports_its_libraries_is_one_line_and_status_130(tmp_path):
    """The first second of every command imports pandas and SciPy (``_user_errors``); a Ctrl-C
    then printed the import's traceback and the process died by SIGINT (-2)."""
    import subprocess
    import sys

    script = ("import os, signal, sys\n"
              "import depthlab.cli as cli\n"
              "real = cli._user_errors\n"
              "def interrupted():\n"
              "    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during the imports\n"
              "    return real()\n"
              "cli._user_errors = interrupted\n"
              f"sys.exit(cli.main(['runs', {str(tmp_path)!r}]))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stderr) == (130, "depthlab: interrupted\n"), done.stderr


# -- store -----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["runs", "export", "report"])
def test_a_folder_where_the_store_file_belongs_is_named_as_a_folder(tmp_path, capsys, command):
    from depthlab.cli import main

    (tmp_path / "depthlab.db").mkdir()
    assert main([command, str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    # was: "no results store at ..." (as `run` and `sweep` said, a folder is in the way)
    assert err.count("\n") == 0 and err.endswith("is a folder, not a database file"), err
    assert (tmp_path / "depthlab.db").is_dir() and not any((tmp_path / "depthlab.db").iterdir())


def test_a_flood_of_setups_keeps_one_session_thread_and_ends_on_the_last():
    """Each setup replaced the tab's session at once, but a replaced session still loading
    builds its network before it sees the stop: 40 setups sent together kept 40 threads
    building 40 networks for 8+ s (the memory check counts one), and closing the tab left
    them running."""
    seen: list[int] = []
    with Background(memory_limit=2**30) as bg:
        def threads() -> int:
            with urllib.request.urlopen(bg.url + "api/sessions", timeout=10) as r:
                n = json.loads(r.read())["threads"]
            seen.append(n)
            return n

        with websockets.connect(_ws_url(bg)) as ws:
            for seed in range(12):
                ws.send(json.dumps({"cmd": "setup", "play": True, "query": {
                    "model.depth": "60", "model.width": "64", "train.seed": str(seed)}}))
            last = _until(ws, lambda m: m["type"] == "accepted"
                          and m["query"]["train.seed"] == "11")
            assert last["parameters"] > 0
            for _ in range(10):
                threads()
                time.sleep(0.05)
        t0 = time.monotonic()
        while threads() and time.monotonic() - t0 < 10:
            time.sleep(0.05)
    assert max(seen) <= 1, seen  # was 12: every replaced session still building its network
    assert seen[-1] == 0
