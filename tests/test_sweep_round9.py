"""Round 9 (sweeps): a Dask ``local:N`` sweep interrupted while its cluster starts."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import pytest

distributed = pytest.importorskip("distributed")

from depthlab.experiments.executors.dask import DaskExecutor  # noqa: E402

RELEASE_S = 8.0
"""The hung start-up is let go after this long: less than the 10 s waits of Dask's sync(), so
without the fix the interrupt is only seen after the release (never while it hangs)."""


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals reach the main thread only")
def test_ctrl_c_while_a_local_cluster_starts_interrupts_the_start(monkeypatch):
    """Ctrl-C during ``LocalCluster`` start-up: SIGINT was blocked in the main thread for the
    whole constructor (so that Dask's threads inherit the mask), so the interrupt was seen only
    once the cluster was up (a sweep took 6-12 s to stop). Now the start-up (here hung until
    released) is interrupted while it hangs, its worker processes are killed and the executor
    keeps no cluster."""
    entered, release = threading.Event(), threading.Event()

    async def hang(self) -> None:  # the workers' start, hung until released
        entered.set()
        while not release.is_set():
            await asyncio.sleep(0.01)

    monkeypatch.setattr(distributed.deploy.spec.SpecCluster, "_correct_state_internal", hang)

    def ctrl_c() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # delivered to another thread
        if entered.wait(120):
            os.kill(os.getpid(), signal.SIGINT)
        release.wait(RELEASE_S)
        release.set()

    ex = DaskExecutor("local:1")
    threading.Thread(target=ctrl_c, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            ex.start()
        released_before = release.is_set()
    finally:
        release.set()
        ex.close()
    assert not released_before, "the interrupt was seen only after the start-up ended"
    assert ex.cluster is None and ex.client is None
