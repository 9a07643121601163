"""Round 29 (modernnets29): depthlab.torch on the architectures trained today, built from
torch.nn only (rotary attention, SwiGLU, RMSNorm, tied embeddings, LayerScale, MobileNet/SE
blocks, a UNet-ish skip concatenation)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import depthlab.torch as dlt  # noqa: E402


def _rotate(t: torch.Tensor) -> torch.Tensor:
    """Rotary embedding applied functionally: (a, b) -> (a cos - b sin, a sin + b cos)."""
    n = t.shape[-2]
    ang = torch.arange(n, dtype=t.dtype)[:, None] * torch.ones(t.shape[-1] // 2, dtype=t.dtype)
    c, s = ang.cos(), ang.sin()
    a, b = t[..., ::2], t[..., 1::2]
    return torch.stack([a * c - b * s, a * s + b * c], -1).flatten(-2)


class _RotaryAttention(nn.Module):
    """q/k/v projections, rotary q and k, scaled_dot_product_attention, output projection; no
    skip connection: its output is not added to its input."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.o = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k = _rotate(self.q(x)), _rotate(self.k(x))
        return self.o(F.scaled_dot_product_attention(q, k, self.v(x)))


class _PreNormBlock(nn.Module):
    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(d)
        self.attn = _RotaryAttention(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(self.norm(x))


def test_rotary_add_inside_attention_is_not_a_residual_block() -> None:
    """The rotary ``a sin + b cos`` adds two terms that both depend on the module's input, but
    the module's output is not its input plus something: no block_grad_std row for it; the
    pre-norm block around it (x + attn(norm(x))) still is a residual block."""
    torch.manual_seed(0)
    model = nn.Sequential(_RotaryAttention(), nn.Linear(8, 3))
    x, y = torch.randn(2, 5, 8), torch.randn(2, 5, 3)
    df = dlt.probe(model, x, y, nn.MSELoss())
    assert df[df.quantity == "block_grad_std"].empty
    model = nn.Sequential(_PreNormBlock(), nn.Linear(8, 3))
    df = dlt.probe(model, x, y, nn.MSELoss())
    rows = df[df.quantity == "block_grad_std"]
    assert list(rows.module) == ["0"]


def test_relu6_inactive_side_is_not_saturation() -> None:
    """ReLU6 is flat on both sides: s <= 0 is its inactive side (inactive_frac), as for ReLU
    ("an inactive ReLU is not saturated", the NumPy probes); only s >= 6 is saturated. The
    zero side was counted in saturated_frac too (0.60 = inactive_frac on a MobileNet stem with
    no entry near 6), and the doctor called a plain ReLU6 MLP 'saturation'."""
    torch.manual_seed(0)
    lin = nn.Linear(6, 32)
    model = nn.Sequential(lin, nn.ReLU6(), nn.Linear(32, 2)).double()
    with torch.no_grad():
        lin.weight.mul_(20.0)
    x = torch.randn(64, 6, dtype=torch.float64)
    y = torch.randint(0, 2, (64,))
    df = dlt.probe(model, x, y, nn.CrossEntropyLoss())
    s = model[0](x)
    row = df[df.module == "0"].set_index("quantity").value
    assert row["saturated_frac"] == pytest.approx(float((s >= 6).double().mean()))
    assert row["inactive_frac"] == pytest.approx(float((s <= 0).double().mean()))
    assert 0 < row["saturated_frac"] < row["inactive_frac"] + row["saturated_frac"] < 1

    X = torch.randn(128, 20)
    Y = (X[:, 0] > 0).long()

    def make() -> nn.Module:
        return nn.Sequential(nn.Linear(20, 32), nn.ReLU6(), nn.Linear(32, 32), nn.ReLU6(),
                             nn.Linear(32, 2))
    d = dlt.doctor(make, (X, Y), loss_fn=nn.CrossEntropyLoss(), optimizer=("sgd", {"lr": 0.1}),
                   steps=10, batch_size=32, seed=0, verify=False)
    assert "saturation" not in {f.kind for f in d.findings}, d.findings
