"""Round 34 (torchhunt34): dlt.probe / dlt.Watch on models earlier rounds did not use."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


class _Encoder(nn.Module):
    """torchvision's ViT ``Encoder``: a learned position table beside its blocks."""

    def __init__(self, seq: int, d: int) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.randn(1, seq, d) * 0.02)
        self.fc = nn.Linear(d, d)
        self.ln = nn.LayerNorm(d)

    def forward(self, x):
        return self.ln(torch.tanh(self.fc(x + self.pos_embedding)))


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 8)
        self.encoder = _Encoder(4, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.encoder(self.inp(x))[:, 0])


class _Dense(nn.Module):
    """A custom layer owning its weight, with an activation module as its only child."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 6) * 0.4)
        self.act = nn.Tanh()

    def forward(self, x):
        return self.act(x @ self.weight.t())


def test_a_submodules_own_table_beside_its_layers_is_not_a_layer() -> None:
    """A submodule's own >= 2-dim parameter beside child layers (ViT's pos_embedding) made the
    submodule a "layer" whose pre_* rows were its children's output (LayerNorm: std 1.0)."""
    torch.manual_seed(0)
    model = _Net()
    x, y = torch.randn(5, 4, 6), torch.randint(0, 3, (5,))
    table = dlt.probe(model, x, y, nn.CrossEntropyLoss())
    layers = table[table.layer > 0].drop_duplicates("layer")
    assert list(zip(layers.layer, layers.module)) == [(1, "inp"), (2, "encoder.fc"), (3, "head")]
    head = table[(table.module == "head") & (table.quantity == "pre_std")].value.item()
    out = model(x).detach().double()
    assert head == pytest.approx(out.std(unbiased=False).item(), rel=1e-6)
    # a custom layer whose children hold no weights stays a layer
    dense = nn.Sequential(_Dense(), nn.Linear(8, 3))
    t2 = dlt.probe(dense, torch.randn(7, 6), torch.randint(0, 3, (7,)), nn.CrossEntropyLoss())
    assert sorted(set(zip(t2.layer, t2.module)) - {(0, "")}) == [(1, "0"), (2, "1")]


def test_the_doctors_init_cures_leave_a_nested_position_table_alone() -> None:
    """The init cures took torchvision ViT's Encoder.pos_embedding (beside its blocks) for a
    weight matrix and re-initialized it (as they did a top-level one before round 16)."""
    import copy

    from depthlab.torch import prescriptions as rx
    from depthlab.torch.train import TorchTrainSpec

    torch.manual_seed(0)
    model = _Net()
    x = torch.randn(16, 4, 6)
    traced = rx.trace(model, x[:8])
    assert [t.name for t in traced] == ["inp", "encoder.fc", "head"]
    for cure in ("lsuv", "matched"):
        cured, _ = rx.apply({"init": cure}, copy.deepcopy(model), TorchTrainSpec(), x)
        assert torch.equal(cured.encoder.pos_embedding, model.encoder.pos_embedding)
        assert not torch.equal(cured.encoder.fc.weight, model.encoder.fc.weight)


class _LayerScaleBlock(nn.Module):
    """A pre-norm residual MLP block with a (1, C) LayerScale gain beside its layers."""

    def __init__(self) -> None:
        super().__init__()
        self.n, self.l1, self.l2 = nn.LayerNorm(8), nn.Linear(8, 16), nn.Linear(16, 8)
        self.gamma = nn.Parameter(torch.full((1, 8), 0.1))

    def forward(self, x):
        return x + self.gamma * self.l2(torch.relu(self.l1(self.n(x))))


def test_a_residual_blocks_2d_layerscale_gain_does_not_make_the_block_a_layer() -> None:
    """The block was a layer of its own (pre_* of its output, act rows of the next block's
    LayerNorm, block_grad_std on its own number), not the documented 'last layer inside'."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), _LayerScaleBlock(), nn.Linear(8, 3))
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    table = dlt.probe(model, x, y, nn.CrossEntropyLoss())
    block = table[table.module == "1"]
    assert list(block.quantity) == ["block_grad_std"]
    inner = table[table.module == "1.l2"].layer.iloc[0]
    assert block.layer.item() == inner
    out = {}

    def keep(module, inputs, output) -> None:
        output.register_hook(lambda g: out.update(g=g.double().std(unbiased=False).item()))

    model[1].register_forward_hook(keep)
    nn.CrossEntropyLoss()(model(x), y).backward()
    assert block.value.item() == pytest.approx(out["g"], rel=1e-6)
