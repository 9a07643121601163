"""Lead's round-17 regression tests."""

from __future__ import annotations

import inspect

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


def test_watch_names_a_mistyped_keyword_and_the_one_meant():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(TypeError, match=r"Watch\(\) got an unexpected keyword argument 'evry'"
                                        r" \(did you mean 'every'\?\)"):
        dlt.Watch(model, evry=5)
    with pytest.raises(TypeError, match=r"'percentile'.*did you mean 'percentiles'"):
        dlt.Watch(model, percentile=(50,))
    # the signature (and so help() and the defaults) stays the one written
    params = inspect.signature(dlt.Watch).parameters
    assert list(params)[:3] == ["model", "every", "out"] and params["every"].default == 10
    with dlt.Watch(model, every=2, theory=False) as w:  # the usual call still works
        loss = model(torch.randn(5, 3)).sum()
        loss.backward()
        w.step(loss)
    assert w.steps_seen == 1
