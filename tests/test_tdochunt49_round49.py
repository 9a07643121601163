"""Round 49 (tdochunt49): the doctors on new ground: losses that pair outputs with targets."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


def _regression(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return x, 2 * x[:, :1] - x[:, 1:2]


def _one_output() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 1))


def _flat_output() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 1), nn.Flatten(0))


@pytest.mark.parametrize("make, column", [(_one_output, False), (_flat_output, True)])
def test_a_plain_function_loss_that_broadcasts_outputs_against_targets_is_refused(make, column):
    # (N, 1) outputs against (N,) targets (or (N,) against (N, 1)) through a plain function:
    # torch does not warn, the mean runs over an (N, N) grid of every output against every
    # target. The old code trained on that nonsense loss (baseline 4.2 vs 2.7 matched).
    x, y = _regression()
    target = y if column else y[:, 0]
    with pytest.raises(ValueError, match=r"broadcasts the model's outputs .* grid") as e:
        dlt.doctor(make, (x, target), loss_fn=lambda o, t: ((o - t) ** 2).mean(), steps=3,
                   verify=False)
    said = str(e.value)
    assert "\n" not in said
    assert ("give y as y.reshape(-1)" if column else "y.reshape(-1, 1)") in said


def test_a_loss_that_pairs_examples_on_purpose_or_squeezes_is_not_refused():
    x, y = _regression()
    t = y[:, 0]

    def ranking(s, t):  # a pairwise ranking hinge: s (N, 1) against every other example
        return torch.relu(1 - (s - s.T) * torch.sign(t[:, None] - t[None, :])).mean()

    for loss in (ranking, lambda o, t: ((o.squeeze(1) - t) ** 2).mean()):
        d = dlt.doctor(_one_output, (x, t), loss_fn=loss, steps=3, verify=False)
        assert d.baseline["steps"] == 3
    d = dlt.doctor(_one_output, (x, y), loss_fn=lambda o, t: ((o - t) ** 2).mean(), steps=3,
                   verify=False)  # the same shapes: nothing to refuse
    assert d.baseline["steps"] == 3
