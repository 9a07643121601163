"""Round 21 (torchprobe21): depthlab.torch's measuring side on models written the way people
write them today, each checked against the same model measured another way (float64)."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import depthlab.torch as dlt


class _Res(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 6)

    def forward(self, x):
        return x + torch.tanh(self.lin(x))


class _Checkpointed(nn.Module):
    """A segment run through ``checkpoint(..., use_reentrant=False)`` (torch's recommended
    mode) fed the raw data (no gradient): a Linear, a Tanh, a residual block, a Linear."""

    def __init__(self):
        super().__init__()
        self.ck = True
        self.seg = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), _Res(), nn.Linear(6, 6))
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        h = checkpoint(self.seg, x, use_reentrant=False) if self.ck else self.seg(x)
        return self.head(h)


def _frame_key(df):
    return df.set_index(["layer", "module", "quantity"]).value.sort_index()


def test_non_reentrant_checkpoint_fed_raw_data_is_measured_and_trains_bit_identically(tmp_path):
    """The residual-block search replaced the raw input of the checkpointed segment by a copy
    that requires grad (first armed pass): the forward saved one more tensor than the
    backward's recomputation, and torch raised CheckpointError ("A different number of
    tensors was saved during the original forward and recomputation. ... forward: 6,
    recomputation: 5") from dlt.probe and from the first recorded step of a Watch."""
    torch.manual_seed(0)
    model = _Checkpointed().double()
    plain = copy.deepcopy(model)
    plain.ck = False
    x, y = torch.randn(16, 6, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    got = _frame_key(dlt.probe(model, x, y, nn.MSELoss()))
    want = _frame_key(dlt.probe(plain, x, y, nn.MSELoss()))
    assert list(got.index) == list(want.index)
    assert (got - want).abs().max() == 0.0
    assert "block_grad_std" in got.index.get_level_values("quantity")

    def train(m, watched):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        w = dlt.Watch(m, every=2, out=tmp_path / f"w{watched}") if watched else None
        for _ in range(3):
            opt.zero_grad()
            loss = nn.functional.mse_loss(m(x), y)
            loss.backward()
            if w is not None:
                w.step(loss)
            opt.step()
        if w is not None:
            w.close()
            return w.frame()

    a, b = copy.deepcopy(model), copy.deepcopy(model)
    train(a, False)
    frame = train(b, True)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert sorted(frame.step.unique()) == [0, 2]
    assert frame.query("quantity == 'grad_pre_std'").value.notna().all()


def _gp_loss(model, x, y):
    """A fit plus a gradient penalty on the input gradient (WGAN-GP, R1, a PINN's residual):
    the penalty's torch.autograd.grad(create_graph=True) is part of computing the loss."""
    x = x.clone().requires_grad_()
    out = model(x)
    (gx,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return ((out - y) ** 2).mean() + ((gx.norm(dim=1) - 1) ** 2).mean()


def _linear_grads(model, loss_of):
    """Each Linear's output gradient's population std, by autograd on a copy."""
    ref = copy.deepcopy(model)
    outs = {}
    for name, m in ref.named_modules():
        if isinstance(m, nn.Linear):
            m.register_forward_hook(lambda mod, a, o, name=name: outs.__setitem__(name, o))
    grads = torch.autograd.grad(loss_of(ref), list(outs.values()))
    return {k: g.std(unbiased=False).item() for k, g in zip(outs, grads)}


def test_a_gradient_penalty_backward_is_not_pooled_into_the_loss_gradient_rows(tmp_path):
    """The create_graph backward of a gradient penalty delivered its d(out.sum())/ds to the
    layer outputs' gradient hooks, pooled with the step's dL/ds (layer 1 grad_pre_std 0.041
    where dL/ds's is 0.0041; the last layer's 0.498 where it is 0.067), and the Watch warned
    'several backward passes'. Now the rows are dL/ds of the loss whose backward filled
    .grad, silently; a loop whose only backward is loss.backward(create_graph=True) keeps
    its rows."""
    import warnings

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                          nn.Linear(16, 1)).double()
    x, y = torch.randn(32, 4, dtype=torch.float64), torch.randn(32, 1, dtype=torch.float64)
    fit = lambda m: ((m(x) - y) ** 2).mean()  # noqa: E731
    for loss_of, create_graph in ((lambda m: _gp_loss(m, x, y), False), (fit, True)):
        want = _linear_grads(model, loss_of)
        m = copy.deepcopy(model)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            warnings.simplefilter("ignore", UserWarning)  # torch's, on create_graph
            with dlt.Watch(m, every=1, theory=False, out=tmp_path / f"g{create_graph}") as w:
                m.zero_grad()
                loss = loss_of(m)
                loss.backward(create_graph=create_graph)
                w.step(loss)
        for p in m.parameters():
            p.grad = None  # (create_graph: .grad holds a graph)
        frame = w.frame().query("step == 0 and quantity == 'grad_pre_std'")
        got = dict(zip(frame.module, frame.value))
        assert set(got) == set(want)
        for k in want:
            assert abs(got[k] - want[k]) <= 1e-10 * want[k], (create_graph, k, got[k], want[k])


def test_predict_refuses_an_uninitialized_lazy_model_in_one_line_naming_the_module():
    """dlt.predict on a model with nn.LazyLinear not yet run raised torch's ValueError
    ('Attempted to use an uninitialized parameter in <method 'detach' ...>', no module
    named) from its check of the weights; dlt.probe, discover and Watch name the module."""
    import pytest

    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.LazyLinear(2))
    x, y = torch.randn(6, 5), torch.randn(6, 2)
    with pytest.raises(ValueError, match=r"^module '2' \(LazyLinear\) of Sequential has "
                                         r"uninitialized lazy parameters: run the model once"):
        dlt.predict(model, x, y, "mse")
    model(x)
    assert (dlt.predict(model, x, y, "mse").layer >= 1).any()


def test_an_elementwise_loss_refuses_targets_it_would_pair_every_output_with():
    """A one-output regression (N, 1) with targets y of shape (N,): "mse" broadcast them to
    (N, N), every output against every target (loss 1.22 where the examples' MSE is 1.12),
    with torch's UserWarning only; y of a shape that does not broadcast gave torch's 'The
    size of tensor a (2) must match the size of tensor b (3)'. Now one ValueError naming
    both shapes, in dlt.probe and dlt.predict, for the names, modules and F. functions;
    y of the output's shape, or one broadcast over it, is measured as before."""
    import functools

    import pytest

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    x, y = torch.randn(16, 4), torch.randn(16)
    for loss_fn in ("mse", "l1", "huber", "smooth_l1", nn.MSELoss(), nn.functional.mse_loss,
                    functools.partial(nn.functional.l1_loss, reduction="sum")):
        for fn in (dlt.probe, dlt.predict):
            with pytest.raises(ValueError, match=r"^y has shape \(16,\) but the model's output "
                                                 r"has shape \(16, 1\), and [\w.]+ compares them "
                                                 r"entry by entry \(torch would broadcast them "
                                                 r"to \(16, 16\).*y\.reshape\(16, 1\)"):
                fn(model, x, y, loss_fn)
    with pytest.raises(ValueError, match=r"y has shape \(3, 2\) .* \(16, 1\).*do not broadcast"):
        dlt.probe(model, x, torch.randn(3, 2), "mse")
    got = dlt.probe(model, x, y[:, None], "mse").query("quantity == 'loss'").value.item()
    assert got == pytest.approx(nn.functional.mse_loss(model(x), y[:, None]).item(), rel=1e-6)
    assert (dlt.probe(model, x, torch.zeros(1), "mse").quantity == "loss").any()


class _ForceField(nn.Module):
    """An energy network whose forward returns the force -dE/dx (torch.autograd.grad with
    create_graph=True inside the forward: a force field, a Hamiltonian network)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.e = nn.Linear(3, 16), nn.Linear(16, 16), nn.Linear(16, 1)

    def forward(self, x):
        with torch.enable_grad():
            x = x if x.requires_grad else x.clone().requires_grad_()
            energy = self.e(torch.tanh(self.b(torch.tanh(self.a(x))))).sum()
            (f,) = torch.autograd.grad(energy, x, create_graph=True)
        return -f


def test_a_forward_that_differentiates_itself_has_the_loss_gradient_rows():
    """dlt.probe on a force field: the forward's own create_graph backward (dE/ds) was pooled
    into the grad_pre rows with the loss's (layer 'a' grad_pre_std 0.0412 where dL/ds's is
    0.000703; the energy head 'e', which the loss's gradient does not reach, got 0.0)."""
    torch.manual_seed(0)
    model = _ForceField().double()
    x, y = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 3, dtype=torch.float64)
    ref = copy.deepcopy(model)
    outs = {}
    for name, m in ref.named_children():
        m.register_forward_hook(lambda mod, a, o, name=name: outs.__setitem__(name, o))
    grads = torch.autograd.grad(nn.functional.mse_loss(ref(x), y), list(outs.values()),
                                allow_unused=True)
    got = dlt.probe(model, x, y, "mse").set_index(["module", "quantity"]).value
    for (name, out), g in zip(outs.items(), grads):
        assert abs(got[(name, "pre_std")] - out.std(unbiased=False).item()) <= 1e-12
        if g is None:
            assert (name, "grad_pre_std") not in got.index
        else:
            want = g.std(unbiased=False).item()
            assert abs(got[(name, "grad_pre_std")] - want) <= 1e-10 * want, name
