"""Round 25 (bnfix25): the doctors' gradient rules on normalized networks, both engines."""

from __future__ import annotations

import copy
import importlib
import math

import numpy as np
import pytest

import depthlab as dl
from depthlab.diagnosis.rules import NORM_GRAD
from depthlab.training.trainer import Trainer

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.bridge.torch_bridge import to_torch  # noqa: E402
from depthlab.torch import prescriptions as rx  # noqa: E402

ddoc = importlib.import_module("depthlab.diagnosis.doctor")  # (the module, not the function)
tdoc = importlib.import_module("depthlab.torch.doctor")

GRADS = {"vanishing_gradients", "exploding_gradients"}


def _blobs(n: int = 320, d: int = 20, classes: int = 4, seed: int = 0):
    g = np.random.default_rng(seed)
    centers = g.normal(0.0, 1.5, (classes, d))
    y = g.integers(0, classes, n)
    x = (centers[y] + g.normal(0.0, 1.0, (n, d))).astype(np.float32)
    return x, y


@pytest.mark.parametrize("scale", [0.01, 100.0])
def test_a_norms_learned_scale_does_not_change_the_gradient_findings(scale):
    # scaling a batch norm's gamma and beta by c leaves a ReLU network's function as it was
    # (the next norm divides c out), but divides the gradient at the norm's output by c: read
    # there, layer 1 of a healthy net 'exploded' (c 0.01: 24x) or 'vanished' (c 100: 69x), in
    # both engines (a BatchNorm CNN whose second gamma grew 1 -> 2.1 under SGD momentum 0.9
    # was 'exploding', 13.9x); the rules now read dL/dxhat = gamma * dL/dy
    x, y = _blobs()
    data = (x, y, x[:80], y[:80])
    net = dl.mlp([20, 32, 32, 32, 4], "relu", "he_normal", batchnorm=True, seed=0)
    bn = net.batchnorms()[0]
    bn.gamma.value[...] *= scale
    bn.beta.value[...] *= scale
    numpy = dl.doctor(net, data, steps=10, lr=0.01, batch_size=32, probe_every=5)
    torch_ = dlt.doctor(to_torch(net), data, optimizer=("sgd", {"lr": 0.01}), steps=10,
                        batch_size=32, probe_every=5, verify=False)
    assert {f.kind for f in numpy.findings} & GRADS == set(), numpy.kinds
    assert {f.kind for f in torch_.findings} & GRADS == set(), torch_.kinds
    # the stored tables keep the probes' own rows only
    assert NORM_GRAD not in set(numpy.probes["quantity"])
    assert NORM_GRAD not in set(torch_.probes["quantity"])


def _norm_models() -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    torch.manual_seed(0)
    out = [
        ("bn1d", nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(),
                               nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)),
         (6,)),
        ("bn2d", nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                               nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(inplace=True),
                               nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 3)), (2, 4, 4)),
        ("layernorm", nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.GELU(),
                                    nn.Linear(8, 8), nn.LayerNorm(8), nn.ReLU(),
                                    nn.Linear(8, 3)), (6,)),
        ("groupnorm", nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.SiLU(),
                                    nn.Conv1d(4, 4, 3, padding=1), nn.GroupNorm(2, 4),
                                    nn.ReLU(), nn.Flatten(), nn.Linear(20, 3)), (2, 5)),
        ("instancenorm", nn.Sequential(nn.Conv1d(2, 4, 3, padding=1),
                                       nn.InstanceNorm1d(4, affine=True), nn.ReLU(),
                                       nn.Conv1d(4, 4, 3, padding=1),
                                       nn.InstanceNorm1d(4, affine=True), nn.ReLU(),
                                       nn.Flatten(), nn.Linear(20, 3)), (2, 5)),
        ("no affine", nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8, affine=False),
                                    nn.ReLU(), nn.Linear(8, 8), nn.LayerNorm(8, bias=False),
                                    nn.ReLU(), nn.Linear(8, 3)), (6,)),
    ]
    if hasattr(nn, "RMSNorm"):
        out.append(("rmsnorm", nn.Sequential(nn.Linear(6, 8), nn.RMSNorm(8), nn.ReLU(),
                                             nn.Linear(8, 8), nn.RMSNorm(8), nn.ReLU(),
                                             nn.Linear(8, 3)), (6,)))
    return out


@pytest.mark.parametrize("case", range(len(_norm_models())),
                         ids=[c[0] for c in _norm_models()])
def test_the_norm_gradient_is_read_before_the_norms_affine(case):
    # the gradient the rules read for a layer with a norm is dL/dxhat = gamma * dL/dy at that
    # norm (gamma broadcast over the channel dimension of batch/group/instance norms, over
    # the trailing dimensions of layer/RMS norms; 1 without an affine)
    _, model, shape = _norm_models()[case]
    model = model.double()
    g = torch.Generator().manual_seed(1)
    norms = [m for m in model.modules() if isinstance(m, rx.NORM_MODULES)]
    for m in norms:
        if getattr(m, "weight", None) is not None:
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g, dtype=torch.float64)
                               * 3.0 + 0.1)
    x = torch.randn((24, *shape), generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (24,), generator=g)
    layers = rx.trace(model, x)
    table = tdoc._probe_fn(False, layers)(model, x.clone(), y, nn.CrossEntropyLoss())
    got = table[table["quantity"] == NORM_GRAD].set_index("module")["value"]
    # reference: autograd's gradient at each norm's output (no in-place activation), times
    # the norm's weight
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    ref_norms = [m for m in ref.modules() if isinstance(m, rx.NORM_MODULES)]
    outs = {}

    def keep(m, _a, o):
        o.retain_grad()
        outs[m] = o

    hooks = [m.register_forward_hook(keep) for m in ref_norms]
    nn.CrossEntropyLoss()(ref(x.clone()), y).backward()
    for h in hooks:
        h.remove()
    names = {id(m): n for n, m in model.named_modules()}
    traced = {t.name: t.norm for t in layers if t.norm is not None}
    assert len(traced) == 2
    for name, norm in traced.items():
        r = ref_norms[norms.index(norm)]
        gy = outs[r].grad
        w = getattr(r, "weight", None)
        if w is not None:
            channel = not isinstance(r, (nn.LayerNorm, getattr(nn, "RMSNorm", nn.LayerNorm)))
            gy = gy * (w.detach().view(1, -1, *([1] * (gy.dim() - 2))) if channel
                       else w.detach())
        want = float(gy.std(unbiased=False))
        assert got[name] == pytest.approx(want, rel=1e-9), (names[id(norm)], got[name], want)


def test_the_numpy_doctor_reads_the_norm_gradient_as_the_torch_doctor_does():
    # the same network in both engines (to_torch, float64), gammas far from 1: the NumPy
    # doctor's rows of dL/dxhat equal the torch doctor's, and its rules read them
    x, y = _blobs(n=64)
    net = dl.mlp([20, 16, 16, 16, 4], "tanh", "glorot_uniform", batchnorm=True, seed=0,
                 dtype="float64")
    g = np.random.default_rng(2)
    for bn in net.batchnorms():
        bn.gamma.value[...] = g.uniform(0.1, 3.0, bn.gamma.value.shape)
        bn.beta.value[...] = g.normal(0.0, 0.5, bn.beta.value.shape)
    model = to_torch(net)
    frame, numpy_rows = _same_norm_rows(net, model, x, y)
    rules, kept = ddoc.norm_gradient_frame(frame)
    r = rules[(rules["quantity"] == "grad_pre_std") & (rules["step"] == 0)]
    np.testing.assert_allclose(r["value"].to_numpy(), numpy_rows["value"].to_numpy())
    assert NORM_GRAD not in set(kept["quantity"])


def test_the_numpy_doctors_switch_of_optimizer_keeps_the_l2_weight_decay():
    # a cure that switches the optimizer re-trained with none of the run's arguments: SGD's
    # weight_decay (an L2 penalty, which Adam adds to the gradient alike) was dropped, so the
    # cure trained another objective; the torch doctor keeps it (3ebd55b)
    from depthlab.diagnosis import Finding

    assert ddoc._kept_optimizer_kwargs("SGD", "adam", {"momentum": 0.9, "weight_decay": 0.01}
                                       ) == {"weight_decay": 0.01}
    assert ddoc._kept_optimizer_kwargs("sgd", "adamw", {"weight_decay": 0.01}) == {}
    assert ddoc._kept_optimizer_kwargs("adam", "sgd", {"weight_decay": 0.01,
                                                       "decoupled_weight_decay": True}) == {}
    assert ddoc._kept_optimizer_kwargs("sgd", "adam", {"momentum": 0.9}) == {}
    x, y = _blobs(n=200)
    d = ddoc._unpack((x, y, x[:50], y[:50]), 0)
    net = dl.mlp([20, 16, 16, 4], "relu", "he_normal", seed=0)
    config = dict(net.config)
    settings = {"steps": 20, "loss": "cross_entropy", "optimizer": "sgd", "lr": 0.05,
                "optimizer_kwargs": {"momentum": 0.9, "weight_decay": 0.2}, "batch_size": 32,
                "seed": 0, "probe_every": 10}
    reference = ddoc._train(dl.mlp(**config), config, d, settings)
    cure = {"optimizer": "adam", "lr": 0.01}
    finding = Finding("lr_too_high", [1], {"metric": 1.0}, "a test finding", cure, "use adam")
    (v,) = ddoc.verify_prescriptions([finding], reference, config, d, settings)
    adam = {**settings, **cure}
    with_l2 = ddoc._train(dl.mlp(**config), config, d, {**adam, "optimizer_kwargs": {
        "weight_decay": 0.2}}).final["train_loss"]
    without = ddoc._train(dl.mlp(**config), config, d, {**adam, "optimizer_kwargs": {}}
                          ).final["train_loss"]
    assert with_l2 != without
    assert v.after["train_loss"] == with_l2


def _post_norm_mlp(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    width = 20
    for _ in range(3):
        layers += [nn.Linear(width, 32), nn.ReLU(), nn.BatchNorm1d(32)]
        width = 32
    return nn.Sequential(*layers, nn.Linear(32, 4)).to(dtype)


@pytest.mark.parametrize("scale", [255.0, 0.05])
def test_a_norm_after_the_activation_is_read_at_its_input_scale_free_gradient(scale):
    # Dense -> relu -> BatchNorm (a network from_torch of Linear -> ReLU -> BatchNorm1d): the
    # NumPy doctor read the gradient at the activation's input, which that norm's backward
    # divides by the std of its input, following the input's scale: 'vanishing' on x 255
    # (39x on digits), 'exploding' on x 0.05 (121x) in a network that trains the same; the
    # torch doctor reads the norm's gradient there (f17dc8a), and now both read dL/dxhat
    from depthlab.bridge.torch_bridge import from_torch

    x, y = _blobs(n=320)
    data = (x * scale, y, x[:80] * scale, y[:80])
    net = from_torch(_post_norm_mlp())
    numpy = dl.doctor(net, data, steps=40, lr=0.1, batch_size=32, probe_every=10)
    assert {f.kind for f in numpy.findings} & GRADS == set(), numpy.kinds
    assert NORM_GRAD not in set(numpy.probes["quantity"])
    torch_ = dlt.doctor(_post_norm_mlp(), data, optimizer=("sgd", {"lr": 0.1}), steps=40,
                        batch_size=32, probe_every=10, verify=False)
    assert {f.kind for f in torch_.findings} & GRADS == set(), torch_.kinds


def test_both_engines_read_the_same_gradient_at_a_norm_after_the_activation():
    from depthlab.bridge.torch_bridge import from_torch

    x, y = _blobs(n=64)
    model = _post_norm_mlp(torch.float64)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g, dtype=torch.float64) * 3
                               + 0.1)
    net = from_torch(model)
    frame, numpy_rows = _same_norm_rows(net, model, x, y)
    # the wrapped backward is the class's again after the record
    assert all("backward" not in vars(bn) for bn in net.batchnorms())


def _ratio_ctx(batchnorm: bool, ratios: list[float]):
    import pandas as pd

    from depthlab.diagnosis.rules import RunContext

    net = dl.mlp([8, 16, 16, 16, 4], "relu", "he_normal", batchnorm=batchnorm, seed=0)
    rows = []
    for i, r in enumerate(ratios):
        step = 10 * i
        rows.append((step, 0, "loss", 2.3 * 0.8 ** i))  # falls, never below 1% of the start
        for layer, g in ((1, 1e-3 * r), (2, 1e-3 * math.sqrt(r)), (3, 1e-3)) if r else (
                (1, 0.0), (2, 0.0), (3, 0.0)):  # r 0: no gradient (a zero output layer)
            rows.append((step, layer, "grad_pre_std", g))
    frame = pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"])
    config = {"activation": "relu", "batchnorm": batchnorm, "sizes": [8, 16, 16, 16, 4]}
    return RunContext(net=net, config=config, settings={}, frame=frame, history=None,
                      metrics={}, probe_examples=300, chance_loss=2.3)


def test_a_normalized_nets_gradient_growth_in_training_alone_is_not_exploding():
    # 3 conv-BN-ReLU layers (zoo.bn_cnn((1, 16, 32, 32))) on digits, SGD momentum 0.9 lr 0.05:
    # 2.4x at step 0, a median of 10.6x over training, train loss 0.009, val acc 0.98: the
    # 'exploding_gradients' finding's three cures (init, clipping, lr / 10) none helped.
    # Batch norm's own explosion is there at initialization (Yang et al. 2019), and kept
    from depthlab.diagnosis.rules import rule_exploding

    grows = [2.4] + [12.0] * 10
    assert rule_exploding(_ratio_ctx(True, grows))[1] is None
    assert rule_exploding(_ratio_ctx(False, grows))[1] is not None  # without norms: as before
    at_init = [40.0] + [12.0] * 10  # explodes at step 0 past both thresholds: kept
    f = rule_exploding(_ratio_ctx(True, at_init))[1]
    assert f is not None and f.evidence["ratio"] == pytest.approx(12.0)
    # no gradient at step 0 (a zero-initialized output layer): the first probe with one
    # stands for the start
    assert rule_exploding(_ratio_ctx(True, [0.0, 40.0] + [12.0] * 9))[1] is not None
    assert rule_exploding(_ratio_ctx(True, [0.0, 2.4] + [12.0] * 9))[1] is None


def _same_norm_rows(net, model, x, y):
    """The NumPy doctor's recorder and the torch doctor's probe on one network (``net`` and
    its torch twin ``model``) give the same NORM_GRAD rows at step 0, layers 1-3: ``(the
    recorder's frame, its NORM_GRAD rows)``."""
    rec = ddoc._Recorder(x, y, "cross_entropy", every=1, histogram_steps=())
    Trainer(net, loss="cross_entropy", optimizer="sgd", lr=1e-9, batch_size=64, epochs=None,
            max_steps=1, seed=0, callbacks=[rec]).fit(x, y)
    frame = rec.frame()
    numpy_rows = frame[(frame["quantity"] == NORM_GRAD) & (frame["step"] == 0)].sort_values(
        "layer")
    xt, yt = torch.from_numpy(x.astype(np.float64)), torch.from_numpy(y)
    table = tdoc._probe_fn(False, rx.trace(model, xt))(model, xt, yt, nn.CrossEntropyLoss())
    torch_rows = table[table["quantity"] == NORM_GRAD].sort_values("layer")
    assert list(numpy_rows["layer"]) == list(torch_rows["layer"]) == [1, 2, 3]
    np.testing.assert_allclose(numpy_rows["value"].to_numpy(), torch_rows["value"].to_numpy(),
                               rtol=1e-7)
    return frame, numpy_rows
