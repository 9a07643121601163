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


def test_frozen_layers_do_not_hide_a_too_high_learning_rate_of_the_trained_head():
    # fine-tuning a head on a frozen backbone at Adam lr 0.3: the update ratios of the four
    # frozen layers (0 at every step) held the median over layers at 0, so lr_too_high never
    # fired although the same model trained end to end got it (lr/10: 1.274 -> 1.077)
    torch.manual_seed(0)
    x = torch.randn(400, 16)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long() + (x[:, 2] > 0).long()

    def make():
        torch.manual_seed(123)
        layers = [nn.Linear(16, 32)] + [nn.Linear(32, 32) for _ in range(4)]
        for lin in layers:
            nn.init.kaiming_normal_(lin.weight)
        for lin in layers[:4]:
            lin.requires_grad_(False)
        return nn.Sequential(*[m for lin in layers for m in (lin, nn.ReLU())], nn.Linear(32, 4))

    d = dlt.doctor(make, (x, y, x[:80], y[:80]), optimizer=("adam", {"lr": 0.3}), steps=60,
                   batch_size=32, verify=False)
    assert "lr_too_high" in [f.kind for f in d.findings]
    ratios = d.probes[d.probes["quantity"] == "update_ratio"]
    assert set(ratios["module"]) == {"8", "10"}  # the trained layers only
