"""depthlab.torch on models of the kinds a user brings (round 8): functional activations, Flatten/
Unflatten and Identity, Conv1d/Conv3d/ConvTranspose2d with output_padding, GroupNorm/InstanceNorm/
LayerNorm/RMSNorm stacks, PReLU per channel, Softplus(beta), LogSigmoid, ModuleDict/ModuleList
forwards, two inputs with a keyword, a ViT-style patch embedding, an
autoencoder and a multi-label loss, each against the autograd reference of
tests/test_torch_probe.py (every row, followers included). Regressions: convolutions on unbatched
inputs (dead channels counted along the wrong axis), a LayerNorm over several axes (taken for a
weight layer), models on the 'meta' device (torch errors from deep inside), and ``predict`` of
Linear/Conv subclasses with their own forward (weight standardization: predicted 0.003x)."""

from __future__ import annotations

import copy
import tempfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_torch_probe_round5 import CE, _r, check
from torch import nn

import depthlab.torch as dlt

# ---------------------------------------------------------------------------------------------
# probe against autograd on more kinds of models (these passed: coverage)


class _Functional(nn.Module):
    """Activations as torch functions beside one module (a's F.silu: its follower rows since
    round 22)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.act, self.c = nn.Linear(5, 8), nn.Linear(8, 8), nn.Mish(), \
            nn.Linear(8, 3)

    def forward(self, x):
        return self.c(self.act(self.b(torch.tanh(F.silu(self.a(x))))))


class _Dict(nn.Module):
    """A forward driven by a ModuleDict and a ModuleList, one activation module reused."""

    def __init__(self):
        super().__init__()
        self.d = nn.ModuleDict({"enc": nn.Linear(5, 8), "act": nn.LeakyReLU(0.2),
                                "dec": nn.Linear(8, 3)})
        self.blocks = nn.ModuleList([nn.Linear(8, 8, bias=False) for _ in range(2)])
        self.act = nn.ELU(0.5)

    def forward(self, x):
        h = self.d["act"](self.d["enc"](x))
        for m in self.blocks:
            h = self.act(m(h))
        return self.d["dec"](h)


class _TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.act, self.c = nn.Linear(5, 6), nn.Linear(4, 6), \
            nn.Softplus(beta=2.0, threshold=3.0), nn.Linear(6, 3)

    def forward(self, x, z, scale=1.0):
        return self.c(self.act(self.a(x)) * scale + self.b(z))


class _Patches(nn.Module):
    """ViT-style: a patch embedding (stride = kernel), class token and position table on the
    model itself (not layers), a pre-norm encoder, the class token's head."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, stride=4)
        self.cls = nn.Parameter(torch.zeros(1, 1, 8))
        self.pos = nn.Parameter(torch.randn(1, 5, 8) * 0.02)
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1) + self.pos
        return self.head(self.enc(t)[:, 0])


def _enc(i):
    return [f"enc.layers.{i}.self_attn", f"enc.layers.{i}.self_attn.out_proj",
            f"enc.layers.{i}.linear1", f"enc.layers.{i}.linear2"]


def _cases():
    return {
        "functional-activations": (_Functional, _r(6, 5), ["a", "b", "c"], {"b": ("act",)},
                                   {}),
        "conv1d-groupnorm-mish-instancenorm-hardswish": (
            lambda: nn.Sequential(nn.Conv1d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.Mish(),
                                  nn.Conv1d(8, 8, 3, stride=2), nn.InstanceNorm1d(8),
                                  nn.Hardswish(), nn.Flatten(), nn.Linear(24, 3)),
            _r(4, 3, 8), ["0", "3", "7"], {"0": ("1", "2"), "3": ("4", "5")},
            {"0": 1, "3": 1}),
        "conv3d-bias-free-selu": (
            lambda: nn.Sequential(nn.Conv3d(2, 4, 3, padding=1, bias=False), nn.SELU(),
                                  nn.Flatten(), nn.Linear(4 * 27, 3)),
            _r(3, 2, 3, 3, 3), ["0", "3"], {"0": ("1",)}, {"0": 1}),
        "conv-transpose-output-padding-hardtanh": (
            lambda: nn.Sequential(nn.ConvTranspose2d(2, 4, 3, stride=2, padding=1,
                                                     output_padding=1),
                                  nn.Hardtanh(-0.5, 0.5), nn.Flatten(), nn.Linear(256, 3)),
            _r(3, 2, 4, 4), ["0", "3"], {"0": ("1",)}, {"0": 1}),
        "unflatten-layernorm-logsigmoid-rmsnorm-identity": (
            lambda: nn.Sequential(nn.Linear(6, 12), nn.Unflatten(1, (3, 4)), nn.LayerNorm(4),
                                  nn.LogSigmoid(), nn.Flatten(), nn.Linear(12, 12),
                                  nn.RMSNorm(12), nn.LeakyReLU(0.2), nn.Identity(),
                                  nn.Linear(12, 3)),
            _r(5, 6), ["0", "5", "9"], {"0": ("2", "3"), "5": ("6", "7")}, {}),
        "softplus-beta-tanh-saturating": (
            lambda: nn.Sequential(nn.Linear(6, 10), nn.Softplus(beta=3.0, threshold=5.0),
                                  nn.Linear(10, 10), nn.Tanh(), nn.Linear(10, 3)),
            _r(5, 6) * 3, ["0", "2", "4"], {"0": ("1",), "2": ("3",)}, {}),
        "module-dict-and-list": (_Dict, _r(5, 5), ["d.enc", "blocks.0", "blocks.1", "d.dec"],
                                 {"d.enc": ("d.act",), "blocks.0": ("act",),
                                  "blocks.1": ("act",)}, {}),
        "batch-of-one": (lambda: nn.Sequential(nn.Linear(6, 10), nn.Hardtanh(), nn.Linear(10, 3)),
                         _r(1, 6), ["0", "2"], {"0": ("1",)}, {}),
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_probe_against_autograd_on_more_models(name):
    make, x, layers, followers, axis = _cases()[name]
    torch.manual_seed(0)
    model = make()
    own = 1 if name == "functional-activations" else None  # a's F.silu (round 22)
    df = check(model, x, layers, followers, axis, own_follower_rows=own)
    if own:  # the first function after the layer is its activation: silu, not the tanh after
        s = model.a(x).detach()
        got = df[df.layer == 1].set_index("quantity").value
        assert got["act_mean"] == pytest.approx(float(F.silu(s).mean()), rel=1e-10)
        assert got["inactive_frac"] == pytest.approx(float((s <= 0).double().mean()))


def test_two_inputs_a_keyword_and_a_dict_output():
    torch.manual_seed(1)
    check(_TwoInputs(), (_r(5, 5), _r(5, 4)), ["a", "b", "c"], {"a": ("act",)})
    check(_TwoInputs(), {"x": _r(5, 5), "z": _r(5, 4), "scale": 0.5}, ["a", "b", "c"],
          {"a": ("act",)})


def test_patch_embedding_transformer_and_regression_losses():
    torch.manual_seed(2)
    check(_Patches(), _r(3, 3, 8, 8), ["patch", *_enc(0), "head"],
          blocks=["enc.layers.0"], own_follower_rows=4)  # linear1's F.relu (round 22)
    x = _r(6, 5)
    check(nn.Sequential(nn.Linear(5, 3), nn.Tanh(), nn.Linear(3, 5)), x, ["0", "2"],
          {"0": ("1",)}, y=x.clone(), loss_fn=nn.MSELoss())
    labels = (torch.rand(6, 4) > 0.5).double()
    check(nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 4)), x, ["0", "2"],
          {"0": ("1",)}, y=labels, loss_fn=nn.BCEWithLogitsLoss())


def test_prelu_per_channel_rows():
    """PReLU(C) after a conv: its slopes per channel; a channel with slope 0 and a negative
    bias is dead, one with a negative bias but slope 0.25 is not; every entry with s <= 0 is
    inactive."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.PReLU(4), nn.Flatten(), nn.Linear(16, 3))
    model = model.double()
    with torch.no_grad():
        model[0].bias.copy_(torch.tensor([-50.0, -50.0, 0.0, 0.0]))
        model[1].weight.copy_(torch.tensor([0.0, 0.25, -0.5, 0.1]))
    x = _r(5, 2, 4, 4)
    df = dlt.probe(model, x, torch.randint(0, 3, (5,)), CE)
    got = df[df.layer == 1].set_index("quantity").value
    with torch.no_grad():
        s = model[0](x)
        a = model[1](s)
    leaf = s.clone().requires_grad_(True)
    (d,) = torch.autograd.grad(copy.deepcopy(model[1])(leaf).sum(), leaf)
    alive = (d != 0).any(0).any(-1).any(-1)
    assert got["dead_frac"] == pytest.approx(float((~alive).double().mean())) == 0.25
    assert got["inactive_frac"] == pytest.approx(float((s <= 0).double().mean()))
    assert got["act_mean"] == pytest.approx(float(a.mean()), abs=1e-12)
    assert got["act_std"] == pytest.approx(float(a.std(unbiased=False)), abs=1e-12)
    assert "saturated_frac" not in got


# ---------------------------------------------------------------------------------------------
# regressions


@pytest.mark.parametrize("conv, shape", [
    (lambda: nn.Conv1d(3, 4, 3), (3, 8)),
    (lambda: nn.Conv2d(3, 4, 3), (3, 5, 5)),
    (lambda: nn.ConvTranspose1d(3, 4, 3), (3, 8)),
], ids=["conv1d", "conv2d", "conv-transpose1d"])
def test_dead_channels_of_a_convolution_on_an_unbatched_input(conv, shape):
    """Regression: a conv on an unbatched input (C, L...) has its channels on axis 0; the
    probe counted units along axis 1 (positions), where no position was dead: dead_frac 0.0
    for one dead channel of 4 (0.25)."""
    torch.manual_seed(4)
    c = conv().double()
    # drawn here, from the seed (drawn at collection, the input depended on the test files
    # collected before: a CI run drew one with a second channel dead, 0.5)
    x = torch.randn(*shape, dtype=torch.float64)
    with torch.no_grad():
        c.bias.copy_(torch.tensor([-50.0, 0.0, 0.0, 0.0]))
    model = nn.Sequential(c, nn.ReLU(), nn.Flatten(0))
    df = dlt.probe(model, x, x.new_zeros(model(x).shape), nn.MSELoss())
    row = df[(df.layer == 1) & (df.quantity == "dead_frac")].value
    with torch.no_grad():
        s = c(x)
    expected = float((s.flatten(1) <= 0).all(1).double().mean())
    assert expected == 0.25
    assert row.tolist() == [expected]
    assert dlt.discover(model, x)[0].feature_axis % s.dim() == 0


def test_a_layer_norm_over_several_axes_is_the_conv_s_follower():
    """Regression: LayerNorm((C, H, W)) has a gain of 3 dimensions, so it was counted as a weight
    layer (layer 2 of 3, pre_* = its output) and the conv before it had no norm or activation
    rows; now it is the conv's normalization, its ReLU the activation, and the layers are the
    conv and the head (same for RMSNorm over two axes)."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.LayerNorm([4, 3, 3]), nn.ReLU(), nn.Flatten(),
                          nn.Linear(36, 3))
    df = check(model, _r(5, 2, 5, 5), ["0", "4"], {"0": ("1", "2")}, {"0": 1})
    assert "act_std" in set(df[df.layer == 1].quantity)
    seq = nn.Sequential(nn.Linear(4, 6), nn.Unflatten(1, (2, 3)), nn.Flatten(),
                        nn.Unflatten(1, (2, 3)), nn.RMSNorm([2, 3]), nn.Flatten(),
                        nn.Linear(6, 3))
    assert [i.name for i in dlt.weight_modules(seq)] == ["0", "6"]


def _meta():
    with torch.device("meta"):
        return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def test_a_model_on_the_meta_device_is_refused_in_one_line():
    """Regression: probe said 'Cannot copy out of meta tensor; no data!' (NotImplementedError),
    predict 'Tensor.item() cannot be called on meta tensors', doctor the same after building
    its data; now one ValueError naming the parameter. discover() computes nothing and still
    takes the model."""
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    for call in (lambda: dlt.probe(_meta(), x, y, CE),
                 lambda: dlt.probe(_meta(), x.to("meta"), y.to("meta"), CE),
                 lambda: dlt.predict(_meta(), x.to("meta")),
                 lambda: dlt.doctor(_meta(), (torch.randn(32, 6), torch.randint(0, 3, (32,))),
                                    loss_fn=CE, steps=2, verify=False)):
        with pytest.raises(ValueError, match=r"^'0.weight' of Sequential is on the 'meta' "
                                             r"device .*to_empty") as info:
            call()
        assert "\n" not in str(info.value)
    assert [i.name for i in dlt.discover(_meta(), x.to("meta"))] == ["0", "2"]


def test_a_watch_on_a_meta_model_is_refused_when_created():
    with pytest.raises(ValueError, match=r"'0.weight' of Sequential is on the 'meta' device"):
        dlt.Watch(_meta(), every=1, out=tempfile.mkdtemp())


class _Standardized(nn.Conv2d):
    """Weight standardization (BiT, NFNets): the forward uses (W - mean) / std per filter."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / (w.std((1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class _Equalized(nn.Linear):
    """An equalized-learning-rate linear layer (StyleGAN): W scaled in the forward."""

    def forward(self, x):
        return F.linear(x, self.weight * 3.0, self.bias)


class _OwnConvForward(nn.Conv1d):
    def _conv_forward(self, x, weight, bias):
        return super()._conv_forward(x, 2.0 * weight, bias)


class _Tagged(nn.Linear):
    """A subclass that keeps nn.Linear's forward: still predicted."""


@pytest.mark.parametrize("make, x, fragment", [
    (lambda: nn.Sequential(_Standardized(3, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),
                           nn.Linear(16 * 36, 3)), (8, 3, 6, 6),
     r"layer '0' is a _Standardized, a Conv2d subclass with its own forward\(\)"),
    (lambda: nn.Sequential(nn.Linear(6, 32), nn.Tanh(), _Equalized(32, 32), nn.Tanh(),
                           nn.Linear(32, 3)), (8, 6),
     r"layer '2' is a _Equalized, a Linear subclass with its own forward\(\)"),
    (lambda: nn.Sequential(_OwnConvForward(2, 4, 3), nn.Flatten(), nn.Linear(24, 3)),
     (8, 2, 8), r"layer '0' is a _OwnConvForward, a Conv1d subclass with its own "
                r"_conv_forward\(\)"),
], ids=["weight-standardized-conv", "equalized-linear", "own-conv-forward"])
def test_predict_refuses_layers_whose_forward_is_not_torchs(make, x, fragment):
    """Regression: predict took a Linear/Conv subclass for the layer it subclasses and used its
    raw weight: a weight-standardized ReLU CNN had pre_std predicted 0.003-0.11x the
    measurement, the equalized tanh chain 0.2-0.35x."""
    torch.manual_seed(6)
    xs = torch.randn(*x)
    with pytest.raises(ValueError, match=fragment):
        dlt.predict(make(), xs, torch.randint(0, 3, (x[0],)), CE)


def test_predict_takes_a_subclass_that_keeps_the_forward():
    torch.manual_seed(7)
    model = nn.Sequential(_Tagged(32, 256), nn.Tanh(), _Tagged(256, 256), nn.Tanh(),
                          nn.Linear(256, 10))
    df = dlt.predict(model, torch.randn(256, 32), torch.randint(0, 10, (256,)), CE)
    df = df[~((df.layer == 3) & (df.quantity == "pre_std"))]
    ratio = (df.value / df.predicted).to_numpy()
    assert np.isfinite(ratio).all() and np.abs(ratio - 1).max() < 0.08, df


class _TokenMLP(nn.Module):
    """Linear layers over a sequence (N, L, F), each output changed in place by ``op``."""

    def __init__(self, op):
        super().__init__()
        self.a, self.b, self.c, self.op = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 3), op

    def forward(self, x):
        return self.c(self.op(self.b(self.op(self.a(x))))).mean(1)


_IN_PLACE = {"relu-module": (nn.ReLU(inplace=True), nn.ReLU()),
             "relu-functional": (lambda h: F.relu(h, inplace=True), F.relu),
             "mul_": (lambda h: h.mul_(2.0), lambda h: h * 2.0),
             "clamp_": (lambda h: h.clamp_(-0.1, 0.1), lambda h: h.clamp(-0.1, 0.1))}


@pytest.mark.parametrize("name", list(_IN_PLACE))
def test_linear_on_a_sequence_changed_in_place_keeps_its_gradient_rows(name):
    """Regression: nn.Linear on a (N, L, F) input returns a view (its matmul's output reshaped);
    the tensor hook on that view never fired once the view was changed in place, so layers 1
    and 2 had no grad_pre_std/grad_pre_absmean rows at all (autograd: 0.0038 and 0.0093 for
    an in-place ReLU)."""
    in_place, twin = _IN_PLACE[name]
    torch.manual_seed(8)
    model = _TokenMLP(in_place).double()
    x, y = _r(3, 5, 4), torch.randint(0, 3, (3,))
    df = dlt.probe(model, x, y, CE)
    model.op = twin
    outs: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda m, a, o: outs.append(o))
               for m in (model.a, model.b, model.c)]
    grads = torch.autograd.grad(CE(model(x), y), outs)
    for h in handles:
        h.remove()
    for i, g in enumerate(grads, start=1):
        got = df[df.layer == i].set_index("quantity").value
        assert "grad_pre_std" in got, (i, sorted(got.index))
        assert got["grad_pre_std"] == pytest.approx(float(g.std(unbiased=False)), rel=1e-9)
        assert got["grad_pre_absmean"] == pytest.approx(float(g.abs().mean()), rel=1e-9)


class _ViewBlock(nn.Module):
    """x + tanh(W x + b), returned as a view of the whole sum (``view=True``) or as it is."""

    def __init__(self, d: int, view: bool) -> None:
        super().__init__()
        self.lin = nn.Linear(d, d)
        self.act = nn.Tanh()
        self.view = view

    def forward(self, x):
        y = x + self.act(self.lin(x))
        return y.view(y.shape) if self.view else y


class _Blocks(nn.Module):
    def __init__(self, view: bool, in_place: bool) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.b1 = _ViewBlock(16, view)
        self.b2 = _ViewBlock(16, view)
        self.head = nn.Linear(16, 3)
        self.in_place = in_place

    def forward(self, x):
        h = self.b1(self.inp(x))
        h = h.mul_(2) if self.in_place else h * 2  # the block output changed in place
        return self.head(self.b2(h))


@pytest.mark.parametrize("view", [False, True])
def test_block_output_changed_in_place_keeps_its_block_grad_row(view):
    """Regression: a residual block's output that is a view of the whole sum (``y.view(...)``)
    and is then changed in place by the caller had no ``block_grad_std`` row (its tensor hook
    never fired); the row is ``std(dL/d block output)`` before the change, as the out-of-place
    twin's autograd gradient gives it."""
    torch.manual_seed(0)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    model = _Blocks(view, in_place=True)
    df = dlt.probe(model, x, y, nn.CrossEntropyLoss())
    got = dict(df[df.quantity == "block_grad_std"][["module", "value"]].values.tolist())
    twin = _Blocks(view, in_place=False)
    twin.load_state_dict(model.state_dict())
    outs = {}

    def keep(name):
        def hook(module, args, out):
            out.retain_grad()
            outs[name] = out
        return hook

    for name in ("b1", "b2"):
        getattr(twin, name).register_forward_hook(keep(name))
    nn.CrossEntropyLoss()(twin(x), y).backward()
    assert set(got) == {"b1", "b2"}
    for name, out in outs.items():
        assert got[name] == pytest.approx(out.grad.std(unbiased=False).item(), rel=1e-5)
