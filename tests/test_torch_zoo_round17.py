"""depthlab.torch probe/predict on architectures the other torch tests do not build (round 17),
and their regressions: bad input shapes for a convolutional or recurrent first layer."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402

CE = nn.CrossEntropyLoss()


class _GRUHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.head = nn.GRU(4, 6, batch_first=True), nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


def _cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


@pytest.mark.parametrize("fn", [dlt.probe, dlt.predict])
@pytest.mark.parametrize("make, x, match", [
    (_cnn, torch.randn(4, 3, 8, 8),
     r"^x has shape \(4, 3, 8, 8\), 3 channels in dimension 1, but the model's first layer '0' "
     r"\(Conv2d\) expects in_channels=2; expected x of shape \(4, 2, 8, 8\)$"),
    (_cnn, torch.randn(4, 64),
     r"^x has shape \(4, 64\) \(2 dimensions\), but the model's first layer '0' \(Conv2d\) "
     r"expects 4-dimensional batches \(N, 2, H, W\); expected x of shape \(N, 2, H, W\)$"),
    (lambda: nn.Sequential(nn.Conv1d(2, 4, 3), nn.Flatten(), nn.Linear(8, 3)),
     torch.randn(4, 2, 5, 5),
     r"^x has shape \(4, 2, 5, 5\) \(4 dimensions\), but the model's first layer '0' "
     r"\(Conv1d\) expects 3-dimensional batches \(N, 2, L\); expected x of shape \(N, 2, L\)$"),
    (_cnn, torch.randn(4, 2, 2, 2),
     r"^x has shape \(4, 2, 2, 2\): 2x2 positions \(2x2 with padding\) are fewer than the "
     r"kernel 3x3 of the model's first layer '0' \(Conv2d\); expected at least 3x3$"),
    (_GRUHead, torch.randn(4, 7, 5),
     r"^x has shape \(4, 7, 5\), 5 features in its last dimension, but the model's first "
     r"layer 'rnn' \(GRU\) expects input_size=4; expected x of shape \(4, 7, 4\)$"),
])
def test_an_input_of_the_wrong_shape_for_a_conv_or_rnn_names_x_and_the_first_layer(
        fn, make, x, match):
    """A batch of the wrong shape for a convolutional or recurrent first layer raised torch's
    bare RuntimeError ('Given groups=1, weight of size [4, 2, 3, 3], expected input[4, 3, 8, 8]
    to have 2 channels, but got 3 channels instead', 'input.size(-1) must be equal to
    input_size. Expected 4, got 5'), which names neither x nor the layer; now one ValueError
    line naming x's shape and what the first layer expects (torch's error kept as the
    cause)."""
    torch.manual_seed(0)
    model = make()
    if fn is dlt.predict and isinstance(model, _GRUHead):
        pytest.skip("predict refuses a GRU before running the model")
    with pytest.raises(ValueError, match=match) as info:
        fn(model, x, torch.randint(0, 3, (4,)), CE)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_a_shape_mismatch_inside_the_model_keeps_torchs_error():
    """A conv deeper in the model that gets the wrong channels is the model's own bug: torch's
    error is not reworded as one about x."""
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(5, 4, 3),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(RuntimeError, match="to have 5 channels"):
        dlt.probe(model, torch.randn(4, 2, 8, 8), torch.randint(0, 3, (4,)), CE)

    class Inner(nn.Module):  # x has 5 features, as the GRU's input, which is not x
        def __init__(self) -> None:
            super().__init__()
            self.inp, self.rnn, self.head = nn.Linear(5, 5), nn.GRU(4, 6), nn.Linear(6, 3)

        def forward(self, x):
            return self.head(self.rnn(self.inp(x))[0][-1])

    with pytest.raises(RuntimeError, match="must be equal to input_size"):
        dlt.probe(Inner(), torch.randn(7, 4, 5), torch.randint(0, 3, (4,)), CE)


@pytest.mark.parametrize("loss_fn, error, match", [
    (lambda out, y: 1.0, TypeError, r"^loss_fn must return a scalar torch\.Tensor, got float$"),
    (lambda out, y: out.sum().item(), TypeError, r"got float$"),
    (lambda out, y: (out.argmax(1) == y).sum(), ValueError,
     r"^loss must be a floating-point tensor, got dtype torch\.int64$"),
])
def test_predict_names_a_loss_that_is_no_floating_tensor(loss_fn, error, match):
    """predict() with a loss_fn returning a Python float gave 'AttributeError: 'float' object
    has no attribute 'requires_grad'' (dlt.probe gave a TypeError naming it): now the probe's
    one-line TypeError/ValueError."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    with pytest.raises(error, match=match):
        dlt.predict(model, torch.randn(16, 4), torch.randint(0, 3, (16,)), loss_fn)


@pytest.mark.parametrize("x, what", [([[0.5] * 4] * 16, "a list of list"),
                                     ([0.5, 1.0, 2.0, 3.0], "a list of float"),
                                     (((0.5,) * 4,) * 16, "a tuple of tuple")])
def test_probe_names_a_python_list_given_as_x(x, what):
    """A nested Python list as x (rows of numbers) was called as model(*x), one row per
    positional argument: 'TypeError: Sequential.forward() takes 2 positional arguments but 17
    were given', which says nothing of x; now the TypeError names it and the fix."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    with pytest.raises(TypeError, match=rf"^x must be a torch\.Tensor \(or a tuple, list or "
                                        rf"dict of them\), got {what} \(torch\.as_tensor\(x\) "
                                        r"makes one\) \(the model said: "):
        dlt.probe(model, x, torch.randint(0, 3, (16,)), CE)


@pytest.mark.parametrize("fn", [dlt.probe, dlt.predict])
@pytest.mark.parametrize("loss_fn", [nn.CrossEntropyLoss(), nn.functional.cross_entropy,
                                     "nll"])
def test_a_label_outside_the_classes_is_named(fn, loss_fn):
    """Class indices beyond the model's outputs gave torch's bare 'IndexError: Target 4 is out
    of bounds.' (on CUDA a device-side assert that breaks the process's CUDA context); now a
    ValueError naming the label, how many are outside and the classes. The loss's
    ignore_index (-100, or its own) stays allowed."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3), nn.LogSoftmax(1))
    x = torch.randn(6, 4)
    y = torch.tensor([0, 1, 2, 4, 3, 1])
    with pytest.raises(ValueError, match=r"^y holds the label 4 \(2 of 6 outside 0 to 2\), but "
                                         r"the model's output has 3 classes in dimension 1 for "
                                         r".*; expected class indices 0 to 2$"):
        fn(model, x, y, loss_fn)
    fn(model, x, torch.tensor([0, 1, 2, -100, 2, 1]), loss_fn)  # the ignored label: fine
    seg = nn.Conv2d(2, 3, 1)  # per-pixel classes: (N, C, H, W) against (N, H, W)
    with pytest.raises(ValueError, match=r"label 3 \(1 of 18 outside 0 to 2\)"):
        dlt.probe(seg, torch.randn(2, 2, 3, 3), torch.tensor([0, 1, 2] * 5 + [3, 0, 0]).view(
            2, 3, 3), nn.CrossEntropyLoss(ignore_index=255))


class _TwoFromX(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2, self.act, self.l3 = (nn.Linear(5, 6), nn.Linear(5, 6), nn.Tanh(),
                                               nn.Linear(6, 3))

    def forward(self, x):
        return self.l3(self.act(self.l1(x) + self.l2(x)))


def test_predict_says_a_second_layer_reads_the_input_itself():
    """predict() refused l1(x) + l2(x) saying the input of 'l2' 'is computed by the torch
    operation 'Clone' (autograd node CloneBackward0), not by a module': a copy predict() makes
    of x itself, which the user's model has not; now it says that l2 reads the model's input."""
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"the input of 'l2' is not the previous layer's output "
                                         r".*; it reads the model's input x itself") as info:
        dlt.predict(_TwoFromX(), torch.randn(8, 5), torch.randint(0, 3, (8,)), CE)
    assert "Clone" not in str(info.value)


class _Expanded(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1, self.a1, self.l2, self.a2 = nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), \
            nn.Tanh()
        self.flat, self.head = nn.Flatten(), nn.Linear(64, 3)

    def forward(self, x):
        h = self.a1(self.l1(x)).unsqueeze(1).expand(-1, 4, -1)
        return self.head(self.flat(self.a2(self.l2(h))))


def test_predict_names_a_broadcast_view_between_layers():
    """An expand() between two layers (each of l1's outputs read 4 times) was refused as 'a
    part of the previous layer's output (512 of its 128 entries: a slice or a selection)':
    more entries than there are is no part; now the message says the view repeats entries."""
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"the input of 'l2' repeats the previous layer's "
                                         r"output \(512 entries read from its 128: a broadcast "
                                         r"view such as expand\)") as info:
        dlt.predict(_Expanded(), torch.randn(8, 8), torch.randint(0, 3, (8,)), CE)
    assert "a part of" not in str(info.value)


class _Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1, self.act, self.norm, self.l3 = nn.Linear(5, 6), nn.Sigmoid(), \
            nn.BatchNorm1d(6), nn.Linear(6, 3)

    def forward(self, x):
        return self.l3(self.act(self.norm(self.l1(x) * 3.0)))


def test_predict_names_the_operation_between_a_layer_and_its_activation():
    """act(norm(l1(x) * 3)) was refused as 'the input of 'l3' is not the previous layer's
    output (...); it is made by 'norm' (BatchNorm1d) -> 'act' (Sigmoid)', which named the two
    modules but not the multiplication that broke the chain; now the message names it."""
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"the input of 'l3' is not the previous layer's output "
                                         r".*; it is made by 'norm' \(BatchNorm1d\) -> 'act' "
                                         r"\(Sigmoid\), and 'norm' \(BatchNorm1d\) reads the "
                                         r"result of the torch operation 'Mul' \(autograd node "
                                         r"MulBackward0\), not the previous layer's output"):
        dlt.predict(_Scaled(), torch.randn(8, 5), torch.randint(0, 3, (8,)), CE)
