"""Round 28 (daskhard28): sweeps on the local pool and Dask, the store, hardening."""
from __future__ import annotations

import pytest


def _big_point(seeds=(0,)):
    # one point of about 250 MiB (parameters, gradients and activations, float64)
    return {"name": "big", "data": {"name": "clusters", "n": 100},
            "model": {"sizes": ["auto", 3500, 3500, "auto"], "activation": "tanh",
                      "dtype": "float64"},
            "train": {"lr": 0.01, "batch_size": 32, "epochs": 1, "max_steps": 1},
            "probes": {"every": 0},
            "sweep": {"train.seed": list(seeds)}}


def test_a_local_cluster_runs_a_point_that_fits_in_memory_as_the_local_pool_does(
        tmp_path, monkeypatch):
    # Dask's LocalCluster gives each of its N workers memory_limit="auto", the machine's
    # memory / N, and its nanny kills a worker above 95% of that: a point larger than that
    # share (a depth x width grid's largest point on local:8), which depthlab's own memory
    # check let through and `--jobs N` runs, was killed on every try and stored failed
    # with KilledWorker. Simulated with a machine of 300 MiB (the point needs ~250 MiB
    # beside the worker process).
    system = pytest.importorskip("distributed.system")

    from depthlab.experiments import Store, run_sweep

    monkeypatch.setattr(system, "MEMORY_LIMIT", 300 * 2**20)
    res = run_sweep(_big_point(), tmp_path / "out", cluster="local:1", echo=None)
    assert res.counts == {"finished": 1}, res.failures
    assert list(Store(tmp_path / "out").runs().status) == ["finished"]
