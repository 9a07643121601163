"""Round 31 hunt of the command line, the store and the sweeps (clistore31)."""

from __future__ import annotations

import os
import sys

import pytest
from helpers.cli import TINY, one_blas_thread

from depthlab.cli import main
from depthlab.experiments import Store

QUICK = TINY.replace("every = 5", "every = 0")
"""The tiny run without probes (milliseconds)."""


class _ClosedPipe:
    """A ``sys.stdout`` whose reader has gone (``depthlab ... | head -1`` once head exited):
    every write past its buffer raises BrokenPipeError, as a real pipe's does."""

    def __init__(self) -> None:
        read, self._fd = os.pipe()
        os.close(read)
        self._stream = os.fdopen(self._fd, "w", buffering=1)

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def close(self) -> None:
        try:
            self._stream.close()
        except OSError:
            pass


def test_a_closed_stdout_does_not_stop_the_work_of_run_and_sweep(tmp_path, monkeypatch):
    """`depthlab run cfg | head -1`: the run was stored but its network was never saved (the
    first line after the store raised BrokenPipeError, caught as "not an error": exit 0), so
    `predict` failed and `run` again was refused as stored. `depthlab sweep grid | head -1`
    ran none of its points and exited 0 (its first line is the grid's size). The output is
    lost, the work is done, the exit status is the work's. With stderr closed too
    (`depthlab run cfg 2>&1 | head -1`) the run was stored as failed with "BrokenPipeError"
    (its progress line raised it mid-run) and the command exited 0."""
    one_blas_thread(monkeypatch)
    config = tmp_path / "tiny.toml"
    config.write_text(QUICK + '[sweep]\n"train.seed" = [0, 1, 2]\n')
    pipe, err = _ClosedPipe(), _ClosedPipe()
    monkeypatch.setattr(sys, "stdout", pipe)
    try:
        assert main(["run", str(config), "--out", str(tmp_path / "r")]) == 0
        assert main(["sweep", str(config), "--out", str(tmp_path / "s")]) == 0
        monkeypatch.setattr(sys, "stderr", err)
        assert main(["run", str(config), "--out", str(tmp_path / "e")]) == 0
    finally:
        monkeypatch.undo()
        pipe.close()
        err.close()
    for out in ("r", "e"):
        with Store(tmp_path / out, create=False) as store:
            runs = store.runs()
        assert list(runs["status"]) == ["finished"], runs.get("error")
        assert (tmp_path / out / "models" / f"{runs['id'][0]}.npz").is_file()
    with Store(tmp_path / "s", create=False) as store:
        assert sorted(store.runs()["status"]) == ["finished"] * 3


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_run_whose_output_cannot_be_written_still_saves_its_network(tmp_path, monkeypatch,
                                                                        capsys):
    """`depthlab run cfg > /dev/full` (a full disk): stored, network not saved, exit 2 "cannot
    write the output", and `run` again refused as stored. Now the network is saved too; the
    lost output is still one line and exit status 2."""
    one_blas_thread(monkeypatch)
    config = tmp_path / "tiny.toml"
    config.write_text(QUICK)
    with open("/dev/full", "w") as full:  # noqa: PTH123
        monkeypatch.setattr(sys, "stdout", full)
        code = main(["run", str(config), "--out", str(tmp_path / "r")])
        monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == ("depthlab: error: cannot write the output to stdout: No "
                                     "space left on device")
    with Store(tmp_path / "r", create=False) as store:
        (rid,) = store.runs()["id"]
    assert (tmp_path / "r" / "models" / f"{rid}.npz").is_file()


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_ctrl_c_as_the_sweeps_prompt_appears_stops_it(tmp_path):
    """A Ctrl-C sent the moment the [y/N] prompt of a grid above 100,000 points appears (a
    script, or a quick hand) was lost 3 times in 4: input() checks for signals only when its
    read is interrupted, and the signal landed before the read began, so the sweep waited for
    an answer for good. Now: exit 130 at once, one line, no store."""
    import pty
    import select
    import signal
    import time

    from helpers.cli import ENV

    config = tmp_path / "big.toml"
    config.write_text(QUICK + '[sweep]\n"train.seed" = [' + ", ".join(map(str, range(100_001)))
                      + "]\n")
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execve(sys.executable, [sys.executable, "-m", "depthlab", "sweep", str(config),
                                   "--out", str(tmp_path / "out")], ENV)
    seen, status = b"", None
    try:
        while b"[y/N] " not in seen:
            assert select.select([fd], [], [], 60)[0], seen
            seen += os.read(fd, 4096)
        os.kill(pid, signal.SIGINT)
        end = time.monotonic() + 10
        while status is None and time.monotonic() < end:
            if select.select([fd], [], [], 0.05)[0]:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    pass
            done, code = os.waitpid(pid, os.WNOHANG)
            status = os.waitstatus_to_exitcode(code) if done else None
        # what it wrote before it ended and was not read yet (a loaded host may run the child
        # to its end between the select above and waitpid): read to the end
        while status is not None and select.select([fd], [], [], 0)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child's side is closed and nothing is left
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    assert status == 130, seen
    after = seen.split(b"[y/N] ", 1)[1].decode().strip().splitlines()
    assert len(after) == 1 and after[0].startswith("depthlab: interrupted"), seen
    assert not (tmp_path / "out").exists()


def test_a_run_whose_step_history_cannot_fit_in_memory_is_refused_before_training(
        tmp_path, monkeypatch, capsys):
    """`train.epochs = 10**12` trained "forever" while the per-step loss history grew until
    the machine ran out of memory, everything then lost. The history of the steps the config
    asks for (32 bytes of list and 16 of table per step, about 500 per epoch's row) is counted
    before training: refused in one line, nothing stored; `max_steps` bounds it."""
    import depthlab.experiments

    one_blas_thread(monkeypatch)
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "1G")
    trained = depthlab.experiments.train

    def train_unless_forever(prep, **kwargs):  # the unrefused run would never end
        assert prep.config["train"].get("max_steps"), "trained a run of 10**12 epochs"
        return trained(prep, **kwargs)

    monkeypatch.setattr(depthlab.experiments, "train", train_unless_forever)
    config = tmp_path / "forever.toml"
    config.write_text(QUICK.replace("epochs = 1", "epochs = 1000000000000"))
    code = main(["run", str(config), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    # 200 spirals: 140 training rows in batches of 50, 3 steps per epoch
    assert "train.epochs = 1000000000000" in err[0] and "3 steps each" in err[0], err
    assert "only 1 GiB is available" in err[0] and "max_steps" in err[0], err
    assert not (tmp_path / "out" / "models").exists()
    config.write_text(QUICK.replace("epochs = 1", "epochs = 1000000000000\nmax_steps = 4"))
    assert main(["run", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 0


def test_probe_steps_after_the_runs_last_step_are_named(tmp_path, monkeypatch):
    """`probes.jacobian = [0, 50]` in a run of 3 steps stored the step-0 spectrum only and said
    nothing about step 50 (likewise histogram_steps): one warning names them (shown as
    `depthlab: warning: ...`)."""
    one_blas_thread(monkeypatch)
    config = tmp_path / "late.toml"
    config.write_text(TINY + "jacobian = [0, 50]\n")  # probes on (every = 5): step 0 stored
    with pytest.warns(UserWarning) as seen:
        assert main(["run", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert [str(w.message) for w in seen] == [
        "probes.jacobian step 50 comes after the run's last step, 3 (3 steps per epoch on 140 "
        "training rows), and will not be recorded"]
