"""Round 17b: the torch doctor on models whose outputs are a tuple or a dict, boolean targets
and keyword/dict data."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


def _xy(n: int = 80, d: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).long()


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 2))


class _TupleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _mlp()

    def forward(self, x):  # (logits, aux): the aux a (N, 2) float too, second
        logits = self.net(x)
        return logits, torch.zeros_like(logits)


class _DictNet(_TupleNet):
    def forward(self, x):  # the aux first in the dict, an aux of the same shape
        logits = self.net(x)
        return {"aux": -logits, "logits": logits, "n": x.shape[0]}


def test_a_model_returning_a_tuple_or_a_dict_gets_the_accuracy_of_its_logits():
    x, y = _xy()
    kw = dict(steps=6, batch_size=16, verify=False)
    plain = dlt.doctor(_mlp, (x, y), **kw).baseline
    assert math.isfinite(plain["val_acc"]) and math.isfinite(plain["train_acc"])
    tup = dlt.doctor(_TupleNet, (x, y), loss_fn=lambda out, t: F.cross_entropy(out[0], t),
                     **kw).baseline
    dct = dlt.doctor(_DictNet, (x, y), loss_fn=lambda out, t: F.cross_entropy(out["logits"], t),
                     **kw).baseline
    for b in (tup, dct):  # were NaN: the accuracy read only a tensor output
        assert b["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-5)
        assert b["train_acc"] == pytest.approx(plain["train_acc"])
        assert b["val_acc"] == pytest.approx(plain["val_acc"])


def test_boolean_targets_of_a_binary_cross_entropy_train_as_zeros_and_ones():
    x, y = _xy()
    yb = (y == 1).reshape(-1, 1)  # a torch.bool column, as (scores > 0) gives it
    kw = dict(steps=5, batch_size=16, verify=False)

    def net():
        return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 1))

    floats = dlt.doctor(net, (x, yb.float()), loss_fn=nn.BCEWithLogitsLoss(), **kw).baseline
    for loss in (nn.BCEWithLogitsLoss(), "bce_with_logits", F.binary_cross_entropy_with_logits):
        # was 'BCEWithLogitsLoss needs floating-point targets, got int64 labels' (the module)
        # and torch's 'result type Float can't be cast to ... Long' (the function)
        b = dlt.doctor(net, (x, yb), loss_fn=loss, **kw).baseline
        assert b["train_loss"] == pytest.approx(floats["train_loss"], rel=1e-6)
        assert b["val_acc"] == pytest.approx(floats["val_acc"]) and math.isfinite(b["val_acc"])
    b = dlt.doctor(net, (x, yb.numpy()), loss_fn=nn.MSELoss(), **kw).baseline  # NumPy bools
    assert math.isfinite(b["train_loss"])


def test_a_forward_of_keywords_only_is_named_with_the_wrapper_to_give():
    x, y = _xy()

    class KeywordNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _mlp()

        def forward(self, *, features):
            return self.net(features)

    with pytest.raises(ValueError) as e:  # was torch's bare 'forward() takes 1 positional
        dlt.doctor(KeywordNet, (x, y), steps=3, verify=True)  # argument but 2 were given'
    msg = str(e.value)
    assert "\n" not in msg and "KeywordNet.forward takes keywords only (features)" in msg
    assert "forward(self, x) returns self.inner(features=x)" in msg

    class Wrapped(nn.Module):  # the wrapper the line names trains
        def __init__(self):
            super().__init__()
            self.inner = KeywordNet()

        def forward(self, x):
            return self.inner(features=x)

    assert math.isfinite(dlt.doctor(Wrapped, (x, y), steps=3, verify=False)
                         .baseline["val_acc"])


def test_a_dataloader_of_x_y_dicts_is_taken_as_its_pairs():
    from torch.utils.data import DataLoader, Dataset

    x, y = _xy()

    class Dicts(Dataset):
        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return {"x": x[i], "y": y[i], "id": i}

    kw = dict(steps=4, batch_size=16, verify=False)
    plain = dlt.doctor(_mlp, DataLoader(torch.utils.data.TensorDataset(x, y)), **kw).baseline
    for data in (Dicts(), DataLoader(Dicts(), batch_size=8),  # was 'Dicts[0] is a dict'
                 DataLoader(Dicts(), batch_size=8, collate_fn=torch.utils.data.default_collate)):
        b = dlt.doctor(_mlp, data, **kw).baseline
        assert b["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-6)
        assert b["val_acc"] == pytest.approx(plain["val_acc"])


def test_a_segmentation_map_gets_its_per_pixel_accuracy_without_the_void_class():
    from depthlab.torch.train import evaluate

    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 3, 5, 5, generator=g)
    y = (x[:, 0] > 0).long()
    y[:, 0, :] = 255  # a void row, ignored by the loss

    def net():
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1))

    loss = nn.CrossEntropyLoss(ignore_index=255)
    torch.manual_seed(0)
    m = net()
    with torch.no_grad():
        pred = m(x).argmax(dim=1)
    keep = y != 255
    want = float(((pred == y) & keep).sum()) / float(keep.sum())
    assert evaluate(m, x, y, loss)["acc"] == pytest.approx(want)  # was NaN: (N, C) only
    b = dlt.doctor(net, (x, y), loss_fn=loss, steps=3, batch_size=8, verify=False).baseline
    assert 0 <= b["val_acc"] <= 1 and 0 <= b["train_acc"] <= 1


def test_a_segmentation_model_returning_out_and_aux_gets_the_accuracy_of_out():
    from depthlab.torch.train import evaluate

    g = torch.Generator().manual_seed(2)
    x = torch.randn(20, 3, 5, 5, generator=g)
    y = (x[:, 1] > 0).long()

    class Seg(nn.Module):  # torchvision's segmentation models: {'out': ..., 'aux': ...}
        def __init__(self):
            super().__init__()
            self.body = nn.Conv2d(3, 2, 3, padding=1)

        def forward(self, x):
            out = self.body(x)
            return {"aux": -out, "out": out}

    torch.manual_seed(0)
    m = Seg()
    with torch.no_grad():
        want = float((m(x)["out"].argmax(dim=1) == y).float().mean())
    got = evaluate(m, x, y, lambda o, t: F.cross_entropy(o["out"], t))["acc"]
    assert got == pytest.approx(want)  # was NaN: only (N, C) entries of a dict were read
