"""depthlab.torch.predict: variance propagation from a model's actual weights against the
measured statistics at initialization (tolerances of tests/test_theory.py: 15% on variances)."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch
from torch import nn

import depthlab.torch as dlt
from depthlab.theory import propagate
from depthlab.torch import zoo

VAR_RTOL = 0.15  # as test_propagate_matches_measured_network


def _deep(activation, init, width=384, depth=10, seed=0):
    torch.manual_seed(seed)
    model = zoo.mlp([width] * (depth + 1) + [10], activation=activation)
    for m in model:
        if isinstance(m, nn.Linear) and init is not None:
            init(m.weight)
            nn.init.zeros_(m.bias)
    return model


def _check(df, quantities=("pre_std", "grad_pre_std")):
    """Measured and predicted variances within VAR_RTOL; forward quantities on the wide
    layers only (the 10-unit output layer's pooled variance is a 10-sample estimate)."""
    last = df.layer.max()
    for q in quantities:
        sel = df[(df.quantity == q) & ((df.layer < last) | (q == "grad_pre_std"))]
        assert len(sel) >= 5
        ratio = (sel.value / sel.predicted) ** 2  # compare variances
        np.testing.assert_allclose(ratio, 1.0, rtol=VAR_RTOL, err_msg=q)


@pytest.mark.parametrize("activation, init", [
    (nn.Tanh, nn.init.xavier_uniform_),
    (nn.Tanh, None),  # PyTorch's default init: gradients shrink, biases non-zero
])
def test_prediction_matches_measurement_on_deep_chains(activation, init):
    model = _deep(activation, init)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 384, generator=g)
    y = torch.randint(0, 10, (256,), generator=g)
    df = dlt.predict(model, x, y, nn.CrossEntropyLoss())
    assert list(df.columns) == ["step", "layer", "module", "quantity", "value", "predicted"]
    _check(df, ("pre_std", "act_std", "grad_pre_std"))
    top = df[(df.layer == 11) & (df.quantity == "grad_pre_std")]
    assert top.value.item() == pytest.approx(top.predicted.item(), rel=1e-12)


def test_deep_relu_chain_with_he_init():
    """He init keeps gradients level; the forward variance of a finite-width ReLU chain
    fluctuates more (log-normal, growing like depth / width: Hanin & Rolnick 2018), so the
    forward check allows 30% on hidden-layer variances at width 1000."""
    model = _deep(lambda: nn.ReLU(inplace=True),
                  lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
                  width=1000, depth=8)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(128, 1000, generator=g)
    y = torch.randint(0, 10, (128,), generator=g)
    df = dlt.predict(model, x, y, nn.CrossEntropyLoss())
    _check(df, ("grad_pre_std",))
    pre = df[(df.quantity == "pre_std") & (df.layer <= 8)]
    np.testing.assert_allclose((pre.value / pre.predicted) ** 2, 1.0, rtol=0.3)
    grads = df[df.quantity == "grad_pre_std"].predicted.to_numpy()[:-1]
    assert grads.max() / grads.min() < 1.1  # He: level through the hidden layers


def test_vanishing_sigmoid_chain_is_predicted():
    model = _deep(nn.Sigmoid, lambda w: nn.init.normal_(w, std=1 / math.sqrt(384)), depth=8)
    x = torch.randn(256, 384)
    y = torch.randint(0, 10, (256,))
    df = dlt.predict(model, x, y, nn.CrossEntropyLoss())
    g = df[df.quantity == "grad_pre_std"].set_index("layer")
    assert g.predicted[1] / g.predicted[9] < 1e-3  # ~1/16 per layer in variance
    np.testing.assert_allclose((g.value / g.predicted) ** 2, 1.0, rtol=VAR_RTOL)


def test_relative_prediction_equals_depthlab_theory(monkeypatch):
    """Without y: gradient relative to the top layer; equals theory.propagate for the same
    weight variances (exact quadrature, same formulas). The population variances are compared:
    predict() reports the expected measured spread, 1/n of the units' random means short of
    it (predict._finite_units, tested in tests/test_theory_round10.py), left out here."""
    P = importlib.import_module("depthlab.torch.predict")

    monkeypatch.setattr(P, "_finite_units", lambda rows: [(0.0, 0.0)] * len(rows))
    torch.manual_seed(0)
    sizes = [50, 80, 60, 40]
    model = zoo.mlp(sizes, activation=nn.Tanh, bias=False)
    variances = [0.02, 0.03, 0.05]
    with torch.no_grad():
        for m, v in zip([m for m in model if isinstance(m, nn.Linear)], variances):
            m.weight.normal_(0.0, 1.0)
            m.weight.mul_(math.sqrt(v) / m.weight.pow(2).mean().sqrt())  # mean of W^2 = v
    x = torch.randn(30, 50, dtype=torch.float32)
    # examples of one length: predict() propagates examples of varied length as groups
    # (predict._input_groups), the NumPy theory the batch's average
    x = x * (math.sqrt(50) / x.norm(dim=1, keepdim=True))
    df = dlt.predict(model, x)
    assert df.value.isna().all()
    xin = float(x.double().pow(2).mean())
    want = propagate(sizes, "tanh", init=lambda fi, fo: variances[sizes.index(fi)],
                     input_var=xin)
    got = df[df.quantity == "grad_pre_std"].predicted.to_numpy() ** 2
    np.testing.assert_allclose(got[:-1], want.grad_pre_var.to_numpy()[:-1], rtol=1e-6)
    pre = df[df.quantity == "pre_std"].predicted.to_numpy() ** 2
    np.testing.assert_allclose(pre, want.pre_var.to_numpy(), rtol=1e-6)


def test_conv_chain():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 48, 3, padding=1), nn.Tanh(),
                          nn.Conv2d(48, 48, 3, padding=1), nn.Tanh(),
                          nn.Conv2d(48, 48, 3, padding=1, stride=2), nn.Tanh(),
                          nn.Flatten(), nn.Linear(48 * 8 * 8, 10))
    x = torch.randn(32, 3, 16, 16)
    y = torch.randint(0, 10, (32,))
    df = dlt.predict(model, x, y, nn.CrossEntropyLoss())
    sel = df[df.quantity.isin(["pre_std", "grad_pre_std"])]
    # zero padding at the borders lowers the measured variance a little: 30% on variances
    np.testing.assert_allclose((sel.value / sel.predicted) ** 2, 1.0, rtol=0.3)


@pytest.mark.parametrize("model, match", [
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.LPPool2d(2, 2), nn.Flatten(),
                   nn.Linear(36, 2)), "'2' \\(LPPool2d\\)"),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.InstanceNorm2d(4, track_running_stats=True),
                   nn.ReLU(), nn.Flatten(), nn.Linear(144, 2)).eval(),
     "InstanceNorm.*track_running_stats=True"),
    (nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)).eval(),
     "eval mode"),
    (nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.AlphaDropout(0.5), nn.Linear(4, 2)), "chain"),
    (zoo.lstm_classifier(features=4), "Linear/Conv"),
])
def test_unsupported_models_are_refused(model, match):
    x = (
        torch.randn(2, 5, 4) if isinstance(model, zoo.LSTMClassifier) else
        torch.randn(2, 3, 8, 8) if isinstance(model[0], nn.Conv2d) else torch.randn(2, 4))
    with pytest.raises(ValueError, match=match):
        dlt.predict(model, x)


def test_bad_arguments():
    model = zoo.mlp([4, 8, 2])
    with pytest.raises(ValueError, match="both"):
        dlt.predict(model, torch.randn(3, 4), torch.tensor([0, 1, 0]))
    with pytest.raises(TypeError, match="floating"):
        dlt.predict(model, torch.ones(3, 4, dtype=torch.long))


class _Block(nn.Module):
    """``post(x + fc2(act(fc1(x))))``: a residual block with an identity shortcut."""

    def __init__(self, width, act, post=None):
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.act = act()
        self.fc2 = nn.Linear(width, width)
        self.post = post() if post is not None else None

    def forward(self, x):
        y = x + self.fc2(self.act(self.fc1(x)))
        return self.post(y) if self.post is not None else y


def _resnet_mlp(act, post, width=384, blocks=6):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, width), nn.Tanh(),
                          *[_Block(width, act, post) for _ in range(blocks)],
                          nn.Linear(width, 10))
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=math.sqrt(0.5 / m.in_features))
            nn.init.zeros_(m.bias)
    g = torch.Generator().manual_seed(1)
    return model, torch.randn(256, 64, generator=g), torch.randint(0, 10, (256,), generator=g)


def test_residual_blocks_add_the_identity_path():
    model, x, y = _resnet_mlp(nn.Tanh, None)
    from depthlab.torch.predict import chain

    segments = chain(model, x)
    assert [s["kind"] for s in segments] == ["layer"] + ["block"] * 6 + ["layer"]
    assert [seg["name"] for seg in segments[1]["layers"]] == ["2.fc1", "2.fc2"]
    df = dlt.predict(model, x, y, nn.CrossEntropyLoss())
    _check(df)


def test_residual_blocks_with_post_activation():
    """``relu(x + F(x))``: the skip carries the ReLU's skewed, non-negative output (the sum is
    not Gaussian: propagated as a distribution) and a unit's ReLU masks persist from block
    to block (the skip gradient is conditioned on the unit's value); measured std within
    0.96-1.03 of the prediction (a Gaussian sum and independent masks: up to 1.4x off)."""
    model, x, y = _resnet_mlp(nn.ReLU, nn.ReLU)
    df = dlt.predict(model, x, y, nn.CrossEntropyLoss())
    sel = df[df.quantity.isin(["pre_std", "grad_pre_std"]) & (df.layer < df.layer.max())]
    np.testing.assert_allclose((sel.value / sel.predicted) ** 2, 1.0, rtol=VAR_RTOL)


# ----------------------------------------------------------------------------------------------
# BatchNorm (training mode): Yang et al. 2019's gradient explosion, from the modules' gamma, beta

BN_FACTOR_RTOL = 0.025  # per-layer gradient factor, as the NumPy BN tests (width 256-512)


def _bn_mlp(depth, width, act, din=64, seed=0):
    torch.manual_seed(seed)
    mods, c = [], din
    for _ in range(depth):
        mods += [nn.Linear(c, width, bias=False), nn.BatchNorm1d(width), act()]
        c = width
    return nn.Sequential(*mods, nn.Linear(c, 10))


def _factors(df):
    """Per-layer growth of grad_pre_std towards the input (measured, predicted), over the
    hidden layers after the first (the first has another fan-in)."""
    g = df[df.quantity == "grad_pre_std"]
    v, p = g.value.to_numpy()[1:-1], g.predicted.to_numpy()[1:-1]
    return v[:-1] / v[1:], p[:-1] / p[1:]


def test_bn_relu_mlp_explodes_as_predicted():
    """Depth 20, width 256, batch 512: the predicted factor is bn_gradient_factor's
    sqrt(pi / (pi - 1)) = 1.2112; measured per-layer factors 1.187-1.228 (within 2%); the
    accumulated gradient std within 4% after 20 layers (x ~ 45 in std)."""
    from depthlab.theory import bn_gradient_factor

    model = _bn_mlp(20, 256, nn.ReLU)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(512, 64, generator=g), torch.randint(0, 10, (512,), generator=g)
    df = dlt.predict(model, x, y, nn.CrossEntropyLoss())
    meas, pred = _factors(df)
    # the actual weights' mean squares differ by ~0.4% from layer to layer; on average (a
    # batch of B = 512: E[1 / var] and the 2 directions BN's backward removes make the
    # per-layer variance factor (B - 2) / (B - 3) times the large-batch one):
    finite = math.sqrt(510 / 509)
    assert np.exp(np.log(pred).mean()) == pytest.approx(
        bn_gradient_factor("relu").growth * finite, rel=2e-3)
    np.testing.assert_allclose(pred, bn_gradient_factor("relu").growth, rtol=1e-2)
    np.testing.assert_allclose(meas / pred, 1.0, rtol=BN_FACTOR_RTOL)
    grads = df[df.quantity == "grad_pre_std"]
    assert grads.predicted.iloc[1] / grads.predicted.iloc[-2] > 25  # it explodes: 1.21^18
    # (squared ratio 0.90-0.94 before the finite-batch factor, 0.87-0.91 with it, which is
    # sqrt(510 / 509) per layer over 19 layers: 1.038 in variance; seeds 1 and 2 of this net
    # give 0.76-0.81 and 0.71-0.75 with it: one net at depth 20 walks away by that much)
    np.testing.assert_allclose((grads.value / grads.predicted) ** 2, 1.0, rtol=0.14)
    for q in ("pre_std", "act_std"):
        sel = df[(df.quantity == q) & (df.layer <= 20)]
        np.testing.assert_allclose(sel.value / sel.predicted, 1.0, rtol=0.05, err_msg=q)


def test_bn_uses_the_modules_gamma_and_beta():
    """tanh with per-channel gamma in [0.6, 1.6] and beta in [-0.4, 0.4] (as after training):
    the factor follows the channel-averaged gamma^2 E[f'^2] / Var f, not the init's 1.085."""
    model = _bn_mlp(16, 256, nn.Tanh, seed=2)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.BatchNorm1d):
                m.weight.copy_(0.6 + torch.rand(256, generator=gen))
                m.bias.copy_(0.8 * torch.rand(256, generator=gen) - 0.4)
    x, y = torch.randn(512, 64, generator=gen), torch.randint(0, 10, (512,), generator=gen)
    df = dlt.predict(model, x, y, nn.CrossEntropyLoss())
    meas, pred = _factors(df)
    assert abs(pred.mean() - 1.0853) > 0.03  # gamma and beta matter
    np.testing.assert_allclose(meas / pred, 1.0, rtol=BN_FACTOR_RTOL)
    sel = df[(df.quantity == "act_std") & (df.layer <= 16)]
    np.testing.assert_allclose(sel.value / sel.predicted, 1.0, rtol=0.05)


def test_bn_cnn_zero_padding():
    """Conv3x3 (zero padding) -> BN -> ReLU, depth 12, width 128, 8x8 maps: a border position
    reads fewer taps and its unit mean differs, which BN's batch variance includes; predicted
    factor 1.170 (1.211 without the correction), measured 1.13-1.22 per layer (mean 1.179)."""
    torch.manual_seed(0)
    mods, c = [], 3
    for _ in range(12):
        mods += [nn.Conv2d(c, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128), nn.ReLU()]
        c = 128
    model = nn.Sequential(*mods, nn.Flatten(), nn.Linear(128 * 64, 10))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 3, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)
    df = dlt.predict(model, x, y, nn.CrossEntropyLoss())
    meas, pred = _factors(df)
    assert np.exp(np.log(pred).mean()) == pytest.approx(1.1704, rel=2e-3)
    assert abs(meas.mean() / pred.mean() - 1.0) < 0.015
    np.testing.assert_allclose(meas / pred, 1.0, rtol=0.05)  # 32 images: noisier per layer
    sel = df[(df.quantity == "pre_std") & (df.layer <= 12)]
    np.testing.assert_allclose(sel.value / sel.predicted, 1.0, rtol=0.08)


class _BNResNet(nn.Module):
    """torchvision-style stem + BasicBlocks (BN, in-place ReLU shared by both calls, a
    projection shortcut 1x1 conv + BN), no pooling."""

    def __init__(self, width=64, blocks=5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        down = nn.Sequential(nn.Conv2d(width, 2 * width, 1, stride=2, bias=False),
                             nn.BatchNorm2d(2 * width))
        self.layers = nn.Sequential(*[zoo.BasicBlock(width, width) for _ in range(blocks)],
                                    zoo.BasicBlock(width, 2 * width, 2, down),
                                    zoo.BasicBlock(2 * width, 2 * width))
        self.fc = nn.Linear(2 * width * 16, 10)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.fc(torch.flatten(self.layers(self.relu(self.bn1(self.conv1(x)))), 1))


def test_bn_residual_blocks_with_projection_shortcut():
    """relu(bn2(conv2(...)) + downsample(x)): the paths add; measured/predicted std 0.95-1.07
    over the blocks' 16 layers, 1.13 at the 27-fan-in stem (32 images of 8x8: BN's batch is
    2048 positions); within 10% in std for the blocks, 15% for the stem."""
    from depthlab.torch.predict import chain

    torch.manual_seed(0)
    model = _BNResNet()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 3, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)
    segments = chain(model, x)
    assert [s["kind"] for s in segments] == ["layer"] + ["block"] * 7 + ["layer"]
    proj = segments[6]
    assert [s["name"] for s in proj["layers"]] == ["layers.5.conv1", "layers.5.conv2"]
    assert [s["name"] for s in proj["shortcut"]] == ["layers.5.downsample.0"]
    assert proj["post"].name == "relu" and segments[1]["shortcut"] == []
    df = dlt.predict(model, x, y, nn.CrossEntropyLoss())
    sel = df[df.quantity.isin(["pre_std", "act_std", "grad_pre_std"])
             & (df.layer < df.layer.max())]
    ratio = sel.value / sel.predicted
    stem = sel.module == "conv1"
    np.testing.assert_allclose(ratio[~stem], 1.0, rtol=0.1)
    np.testing.assert_allclose(ratio[stem], 1.0, rtol=0.15)
    assert set(df.module) >= {"layers.5.downsample.0", "layers.6.conv2"}


def test_zoo_resnet18_without_pooling():
    """The zoo's ResNet-18 (torchvision layout and init: 21 weight layers, BN, 3 projection
    shortcuts) with its max-pool and average-pool removed (pooling is refused): batch 32 of
    32x32 images, measured/predicted std 0.95-1.03 for pre_std, 1.00-1.01 for act_std,
    1.04-1.14 for grad_pre_std (the measurement grows a little faster towards the input: BN's
    batch is 128-8192 entries per channel, and the finite-batch correction raises the
    gradient, as in bn_gradient_factor's note)."""
    torch.manual_seed(0)
    model = zoo.resnet18(num_classes=10)
    model.maxpool, model.avgpool = nn.Identity(), nn.Identity()
    model.fc = nn.Linear(512 * 4, 10)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g)
    df = dlt.predict(model, x, y, nn.CrossEntropyLoss())
    assert df.layer.nunique() == 21
    hidden = df[df.module != "fc"]
    for q, lo, hi in (("pre_std", 0.92, 1.08), ("act_std", 0.97, 1.03),
                      ("grad_pre_std", 0.97, 1.2)):
        r = (hidden[hidden.quantity == q].value / hidden[hidden.quantity == q].predicted)
        assert r.between(lo, hi).all(), (q, r.round(3).tolist())


def test_zoo_bn_cnn_with_global_average_pooling():
    """zoo.bn_cnn: 8 x [Conv3x3 - BN - ReLU], global average pooling, Linear head. The pool
    hands each of its P inputs 1/P of the gradient (exact); forward, the pooled positions are
    treated as independent, which underestimates the head's input (neighbouring positions are
    correlated: measured head pre_std 1.28x the prediction), but the gradients, anchored at
    the head, do not depend on it: measured/predicted 0.96-1.05."""
    torch.manual_seed(0)
    model = zoo.bn_cnn((3,) + (64,) * 8)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 3, 16, 16, generator=g), torch.randint(0, 10, (32,), generator=g)
    df = dlt.predict(model, x, y, nn.CrossEntropyLoss())
    assert df.layer.nunique() == 9
    hidden = df[df.layer < 9]
    for q, tol in (("pre_std", 0.06), ("act_std", 0.03), ("grad_pre_std", 0.08)):
        r = hidden[hidden.quantity == q].value / hidden[hidden.quantity == q].predicted
        np.testing.assert_allclose(r, 1.0, rtol=tol, err_msg=q)
