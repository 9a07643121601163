"""Round 31 (apihunt31): the public API refuses runs whose records cannot fit in memory."""

from __future__ import annotations

import time

import numpy as np
import pytest

import depthlab as dl


class _Guard:
    """Fails the test at the first update: the run should have been refused before it."""

    def on_train_begin(self, trainer):
        pass

    def before_update(self, trainer, step):
        raise AssertionError(f"the run started (step {step}) instead of being refused")

    def after_update(self, trainer, step, loss):
        pass

    def on_epoch_end(self, trainer, epoch, metrics):
        pass

    def on_train_end(self, trainer, history):
        pass


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(16, 4)).astype(np.float32), np.arange(16) % 3


@pytest.mark.parametrize("kwargs", [{"epochs": 10**12}, {"max_steps": 10**13}])
def test_fit_refuses_a_history_that_cannot_fit_before_the_first_update(kwargs, monkeypatch):
    # History keeps one loss per update (a Python float in a list, 32 bytes) and one row per
    # epoch: 10**12 epochs of 4 steps grew by ~2.6 MB/s until the process was killed
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "1G")
    x, y = _data()
    net = dl.mlp([4, 5, 3], seed=0)
    before = [p.value.copy() for p in net.parameters()]
    t0 = time.perf_counter()
    with pytest.raises(dl.memory.MemoryRefusal, match=r"training history .*updates.*nothing was"):
        dl.fit(net, x, y, loss="cross_entropy", batch_size=4, seed=0, callbacks=[_Guard()],
               **kwargs)
    assert time.perf_counter() - t0 < 2.0
    for p, b in zip(net.parameters(), before, strict=True):
        np.testing.assert_array_equal(p.value, b)  # no update happened


def test_fit_of_an_ordinary_length_is_not_refused(monkeypatch):
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "64M")
    x, y = _data()
    hist = dl.fit(dl.mlp([4, 5, 3], seed=0), x, y, loss="cross_entropy", batch_size=4,
                  epochs=3, seed=0)
    assert hist.steps == 12 and len(hist.epochs) == 3


def test_probe_recorder_every_step_refused_when_its_records_cannot_fit(monkeypatch):
    # 10**7 updates of history fit in 4 GiB (1.3 GB), but a record of 6 layers every step does
    # not: refused before the first update, naming the recorder and its every
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "4G")
    x, y = _data()
    net = dl.mlp([4, 8, 8, 8, 8, 8, 8, 3], seed=0)
    rec = dl.ProbeRecorder(x, y, every=1)
    with pytest.raises(dl.memory.MemoryRefusal, match=r"ProbeRecorder\(every=1\)"):
        dl.fit(net, x, y, loss="cross_entropy", batch_size=4, max_steps=10**7, seed=0,
               callbacks=[rec, _Guard()])
    assert net.parameters()[0].value is not None
    rec2 = dl.ProbeRecorder(x, y, every=10)
    hist = dl.fit(net, x, y, loss="cross_entropy", batch_size=4, max_steps=20, seed=0,
                  callbacks=[rec2])
    assert hist.steps == 20 and set(rec2.frame().step) == {0, 10, 20}


def test_early_stopping_keeps_an_open_ended_run_allowed(monkeypatch):
    # epochs=10**12 with early stopping means "until it stops improving" (as a config's
    # train.patience): not refused, by the history check or the recorder's
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "1G")
    x, y = _data()
    rec = dl.ProbeRecorder(x, y, every=1)
    stop = dl.EarlyStopping("train_loss", patience=1, min_delta=1e9)
    hist = dl.fit(dl.mlp([4, 5, 3], seed=0), x, y, loss="cross_entropy", batch_size=4,
                  epochs=10**12, seed=0, callbacks=[rec, stop])
    assert len(hist.epochs) == 2 and hist.steps == 8
    hist = dl.fit(dl.mlp([4, 5, 3], seed=0), x, y, loss="cross_entropy", batch_size=4,
                  epochs=10**12, seed=0, patience=1, min_delta=1e9, monitor="train_loss")
    assert len(hist.epochs) == 2


@pytest.mark.parametrize("call, fn, right", [
    (lambda: dl.theory.q_map("tanh", 1.0, 1.0, sigmab2=0.1), "q_map", "sigma_b2"),
    (lambda: dl.theory.meanfield("tanh", 1.0, sigmab2=0.1), "meanfield", "sigma_b2"),
    (lambda: dl.theory.propagate([5, 6, 7], "tanh", input_vra=2.0), "propagate", "input_var"),
])
def test_a_theory_keyword_typo_names_the_function_not_the_activation(call, fn, right):
    # was "unknown argument 'sigmab2' for activation 'tanh'; accepted: (none)": the typo of
    # the function's own keyword was blamed on the activation, with no hint
    with pytest.raises(TypeError, match=rf"^{fn}\(\) got an unexpected keyword argument "
                                        rf"'\w+' \(did you mean '{right}'\?\)"):
        call()
    # a keyword of the activation still reaches it
    assert dl.theory.q_map("leaky_relu", 1.0, 2.0, negative_slope=0.2) > 0
