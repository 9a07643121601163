"""Round 16 regressions of the NumPy engine: training loop, optimizers, losses, layers."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl
from depthlab.training import Trainer


def _blobs(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, 3))
    return x, (x[:, 0] > 0).astype(int)


def test_max_steps_alone_trains_that_many_steps_as_a_train_section_does():
    # fit(..., max_steps=10) on 64 rows in batches of 32 stopped after one epoch of 2 steps
    # (Trainer's own default epochs=1), while a [train] section with max_steps alone runs
    # 10 updates (TrainSpec: epochs is 1 only when max_steps is not given either)
    x, y = _blobs()
    hist = dl.fit(dl.mlp([3, 8, 2], seed=0), x, y, max_steps=10)
    assert len(hist.step_loss) == 10
    assert dl.TrainSpec(max_steps=10).epochs is None
    # neither given: one epoch; both given: whichever ends first
    assert len(dl.fit(dl.mlp([3, 8, 2], seed=0), x, y).step_loss) == 2
    assert len(dl.fit(dl.mlp([3, 8, 2], seed=0), x, y, epochs=2, max_steps=10).step_loss) == 4
    assert len(dl.fit(dl.mlp([3, 8, 2], seed=0), x, y, epochs=9, max_steps=5).step_loss) == 5
    # a second fit continues for max_steps more updates
    tr = Trainer(dl.mlp([3, 8, 2], seed=0), max_steps=3)
    tr.fit(x, y)
    tr.fit(x, y)
    assert tr.step == 6 and len(tr.history.step_loss) == 6


def test_get_optimizer_refuses_arguments_for_an_optimizer_instance_instead_of_ignoring_them():
    # dl.optimizer(adam_instance, params, lr=0.5, amsgrad=True) returned the instance with
    # lr 0.1 and amsgrad off, silently (a built loss or activation refuses arguments)
    net = dl.mlp([3, 4, 2], seed=0)
    opt = dl.optimizer("adam", net.parameters(), lr=0.1)
    with pytest.raises(TypeError, match=r"\['amsgrad', 'lr'\].*Adam.*optimizer\.amsgrad = True"):
        dl.optimizer(opt, net.parameters(), lr=0.5, amsgrad=True)
    assert opt.lr == 0.1 and opt.amsgrad is False
    assert dl.optimizer(opt, net.parameters()) is opt
    # fit with the instance and no other hyperparameter trains with the instance's own
    x, y = _blobs(8)
    dl.fit(net, x, y, optimizer=opt)
    assert opt.step_count == 1 and opt.lr == 0.1


def test_batchnorm_cumulative_average_is_a_recipe_option_and_none_is_not_taken_as_the_default():
    # torch's BatchNorm1d(momentum=None) (a cumulative average; BatchNorm(momentum=None) here)
    # had no recipe: mlp(bn_momentum=None) built an EMA of momentum 0.01, silently, and a
    # from_torch network with it could not be saved ("differs from what dl.mlp builds there")
    # bn_momentum=None means what torch's momentum=None means (round 15's random parity
    # networks pass it), recorded as "cumulative"
    same = dl.mlp([3, 4, 2], batchnorm=True, bn_momentum=None)
    assert same.batchnorms()[0].momentum is None and same.config["bn_momentum"] == "cumulative"
    net = dl.mlp([3, 4, 2], batchnorm=True, bn_momentum="cumulative", dtype="float64",
                 bn_ema_start="zero")
    bn = net.batchnorms()[0]
    assert bn.momentum is None and net.config["bn_momentum"] == "cumulative"
    assert dl.mlp(**net.config).batchnorms()[0].momentum is None
    r = np.random.default_rng(0)
    means = []
    for k in range(4):
        x = r.normal(size=(5, 3)) * (k + 1) + k
        net.forward(x, training=True)
        means.append(bn.x.mean(axis=0))
    np.testing.assert_allclose(bn.running_mean, np.mean(means, axis=0), rtol=1e-12)

    from depthlab.experiments.config import validate
    cfg = validate({"data": {"name": "digits"}, "model": {
        "sizes": [64, 8, 10], "batchnorm": True, "bn_momentum": "Cumulative"}})
    assert cfg["model"]["bn_momentum"] == "cumulative"
    with pytest.raises(ValueError, match='bn_momentum = "average".*"cumulative"'):
        validate({"data": {"name": "digits"}, "model": {"sizes": [64, 8, 10],
                                                        "bn_momentum": "average"}})
    from depthlab.diagnosis.prescriptions import for_bn_drift
    changes, _ = for_bn_drift({"bn_inference": "population", "bn_momentum": "cumulative"})
    assert changes == {"bn_momentum": 0.1}


def test_a_torch_batch_norm_with_momentum_none_saves_and_loads(tmp_path):
    torch = pytest.importorskip("torch")
    from depthlab.bridge.torch_bridge import from_torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4, bias=False),
                                torch.nn.BatchNorm1d(4, momentum=None), torch.nn.ReLU(),
                                torch.nn.Linear(4, 2))
    net = from_torch(model)
    dl.save(net, tmp_path / "net.npz")
    back = dl.load(tmp_path / "net.npz")
    assert back.batchnorms()[0].momentum is None
    x = np.random.default_rng(1).normal(size=(6, 3))
    model.train()
    for _ in range(3):  # the same cumulative running statistics as torch's
        y = back.forward(x.astype(back.dtype), training=True)
        ty = model(torch.tensor(x, dtype=torch.float32))
        x = x * 1.5 + 0.3
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(back.batchnorms()[0].running_mean,
                               model[1].running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(back.batchnorms()[0].running_var,
                               model[1].running_var.numpy(), rtol=1e-5, atol=1e-6)


def test_a_loss_argument_given_as_a_training_option_is_named_as_loss_kwargs():
    # fit(..., loss="huber", delta=2.0) and [train] delta = 2.0 hinted "did you mean 'betas'?"
    from depthlab.experiments.config import validate

    x, y = _blobs()
    with pytest.raises(TypeError, match=r"delta is an argument of the loss 'huber': "
                                        r"loss_kwargs=\{'delta': 2.0\}"):
        dl.fit(dl.mlp([3, 4, 2]), x, y, loss="huber", delta=2.0)
    with pytest.raises(TypeError, match="label_smoothing is an argument of the loss "
                                        "'cross_entropy'"):
        dl.fit(dl.mlp([3, 4, 2]), x, y, label_smoothing=0.1)
    with pytest.raises(ValueError, match=r'train.delta.*argument of the loss "huber": '
                                         r"loss_kwargs = \{delta = \.\.\.\}") as err:
        validate({"data": {"name": "digits"}, "model": {"sizes": [64, 8, 10]},
                  "train": {"loss": "huber", "delta": 2.0}})
    assert "betas" not in str(err.value).split(";")[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_tanh_approximation_matches_torch_at_every_input(dtype):
    # torch's nn.GELU(approximate="tanh") had no depthlab twin: get_activation("gelu",
    # approximate="tanh") was a TypeError and from_torch refused the module
    torch = pytest.importorskip("torch")
    from depthlab.activations import get_activation

    fn = get_activation("gelu", approximate="tanh")
    s = np.array([-1e4, -100, -20, -5, -3.7, -1, -1e-30, 0.0, 1e-8, 0.3, 1, 1.4185, 5, 20,
                  100, 1e4, np.nan], dtype=dtype)
    a = fn.forward(s.copy())
    d = fn.derivative(s.copy(), a.copy())
    g = fn.backward(s.copy(), a.copy(), np.full_like(s, 0.5))
    ts = torch.tensor(s, requires_grad=True)
    ta = torch.nn.functional.gelu(ts, approximate="tanh")
    ta.sum().backward()
    eps = np.finfo(dtype).eps
    for ours, ref in ((a, ta.detach().numpy()), (d, ts.grad.numpy()),
                      (2 * g, ts.grad.numpy())):
        assert ours.dtype == dtype
        np.testing.assert_allclose(ours, ref, rtol=4 * eps, atol=1e-300)
    # the limits where torch's s^3 overflows (float32 s = 1e20: its f' is NaN)
    big = np.array([-1e20, 1e20], dtype=dtype)
    np.testing.assert_array_equal(fn.derivative(big, fn.forward(big)), [0.0, 1.0])
    if dtype == np.float64:  # f' against central differences
        x = np.random.default_rng(0).normal(size=200) * 3
        num = (fn.forward(x + 1e-6) - fn.forward(x - 1e-6)) / 2e-6
        np.testing.assert_allclose(fn.derivative(x, fn.forward(x)), num, atol=1e-8)
        grid = np.linspace(-6, 6, 120001)
        assert fn.max_derivative == pytest.approx(fn.derivative(grid, grid).max(), rel=1e-9)
    assert get_activation("gelu").params == {} and fn.params == {"approximate": "tanh"}
    with pytest.raises(ValueError, match="approximate='erf' is not accepted.*'tanh'"):
        get_activation("gelu", approximate="erf")


def test_a_tanh_gelu_network_goes_through_the_bridge_and_a_save(tmp_path):
    torch = pytest.importorskip("torch")
    from depthlab.bridge.torch_bridge import from_torch, to_torch

    net = dl.mlp([3, 5, 2], activation="gelu", activation_kwargs={"approximate": "tanh"},
                 dtype="float64", seed=0)
    model = to_torch(net)
    assert [m.approximate for m in model.modules() if isinstance(m, torch.nn.GELU)] == ["tanh"]
    x = np.random.default_rng(2).normal(size=(4, 3)) * 3
    np.testing.assert_allclose(model(torch.tensor(x)).detach().numpy(), net.predict(x),
                               rtol=1e-12)
    back = from_torch(torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.GELU("tanh"),
                                          torch.nn.Linear(5, 2)).double())
    assert back.layers[1].fn.approximate == "tanh"
    dl.save(back, tmp_path / "n.npz")
    loaded = dl.load(tmp_path / "n.npz")
    assert loaded.layers[1].fn.approximate == "tanh"
    np.testing.assert_array_equal(loaded.predict(x), back.predict(x))


@pytest.mark.parametrize("out_act, loss, y_kind", [("softmax", "cross_entropy", "labels"),
                                                   ("sigmoid", "BCEWithLogitsLoss", "column")])
def test_an_output_squashed_again_by_its_logit_loss_is_a_warning(out_act, loss, y_kind):
    # mlp(output_activation="sigmoid") + loss "BCEWithLogitsLoss" (torch's name of the logit loss)
    # or a softmax output + cross_entropy trained on twice-squashed outputs, silently
    x, y = _blobs()
    if y_kind == "column":
        y = y[:, None].astype(float)
    n_out = 2 if y_kind == "labels" else 1
    with pytest.warns(UserWarning, match=f"applies {out_act} itself.*already ends in "
                                         f"{out_act}.*without output_activation"):
        Trainer(dl.mlp([3, 4, n_out], output_activation=out_act), loss=loss)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # logits, or probabilities with another loss: silent
        Trainer(dl.mlp([3, 4, n_out]), loss=loss)
        Trainer(dl.mlp([3, 4, n_out], output_activation=out_act), loss="mse")
        Trainer(dl.mlp([3, 4, n_out], output_activation="tanh"), loss=loss)


def test_float32_batchnorm_parameter_gradients_over_a_large_batch_are_summed_in_float64():
    # dL/dbeta of a float32 batch norm over 20000 rows was a float32 sum down each column:
    # 4.4e-6 relative off the float64 value (torch 2.4e-6; Dense's dL/db and the batch
    # moments are summed in float64 from F64_SUMS_FROM rows on)
    from depthlab.layers.batchnorm import F64_SUMS_FROM, BatchNorm

    m = 20000
    assert m >= F64_SUMS_FROM
    r = np.random.default_rng(3)
    x = r.normal(size=(m, 3)) * 2 + 3
    gy = r.normal(size=(m, 3)) * 0.1 + 1.0
    grads = {}
    for dt in (np.float64, np.float32):
        bn = BatchNorm(3, dtype=dt)
        bn.forward(x.astype(dt), True)
        gx = bn.backward(gy.astype(dt).copy())
        assert gx.dtype == bn.gamma.grad.dtype == bn.beta.grad.dtype == dt
        grads[dt] = (bn.beta.grad.astype(np.float64), bn.gamma.grad.astype(np.float64))
    beta32, beta64 = grads[np.float32][0], grads[np.float64][0]
    assert np.max(np.abs(beta32 - beta64) / np.abs(beta64)) < 2e-7
    gamma32, gamma64 = grads[np.float32][1], grads[np.float64][1]
    # (a sum of g * xhat with sum xhat = 0: xhat's own float32 rounding dominates)
    assert np.max(np.abs(gamma32 - gamma64)) < 1e-4 * np.max(np.abs(gamma64))
