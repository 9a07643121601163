"""Round 22 (torchprobe22): depthlab.torch's probes against the same quantities computed
independently in the test (own forward hooks, torch.autograd.grad, float64)."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import depthlab.torch as dlt


def _pooled_reference(model: nn.Module, loss_of) -> dict[tuple[str, str], float]:
    """pre_std, pre_p50 and grad_pre_std of every Linear of ``model`` over all its calls in
    ``loss_of(model)``, by forward hooks that keep each output (handing on a copy) and
    ``torch.autograd.grad`` of the loss with respect to them (float64)."""
    outs: dict[str, list[torch.Tensor]] = {}

    def keep(name):
        def hook(module, args, out):
            outs.setdefault(name, []).append(out)
            return out.clone()
        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in model.named_modules()
               if isinstance(m, nn.Linear)]
    try:
        loss = loss_of(model)
    finally:
        for h in handles:
            h.remove()
    flat = [(n, t) for n, ts in outs.items() for t in ts]
    grads = torch.autograd.grad(loss, [t for _, t in flat], allow_unused=True)
    ref = {}
    for name, ts in outs.items():
        v = torch.cat([t.detach().reshape(-1) for t in ts]).numpy()
        ref[(name, "pre_std")] = v.std()
        ref[(name, "pre_p50")] = np.percentile(v, 50)
        g = [gr.reshape(-1) for (n, _), gr in zip(flat, grads) if n == name and gr is not None]
        ref[(name, "grad_pre_std")] = torch.cat(g).std(unbiased=False).item()
    return ref


def _wgan_gp(order: str):
    """A WGAN-GP critic loss: the gradient penalty on interpolates (its own forward, graded by
    ``torch.autograd.grad(..., create_graph=True)``) computed before (``"gp_first"``, as the
    paper's algorithm and most code do) or after the real and fake forwards."""
    g = torch.Generator().manual_seed(1)
    real = torch.randn(32, 4, dtype=torch.float64, generator=g)
    fake = torch.randn(32, 4, dtype=torch.float64, generator=g) * 2 + 1
    eps = torch.rand(32, 1, dtype=torch.float64, generator=g)

    def penalty(m):
        interp = (eps * real + (1 - eps) * fake).requires_grad_(True)
        (gx,) = torch.autograd.grad(m(interp).sum(), interp, create_graph=True)
        return ((gx.norm(2, dim=1) - 1) ** 2).mean()

    def loss_of(m):
        if order == "gp_first":
            gp = penalty(m)
            return m(fake).mean() - m(real).mean() + 10 * gp
        wasserstein = m(fake).mean() - m(real).mean()
        return wasserstein + 10 * penalty(m)

    return loss_of


def test_a_gradient_penalty_forward_before_the_real_and_fake_ones_is_pooled_with_them(tmp_path):
    """The interpolates' forward, graded by the penalty's create_graph backward before the
    next forward began, was taken for a closed pass (as a micro-batch of gradient accumulation)
    and left out of the rows, although the loss's backward runs through it: pre_std 1.022
    where the three calls' is 0.948, layer '0' grad_pre_std 0.00129 vs autograd's 0.00278.
    Computed after the real and fake forwards it was pooled: the order must not matter."""
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 16), nn.LeakyReLU(0.2),
                           nn.Linear(16, 1)).double()
    frames = {}
    for order in ("gp_first", "gp_last"):
        loss_of = _wgan_gp(order)
        ref = _pooled_reference(critic, loss_of)
        opt = torch.optim.SGD(critic.parameters(), lr=0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no 'several backward passes' warning either
            with dlt.Watch(critic, every=2, theory=False, percentiles=(50,),
                           out=tmp_path / order) as w:
                for _ in range(3):
                    opt.zero_grad()
                    loss = loss_of(critic)
                    loss.backward()
                    w.step(loss)
                    opt.step()
        df = w.frame()
        assert sorted(df.step.unique()) == [0, 2]
        for step in (0, 2):
            got = df[df.step == step].set_index(["module", "quantity"]).value
            for key, want in ref.items():
                assert abs(got[key] - want) <= 1e-9 * abs(want), (order, step, key, got[key], want)
        frames[order] = df
    a, b = (frames[o].set_index(["step", "module", "quantity"]).value for o in frames)
    assert (a - b).abs().max() < 1e-12


class _Res(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 6)
        self.act = nn.Tanh()

    def forward(self, x):
        return x + self.act(self.lin(x))


class _CheckpointedBlocks(nn.Module):
    """Two residual blocks, each run through ``checkpoint(..., use_reentrant=False)``, the
    first on the raw data (no gradient), then a head; ``ck=False`` runs them plainly."""

    def __init__(self):
        super().__init__()
        self.ck = True
        self.blk = _Res()
        self.blk2 = _Res()
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        for blk in (self.blk, self.blk2):
            x = checkpoint(blk, x, use_reentrant=False) if self.ck else blk(x)
        return self.head(x)


def test_a_checkpointed_residual_block_on_the_raw_data_has_its_block_grad_std_row(tmp_path):
    """The residual-block search gives a block whose input has no gradient (the raw data) a
    copy that requires grad; under checkpoint's saved-tensor hooks it was skipped (the copy
    changed what the forward saved, and the recomputation, without it, raised
    CheckpointError), so the first block got no block_grad_std row in dlt.probe or a Watch.
    Both now have it, equal to the plain model's and to autograd's dL/d(block output)."""
    torch.manual_seed(0)
    model = _CheckpointedBlocks().double()
    plain = copy.deepcopy(model)
    plain.ck = False
    x, y = torch.randn(16, 6, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)

    out = {}
    h = plain.blk.register_forward_hook(lambda m, a, o: out.setdefault("blk", o))
    loss = nn.functional.mse_loss(plain(x), y)
    h.remove()
    (g,) = torch.autograd.grad(loss, out["blk"])
    want = g.std(unbiased=False).item()

    got = dlt.probe(model, x, y, nn.MSELoss())
    ref = dlt.probe(plain, x, y, nn.MSELoss())
    key = ["module", "quantity"]
    assert got.set_index(key).value.loc[("blk", "block_grad_std")] == pytest.approx(want, 1e-12)
    assert list(got.set_index(key).index) == list(ref.set_index(key).index)
    assert (got.value - ref.value).abs().max() < 1e-12

    trained = copy.deepcopy(model)
    opt = torch.optim.SGD(trained.parameters(), lr=0.0)
    with dlt.Watch(trained, every=1, theory=False, out=tmp_path / "w") as w:
        for _ in range(2):
            opt.zero_grad()
            loss = nn.functional.mse_loss(trained(x), y)
            loss.backward()
            w.step(loss)
            opt.step()
    rows = w.frame().query("module == 'blk' and quantity == 'block_grad_std'")
    assert rows.step.tolist() == [0, 1]
    assert rows.value.to_numpy() == pytest.approx([want, want], rel=1e-12)


def test_predict_uses_the_weights_of_a_deprecated_weight_norm_after_load_state_dict():
    """``torch.nn.utils.weight_norm`` (and ``spectral_norm``), the deprecated API, keep the
    computed ``weight`` as a plain attribute that their pre-hook refreshes at each forward;
    after ``load_state_dict`` it still held the constructed model's weights and predict's
    theory used them (layer '2' pre_std predicted 0.276 where the measurement is 0.817). The
    prediction now equals that of a plain model with the weights the next forward computes,
    and the attribute is left as found."""
    torch.manual_seed(0)
    x, y = torch.randn(128, 20, dtype=torch.float64), torch.randint(0, 3, (128,))

    def make(wrap):
        m = nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                          nn.Linear(32, 3)).double()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            wrap(m[2])
        return m

    for wrap in (nn.utils.weight_norm, nn.utils.spectral_norm):
        trained = make(wrap)
        with torch.no_grad():
            for p in trained.parameters():
                p.mul_(1.5 if p.dim() > 1 else 3.0)  # weight_norm's g is 2-dim, v too
        trained(x)  # its own weight attribute and spectral norm's vectors are current
        model = make(wrap)
        model.load_state_dict(trained.state_dict())
        stale = model[2].weight
        plain = make(lambda m: None)
        plain.load_state_dict({k: v for k, v in trained.state_dict().items()
                               if k.count("_") == 0 or not k.startswith("2.")}, strict=False)
        ahead = make(wrap)
        ahead.load_state_dict(trained.state_dict())
        ahead(x)  # the weight its next forward computes (spectral norm: one more iteration)
        with torch.no_grad():
            plain[2].weight.copy_(ahead[2].weight)
        got = dlt.predict(model, x, y, nn.CrossEntropyLoss())
        want = dlt.predict(plain, x, y, nn.CrossEntropyLoss())
        key = ["module", "quantity"]
        a = got.set_index(key).predicted.dropna()
        b = want.set_index(key).predicted.dropna()
        assert list(a.index) == list(b.index)
        assert ((a - b).abs() / b.abs()).max() < 1e-3, (wrap.__name__, a, b)
        assert model[2].weight is stale
