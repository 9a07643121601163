"""Round 48 (lead): per-token accuracy of (N, T, C) scores with (N, T) labels when T != C."""
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402

N, T, C = 6, 5, 7


def _case():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, C))
    x = torch.randn(N, T, 4)
    y = torch.randint(0, C, (N, T))
    y[0, 0] = C - 1  # a label >= T: the scores cannot be read as (N, C=T, ...) maps
    return model, x, y


def _acc(df):
    return list(df[(df.layer == 0) & (df.quantity == "acc")].value)


@pytest.mark.parametrize("loss", [
    lambda o, t: F.cross_entropy(o.reshape(-1, C), t.reshape(-1)),
    lambda o, t: F.cross_entropy(o.movedim(-1, 1), t),
], ids=["reshape", "movedim"])
def test_a_sequence_loss_reading_the_last_axis_gets_the_per_token_accuracy(loss):
    model, x, y = _case()
    with torch.no_grad():
        want = float((model(x).argmax(-1) == y).float().mean())
    assert _acc(dlt.probe(model, x, y, loss)) == pytest.approx([want])


@pytest.mark.parametrize("loss", [
    lambda o, t: F.mse_loss(o, F.one_hot(t, C).float()),
    lambda o, t: o.sum(),
], ids=["mse-of-one-hot", "sum"])
def test_a_loss_not_invariant_along_the_last_axis_gets_no_accuracy(loss):
    model, x, y = _case()
    assert _acc(dlt.probe(model, x, y, loss)) == []
