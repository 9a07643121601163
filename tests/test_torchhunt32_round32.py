"""Round 32 (torchhunt32): dlt.probe / dlt.Watch on models the other tests do not use,
every number against a direct autograd computation."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import depthlab.torch as dlt  # noqa: E402
from depthlab.torch.train import evaluate  # noqa: E402


def _seg():
    torch.manual_seed(0)
    model = nn.Conv2d(3, 4, 1)
    x = torch.randn(2, 3, 5, 5)
    y = torch.randint(0, 4, (2, 5, 5))
    y[0, :2] = 255  # the void label of VOC-style masks
    return model, x, y


def test_acc_leaves_out_labels_no_class_can_have_when_the_loss_is_a_plain_function():
    # a lambda's ignore_index cannot be read; a label outside 0..C-1 that the loss took
    # without an error is one it ignored (it counted as a miss: acc 0.24 for 0.30)
    model, x, y = _seg()
    loss_fn = lambda o, t: F.cross_entropy(o, t, ignore_index=255)  # noqa: E731
    with torch.no_grad():
        out = model(x)
    keep = y != 255
    want = (out.argmax(1)[keep] == y[keep]).double().mean().item()
    df = dlt.probe(model, x, y, loss_fn)
    assert df[df.quantity == "acc"].value.item() == pytest.approx(want, abs=1e-12)
    assert evaluate(model, x, y, loss_fn)["acc"] == pytest.approx(want, abs=1e-12)
