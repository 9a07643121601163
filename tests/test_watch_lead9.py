"""depthlab.torch.Watch in a loop that calls the model's submodules itself (an encoder, then a
head: no forward of the model) and runs a validation call of those submodules with gradients
enabled (no ``no_grad``, no backward) between ``backward`` and ``watch.step``: the record is the
training call's. Every value is compared with the same quantity computed by hooks written here
and autograd."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from tests.test_watch_round8 import LINEARS, _check, _mlp, _table, _Taps, _weight_rows  # noqa: E402

F = nn.functional


def _submodule_loop(every: int, validations: int):
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    taps = _Taps(model)
    watch = dlt.Watch(model, every=every, theory=False)
    g = torch.Generator().manual_seed(1)
    x_val = 5 * torch.randn(32, 5, generator=g, dtype=torch.float64)
    expected = {}
    for step in range(4):
        model.train()
        opt.zero_grad()
        x = torch.randn(8, 5, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (8,), generator=g)
        taps.mark()
        out = model[4](model[3](model[2](model[1](model[0](x)))))
        loss = F.cross_entropy(out, y)
        loss.backward()
        train = len(taps.passes) - 1
        model.eval()
        for _ in range(validations):  # a metric on held-out data, gradients left on
            taps.mark()
            F.cross_entropy(model[4](model[3](model[2](model[1](model[0](x_val))))),
                            torch.zeros(32, dtype=torch.long)).item()
        if step % every == 0:
            expected[step] = {n: {**taps.rows(n, train), **_weight_rows(model[int(n)])}
                              for n in LINEARS}
        watch.step(loss)
        opt.step()
    return watch, expected


@pytest.mark.parametrize("validations", [1, 2])
@pytest.mark.parametrize("every", [1, 2])
def test_a_submodule_validation_with_gradients_enabled_is_not_pooled_into_the_record(
        every, validations):
    """Before the fix the validation batch was pooled into the training pass: layer 1
    ``pre_std`` 2.92 where the training batch's alone is 0.575."""
    watch, expected = _submodule_loop(every, validations)
    assert expected
    for step, rows in expected.items():
        table = _table(watch, step)
        for name, r in rows.items():
            _check(table, name, r, rel=1e-10)
    watch.close()


def test_a_forward_that_raised_in_another_watched_model_does_not_silence_this_one():
    """A watched model whose forward raised stayed marked 'in its forward' until its Watch was
    re-armed or closed; meanwhile every submodule call of any other watched model was ignored
    (a loop calling ``model[2](model[1](model[0](x)))`` recorded no layer, a warning)."""
    class Raises(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            self.lin(x)
            raise RuntimeError("boom")

    bad = Raises()
    bad_watch = dlt.Watch(bad, every=1, theory=False)
    with pytest.raises(RuntimeError, match="boom"):
        bad(torch.randn(3, 4))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    watch = dlt.Watch(model, every=1, theory=False)
    out = {}
    model[0].register_forward_hook(lambda m, a, o: out.setdefault("pre", o.detach().clone()))
    loss = F.cross_entropy(model[2](model[1](model[0](x))), y)
    loss.backward()
    watch.step(loss)
    frame = watch.frame()
    assert sorted(set(frame.layer)) == [0, 1, 2]
    row = frame[(frame.layer == 1) & (frame.quantity == "pre_std")]
    assert row.value.item() == pytest.approx(out["pre"].std(unbiased=False).item(), rel=1e-5)
    watch.close()
    bad_watch.close()
