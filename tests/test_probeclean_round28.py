"""Round 28 (probeclean): dlt.probe and dlt.predict leave the model, a loss module with its
own state and the global random generators exactly as found."""

import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


def _data(n=8, d=4, c=3):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=g), torch.randint(0, c, (n,), generator=g)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def _probe(model, x, y, loss_fn="cross_entropy"):
    return dlt.probe(model, x, y, loss_fn)


def _predict(model, x, y, loss_fn="cross_entropy"):
    return dlt.predict(model, x, y, loss_fn)


@pytest.mark.parametrize("call", [_probe, _predict], ids=["probe", "predict"])
def test_a_graph_the_caller_holds_through_batch_norm_statistics_still_back_propagates(call):
    # restoring every buffer with copy_ bumped its version: a loss computed before the call
    # through an eval-mode batch norm (which saves running_var for its backward) failed with
    # 'modified by an inplace operation'
    x, y = _data()
    model = _mlp()
    bn = model[1]
    held = nn.functional.batch_norm(model[0](x), bn.running_mean, bn.running_var,
                                    bn.weight, bn.bias, training=False)
    before = bn.running_mean.clone()
    call(model, x, y)
    assert torch.equal(bn.running_mean, before)
    held.sum().backward()  # raised RuntimeError
    assert model[0].weight.grad is not None


class _EMA(nn.Module):
    """A buffer the forward re-assigns (not updated in place)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 6)
        self.act = nn.ReLU()
        self.out = nn.Linear(6, 3)
        self.register_buffer("ema", torch.zeros(3))

    def forward(self, x):
        o = self.out(self.act(self.lin(x)))
        if self.training:
            self.ema = 0.9 * self.ema + 0.1 * o.detach().mean(0)
        return o


@pytest.mark.parametrize("call", [_probe, _predict], ids=["probe", "predict"])
def test_a_buffer_the_forward_reassigns_is_put_back(call):
    x, y = _data()
    torch.manual_seed(0)
    model = _EMA()
    ema = model.ema
    call(model, x, y)
    assert model.ema is ema  # was the probe's new tensor, 0.1 * the batch's mean output
    assert torch.equal(model.ema, torch.zeros(3))
    assert [n for n, _ in model.named_buffers()] == ["ema"]


class _HostNoise(nn.Module):
    """Draws from Python's and NumPy's global generators in training (as stochastic depth or
    noise written with random / np.random would; the draws are not used here, so that
    predict's chain of layers stays a chain)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.act = nn.Tanh()
        self.b = nn.Linear(6, 3)

    def forward(self, x):
        h = self.act(self.a(x))
        if self.training:
            random.random()
            np.random.randn()
        return self.b(h)


@pytest.mark.parametrize("call", [_probe, _predict], ids=["probe", "predict"])
def test_python_and_numpy_global_generators_are_left_as_found(call):
    x, y = _data()
    torch.manual_seed(0)
    model = _HostNoise()
    random.seed(5)
    np.random.seed(5)
    py, npy = random.getstate(), np.random.get_state()[1].copy()
    call(model, x, y)
    # the next training step's draws are those it would have made without the call
    assert random.getstate() == py
    assert np.array_equal(np.random.get_state()[1], npy)


class _CountingLoss(nn.Module):
    """A loss module with its own state: a call counter and a running average buffer."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.register_buffer("avg", torch.zeros(()))

    def forward(self, output, y):
        self.calls += 1
        loss = nn.functional.cross_entropy(output, y)
        self.avg.mul_(0.9).add_(0.1 * loss.detach())
        return loss


@pytest.mark.parametrize("call", [_probe, _predict], ids=["probe", "predict"])
def test_a_loss_modules_own_state_is_left_as_found(call):
    x, y = _data()
    model = _mlp()
    loss_fn = _CountingLoss()
    df = call(model, x, y, loss_fn)
    assert len(df)
    assert loss_fn.calls == 0
    assert float(loss_fn.avg) == 0.0
    assert loss_fn.training


class _StochasticDepth(nn.Module):
    """Skips a block when Python's global generator says so (stochastic depth written with
    ``random``), and draws from NumPy's global generator."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.t = nn.Tanh()
        self.b = nn.Linear(6, 6)
        self.t2 = nn.Tanh()
        self.c = nn.Linear(6, 3)

    def forward(self, x):
        h = self.t(self.a(x))
        if self.training and random.random() < 0.5:
            return self.c(h)
        return self.c(self.t2(self.b(h)) + float(np.random.rand()) * 0)


def _train(watch):
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    model = _StochasticDepth()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    w = dlt.Watch(model, every=2) if watch else None
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(6):
        x, y = torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if w is not None:
            w.step(loss)
        opt.step()
        losses.append(loss.item())
    if w is not None:
        w.close()
    return losses, [p.detach().clone() for p in model.parameters()]


def test_a_watch_leaves_training_bit_identical_for_a_forward_drawing_from_pythons_generator():
    # the Watch's theory run (dlt.predict at the first record; refused here, after its
    # forward) advanced Python's generator: the losses differed from step 1 on
    losses, params = _train(False)
    w_losses, w_params = _train(True)
    assert w_losses == losses
    assert all(torch.equal(p, q) for p, q in zip(params, w_params))


@pytest.mark.parametrize("call", [_probe, _predict], ids=["probe", "predict"])
@pytest.mark.parametrize("first", ["dropout", "relu", "mul_"])
def test_a_forward_that_works_on_its_input_in_place_leaves_the_callers_x_as_found(call, first):
    # a model that starts with nn.Dropout(inplace=True) dropped and rescaled the caller's x:
    # a second probe of the same batch read x dropped twice (pre_std 1/0.7 times the first)
    class InPlace(nn.Module):
        def forward(self, x):
            return x.mul_(3.0)

    head = {"dropout": nn.Dropout(0.3, inplace=True), "relu": nn.ReLU(inplace=True),
            "mul_": InPlace()}[first]
    torch.manual_seed(0)
    model = nn.Sequential(head, nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    x, y = _data()
    x0 = x.clone()
    first_df = call(model, x, y)
    assert torch.equal(x, x0)
    second = call(model, x, y)
    assert first_df.equals(second)


class _PlainTensorState(nn.Module):
    """State kept in plain tensor attributes (not registered buffers) that the forward
    updates in place."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.r = nn.ReLU()
        self.b = nn.Linear(6, 3)
        self.steps = torch.zeros(())
        self.memory = torch.zeros(6)

    def forward(self, x):
        self.steps += 1
        h = self.r(self.a(x))
        self.memory.mul_(0.9).add_(h.detach().mean(0))
        return self.b(h)


@pytest.mark.parametrize("call", [_probe, _predict], ids=["probe", "predict"])
def test_a_plain_tensor_attribute_the_forward_updates_in_place_is_left_as_found(call):
    x, y = _data()
    torch.manual_seed(0)
    model = _PlainTensorState()
    steps, memory = model.steps, model.memory
    call(model, x, y)
    assert model.steps is steps and model.memory is memory
    assert float(model.steps) == 0.0  # was 1 after probe, 2 after predict (its own probe)
    assert torch.equal(model.memory, torch.zeros(6))


class _OwnGenerator(nn.Module):
    """Draws from the module's own torch.Generator (not used here, so that predict's chain
    stays a chain)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.t = nn.Tanh()
        self.b = nn.Linear(6, 3)
        self.gen = torch.Generator().manual_seed(7)

    def forward(self, x):
        h = self.a(x)
        if self.training:
            torch.randn(h.shape, generator=self.gen)
        return self.b(self.t(h))


@pytest.mark.parametrize("call", [_probe, _predict], ids=["probe", "predict"])
def test_a_modules_own_generator_is_left_as_found(call):
    x, y = _data()
    torch.manual_seed(0)
    model = _OwnGenerator()
    state = model.gen.get_state()
    call(model, x, y)
    assert torch.equal(model.gen.get_state(), state)


def test_the_doctor_starts_every_run_from_the_loss_modules_state_and_leaves_it_as_found():
    seen = []

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = 0
            self.register_buffer("avg", torch.zeros(()))

        def forward(self, output, y):
            seen.append(self.calls)
            self.calls += 1
            loss = nn.functional.cross_entropy(output, y)
            self.avg.mul_(0.9).add_(0.1 * loss.detach())
            return loss

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    loss_fn = Counting()
    dlt.doctor(model, (x, y), loss_fn=loss_fn, steps=5, batch_size=16, seed=0, verify=False)
    assert loss_fn.calls == 0  # was 9
    assert float(loss_fn.avg) == 0.0
    # the checks before the training call the loss too; the training run starts from the
    # state the caller gave (it started from the checks' count)
    assert seen.count(0) >= 2
