"""Round 34c (holder34c): a module owning a weight beside child layers is a layer when its
forward uses that weight as a linear map (a LoRA's frozen F.linear, CLIP's ``x @ self.proj``),
told by a TorchFunctionMode in the first armed pass; one whose parameters are only added
(ViT's position table) is none, as 7b596bf made it."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


class _LoRALinear(nn.Module):
    def __init__(self, i: int, o: int, r: int = 2) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(o, i) / i**0.5, requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(o), requires_grad=False)
        self.lora_A = nn.Linear(i, r, bias=False)
        self.lora_B = nn.Linear(r, o, bias=False)
        nn.init.normal_(self.lora_B.weight, std=0.1)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias) + self.lora_B(self.lora_A(x))


def _lora():
    torch.manual_seed(0)
    m = nn.Sequential(_LoRALinear(6, 8), nn.ReLU(), _LoRALinear(8, 8), nn.Tanh(),
                      nn.Linear(8, 3)).double()
    with torch.no_grad():
        m[0].bias[0] = -50.0  # a dead unit: dead_frac 1/8
    return m, torch.randn(16, 6, dtype=torch.float64), torch.randint(0, 3, (16,))


def _std(t):
    return t.std(unbiased=False).item()


def test_lora_linear_is_a_layer_with_its_relu_rows():
    m, x, y = _lora()
    df = dlt.probe(m, x, y, nn.CrossEntropyLoss(), percentiles=())
    got = {(r.module, r.quantity): r.value for r in df.itertuples()}
    assert df[["layer", "module"]].drop_duplicates().values.tolist() == [
        [0, ""], [1, "0.lora_A"], [2, "0.lora_B"], [3, "0"], [4, "2.lora_A"], [5, "2.lora_B"],
        [6, "2"], [7, "4"]]
    h0 = m[0](x)
    h0.retain_grad()
    a0 = m[1](h0)
    h2 = m[2](a0)
    h2.retain_grad()
    a2 = m[3](h2)
    nn.CrossEntropyLoss()(m[4](a2), y).backward()
    ref = {("0", "pre_mean"): h0.mean().item(), ("0", "pre_std"): _std(h0),
           ("0", "act_mean"): a0.mean().item(), ("0", "act_std"): _std(a0),
           ("0", "dead_frac"): 0.125, ("0", "inactive_frac"): (h0 <= 0).double().mean().item(),
           ("0", "grad_pre_std"): _std(h0.grad),
           ("0", "grad_pre_absmean"): h0.grad.abs().mean().item(),
           ("0", "weight_std"): _std(m[0].weight),
           ("2", "pre_std"): _std(h2), ("2", "act_std"): _std(a2),
           ("2", "saturated_frac"): ((1 - a2 ** 2) < 0.05).double().mean().item(),
           ("2", "grad_pre_std"): _std(h2.grad), ("2", "weight_std"): _std(m[2].weight)}
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
    assert ("0", "weight_grad_std") not in got  # frozen
    assert [i.name for i in dlt.discover(m, x)] == ["0.lora_A", "0.lora_B", "0", "2.lora_A",
                                                    "2.lora_B", "2", "4"]


class _Visual(nn.Module):
    """OpenAI CLIP's ``visual``: a position table added, its output ``x @ self.proj``."""

    def __init__(self) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(4, 8) * 0.02)
        self.fc = nn.Linear(8, 8)
        self.proj = nn.Parameter(torch.randn(8, 5) * 8 ** -0.5)

    def forward(self, x):
        return torch.tanh(self.fc(x + self.positional_embedding))[:, 0] @ self.proj


class _Encoder(nn.Module):
    """torchvision's ViT ``Encoder``: only a position table added (no layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.randn(1, 4, 8) * 0.02)
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(x + self.pos_embedding)


class _Clip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = _Encoder()
        self.visual = _Visual()
        self.act = nn.ReLU()
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        return self.head(self.act(self.visual(self.enc(x))))


def test_clip_visual_proj_is_a_layer_position_tables_are_not():
    torch.manual_seed(1)
    m = _Clip().double()
    x = torch.randn(6, 4, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    df = dlt.probe(m, x, y, nn.CrossEntropyLoss(), percentiles=())
    assert df[["layer", "module"]].drop_duplicates().values.tolist() == [
        [0, ""], [1, "enc.fc"], [2, "visual.fc"], [3, "visual"], [4, "head"]]
    got = {(r.module, r.quantity): r.value for r in df.itertuples()}
    out = m.visual(m.enc(x))
    assert got["visual", "weight_std"] == pytest.approx(_std(m.visual.proj), rel=1e-9)
    assert got["visual", "pre_std"] == pytest.approx(_std(out), rel=1e-9)
    assert got["visual", "act_mean"] == pytest.approx(out.relu().mean().item(), rel=1e-9)
    infos = {i.name: i for i in dlt.weight_modules(m)}  # known a layer from now on
    assert "enc" not in infos and [tuple(w.shape) for w in infos["visual"].weights] == [(8, 5)]


def test_watch_rows_of_a_lora_layer_over_steps():
    m, x, y = _lora()
    m[0].bias.data[0] = 0.0
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    w = dlt.Watch(m, every=1, percentiles=())
    seen = []
    for _ in range(3):
        with torch.no_grad():  # no module called: the reference is not in the watched pass
            lo = m[0]
            h = F.linear(x, lo.weight, lo.bias) + x @ lo.lora_A.weight.T @ lo.lora_B.weight.T
        seen.append((_std(h), _std(lo.weight)))
        opt.zero_grad()
        loss = nn.CrossEntropyLoss()(m(x), y)
        loss.backward()
        w.step(loss)
        opt.step()
    df = w.frame()
    rows = df[df.module == "0"]
    assert set(rows.layer) == {3}
    for step, (pre_std, w_std) in enumerate(seen):
        at = {r.quantity: r.value for r in rows[rows.step == step].itertuples()}
        assert at["pre_std"] == pytest.approx(pre_std, rel=1e-9)
        assert at["weight_std"] == pytest.approx(w_std, rel=1e-9)
        assert "act_std" in at and "dead_frac" in at
    w.close()


def test_plain_models_get_no_mode():
    from depthlab.torch.hooks import Recording

    rec = Recording(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), ())
    assert rec._holders == {}
    assert not any(f is rec._holder_post for _, _, f in rec._hook_plan())


def test_watch_of_clip_visual_measures_proj_gradients_and_updates():
    torch.manual_seed(1)
    m = _Clip().double()
    x = torch.randn(6, 4, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    w = dlt.Watch(m, every=1, percentiles=())
    ref = []
    for _ in range(3):
        before = m.visual.proj.detach().clone()
        opt.zero_grad()
        loss = nn.CrossEntropyLoss()(m(x), y)
        loss.backward()
        ref.append((_std(m.visual.proj.grad), None))
        w.step(loss)
        opt.step()
        ref[-1] = (ref[-1][0], ((m.visual.proj - before).norm() / before.norm()).item())
    assert "visual" in [info.name for info, _ in w._weights]  # its weights watched too
    w.close()
    df = w.frame()
    rows = df[df.module == "visual"]
    for step in range(3):
        at = {r.quantity: r.value for r in rows[rows.step == step].itertuples()}
        assert at["weight_grad_std"] == pytest.approx(ref[step][0], rel=1e-9)
        if step:
            assert at["update_ratio"] == pytest.approx(ref[step - 1][1], rel=1e-9)
    with pytest.raises(ValueError, match="layer 'visual' is a _Visual"):
        dlt.predict(_Clip().double(), x)
