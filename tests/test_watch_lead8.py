"""Watch on a loop that calls the model's submodules itself: a frozen backbone run under
``no_grad`` before the head is trained (linear probing) is part of the step and measured."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import depthlab.torch as dlt


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(12, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU())
    for p in backbone.parameters():
        p.requires_grad_(False)
    return nn.Sequential(backbone, nn.Linear(32, 4))


@pytest.mark.parametrize("every", [1, 3])
def test_linear_probing_measures_the_frozen_backbone_and_the_head(every):
    model = _model()
    backbone, head = model[0], model[1]
    opt = torch.optim.SGD(head.parameters(), lr=0.1)
    watch = dlt.Watch(model, every=every)
    g = torch.Generator().manual_seed(1)
    expected = {}
    for step in range(6):
        x, y = torch.randn(64, 12, generator=g), torch.randint(0, 4, (64,), generator=g)
        opt.zero_grad()
        with torch.no_grad():
            h1 = backbone[0](x)
            h2 = backbone[2](backbone[1](h1))
            feats = backbone[3](h2)
        logits = head(feats)
        logits.retain_grad()
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        with torch.no_grad():  # a validation call after the backward: not the record
            backbone(torch.randn(64, 12, generator=g) * 5)
        watch.step(loss)
        opt.step()
        if step % every == 0:
            expected[step] = {1: h1.std(unbiased=False).item(), 2: h2.std(unbiased=False).item(),
                              3: logits.grad.std(unbiased=False).item()}
    frame = watch.frame()
    watch.close()
    for step, want in expected.items():
        at = frame[frame.step == step].set_index(["layer", "quantity"])["value"]
        assert at[(1, "pre_std")] == pytest.approx(want[1], rel=1e-5)
        assert at[(2, "pre_std")] == pytest.approx(want[2], rel=1e-5)
        assert at[(3, "grad_pre_std")] == pytest.approx(want[3], rel=1e-5)
        assert (1, "grad_pre_std") not in at.index  # frozen, under no_grad: no gradient


def test_pruning_mid_training_is_named_in_the_change_warning():
    """torch.nn.utils.prune moves a layer's 'weight' to 'weight_orig' (the same layers under
    the same names): the warning said 'new or replaced: none; removed: none'."""
    from torch.nn.utils import prune

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = dlt.Watch(model, every=2)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    with pytest.warns(RuntimeWarning, match="parameters re-registered in: 0\\)"):
        for step in range(6):
            if step == 3:
                prune.l1_unstructured(model[0], "weight", amount=0.5)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
    watch.close()
    assert set(watch.frame().layer) == {0, 1, 2}  # the loss rows, the two layers


@pytest.mark.parametrize("every", ["5", 5.0, True, None])
def test_every_of_the_wrong_type_is_a_type_error_and_a_value_error(every):
    """``every="5"`` was a ValueError only; a value of the wrong type is now a TypeError too
    (``validators.ArgumentTypeError``), naming the argument and the value."""
    with pytest.raises(TypeError, match=r"every must be a positive integer, got "):
        dlt.Watch(nn.Linear(3, 2), every=every)
    with pytest.raises(ValueError):
        dlt.Watch(nn.Linear(3, 2), every=every)


def test_every_below_one_stays_a_value_error_only():
    with pytest.raises(ValueError, match="every must be a positive integer, got 0") as info:
        dlt.Watch(nn.Linear(3, 2), every=0)
    assert not isinstance(info.value, TypeError)
