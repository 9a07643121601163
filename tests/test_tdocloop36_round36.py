"""tdocloop36: a layer applied several times per forward (weight sharing in a loop) is as
many steps of the torch doctor's gradient path as it has calls."""

from __future__ import annotations

import copy
import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.torch.gradient_path import parallel_layers, pooled_factor  # noqa: E402


class Looped(nn.Module):
    """input layer, then ONE sigmoid layer applied ``k`` times, then the output layer."""

    def __init__(self, k: int = 4, width: int = 16) -> None:
        super().__init__()
        self.k = k
        self.inp = nn.Linear(8, width)
        self.h = nn.Linear(width, width)
        self.out = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.sigmoid(self.inp(x))
        for _ in range(self.k):
            h = torch.sigmoid(self.h(h))
        return self.out(h)


class Unrolled(nn.Module):
    """The same depth without sharing: five sigmoid layers of their own."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.inp = nn.Linear(8, width)
        self.hs = nn.ModuleList(nn.Linear(width, width) for _ in range(4))
        self.out = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.sigmoid(self.inp(x))
        for layer in self.hs:
            h = torch.sigmoid(layer(h))
        return self.out(h)


def _data(n: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def _vanishing(model_cls: type[nn.Module], steps: int = 10):
    d = dlt.doctor(model_cls, _data(), loss_fn=nn.CrossEntropyLoss(),
                   optimizer=("sgd", {"lr": 0.1}), steps=steps, batch_size=32, seed=0,
                   verify=False)
    return next(f for f in d.findings if f.kind == "vanishing_gradients")


def test_graph_counts_the_calls_of_a_shared_layer() -> None:
    from depthlab.torch import prescriptions as rx

    model = Looped(k=3)
    layers = rx.trace(model, torch.randn(5, 8))
    graph = parallel_layers(model, torch.randn(5, 8), layers)
    assert graph.calls == {"inp": 1, "h": 3, "out": 1}


def test_depth_counts_applications_of_the_shared_layer() -> None:
    f = _vanishing(Looped)
    ev = f.evidence
    assert ev["n_hidden"] == 5  # inp + 4 applications of h (was 2: one per module)
    # the per-application factor: the ratio spread over the 4 steps between the readings,
    # the shared layer's reading pooling its 4 calls (was the ratio itself, "per layer")
    assert ev["per_layer_factor"] == pytest.approx(pooled_factor(ev["ratio"], 1, 4, 5),
                                                   rel=1e-9)
    assert ev["ratio"] ** (1 / 4) < ev["per_layer_factor"] < 0.1 * ev["ratio"]
    assert "applied 4 times" in f.message
    assert "per application" in f.message
    assert "the 5 hidden applications (layer 2 applied 4 times) span" in f.message


def test_unshared_model_unchanged() -> None:
    f = _vanishing(Unrolled)
    assert f.evidence["n_hidden"] == 5
    assert "per layer:" in f.message and "applied" not in f.message
    assert f.evidence["per_layer_factor"] == pytest.approx(
        f.evidence["ratio"] ** (1 / 4), rel=1e-9)
    assert math.isfinite(f.evidence["metric"])


def test_pooled_factor_inverts_the_pooling_of_calls() -> None:
    # a path of 5 applications: layer (pos 0) + a layer applied 4 times (pos 1..4), q = 2.3
    q, n = 2.3, 5
    last = math.sqrt(sum(q ** (2 * p) for p in range(1, 5)) / 4)
    assert pooled_factor(last, 1, 4, n) == pytest.approx(q, rel=1e-9)
    first = math.sqrt(sum(q ** (2 * p) for p in range(3)) / 3)  # shared layer first
    assert pooled_factor(q ** 4 / first, 3, 1, n) == pytest.approx(q, rel=1e-9)
    shrink = math.sqrt(sum(q ** (-2 * p) for p in range(1, 5)) / 4)  # exploding: 1 / q
    assert pooled_factor(shrink, 1, 4, n) == pytest.approx(1 / q, rel=1e-9)
    assert pooled_factor(7.0, 1, 1, 3) == 7.0 ** 0.5
    assert math.isnan(pooled_factor(7.0, 3, 3, 5))  # the ends overlap: no reading


class _Copies(nn.Module):
    """:class:`Looped`'s initial weights with the 4 applications untied: per-call readings."""

    def __init__(self) -> None:
        super().__init__()
        tied = Looped()
        self.inp, self.out = tied.inp, tied.out
        self.hs = nn.ModuleList(copy.deepcopy(tied.h) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.sigmoid(self.inp(x))
        for layer in self.hs:
            h = torch.sigmoid(layer(h))
        return self.out(h)


def test_factor_per_application_matches_the_untied_copies_at_init() -> None:
    tied, untied = _vanishing(Looped, steps=1), _vanishing(_Copies, steps=1)
    # the same weights at step 0 (one step of training after): the untied copies read each
    # call; the tied layer's reading pools its 4 calls (about half the last call's here),
    # which pooled_factor undoes
    assert untied.evidence["ratio"] > 1.5 * tied.evidence["ratio"]
    assert tied.evidence["per_layer_factor"] == pytest.approx(
        untied.evidence["per_layer_factor"], rel=0.05)


class _Siamese(nn.Module):
    """One encoder applied to the two halves of a hidden vector: in parallel, not in series."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 16), nn.Linear(16, 16)
        self.enc = nn.Sequential(nn.Linear(8, 8), nn.Sigmoid())
        self.c, self.out = nn.Linear(16, 16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.sigmoid(self.b(torch.sigmoid(self.a(x))))
        h = torch.cat([self.enc(h[:, :8]), self.enc(h[:, 8:])], 1)
        return self.out(torch.sigmoid(self.c(h)))


def test_a_layer_shared_in_parallel_is_one_step() -> None:
    from depthlab.torch import prescriptions as rx

    model, x = _Siamese(), torch.randn(5, 8)
    assert parallel_layers(model, x, rx.trace(model, x)).calls["enc.0"] == 1  # was 2
    f = _vanishing(_Siamese)
    assert f.evidence["n_hidden"] == 4 and "applied" not in f.message  # was 5 applications
