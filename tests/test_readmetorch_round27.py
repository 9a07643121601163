"""Round 27 (readmetorch27): the README's "PyTorch models" section against the code."""

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


class _Functional(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.a, self.b, self.f = nn.Linear(6, 16), nn.Linear(16, 3), f

    def forward(self, x):
        return self.b(self.f(self.a(x)))


class _Module(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.a, self.act, self.b = nn.Linear(6, 16), act, nn.Linear(16, 3)

    def forward(self, x):
        return self.b(self.act(self.a(x)))


def _table(model, x, y):
    df = dlt.probe(model, x, y, "cross_entropy")
    return df.set_index(["layer", "quantity"]).value.sort_index()


@pytest.mark.parametrize("f", [F.tanhshrink, lambda h: h - torch.tanh(h)],
                         ids=["F.tanhshrink", "h - tanh(h)"])
def test_a_functional_tanhshrink_is_measured_as_its_module(f):
    # README: an activation the forward applies itself gets "the same rows as the model built
    # with activation modules, identical tables in float64". F.tanhshrink is h - h.tanh() in
    # Python: its graph holds a TanhBackward0 reading the layer output, which was taken as a
    # tanh activation: act_std of tanh(h) (0.46) where the next layer reads h - tanh(h) (0.17),
    # and a saturated_frac that the module (unbounded) has not
    x = torch.randn(64, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(1)
    fn = _Functional(f).double()
    torch.manual_seed(1)
    mod = _Module(nn.Tanhshrink()).double()
    got, want = _table(fn, x, y), _table(mod, x, y)
    assert list(got.index) == list(want.index)
    torch.testing.assert_close(torch.tensor(got.values), torch.tensor(want.values),
                               rtol=1e-12, atol=0, equal_nan=True)
    with torch.no_grad():
        act_std = fn.f(fn.a(x)).std(unbiased=False).item()
    assert got[(1, "act_std")] == pytest.approx(act_std, rel=1e-9)


def test_a_tanh_subtracted_with_another_weight_is_no_tanhshrink():
    # h - 2 tanh(h) (torch.sub alpha=2) is not Tanhshrink: its tanh keeps the tanh rows, as a
    # sum with the input does (F.relu(k) + k: test_torchfunc_round22)
    x = torch.randn(64, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(1)
    fn = _Functional(lambda h: torch.sub(h, torch.tanh(h), alpha=2)).double()
    got = _table(fn, x, y)
    with torch.no_grad():
        act_std = torch.tanh(fn.a(x)).std(unbiased=False).item()
    assert got[(1, "act_std")] == pytest.approx(act_std, rel=1e-9)
    assert (1, "saturated_frac") in got.index


@pytest.mark.parametrize("f, name", [(F.softshrink, "softshrink"), (F.hardshrink, "hardshrink")])
def test_predict_refuses_a_functional_shrink_by_name_as_its_module(f, name):
    # README: "Softshrink and Hardshrink are measured, and dlt.predict refuses them by name:
    # their flat zone makes sparse outputs whose sums are not Gaussian". Applied as a function
    # to a layer's output, the refusal said the function was "applied to the result of the
    # torch operation 'Addmm' ..., not to a layer's (or normalization's) own output": untrue
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (32,), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(1)
    with pytest.raises(ValueError) as err:
        dlt.predict(_Functional(f), x, y, "cross_entropy")
    msg = str(err.value)
    assert f"the function {name} on the output of 'a' (Linear)" in msg
    assert "flat zone" in msg and "not to a layer" not in msg
    assert "\n" not in msg
