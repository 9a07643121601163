"""Round 37 (watchhunt37): Watch.step's loss argument, as a user passes it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import depthlab.torch as dlt


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def _losses_of(value, steps: int = 3) -> list[float]:
    m = _model()
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    w = dlt.Watch(m, every=2, theory=False)
    for _ in range(steps):
        m.zero_grad()
        ((m(x) - y) ** 2).mean().backward()
        w.step(value)
    w.close()
    return w.losses()["loss"].tolist()


@pytest.mark.parametrize("value", [np.array(0.5), np.array([0.5]), np.array([[0.5]], np.float32),
                                   np.array(0.5, dtype=np.float16)])
def test_numpy_array_loss_of_one_element_is_a_number(value):
    # loss.detach().cpu().numpy() (a 0-d array) was "got ndarray", a float32 scalar accepted
    assert _losses_of(value) == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("value,words", [(np.array([0.5, 0.25]), "shape (2,)"),
                                         (np.array(True), "dtype bool"),
                                         (np.array("0.5"), "dtype <U3"),
                                         (np.array(1 + 2j), "dtype complex128")])
def test_numpy_array_loss_refused_in_one_line(value, words):
    with pytest.raises((ValueError, TypeError)) as info:
        _losses_of(value, steps=1)
    text = str(info.value)
    assert words in text and "\n" not in text


def test_meta_loss_refused_in_one_line_and_run_intact():
    m = _model()
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    w = dlt.Watch(m, every=1, theory=False)
    loss = ((m(x) - y) ** 2).mean()
    loss.backward()
    with pytest.raises(ValueError, match="meta"):
        w.step(torch.empty((), device="meta"))
    w.step(loss)  # the refused call was not a step
    w.close()
    assert w.losses()["step"].tolist() == [0]
    assert w.losses()["loss"].tolist() == [pytest.approx(float(loss.detach()))]


def _interrupted_run(target: str, every: int, at: int, steps: int = 5):
    """Training with a Ctrl-C inside ``Watch.<target>`` at call ``at``, caught by the loop
    (a notebook's interrupted cell run again), then training on; the Watch and the per-step
    reference ratio ``||W_n - W_{n-1}|| / ||W_{n-1}||`` of layer 1 (its weight only)."""
    m = _model()
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    w = dlt.Watch(m, every=every, theory=False)
    real = getattr(w, target)
    calls = {"n": 0}

    def boom(*a, **k):
        if w.steps_seen == at and calls["n"] == 0:
            calls["n"] += 1
            raise KeyboardInterrupt
        return real(*a, **k)

    setattr(w, target, boom)
    ref, prev = {}, None
    done = 0
    while done < steps:
        opt.zero_grad()
        loss = ((m(x) - y) ** 2).mean()
        loss.backward()
        seen = w.steps_seen
        interrupted = False
        try:
            w.step(loss)
        except KeyboardInterrupt:
            interrupted = True  # the batch is dropped, as a loop re-run from the top does
        if w.steps_seen > seen:  # a counted call: step number steps_seen - 1
            now = m[0].weight.detach().double().clone()
            if prev is not None:
                ref[seen] = float((now - prev).norm() / prev.norm())
            prev = now
        if interrupted:
            continue
        opt.step()
        done += 1
    w.close()
    assert calls["n"] == 1  # the Ctrl-C did land
    return w, ref


@pytest.mark.parametrize("target,every,at", [("_snapshot", 1, 1), ("_snapshot", 2, 1),
                                             ("_snapshot", 3, 2)])
def test_ctrl_c_inside_step_counts_it_once_and_keeps_the_run_whole(target, every, at):
    # a Ctrl-C after a step's record (while taking the snapshot) left the call uncounted:
    # the next call recorded the same step number again (two losses and twice the rows at
    # one step, steps_seen one short); in an arming call that records nothing, its loss was
    # kept (two losses at one step)
    w, ref = _interrupted_run(target, every, at)
    table, losses = w.frame(), w.losses()
    assert losses["step"].tolist() == list(range(w.steps_seen))
    rows = table[table.quantity != "update_ratio"].groupby("step").size()
    assert rows.nunique() == 1, rows.to_dict()  # every recorded step whole, none doubled
    ratio = table[(table.quantity == "update_ratio") & (table.layer == 1)]
    for step, value in zip(ratio.step, ratio.value):  # present ones are right (else absent)
        assert value == pytest.approx(ref[step], rel=1e-5), step


class _OnceInterrupted(list):
    """A column list whose first ``extend`` is interrupted (a Ctrl-C between the appends of a
    record's rows)."""

    fired = False

    def extend(self, items):
        if not _OnceInterrupted.fired:
            _OnceInterrupted.fired = True
            raise KeyboardInterrupt
        super().extend(items)


def test_ctrl_c_between_the_appends_of_a_record_leaves_the_table_whole():
    # the rows' columns (step, layer, module, quantity, value) and the losses were appended
    # one after the other: a Ctrl-C between them left columns of different lengths, and
    # frame(), losses(), close() and the store failed ("All arrays must be of the same length")
    m = _model()
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    w = dlt.Watch(m, every=1, theory=False)
    for _ in range(2):
        m.zero_grad()
        ((m(x) - y) ** 2).mean().backward()
        w.step(((m(x) - y) ** 2).mean().detach())
    _OnceInterrupted.fired = False
    w._col_module = _OnceInterrupted(w._col_module)
    m.zero_grad()
    ((m(x) - y) ** 2).mean().backward()
    with pytest.raises(KeyboardInterrupt):
        w.step(torch.tensor(1.0))
    assert _OnceInterrupted.fired
    m.zero_grad()  # the loop goes on (the iteration run again): the interrupted call
    ((m(x) - y) ** 2).mean().backward()  # was not a step
    w.step(torch.tensor(2.0))
    w.close()
    table = w.frame()
    rows = table[table.quantity != "update_ratio"].groupby("step").size()
    assert rows.index.tolist() == [0, 1, 2] and rows.nunique() == 1
    assert w.losses()["step"].tolist() == [0, 1, 2]
    assert w.losses()["loss"].tolist()[2] == 2.0


def test_ctrl_c_while_the_losses_are_copied_leaves_them_aligned():
    # losses() (close(), a record's flush) appended the step numbers, then the values: a
    # Ctrl-C between them left the two of different lengths and losses() failed for good
    from array import array

    class Interrupted(array):
        fired = False

        def extend(self, items):
            if not Interrupted.fired:
                Interrupted.fired = True
                raise KeyboardInterrupt
            super().extend(items)

    m = _model()
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    w = dlt.Watch(m, every=100, theory=False)
    for k in range(3):
        m.zero_grad()
        ((m(x) - y) ** 2).mean().backward()
        w.step(float(k))
    w._loss_values = Interrupted("d", w._loss_values)
    with pytest.raises(KeyboardInterrupt):
        w.losses()
    assert w.losses()["loss"].tolist() == [0.0, 1.0, 2.0]
    assert w.losses()["step"].tolist() == [0, 1, 2]
