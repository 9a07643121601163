"""Round 48 (watchC48): the cost of ``dlt.Watch(model, every=10)`` per cycle (issue 8 speed).

``Watch._modules`` saves one shared empty dict (``watch._NO_CHILDREN``) as the children of every
module that had none, so ``Watch._changed`` reads one saved dict for all leaves instead of a cold
copy per leaf. These tests pin that the check still finds every change it found before, also a
child given to a leaf, and that the shared dict is never written."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import depthlab.torch as dlt
from depthlab.torch import watch as W


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))


def _reference_changed(structure: list) -> bool:
    """The check as a formula: per saved module, its children dict differs from the saved one
    (``!=``) or its own parameters differ by name, order or identity."""
    return any(m._modules != children
               or [(k, id(p)) for k, p in m._parameters.items()]
               != [(k, id(p)) for k, p in (params or {}).items()]
               for m, children, params in structure)


def test_leaves_share_one_saved_empty_children_dict():
    model = _net()
    watch = dlt.Watch(model, every=3, theory=False)
    leaves = [children for m, children, _ in watch._structure if not m._modules]
    assert len(leaves) == 5
    assert all(children is W._NO_CHILDREN for children in leaves)
    root = [children for m, children, _ in watch._structure if m is model][0]
    assert root == dict(model._modules) and root is not model._modules
    watch.close()


@pytest.mark.parametrize("mutate", ["leaf_child", "leaf_child_none", "root_child", "replace",
                                    "param_on_relu", "remove_child", "odict", "none"])
def test_changed_finds_what_the_formula_finds(mutate):
    model = _net()
    watch = dlt.Watch(model, every=3, theory=False)
    saved = [(m, dict(children), None if params is None else dict(params))
             for m, children, params in watch._structure]
    if mutate == "leaf_child":  # a child given to a module that had none
        model[1].add_module("inner", nn.Identity())
    elif mutate == "leaf_child_none":  # a child slot of None (register_module(name, None))
        model[3].register_module("slot", None)
    elif mutate == "root_child":
        model.append(nn.Identity())
    elif mutate == "replace":
        model[1] = nn.ReLU()
    elif mutate == "param_on_relu":
        model[1].register_parameter("slope", nn.Parameter(torch.ones(())))
    elif mutate == "remove_child":
        del model[4]
    elif mutate == "odict":  # an OrderedDict of the same children (Sequential.__delitem__'s)
        from collections import OrderedDict
        model[1]._modules = OrderedDict()
    assert watch._changed() is _reference_changed(saved)
    assert watch._changed() is (mutate not in ("none", "odict"))
    assert W._NO_CHILDREN == {}
    watch.close()


def test_a_child_given_to_a_leaf_is_found_at_the_next_arming_call():
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = dlt.Watch(model, every=3, theory=False)
    g = torch.Generator().manual_seed(1)
    said = []
    for s in range(7):
        if s == 4:  # a leaf (Tanh) given a Linear child: found at the arming call of step 5
            model[3].add_module("extra", nn.Linear(4, 4))
        x = torch.randn(8, 3, generator=g)
        y = torch.randint(0, 2, (8,), generator=g)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            watch.step(loss)
        said += [str(w.message) for w in caught if "changed by step" in str(w.message)]
        opt.step()
    watch.close()
    assert len(said) == 1 and "changed by step 5 " in said[0], said
    assert W._NO_CHILDREN == {}
    assert watch._changed() is False  # found again: nothing changed since
