"""Round 14, lead: a watched loop ended by Ctrl-C is stored with a message that says so."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.experiments.store import Store  # noqa: E402


def _loop(watch: dlt.Watch, model: nn.Module, steps: int, stop: BaseException) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    for i in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
        opt.step()
        if i == steps - 1:
            raise stop


@pytest.mark.parametrize("stop, text", [
    (KeyboardInterrupt(), "KeyboardInterrupt: interrupted (Ctrl-C) after 3 steps"),
    (RuntimeError(), "RuntimeError: raised after 3 steps"),
    (ValueError("bad batch"), "ValueError: bad batch"),
])
def test_a_watched_loop_ended_by_an_exception_is_stored_with_a_message(tmp_path, stop, text):
    # was: "KeyboardInterrupt: " (the exception's empty message) as the failed run's error
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    with pytest.raises(type(stop)):
        with dlt.Watch(model, every=2, out=tmp_path, theory=False) as watch:
            _loop(watch, model, 3, stop)
    with Store(tmp_path) as store:
        runs = store.runs()
    assert list(runs["status"]) == ["failed"]
    record = watch.record()
    assert record.error == text
    assert len(record.steps) == 3
