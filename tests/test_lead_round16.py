"""Regression tests of the lead's fixes in round 16."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl
from depthlab.training import Callback, Trainer


class _CtrlC(Callback):
    """Presses Ctrl-C (raises KeyboardInterrupt) after the update of step ``at``."""

    def __init__(self, at: int) -> None:
        self.at = at

    def after_update(self, trainer, step, loss):
        if step == self.at:
            raise KeyboardInterrupt


def test_a_history_stopped_by_ctrl_c_says_interrupted_not_finished():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype("float32")
    y = np.arange(64) % 2
    stop = _CtrlC(3)
    trainer = Trainer(dl.mlp([4, 8, 2]), batch_size=8, epochs=2, callbacks=[stop])
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(x, y)
    hist = trainer.history
    assert hist.steps == 3
    assert hist.status == "interrupted"
    assert "interrupted" in repr(hist) and "finished" not in repr(hist)
    stop.at = -1  # a later fit that runs to its end
    assert trainer.fit(x, y).status == "finished"


def test_predict_shrinks_a_batch_that_cannot_fit_and_refuses_what_never_fits(monkeypatch):
    net = dl.mlp([64, 2048, 2048, 10], seed=0)
    x = np.random.default_rng(0).standard_normal((4000, 64)).astype("float32")
    want = net.predict(x, batch_size=256)
    # 4,000 rows at once: ~66 MB of cached layer outputs; 20 MB available -> smaller batches
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "20M")
    assert net._fitting_batch(x, 100_000) < 4000
    np.testing.assert_allclose(net.predict(x, batch_size=100_000), want, rtol=1e-6, atol=1e-6)
    # not even the result and one row fit: refused before allocating, naming the work
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "100K")
    big = np.zeros((40_000, 64), dtype="float32")
    with pytest.raises(ValueError, match=r"predict on 40,000 rows \(the result and one row "
                                         r"through the network\) needs about .* available"):
        net.predict(big)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["normal", "relu", "dead", "saturated", "interior ties",
                                  "two values"])
def test_bucket_selection_is_exact_on_ties_and_never_gathers_them(dtype, kind):
    """Order statistics by the compiled bucket selection equal a full sort's on arrays whose
    minimum or maximum repeats (a ReLU output's zeros, a dead layer, saturated units) or with
    ties inside; the ties at either end are answered without gathering them (before: half a
    ReLU output gathered and sorted, 19 ms of CPU for 2^20 entries)."""
    kernels = pytest.importorskip("depthlab.probes.kernels")
    rng = np.random.default_rng(3)
    x = rng.standard_normal(50_000) * 1.4
    x = {"normal": x, "relu": np.maximum(x, 0), "dead": np.maximum(x - 3.0, 0),
         "saturated": np.clip(x, -1, 1), "interior ties": np.round(x * 3),
         "two values": (x > 0.5).astype(float)}[kind].astype(dtype)
    n = x.size
    ranks = np.array([0, 1, n // 100, n // 50, n // 7, n // 2, n - n // 7, n - n // 50,
                      n - 2, n - 1], dtype=np.intp)
    lo, hi = float(x.min()), float(x.max())
    want = np.sort(x)[ranks]
    assert np.array_equal(kernels.select(x, ranks, lo, hi), want)
    assert np.array_equal(x[kernels.positions(x, ranks, lo, hi)], want)
    gathered = kernels._buckets(x, ranks, lo, hi)[6]
    if kind != "interior ties":
        assert gathered < n // 20  # the repeated end values stay out of the gather


def test_torch_doctor_accepts_the_ignore_index_of_a_partial_loss():
    """partial(F.cross_entropy, ignore_index=255) (a void class in segmentation labels): the
    label check read only an ignore_index attribute and refused 255 as a label outside
    0..C-1; the probe's accuracy already read the partial's keyword."""
    import functools

    torch = pytest.importorskip("torch")
    import depthlab.torch as dlt

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    y = torch.randint(0, 3, (64,), generator=g)
    y[::4] = 255
    loss = functools.partial(torch.nn.functional.cross_entropy, ignore_index=255)
    d = dlt.doctor(lambda: torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(),
                                               torch.nn.Linear(8, 3)),
                   (x, y), loss_fn=loss, steps=3, batch_size=16, verify=False)
    assert d.baseline["steps"] == 3
    y[1] = 7  # a label outside the classes: one line, not torch's error mid-training
    with pytest.raises(ValueError, match="the labels hold 7 .* expected class indices 0 to 2"):
        dlt.doctor(lambda: torch.nn.Linear(6, 3), (x, y), loss_fn=loss, steps=3,
                   verify=False)
    y[:] = 255
    with pytest.raises(ValueError, match="every training label is the loss's ignore_index 255"):
        dlt.doctor(lambda: torch.nn.Linear(6, 3), (x, y), loss_fn=loss, steps=3,
                   verify=False)


def test_idle_cores_follow_the_run_queue_while_the_load_average_falls(monkeypatch):
    """After other jobs end, the 1-minute load average holds them for minutes: a wide net
    trained right after a test suite got 1 of 2 idle cores. While the average falls (below
    the 5-minute one) the other tasks runnable now count where they are fewer; a steady or
    rising load keeps the average's rule (test_hardening_store's neighbour case)."""
    from depthlab import threads

    monkeypatch.setattr(threads, "cores_available", lambda: 2)
    monkeypatch.setattr(threads, "own_load", lambda: 0.0)
    monkeypatch.setattr(threads, "running_others", lambda: 0)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.6, 4.0, 3.0))  # falling
    assert threads.idle_cores() == 2
    monkeypatch.setattr(threads, "running_others", lambda: 1)  # a neighbour still runs
    assert threads.idle_cores() == 1
    monkeypatch.setattr(threads, "running_others", lambda: None)  # no /proc/stat
    assert threads.idle_cores() == 1
    monkeypatch.setattr(threads, "running_others", lambda: 0)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.0, 1.0, 1.0))  # steady
    assert threads.idle_cores() == 1
    monkeypatch.undo()
    now = threads.running_others()  # the machine's own run queue
    assert now is None or now >= 0
