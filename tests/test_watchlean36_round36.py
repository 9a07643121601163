"""Round 36 (watchlean36): Watch's structure check (``Watch._changed``) compares each module's
parameters by identity at C speed (``watch._same_params``); a change between records is still
found, whatever the values of the parameters involved."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from depthlab.torch import Watch


def _reference_changed(watch: Watch, saved: list) -> bool:
    """The check before round 36: per module its children dict and the list of ``(name, id)``
    of its own parameters (``saved``, taken when the Watch was made), compared."""
    return any(m._modules != children or [(k, id(p)) for k, p in m._parameters.items()] != ids
               for (m, children, _), ids in zip(watch._structure, saved))


def _loop(model: nn.Module, steps: int, change=None, at: int = 2):
    """Train ``model`` (SGD) for ``steps`` steps under a ``Watch(every=2)``; ``change(model)``
    runs after step ``at``'s optimizer step (2: before the arming call of step 3; 3: between
    it and the record of step 4), the optimizer made anew."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    watch = Watch(model, every=2, theory=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for s in range(steps):
            x = torch.randn(8, 3, generator=g)
            y = torch.randint(0, 2, (8,), generator=g)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
            if s == at and change is not None:
                change(model)
                opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watch.close()
    return watch, [str(w.message) for w in caught if "changed" in str(w.message)]


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 1), nn.Tanh(), nn.Linear(1, 1), nn.Tanh(),
                         nn.Linear(1, 2))


def test_one_entry_weight_replaced_by_an_equal_one_is_a_change():
    # the (1, 1) weight of layer 2 replaced by a new Parameter of the same value (a tensor ==
    # of the two is True, identity is not) after step 2: found at step 3 (arming), so step 4
    # reads the new weight, its .grad and a snapshot of it; missed, it read the old one, whose
    # .grad is step 2's and which no optimizer moves any more (update ratio 0)
    def change(model):
        model[2].weight = nn.Parameter(model[2].weight.detach().clone())

    watch, said = _loop(_net(), 5, change)
    assert said and "new or replaced: 2" in said[0]
    t = watch.frame()
    row = t[t.layer == 2].set_index(["step", "quantity"])["value"]
    assert row[(4, "update_ratio")] > 0.0
    assert row[(4, "weight_grad_absmean")] != row[(2, "weight_grad_absmean")]


def test_parameter_renamed_same_object_is_a_change():
    # torch.nn.utils.prune moves 'weight' to 'weight_orig' (the same Parameter object)
    def change(model):
        prune.l1_unstructured(model[4], "weight", amount=0.5)

    _, said = _loop(_net(), 5, change)
    assert said and "parameters re-registered in: 4" in said[0]


@pytest.mark.parametrize("mutate", ["replace", "rename", "rename_in_place", "add",
                                    "remove_bias", "child", "requires_grad", "none"])
def test_check_agrees_with_the_reference(mutate):
    model = _net()
    watch = Watch(model, every=3, theory=False)
    saved = [[(k, id(p)) for k, p in m._parameters.items()] for m, _, _ in watch._structure]
    lin = model[0]
    if mutate == "replace":
        lin.weight = nn.Parameter(lin.weight.detach().clone())
    elif mutate == "rename":
        prune.random_unstructured(lin, "weight", amount=0.0)
    elif mutate == "rename_in_place":  # the same objects in the same order, one name changed
        lin._parameters = {("w" if k == "weight" else k): v for k, v in lin._parameters.items()}
    elif mutate == "add":
        lin.register_parameter("extra", nn.Parameter(torch.zeros(1)))
    elif mutate == "remove_bias":
        del lin._parameters["bias"]
        lin.bias = None
    elif mutate == "child":
        model[1] = nn.ReLU()
    elif mutate == "requires_grad":  # not a structure change (rows follow requires_grad)
        lin.weight.requires_grad_(False)
    assert watch._changed() is _reference_changed(watch, saved)
    assert watch._changed() is (mutate not in ("none", "requires_grad"))
    watch.close()


def test_rows_after_a_layer_replaced():
    # replaced after the arming call: the record that finds the change (step 4) leaves the
    # replaced head out, its successor is measured from the next record on, with an update
    # ratio (snapshot taken anew)
    def change(model):
        model[4] = nn.Linear(1, 2)

    watch, said = _loop(_net(), 7, change, at=3)
    assert said and "new or replaced: 4" in said[0]
    t = watch.frame()
    q = {s: set(t[(t.step == s) & (t.layer == 3)].quantity) for s in (2, 4, 6)}
    assert "update_ratio" in q[2] and not q[4] and "update_ratio" in q[6]
    assert "weight_grad_std" in q[6]
