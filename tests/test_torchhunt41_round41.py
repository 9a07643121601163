"""Round 41 (torchhunt41): depthlab.torch's discover / predict / probe on models not tried
before, each compared with a direct float64 autograd computation where it measures."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import depthlab.torch as dlt  # noqa: E402

CE = nn.CrossEntropyLoss()


class _RootWeight(nn.Module):
    """The model's own weight used as F.linear beside a child layer."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(16, 6, dtype=torch.float64) / 6 ** 0.5)
        self.head = nn.Linear(16, 3, dtype=torch.float64)

    def forward(self, x):
        return self.head(torch.relu(F.linear(x, self.weight)))


class _Held(nn.Module):
    """Two matrices of a ParameterList used as maps, then a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.ws = nn.ParameterList([nn.Parameter(torch.randn(6, 16, dtype=torch.float64) / 3),
                                    nn.Parameter(torch.randn(16, 8, dtype=torch.float64) / 4)])
        self.head = nn.Linear(8, 3, dtype=torch.float64)

    def forward(self, x):
        return self.head(torch.tanh(torch.tanh(x @ self.ws[0]) @ self.ws[1]))


class _Dense(nn.Module):
    """A hand-written layer whose output is its ReLU's, not its map's."""

    def __init__(self, i: int, o: int) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(i, o, dtype=torch.float64) / i ** 0.5)
        self.b = nn.Parameter(torch.zeros(o, dtype=torch.float64))

    def forward(self, x):
        return torch.relu(x @ self.W + self.b)


class _Hand(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.d1, self.d2 = _Dense(6, 16), _Dense(16, 16)
        self.head = nn.Linear(16, 3, dtype=torch.float64)

    def forward(self, x):
        return self.head(self.d2(self.d1(x)))


class _TiedLM(nn.Module):
    """An embedding table used again as the output projection (a minimal GPT's tie)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 8, dtype=torch.float64)
        self.fc = nn.Linear(8, 8, dtype=torch.float64)

    def forward(self, ids):
        return torch.tanh(self.fc(self.emb(ids))) @ self.emb.weight.T


def _batch(n: int = 32):
    torch.manual_seed(0)
    return torch.randn(n, 6, dtype=torch.float64), torch.randint(0, 3, (n,))


@pytest.mark.parametrize("make", [_RootWeight, _Held, _Hand, _TiedLM])
def test_discover_numbers_the_map_layers_as_probe_does(make):
    """dlt.discover lists dlt.probe's map layers (a weight used as a linear map by the forward
    itself), numbered where they run: it listed only the modules ('head' as layer 1 where the
    probe's table has it as layer 2), so the two disagreed on every later number."""
    torch.manual_seed(1)
    model = make()
    x, y = _batch()
    if make is _TiedLM:
        x, y = torch.randint(0, 10, (32,)), torch.randint(0, 10, (32,))
    df = dlt.probe(model, x, y, CE, percentiles=())
    want = list(df[df.layer >= 1].drop_duplicates("layer")[["layer", "module"]]
                .itertuples(index=False, name=None))
    infos = dlt.discover(model, x)
    assert [(i.index, i.name) for i in infos] == want
    maps = [i for i in infos if i.kind == "map"]
    assert maps and all(len(i.weights) == 1 and i.calls >= 1 for i in maps)
    names = dict(model.named_parameters())
    for info in maps:  # each map layer holds the very parameter the probe's row is of
        w = info.weights[0]
        assert any(p is w for p in names.values())
        row = df[(df.layer == info.index) & (df.quantity == "weight_std")].value.iloc[0]
        assert row == pytest.approx(w.detach().std(correction=0).item(), rel=1e-12)


@pytest.mark.parametrize("make, named", [(_RootWeight, "'weight' (_RootWeight)"),
                                         (_Held, "'ws.0' (ParameterList), 'ws.1'"),
                                         (_Hand, "'d1' (_Dense), 'd2' (_Dense)")])
def test_predict_names_the_map_layers_it_cannot_predict(make, named):
    """dlt.predict refuses a model with map layers in one line naming them as the probe's
    table does: it named a graph node ('Mm'), or a layer that is not in the table ('ws')."""
    torch.manual_seed(1)
    x, y = _batch()
    with pytest.raises(ValueError, match=r"^predict\(\) cannot predict the layers? ") as got:
        dlt.predict(make(), x, y, CE)
    said = str(got.value)
    assert named in said and "\n" not in said and "nn.Linear" in said


class _TakesList(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 3, dtype=torch.float64)

    def forward(self, xs):
        return self.a(xs[0] + xs[1])


def test_a_forward_that_takes_one_list_is_told_how_x_is_given():
    """x as a list is the model's positional inputs (model(*x)); a forward of one list,
    forward(self, xs), got Python's 'forward() takes 2 positional arguments but 3 were
    given': now one line says how x was given and the remedy, x=(xs,), which measures it."""
    x, y = _batch()
    with pytest.raises(TypeError, match=r"x is a list of 2 inputs, given to the model as "
                                        r"positional inputs \(model\(\*x\)\), but "
                                        r"_TakesList\.forward\(xs\) does not take them") as got:
        dlt.probe(_TakesList(), [x, x], y, CE)
    assert "x=(xs,)" in str(got.value)
    df = dlt.probe(_TakesList(), ([x, x],), y, CE, percentiles=())
    assert list(df[df.layer == 1].module.unique()) == ["a"]


@pytest.mark.parametrize("fn", ["probe", "discover", "predict"])
@pytest.mark.parametrize("make, what", [
    (lambda: nn.ModuleList([nn.Linear(6, 3)]), "ModuleList, a container that has no forward"),
    (lambda: nn.ModuleDict({"a": nn.Linear(6, 3)}), "ModuleDict, a container that has no "),
    (lambda: nn.ParameterList([nn.Parameter(torch.randn(6, 3))]),
     "ParameterList, a container that holds parameters and cannot be called")])
def test_a_container_given_as_the_model_is_refused_in_one_line(fn, make, what):
    """An nn.ModuleList/ModuleDict/ParameterList given as the model (the list of layers
    instead of the model that runs them) failed inside torch: 'Module [ModuleList] is missing
    the required "forward" function', 'ParameterList should not be called.'."""
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    call = {"probe": lambda m: dlt.probe(m, x, y, CE), "discover": lambda m: dlt.discover(m, x),
            "predict": lambda m: dlt.predict(m, x, y, CE)}[fn]
    with pytest.raises(TypeError, match=rf"^model is a {what}") as got:
        call(make())
    assert "\n" not in str(got.value) and "expected the module whose forward" in str(got.value)


class _LoraLinear(nn.Linear):
    """loralib's lora.Linear: a frozen nn.Linear plus a low-rank update of its own parameters,
    added in place to the base map's output."""

    def __init__(self, i: int, o: int, r: int = 2, dtype=torch.float64) -> None:
        super().__init__(i, o, dtype=dtype)
        self.lora_A = nn.Parameter(torch.randn(r, i, dtype=dtype) * 0.3)
        self.lora_B = nn.Parameter(torch.randn(o, r, dtype=dtype) * 0.3)
        self.scaling = 0.5
        self.weight.requires_grad_(False)

    def forward(self, x):
        result = F.linear(x, self.weight, bias=self.bias)
        result += (x @ self.lora_A.transpose(0, 1) @ self.lora_B.transpose(0, 1)) * self.scaling
        return result


class _LoraNet(nn.Module):
    def __init__(self, dtype=torch.float64) -> None:
        super().__init__()
        self.l1 = _LoraLinear(6, 8, dtype=dtype)
        self.act = nn.Tanh()
        self.l2 = nn.Linear(8, 3, dtype=dtype)

    def forward(self, x):
        return self.l2(self.act(self.l1(x)))


def _std(t):
    return t.detach().reshape(-1).std(correction=0).item()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_lora_layer_of_its_own_parameters_is_one_layer(dtype):
    """A layer module whose output is the sum of its maps (loralib's lora.Linear: x W^T + b +
    (x A^T) B^T c) is one linear layer, its activation's input: it was replaced by three map
    layers ('l1.weight', 'l1.lora_A', 'l1.lora_B'), with no row of its output and no act_*
    rows of its Tanh. Every row against autograd (float64); discover and a Watch agree."""
    torch.manual_seed(2)
    model = _LoraNet(dtype)
    x, y = _batch()
    x = x.to(dtype)
    df = dlt.probe(model, x, y, CE, percentiles=())
    assert list(df[df.layer >= 1].drop_duplicates("layer").module) == ["l1", "l2"]
    got = df[df.layer == 1].set_index("quantity").value
    out: dict[str, torch.Tensor] = {}
    hooks = [model.l1.register_forward_hook(lambda m, a, o: out.setdefault("s", o)),
             model.act.register_forward_hook(lambda m, a, o: out.setdefault("a", o))]
    loss = CE(model(x), y)
    for h in hooks:
        h.remove()
    s = out["s"]
    g, wa, wb = torch.autograd.grad(loss, [s, model.l1.lora_A, model.l1.lora_B])
    weights = torch.cat([p.detach().reshape(-1) for p in
                         (model.l1.weight, model.l1.lora_A, model.l1.lora_B)])
    want = {"pre_mean": s.detach().mean().item(), "pre_std": _std(s),
            "act_std": _std(out["a"]), "grad_pre_std": _std(g),
            "weight_std": _std(weights),
            "weight_grad_std": _std(torch.cat([wa.reshape(-1), wb.reshape(-1)]))}
    rel = 1e-9 if dtype == torch.float64 else 1e-5
    for q, v in want.items():
        assert got[q] == pytest.approx(v, rel=rel), q
    assert [(i.index, i.name) for i in dlt.discover(model, x)] == [(1, "l1"), (2, "l2")]
    with dlt.Watch(model, every=1, theory=False, percentiles=()) as watch:
        model.zero_grad()
        loss = CE(model(x), y)
        loss.backward()
        watch.step(loss)
    assert list(watch.frame().drop_duplicates("layer").query("layer >= 1").module) == \
        ["l1", "l2"]


def test_a_bf16_lora_layer_is_one_layer_too():
    """The sum of a bf16 model's maps is rounded as the forward rounds it (summed in float64
    it differed from the layer's output by more than STAT_RTOL: three map layers again)."""
    torch.manual_seed(2)
    model = _LoraNet(torch.bfloat16)
    x, y = _batch()
    df = dlt.probe(model, x.to(torch.bfloat16), y, CE, percentiles=())
    assert list(df[df.layer >= 1].drop_duplicates("layer").module) == ["l1", "l2"]


class _Cell(nn.Module):
    """A hand-written recurrent cell, x Wx + h Wh + b, its activation outside (or inside)."""

    def __init__(self, inside: bool = False) -> None:
        super().__init__()
        self.Wx = nn.Parameter(torch.randn(6, 8, dtype=torch.float64) / 3)
        self.Wh = nn.Parameter(torch.randn(8, 8, dtype=torch.float64) / 3)
        self.b = nn.Parameter(torch.randn(8, dtype=torch.float64))
        self.inside = inside

    def forward(self, x, h):
        s = x @ self.Wx + h @ self.Wh + self.b
        return torch.tanh(s) if self.inside else s


class _Unrolled(nn.Module):
    def __init__(self, inside: bool = False) -> None:
        super().__init__()
        self.c, self.act = _Cell(inside), nn.Identity() if inside else nn.Tanh()
        self.h = nn.Linear(8, 3, dtype=torch.float64)

    def forward(self, x):
        h = torch.zeros(x.shape[0], 8, dtype=x.dtype)
        for t in range(x.shape[1]):
            h = self.act(self.c(x[:, t], h))
        return self.h(h)


def test_a_cell_summing_its_maps_and_a_bias_is_one_layer_called_in_a_loop():
    """x @ Wx + h @ Wh + b (the activation outside the cell) is one layer, every call pooled;
    with the tanh inside the cell its output is no sum of maps: measured at its maps."""
    torch.manual_seed(3)
    x, y = torch.randn(16, 4, 6, dtype=torch.float64), torch.randint(0, 3, (16,))
    model = _Unrolled()
    df = dlt.probe(model, x, y, CE, percentiles=())
    assert list(df[df.layer >= 1].drop_duplicates("layer").module) == ["c", "h"]
    outs: list[torch.Tensor] = []
    hook = model.c.register_forward_hook(lambda m, a, o: outs.append(o))
    loss = CE(model(x), y)
    hook.remove()
    grads = torch.autograd.grad(loss, outs)
    got = df[df.layer == 1].set_index("quantity").value
    assert got["pre_std"] == pytest.approx(_std(torch.cat(outs)), rel=1e-9)
    assert got["grad_pre_std"] == pytest.approx(_std(torch.cat(grads)), rel=1e-9)
    assert "act_std" in got
    inside = dlt.probe(_Unrolled(inside=True), x, y, CE, percentiles=())
    assert list(inside[inside.layer >= 1].drop_duplicates("layer").module) == \
        ["c.Wx", "c.Wh", "h"]
