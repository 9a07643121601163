"""Round 32 (torchmodels32b): dlt.probe / dlt.Watch on architectures the other tests do not
use (LoRA-style parametrizations, ...), every number against a direct autograd computation."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import depthlab.torch as dlt  # noqa: E402


class _LoRA(nn.Module):
    """A low-rank adapter as a parametrization: the layer uses W + B A, W frozen."""

    def __init__(self, out_f: int, in_f: int, r: int = 2) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.randn(r, in_f) * 0.1)
        self.B = nn.Parameter(torch.randn(out_f, r) * 0.1)

    def forward(self, w):
        return w + self.B @ self.A


def _pooled(ts):
    return torch.cat([t.detach().double().reshape(-1) for t in ts])


def test_a_lora_parametrization_on_a_frozen_weight_is_measured_by_its_trainable_adapter():
    # the rows were of the frozen original: weight_std constant, update_ratio 0.0 at every
    # step and no weight_grad rows, while the weight the layer uses (W + B A) was trained
    from torch.nn.utils import parametrize

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    parametrize.register_parametrization(model[0], "weight", _LoRA(16, 4))
    model[0].parametrizations.weight.original.requires_grad_(False)
    lora = model[0].parametrizations.weight[0]
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    seen = []
    with dlt.Watch(model, every=1, theory=False) as watch:
        for _ in range(2):
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            seen.append((_pooled([lora.A, lora.B]), _pooled([lora.A.grad, lora.B.grad])))
            watch.step(loss)
            opt.step()
    fr = watch.frame()
    rows = fr[fr.module == "0"].set_index(["step", "quantity"]).value
    for step, (w, g) in enumerate(seen):
        assert rows[(step, "weight_std")] == pytest.approx(w.std(unbiased=False).item(), rel=1e-5)
        assert rows[(step, "weight_grad_std")] == pytest.approx(g.std(unbiased=False).item(),
                                                                rel=1e-5)
    want = ((seen[1][0] - seen[0][0]).norm() / seen[0][0].norm()).item()
    assert want > 1e-3 and rows[(1, "update_ratio")] == pytest.approx(want, rel=1e-5)
    df = dlt.probe(model, x, y, loss_fn)  # the probe's rows are the same tensors'
    got = df[df.module == "0"].set_index("quantity").value
    assert got["weight_std"] == pytest.approx(_pooled([lora.A, lora.B]).std(unbiased=False).item(),
                                              rel=1e-5)
    assert "weight_grad_std" in got


class _PeftLinear(nn.Module):
    """PEFT's LoRA wrapper of a frozen Linear: base(x) + B(A(dropout(x))) * scale, a
    re-parametrized linear map (W + s B A) x, not a residual block."""

    def __init__(self, in_f: int, out_f: int, r: int = 2) -> None:
        super().__init__()
        self.base = nn.Linear(in_f, out_f).requires_grad_(False)
        self.lora_A = nn.Linear(in_f, r, bias=False)
        self.lora_B = nn.Linear(r, out_f, bias=False)
        self.drop = nn.Dropout(0.0)

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(self.drop(x))) * 0.5


class _Projection(nn.Module):
    """A residual block whose shortcut is a projection: relu(W2 relu(W1 x)) + P x."""

    def __init__(self, in_f: int, out_f: int) -> None:
        super().__init__()
        self.l1, self.l2, self.sc = nn.Linear(in_f, out_f), nn.Linear(out_f, out_f), \
            nn.Linear(in_f, out_f)

    def forward(self, x):
        return self.l2(F.relu(self.l1(x))) + self.sc(x)


def test_a_lora_wrapper_adding_two_linear_paths_is_no_residual_block():
    # base(x) + B A x was taken for a residual block (both operands of the add depend on x
    # after a matrix product, as with a projection shortcut): block_grad_std rows for '0'
    # and '2'; a projection-shortcut block with a non-linear branch keeps its row
    torch.manual_seed(0)
    model = nn.Sequential(_PeftLinear(8, 16), nn.ReLU(), _PeftLinear(16, 16), nn.Tanh(),
                          _Projection(16, 8), nn.Linear(8, 3))
    x, y = torch.randn(8, 8), torch.randint(0, 3, (8,))
    df = dlt.probe(model, x, y, nn.CrossEntropyLoss())
    blocks = df[df.quantity == "block_grad_std"]
    assert list(blocks.module) == ["4"]
    h = model[3](model[2](model[1](model[0](x)))).detach()
    out = model[4](h)
    out.retain_grad()
    nn.CrossEntropyLoss()(model[5](out), y).backward()
    want = out.grad.double().std(unbiased=False).item()
    assert blocks.value.item() == pytest.approx(want, rel=1e-5)
