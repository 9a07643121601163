"""Round 46 (watchrec46): the record side of ``Watch.step`` made cheaper, its results unchanged.

- the losses (kept per step, read at the record) stay the loop's own to the bit, a running-loss
  tensor the loop reuses gives each step its own value, and a refused call keeps no loss (the
  host-float variant of this round, reverted, was checked by these);
- ``Recording._settle`` returns at once when no earlier pass was graded: the pass read is
  still the training pass when other forwards ran (validation, saliency, siamese pairs);
- ``watch._untouched`` stops at the first changed gradient: the same answer as the formula
  ``bool(live) and all(unchanged(m) for m in live)``;
- ``Watch._changed`` tests a module without parameters inline: a parameter registered on one
  (an activation given a learnable slope) is still a change.
"""
from __future__ import annotations

import warnings
import weakref

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.torch import watch as W  # noqa: E402

STEPS = 13


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 4))


def _data(n: int = STEPS):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 12, generator=g), torch.randint(0, 4, (8,), generator=g))
            for _ in range(n)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("every", [1, 3, 10])
def test_losses_are_the_loops_own_to_the_bit(dtype, every):
    """``losses()`` and the ``loss`` rows equal the loop's ``loss.item()`` bit for bit, for a
    float32, float64 and bfloat16 loss, whether the step records, arms or neither."""
    model = _mlp().to(torch.float64 if dtype == torch.float64 else torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = dlt.Watch(model, every=every, theory=False)
    mine = []
    for x, y in _data():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x.to(next(model.parameters()).dtype)), y)
        loss = loss.to(dtype)
        loss.backward()
        mine.append(loss.item())
        watch.step(loss)
        opt.step()
    watch.close()
    got = watch.losses()
    assert got.step.tolist() == list(range(STEPS))
    assert got.loss.tolist() == mine
    rows = watch.frame()
    rows = rows[rows.quantity == "loss"]
    assert rows.step.tolist() == list(range(0, STEPS, every))
    assert rows.value.tolist() == mine[::every]


def test_a_running_loss_tensor_gives_each_step_its_value():
    """A loss tensor the loop reuses in place (``total.zero_(); total += part``) is read as it
    is at its own step: each step's loss, not the value the tensor holds at the record."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = dlt.Watch(model, every=5, theory=False)
    total = torch.zeros(())
    mine = []
    for x, y in _data():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        with torch.no_grad():
            total.zero_()
            total += loss.detach()
        mine.append(total.item())
        watch.step(total)
        opt.step()
    watch.close()
    assert watch.losses().loss.tolist() == mine


def test_a_refused_call_keeps_no_loss():
    """A call without a backward since the last one is refused at a record and its loss is not
    kept (the float of the call is popped like the tensor was): the next steps' losses stay
    numbered as before."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = dlt.Watch(model, every=2, theory=False)
    data = _data(6)
    mine = []
    for i, (x, y) in enumerate(data):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        mine.append(loss.item())
        watch.step(loss)
        opt.step()
        if i == 1:  # call 2 records: again without a backward since call 1, refused
            with pytest.raises(ValueError, match="without a backward"):
                watch.step(loss)
    watch.close()
    got = watch.losses()
    assert got.step.tolist() == list(range(len(mine)))
    assert got.loss.tolist() == mine


def _old_untouched(marks):
    """The formula before this round (a list of the weights that train, then ``all``)."""
    if not marks:
        return False
    live = [m for m in marks if m[0].requires_grad]
    return bool(live) and all((g := p.grad) is not None and g._version == v
                              and (s := ref()) is not None and s is W._storage_of(g)
                              for p, ref, v in live)


def _marks(params):
    return [(p, weakref.ref(p.grad.untyped_storage()), p.grad._version) for p in params]


def test_untouched_answers_as_the_formula():
    """Unchanged gradients: True; one changed in place, replaced, or cleared: False; a frozen
    weight is skipped; every weight frozen (or no marks): False."""
    params = [nn.Parameter(torch.randn(3)) for _ in range(3)]
    for p in params:
        p.grad = torch.ones(3)
    marks = _marks(params)
    assert W._untouched(marks) is True and _old_untouched(marks) is True
    params[1].grad.add_(1.0)  # in place: a new version
    assert W._untouched(marks) is False and _old_untouched(marks) is False
    marks = _marks(params)
    params[2].grad = torch.zeros(3)  # replaced: another storage
    assert W._untouched(marks) is False and _old_untouched(marks) is False
    marks = _marks(params)
    params[0].grad = None
    assert W._untouched(marks) is False and _old_untouched(marks) is False
    params[0].grad = torch.ones(3)
    marks = _marks(params)
    params[0].requires_grad_(False)  # frozen since: its gradient is not read
    params[0].grad = None
    assert W._untouched(marks) is True and _old_untouched(marks) is True
    for p in params:
        p.requires_grad_(False)
    assert W._untouched(marks) is False and _old_untouched(marks) is False
    assert W._untouched([]) is False and W._untouched(None) is False


@pytest.mark.parametrize("every", [1, 3])
def test_other_forwards_leave_the_training_pass_read(every):
    """With a validation forward (gradients on, no backward) after the training step's, and
    with an input-gradient pass (a saliency map) after it, the record reads the training pass:
    the same frame as a loop without them."""
    def run(extra: str):
        model = _mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        watch = dlt.Watch(model, every=every, theory=False)
        for x, y in _data(7):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            grads = [p.grad.clone() for p in model.parameters()]
            if extra == "val":
                model(x * 3.0).sum()
            elif extra == "saliency":
                xs = (x * 3.0).requires_grad_()
                model(xs).sum().backward(inputs=[xs])
            for p, g in zip(model.parameters(), grads):
                assert torch.equal(p.grad, g)
            watch.step(loss)
            opt.step()
        watch.close()
        return watch.frame()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = run("")
        for extra in ("val", "saliency"):
            other = run(extra)
            assert other.shape == plain.shape
            assert other.quantity.tolist() == plain.quantity.tolist()
            assert other.value.tolist() == plain.value.tolist(), extra


def test_a_parameter_registered_on_an_activation_is_a_change():
    """A module that had no parameters given one (a ReLU given a learnable slope by
    ``register_parameter``) is a change of the model: found again, with a warning."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = dlt.Watch(model, every=2, theory=False)
    data = _data(5)
    caught = []
    for i, (x, y) in enumerate(data):
        if i == 3:
            model[1].register_parameter("slope", nn.Parameter(torch.ones(())))
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            watch.step(loss)
        caught += [str(m.message) for m in w]
        opt.step()
    watch.close()
    assert any("changed by step 3" in m for m in caught), caught
    assert watch._changed() is False  # found again: no change since
