"""Round 47 CLI/sweep hunt: the sweep API's wrong types and values, each refused with one
line naming the value (TypeError/ValueError), before a store is created."""

from __future__ import annotations

import pytest

from depthlab.experiments import run_points, run_sweep

RAW = {"name": "t", "data": {"name": "clusters", "n": 60},
       "model": {"sizes": ["auto", 4, "auto"]},
       "train": {"epochs": 1, "batch_size": 20},
       "sweep": {"train.lr": [0.01, 0.1]}}


@pytest.mark.parametrize("executor", ["process", 3, object()])
def test_run_sweep_refuses_an_executor_that_is_not_one(tmp_path, executor):
    with pytest.raises(TypeError, match=r"executor = .* has the wrong type; accepted: an "
                                        r"Executor"):
        run_sweep(RAW, tmp_path / "o", executor=executor, echo=None)
    assert not (tmp_path / "o").exists()


def test_run_sweep_refuses_a_base_dir_of_the_wrong_type(tmp_path):
    with pytest.raises(TypeError, match=r"base_dir = 3 has the wrong type"):
        run_sweep(RAW, tmp_path / "o", base_dir=3, echo=None)
    assert not (tmp_path / "o").exists()


def test_run_sweep_refuses_a_base_dir_that_is_missing_or_a_file(tmp_path):
    with pytest.raises(ValueError, match=r"base_dir = '.*nope' does not exist"):
        run_sweep(RAW, tmp_path / "o", base_dir=tmp_path / "nope", echo=None)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"base_dir = '.*f' is not a folder"):
        run_sweep(RAW, tmp_path / "o", base_dir=tmp_path / "f", echo=None)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("points", [5, "abc", None, {"a": 1}])
def test_run_points_refuses_points_that_are_not_an_iterable_of_points(tmp_path, points):
    with pytest.raises(TypeError, match=r"points = .* has the wrong type; accepted: an "
                                        r"iterable of SweepPoint"):
        run_points(points, tmp_path / "o", sweep="s", echo=None)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("total", [None, 2])
def test_run_points_refuses_an_item_that_is_not_a_point(tmp_path, total):
    with pytest.raises(TypeError, match=r"points\[0\] = 1 has the wrong type; accepted: a "
                                        r"SweepPoint"):
        run_points([1, 2], tmp_path / "o", sweep="s", echo=None, total=total)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("sweep", "error"), [(3, TypeError), (None, TypeError),
                                              ("", ValueError), ("  ", ValueError)])
def test_run_points_refuses_a_bad_sweep_label(tmp_path, sweep, error):
    with pytest.raises(error, match=r"sweep = .* (has the wrong type|is empty)"):
        run_points([], tmp_path / "o", sweep=sweep, echo=None)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("total", "error"), [(-1, ValueError), (1.5, TypeError),
                                              ("2", TypeError), (True, TypeError)])
def test_run_points_refuses_a_bad_total(tmp_path, total, error):
    with pytest.raises(error, match=r"total = .* (has the wrong type|is negative)"):
        run_points([], tmp_path / "o", sweep="s", echo=None, total=total)
    assert not (tmp_path / "o").exists()


SIGINT_IGNORED_AT_START = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a script's `depthlab ... &` starts
import depthlab.cli as cli
build = cli.build_parser

def interrupted_while_starting():
    os.kill(os.getpid(), signal.SIGINT)  # before the command's own handlers are installed
    return build()

cli.build_parser = interrupted_while_starting
sys.argv = ["depthlab", "datasets"]
raise SystemExit(cli.main())
"""


def test_a_command_started_with_sigint_ignored_stops_at_an_early_sigint():
    """A background job inherits SIGINT ignored; the command takes SIGINT over once its
    modules are imported, so one sent in its first seconds was ignored (exit 0, the work ran
    to its end) and one sent later stopped it (130). Now it stops from the first line."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", SIGINT_IGNORED_AT_START], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 130, (res.returncode, res.stdout[-300:], res.stderr[-300:])
    assert res.stderr.strip().splitlines() == ["depthlab: interrupted"]
    assert "digits" not in res.stdout  # the listing was not printed


def _probed_config(every: int, max_steps: int) -> dict:
    from depthlab.experiments import validate

    return validate({"name": "p", "data": {"name": "clusters", "n": 60},
                     "model": {"sizes": ["auto", 8, 8, "auto"]},
                     "train": {"epochs": 10 ** 9, "max_steps": max_steps, "batch_size": 20},
                     "probes": {"every": every, "jacobian": False}})


def test_the_history_check_counts_the_probes(monkeypatch):
    """10⁷ steps probed at every step record at least 26 rows x 64 bytes per step, 15.5 GiB:
    the check counted the steps and epochs alone (1.7 GiB) and let the run start, to fail
    when the memory ran out. With 4 GiB available it is refused naming the probes; probed
    every 1000 steps, or without probes, it fits."""
    import depthlab.memory as memory
    from depthlab.experiments import ExperimentError
    from depthlab.experiments.runner import check_history

    monkeypatch.setattr(memory, "available_memory", lambda: 4 * 2 ** 30)
    config = _probed_config(every=1, max_steps=10 ** 7)
    with pytest.raises(ExperimentError, match=r"10,000,000 steps with its probes every 1 "
                                              r"step\(s\) needs about 17\.\d GiB.*a larger "
                                              r"probes\.every"):
        check_history(config, 40)
    check_history(_probed_config(every=1000, max_steps=10 ** 7), 40)
    check_history(_probed_config(every=0, max_steps=10 ** 7), 40)


def test_probe_history_bytes_is_the_documented_lower_bound():
    from depthlab.experiments.runner import probe_history_bytes

    config = _probed_config(every=1, max_steps=10)
    assert probe_history_bytes(config, 10 ** 7) == (10 ** 7 + 1) * (2 * 3 + 10 * 2) * 64
    assert probe_history_bytes(_probed_config(every=7, max_steps=10), 70) == 11 * 26 * 64
    assert probe_history_bytes(_probed_config(every=0, max_steps=10), 70) == 0


def test_a_sweep_whose_probes_cannot_fit_is_refused_before_any_point_trains(tmp_path,
                                                                            monkeypatch):
    """Through run_sweep: 2000 steps probed at every step need at least 3.3 MB of probe rows;
    with 2 MB available the sweep is refused before it trains (it trained the point)."""
    import depthlab.memory as memory
    from depthlab.experiments import ExperimentError

    monkeypatch.setattr(memory, "available_memory", lambda: 2 * 10 ** 6)
    raw = {"name": "p", "data": {"name": "clusters", "n": 60},
           "model": {"sizes": ["auto", 8, 8, "auto"]},
           "train": {"epochs": 10 ** 9, "max_steps": 2000, "batch_size": 20},
           "probes": {"every": 1, "jacobian": False}}
    with pytest.raises(ExperimentError, match=r"with its probes every 1 step\(s\).*no "
                                              r"point ran"):
        run_sweep(raw, tmp_path / "o", echo=None)


SLOW_SWEEP = """name = "slow"
[data]
name = "clusters"
n = 400
[model]
sizes = ["auto", 16, 16, "auto"]
[train]
epochs = 100000
batch_size = 4
[probes]
every = 0
jacobian = false
[sweep]
"train.seed" = [0, 1]
"""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_an_interrupted_sweep_with_json_prints_its_summary(tmp_path, sig):
    """`sweep --json` stopped by a signal printed nothing on stdout (a script reading the
    summary failed on empty input); now the summary of what was stored, marked
    "interrupted"."""
    import json
    import signal
    import subprocess
    import sys
    import time

    cfg = tmp_path / "slow.toml"
    cfg.write_text(SLOW_SWEEP)
    proc = subprocess.Popen([sys.executable, "-m", "depthlab", "sweep", str(cfg), "--out",
                             str(tmp_path / "o"), "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        for line in proc.stderr:  # messages go to stderr with --json
            if "running on this process" in line or time.monotonic() > deadline:
                break
        time.sleep(1.0)
        proc.send_signal(getattr(signal, sig))
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == (130 if sig == "SIGINT" else 143), err[-500:]
    summary = json.loads(out)
    assert summary["interrupted"] == sig
    assert summary["points"] == 2 and summary["counts"] == {}
    assert summary["store"].endswith("depthlab.db")
