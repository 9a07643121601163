"""Round 47 (watchB47): the per-step and per-forward paths of a Watch made cheaper, exactly.

- ``Watch.step``'s unrecorded call (neither records nor arms) takes a short path: the same
  losses, errors and hook state as the general path;
- ``_Pass``'s predicates (``plainly_graded``, ``graded``, ``tapped``, ``gradeable``) and the
  forward's ``_swapped``/``_links_need_grad``/``_any_graded`` are loops now: the same answers
  as the ``any(...)`` formulas they replace;
- ``Recording.arm``/``disarm`` store and pop flat lists (``_puts_pops``): the hook dicts are
  the same as registering gives, in the same order, at every arm;
- ``_FORWARDS`` is only touched while a forward of the model is in progress.
"""

from __future__ import annotations

import itertools
import weakref

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.torch import hooks as H  # noqa: E402


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(inplace=True),
                         nn.Linear(8, 3))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)


def _hook_state(model: nn.Module) -> list:
    """Every module's hook dicts: ids in order, hook objects, and the with_kwargs / always
    marks."""
    out = []
    for m in model.modules():
        out.append((list(m._forward_pre_hooks.items()), list(m._forward_hooks.items()),
                    sorted(m._forward_pre_hooks_with_kwargs),
                    sorted(m._forward_hooks_with_kwargs),
                    sorted(m._forward_hooks_always_called)))
    return out


@pytest.mark.parametrize("every", [3, 4, 10])
@pytest.mark.parametrize("kind", ["fresh", "running", "leaf", "view", "fp64"])
def test_unrecorded_steps_keep_each_steps_own_loss(every: int, kind: str) -> None:
    """Every step's loss as the loop saw it, whatever tensor the loop passes: a running total
    written in place afterwards (version != 0), a leaf, a view, a float64 loss."""
    model, (x, y) = _mlp(), _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    w = dlt.Watch(model, every=every)
    total = torch.zeros(())
    seen = []
    for i in range(2 * every + 2):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x + 0.01 * i), y)
        loss.backward()
        if kind == "running":
            total.zero_()
            total += loss.detach()
            passed = total
        elif kind == "leaf":
            passed = loss.detach().clone()
        elif kind == "view":
            passed = loss.detach().reshape(1)[0]
        elif kind == "fp64":
            passed = loss.detach().double() * 1.0 + 0 * loss.double()
        else:
            passed = loss
        seen.append(float(passed))
        w.step(passed)
        if kind == "running":
            total.add_(100.0)  # written after the step: the kept value must not move
        opt.step()
    losses = w.losses()
    w.close()
    assert list(losses["step"]) == list(range(len(seen)))
    assert list(losses["loss"]) == seen


def test_an_unrecorded_step_refuses_what_the_general_path_refuses() -> None:
    model, (x, y) = _mlp(), _data()
    w = dlt.Watch(model, every=10)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    w.step(loss)  # step 0: records
    for bad, error, text in ((torch.ones(2), ValueError, "scalar"),
                             (torch.tensor(3), ValueError, "float"),
                             (torch.empty((), device="meta"), ValueError, "meta"),
                             ("0.5", TypeError, "str")):
        with pytest.raises(error, match=text):
            w.step(bad)
        assert w.steps_seen == 1  # a refused call is not a step
    w.step(torch.tensor(0.25))
    assert w.steps_seen == 2
    w.close()
    with pytest.raises(RuntimeError, match="after close"):
        w.step(torch.tensor(0.5))


def test_an_unrecorded_step_takes_the_hooks_off_when_they_are_on() -> None:
    """Hooks left on at an unrecorded call (armed by hand here) are taken off by it, as
    before: the short path is only for calls that find them off."""
    model, (x, y) = _mlp(), _data()
    before = _hook_state(model)
    w = dlt.Watch(model, every=10)
    for _ in range(2):
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        w.step(loss)
    assert not w._rec.armed
    w._rec.arm()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    w.step(loss)
    assert not w._rec.armed and w.steps_seen == 3
    w.close()
    assert _hook_state(model) == before


def test_the_pass_predicates_answer_as_their_formulas() -> None:
    class A:
        def __init__(self, ns: int) -> None:
            self.ns = ns

    class Fn:
        pass

    live = Fn()
    dead_ref = weakref.ref(Fn())
    tables = [{}, {0: A(0)}, {0: A(0), 1: A(2)}, {3: A(1)}]
    taps = [[], [dead_ref], [dead_ref, weakref.ref(live)]]
    for grad, grad_cg, tap in itertools.product(tables, tables, taps):
        p = H._Pass()
        p.grad, p.grad_cg, p.taps = dict(grad), dict(grad_cg), list(tap)
        plain = any(acc.ns for acc in p.grad.values())
        graded = plain or any(acc.ns for acc in p.grad_cg.values())
        alive = any(r() is not None for r in p.taps)
        assert p.plainly_graded() is plain
        assert p.graded() is graded
        assert p.tapped() is alive
        assert p.gradeable() is (graded or alive)
        assert H._any_graded([H._Pass(), p]) is graded
    assert H._any_graded([]) is False


def test_swapped_and_links_answer_as_their_formulas() -> None:
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    slots = [(a, "weight", a.weight), (b, "weight", b.weight)]
    assert H._swapped(slots) is False and H._swapped([]) is False
    assert H._swapped([(a, "weight", b.weight)]) is True
    assert H._swapped([*slots, (a, "missing", a.weight)]) is True
    t, u = torch.ones(2, requires_grad=True), torch.ones(2)
    assert H._links_need_grad({}) is False
    assert H._links_need_grad({1: (u,), 2: (u,)}) is False
    assert H._links_need_grad({1: (u,), 2: (t,)}) is True


def test_every_arm_gives_the_hook_dicts_of_the_first() -> None:
    """Arm, disarm and arm again (the flat lists of _puts_pops): the same ids, hooks, order and
    marks as registering gave, and nothing left after a disarm; a user's hook registered
    meanwhile stays before them."""
    model = _mlp()
    before = _hook_state(model)
    rec = H.Recording(model)
    x, y = _data()
    rec.arm()
    nn.functional.cross_entropy(model(x), y).backward()  # the first pass: blocks found
    rec.disarm()
    assert _hook_state(model) == before
    rec.arm()
    first = _hook_state(model)
    assert first != before
    for _ in range(3):
        rec.disarm()
        assert _hook_state(model) == before
        rec.arm()
        assert _hook_state(model) == first
    rec.disarm()
    handle = model[0].register_forward_hook(lambda m, a, o: None)
    rec.arm()
    hooks = list(model[0]._forward_hooks)
    assert hooks[0] == handle.id and len(hooks) == 2
    rec.disarm()
    handle.remove()
    assert _hook_state(model) == before


def test_a_forward_that_raised_leaves_no_recording_in_forwards() -> None:
    """A forward that raised inside the model leaves its recording marked as in a forward;
    disarm and arm take it out, and a later forward is recorded as usual."""

    class Boom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.fail = True

        def forward(self, x):
            h = self.fc(x)
            if self.fail:
                raise RuntimeError("boom")
            return h

    model = Boom()
    rec = H.Recording(model)
    rec.arm()
    with pytest.raises(RuntimeError, match="boom"):
        model(torch.randn(2, 4))
    assert rec in set(H._FORWARDS) and rec._in_model
    rec.disarm()
    assert rec not in set(H._FORWARDS)
    rec.arm()
    assert rec not in set(H._FORWARDS) and not rec._in_model
    model.fail = False
    model(torch.randn(2, 4)).sum().backward()
    assert rec not in set(H._FORWARDS) and not rec._in_model
    rec.collect()
    assert rec.p.graded()
    rec.disarm()
