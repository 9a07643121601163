"""Round 42 (torchhunt42): depthlab.torch's probe / discover / predict on inputs and models
not tried before: bad inputs get one line naming x and what was expected."""

from __future__ import annotations

import importlib
import re

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402

CE = nn.CrossEntropyLoss()
probe_mod = importlib.import_module("depthlab.torch.probe")  # (dlt.probe is the function)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


class _Gen:
    """An object of the user's own class given as x."""


@pytest.mark.parametrize("x", ["hello", b"hi", {1, 2}, _Gen()],
                         ids=["str", "bytes", "set", "object"])
@pytest.mark.parametrize("entry", ["probe", "discover"])
def test_x_of_a_type_the_model_cannot_take_is_named(entry, x):
    # torch said "linear(): argument 'input' (position 1) must be Tensor, not str", naming
    # neither x nor the remedy (None, numpy arrays, lists and numbers had the line already)
    model = _mlp()
    with pytest.raises(TypeError, match=rf"^x must be a torch\.Tensor .*got "
                                        rf"{type(x).__name__} \(torch\.as_tensor"):
        if entry == "probe":
            dlt.probe(model, x, torch.zeros(4, dtype=torch.long), CE)
        else:
            dlt.discover(model, x)


def test_a_non_tensor_argument_the_forward_takes_is_left_alone():
    # a forward of a tensor and a number (a count of steps) keeps running; only a type torch
    # names in its refusal is blamed on x
    class Steps(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 6)

        def forward(self, x, n):
            for _ in range(n):
                x = torch.tanh(self.fc(x))
            return x

    torch.manual_seed(0)
    df = dlt.probe(Steps(), (torch.randn(4, 6), 2), torch.zeros(4, 6), nn.MSELoss())
    assert set(df.module) == {"", "fc"}


def test_x_on_another_device_than_the_model_is_named():
    # torch said "Tensor on device cpu is not on the expected device meta!" (and on a GPU
    # "Expected all tensors to be on the same device, but found at least two devices, cuda:0
    # and cpu!"), naming neither x nor the remedy
    model = _mlp()
    x = torch.randn(4, 6, device="meta")
    with pytest.raises(ValueError, match=r"^x has a tensor on device meta but the model's "
                                         r"weights are on cpu; expected x on the model's "
                                         r"device \(x\.to\('cpu'\)\)"):
        probe_mod.forward(model, x)
    with pytest.raises(ValueError, match=r"^x has a tensor on device meta but the model's"):
        dlt.discover(model, x)
    for run in (lambda: dlt.probe(model, x, torch.zeros(4, dtype=torch.long), CE),
                lambda: dlt.predict(model, x)):
        with pytest.raises(ValueError, match=r"^x is on the 'meta' device \(a shape without "
                                             r"values\), so nothing can be measured"):
            run()


def test_y_on_another_device_than_the_output_is_named():
    # torch said "Tensor on device meta is not on the expected device cpu!" (on a GPU:
    # "Expected all tensors to be on the same device ... cuda:0 and cpu!") or, for class
    # indices, an error from torch.nonzero's meta registration
    model = _mlp()
    x = torch.randn(4, 6)
    for y, loss in ((torch.zeros(4, dtype=torch.long, device="meta"), CE),
                    (torch.zeros(4, 3, device="meta"), nn.MSELoss())):
        for run in (dlt.probe, dlt.predict):
            with pytest.raises(ValueError, match=r"^y is on device meta but the model's output "
                                                 r"is on cpu; expected y on the output's "
                                                 r"device \(y\.to\('cpu'\)\)"):
                run(model, x, y, loss)


@pytest.mark.parametrize("loss", [nn.BCELoss(), "bce",
                                  torch.nn.functional.binary_cross_entropy],
                         ids=["module", "name", "function"])
def test_probabilities_outside_0_1_for_bce_are_named(loss):
    # torch said "all elements of input should be between 0 and 1" / "... of target ...",
    # naming neither the output or y nor the remedy
    model = _mlp()
    x = torch.randn(4, 6)
    with pytest.raises(ValueError, match=r"^the model's output holds values outside \[0, 1\] "
                                         r"\(from -?[0-9.]+ to -?[0-9.]+\), but .*takes "
                                         r"probabilities; .*sigmoid.*bce_with_logits"):
        dlt.probe(model, x, torch.rand(4, 3), loss)
    squashed = nn.Sequential(model, nn.Sigmoid())
    for run in (dlt.probe, dlt.predict):
        with pytest.raises(ValueError, match=r"^y holds targets outside \[0, 1\] \(from "
                                             r"0 to 3\), but .*takes probabilities "
                                             r"in \[0, 1\]"):
            run(squashed, x, torch.tensor([[0.0, 1.0, 3.0]] * 4), loss)
    df = dlt.probe(squashed, x, torch.rand(4, 3), loss)  # probabilities: measured
    assert (df.quantity == "grad_pre_std").sum() == 2


def test_discover_given_no_input_or_the_targets_says_what_it_takes():
    # discover(model, *inputs) calls model(*inputs): discover(model) and discover(model, x,
    # y) were told "x is a tuple of 0 inputs ..." / "... give x=(xs,), a tuple holding it",
    # probe's wording for an x discover does not have
    model = _mlp()
    x = torch.randn(4, 6)
    with pytest.raises(TypeError, match=r"^discover\(model, \*inputs\) runs model\(\*inputs\), "
                                        r"and was given no inputs; expected discover\(model, "
                                        r"x\)"):
        dlt.discover(model)
    with pytest.raises(TypeError, match=r"^discover\(model, \*inputs\) runs model\(\*inputs\), "
                                        r"but Sequential\.forward\(input\) does not take the 2 "
                                        r"inputs given \(too many positional arguments\); "
                                        r"expected discover\(model, x\) with the inputs the "
                                        r"forward takes \(no targets or loss\)"):
        dlt.discover(model, x, torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match=r"^discover\(model, \*inputs, \*\*kwargs\) runs "
                                        r"model\(\*inputs, \*\*kwargs\), but Sequential\.forward"
                                        r"\(input\) does not take them \(missing a required "
                                        r"argument: 'input'\)"):
        dlt.discover(model, inputs=x)
    assert [i.name for i in dlt.discover(model, x)] == ["0", "2"]


def test_an_unbatched_conv_input_of_wrong_channels_names_dimension_0():
    # torch reads a (8, 6, 6) x of a Conv2d as ONE example of 8 channels; the line said "8
    # channels in dimension 1 ... expected x of shape (8, 3, 6)", a shape the conv cannot take
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 36, 3))
    for run in (lambda x: dlt.probe(model, x, torch.zeros(8, dtype=torch.long), CE),
                lambda x: dlt.discover(model, x)):
        with pytest.raises(ValueError, match=r"^x has shape \(8, 6, 6\), read as one example "
                                             r"without a batch dimension \(C, H, W\), 8 channels "
                                             r"in dimension 0, but the model's first layer '0' "
                                             r"\(Conv2d\) expects in_channels=3; expected a batch "
                                             r"\(N, 3, H, W\) or one example \(3, 6, 6\)"):
            run(torch.randn(8, 6, 6))
        with pytest.raises(ValueError, match=r"^x has shape \(8, 4, 6, 6\), 4 channels in "
                                             r"dimension 1, .*expected x of shape \(8, 3, 6, 6\)"):
            run(torch.randn(8, 4, 6, 6))


class _SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x):
        return self.mha(x, x, x)[0].mean(1)


@pytest.mark.parametrize("make, x, module", [
    (lambda: nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 3)), (torch.zeros(4, 12),),
     "'0' \\(LayerNorm\\)"),
    (lambda: nn.Sequential(nn.BatchNorm1d(16), nn.Linear(16, 3)), (torch.zeros(4, 12),),
     "'0' \\(BatchNorm1d\\)"),
    (lambda: _SelfAttention(), (torch.zeros(4, 5, 12),), "'mha' \\(MultiheadAttention\\)"),
    (lambda: nn.Bilinear(4, 5, 3), (torch.zeros(4, 4), torch.zeros(4, 6)),
     "the model \\(a Bilinear\\)"),
], ids=["layernorm", "batchnorm", "attention", "bilinear"])
def test_x_that_the_module_it_goes_into_cannot_take_is_named(make, x, module):
    # torch said only "Given normalized_shape=[16], expected input with shape [*, 16], but got
    # input of size[4, 12]" (RuntimeError), "running_mean should contain 12 elements not 16",
    # "was expecting embedding dimension of 16, but got 12" (an AssertionError), naming
    # neither x nor the module
    torch.manual_seed(0)
    model = make()
    what = ("tensors of shapes " + ", ".join(str(tuple(t.shape)) for t in x) if len(x) > 1
            else f"a tensor of shape {tuple(x[0].shape)}")
    with pytest.raises(ValueError, match=rf"^x has {re.escape(what)} that {module} cannot take "
                                         rf"\(torch: .+\); expected x of the shape it takes"):
        dlt.discover(model, *x)


def test_a_mismatch_inside_the_model_keeps_torchs_message():
    # a Linear after a Flatten of embeddings gets a tensor the model made, not x: torch's line
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 3))
    with pytest.raises(RuntimeError, match="mat1 and mat2 shapes cannot be multiplied"):
        dlt.discover(model, torch.randint(0, 10, (4, 5)))
