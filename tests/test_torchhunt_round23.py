"""Round 23 (torchhunt23): depthlab.torch on models and targets nobody had shown it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import depthlab as dl
import depthlab.torch as dlt
from depthlab.bridge.torch_bridge import to_torch


def _layer0(df):
    return df[df.layer == 0].set_index("quantity").value.to_dict()


def test_one_hot_and_binary_targets_get_the_accuracy_the_doctor_and_dl_probe_give():
    """dlt.probe gave ``acc`` for class indices only: one-hot float rows under a
    CrossEntropyLoss (which the torch doctor scores as their class indices, and dl.probe of
    the same bridged network scores too) and hard 0/1 targets of a BCEWithLogitsLoss (the
    doctor's binary accuracy) had a loss row only."""
    net = dl.mlp([5, 8, 3], activation="relu", seed=0, dtype="float64")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 5))
    labels = rng.integers(0, 3, 40)
    onehot = np.eye(3)[labels]
    model = to_torch(net)
    want = _layer0(dl.probe(net, x, onehot, "cross_entropy"))["acc"]
    got = _layer0(dlt.probe(model, torch.as_tensor(x), torch.as_tensor(onehot),
                            nn.CrossEntropyLoss()))
    assert got["acc"] == pytest.approx(want, abs=1e-12)
    with torch.no_grad():
        direct = float((model(torch.as_tensor(x)).argmax(1) == torch.as_tensor(labels))
                       .double().mean())
    assert got["acc"] == pytest.approx(direct, abs=1e-12)
    # the same for a segmentation map's one-hot (N, C, H, W) targets
    conv = nn.Conv2d(2, 3, 1).double()
    xs = torch.randn(4, 2, 5, 5, dtype=torch.float64)
    ys = torch.randint(0, 3, (4, 5, 5))
    with torch.no_grad():
        direct = float((conv(xs).argmax(1) == ys).double().mean())
    oh = nn.functional.one_hot(ys, 3).permute(0, 3, 1, 2).double()
    assert _layer0(dlt.probe(conv, xs, oh, nn.CrossEntropyLoss()))["acc"] == \
        pytest.approx(direct, abs=1e-12)
    # soft (smoothed) targets name no class: no acc, as in the doctor
    soft = oh * 0.9 + 0.1 / 3
    assert "acc" not in _layer0(dlt.probe(conv, xs, soft, nn.CrossEntropyLoss()))
    # multi-label BCE with logits, hard 0/1 targets: share of entries on the right side of 0
    lin = nn.Linear(5, 4).double()
    xb = torch.as_tensor(x)
    yb = torch.as_tensor(rng.integers(0, 2, (40, 4))).double()
    with torch.no_grad():
        direct = float(((lin(xb) > 0).double() == yb).double().mean())
    assert _layer0(dlt.probe(lin, xb, yb, nn.BCEWithLogitsLoss()))["acc"] == \
        pytest.approx(direct, abs=1e-12)
    # regression targets stay without acc
    assert "acc" not in _layer0(dlt.probe(lin, xb, torch.randn(40, 4, dtype=torch.float64),
                                          nn.MSELoss()))


def test_a_loss_without_gradients_is_said_not_silently_left_without_gradient_rows():
    """A loss_fn that returns a detached tensor (``torch.tensor(loss.item())``, ``.detach()``)
    gave a table without any gradient row and no word: the table read as a model whose
    gradients were not measured for no reason. Now a RuntimeWarning names the cause; a loss
    with gradients still gives none."""
    import warnings

    from torch.nn import functional as F

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    with pytest.warns(RuntimeWarning, match="loss does not require grad.*no gradient rows"):
        df = dlt.probe(model, x, y, lambda o, t: F.cross_entropy(o, t).detach())
    assert not df.quantity.str.contains("grad").any()
    assert "pre_std" in set(df.quantity)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = dlt.probe(model, x, y, F.cross_entropy)
    assert "grad_pre_std" in set(df.quantity)
    # every parameter frozen: nothing to differentiate, nothing to say
    frozen = nn.Sequential(nn.Linear(4, 3)).requires_grad_(False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dlt.probe(frozen, x, y, F.cross_entropy)
