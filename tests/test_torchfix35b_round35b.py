"""Round 35b (torchfix35b): dlt.probe's act_* / dead_frac / inactive_frac / saturated_frac rows
where a dropout module sits between a layer (or its norm) and its activation in training mode:
the rows are of the activation module's output (what it took: the dropped tensor), checked
against the activation's output caught with a forward hook of the test's own."""

import warnings

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import depthlab.torch as dlt  # noqa: E402
from depthlab.probes.stats import SATURATION_RATIO  # noqa: E402


def _rows(df, module: str) -> dict:
    return {q: v for m, q, v in zip(df.module, df.quantity, df.value) if m == module}


def _caught(module: nn.Module, seen: list):
    return module.register_forward_hook(
        lambda m, a, o: seen.append((a[0].detach().clone(), o.detach().clone())))


@pytest.mark.parametrize("drop", [nn.Dropout(0.5), nn.AlphaDropout(0.3)])
def test_a_dropout_between_a_norm_and_its_tanh_keeps_the_tanhs_act_rows(drop):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), drop, nn.Tanh(),
                          nn.Linear(16, 3)).double().train()
    x = torch.randn(64, 6, dtype=torch.float64) * 2
    y = torch.randint(0, 3, (64,))
    seen: list = []
    handle = _caught(model[3], seen)
    df = dlt.probe(model, x, y, nn.CrossEntropyLoss(), percentiles=(50,))
    handle.remove()
    s, a = seen[-1]
    got = _rows(df, "0")
    # before: act_std 1.0 (the BatchNorm's output), no saturated_frac
    assert got["act_std"] == pytest.approx(float(a.std(unbiased=False)), rel=1e-9)
    assert got["act_mean"] == pytest.approx(float(a.mean()), rel=1e-9, abs=1e-12)
    assert got["act_p50"] == pytest.approx(float(a.quantile(0.5)), rel=1e-6)
    d = 1 - torch.tanh(s) ** 2  # saturated: |f'(s)| < SATURATION_RATIO sup|f'|
    assert got["saturated_frac"] == pytest.approx(
        float((d < SATURATION_RATIO).double().mean()), abs=1e-12)


def test_a_dropout_between_a_linear_and_its_relu_gives_the_relus_rows():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.25), nn.ReLU(),
                          nn.Linear(8, 2)).double().train()
    with torch.no_grad():
        model[0].bias[:2] = -100.0  # units 0 and 1 dead: 2 of 8
    x = torch.randn(32, 5, dtype=torch.float64)
    y = torch.randn(32, 2, dtype=torch.float64)
    seen: list = []
    handle = _caught(model[2], seen)
    df = dlt.probe(model, x, y, nn.MSELoss(), percentiles=())
    handle.remove()
    s, a = seen[-1]
    got = _rows(df, "0")
    # before: no act_*, dead_frac or inactive_frac rows at all
    assert got["act_std"] == pytest.approx(float(a.std(unbiased=False)), rel=1e-9)
    assert got["inactive_frac"] == pytest.approx(float((s <= 0).double().mean()), abs=1e-12)
    assert got["dead_frac"] == pytest.approx(float((a <= 0).all(0).double().mean()), abs=1e-12)
    assert got["dead_frac"] == pytest.approx(0.25)
    # pre_* stays the layer's own output, before the dropout
    lin = model[0](x).detach()
    assert got["pre_std"] == pytest.approx(float(lin.std(unbiased=False)), rel=1e-9)


class _Held(nn.Module):
    """Hidden weights kept in a ParameterList beside an nn.Linear head: ``relu(h @ w)``."""

    def __init__(self) -> None:
        super().__init__()
        self.ws = nn.ParameterList([nn.Parameter(torch.randn(4, 4, dtype=torch.float64) * 0.5)
                                    for _ in range(2)])
        self.extra = nn.ParameterDict({"unused": nn.Parameter(torch.ones(3, 3))})
        self.head = nn.Linear(4, 2).double()

    def forward(self, x):
        for w in self.ws:
            x = torch.relu(x @ w)
        return self.head(x)


def test_weights_used_from_a_parameter_list_beside_a_layer_are_layers():
    # round 40 (torchhunt40): the two hidden weights, once named in a warning, are measured
    torch.manual_seed(3)
    model = _Held()
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # measured: nothing to warn about
        df = dlt.probe(model, x, y, nn.MSELoss(), percentiles=())
    assert list(df.drop_duplicates("layer").module) == ["", "ws.0", "ws.1", "head"]
