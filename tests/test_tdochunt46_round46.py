"""round46 tdochunt46: the doctors on models of kinds not tried before.

- The torch doctor finds dropout too strong (the shared ``dropout_too_strong`` rule, NumPy
  only before) in an ``nn.Sequential`` whose dropout layers the signal passes in turn, and
  verifies the rule's own cure (one lower rate for them all) on a copy; the caller's model
  keeps its rates. Dropout in a module whose forward may route around it is not counted.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
import depthlab.torch as dlt  # noqa: E402
from depthlab.torch import prescriptions as rx  # noqa: E402


def _four_classes(n: int = 256, d: int = 16) -> tuple:
    """x ~ N(0, 1); 4 classes from the signs of two sums of 4 inputs."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    y = (x[:, :4].sum(1) > 0).long() + 2 * (x[:, 4:8].sum(1) > 0).long()
    return x, y


def _dropout_mlp(depth: int, p: float, alpha: bool = False, nested: bool = False):
    """He-initialized ReLU (or SELU with alpha dropout) MLP of width 32, each hidden layer
    followed by dropout at rate ``p`` (``nested``: each layer its own nn.Sequential)."""
    def make() -> nn.Module:
        layers, k = [], 16
        for _ in range(depth):
            lin = nn.Linear(k, 32)
            nn.init.kaiming_normal_(lin.weight, nonlinearity="linear" if alpha else "relu")
            block = [lin, nn.SELU() if alpha else nn.ReLU(),
                     nn.AlphaDropout(p) if alpha else nn.Dropout(p)]
            layers += [nn.Sequential(*block)] if nested else block
            k = 32
        return nn.Sequential(*layers, nn.Linear(32, 4))
    return make


@pytest.mark.parametrize("depth,p,alpha,nested,rate", [
    (6, 0.5, False, False, 0.1),   # noise (1/(1-p))^6 - 1 = 63x; cure 1 - 2^(-1/6) -> 0.1
    (8, 0.3, False, True, 0.08),   # nested blocks are passed in turn as well
    (6, 0.2, True, False, 0.02),   # alpha dropout's own noise and rate
])
def test_torch_doctor_finds_and_cures_dropout_too_strong(depth, p, alpha, nested, rate):
    torch.manual_seed(0)  # the weights a factory gets (the doctor seeds before calling it)
    model = _dropout_mlp(depth, p, alpha, nested)()
    d = dlt.doctor(model, _four_classes(), steps=60, max_cures=2)
    kinds = [f.kind for f in d.findings]
    assert kinds == ["dropout_too_strong"], kinds
    f = d.findings[0]
    assert f.evidence["n_dropout_layers"] == depth
    assert f.evidence["metric"] > 1.0
    mine = [v for v in d.verifications if v.prescription == {"dropout": rate}]
    assert len(mine) == 1 and mine[0].helped and mine[0].resolved
    assert mine[0].after["train_loss"] < mine[0].before["train_loss"]
    assert mine[0].before["steps"] == mine[0].after["steps"] == 60
    assert f.prescription == {"dropout": rate}
    # the caller's model keeps its rates (the cure ran on a copy)
    assert {float(m.p) for m in model.modules()
            if isinstance(m, nn.modules.dropout._DropoutNd)} == {p}


def test_light_dropout_and_routed_dropout_give_no_finding():
    x, y = _four_classes()
    assert dlt.doctor(_dropout_mlp(3, 0.1), (x, y), steps=60, max_cures=1).findings == []

    class Wrapped(nn.Module):  # its forward could route around the dropouts: not counted
        def __init__(self) -> None:
            super().__init__()
            self.net = _dropout_mlp(6, 0.5)()

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.net(t)

    assert rx.chained_dropouts(Wrapped()) == []
    assert len(rx.chained_dropouts(_dropout_mlp(6, 0.5, nested=True)())) == 6


def test_lower_dropout_refuses_cleanly():
    model = _dropout_mlp(3, 0.05)()
    with pytest.raises(rx.NotApplicable, match="rate above 0.1"):
        rx.lower_dropout(model, 0.1)
    with pytest.raises(ValueError, match=r"dropout must be a rate in \[0, 1\), got 1.5"):
        rx.lower_dropout(model, 1.5)
    assert rx.lower_dropout(model, 0.01) == 3
    assert {float(m.p) for m in rx.chained_dropouts(model)} == {0.01}


def test_translate_takes_the_dropout_cures_as_one_rate():
    from depthlab.torch.train import TorchTrainSpec

    spec = TorchTrainSpec()
    assert rx.translate({"dropout": 0.1}, spec) == {"dropout": 0.1}
    assert rx.translate({"dropout": 0.1, "input_dropout": 0.05}, spec) == {"dropout": 0.05}
    assert "dropout" in rx.MODEL_KEYS
