"""depthlab.torch probes and Watch on models and call styles the earlier rounds did not cover
(round 16). Every value is compared with a direct computation by plain torch operations and
autograd in float64 (population std, ddof = 0)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.probes import accel  # noqa: E402

CE = nn.CrossEntropyLoss()
D = torch.float64


def _pstd(v: torch.Tensor) -> float:
    return float(v.detach().double().std(unbiased=False))


def _mean(v: torch.Tensor) -> float:
    return float(v.detach().double().mean())


@pytest.fixture(params=["kernels", "torch"])
def paths(request):
    """Both statistic paths: the compiled CPU kernels (when Numba is there) and torch's."""
    if request.param == "torch":
        with accel.numpy_only():
            yield request.param
    else:
        if accel.kernels() is None:
            pytest.skip("Numba not installed: no compiled kernels' path")
        yield request.param


# -- fix 1: layers that run inside torch.vmap / torch.func.grad in the model's forward -----------

class _Vmapped(nn.Module):
    """Two layers run per time step through ``torch.vmap`` (over axis 1 of ``(T, N, F)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.act, self.b, self.head = nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), \
            nn.Linear(6, 3)

    def forward(self, x):
        z = torch.vmap(lambda r: self.b(self.act(self.a(r))), in_dims=1, out_dims=1)(x)
        return self.head(z.mean(0))


class _Energy(nn.Module):
    """The input's gradient of an energy ``sum tanh(a(x))`` by ``torch.func.grad``, fed to a
    head (a Hamiltonian/energy-model pattern)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.head = nn.Linear(4, 6), nn.Linear(4, 3)

    def forward(self, x):
        return self.head(torch.func.grad(lambda v: self.a(v).tanh().sum())(x))


def test_layers_inside_vmap_in_the_forward_are_measured(paths):
    """Layers called inside ``torch.vmap`` within the model's forward had no number and no row
    at all (not even ``weight_std``): the hooks skipped every call inside a torch.func
    transform. Now they are measured on the tensor under vmap's wrapper (all vmapped calls),
    their gradients by autograd; the table equals the direct computation."""
    torch.manual_seed(0)
    model = _Vmapped().to(D)
    x, y = torch.randn(3, 5, 4, dtype=D), torch.randint(0, 3, (5,))
    table = dlt.probe(model, x, y, CE, percentiles=(15, 50))
    assert list(dict.fromkeys(table[table.layer > 0].module)) == ["a", "b", "head"]
    got = table.set_index(["module", "quantity"]).value
    s1 = F.linear(x, model.a.weight, model.a.bias)
    s2 = F.linear(torch.tanh(s1), model.b.weight, model.b.bias)
    s3 = model.head(s2.mean(0))
    loss = CE(s3, y)
    grads = torch.autograd.grad(loss, [s1, s2, s3, model.a.weight, model.b.weight])
    for name, s, g, gw in (("a", s1, grads[0], grads[3]), ("b", s2, grads[1], grads[4])):
        assert got[(name, "pre_mean")] == pytest.approx(_mean(s), rel=1e-10, abs=1e-14)
        assert got[(name, "pre_std")] == pytest.approx(_pstd(s), rel=1e-10)
        assert got[(name, "pre_p15")] == pytest.approx(
            np.percentile(s.detach().numpy(), 15), rel=1e-10)
        assert got[(name, "grad_pre_std")] == pytest.approx(_pstd(g), rel=1e-10)
        assert got[(name, "grad_pre_absmean")] == pytest.approx(_mean(g.abs()), rel=1e-10)
        assert got[(name, "weight_grad_std")] == pytest.approx(_pstd(gw), rel=1e-10)
    assert got[("head", "grad_pre_std")] == pytest.approx(_pstd(grads[2]), rel=1e-10)


def test_a_layer_inside_func_grad_in_the_forward_is_measured_in_probe_and_watch(paths):
    """``torch.func.grad`` inside the forward: the layer it runs has its output's statistics
    and ``dL/d output`` of the outer loss (the reference differentiates ``create_graph=True``
    input gradients), in ``dlt.probe`` and at every step of a Watch."""
    torch.manual_seed(1)
    model = _Energy().to(D)
    x, y = torch.randn(5, 4, dtype=D), torch.randint(0, 3, (5,))
    xr = x.clone().requires_grad_()
    s = model.a(xr)
    (gx,) = torch.autograd.grad(torch.tanh(s).sum(), xr, create_graph=True)
    g_s, g_w = torch.autograd.grad(CE(model.head(gx), y), [s, model.a.weight])
    got = dlt.probe(model, x, y, CE, percentiles=()).set_index(["module", "quantity"]).value
    assert got[("a", "pre_std")] == pytest.approx(_pstd(s), rel=1e-10)
    assert got[("a", "grad_pre_std")] == pytest.approx(_pstd(g_s), rel=1e-10)
    assert got[("a", "weight_grad_std")] == pytest.approx(_pstd(g_w), rel=1e-10)
    with dlt.Watch(model, every=1, theory=False) as watch:
        for _ in range(2):
            model.zero_grad()
            loss = CE(model(x), y)
            loss.backward()
            watch.step(loss)
    frame = watch.frame()
    rows = frame[(frame.module == "a") & (frame.quantity == "grad_pre_std")]
    assert list(rows.step) == [0, 1]
    assert rows.value.tolist() == pytest.approx([_pstd(g_s)] * 2, rel=1e-10)


# -- fix 2: the ignore_index of a functools.partial loss -----------------------------------------

@pytest.mark.parametrize("make", [
    lambda: __import__("functools").partial(F.cross_entropy, ignore_index=0),
    lambda: __import__("functools").partial(
        __import__("functools").partial(F.cross_entropy, ignore_index=0), reduction="mean"),
    lambda: nn.CrossEntropyLoss(ignore_index=0),
])
def test_acc_leaves_out_the_ignore_index_of_a_partial_loss(make):
    """``partial(F.cross_entropy, ignore_index=0)`` (class 0 = padding): ``acc`` counted the
    padding targets (0.40 where the accuracy over the others was 0.4375, 20 targets); now it
    reads the partial's keyword as it reads ``nn.CrossEntropyLoss(ignore_index=0)``'s
    attribute. Token targets of shape (N, T) for logits (N, C, T)."""
    torch.manual_seed(0)
    model = nn.Conv1d(4, 3, 1).to(D)
    x, y = torch.randn(5, 4, 4, dtype=D), torch.randint(0, 3, (5, 4))
    y[0, :3] = 0
    table = dlt.probe(model, x, y, make()).set_index("quantity").value
    with torch.no_grad():
        hit = model(x).argmax(1) == y
    valid = y != 0
    assert table["acc"] == pytest.approx(int((hit & valid).sum()) / int(valid.sum()), rel=1e-12)
    assert table["acc"] != pytest.approx(float(hit.double().mean()))
    assert table["loss"] == pytest.approx(float(F.cross_entropy(model(x), y, ignore_index=0)),
                                          rel=1e-12)


# -- fix 3: an exported graph that never calls its layers is refused -----------------------------

def test_an_exported_graph_is_refused_and_a_traced_one_is_measured():
    """``torch.export(model, args).module()`` reads every weight as a graph attribute and calls
    no layer: ``dlt.probe`` ran it and blamed 'weights read directly, e.g. F.linear(x,
    self.0.weight)' (a generated graph the user cannot edit), and a Watch accepted it and
    recorded losses only. Both now refuse it with one TypeError naming the layers and the way
    out; a ``torch.fx.symbolic_trace`` graph, which calls its modules, gives the original's
    table."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).to(D)
    x, y = torch.randn(6, 4, dtype=D), torch.randint(0, 3, (6,))
    exported = torch.export.export(model, (x,)).module()
    with pytest.raises(TypeError, match=r"reads the weights of '0', '2' directly.*original"):
        dlt.probe(exported, x, y, CE)
    with pytest.raises(TypeError, match="pass the original nn.Module"):
        dlt.Watch(exported, every=1, theory=False)
    traced = torch.fx.symbolic_trace(model)
    got = dlt.probe(traced, x, y, CE)
    want = dlt.probe(model, x, y, CE)
    assert got.drop(columns="value").equals(want.drop(columns="value"))
    assert got.value.to_numpy() == pytest.approx(want.value.to_numpy(), rel=1e-12, abs=1e-15)
