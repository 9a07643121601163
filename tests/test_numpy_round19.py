"""Round 19, NumPy side: checks of the engine against torch on inputs earlier rounds did not
cover (a learning rate changed between steps in every optimizer's option combinations; whole
networks of width 1 and batches of 1 or 2 rows; the far tails of the activations)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import depthlab as dl
from depthlab.activations import get_activation
from depthlab.parameter import Parameter

torch = pytest.importorskip("torch")


def _grad(w: np.ndarray, k: int) -> np.ndarray:
    return np.sin(3 * w) + 0.5 * np.tanh(w) + 0.1 * (k % 5)  # bounded: maximize stays finite


COMBOS = [
    ("sgd", "SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.1, maximize=True)),
    ("sgd", "SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("adam", "Adam", dict(lr=0.01, betas=(0.5, 0.9), eps=1e-3, weight_decay=0.1, amsgrad=True,
                          maximize=True)),
    ("adamw", "AdamW", dict(lr=0.01, amsgrad=True)),
    ("nadam", "NAdam", dict(lr=0.01, weight_decay=0.1, momentum_decay=0.1,
                            decoupled_weight_decay=True)),
    ("nadam", "NAdam", dict(lr=0.01, weight_decay=0.1, maximize=True)),
    ("rmsprop", "RMSprop", dict(lr=0.01, alpha=0.5, momentum=0.9, centered=True,
                                weight_decay=0.1)),
    ("adagrad", "Adagrad", dict(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.5,
                                weight_decay=0.1, eps=1e-2)),
    ("adadelta", "Adadelta", dict(lr=0.3, rho=0.5, eps=1e-2, weight_decay=0.1)),
]


@pytest.mark.parametrize("name,tname,kw", COMBOS, ids=[f"{c[0]}-{i}" for i, c in
                                                         enumerate(COMBOS)])
def test_optimizers_follow_torch_when_the_lr_changes_between_steps(name, tname, kw):
    """float64 (torch's default dtype too, for NAdam's momentum product), 40 steps, the lr
    changed every 7th step as a scheduler would; 0-d, 1-d and 2-d parameters. Measured: every
    combination within 1e-12 relative (NAdam 9e-16)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        r = np.random.default_rng(0)
        vals = [r.normal(size=s) for s in [(3, 4), (5,), (), (1, 1)]]
        ps = [Parameter(f"p{i}", v.copy()) for i, v in enumerate(vals)]
        tps = [torch.tensor(v.copy(), requires_grad=True) for v in vals]
        opt = dl.optimizer(name, ps, **kw)
        topt = getattr(torch.optim, tname)(tps, **kw)
        for k in range(40):
            if k % 7 == 3:
                opt.lr = kw["lr"] * (0.5 + k % 3)
                for g in topt.param_groups:
                    g["lr"] = opt.lr
            for p, tp in zip(ps, tps):
                p.grad[...] = _grad(p.value, k)
                tp.grad = torch.tensor(_grad(tp.detach().numpy(), k))
            opt.step()
            topt.step()
        for p, tp in zip(ps, tps):
            assert np.isfinite(p.value).all()
            np.testing.assert_allclose(p.value, tp.detach().numpy(), rtol=1e-11, atol=1e-12)
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("act,bn,res", [
    ("tanh", False, False), ("relu", True, False), ("selu", False, True),
    ("gelu", True, True), ("softsign", False, False), ("penalized_tanh", True, False),
])
def test_whole_network_gradients_match_torch_at_width_1_and_tiny_batches(act, bn, res):
    """Width 1 (and 5), batches of 1 (2 with batch norm) and 7 rows, inputs scaled by 1e-3 and
    30, float64: the loss, every parameter's gradient and dL/dx agree with torch autograd on
    the bridged network (measured: within 3e-12 relative over 12 activations)."""
    from depthlab.bridge.torch_bridge import to_torch

    for width, bs, scale in itertools.product([1, 5], [1, 2, 7], [1e-3, 30.0]):
        if bn and bs == 1:
            continue
        net = dl.mlp([3] + [width] * 4 + [2], act, batchnorm=bn, residual=res,
                     dtype="float64", seed=1)
        tnet = to_torch(net)
        tnet.train()
        x = np.random.default_rng(2).normal(size=(bs, 3)) * scale
        y = np.arange(bs) % 2
        loss = dl.loss("cross_entropy")
        value = loss.forward(net.forward(x, training=True), y)
        gx = net.backward(loss.backward())
        tx = torch.tensor(x, requires_grad=True)
        tl = torch.nn.functional.cross_entropy(tnet(tx), torch.tensor(y))
        tl.backward()
        assert value == pytest.approx(tl.item(), rel=1e-10, abs=1e-12)
        tparams = list(tnet.parameters())
        assert len(tparams) == len(net.parameters())
        for p, tp in zip(net.parameters(), tparams):
            g = tp.grad.numpy()
            g = g.T if g.ndim == 2 else g
            np.testing.assert_allclose(p.grad, g, rtol=1e-8,
                                       atol=1e-10 * max(1.0, np.abs(g).max()), err_msg=p.name)
        np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-8, atol=1e-12)


def test_far_tail_derivatives_are_the_exact_formulas():
    """Where torch's float64 rounds to 0 or drops a term, depthlab keeps the exact value:
    GELU'(-10) = Phi(-10) - 10 phi(-10) = -7.6184e-22 (torch -7.6946e-22: Phi's term lost),
    softsign'(-1e30) = 1e-60 (torch 0)."""
    from scipy.special import ndtr

    s = np.array([-10.0])
    gelu = get_activation("gelu")
    d = gelu.derivative(s, gelu.forward(s))
    exact = ndtr(-10.0) - 10.0 * np.exp(-50.0) / np.sqrt(2 * np.pi)
    assert d[0] == pytest.approx(exact, rel=1e-10)
    ss = get_activation("softsign")
    big = np.array([-1e30])
    assert ss.derivative(big, ss.forward(big))[0] == pytest.approx(1e-60, rel=1e-12)


@pytest.fixture(scope="module")
def digits():
    from depthlab.data import load_dataset

    return load_dataset("digits", seed=0, standardize=True)


@pytest.mark.filterwarnings("ignore:loss 'cross_entropy' takes logits")
def test_a_softmax_output_before_cross_entropy_is_a_finding_cured_by_removing_it(digits):
    """output_activation="softmax" with cross_entropy (which takes logits): squashed twice, no
    example's loss can fall below ln(1 + 9/e) = 1.461; the doctor gave a clean bill of health
    (train loss 2.21, val acc 0.42 after 200 steps; without it 0.72 and 0.86)."""
    import math

    cfg = dict(sizes=[64, 64, 64, 10], activation="tanh", init="glorot_uniform",
               output_activation="softmax")
    dg = dl.doctor(cfg, digits, steps=200, verify=True)
    f = dg.finding("bounded_logits")
    assert f is not None, str(dg)
    assert f.evidence["metric"] == pytest.approx(math.log1p(9 / math.e))
    assert "1.461" in f.message and "softmax" in f.message
    assert f.prescription == {"output_activation": None}
    (v,) = [v for v in dg.verifications if v.kind == "bounded_logits"]
    assert v.helped and v.resolved and v.metric_after == 0, v.summary()
    assert v.after["val_acc"] > v.before["val_acc"] + 0.2


@pytest.mark.filterwarnings("ignore:loss 'binary_cross_entropy' takes logits")
@pytest.mark.parametrize("loss,out", [
    ("binary_cross_entropy", "sigmoid"),  # softplus(-1) = 0.313 at best
    ("cross_entropy", "tanh"),  # logits in [-1, 1]: ln(1 + e^-2) for 2 classes
])
def test_other_bounded_outputs_before_a_logit_loss_are_flagged(loss, out):
    import math

    g = np.random.default_rng(0)
    x = g.normal(size=(300, 5))
    y = (x[:, 0] > 0).astype(int)
    sizes = [5, 16, 1] if loss == "binary_cross_entropy" else [5, 16, 2]
    dg = dl.doctor(dict(sizes=sizes, activation="tanh", output_activation=out),
                   (x, y.astype(float) if sizes[-1] == 1 else y), loss=loss, steps=20)
    f = dg.finding("bounded_logits")
    want = math.log1p(math.exp(-1)) if out == "sigmoid" else math.log1p(math.exp(-2))
    assert f is not None and f.evidence["metric"] == pytest.approx(want), str(dg)


@pytest.mark.parametrize("loss,out", [("cross_entropy", None), ("cross_entropy", "relu"),
                                      ("mse", "softmax"), ("mse", "sigmoid")])
def test_unbounded_outputs_or_losses_on_probabilities_are_not_flagged(loss, out):
    g = np.random.default_rng(0)
    x = g.normal(size=(300, 5))
    y = (x[:, 0] > 0).astype(int)
    target = np.eye(2)[y] if loss == "mse" else y
    dg = dl.doctor(dict(sizes=[5, 16, 2], activation="tanh", output_activation=out),
                   (x, target), loss=loss, steps=20)
    assert "bounded_logits" not in dg.kinds, str(dg)
