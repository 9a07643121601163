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


@pytest.mark.parametrize("kind", ["mask", "float", "int-cols"])
def test_class_index_targets_of_a_wrong_shape_get_one_line_naming_both_shapes(kind):
    # torch said 'only batches of spatial targets supported (3D tensors) but got targets of
    # dimension: 4' / '0D or 1D target tensor expected, multi-target not supported'
    torch.manual_seed(0)
    if kind == "mask":  # a segmentation mask kept with its channel dimension
        model, x, y = nn.Conv2d(3, 4, 1), torch.randn(2, 3, 5, 5), torch.randint(0, 4, (2, 1, 5, 5))
        want, fix = "(2, 5, 5)", "y.squeeze(1)"
    else:
        model, x = nn.Linear(5, 3), torch.randn(4, 5)
        y = torch.rand(4, 2) if kind == "float" else torch.randint(0, 3, (4, 2))
        want, fix = "(4,)", None
    with pytest.raises(ValueError) as info:
        dlt.probe(model, x, y, nn.CrossEntropyLoss())
    msg = str(info.value)
    assert "\n" not in msg and f"y has shape {tuple(y.shape)}" in msg and want in msg
    assert str(tuple(model(x).shape)) in msg
    if fix:
        assert fix in msg


def test_chance_accuracy_leaves_out_the_labels_the_accuracy_leaves_out():
    # the doctor's chance level (best constant prediction) counted the void label 255 of a
    # plain-function loss as a class: 0.5 (the 255s) where the best class scores 0.4
    from depthlab.torch.baselines import constant_accuracy

    loss_fn = lambda o, t: F.cross_entropy(o, t, ignore_index=255)  # noqa: E731
    y = torch.tensor([0, 1, 2, 1])
    y_val = torch.tensor([255, 255, 255, 1, 1, 0, 255, 2, 255, 3])
    sample = torch.zeros(2, 4)  # the model's output: 4 classes
    assert constant_accuracy(loss_fn, y, y_val, sample) == pytest.approx(2 / 5)


@pytest.mark.parametrize("run", ["probe", "predict"])
def test_a_forward_that_returns_nothing_is_named_in_one_line(run):
    # a forward without its `return`: torch said "cross_entropy_loss(): argument 'input'
    # (position 1) must be Tensor, not NoneType"
    class NoReturn(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 3)

        def forward(self, x):
            self.fc(x)

    x, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 1])
    with pytest.raises(TypeError) as info:
        getattr(dlt, run)(NoReturn(), x, y, nn.CrossEntropyLoss())
    msg = str(info.value)
    assert "\n" not in msg and "returned None" in msg and "return" in msg
