"""Round 30 (lead): regressions found by CI or by the lead. Each test failed before its fix."""

from __future__ import annotations

import logging

import pytest

distributed = pytest.importorskip("distributed")


def test_a_remote_scheduler_sweep_holds_dasks_info_chatter_until_it_closes():
    """CI (round 29): a scheduler killed mid-sweep made the client's batched stream log
    ``distributed.batched - INFO - Batched Comm Closed`` with a CommClosedError traceback on
    stderr before depthlab's one-line error (and a lost result's "Couldn't gather ...
    rescheduling", a WARNING of distributed.client, could). While a sweep's own client is
    open, Dask's records below CRITICAL are not emitted, as a local:N cluster's silence_logs
    holds them; the levels are restored on close."""
    from depthlab.experiments.executors.dask import DaskExecutor

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(f"{record.levelname} {record.getMessage()}")

    parent = logging.getLogger("distributed")
    handler = Keep(logging.DEBUG)
    parent.addHandler(handler)
    before = parent.level
    try:
        with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                      dashboard_address=None, host="127.0.0.1",
                                      protocol="tcp://") as cluster:
            parent.setLevel(logging.INFO)  # Dask's default configuration
            client_level = logging.getLogger("distributed.client").level
            ex = DaskExecutor(cluster.scheduler_address)
            ex.start()
            try:
                seen.clear()
                batched = logging.getLogger("distributed.batched")
                batched.info("Batched Comm Closed")
                logging.getLogger("distributed.client").warning("Couldn't gather 1 keys")
                batched.critical("a critical record is still said")
            finally:
                ex.close()
            assert seen == ["CRITICAL a critical record is still said"]
            assert parent.level == logging.INFO  # restored
            assert logging.getLogger("distributed.client").level == client_level
            seen.clear()
            batched.info("after the sweep")
            assert seen == ["INFO after the sweep"]
    finally:
        parent.removeHandler(handler)
        parent.setLevel(before)
