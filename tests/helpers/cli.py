"""The command line in a subprocess and the example run file, for the CLI, config and sweep
tests."""

from __future__ import annotations

import os
import subprocess
import sys

# One BLAS/OpenMP thread per subprocess: several run in parallel on a small machine.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
       "MKL_NUM_THREADS": "1"}


def cli(*args, cwd=None, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m depthlab ARGS`` in a subprocess, output captured."""
    return subprocess.run([sys.executable, "-m", "depthlab", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=ENV, timeout=timeout)


def clis(*commands, cwd=None, timeout: float = 180) -> list[subprocess.CompletedProcess]:
    """Several independent ``python -m depthlab ARGS`` at once (each a tuple of arguments), in
    subprocesses as :func:`cli`: on a machine of two cores the second one runs beside the
    first. Their results in the order given."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(commands)) as pool:
        futures = [pool.submit(cli, *args, cwd=cwd, timeout=timeout) for args in commands]
        return [f.result() for f in futures]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """``depthlab ARGS`` in this process (``depthlab.cli.main``): (exit code, stdout, stderr)."""
    from depthlab.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> str:
    """Exit status 2 and one ``depthlab: error:`` line containing every fragment (no
    traceback, no "internal error"); returns that line."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("depthlab: error:"), err
    assert "internal error" not in err and "Traceback" not in err
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])
    return lines[0]


def one_blas_thread(monkeypatch) -> None:
    """One thread everywhere for an in-process CLI test (restored after the test, whatever
    ``--threads`` sets)."""
    for var in ("DEPTHLAB_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")


# The run file shown in the experiments issue.
ISSUE_EXAMPLE = """\
[data]
name = "digits"
[model]
sizes = [64, 128, 128, 10]
activation = "tanh"
init = "glorot_uniform"
batchnorm = false
residual = false
dropout = 0.0
[train]
loss = "cross_entropy"
optimizer = "sgd"
lr = 0.05
batch_size = 32
epochs = 3
seed = 0
[probes]
every = 10
[sweep]
"model.activation" = ["tanh", "relu"]
"train.seed" = [0, 1]
"""


TINY = """\
name = "tiny"
[data]
name = "spirals"
n = 200
seed = 3
[model]
sizes = ["auto", 8, "auto"]
[train]
epochs = 1
batch_size = 50
[probes]
every = 5
"""
"""A run of a few milliseconds: 200 spirals, one hidden layer of 8, one epoch."""


def tiny_run(tmp_path, capsys) -> tuple[str, str]:
    """A finished `depthlab run` of :data:`TINY` (in this process): (its id, its results
    folder)."""
    import json

    from depthlab.cli import main

    config, out = tmp_path / "tiny.toml", str(tmp_path / "out")
    config.write_text(TINY)
    assert main(["run", str(config), "--out", out, "--quiet", "--json"]) == 0
    rid = json.loads(capsys.readouterr().out)["id"]
    return rid, out
