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
