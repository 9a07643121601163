"""Round 40 (torchhunt40): ``dlt.probe`` against direct autograd in float64."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import depthlab.torch as dlt  # noqa: E402

D = torch.float64
CE = nn.CrossEntropyLoss()


def _kept(store: dict | None, name: str, s: torch.Tensor) -> torch.Tensor:
    """The reference's view of a map's output: kept with its gradient, the forward going on
    with a copy (so that in-place work after it leaves it as the map gave it)."""
    if store is None:
        return s
    s.retain_grad()
    store.setdefault(name, []).append(s)
    return s.clone()


class _RootWeight(nn.Module):
    """The model's own weight used as ``F.linear`` (then changed in place) beside a head."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 5, dtype=D) / 5 ** 0.5)
        self.head = nn.Linear(8, 3, dtype=D)

    def forward(self, x, ref=None):
        h = _kept(ref, "weight", F.linear(x, self.weight))
        h.tanh_()
        return self.head(h)


class _RootOnly(nn.Module):
    """A hand-written two-layer MLP: the model itself owns both matrices, one used as a view."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(5, 8, dtype=D) / 5 ** 0.5)
        self.w2 = nn.Parameter(torch.randn(3, 8, dtype=D) / 8 ** 0.5)

    def forward(self, x, ref=None):
        h = _kept(ref, "w1", x @ self.w1)
        return _kept(ref, "w2", torch.matmul(torch.relu(h), self.w2.T))


class _HeldLoop(nn.Module):
    """A Linear, hidden matrices in a ParameterList (one used twice), a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(5, 6, dtype=D)
        self.ws = nn.ParameterList([nn.Parameter(torch.randn(6, 6, dtype=D) / 6 ** 0.5)
                                    for _ in range(2)])
        self.out = nn.Linear(6, 3, dtype=D)

    def forward(self, x, ref=None):
        h = self.inp(x)
        for i in (0, 1, 0):
            h = torch.relu(_kept(ref, f"ws.{i}", h @ self.ws[i]))
        return self.out(h)


class _Dense(nn.Module):
    """A hand-written layer applying its activation itself: ``relu(x @ W + b)``."""

    def __init__(self, n_in: int, n_out: int, style: str = "add") -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(n_in, n_out, dtype=D) / n_in ** 0.5)
        self.b = nn.Parameter(torch.full((n_out,), 0.2, dtype=D))
        self.style = style

    def forward(self, x, ref=None, name=""):
        if self.style == "iadd":  # the bias added in place, the ReLU too
            s = x @ self.W
            s += self.b
            s = _kept(ref, name, s)
            return s.relu_()
        s = torch.addmm(self.b, x, self.W) if self.style == "addmm" else x @ self.W + self.b
        return torch.relu(_kept(ref, name, s))


class _Cell(nn.Module):
    """One module, two matrices: ``tanh(x @ W1) @ W2``."""

    def __init__(self) -> None:
        super().__init__()
        self.W1 = nn.Parameter(torch.randn(6, 6, dtype=D) / 6 ** 0.5)
        self.W2 = nn.Parameter(torch.randn(6, 3, dtype=D) / 6 ** 0.5)

    def forward(self, x, ref=None):
        h = x @ self.W1
        if ref is not None:
            h = _kept(ref, "c.W1", h)
        s = torch.tanh(h) @ self.W2
        return _kept(ref, "c.W2", s) if ref is not None else s


class _Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.d1 = _Dense(5, 6)
        self.d2 = _Dense(6, 6, "iadd")
        self.d3 = _Dense(6, 6, "addmm")
        self.c = _Cell()

    def forward(self, x, ref=None):
        h = self.d3(self.d2(self.d1(x, ref, "d1"), ref, "d2"), ref, "d3")
        return self.c(h, ref)


def _check_maps(model: nn.Module, modules: list[str]) -> None:
    torch.manual_seed(1)
    x, y = torch.randn(16, 5, dtype=D), torch.randint(0, 3, (16,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # measured: nothing to warn about
        df = dlt.probe(model, x, y, CE)
    layers = df[df.layer >= 1][["layer", "module"]].drop_duplicates()
    assert list(layers.module) == modules  # numbered in the order they first ran
    assert list(layers.layer) == list(range(1, len(modules) + 1))
    ref: dict = {}
    loss = CE(model(x, ref), y)
    loss.backward()
    params = dict(model.named_parameters())
    assert df[df.quantity == "loss"].value.item() == pytest.approx(loss.item(), rel=1e-12)
    for name, outs in ref.items():
        s = torch.cat([t.detach().reshape(-1) for t in outs])
        g = torch.cat([t.grad.reshape(-1) for t in outs])
        w = params[name if name in params else f"{name}.W"]
        want = {"pre_mean": s.mean(), "pre_std": s.std(correction=0),
                "pre_p15": np.percentile(s.numpy(), 15), "grad_pre_std": g.std(correction=0),
                "grad_pre_absmean": g.abs().mean(), "weight_std": w.detach().std(correction=0),
                "weight_grad_std": w.grad.std(correction=0),
                "weight_grad_absmean": w.grad.abs().mean()}
        got = df[df.module == name].set_index("quantity").value
        for q, v in want.items():
            assert got[q] == pytest.approx(float(v), rel=1e-9), (name, q)
    # the hooked layers' rows are unchanged by the maps measured beside them
    for name, m in model.named_children():
        if isinstance(m, nn.Linear):
            got = df[(df.module == name) & (df.quantity == "weight_grad_std")].value.item()
            assert got == pytest.approx(float(m.weight.grad.std(correction=0)), rel=1e-9)


def test_a_models_own_weight_beside_a_head_is_a_layer():
    """Was: no rows at all and no word for ``self.weight`` (table: layer 1 'head' only)."""
    _check_maps(_RootWeight(), ["weight", "head"])


def test_a_model_that_owns_several_matrices_has_a_layer_per_map():
    """Was: one layer '' pooling w1 and w2, its pre_* the model's output only."""
    _check_maps(_RootOnly(), ["w1", "w2"])


def test_parameter_list_matrices_are_layers_in_first_run_order():
    """Was: a RuntimeWarning naming 'ws' and rows for 'inp' and 'out' only."""
    _check_maps(_HeldLoop(), ["inp", "ws.0", "ws.1", "out"])


def test_hand_written_layers_are_measured_at_their_maps():
    """A layer module of the user's class applying its activation itself had the ReLU's
    output as its pre_* (pre_p15 0.0, pre_std 0.78 where x W + b has 1.24) and dL/d(relu) as
    grad_pre_*; one owning two matrices pooled them as one layer, its output the last map's."""
    _check_maps(_Custom(), ["d1", "d2", "d3", "c.W1", "c.W2"])


class _Vmapped(nn.Module):
    """A hand-written layer and the model's own matrix, both run under ``torch.vmap``."""

    def __init__(self) -> None:
        super().__init__()
        self.d = _Dense(5, 6)
        self.P = nn.Parameter(torch.randn(6, 6, dtype=D))
        self.head = nn.Linear(6, 3, dtype=D)

    def forward(self, x):
        h = torch.vmap(lambda r: self.d(r))(x)
        return self.head(torch.vmap(lambda r: r @ self.P)(h))


def test_maps_under_vmap_are_left_to_the_hooks():
    """The map outputs a vmap makes are wrappers without values once it ends: keeping them
    raised 'your tensor may have escaped from inside a function being vmapped'."""
    x, y = torch.randn(8, 5, dtype=D), torch.randint(0, 3, (8,))
    df = dlt.probe(_Vmapped(), x, y, CE)
    assert list(df[df.layer >= 1].drop_duplicates("layer").module) == ["d", "head"]


class _TiedLM(nn.Module):
    """Token embedding, a hidden Linear, the output projection the table itself (GPT-2's
    tied weights written as ``h @ self.emb.weight.T``)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 8, dtype=D)
        self.fc = nn.Linear(8, 8, dtype=D)

    def forward(self, t, ref=None):
        h = torch.tanh(self.fc(self.emb(t)))
        return _kept(ref, "emb.weight", h @ self.emb.weight.T).mean(1)


def test_an_embedding_table_tied_as_the_output_projection_is_measured_there():
    """Was: rows for 'emb' (the lookup) and 'fc' only; the logits' map had none."""
    torch.manual_seed(2)
    model, t, y = _TiedLM(), torch.randint(0, 11, (6, 5)), torch.randint(0, 11, (6,))
    df = dlt.probe(model, t, y, CE)
    assert list(df[df.layer >= 1].drop_duplicates("layer").module) == ["emb", "fc", "emb.weight"]
    ref: dict = {}
    CE(model(t, ref), y).backward()
    (s,) = ref["emb.weight"]
    got = df[df.module == "emb.weight"].set_index("quantity").value
    assert got["pre_std"] == pytest.approx(float(s.detach().std(correction=0)), rel=1e-9)
    assert got["grad_pre_std"] == pytest.approx(float(s.grad.std(correction=0)), rel=1e-9)
    emb = df[df.module == "emb"].set_index("quantity").value
    assert emb["pre_std"] == pytest.approx(float(model.emb(t).detach().std(correction=0)))


class _Unrun(nn.Module):
    """The head's weights read by F.linear: its forward never runs."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 8, dtype=D)
        self.fc2 = nn.Linear(8, 3, dtype=D)

    def forward(self, x):
        return F.linear(torch.relu(self.fc1(x)), self.fc2.weight, self.fc2.bias)


def test_a_layer_used_without_calling_it_is_named_in_a_warning():
    """Was: rows for 'fc1' only and no word about 'fc2' (with no other layer the probe
    refuses the model, naming it)."""
    x, y = torch.randn(8, 5, dtype=D), torch.randint(0, 3, (8,))
    with pytest.warns(RuntimeWarning, match=r"weights of 'fc2' \(Linear\) without calling the "
                                             r"module .*self\.fc2\(x\)"):
        df = dlt.probe(_Unrun(), x, y, CE)
    assert set(df.module) == {"", "fc1"}


class _TiedUnrun(_TiedLM):
    """The table tied to a Linear head that the forward never calls (it maps by the table)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 11, bias=False, dtype=D)
        self.head.weight = self.emb.weight


def test_a_tied_table_whose_head_module_never_runs_is_measured_at_its_map():
    torch.manual_seed(2)
    t, y = torch.randint(0, 11, (6, 5)), torch.randint(0, 11, (6,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = dlt.probe(_TiedUnrun(), t, y, CE)
    assert list(df[df.layer >= 1].drop_duplicates("layer").module) == ["emb", "fc", "emb.weight"]


class _Block(nn.Module):
    """A residual block ended by a hand-written layer measured at its map."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 6, dtype=D)
        self.d = _Dense(6, 6)

    def forward(self, x):
        return x + self.d(torch.tanh(self.a(x)))


def test_a_block_ended_by_a_layer_measured_at_its_map_keeps_its_row():
    """The block's block_grad_std row went with the replaced layer's rows (my first version)."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(5, 6, dtype=D), _Block(), nn.Linear(6, 3, dtype=D))
    x, y = torch.randn(16, 5, dtype=D), torch.randint(0, 3, (16,))
    df = dlt.probe(model, x, y, CE)
    row = df[df.quantity == "block_grad_std"]
    assert list(zip(row.layer, row.module)) == [(3, "1")]  # at '1.d', the block's last layer
    assert df[(df.layer == 3) & (df.quantity == "pre_std")].module.item() == "1.d"
    out = []
    hook = model[1].register_forward_hook(lambda m, a, o: out.append(o) or o.retain_grad())
    CE(model(x), y).backward()
    hook.remove()
    assert row.value.item() == pytest.approx(float(out[0].grad.std(correction=0)), rel=1e-9)


class _Equalized(nn.Module):
    """StyleGAN's equalized-learning-rate layer: the map's output times a constant, a bias."""

    def __init__(self) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(8, 5, dtype=D))
        self.b = nn.Parameter(torch.full((8,), 0.1, dtype=D))

    def forward(self, x):
        return F.linear(x, self.W) * (1 / 5 ** 0.5) + self.b


def test_a_constant_gain_after_the_map_keeps_the_layers_own_rows():
    """``s * c + b`` is the layer's map: its own rows stay, with its Tanh module's act rows
    (my version before this one measured it at ``x W`` alone, without act rows)."""
    torch.manual_seed(5)
    model = nn.Sequential(_Equalized(), nn.Tanh(), nn.Linear(8, 3, dtype=D))
    x, y = torch.randn(16, 5, dtype=D), torch.randint(0, 3, (16,))
    df = dlt.probe(model, x, y, CE)
    got = df[df.layer == 1].set_index("quantity").value
    s = model[0](x).detach()
    assert got["pre_std"] == pytest.approx(float(s.std(correction=0)), rel=1e-9)
    assert got["act_std"] == pytest.approx(float(torch.tanh(s).std(correction=0)), rel=1e-9)
