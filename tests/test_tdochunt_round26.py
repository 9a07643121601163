"""Round 26 (tdochunt26): the torch doctor on practitioners' models nobody tried."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import depthlab.torch as dlt  # noqa: E402


def test_a_factory_wrapping_the_callers_pretrained_backbone_leaves_it_as_built():
    # ``def make(): return nn.Sequential(backbone, head)`` around a global (pretrained)
    # backbone: every run after the first trained (and re-initialized) the caller's backbone
    # in place; only the first build was trained as a copy
    torch.manual_seed(0)
    x = torch.randn(120, 6)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    backbone = nn.Sequential(nn.Linear(6, 16), nn.ReLU())
    as_built = {k: v.clone() for k, v in backbone.state_dict().items()}

    def make():
        return nn.Sequential(backbone, nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))

    d = dlt.doctor(make, (x, y, x[:30], y[:30]), optimizer=("sgd", {"lr": 3.0}), steps=12,
                   batch_size=32, verify=True, max_cures=1)
    assert d.verifications  # cures were built from the factory and trained
    assert all(torch.equal(as_built[k], v) for k, v in backbone.state_dict().items())
    assert all(p.grad is None for p in backbone.parameters())
