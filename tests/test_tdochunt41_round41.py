"""Round 41 (tdochunt41): the torch doctor on cases nobody had tried.

A loss given as a plain function (or a custom loss module) had no best-constant-prediction
loss, so the rules that judge a loss against it (a learning rate too low to move the net off
a constant prediction, the cures that end there) were silent where ``nn.CrossEntropyLoss()``
spoke."""

import functools
import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.torch.baselines import constant_loss, fitted_constant_loss  # noqa: E402


def _digits(n: int = 600) -> tuple:
    from depthlab.data.digits import load

    raw = load()
    x = raw.x[:n].reshape(n, -1) * raw.scale
    return torch.tensor(x, dtype=torch.float32), torch.tensor(raw.y[:n]).long()


def _ce(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, target)


class _MyLoss(nn.Module):
    def forward(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, target)


class _DictOut(nn.Module):
    """A model returning a dict, as Hugging Face models do: ``{"logits": ...}``."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(features, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> dict:
        return {"logits": self.body(x), "features": x.shape[1]}


def _dict_ce(out: dict, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out["logits"], target)


_SLOW = dict(optimizer=("sgd", {"lr": 1e-4}), steps=30, batch_size=32, seed=0, verify=False)


def _slow_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


@functools.lru_cache(maxsize=1)
def _named_kinds() -> list:
    """The findings of the MLP at lr 1e-4 with ``nn.CrossEntropyLoss()`` (run once)."""
    return [f.kind for f in dlt.doctor(_slow_mlp, _digits(), loss_fn=nn.CrossEntropyLoss(),
                                       **_SLOW).findings]


@pytest.mark.parametrize("loss_fn,dict_out", [(_ce, False), (_MyLoss(), False),
                                              (_dict_ce, True)],
                         ids=["function", "module", "dict-output"])
def test_a_learning_rate_too_low_is_found_with_a_loss_written_as_a_function(loss_fn, dict_out):
    x, y = _digits()
    own = dlt.doctor((lambda: _DictOut(x.shape[1])) if dict_out else _slow_mlp, (x, y),
                     loss_fn=loss_fn, **_SLOW)
    named = _named_kinds()
    assert "lr_too_low" in named
    assert [f.kind for f in own.findings] == named


def test_the_fitted_constant_loss_is_the_formula_where_there_is_one_and_nan_for_a_sum():
    g = torch.Generator().manual_seed(0)
    out = torch.randn(2, 10, generator=g)
    y = torch.randint(0, 10, (300,), generator=g)
    y[y == 3] = 4  # a class that never occurs: its best logit is -inf
    yb = (torch.rand(300, 3, generator=g) < torch.tensor([0.1, 0.5, 0.8])).float()
    yr = torch.randn(300, 2, generator=g) * 3 + 1
    for loss, t, o in ((nn.CrossEntropyLoss(label_smoothing=0.1), y, out),
                       (nn.BCEWithLogitsLoss(), yb, out[:, :3]),
                       (nn.MSELoss(), yr, out[:, :2]), (nn.L1Loss(), yr, out[:, :2]),
                       (nn.HuberLoss(), yr, out[:, :2])):
        expected = constant_loss(loss, t, o)
        assert math.isfinite(expected)
        assert fitted_constant_loss(lambda a, b, f=loss: f(a, b), t, o) == \
            pytest.approx(expected, rel=1e-5)
    # a sum over examples is in other units than a probe batch's loss: not known
    assert math.isnan(fitted_constant_loss(nn.CrossEntropyLoss(reduction="sum"), y, out))
    assert math.isnan(fitted_constant_loss(nn.CrossEntropyLoss(reduction="none"), y, out))
    assert math.isnan(fitted_constant_loss(lambda a, b: 1 / 0, y, out))
    # a constant per entry of a large output (a segmentation map) fitted on a few dozen rows
    # overfits them: not fitted
    seg = torch.randint(0, 21, (1100, 64, 64), generator=g)
    assert math.isnan(fitted_constant_loss(lambda a, b: F.cross_entropy(a, b), seg,
                                           torch.zeros(2, 21, 64, 64)))
    # a model's dict or tuple output: its per-example tensors made constant, the rest kept
    parts = {"logits": out, "n": 7, "w": torch.ones(3, 3)}
    assert fitted_constant_loss(lambda a, b: F.cross_entropy(a["logits"], b) + 0 * a["w"].sum()
                                + a["n"] - 7, y, parts, 2) == \
        pytest.approx(constant_loss(nn.CrossEntropyLoss(), y, out), rel=1e-5)
    assert fitted_constant_loss(lambda a, b: F.cross_entropy(a[1], b), y, (None, out), 2) == \
        pytest.approx(constant_loss(nn.CrossEntropyLoss(), y, out), rel=1e-5)


def test_units_killed_by_a_too_high_learning_rate_get_the_smaller_rate_first():
    """Issue 8's known answer (a ReLU MLP killed by a high learning rate) with torch's default
    init: the rule's own cure (He's init) does not bring dead units back; the cure verified
    first (``max_cures=1``) is the 10x smaller learning rate, and it helps."""
    x, y = _digits()

    def make() -> nn.Module:
        return nn.Sequential(nn.Linear(x.shape[1], 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                             nn.Linear(64, 10))

    diag = dlt.doctor(make, (x, y), optimizer=("sgd", {"lr": 3.0}), steps=60, batch_size=32,
                      seed=0, max_cures=1)
    dead = next(f for f in diag.findings if f.kind == "dead_relu")
    assert dead.prescription == {"lr": 0.3}, dead.prescription
    verified = [v for v in diag.verifications if v.kind == "dead_relu"]
    assert verified and verified[0].helped
