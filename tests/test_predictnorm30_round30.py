"""Round 30: dlt.predict through LayerNorm, GroupNorm and RMSNorm (after a layer, pre-norm and
post-norm residual blocks, a final norm before the head), checked against autograd; the
backward factor of a per-example norm against a Monte Carlo of torch's own norm; the refusals
that stay (InstanceNorm, attention) one line naming the module."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import depthlab.torch as dlt
from depthlab.torch import norms


class _Pre(nn.Module):
    """x + fc2(act(fc1(norm(x)))): a pre-norm transformer's MLP block."""

    def __init__(self, d, norm):
        super().__init__()
        self.ln, self.fc1, self.act, self.fc2 = norm(d), nn.Linear(d, 2 * d), nn.GELU(), \
            nn.Linear(2 * d, d)

    def forward(self, x):
        return x + self.fc2(self.act(self.fc1(self.ln(x))))


class _Post(nn.Module):
    """norm(x + fc2(relu(fc1(x)))): a post-norm block, the norm inside the block."""

    def __init__(self, d, norm):
        super().__init__()
        self.ln, self.fc1, self.fc2 = norm(d), nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        return self.ln(x + self.fc2(F.relu(self.fc1(x))))


class _Net(nn.Module):
    def __init__(self, block, norm, d=32, depth=3, final=True):
        super().__init__()
        self.emb = nn.Linear(16, d)
        self.blocks = nn.Sequential(*[block(d, norm) for _ in range(depth)])
        self.norm = norm(d) if final else nn.Identity()
        self.head = nn.Linear(d, 5)

    def forward(self, x):
        return self.head(self.norm(self.blocks(self.emb(x))).flatten(1))


def _ratios(make, x_shape, seeds=1):
    """sqrt(mean measured var / mean predicted var) of grad_pre_std per layer over seeds."""
    v, p = 0.0, 0.0
    for s in range(seeds):
        torch.manual_seed(s)
        model, x = make(), torch.randn(*x_shape).flatten(1)
        # rows of one mean square: predict runs once, not per quantile group of lengths
        x = (x / x.pow(2).mean(1, keepdim=True).sqrt()).reshape(x_shape)
        y = torch.randint(0, 5, (x_shape[0],))
        df = dlt.predict(model, x, y, nn.CrossEntropyLoss())
        g = df[df.quantity == "grad_pre_std"]
        v, p = v + g.value.to_numpy() ** 2, p + g.predicted.to_numpy() ** 2
    return np.sqrt(v / p)


@pytest.mark.parametrize("block, norm", [(_Pre, nn.LayerNorm), (_Pre, nn.RMSNorm),
                                         (_Post, nn.LayerNorm)])
def test_pre_and_post_norm_residual_stacks_are_predicted(block, norm):
    """Refused before ('starts with LayerNorm on 'emb''s output (a pre-activation block...)',
    'the output is not the plain sum'); now every layer's grad_pre_std within 7% of
    autograd's (measured 0.95-1.02x; the post-norm stack was 0.91-0.96x while the skip's
    normalized share of the sum was taken to fluctuate over examples like a fresh layer's)."""
    r = _ratios(lambda: _Net(block, norm, final=block is _Pre), (48, 16))
    assert len(r) == 2 + 2 * 3
    np.testing.assert_allclose(r, 1.0, atol=0.07)


def test_token_stack_with_final_layernorm():
    """A tiny transformer without attention: (N, T, D) tokens, pre-norm MLP blocks, a final
    LayerNorm and a head on the flattened tokens."""
    class Tok(_Net):
        def __init__(self):
            super().__init__(_Pre, nn.LayerNorm, d=16, depth=2)
            self.head = nn.Linear(4 * 16, 5)

    r = _ratios(Tok, (16, 4, 16))
    np.testing.assert_allclose(r, 1.0, atol=0.1)


@pytest.mark.parametrize("norm", [lambda c: nn.GroupNorm(4, c),
                                  lambda c: nn.GroupNorm(1, c, affine=False)])
def test_groupnorm_cnn(norm):
    """Conv -> GroupNorm -> ReLU, its gamma/beta set away from 1/0: every layer within 12%
    (refused before: "'1' is a GroupNorm")."""
    def make():
        layers = []
        for c_in in (3, 16, 16):
            gn = norm(16)
            if gn.affine:
                with torch.no_grad():
                    gn.weight.uniform_(0.5, 1.5)
                    gn.bias.uniform_(-0.3, 0.3)
            layers += [nn.Conv2d(c_in, 16, 3, padding=1), gn, nn.ReLU()]
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(16 * 8 * 8, 5))

    r = _ratios(make, (16, 3, 8, 8))
    np.testing.assert_allclose(r, 1.0, atol=0.12)


def test_layernorm_follower_forward_moments():
    """Linear -> LayerNorm(affine) -> tanh: act_std is the mixture over the units' own
    (gamma, beta) of tanh(N(beta, gamma^2 r)), checked against the measurement."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 128), nn.LayerNorm(128), nn.Tanh(), nn.Linear(128, 5))
    with torch.no_grad():
        model[1].weight.uniform_(0.2, 2.0)
        model[1].bias.uniform_(-1.0, 1.0)
    x = torch.randn(256, 32)
    df = dlt.predict(model, x, torch.randint(0, 5, (256,)), nn.CrossEntropyLoss())
    row = df[(df.layer == 1) & (df.quantity.isin(["act_std", "grad_pre_std"]))]
    np.testing.assert_allclose(row.value / row.predicted, 1.0, atol=0.05)


@pytest.mark.parametrize("fn, per_norm, centered", [
    (lambda x: F.layer_norm(x, x.shape[-1:], eps=1e-5), 1, True),
    (lambda x: F.rms_norm(x, x.shape[-1:], eps=1e-5), 1, False),
    (lambda x: F.group_norm(x, 2, eps=1e-5), 2, True)])
@pytest.mark.parametrize("n", [16, 80])
def test_backward_factor_matches_monte_carlo(fn, per_norm, centered, n):
    """E|dL/dx|^2 / E|dL/dy|^2 of torch's own norm on N(0, 1) rows against
    norms.inverse: E[(n - 1 - c + r'^2) / (n (sigma^2 + eps))] over sigma^2's chi2 (the
    large-n rule 1 / E[sigma^2] is 0.93x the LayerNorm factor at n = 16, 0.83x for the
    GroupNorm's 8 values per group)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(10_000, n, dtype=torch.float64, generator=gen).requires_grad_()
    g = torch.randn(10_000, n, dtype=torch.float64, generator=gen)
    (fn(x) * g).sum().backward()
    mc = float(x.grad.pow(2).mean())
    count = n // per_norm
    spec = norms.NormSpec("t", count, count, centered, 1e-5, (1.0,), (0.0,), (1.0,))
    np.testing.assert_allclose(mc, norms.inverse(spec, 1.0), rtol=0.03)


@pytest.mark.parametrize("model, x, fragment", [
    (nn.Sequential(nn.Linear(16, 32), nn.InstanceNorm1d(32), nn.ReLU(), nn.Linear(32, 4)),
     torch.randn(32, 16), "'1' is a InstanceNorm1d"),
    (nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.LocalResponseNorm(2), nn.Linear(16, 4)),
     torch.randn(8, 3, 8), "'2' (LocalResponseNorm)"),
])
def test_other_norms_still_refused_in_one_line(model, x, fragment):
    with pytest.raises(ValueError) as e:
        dlt.predict(model, x)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_attention_refusal_names_the_module_and_says_why():
    class Att(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.ln = nn.Linear(8, 16), nn.LayerNorm(16)
            self.att, self.head = nn.MultiheadAttention(16, 2, batch_first=True), \
                nn.Linear(16, 3)

        def forward(self, x):
            h = self.emb(x)
            a = self.ln(h)
            return self.head(h + self.att(a, a, a)[0])

    with pytest.raises(ValueError) as e:
        dlt.predict(Att(), torch.randn(4, 5, 8))
    msg = str(e.value)
    assert "'att' is a MultiheadAttention" in msg and "softmax" in msg and "\n" not in msg


def test_an_activation_after_a_post_norm_is_refused_naming_the_norm():
    """F.relu(LN(x + F(x))): refused before as 'the output is not the plain sum of the branch
    and the shortcut (a scale or another operation in between)', which did not name the norm."""
    class PostAct(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln, self.fc = nn.LayerNorm(8), nn.Linear(8, 8)

        def forward(self, x):
            return F.relu(self.ln(x + self.fc(x)))

    model = nn.Sequential(nn.Linear(4, 8), PostAct(), nn.Linear(8, 2))
    with pytest.raises(ValueError) as e:
        dlt.predict(model, torch.randn(8, 4))
    msg = str(e.value)
    assert "post-norm blocks that end with their norm" in msg and "'1.ln' (LayerNorm)" in msg
    assert "\n" not in msg
