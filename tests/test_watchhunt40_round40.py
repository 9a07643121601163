"""Round 40 (watchhunt40): dlt.Watch on training loops nobody tried."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import depthlab.torch as dlt


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def _batch(i: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + i)
    return torch.randn(16, 6, generator=g).to(dtype), torch.randint(0, 3, (16,), generator=g)


@pytest.fixture
def swap_on_conversion():
    """``torch.__future__.set_swap_module_params_on_conversion(True)``: ``model.to(dtype)``
    swaps each parameter's and ``.grad``'s contents in place (``torch.utils.swap_tensors``),
    which refuses a tensor that has a weak reference."""
    before = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    yield
    torch.__future__.set_swap_module_params_on_conversion(before)


def _convert_mid_run(watch: dlt.Watch | None, at: int, steps: int = 5) -> nn.Module:
    model = _model()
    if watch is not None:
        watch = dlt.Watch(model, every=watch, theory=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    dtype = torch.float32
    for i in range(steps):
        if i == at:
            model.to(torch.float64)
            dtype = torch.float64
        opt.zero_grad()
        x, y = _batch(i, dtype)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if watch is not None:
            watch.step(loss)
        opt.step()
    if watch is not None:
        watch.close()
        frame = watch.frame()
        assert sorted(frame.step.unique()) == list(range(0, steps, watch.every))
    return model


@pytest.mark.parametrize("every", [1, 2])
def test_model_to_dtype_with_swapped_parameters_is_not_broken_by_the_watch(
        swap_on_conversion, every: int) -> None:
    """With swap-on-conversion, ``model.to(torch.float64)`` between two steps (the hooks armed,
    the gradients marked) raised torch's "_apply(): Couldn't swap Linear.weight.grad" (the
    Watch held a weak reference to each ``.grad``), leaving the model half converted: the
    training ended. Now it converts, and training is bit-identical to an unwatched run."""
    watched = _convert_mid_run(every, at=every)  # right after an arming call
    plain = _convert_mid_run(None, at=every)
    for a, b in zip(watched.parameters(), plain.parameters()):
        assert a.dtype == torch.float64
        assert torch.equal(a, b)


def _bitfit() -> tuple[nn.Module, torch.optim.Optimizer]:
    """Every weight matrix frozen from the start, the biases trained (BitFit)."""
    model = _model()
    for layer in (model[0], model[2]):
        layer.weight.requires_grad_(False)
    return model, torch.optim.SGD([model[0].bias, model[2].bias], lr=0.1)


@pytest.mark.parametrize("every", [1, 2])
def test_bitfit_from_the_start_refuses_a_step_before_any_backward(every: int) -> None:
    """Weights frozen from the start: ``Watch.step(loss)`` before any backward recorded the
    step (its rows without any gradient) instead of the documented ValueError."""
    model, _ = _bitfit()
    watch = dlt.Watch(model, every=every, theory=False)
    x, y = _batch(0)
    loss = nn.functional.cross_entropy(model(x), y)
    with pytest.raises(ValueError, match="before any backward"):
        watch.step(loss)
    loss.backward()
    watch.step(loss)  # the step, once its backward ran
    watch.close()
    frame = watch.frame()
    assert set(frame.step) == {0}
    assert (frame.quantity == "grad_pre_std").sum() == 2


def test_bitfit_from_the_start_refuses_a_second_step_without_a_backward() -> None:
    model, opt = _bitfit()
    watch = dlt.Watch(model, every=1, theory=False)
    for i in range(2):
        opt.zero_grad()
        x, y = _batch(i)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
        opt.step()
    with pytest.raises(ValueError, match="again without a backward"):
        watch.step(loss)
    assert watch.steps_seen == 2
    watch.close()


def test_a_model_with_every_parameter_frozen_is_said_to_get_no_gradient() -> None:
    """Every parameter frozen from the start (the input trained, as an adversarial or
    feature-visualisation loop does): the records were made silently, with no weight gradient
    and zero update ratios; now said once, and the layer-output gradients still recorded."""
    model = _model().requires_grad_(False)
    watch = dlt.Watch(model, every=1, theory=False)
    x, y = _batch(0)
    x.requires_grad_(True)
    with pytest.warns(RuntimeWarning, match="no parameter of Sequential requires grad"):
        for _ in range(2):
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            watch.step(loss)
    watch.close()
    frame = watch.frame()
    assert not frame.quantity.str.startswith("weight_grad").any()
    assert (frame.quantity == "grad_pre_std").sum() == 4
    assert (frame[frame.quantity == "update_ratio"].value == 0.0).all()
