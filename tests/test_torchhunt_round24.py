"""Round 24 hunt (torchhunt24): dlt.probe / dlt.Watch / dlt.predict against float64 autograd."""

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


def _relu_truth(m, x):
    """inactive_frac, dead_frac (units of the layer), act_mean, act_std of m[1] on m[0](x)."""
    with torch.no_grad():
        s = m[0](x)
        a = m[1](s)
    s, a = s.double(), a.double()
    return {"inactive_frac": (s <= 0).double().mean().item(),
            "dead_frac": (~(s > 0).any(0)).double().mean().item(),
            "act_mean": a.mean().item(), "act_std": a.std(unbiased=False).item()}


def _hooked_relu_mlp(hook: str):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
    with torch.no_grad():
        m[0].bias[:4] = -50.0  # four dead units
    handle = None
    if hook == "module":
        m[1].register_forward_hook(lambda mod, args, out: out + 0.1)
    elif hook == "global":
        handle = nn.modules.module.register_module_forward_hook(
            lambda mod, args, out: out + 0.1 if isinstance(mod, nn.ReLU) else None)
    return m, handle


@pytest.mark.parametrize("hook", ["module", "global"])
def test_a_relu_whose_output_a_user_hook_changes_is_counted_on_its_input(hook):
    # A forward hook on a ReLU (or a global one) that shifts its output: the probe counted the
    # inactive entries and live units on the shifted output (inactive_frac 0.0 where half the
    # entries are <= 0, no dead unit), and a Watch's later records took act_mean from relu(s)
    # (0.24 where the module returned 0.34): the output is not relu(input) any more.
    m, handle = _hooked_relu_mlp(hook)
    try:
        g = torch.Generator().manual_seed(5)
        x, y = torch.randn(256, 10, generator=g), torch.randint(0, 3, (256,), generator=g)
        truth = _relu_truth(m, x)
        assert 0.3 < truth["inactive_frac"] < 0.7 and truth["dead_frac"] == 4 / 32
        df = dlt.probe(m, x, y, nn.CrossEntropyLoss())
        got = df[df.layer == 1].set_index("quantity").value
        for q, v in truth.items():
            assert got[q] == pytest.approx(v, rel=1e-6, abs=1e-7), q
        opt = torch.optim.SGD(m.parameters(), lr=0.0)
        loss_fn = nn.CrossEntropyLoss()
        with dlt.Watch(m, every=1, theory=False) as watch:
            for _ in range(3):  # the second and third records take the fused path
                opt.zero_grad()
                loss = loss_fn(m(x), y)
                loss.backward()
                watch.step(loss)
                opt.step()
        w = watch.frame()
        for step in range(3):
            got = w[(w.layer == 1) & (w.step == step)].set_index("quantity").value
            for q, v in truth.items():
                assert got[q] == pytest.approx(v, rel=1e-6, abs=1e-7), (step, q)
    finally:
        if handle is not None:
            handle.remove()
