"""depthlab.torch.Watch in training loops practitioners write that earlier rounds left out:
activation checkpointing without reentrancy (with percentiles), a GAN (two models, two
optimizers, the generator's loss backpropagated through the watched discriminator), bf16
autocast without a GradScaler, MAML through ``torch.func.functional_call``, LBFGS with the
Watch inside its closure, ``zero_grad(set_to_none=False)``, the model called twice per step,
``load_state_dict`` mid-run (in place and ``assign=True``) and a module replaced at a recorded
step. Each recorded value is compared with a direct autograd computation, and training with a
Watch is compared bit for bit with the same training without one."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.utils.checkpoint import checkpoint  # noqa: E402

import depthlab.torch as dlt  # noqa: E402

F = nn.functional


def _mlp(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(),
                         nn.Linear(8, 3)).to(dtype)


def _data(rows=6, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 5, generator=g).to(dtype), torch.randint(0, 3, (rows,), generator=g)


def _pstd(t):
    return t.detach().double().std(unbiased=False).item()


def _table(watch, step):
    frame = watch.frame()
    return frame[frame.step == step].set_index(["layer", "quantity"]).value


def _direct(model, x, y, loss_fn=F.cross_entropy, context=None):
    """Each Linear's output and ``dL/d output`` and each weight's gradient, by autograd on a
    copy of ``model``."""
    ref = copy.deepcopy(model)
    outs, h = [], x
    with context if context is not None else torch.enable_grad():
        for m in ref:
            h = m(h)
            if isinstance(m, nn.Linear):
                if h.requires_grad:  # not below a frozen first layer
                    h.retain_grad()
                outs.append(h)
        loss = loss_fn(h, y)
    loss.backward()
    weights = [m.weight for m in ref if isinstance(m, nn.Linear)]
    return outs, [o.grad for o in outs], [w.grad for w in weights], loss


def _check(table, outs, gouts, wgrads, rel=1e-10):
    for i, (o, g, gw) in enumerate(zip(outs, gouts, wgrads)):
        assert table[(i + 1, "pre_std")] == pytest.approx(_pstd(o), rel=rel)
        assert table[(i + 1, "pre_mean")] == pytest.approx(o.double().mean().item(), rel=rel)
        assert table[(i + 1, "grad_pre_std")] == pytest.approx(_pstd(g), rel=rel)
        assert table[(i + 1, "weight_grad_std")] == pytest.approx(_pstd(gw), rel=rel)


# ---------------------------------------------------------------------------------------------
# activation checkpointing


class _Checkpointed(nn.Module):
    def __init__(self, reentrant):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
        self.b = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Dropout(0.3), nn.Linear(8, 8),
                               nn.ReLU())
        self.h = nn.Linear(8, 3)
        self.reentrant = reentrant

    def forward(self, x):
        x = self.a(x)
        if self.reentrant is None:
            x = self.b(x)
        else:
            x = checkpoint(self.b, x, use_reentrant=self.reentrant)
        return self.h(x)


def _checkpoint_run(reentrant, watched):
    model = _Checkpointed(reentrant).double()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(16, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,),
                                                                                generator=g)
    watch = dlt.Watch(model, every=2, theory=False, percentiles=(1, 25, 50)) if watched else None
    torch.manual_seed(7)  # the dropout's draws
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if watch is not None:
            watch.step(loss)
        opt.step()
        losses.append(loss.detach())
    return model, losses, watch


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpointed_segment_is_measured_as_without_checkpointing(reentrant):
    """The backward recomputes the checkpointed segment (its forward hooks fire a second
    time, with dropout replayed): every row, percentiles included, equals the plain model's,
    and training is bit-identical with and without the Watch."""
    plain_model, plain_losses, plain = _checkpoint_run(None, True)
    ref_model, ref_losses, _ = _checkpoint_run(reentrant, False)
    model, losses, watch = _checkpoint_run(reentrant, True)
    assert all(torch.equal(a, b) for a, b in zip(ref_losses, losses))
    assert all(torch.equal(a, b) for a, b in zip(ref_model.parameters(), model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(plain_losses, losses))
    want = plain.frame().set_index(["step", "layer", "quantity"]).value
    got = watch.frame().set_index(["step", "layer", "quantity"]).value
    assert list(got.index) == list(want.index)
    assert {"pre_p1", "act_p25", "grad_pre_std", "dead_frac"} <= set(got.index.get_level_values(2))
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-9, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# two models, two optimizers


def _gan(watched, every=2):
    torch.manual_seed(0)
    gen = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 5)).double()
    disc = nn.Sequential(nn.Linear(5, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1)).double()
    opt_g = torch.optim.Adam(gen.parameters(), lr=1e-2, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-2, betas=(0.5, 0.999))
    w_g = dlt.Watch(gen, every=every) if watched else None
    w_d = dlt.Watch(disc, every=every) if watched else None
    rng = torch.Generator().manual_seed(5)
    labels = torch.cat([torch.ones(8, 1), torch.zeros(8, 1)]).double()
    losses, seen = [], []
    for _ in range(5):
        real = torch.randn(8, 5, generator=rng, dtype=torch.float64) + 2
        z = torch.randn(8, 3, generator=rng, dtype=torch.float64)
        seen.append({"gen": copy.deepcopy(gen), "z": z})
        fake = gen(z)
        opt_d.zero_grad()  # the discriminator's step: the generator's output detached
        both = torch.cat([real, fake.detach()])
        seen[-1].update(disc=copy.deepcopy(disc), both=both)
        loss_d = F.binary_cross_entropy_with_logits(disc(both), labels)
        loss_d.backward()
        if w_d is not None:
            w_d.step(loss_d)
        opt_d.step()
        seen[-1]["disc_after"] = copy.deepcopy(disc)
        opt_g.zero_grad()  # the generator's step: its loss backpropagates through disc
        loss_g = F.binary_cross_entropy_with_logits(disc(fake), labels[:8])
        loss_g.backward()
        if w_g is not None:
            w_g.step(loss_g)
        opt_g.step()
        losses.append((loss_d.detach(), loss_g.detach()))
    return gen, disc, losses, w_g, w_d, seen


def test_gan_with_a_watch_on_each_model():
    """The discriminator's Watch records its own step (the forward on real and detached fake
    samples), not the generator's pass through it, which ran while it was armed; the
    generator's records the gradient that came back through the updated discriminator; both
    trainings are bit-identical to the same loop without Watches."""
    gen0, disc0, losses0, _, _, _ = _gan(False)
    gen, disc, losses, w_g, w_d, seen = _gan(True)
    assert all(torch.equal(a, b) for pair0, pair in zip(losses0, losses)
               for a, b in zip(pair0, pair))
    for a, b in zip([*gen0.parameters(), *disc0.parameters()],
                    [*gen.parameters(), *disc.parameters()]):
        assert torch.equal(a, b)
    labels = torch.cat([torch.ones(8, 1), torch.zeros(8, 1)]).double()
    for step in (0, 2, 4):
        at = seen[step]
        outs, gouts, wgrads, _ = _direct(at["disc"], at["both"], labels,
                                         F.binary_cross_entropy_with_logits)
        _check(_table(w_d, step), outs, gouts, wgrads)
        assert _table(w_d, step)[(0, "loss")] == losses[step][0].item()
        disc_after = at["disc_after"]

        def through_disc(fake, target, disc_after=disc_after):
            return F.binary_cross_entropy_with_logits(disc_after(fake), target)
        outs, gouts, wgrads, _ = _direct(at["gen"], at["z"], labels[:8], through_disc)
        _check(_table(w_g, step), outs, gouts, wgrads)
    assert w_g.theory is not None and w_d.theory is not None


# ---------------------------------------------------------------------------------------------
# precision, functional calls, closures


def test_bf16_autocast_without_a_scaler_rows_equal_autograd():
    """bf16 autocast on the CPU without a GradScaler (bf16 needs none): the rows are the
    statistics of the bf16 outputs and gradients autograd gives, computed in float32; the
    float32 weights' gradients are read as they are."""
    model = _mlp(dtype=torch.float32)
    x, y = _data(dtype=torch.float32)
    want = _direct(model, x, y, context=torch.autocast("cpu", dtype=torch.bfloat16))
    assert all(o.dtype == torch.bfloat16 for o in want[0])
    watch = dlt.Watch(model, every=1, theory=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    watch.step(loss)
    _check(_table(watch, 0), *want[:3], rel=1e-6)
    assert _table(watch, 0)[(0, "loss")] == want[3].item()


def test_maml_through_functional_call_measures_the_adapted_forward():
    """MAML: an inner step by ``torch.autograd.grad(create_graph=True)``, then the outer loss
    of ``torch.func.functional_call(model, fast_weights, x)``. The rows are those of that
    forward (the adapted weights'); ``weight_*`` are the model's own parameters and their
    meta-gradient."""
    from torch.func import functional_call

    model = _mlp()
    x, y = _data()
    xq, yq = _data(seed=4)
    watch = dlt.Watch(model, every=1, theory=False)
    params = dict(model.named_parameters())
    inner = F.cross_entropy(functional_call(model, params, (x,)), y)
    grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
    fast = {k: v - 0.5 * g for (k, v), g in zip(params.items(), grads)}
    outs, h = [], xq
    for i, m in enumerate(model):  # the outer forward by hand, on the same graph
        h = F.linear(h, fast[f"{i}.weight"], fast[f"{i}.bias"]) if isinstance(m, nn.Linear) \
            else m(h)
        if isinstance(m, nn.Linear):
            outs.append(h)
    outer_ref = F.cross_entropy(h, yq)
    gouts = torch.autograd.grad(outer_ref, outs, retain_graph=True)
    meta = torch.autograd.grad(outer_ref, [model[i].weight for i in (0, 2, 4)],
                               retain_graph=True)
    loss = F.cross_entropy(functional_call(model, fast, (xq,)), yq)
    loss.backward()
    watch.step(loss)
    table = _table(watch, 0)
    _check(table, outs, gouts, meta)
    for i in range(3):
        assert table[(i + 1, "weight_std")] == pytest.approx(_pstd(model[2 * i].weight),
                                                             rel=1e-12)


def _lbfgs(where, max_iter=3):
    model = _mlp()
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=max_iter)
    x, y = _data(rows=16)
    watch = dlt.Watch(model, every=1, theory=False) if where else None
    evals = []  # (weights, layer outputs' stats by autograd) at each closure evaluation

    def closure():
        evals.append(_direct(model, x, y) + ([m.weight.detach().clone()
                                               for m in model if isinstance(m, nn.Linear)],))
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if where == "closure":
            watch.step(loss)
        return loss
    for _ in range(2):
        opt.step(closure)
    return model, watch, evals


def test_lbfgs_with_the_watch_inside_its_closure():
    """A closure optimizer evaluates the model several times per ``opt.step``: with
    ``watch.step(loss)`` in the closure after ``backward`` each evaluation is a step, and
    every row is that evaluation's (the weights it ran with, its gradients); training is
    bit-identical."""
    ref, _, _ = _lbfgs(None)
    model, watch, evals = _lbfgs("closure")
    assert all(torch.equal(a, b) for a, b in zip(ref.parameters(), model.parameters()))
    assert watch.steps_seen == len(evals) == 6  # 3 evaluations per opt.step
    for step in (0, 3, 5):
        outs, gouts, wgrads, loss, weights = evals[step]
        table = _table(watch, step)
        _check(table, outs, gouts, wgrads)
        assert table[(0, "loss")] == pytest.approx(loss.item(), rel=1e-12)
        for i, w in enumerate(weights):
            assert table[(i + 1, "weight_std")] == pytest.approx(_pstd(w), rel=1e-12)
            if step:
                w0 = evals[step - 1][4][i]
                assert table[(i + 1, "update_ratio")] == pytest.approx(
                    ((w - w0).norm() / w0.norm()).item(), rel=1e-9)


def test_watch_step_before_a_closure_optimizers_step_is_refused_clearly():
    model = _mlp()
    watch = dlt.Watch(model, every=1, theory=False)
    x, y = _data()
    model.zero_grad()
    with pytest.raises(ValueError, match="before any backward"):
        watch.step(F.cross_entropy(model(x), y).detach())


def test_zero_grad_without_set_to_none_and_the_model_called_twice_per_step():
    """``zero_grad(set_to_none=False)`` (gradients zeroed in place, accumulated in place) and
    a step whose loss sums two forwards of the model (the same weights on two batches): the
    layer rows pool both forwards (the backward ran through both, as ``dlt.probe`` pools a
    module's calls), with the gradient of the summed loss; ``weight_grad_*`` the accumulated
    ``.grad``; training is bit-identical."""
    def run(watched):
        model = _mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        watch = dlt.Watch(model, every=2, theory=False) if watched else None
        (x, y), (x2, y2) = _data(), _data(seed=2)
        seen = {}
        for step in range(4):
            opt.zero_grad(set_to_none=False)
            if step == 2:
                seen["model"] = copy.deepcopy(model)
            loss = F.cross_entropy(model(x), y) + F.cross_entropy(model(2 * x2), y2)
            loss.backward()
            if watch is not None:
                watch.step(loss)
            opt.step()
        return model, watch, seen, (x, y, 2 * x2, y2)

    ref, _, _, _ = run(False)
    model, watch, seen, (x, y, x2, y2) = run(True)
    assert all(torch.equal(a, b) for a, b in zip(ref.parameters(), model.parameters()))
    before = seen["model"]
    first = F.cross_entropy(before(x), y).detach()
    second = F.cross_entropy(before(x2), y2).detach()

    def total1(out, target):  # the summed loss, seen from the first forward's output
        return F.cross_entropy(out, target) + second

    def total2(out, target):  # ... and from the second forward's
        return first + F.cross_entropy(out, target)
    outs1, gouts1, _, _ = _direct(before, x, y, total1)
    outs2, gouts2, _, _ = _direct(before, x2, y2, total2)
    copy_ = copy.deepcopy(before)
    (F.cross_entropy(copy_(x), y) + F.cross_entropy(copy_(x2), y2)).backward()
    wgrads = [m.weight.grad for m in copy_ if isinstance(m, nn.Linear)]
    _check(_table(watch, 2), [torch.cat([a, b]) for a, b in zip(outs1, outs2)],
           [torch.cat([a, b]) for a, b in zip(gouts1, gouts2)], wgrads)


# ---------------------------------------------------------------------------------------------
# the model changed mid-run


def test_load_state_dict_in_place_mid_run():
    """``load_state_dict`` (copied into the same parameters, e.g. a rollback to a checkpoint):
    the next update ratio includes the jump, and every row after it reads the loaded weights."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = dlt.Watch(model, every=1, theory=False)
    other = _mlp(seed=3).state_dict()
    x, y = _data()
    snaps = []
    for step in range(4):
        if step == 2:
            model.load_state_dict(other)
        snaps.append([m.weight.detach().clone() for m in model if isinstance(m, nn.Linear)])
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
        opt.step()
    for step in (2, 3):
        table = _table(watch, step)
        for i in range(3):
            w0, w1 = snaps[step - 1][i], snaps[step][i]
            assert table[(i + 1, "update_ratio")] == pytest.approx(
                ((w1 - w0).norm() / w0.norm()).item(), rel=1e-10)
            assert table[(i + 1, "weight_std")] == pytest.approx(_pstd(w1), rel=1e-12)


def _reassign(model, step, how):
    if how == "assign":  # load_state_dict(assign=True): new Parameter objects
        model.load_state_dict(_mlp(seed=3).state_dict(), assign=True)
    else:  # a new head
        torch.manual_seed(9)
        model[4] = nn.Linear(8, 3).double()


# regression: a record at the step where weights were re-assigned raised 'called again without
# a backward' (assign) or measured the replaced head (its stale .grad)
@pytest.mark.parametrize("kernels", ["numba", "numpy"])
@pytest.mark.parametrize("how", ["assign", "head"])
@pytest.mark.parametrize("every", [1, 2])
def test_weights_replaced_right_before_a_recorded_step(monkeypatch, kernels, how, every):
    """``load_state_dict(assign=True)`` (every weight a new Parameter) or a head replaced
    before the forward of a recorded step, a new optimizer over the new parameters. Was:
    'Watch.step(loss) was called again without a backward' (every replaced weight's .grad was
    still the one of the step before), or the replaced head's rows (its weights, its previous
    step's gradient). Now that record reads the model's weights and their fresh gradients
    (no update ratio for a replaced weight), and a replaced module is left out of it."""
    if kernels == "numpy":
        monkeypatch.setenv("DEPTHLAB_PROBE_KERNELS", "numpy")
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = dlt.Watch(model, every=every, theory=False)
    x, y = _data()
    for step in range(5):
        if step == 2:
            _reassign(model, step, how)
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
        if step in (2, 4):
            want = _direct(model, x, y)
            weights = [m.weight.detach().clone() for m in model if isinstance(m, nn.Linear)]
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
        opt.step()
        if step in (2, 4):
            table = _table(watch, step)
            layers = range(3) if how == "assign" or step == 4 else range(2)
            for i in layers:
                assert table[(i + 1, "weight_std")] == pytest.approx(_pstd(weights[i]),
                                                                     rel=1e-12)
                assert table[(i + 1, "weight_grad_std")] == pytest.approx(_pstd(want[2][i]),
                                                                          rel=1e-10)
                assert table[(i + 1, "grad_pre_std")] == pytest.approx(_pstd(want[1][i]),
                                                                       rel=1e-10)
            if how == "head" and step == 2:  # the new head has not run while armed yet
                assert 3 not in set(table.index.get_level_values(0))
            replaced = how == "assign" and step == 2
            assert ((1, "update_ratio") in table.index) == (not replaced)


def test_a_compiled_model_or_submodule_is_refused_by_name():
    """``model.compile()`` compiles in place (the module stays a plain nn.Module): the Watch
    ran its hooks inside the compiled forward, where the activation rows (act_*, dead_frac,
    saturated_frac, inactive_frac) were silently missing and each recorded step recompiled.
    It is refused now, as ``torch.compile(model)`` is, naming the compiled module."""
    model = _mlp()
    model.compile()  # lazy: nothing is compiled before the first call
    with pytest.raises(TypeError, match=r"Sequential is compiled \(model.compile\(\)"):
        dlt.Watch(model)
    model = _mlp()
    model[2].compile()
    with pytest.raises(TypeError, match="module '2' of Sequential is compiled"):
        dlt.probe(model, *_data(), nn.CrossEntropyLoss())
    model = _mlp()
    model[2] = torch.compile(model[2])
    with pytest.raises(TypeError, match="module '2' of Sequential is compiled"):
        dlt.Watch(model)
    with pytest.raises(TypeError, match=r"pass the original module \(model._orig_mod\)"):
        dlt.Watch(torch.compile(_mlp()))


# regression: a layer frozen mid-run kept reporting the .grad of its last trained step
@pytest.mark.parametrize("kernels", ["numba", "numpy"])
def test_a_layer_frozen_mid_run_has_no_gradient_rows_after(monkeypatch, kernels):
    """Fine-tuning: the first layer frozen at step 2 (``requires_grad_(False)``) and a new
    optimizer over the others. Its ``.grad`` keeps step 1's gradient (nothing clears it), and
    ``weight_grad_std`` reported that value (0.053381) again at steps 2 and 3. Now a frozen
    weight has no ``weight_grad_*`` rows, as when it is frozen from the start; the trained
    layers' rows equal autograd's."""
    if kernels == "numpy":
        monkeypatch.setenv("DEPTHLAB_PROBE_KERNELS", "numpy")
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = dlt.Watch(model, every=1, theory=False)
    x, y = _data()
    for step in range(4):
        if step == 2:
            model[0].requires_grad_(False)
            opt = torch.optim.SGD([*model[2].parameters(), *model[4].parameters()], lr=0.1)
        want = _direct(model, x, y)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
        opt.step()
        table = _table(watch, step)
        assert ((1, "weight_grad_std") in table.index) == (step < 2)
        assert ((1, "weight_grad_absmean") in table.index) == (step < 2)
        for i in (1, 2):
            assert table[(i + 1, "weight_grad_std")] == pytest.approx(_pstd(want[2][i]),
                                                                      rel=1e-10)
        if step < 2:
            assert table[(1, "grad_pre_std")] == pytest.approx(_pstd(want[1][0]), rel=1e-10)
        else:  # its output needs no gradient now
            assert (1, "grad_pre_std") not in table.index and want[1][0] is None
    assert model[0].weight.grad is not None  # torch left the stale gradient there
