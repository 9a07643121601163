"""depthlab.torch.Watch inside training loops as practitioners write them: model copies and
checkpoints while armed, probes inside the loop, gradient accumulation, LBFGS closures, two
watches, frozen layers, user hooks, lazy modules, unusual ``out`` folders, long runs. Every
recorded value is compared with a direct autograd computation."""

from __future__ import annotations

import copy
import gc
import io

import numpy as np
import pytest
import torch
from torch import nn

import depthlab.torch as dlt
from depthlab.experiments.store import Store
from depthlab.torch import watch as watch_module


def _mlp(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(),
                         nn.Linear(8, 3)).to(dtype)


def _batches(n, rows=6, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(rows, 5, generator=g).to(dtype), torch.randint(0, 3, (rows,),
                                                                          generator=g))
            for _ in range(n)]


def _value(frame, step, layer, quantity):
    got = frame[(frame.step == step) & (frame.layer == layer) & (frame.quantity == quantity)]
    assert len(got) == 1, (step, layer, quantity, got)
    return got.value.item()


def _pstd(t):
    return t.detach().double().std(unbiased=False).item()


def _autograd(model, x, y):
    """Layer outputs, their gradients and the weights' gradients of one CE step, by hand."""
    outs, h = [], x
    for m in model:
        h = m(h)
        if isinstance(m, nn.Linear):
            h.retain_grad()
            outs.append(h)
    loss = nn.functional.cross_entropy(h, y)
    weights = [m.weight for m in model if isinstance(m, nn.Linear)]
    grads = torch.autograd.grad(loss, [*outs, *weights])
    return outs, grads[:len(outs)], grads[len(outs):], loss


def _n_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_copying_or_saving_the_model_while_armed():
    """``copy.deepcopy(model)`` (best-model/EMA copies) and ``torch.save(model)`` between a
    step and the next recorded one failed (``cannot pickle 'module' object``); the copy must
    measure nothing and leave the watch's record alone."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = dlt.Watch(model, every=2)
    copies = []
    data = _batches(4)
    for x, y in data:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
        opt.step()
        copies.append(copy.deepcopy(model))  # armed after steps 1 and 3
        buf = io.BytesIO()
        torch.save(model, buf)
        buf.seek(0)
        loaded = torch.load(buf, weights_only=False)
        for a, b in zip(loaded.parameters(), model.parameters()):
            assert torch.equal(a, b)
    watch.close()
    assert _n_hooks(model) == 0
    before = watch.frame()
    for c in copies:  # running the copies feeds nothing into the watch
        c(torch.randn(3, 5, dtype=torch.float64)).sum().backward()
    assert before.equals(watch.frame())
    # the record of step 2 is the training batch's, as autograd computes it
    ref = _mlp()
    ref.load_state_dict(copies[1].state_dict())
    outs, gouts, _, _ = _autograd(ref, *data[2])
    frame = watch.frame()
    for i in range(3):
        assert _value(frame, 2, i + 1, "pre_std") == pytest.approx(_pstd(outs[i]), rel=1e-10)
        assert _value(frame, 2, i + 1, "grad_pre_std") == pytest.approx(_pstd(gouts[i]),
                                                                         rel=1e-10)


@pytest.mark.parametrize("call", ["probe", "predict", "discover", "probe-before-backward"])
def test_probe_inside_a_watched_loop_is_not_what_the_watch_records(call):
    """A probe of another batch between ``backward`` and ``watch.step`` replaced the
    training batch's statistics in the watch's record (pre_std 1.616 instead of 0.585)."""
    model = _mlp()
    watch = dlt.Watch(model, every=1, theory=False)
    x, y = _batches(1)[0]
    other = 3 * torch.randn(10, 5, dtype=torch.float64)
    loss = nn.functional.cross_entropy(model(x), y)
    if call == "probe-before-backward":  # the forward's hooks on the graph still report
        dlt.probe(model, other, torch.zeros(10, dtype=torch.long), nn.CrossEntropyLoss())
    loss.backward()
    if call == "probe":
        dlt.probe(model, other, torch.zeros(10, dtype=torch.long), nn.CrossEntropyLoss())
    elif call == "predict":
        dlt.predict(model, other)
    else:
        dlt.discover(model, other)
    watch.step(loss)
    watch.close()
    frame = watch.frame()
    outs, gouts, wgrads, _ = _autograd(model, x, y)
    for i in range(3):
        assert _value(frame, 0, i + 1, "pre_std") == pytest.approx(_pstd(outs[i]), rel=1e-10)
        assert _value(frame, 0, i + 1, "grad_pre_std") == pytest.approx(_pstd(gouts[i]),
                                                                         rel=1e-10)
        assert _value(frame, 0, i + 1, "weight_grad_std") == pytest.approx(_pstd(wgrads[i]),
                                                                           rel=1e-10)
    assert _n_hooks(model) == 0


def test_a_probe_does_not_disarm_the_watch_for_its_next_record():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = dlt.Watch(model, every=2, theory=False)
    data = _batches(3)
    for step, (x, y) in enumerate(data):
        if step == 2:  # armed for step 2: the probe pauses the hooks and puts them back
            dlt.probe(model, x, y, nn.CrossEntropyLoss())
            assert _n_hooks(model) > 0
            want = _autograd(model, x, y)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
        opt.step()
    frame = watch.frame()
    outs, gouts = want[0], want[1]
    assert _value(frame, 2, 3, "pre_std") == pytest.approx(_pstd(outs[2]), rel=1e-10)
    assert _value(frame, 2, 1, "grad_pre_std") == pytest.approx(_pstd(gouts[0]), rel=1e-10)


def test_gradient_accumulation():
    """Several backward calls before ``watch.step``: the layer rows are those of the last
    micro-batch, ``weight_grad_*`` the accumulated ``.grad``; the loss row is the loss
    passed."""
    model = _mlp()
    watch = dlt.Watch(model, every=1)
    micro = _batches(3)
    for x, y in micro:
        loss = nn.functional.cross_entropy(model(x), y) / 3
        loss.backward()
    watch.step(loss)
    frame = watch.frame()
    ref = copy.deepcopy(model)
    total = [torch.zeros_like(m.weight) for m in ref if isinstance(m, nn.Linear)]
    for x, y in micro:
        outs, gouts, wgrads, _ = _autograd(ref, x, y)
        total = [t + g / 3 for t, g in zip(total, wgrads)]
    for i in range(3):
        assert _value(frame, 0, i + 1, "pre_std") == pytest.approx(_pstd(outs[i]), rel=1e-10)
        assert _value(frame, 0, i + 1, "grad_pre_std") == pytest.approx(_pstd(gouts[i]) / 3,
                                                                         rel=1e-10)
        assert _value(frame, 0, i + 1, "weight_grad_std") == pytest.approx(_pstd(total[i]),
                                                                           rel=1e-10)
        assert _value(frame, 0, i + 1, "weight_grad_absmean") == pytest.approx(
            total[i].abs().mean().item(), rel=1e-10)
    assert _value(frame, 0, 0, "loss") == loss.item()


def test_lbfgs_closure_update_ratios_and_bit_identical_training():
    def run(watched):
        model = _mlp()
        opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=3)
        x, y = _batches(1, rows=16)[0]
        watch = dlt.Watch(model, every=1) if watched else None
        snaps, losses = [], []
        for _ in range(3):
            snaps.append([m.weight.detach().clone() for m in model if isinstance(m, nn.Linear)])

            def closure():
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                return loss
            loss = opt.step(closure)
            losses.append(loss.item())
            if watch is not None:
                watch.step(loss)
        snaps.append([m.weight.detach().clone() for m in model if isinstance(m, nn.Linear)])
        return model, losses, snaps, watch

    ref, ref_losses, _, _ = run(False)
    model, losses, snaps, watch = run(True)
    assert losses == ref_losses
    assert all(torch.equal(a, b) for a, b in zip(ref.parameters(), model.parameters()))
    frame = watch.frame()
    for step in (1, 2):  # watch.step after opt.step: the change between two calls
        for i in range(3):
            w0, w1 = snaps[step][i], snaps[step + 1][i]
            assert _value(frame, step, i + 1, "update_ratio") == pytest.approx(
                ((w1 - w0).norm() / w0.norm()).item(), rel=1e-10)
    assert list(watch.losses().loss) == losses


def test_two_watches_on_two_models_at_once():
    a, b = _mlp(seed=0), _mlp(seed=1)
    wa, wb = dlt.Watch(a, every=1), dlt.Watch(b, every=1)
    x, y = _batches(1)[0]
    la = nn.functional.cross_entropy(a(x), y)
    lb = nn.functional.cross_entropy(b(2 * x), y)
    (la + lb).backward()
    wa.step(la)
    wb.step(lb)
    for watch, model, xin in ((wa, a, x), (wb, b, 2 * x)):
        outs, gouts, _, _ = _autograd(copy.deepcopy(model), xin, y)
        frame = watch.frame()
        for i in range(3):
            assert _value(frame, 0, i + 1, "pre_std") == pytest.approx(_pstd(outs[i]),
                                                                       rel=1e-10)
            assert _value(frame, 0, i + 1, "grad_pre_std") == pytest.approx(
                _pstd(gouts[i]), rel=1e-10)


def test_frozen_then_unfrozen_layer():
    model = _mlp()
    opt = torch.optim.SGD([{"params": model[0].parameters(), "lr": 0.3},
                           {"params": [*model[2].parameters(), *model[4].parameters()],
                            "lr": 0.1}])
    watch = dlt.Watch(model, every=1)
    model[0].weight.requires_grad_(False)
    snaps = []
    for step, (x, y) in enumerate(_batches(4)):
        if step == 2:
            model[0].weight.requires_grad_(True)
        snaps.append(model[0].weight.detach().clone())
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
        opt.step()
    frame = watch.frame()
    first = frame[frame.layer == 1]
    assert set(first[first.quantity == "weight_grad_std"].step) == {2, 3}
    assert _value(frame, 1, 1, "update_ratio") == 0.0
    assert _value(frame, 2, 1, "update_ratio") == 0.0
    assert _value(frame, 3, 1, "update_ratio") == pytest.approx(
        ((snaps[3] - snaps[2]).norm() / snaps[2].norm()).item(), rel=1e-10)


@pytest.mark.parametrize("theory", [False, True])
def test_user_hooks_keep_working_and_training_is_bit_identical(theory):
    def run(watched):
        model = _mlp(torch.float32)
        seen = []
        model[0].register_forward_hook(lambda m, a, o: o * 2)
        model[2].register_forward_pre_hook(lambda m, a: (a[0] + 1,))
        model[4].register_forward_hook(lambda m, a, o: seen.append(o.shape))
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        watch = dlt.Watch(model, every=2, theory=theory) if watched else None
        losses = []
        for x, y in _batches(5, dtype=torch.float32):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            if watch is not None:
                watch.step(loss)
            opt.step()
            losses.append(loss.detach())
        if watch is not None:
            watch.close()
            notes.append(watch.theory_note)
        return model, losses, seen

    notes = []
    ref, ref_losses, ref_seen = run(False)
    model, losses, seen = run(True)
    assert all(torch.equal(a, b) for a, b in zip(ref_losses, losses))
    assert all(torch.equal(a, b) for a, b in zip(ref.parameters(), model.parameters()))
    # the hook doubling layer 1's output is not modelled: the theory is refused by name
    # (predict's check), before any extra forward that would run the user's hooks
    assert seen == ref_seen and len(ref_seen) == 5
    if theory:
        assert "forward hook on '0' (Linear)" in notes[0], notes
    assert _n_hooks(model) == 3  # the user's, ours gone


def test_watch_attached_after_the_first_forward_records_the_loss_only():
    """The first forward ran before the Watch existed: step 0 has no pass to measure (an
    IndexError in collect); it records its loss, the next record is complete."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = _batches(3)
    watch = None
    for step, (x, y) in enumerate(data):
        if step == 2:
            want = _autograd(copy.deepcopy(model), x, y)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if watch is None:
            watch = dlt.Watch(model, every=2)
            with pytest.warns(RuntimeWarning, match="created after this step's forward"):
                watch.step(loss)
        else:
            watch.step(loss)
        opt.step()
    frame = watch.frame()
    assert list(frame[frame.step == 0].quantity) == ["loss"]
    assert watch.theory is not None  # from the input of step 2
    for i in range(3):
        assert _value(frame, 2, i + 1, "pre_std") == pytest.approx(_pstd(want[0][i]),
                                                                   rel=1e-10)
        assert _value(frame, 2, i + 1, "grad_pre_std") == pytest.approx(_pstd(want[1][i]),
                                                                        rel=1e-10)


def test_lazy_modules_are_refused_clearly_then_work_once_initialized():
    torch.manual_seed(0)
    model = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match=r"'0' \(LazyLinear\).*uninitialized.*model\(x\)"):
        dlt.Watch(model)
    with pytest.raises(ValueError, match="LazyLinear"):
        dlt.probe(model, torch.randn(4, 5), torch.zeros(4, dtype=torch.long),
                  nn.CrossEntropyLoss())
    model(torch.randn(1, 5))
    watch = dlt.Watch(model, every=1)
    model(torch.randn(4, 5)).sum().backward()
    watch.step(1.0)
    assert set(watch.frame().layer) == {0, 1, 2}


def test_out_that_cannot_hold_a_store_fails_before_training(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for bad in (afile, afile / "runs"):
        with pytest.raises(ValueError, match=r"out=.*afile.*cannot hold the run"):
            dlt.Watch(_mlp(), out=bad)
    assert afile.read_text() == "not a folder"
    deep = tmp_path / "a" / "b"  # a folder that does not exist yet is created
    with dlt.Watch(_mlp(), every=1, out=deep) as watch:
        x, y = _batches(1)[0]
        loss = nn.functional.cross_entropy(watch.model(x), y)
        loss.backward()
        watch.step(loss)
    with Store(deep) as store:
        assert len(store.runs()) == 1


def test_losses_of_a_long_run_wait_on_the_device_in_bounded_number(monkeypatch):
    monkeypatch.setattr(watch_module, "PENDING_LOSSES", 16, raising=False)
    model = _mlp()
    watch = dlt.Watch(model, every=1000)
    x, y = _batches(1)[0]
    nn.functional.cross_entropy(model(x), y).backward()
    values = np.random.default_rng(0).normal(size=100)
    longest = 0
    for v in values:
        watch.step(torch.tensor(v, dtype=torch.float64))
        longest = max(longest, len(watch._pending))
    assert longest <= 16
    watch.close()
    losses = watch.losses()
    assert list(losses.step) == list(range(100))
    np.testing.assert_array_equal(losses.loss.to_numpy(), values)


def test_a_dropped_watch_takes_its_hooks_with_it():
    model = _mlp()

    def attach():
        watch = dlt.Watch(model, every=3)
        assert _n_hooks(model) > 0 and watch.steps_seen == 0

    attach()
    gc.collect()
    assert _n_hooks(model) == 0


def _old_weight_norm(linear):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated, still widely used
        return torch.nn.utils.weight_norm(linear)


def test_deprecated_weight_norm_layer_is_its_direction_v():
    """torch.nn.utils.weight_norm (a forward pre-hook, parameters weight_g (8, 1) and
    weight_v): W pooled g with v (weight_std 0.326 where v's is 0.255); W is v, as with the
    parametrization."""
    torch.manual_seed(0)
    model = nn.Sequential(_old_weight_norm(nn.Linear(5, 8)), nn.ReLU(), nn.Linear(8, 2))
    model = model.double()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    watch = dlt.Watch(model, every=1)
    layer = model[0]
    vs, gvs = [], []
    for x, _y in _batches(2):
        vs.append(layer.weight_v.detach().clone())
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        gvs.append(layer.weight_v.grad.clone())
        watch.step(loss)
        opt.step()
    frame = watch.frame()
    assert _value(frame, 0, 1, "weight_std") == pytest.approx(_pstd(vs[0]), rel=1e-10)
    assert _value(frame, 1, 1, "weight_grad_std") == pytest.approx(_pstd(gvs[1]), rel=1e-10)
    assert _value(frame, 1, 1, "update_ratio") == pytest.approx(
        ((vs[1] - vs[0]).norm() / vs[0].norm()).item(), rel=1e-10)


@pytest.mark.parametrize("init", ["he_normal", "lsuv"])
def test_reinitializing_a_deprecated_weight_norm_layer_changes_the_weight_it_uses(init):
    from depthlab.torch import prescriptions as rx
    from depthlab.torch.train import TorchTrainSpec

    torch.manual_seed(0)
    model = nn.Sequential(_old_weight_norm(nn.Linear(100, 100)), nn.ReLU(), nn.Linear(100, 10))
    with torch.no_grad():
        model[0].weight_g.mul_(10.0)  # a 10x too large scale, in the magnitudes
    x = torch.randn(256, 100)
    new, _ = rx.apply({"init": init}, model, TorchTrainSpec(), x)
    layer = new[0]
    weight = torch._weight_norm(layer.weight_v, layer.weight_g, 0).detach()
    if init == "lsuv":  # unit output variance on the batch
        assert abs(float(layer(x).detach().var()) - 1.0) < rx.LSUV_TOL
    else:
        assert abs(float(weight.var()) / (2.0 / 100) - 1) < 0.15


def test_gradient_ratio_of_a_diverged_run_is_nan_not_one():
    """The first layer's gradient std is NaN at the end of a diverged run: the ratio read the
    last layer against itself (1: "flows" in the report's gradient-flow table)."""
    from depthlab import plot

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=1e3)
    watch = dlt.Watch(model, every=2, theory=False)
    g = torch.Generator().manual_seed(0)
    for _ in range(12):
        opt.zero_grad()
        loss = model(10 * torch.randn(4, 5, generator=g)).pow(2).mean()
        loss.backward()
        watch.step(loss)
        opt.step()
    frame = watch.frame()
    end = int(frame.step.max())
    grads = frame[(frame.step == end) & (frame.quantity == "grad_pre_std")]
    assert np.isnan(grads[grads.layer == 1].value.item())
    assert np.isnan(plot.gradient_ratio(frame, end))
    # layer 2 is the output layer, left out as the report and the card leave it out (round
    # 25): the one hidden layer against itself
    assert plot.gradient_ratio(frame) == 1.0
    assert np.isfinite(_value(frame, 0, 2, "grad_pre_std"))


def test_a_recorded_step_without_a_backward_since_the_last_call_is_refused():
    """The second of two calls without a backward between them recorded the first one's
    ``.grad`` as its own (stale weight_grad rows, no layer gradients)."""
    model = _mlp()
    x, y = _batches(1)[0]
    watch = dlt.Watch(model, every=1)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    watch.step(loss)
    with pytest.raises(ValueError, match="without a backward since the previous call"):
        watch.step(loss)
    # every=3: only the call before a recorded one is compared; a fresh backward is fine
    watch = dlt.Watch(model, every=3)
    for step in range(6):
        if step != 1:  # no backward before call 1 (not recorded, nor the one before one)
            model.zero_grad(set_to_none=False)
            nn.functional.cross_entropy(model(x), y).backward()
        watch.step(loss)
    assert sorted(watch.frame().step.unique()) == [0, 3]
    with pytest.raises(ValueError, match="without a backward"):
        watch.step(loss)  # call 6, recorded, without a backward since call 5


@pytest.mark.parametrize("every", [1, 3])
def test_validation_under_inference_mode_while_armed(every):
    """A validation pass under torch.inference_mode() while the hooks are on (every=1; before
    the first step) raised 'Inference tensors do not track version counter' in the user's
    loop; the record and the theory are those of the training batch (the theory came from
    the first forward, the validation batch: act_var 1087 instead of 0.13)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(inplace=True), nn.Linear(8, 8), nn.Tanh(),
                          nn.Linear(8, 3)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = dlt.Watch(model, every=every)
    val = 100 * torch.randn(10, 5, dtype=torch.float64)
    data = _batches(4)
    for step, (x, y) in enumerate(data):
        model.eval()
        with torch.inference_mode():
            model(val)
        with torch.no_grad():
            model(val)
        model.train()
        if step == 0:
            ref = copy.deepcopy(model)
            ref[1] = nn.ReLU()  # retain_grad wants the layer output unchanged in place
            want = _autograd(ref, x, y)
            theory = dlt.predict(ref, x)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
        opt.step()
    watch.close()
    frame = watch.frame()
    for i in range(3):
        assert _value(frame, 0, i + 1, "pre_std") == pytest.approx(_pstd(want[0][i]), rel=1e-10)
        assert _value(frame, 0, i + 1, "grad_pre_std") == pytest.approx(_pstd(want[1][i]),
                                                                         rel=1e-10)
    assert _value(frame, 0, 1, "dead_frac") >= 0.0  # the in-place ReLU still followed
    got = watch.theory.set_index("layer").act_var
    pred = theory[theory.quantity == "act_std"].set_index("layer").predicted
    for layer in (1, 2):
        assert got[layer] == pytest.approx(pred[layer] ** 2, rel=1e-6)


def test_several_inputs_keywords_tuple_output_bilinear_and_embedding():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.bil = nn.Bilinear(3, 4, 6)
            self.out = nn.Linear(6, 2)

        def forward(self, a, idx, *, scale=1.0):
            h = torch.tanh(self.bil(a, self.emb(idx))) * scale
            return self.out(h), h

    torch.manual_seed(0)
    model = Pair().double()
    watch = dlt.Watch(model, every=1)
    a = torch.randn(7, 3, dtype=torch.float64)
    idx = torch.randint(0, 10, (7,))
    out, h = model(a, idx, scale=0.5)
    loss = out.pow(2).mean() + h.abs().mean()
    loss.backward()
    watch.step(loss)
    watch.close()
    frame = watch.frame()
    assert watch.layer_names() == {1: "emb", 2: "bil", 3: "out"}
    assert "Embedding" in watch.theory_note  # not a chain the theory covers, and says so
    ref = copy.deepcopy(model)
    ref.zero_grad()
    e = ref.emb(idx)
    s = ref.bil(a, e)
    o = ref.out(torch.tanh(s) * 0.5)
    for t in (e, s, o):
        t.retain_grad()
    (o.pow(2).mean() + (torch.tanh(s) * 0.5).abs().mean()).backward()
    for layer, t, w in ((1, e, ref.emb.weight), (2, s, ref.bil.weight), (3, o, ref.out.weight)):
        assert _value(frame, 0, layer, "pre_std") == pytest.approx(_pstd(t), rel=1e-10)
        assert _value(frame, 0, layer, "grad_pre_std") == pytest.approx(_pstd(t.grad),
                                                                         rel=1e-10)
        assert _value(frame, 0, layer, "weight_grad_absmean") == pytest.approx(
            w.grad.abs().mean().item(), rel=1e-10)


def test_eval_mode_mid_run_and_spectral_norm():
    torch.manual_seed(0)
    sn = nn.utils.parametrizations.spectral_norm(nn.Linear(5, 8))
    model = nn.Sequential(sn, nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(8, 3)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    watch = dlt.Watch(model, every=1)
    originals = []
    for step, (x, y) in enumerate(_batches(3)):
        if step == 2:
            model.eval()  # e.g. fine-tuning with frozen statistics
            ref = copy.deepcopy(model)
        originals.append(sn.parametrizations.weight.original.detach().clone())
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
        opt.step()
    frame = watch.frame()
    act = ref[2](ref[1](ref[0](x)))
    assert _value(frame, 2, 1, "act_std") == pytest.approx(_pstd(act), rel=1e-10)
    assert _value(frame, 2, 1, "pre_std") == pytest.approx(_pstd(ref[0](x)), rel=1e-10)
    w0, w1 = originals[1], originals[2]
    assert _value(frame, 2, 1, "update_ratio") == pytest.approx(
        ((w1 - w0).norm() / w0.norm()).item(), rel=1e-10)
    assert _value(frame, 0, 1, "weight_std") == pytest.approx(_pstd(originals[0]), rel=1e-10)


def _practitioners_loop(watched, every=2):
    """BatchNorm + dropout, AdamW with two parameter groups, gradient accumulation over two
    micro-batches, gradient clipping, an EMA copy by deepcopy, a validation pass under
    inference_mode and a probe of a fixed batch, every step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.BatchNorm1d(16), nn.ReLU(inplace=True),
                          nn.Dropout(0.2), nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 3))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": rest, "weight_decay": 0.0}], lr=0.01)
    watch = dlt.Watch(model, every=every) if watched else None
    data = _batches(10, rows=8, dtype=torch.float32, seed=5)
    probes, losses, emas = [], [], []
    for step in range(5):
        model.train()
        opt.zero_grad()
        for x, y in data[2 * step: 2 * step + 2]:
            loss = nn.functional.cross_entropy(model(x), y) / 2
            loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if watch is not None:
            watch.step(loss)
        opt.step()
        losses.append(loss.detach())
        emas.append(copy.deepcopy(model))
        model.eval()
        with torch.inference_mode():
            model(data[0][0])
        probes.append(dlt.probe(model, *data[0], nn.CrossEntropyLoss()))
    if watch is not None:
        watch.close()
    return model, losses, probes, watch


def test_a_practitioners_loop_trains_bit_identically_with_a_watch():
    ref, ref_losses, ref_probes, _ = _practitioners_loop(False)
    ref_rng = torch.get_rng_state()
    model, losses, probes, watch = _practitioners_loop(True)
    assert torch.equal(torch.get_rng_state(), ref_rng)
    assert all(torch.equal(a, b) for a, b in zip(ref_losses, losses))
    for (name, a), b in zip(ref.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(ref_probes, probes):
        assert a.equals(b)
    frame = watch.frame()
    assert sorted(frame.step.unique()) == [0, 2, 4]
    assert list(watch.losses().loss) == [float(v) for v in losses]


def test_users_full_backward_hooks_keep_the_activation_rows():
    """A user's register_full_backward_hook wraps the layer's output in a view after the
    forward hooks: the activation after it was not linked (act_*, saturated_frac, dead_frac
    missing)."""
    def run(hooked):
        model = _mlp()
        seen = []
        if hooked:
            for k in (0, 2):
                model[k].register_full_backward_hook(lambda m, gi, go: seen.append(go[0].shape))
        x, y = _batches(1)[0]
        x.requires_grad_(True)  # the hooks' inputs need a gradient: no warning
        watch = dlt.Watch(model, every=1, theory=False)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
        watch.close()
        return watch.frame(), seen

    plain, _ = run(False)
    hooked, seen = run(True)
    assert len(seen) == 2
    assert {"act_std", "saturated_frac", "dead_frac"} <= set(hooked[hooked.layer == 1].quantity)
    assert hooked.equals(plain)


class _Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=True)
        self.head = nn.Linear(16, 3)

    def forward(self, tokens, mask=None):
        h = self.enc(self.emb(tokens), src_key_padding_mask=mask)
        return self.head(h.mean(1))


def test_transformer_validation_on_the_nested_tensor_fast_path_while_armed():
    """nn.TransformerEncoder in eval mode without gradients and with a padding mask runs its
    fast path on nested tensors: a validation pass while armed raised 'NestedTensorImpl
    doesn't support sizes' in the user's loop."""
    import warnings

    tokens = torch.randint(0, 20, (4, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[:, 4:] = True

    def run(validate):
        torch.manual_seed(0)
        model = _Tagger()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        watch = dlt.Watch(model, every=1, theory=False)
        for _ in range(2):
            model.train()
            opt.zero_grad()
            loss = model(tokens, mask=mask).pow(2).mean()
            loss.backward()
            watch.step(loss)
            opt.step()
            if validate:
                model.eval()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # torch's nested prototype
                    with torch.no_grad():
                        model(tokens, mask=mask)
                    with torch.inference_mode():
                        model(tokens, mask=mask)
        watch.close()
        return watch.frame()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        plain, validated = run(False), run(True)
    assert validated.equals(plain)
    assert set(plain.module) >= {"emb", "head", "enc.layers.0.linear1"}


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_validation_between_backward_and_step_is_not_the_record(context):
    """A forward of the model without gradients between the training backward and
    watch.step became the recorded pass (the validation batch's pre_std, no gradient rows)."""
    model = _mlp()
    watch = dlt.Watch(model, every=1, theory=False)
    x, y = _batches(1)[0]
    want = _autograd(copy.deepcopy(model), x, y)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    with context():
        model(100 * torch.randn(9, 5, dtype=torch.float64))
    watch.step(loss)
    frame = watch.frame()
    for i in range(3):
        assert _value(frame, 0, i + 1, "pre_std") == pytest.approx(_pstd(want[0][i]), rel=1e-10)
        assert _value(frame, 0, i + 1, "grad_pre_std") == pytest.approx(_pstd(want[1][i]),
                                                                         rel=1e-10)


def test_several_backward_passes_through_one_forward_are_flagged():
    """Two losses backpropagated separately through one forward (retain_graph): the gradient
    rows pool each backward's gradient (std of the union, not of the sum): warned, once."""
    import warnings

    model = _mlp()
    watch = dlt.Watch(model, every=1, theory=False)
    x, y = _batches(1)[0]
    out = model(x)
    first, second = nn.functional.cross_entropy(out, y), out.pow(2).mean()
    first.backward(retain_graph=True)
    second.backward()
    with pytest.warns(RuntimeWarning, match="several backward passes ran through the forward "
                                            "of step 0"):
        watch.step(first + second)
    watch.close()
    watch = dlt.Watch(model, every=1, theory=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for _ in range(2):  # one backward per forward: silent
            model.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            watch.step(loss)


def test_torchscript_models_and_submodules_are_refused_by_name():
    scripted = torch.jit.script(nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2)))
    with pytest.raises(TypeError, match="RecursiveScriptModule is a TorchScript module"):
        dlt.Watch(scripted)

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = torch.jit.script(nn.Linear(5, 8))
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            return self.head(self.enc(x))

    with pytest.raises(TypeError, match="module 'enc' of Mixed is a TorchScript module"):
        dlt.probe(Mixed(), torch.randn(4, 5), torch.zeros(4, dtype=torch.long),
                  nn.CrossEntropyLoss())


class _Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.fc(x)) + x


class _ResidualTagger(nn.Module):
    def __init__(self, first_output_integer):
        super().__init__()
        self.inp = nn.Linear(5, 8)
        self.stage = nn.Sequential(_Block(8), _Block(8))
        self.out = nn.Linear(8, 3)
        self.first_output_integer = first_output_integer

    def forward(self, x):
        logits = self.out(self.stage(self.inp(x)))
        if self.first_output_integer:
            return {"pred": logits.argmax(1), "logits": logits}
        return {"logits": logits}


def test_residual_blocks_of_a_model_whose_first_output_is_integer():
    """{"pred": argmax, "logits": ...}: the first output needs no gradient, so the search for
    residual blocks never ended; from the second record on the enclosing Sequential was
    taken for a block too (block_grad_std rows of 'stage')."""
    def run(flag):
        torch.manual_seed(0)
        model = _ResidualTagger(flag).double()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        watch = dlt.Watch(model, every=1, theory=False)
        for x, y in _batches(3):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x)["logits"], y)
            loss.backward()
            watch.step(loss)
            opt.step()
        watch.close()
        return watch

    plain, tagged = run(False), run(True)
    blocks = tagged.frame()[tagged.frame().quantity == "block_grad_std"]
    assert set(blocks.module) == {"stage.0", "stage.1"}
    assert tagged.frame().equals(plain.frame())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_update_ratio_of_half_precision_weights_is_exact(dtype):
    """model.to(bfloat16): W - W0 was taken in bf16, rounded to 8 bits where an entry more
    than doubled or changed sign (0.0460530 instead of 0.0460540)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    watch = dlt.Watch(model, every=1, theory=False)
    snaps = []
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        snaps.append([m.weight.detach().double().clone() for m in (model[0], model[2])])
        opt.zero_grad()
        loss = model(torch.randn(6, 5, generator=g).to(dtype)).float().pow(2).mean()
        loss.backward()
        watch.step(loss)
        opt.step()
    frame = watch.frame()
    for step in (1, 2):
        for i in range(2):
            w0, w1 = snaps[step - 1][i], snaps[step][i]
            assert _value(frame, step, i + 1, "update_ratio") == pytest.approx(
                ((w1 - w0).norm() / w0.norm()).item(), rel=1e-6)


class _Checkpointed(nn.Module):
    """Linear-Tanh, then a Linear-Tanh block under activation checkpointing, then a head."""

    def __init__(self, reentrant: bool | None) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
        self.b = nn.Sequential(nn.Linear(8, 8), nn.Tanh())
        self.h = nn.Linear(8, 3)
        self.reentrant = reentrant

    def forward(self, x):
        from torch.utils.checkpoint import checkpoint

        x = self.a(x)
        if self.reentrant is not None:
            x = checkpoint(self.b, x, use_reentrant=self.reentrant)
        else:
            x = self.b(x)
        return self.h(x)


def test_reentrant_checkpointing_probe_and_watch():
    """``checkpoint(..., use_reentrant=True)`` refuses ``autograd.grad``: probe crashed with
    torch's 'incompatible with .grad()'. It now measures by ``backward`` (the user's ``.grad``
    left as they were) and warns that the wrapped layers have no grad_pre_* rows; every other
    row equals the plain model's. A Watch measures the wrapped layers in full (the forward is
    recomputed during the backward, while armed)."""
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(2))
    frames = {}
    for mode in (None, True):
        torch.manual_seed(0)
        model = _Checkpointed(mode)
        for p in model.parameters():
            p.grad = torch.full_like(p, 7.0)
        if mode:
            with pytest.warns(RuntimeWarning, match="reentrant.*grad_pre"):
                frames[mode] = dlt.probe(model, x, y, nn.CrossEntropyLoss())
        else:
            frames[mode] = dlt.probe(model, x, y, nn.CrossEntropyLoss())
        assert all(bool((p.grad == 7.0).all()) for p in model.parameters())
    plain = frames[None].set_index(["layer", "quantity"]).value
    ckpt = frames[True].set_index(["layer", "quantity"]).value
    missing = sorted(set(plain.index) - set(ckpt.index))
    assert missing == [(2, "grad_pre_absmean"), (2, "grad_pre_std")]
    np.testing.assert_allclose(ckpt, plain[ckpt.index], rtol=1e-6)

    watched = {}
    for mode in (None, True):
        torch.manual_seed(0)
        model = _Checkpointed(mode)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with dlt.Watch(model, every=1, theory=False) as watch:
            for _ in range(3):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                watch.step(loss)
                opt.step()
        watched[mode] = watch.frame().set_index(["step", "layer", "quantity"]).value
    assert list(watched[True].index) == list(watched[None].index)
    np.testing.assert_allclose(watched[True], watched[None], rtol=1e-6)


def test_read_only_user_hooks_get_the_theory_and_see_its_extra_forward():
    """A forward hook that only reads (returns None) is no obstacle to the theory; its one
    extra forward (isolated: training unchanged) runs the user's hooks too."""
    def run(watched):
        model = _mlp(torch.float32)
        seen = []
        model[4].register_forward_hook(lambda m, a, o: seen.append(o.shape))
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        watch = dlt.Watch(model, every=2, theory=True) if watched else None
        losses = []
        for x, y in _batches(5, dtype=torch.float32):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            if watch is not None:
                watch.step(loss)
            opt.step()
            losses.append(loss.detach())
        theory = None
        if watch is not None:
            theory = watch.theory
            watch.close()
        return model, losses, seen, theory

    ref, ref_losses, ref_seen, _ = run(False)
    model, losses, seen, theory = run(True)
    assert all(torch.equal(a, b) for a, b in zip(ref_losses, losses))
    assert all(torch.equal(a, b) for a, b in zip(ref.parameters(), model.parameters()))
    assert seen == ref_seen + [torch.Size([6, 3])] and len(ref_seen) == 5
    assert theory is not None and len(theory) > 0
