"""round45 tdochunt45: the doctors on cases with known answers.

- lr_too_high no longer fires on a network that fitted (probe loss below 0.05x a constant
  prediction's over its last probes) through a bump of large steps; it still fires where the
  rate holds the loss up (a loss at chance, an oscillating tail above that bound).
- A user's forward hook on the model is kept by the doctor's copies and runs in every
  training run (it may be part of what the model computes); the caller's model keeps it.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
import depthlab.torch as dlt  # noqa: E402


def _regression(n: int = 300, d: int = 3, scale: float = 3.5) -> tuple:
    """x ~ N(0, 1) (n, d), y = scale * sum(x) (a constant prediction's MSE: about
    scale^2 d)."""
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(n, d)), dtype=torch.float32)
    return x, x.sum(1) * scale


def _reg_net(d: int = 3, width: int = 16, depth: int = 1):
    def make() -> nn.Module:
        layers, k = [], d
        for _ in range(depth):
            layers += [nn.Linear(k, width), nn.ReLU()]
            k = width
        return nn.Sequential(*layers, nn.Linear(k, 1), nn.Flatten(0))
    return make


@pytest.mark.parametrize("steps", [20, 60])
def test_a_regression_net_that_fitted_gets_no_lr_too_high(steps: int) -> None:
    # old code: lr_too_high [high] at 20, 40 and 60 steps (train loss 0.41 .. 0.014 against a
    # constant prediction's 32.6), both its cures 'did not help' (lr 0.01: 10.0, adam: 40)
    x, y = _regression()
    d = dlt.doctor(_reg_net(), (x, y), loss_fn="mse", steps=steps, verify=False)
    assert d.baseline["train_loss"] < 0.05 * d.chance_loss, d
    assert "lr_too_high" not in d.kinds, d


def test_lr_too_high_still_fires_where_the_tail_oscillates_above_the_fit() -> None:
    # adam lr 0.5 on y = 3.5 sum(x) (8 inputs): the probe loss ends 0.068x a constant
    # prediction's, its last probes up to 0.083x; lr 0.05 ends at 0.0019x
    x, y = _regression(400, 8)
    d = dlt.doctor(_reg_net(8, 32, 2), (x, y), loss_fn="mse", optimizer=("adam", {"lr": 0.5}),
                   steps=60, verify=False)
    assert "lr_too_high" in d.kinds, d


def test_lr_too_high_still_fires_at_chance() -> None:
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(400, 8)), dtype=torch.float32)
    y = torch.tensor((x.numpy() @ rng.normal(size=(8, 4))).argmax(1))
    d = dlt.doctor(lambda: nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32),
                                         nn.ReLU(), nn.Linear(32, 4)),
                   (x, y), optimizer=("adam", {"lr": 1.0}), steps=60, verify=False)
    assert "lr_too_high" in d.kinds, d


class _Half(nn.Module):
    """``x / 2``: the hook's computation as a module of the forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.5


def _small_tanh(half_module: bool) -> nn.Module:
    """A 5-layer tanh MLP at weight std 0.05 (vanishing gradients); the output of its 3rd
    Linear halved by a ``_Half`` module when ``half_module``."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(5):
        lin = nn.Linear(8 if i == 0 else 24, 24)
        nn.init.normal_(lin.weight, 0.0, 0.05)
        layers += [lin, *([_Half()] if half_module and i == 2 else []), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(24, 3))


def test_a_users_forward_hook_runs_in_the_doctors_runs_and_stays_on_the_model() -> None:
    # decided, not changed: the hook is part of the model's computation, so the doctor's
    # copies keep it; its runs equal those of a model computing the same in its forward
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(240, 8)), dtype=torch.float32)
    y = torch.tensor((x.numpy() @ rng.normal(size=(8, 3))).argmax(1))
    calls = []

    def halve(_m: nn.Module, _inp: tuple, out: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return out * 0.5

    hooked = _small_tanh(False)
    hooked[4].register_forward_hook(halve)
    before = {k: v.clone() for k, v in hooked.state_dict().items()}
    kw = dict(steps=20, verify=True, max_cures=1)
    a = dlt.doctor(hooked, (x, y), **kw)
    assert calls and len(hooked[4]._forward_hooks) == 1
    assert all(torch.equal(before[k], v) for k, v in hooked.state_dict().items())
    b = dlt.doctor(_small_tanh(True), (x, y), **kw)
    assert a.baseline["train_loss"] == b.baseline["train_loss"]
    assert "vanishing_gradients" in a.kinds and "vanishing_gradients" in b.kinds
    va = {str(v.prescription): v.after["train_loss"] for v in a.verifications
          if v.prescription.get("init") == "matched"}
    vb = {str(v.prescription): v.after["train_loss"] for v in b.verifications
          if v.prescription.get("init") == "matched"}
    assert va and va == vb
