"""Round 38 (watchhunt38): dlt.Watch attached to training loops as a user writes them."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

import depthlab.torch as dlt


def _nothing():
    return contextlib.nullcontext([])


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def test_name_given_positionally_is_refused_naming_the_positional_arguments():
    # Python said "Watch.__init__() takes from 2 to 4 positional arguments but 5 were given"
    # for 4 arguments (it counts self) and did not say that name is a keyword
    with pytest.raises(TypeError) as info:
        dlt.Watch(_model(), 10, None, "run1")
    text = str(info.value)
    assert "takes 3 positional arguments (model, every, out) but 4 were given" in text
    assert "name=" in text and "\n" not in text


@pytest.mark.parametrize("every,at,record", [(1, 3, True), (3, 3, True), (3, 2, False)])
def test_a_replaced_head_is_warned_at_the_step_it_was_found(every, at, record):
    # a head replaced before step 3's forward, with every=1: the warning said "changed before
    # step 4", while step 3's record had measured the old modules' hooks and had no row of the
    # new head (read as: step 3 unchanged, the head measured)
    m = _model()
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    w = dlt.Watch(m, every=every, theory=False)
    for step in range(at + 1):
        if step == at:
            m[2] = nn.Linear(8, 1)
        m.zero_grad()
        loss = ((m(x) - y) ** 2).mean()
        loss.backward()
        if step == at:
            with pytest.warns(RuntimeWarning) as caught:
                w.step(loss)
        else:
            w.step(loss)
    text = " ".join(str(c.message) for c in caught if "changed" in str(c.message))
    assert f"changed by step {at} " in text and f"from step {at + 1} on" in text
    assert (f"step {at}'s record leaves out 2," in text) is record
    if record:  # what the warning says: the record of that step has no row of the new head
        frame = w.frame()
        assert "2" not in set(frame[frame.step == at].module)


def test_a_weight_reassigned_at_a_recorded_step_is_not_said_to_be_left_out():
    # a new Parameter in the same module is read by that step's record (without update ratio)
    m = _model()
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    w = dlt.Watch(m, every=1, theory=False)
    for step in range(3):
        if step == 2:
            m[2].weight = nn.Parameter(m[2].weight.detach() * 2)
        m.zero_grad()
        ((m(x) - y) ** 2).mean().backward()
        with pytest.warns(RuntimeWarning) if step == 2 else _nothing() as caught:
            w.step(0.0)
    text = " ".join(str(c.message) for c in caught if "changed" in str(c.message))
    assert "changed by step 2 " in text and "leaves out" not in text
    frame = w.frame()
    row = frame[(frame.step == 2) & (frame.module == "2") & (frame.quantity == "weight_std")]
    assert row.value.tolist() == [pytest.approx(m[2].weight.detach().std(unbiased=False).item())]
