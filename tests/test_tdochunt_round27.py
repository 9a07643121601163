"""Round 27 hunt of dlt.doctor: the batch-norm statistics read by the doctor (BN drift, the
population-statistics cure) on a batch norm over a sequence's features (FeatureBatchNorm,
the batch-norm cure's norm after a Linear applied to (N, T, C) inputs)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.torch import prescriptions as rx  # noqa: E402
from depthlab.torch.doctor import bn_drift  # noqa: E402
from depthlab.torch.train import population_batchnorm  # noqa: E402


class _SeqNet(nn.Module):
    """Linear layers on (N, T, C) sequences (a per-position MLP), mean over positions."""

    def __init__(self, t: int, c: int = 6) -> None:
        super().__init__()
        self.t, self.c = t, c
        self.net = nn.Sequential(nn.Linear(c, c), nn.Sigmoid(), nn.Linear(c, c), nn.Sigmoid())
        self.o = nn.Linear(c, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.o(self.net(x.view(len(x), self.t, self.c)).mean(1))


def _feature_stats(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = h.detach().double().reshape(-1, h.shape[-1])
    return flat.mean(0), flat.var(0, unbiased=False)


@pytest.mark.parametrize("t", [3, 6])  # T != C (was a RuntimeError), T == C (wrong axis)
def test_bn_statistics_of_a_feature_batch_norm_are_per_feature(t: int) -> None:
    torch.manual_seed(0)
    model = _SeqNet(t)
    x = torch.randn(64, t * 6) * 2 + 1
    assert rx.insert_batchnorm(model, x) == 2
    norms = [m for m in model.modules() if isinstance(m, rx.FeatureBatchNorm)]
    assert len(norms) == 2
    inputs: dict[nn.Module, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda m, a: inputs.setdefault(m, a[0]))
             for m in norms]
    model.train()  # as population_batchnorm's pass (one batch of 64 rows): batch statistics
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    # population statistics: per feature (last axis) over every row and position
    assert population_batchnorm(model, x) == 2
    for m in norms:
        mean, var = _feature_stats(inputs[m])
        n = inputs[m].numel() // inputs[m].shape[-1]
        torch.testing.assert_close(m.running_mean.double(), mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(m.running_var.double(), var * n / (n - 1), rtol=1e-5,
                                   atol=1e-6)
    # BN drift against running statistics set by hand: per feature too
    for m in norms:
        mean, var = _feature_stats(inputs[m])
        m.running_mean.copy_((mean + 0.5 * var.sqrt()).float())
        m.running_var.copy_((var * 4).float())
    drift = bn_drift(model, x)
    assert len(drift) == 2
    for d, m in zip(drift, norms):
        mean, var = _feature_stats(inputs[m])
        sd = (var + m.eps).sqrt()
        want_shift = float((0.5 * var.sqrt() / sd).mean())
        want_lv = float(torch.log((var * 4 + m.eps) / (var + m.eps)).abs().mean())
        assert d["mean_shift"] == pytest.approx(want_shift, rel=1e-4)
        assert d["log_var_ratio"] == pytest.approx(want_lv, rel=1e-4)


def test_the_batch_norm_cure_verifies_on_a_model_of_sequences() -> None:
    torch.manual_seed(0)
    x = torch.randn(160, 8)
    y = (x[:, 0] - x[:, 5] > 0).long()

    def make() -> nn.Module:
        m = _SeqNet(2, 4)
        m.net = nn.Sequential(*[layer for _ in range(8)
                                for layer in (nn.Linear(4, 4), nn.Sigmoid())])
        for p in m.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, 1.0)
        return m

    d = dlt.doctor(make, (x, y), optimizer=("sgd", {"lr": 0.5}), steps=20, batch_size=32,
                   verify=True, max_cures=3)  # raised RuntimeError in bn_drift
    tried = [v.prescription for v in d.verifications]
    assert {"normalization": "batchnorm"} in tried


@pytest.mark.parametrize("t", [3, 5])  # T != C: gamma was dropped; T == C: wrong axis
def test_the_norm_gradient_of_a_feature_batch_norm_is_read_before_its_per_feature_gamma(
        t: int) -> None:
    from depthlab.torch.doctor_probe import _affine_scale

    bn = rx.FeatureBatchNorm(5)
    with torch.no_grad():
        bn.weight.copy_(torch.arange(1.0, 6.0))
    out = bn(torch.randn(4, t, 5))
    gamma = _affine_scale(bn, out)
    assert gamma is not None
    scaled = torch.ones_like(out, dtype=torch.float64) * gamma  # dL/dxhat = gamma * dL/dy
    for k in range(5):
        assert bool((scaled[..., k] == k + 1).all())


def test_several_model_inputs_given_as_x_are_refused_by_what_they_are() -> None:
    x1, x2, y = torch.randn(30, 4), torch.randn(30, 4), torch.randint(0, 2, (30,))

    def make() -> nn.Module:
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

    with pytest.raises(ValueError, match=r"^x is a tuple of 2 arrays of 30 rows each; expected "
                                         r"one array or tensor x, as the doctor calls model\(x\)"):
        dlt.doctor(make, ((x1, x2), y), steps=2, verify=False)
    with pytest.raises(ValueError, match=r"^x has 30 rows \(shape \(30, 4\)\) but y has 29 "
                                         r"\(shape \(29,\)\); expected the same number of rows"):
        dlt.doctor(make, (x1, y[:29]), steps=2, verify=False)


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_a_functional_elu_of_another_alpha_is_traced_with_its_alpha(alpha: float) -> None:
    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.o = nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.o(F.elu(self.b(F.elu(self.a(x), alpha)), alpha))

    torch.manual_seed(0)
    traced = rx.trace(Net(), torch.randn(64, 16))  # was: no activation (a linear layer)
    hidden = [t for t in traced if t.name in ("a", "b")]
    assert [t.activation_name for t in hidden] == ["elu", "elu"]
    for t in hidden:
        assert rx.activation_kwargs(t.activation)["alpha"] == pytest.approx(alpha, rel=1e-6)
    assert rx.trace(nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 2)),
                    torch.randn(8, 16))[0].activation is None  # the identity: none


def test_a_namedtuple_output_is_named_with_its_article() -> None:
    import collections

    out_type = collections.namedtuple("Out", "logits hidden")

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l, self.o = nn.Linear(8, 16), nn.Linear(16, 2)

        def forward(self, x: torch.Tensor) -> tuple:
            h = torch.relu(self.l(x))
            return out_type(self.o(h), h)

    x = torch.randn(40, 8)
    with pytest.raises(ValueError, match=r"; the model returns an Out, not a tensor: give a "
                                         r"loss_fn that takes it"):
        dlt.doctor(Net, (x, (x[:, 0] > 0).long()), steps=2, verify=False)


def test_the_batch_norm_cure_keeps_frozen_layers_as_the_other_cures_do() -> None:
    from depthlab.torch.train import TorchTrainSpec

    spec = TorchTrainSpec(optimizer="sgd", lr=0.1, steps=2, batch_size=8)
    x = torch.randn(16, 8)

    def make(frozen: int) -> nn.Module:
        torch.manual_seed(0)
        m = nn.Sequential(*[layer for i in range(3) for layer in
                            (nn.Linear(8, 8), nn.Sigmoid())], nn.Linear(8, 2))
        for layer in list(m)[:2 * frozen:2]:
            layer.requires_grad_(False)  # a pretrained backbone
        return m

    m, _ = rx.apply({"normalization": "batchnorm"}, make(2), spec, x)
    kinds = [type(c).__name__ for c in m]
    assert kinds == ["Linear", "Sigmoid", "Linear", "Sigmoid", "Linear", "BatchNorm1d",
                     "Sigmoid", "Linear"]  # was a BatchNorm1d after the frozen layers too
    with pytest.raises(rx.NotApplicable, match=r"but for frozen layers \(requires_grad "
                                               r"False\), which are kept \('0', '2', '4'\)"):
        rx.apply({"normalization": "batchnorm"}, make(3), spec, x)
