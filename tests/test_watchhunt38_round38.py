"""Round 38 (watchhunt38): dlt.Watch attached to training loops as a user writes them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import depthlab.torch as dlt


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def test_name_given_positionally_is_refused_naming_the_positional_arguments():
    # Python said "Watch.__init__() takes from 2 to 4 positional arguments but 5 were given"
    # for 4 arguments (it counts self) and did not say that name is a keyword
    with pytest.raises(TypeError) as info:
        dlt.Watch(_model(), 10, None, "run1")
    text = str(info.value)
    assert "takes 3 positional arguments (model, every, out) but 4 were given" in text
    assert "name=" in text and "\n" not in text
