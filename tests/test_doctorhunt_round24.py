"""Round 24 (doctorhunt24): the torch doctor's findings, cures and verifications."""

from __future__ import annotations

import copy
import importlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.torch import prescriptions as rx  # noqa: E402

tdoc = importlib.import_module("depthlab.torch.doctor")  # (depthlab.torch.doctor: the function)


def _blobs(n: int = 480, d: int = 20, classes: int = 4, seed: int = 0):
    g = np.random.default_rng(seed)
    centers = g.normal(0.0, 1.5, (classes, d))
    y = g.integers(0, classes, n)
    x = (centers[y] + g.normal(0.0, 1.0, (n, d))).astype(np.float32)
    return x, y


def _bn_mlp(relu_inplace: bool = False) -> nn.Module:
    layers: list[nn.Module] = []
    width = 20
    for _ in range(3):
        layers += [nn.Linear(width, 32), nn.BatchNorm1d(32), nn.ReLU(inplace=relu_inplace)]
        width = 32
    return nn.Sequential(*layers, nn.Linear(32, 4))


@pytest.mark.parametrize("scale", [0.02, 50.0])
def test_a_batch_normalized_mlp_has_no_gradient_finding_whatever_its_input_scale(scale):
    # batch norm makes the network invariant to its input's scale (it trains the same), but the
    # gradient at the first layer's output is the norm's divided by the std of that output: the
    # rules read it there and found exploding (inputs x 0.02) or vanishing (x 50) gradients
    x, y = _blobs(n=320)
    diag = dlt.doctor(_bn_mlp, (x * scale, y, x[:100] * scale, y[:100]),
                      optimizer=("sgd", {"lr": 0.1}), steps=20, batch_size=64, verify=False)
    kinds = [f.kind for f in diag.findings]
    assert "exploding_gradients" not in kinds and "vanishing_gradients" not in kinds, kinds
    # the stored table keeps the probe's own rows (the layer's output gradient), nothing else
    assert tdoc.NORM_GRAD not in set(diag.probes["quantity"])
    g = diag.probes[(diag.probes["quantity"] == "grad_pre_std") & (diag.probes["step"] == 0)]
    assert len(g) == 4


def test_the_norm_output_gradient_is_the_autograd_gradient_there():
    torch.manual_seed(0)
    model = _bn_mlp(relu_inplace=True)
    x, y = _blobs(n=96)
    xt, yt = torch.from_numpy(x) * 0.05, torch.from_numpy(y)
    layers = rx.trace(model, xt)
    assert [t.norm is model[i + 1] for i, t in zip((0, 3, 6), layers[:3])] == [True] * 3
    assert layers[3].norm is None
    table = tdoc._probe_fn(False, layers)(model, xt.clone(), yt, nn.CrossEntropyLoss())
    got = table[table["quantity"] == tdoc.NORM_GRAD].set_index("layer")["value"]
    # reference: the same weights without the in-place ReLU, the norms' outputs retained
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    outs = []

    def keep(_m, _a, o):
        o.retain_grad()
        outs.append(o)

    hooks = [ref[i].register_forward_hook(keep) for i in (1, 4, 7)]
    nn.CrossEntropyLoss()(ref(xt.clone()), yt).backward()
    for h in hooks:
        h.remove()
    want = [float(o.grad.double().std(unbiased=False)) for o in outs]
    np.testing.assert_allclose(got.loc[[1, 2, 3]].to_numpy(), want, rtol=1e-5)
    # and the rules read it in place of grad_pre_std, which the stored table keeps
    rules, kept = tdoc.norm_gradient_frame(table.assign(step=0))
    r = rules[rules["quantity"] == "grad_pre_std"].set_index("layer")["value"]
    k = kept[kept["quantity"] == "grad_pre_std"].set_index("layer")["value"]
    np.testing.assert_allclose(r.loc[[1, 2, 3]].to_numpy(), want, rtol=1e-5)
    assert r.loc[4] == k.loc[4] and not np.allclose(k.loc[[1, 2, 3]].to_numpy(), want)
    assert tdoc.NORM_GRAD not in set(kept["quantity"])


def test_the_switch_to_adam_keeps_the_l2_weight_decay_of_the_run():
    # SGD(weight_decay) minimizes loss + wd/2 ||w||^2; its Adam cure trained without the
    # penalty (all SGD arguments dropped), so a lower training loss was credited to Adam
    from depthlab.torch.train import TorchTrainSpec

    sgd = TorchTrainSpec(optimizer="sgd", lr=0.1, optimizer_kwargs={
        "momentum": 0.9, "nesterov": True, "weight_decay": 0.05}, steps=20, batch_size=32)
    adam = sgd.with_changes(optimizer="adam", lr=1e-3)
    assert adam.optimizer_kwargs == {"weight_decay": 0.05}
    assert sgd.with_changes(lr=0.01).optimizer_kwargs == sgd.optimizer_kwargs
    assert sgd.with_changes(optimizer="adamw").optimizer_kwargs == {}  # decoupled: another rule
    assert TorchTrainSpec(optimizer="sgd", optimizer_kwargs={"momentum": 0.9}).with_changes(
        optimizer="adam").optimizer_kwargs == {}
    # the doctor's verification of the Adam cure trains exactly Adam with that penalty
    x, y = _blobs(n=160)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    d = tdoc.TensorData(xt, yt, xt[:40], yt[:40])

    def fresh(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 4))

    loss_fn = nn.CrossEntropyLoss()
    run = tdoc._verify_run({"optimizer": "adam", "lr": 1e-3}, fresh, 0, sgd, d, loss_fn,
                           {}, xt[:64])
    assert run.ctx.settings["optimizer_kwargs"] == {"weight_decay": 0.05}
    from depthlab.torch.train import train

    by_hand = train(fresh(0), d, loss_fn, TorchTrainSpec(
        optimizer="adam", lr=1e-3, optimizer_kwargs={"weight_decay": 0.05}, steps=20,
        batch_size=32))
    without = train(fresh(0), d, loss_fn, TorchTrainSpec(optimizer="adam", lr=1e-3, steps=20,
                                                         batch_size=32))
    assert run.result.history.step_loss == by_hand.history.step_loss
    assert run.result.history.step_loss != without.history.step_loss


def test_an_optimizer_factory_with_parameter_groups_of_different_settings_is_refused():
    # weight decay on the weights only: the factory's two groups were read as the optimizer's
    # defaults, and the doctor trained every run without any weight decay, silently
    def grouped(params):
        params = list(params)
        return torch.optim.SGD([
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": 1e-2},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
            lr=0.05, momentum=0.9)

    x, y = _blobs(n=64)
    with pytest.raises(ValueError, match=r"2 parameter groups with different settings "
                                         r"\(weight_decay: 0\.01, 0\).*\('sgd', \{"):
        dlt.doctor(_bn_mlp, (x, y), optimizer=grouped, steps=2, batch_size=16, verify=False)
    # one group, or groups of one setting: that setting
    same = tdoc._spec(lambda ps: torch.optim.SGD([{"params": list(ps)}, {"params": []}],
                                                  lr=0.05, weight_decay=1e-3), 5, 8, 0, None)
    assert (same.optimizer, same.lr, same.optimizer_kwargs) == ("sgd", 0.05,
                                                                {"weight_decay": 1e-3})


def test_an_empty_validation_set_is_no_probe_source():
    # `depthlab doctor --torch ... --n 2`: 2 training rows, 0 held out; the probe batch was
    # taken from the empty held-out set ('failed in the probe at step 0 (the 0 probe rows)')
    from depthlab.probes.stats import probe_held_out

    assert not probe_held_out(0, 2) and not probe_held_out(0, 100)
    assert probe_held_out(1, 2) and probe_held_out(3, 100) and not probe_held_out(2, 100)
    x, y = _blobs(n=2)
    diag = dlt.doctor(lambda: nn.Sequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 4)),
                      (x, y, x[:0], y[:0]), steps=3, verify=False)
    assert diag.baseline["steps"] == 3 and np.isnan(diag.baseline["val_acc"])
    assert len(diag.probes[diag.probes["quantity"] == "grad_pre_std"]) > 0


def _frozen_backbone(frozen: int) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 16), nn.Sigmoid(), nn.Linear(16, 16), nn.Sigmoid(),
                          nn.Linear(16, 4))
    for layer in (model[0], model[2])[:frozen]:
        for p in layer.parameters():
            p.requires_grad_(False)
    return model


def test_the_activation_swap_keeps_the_activations_of_frozen_layers():
    # a frozen (pretrained) layer keeps its weights under every re-initialization; its
    # activation was swapped all the same, so the cure trained a backbone whose fixed weights
    # no longer met the activation they were made for
    x = torch.from_numpy(_blobs(n=64)[0])
    model, _ = rx.apply({"activation": "relu", "init": "matched"}, _frozen_backbone(1),
                        tdoc.TorchTrainSpec(), x)
    assert isinstance(model[1], nn.Sigmoid) and isinstance(model[3], nn.ReLU)
    with pytest.raises(rx.NotApplicable, match="frozen"):
        rx.apply({"activation": "relu", "init": "matched"}, _frozen_backbone(2),
                 tdoc.TorchTrainSpec(), x)
    model, _ = rx.apply({"activation": "tanh"}, _frozen_backbone(0), tdoc.TorchTrainSpec(), x)
    assert isinstance(model[1], nn.Tanh) and isinstance(model[3], nn.Tanh)


def test_a_bridged_batch_normalized_network_gets_the_numpy_doctors_gradient_findings():
    # depthlab's probes read the gradient after the norm: the NumPy doctor finds nothing at
    # any input scale; the torch doctor of the same network (to_torch) found vanishing
    # gradients on inputs x 50
    import depthlab as dl
    from depthlab.bridge.torch_bridge import to_torch

    x, y = _blobs(n=320)
    x = x * 50.0
    data = (x, y, x[:80], y[:80])
    net = dl.mlp([20, 32, 32, 32, 4], "tanh", "he_normal", batchnorm=True, seed=0)
    grads = {"vanishing_gradients", "exploding_gradients"}
    numpy = dl.doctor(net, data, steps=30, lr=0.05, batch_size=32, verify=False)
    torch_ = dlt.doctor(to_torch(net), data, optimizer=("sgd", {"lr": 0.05}), steps=30,
                        batch_size=32, verify=False)
    assert {f.kind for f in numpy.findings} & grads == set()
    assert {f.kind for f in torch_.findings} & grads == set(), [f.kind for f in torch_.findings]
