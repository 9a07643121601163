"""Round 32 (watchspeed32): Watch's per-step Python on the CPU MLP, the same numbers.

Speed-only changes, checked here for what a user sees:
* an unrecorded step that does not arm (``every >= 3``) returns right after keeping its loss;
* the arming step's weight snapshot is copied with gradients off without ``torch.no_grad()``'s
  context manager (the grad mode the loop had is left as it was);
* a record reads its pass once (no second ``settle``);
* a record's own gradient hooks no longer make the next forward re-order the module hooks
  (every=1), while a user's hook added later still runs before depthlab's.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.torch import hooks as hooks_module  # noqa: E402
from depthlab.torch import watch as watch_module  # noqa: E402

STEPS = 10


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(inplace=True), nn.Linear(5, 4),
                          nn.ReLU(), nn.Linear(4, 3))
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(8, 6, generator=g) for _ in range(STEPS)]
    ys = [torch.randint(0, 3, (8,), generator=g) for _ in range(STEPS)]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return model, xs, ys, opt


def _train(every: int, steps: int = STEPS, no_grad_step: bool = False):
    model, xs, ys, opt = _setup()
    watch = dlt.Watch(model, every=every, theory=False)
    losses, modes = [], []
    for x, y in zip(xs[:steps], ys[:steps]):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        losses.append(loss.item())
        if no_grad_step:
            with torch.no_grad():
                watch.step(loss)
                modes.append(torch.is_grad_enabled())
        else:
            watch.step(loss)
            modes.append(torch.is_grad_enabled())
        opt.step()
    watch.close()
    return watch, model, losses, modes


def test_sparse_records_equal_every_step_records_to_the_bit():
    """every=3 (unrecorded steps returning early, snapshots copied at the arming steps) records
    at steps 0, 3, 6, 9 exactly what every=1 records there, update ratios included; training
    and the losses are unchanged."""
    dense, m1, losses1, modes1 = _train(1)
    sparse, m3, losses3, modes3 = _train(3)
    f1, f3 = dense.frame(), sparse.frame()
    assert sorted(f3["step"].unique()) == [0, 3, 6, 9]
    kept = f1[f1["step"].isin([0, 3, 6, 9])].reset_index(drop=True)
    assert (f3["quantity"] == "update_ratio").sum() == 9  # 3 layers at steps 3, 6, 9
    assert kept.equals(f3)
    assert sparse.losses()["loss"].tolist() == losses3 == losses1
    assert sparse.losses()["step"].tolist() == list(range(STEPS))
    assert sparse.steps_seen == STEPS
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m3.parameters()))
    assert all(modes1) and all(modes3)  # the loop's grad mode left on


def test_update_ratio_against_a_direct_computation():
    """The every=4 update ratio at step 4 is ||W_4 - W_3|| / ||W_3|| of the layer's weight."""
    model, xs, ys, opt = _setup()
    watch = dlt.Watch(model, every=4, theory=False)
    kept, losses = {}, []
    for step, (x, y) in enumerate(zip(xs[:5], ys[:5])):
        kept[step] = model[0].weight.detach().clone().double()  # W_step
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        losses.append(loss.item())
        watch.step(loss)
        opt.step()
    watch.close()
    f = watch.frame()
    got = f[(f["step"] == 4) & (f["layer"] == 1) & (f["quantity"] == "update_ratio")]["value"]
    want = float((kept[4] - kept[3]).norm() / kept[3].norm())
    assert got.iloc[0] == pytest.approx(want, rel=1e-6)
    assert watch.losses()["loss"].tolist() == losses


def test_grad_mode_left_as_the_loop_had_it():
    """Watch.step at arming steps (the snapshot's copy) under no_grad leaves no_grad on; the
    snapshot buffers take no part in autograd (the next update ratios are finite)."""
    watch, _, _, modes = _train(3, no_grad_step=True)
    assert modes == [False] * STEPS
    f = watch.frame()
    ratios = f[f["quantity"] == "update_ratio"]["value"]
    assert len(ratios) == 9 and ratios.notna().all() and (ratios > 0).all()


def test_pending_losses_flushed_on_the_early_return(monkeypatch):
    """The losses of unrecorded steps still go to the host every PENDING_LOSSES steps."""
    monkeypatch.setattr(watch_module, "PENDING_LOSSES", 3)
    watch, _, losses, _ = _train(10)
    assert watch.losses()["loss"].tolist() == losses
    assert watch.losses()["step"].tolist() == list(range(STEPS))


def test_every_step_records_do_not_reorder_the_hooks():
    """At every=1 a record's gradient hooks (node pre-hooks: handles from the same counter as
    module hooks) made each next forward move all of depthlab's module hooks to the end again;
    nothing was added to the modules, so nothing is moved now. (Failed before: one re-order
    per step.)"""
    model, xs, ys, opt = _setup()
    watch = dlt.Watch(model, every=1, theory=False)
    counts = []
    for x, y in zip(xs[:6], ys[:6]):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
        opt.step()
        counts.append(hooks_module._ARMS[0])
    watch.close()
    assert counts[1:] == [counts[1]] * 5


def test_a_hook_added_later_still_runs_before_the_watch():
    """A user's forward hook registered between records (here one doubling layer 1's output)
    is seen by the next record: pre_std of layer 1 doubles against the same run without it."""
    def run(add_hook: bool):
        model, xs, ys, opt = _setup()
        watch = dlt.Watch(model, every=1, theory=False)
        for step, (x, y) in enumerate(zip(xs[:4], ys[:4])):
            if add_hook and step == 2:
                model[0].register_forward_hook(lambda m, a, out: out * 2.0)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            watch.step(loss)
            # no optimizer step: the same weights in both runs
        watch.close()
        f = watch.frame()
        return f[(f["step"] == 2) & (f["layer"] == 1) & (f["quantity"] == "pre_std")]["value"]
    plain, doubled = run(False).iloc[0], run(True).iloc[0]
    assert doubled == pytest.approx(2.0 * plain, rel=1e-6)
