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
    with pytest.raises(ValueError, match="bn_momentum=None.*'cumulative'"):
        dl.mlp([3, 4, 2], batchnorm=True, bn_momentum=None)
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
