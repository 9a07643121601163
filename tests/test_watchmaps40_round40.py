"""Round 40 (watchmaps40): a ``Watch`` has the probe's map layers (weights used as linear maps
that no module's output tells) with the same numbers and rows; training is unchanged."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from helpers.torchmodels import ParameterListMaps, TiedEmbeddingHead  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import depthlab.torch as dlt  # noqa: E402

D = torch.float64
CE = nn.CrossEntropyLoss()


class _RootWeight(nn.Module):
    """(a) the model's own weight as ``F.linear`` (then changed in place) beside a head."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 5, dtype=D) / 5 ** 0.5)
        self.head = nn.Linear(8, 3, dtype=D)

    def forward(self, x):
        return self.head(F.linear(x, self.weight).tanh_())


class _Dense(nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(n_in, n_out, dtype=D) / n_in ** 0.5)
        self.b = nn.Parameter(torch.full((n_out,), 0.2, dtype=D))

    def forward(self, x):
        return torch.relu(x @ self.W + self.b)


class _Cell(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.W1 = nn.Parameter(torch.randn(6, 6, dtype=D) / 6 ** 0.5)
        self.W2 = nn.Parameter(torch.randn(6, 3, dtype=D) / 6 ** 0.5)

    def forward(self, x):
        return torch.tanh(x @ self.W1) @ self.W2


class _Custom(nn.Module):
    """(d) user-class layers: ``relu(x @ W + b)`` and one module mapping two matrices."""

    def __init__(self) -> None:
        super().__init__()
        self.d1 = _Dense(5, 6)
        self.fc = nn.Linear(6, 6, dtype=D)
        self.c = _Cell()

    def forward(self, x):
        return self.c(torch.tanh(self.fc(self.d1(x))))


class _Lookup(TiedEmbeddingHead):
    """An embedding table used by its lookup alone (then a Linear head): no map layer."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 3, dtype=D)

    def forward(self, t):
        return self.head(torch.tanh(self.fc(self.emb(t)))).mean(1)


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 8, dtype=D), nn.ReLU(), nn.Linear(8, 3, dtype=D))


MODELS = {"root": _RootWeight, "held": ParameterListMaps, "tied": TiedEmbeddingHead,
          "custom": _Custom, "lookup": _Lookup, "mlp": _mlp}


def _batch(kind: str, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    x = (torch.randint(0, 5, (12, 4), generator=g) if kind in ("tied", "lookup")
         else torch.randn(12, 5, dtype=D, generator=g))
    return x, torch.randint(0, 3, (12,), generator=g)


def _train(kind: str, every: int | None, steps: int = 3):
    """SGD steps; with ``every``: a Watch, and the probe of a copy at each recorded step."""
    torch.manual_seed(7)
    model = MODELS[kind]()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    watch = dlt.Watch(model, every=every, theory=False) if every else None
    probes, losses = {}, []
    for step in range(steps):
        x, y = _batch(kind, step)
        if watch is not None and step % every == 0:
            probes[step] = dlt.probe(copy.deepcopy(model), x, y, CE, percentiles=())
        opt.zero_grad()
        loss = CE(model(x), y)
        loss.backward()
        losses.append(loss.detach().clone())
        if watch is not None:
            watch.step(loss)
        opt.step()
    params = [p.detach().clone() for p in model.parameters()]
    return watch, probes, losses, params


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("every", [1, 2])
def test_watch_rows_are_the_probes_and_training_is_unchanged(kind: str, every: int) -> None:
    watch, probes, losses, params = _train(kind, every)
    _, _, losses0, params0 = _train(kind, None)
    for a, b in zip(losses + params, losses0 + params0):  # bit-identical to the unwatched twin
        assert torch.equal(a, b)
    df = watch.frame()
    assert sorted(probes) == sorted(df.step.unique())
    for step, pr in probes.items():
        wr = df[(df.step == step) & (df.quantity != "update_ratio")]
        got = {(r.layer, r.module, r.quantity): r.value for r in wr.itertuples()}
        want = {(r.layer, r.module, r.quantity): r.value for r in pr.itertuples()
                if r.quantity != "acc"}  # (a Watch sees the loss only)
        layers_w = sorted({(k[0], k[1]) for k in got})
        layers_p = sorted({(k[0], k[1]) for k in want})
        assert layers_w == layers_p
        assert sorted(got) == sorted(want)
        keys = sorted(want)
        np.testing.assert_allclose([got[k] for k in keys], [want[k] for k in keys],
                                   rtol=1e-9, atol=1e-300, err_msg=f"{kind} step {step}")


def test_the_capture_holds_no_graph_and_is_off_where_nothing_is_mapped() -> None:
    """The kept map outputs are detached and dropped at the record; a model whose loose
    weights turned out not to be mapped (an embedding's lookup alone) has the capture off;
    standard models have none at all."""
    from depthlab.torch import hooks

    torch.manual_seed(1)
    model = _RootWeight()
    watch = dlt.Watch(model, every=1, theory=False)
    x, y = _batch("root", 0)
    loss = CE(model(x), y)
    maps = watch._rec.p.maps
    assert maps and all(s.grad_fn is None for _, s, _ in maps)
    loss.backward()
    watch.step(loss)
    assert watch._rec.p.maps is None and watch._rec._cap is None
    lookup = _Lookup()
    watch = dlt.Watch(lookup, every=1, theory=False)
    for step in range(2):
        t, y = _batch("lookup", step)
        loss = CE(lookup(t), y)
        loss.backward()
        watch.step(loss)
    assert watch._rec._map_keys == {} and watch._rec.p.maps is None
    assert not watch._rec.mapped
    for std in (_mlp(), nn.TransformerEncoderLayer(8, 2, 16, batch_first=True),
                nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2)), nn.GRU(3, 4)):
        rec = hooks.Recording(std, (), maps=True)  # standard layers: no capture, no hook
        assert rec._map_keys == {} and rec._cap is None
        assert all(post != rec._maps_post for _, _, post in rec._hook_plan())


@pytest.mark.parametrize("kind", ["custom", "held"])
def test_the_general_collect_gives_the_host_paths_map_rows(kind: str, monkeypatch) -> None:
    """The map layers come the same from the CPU kernels' host path and the general path."""
    from depthlab.torch import hooks

    host = _train(kind, 1)[0].frame()
    monkeypatch.setattr(hooks.Recording, "_collect_host", lambda self, *args: None)
    general = _train(kind, 1)[0].frame()
    assert list(host.module) == list(general.module) and list(host.layer) == list(general.layer)
    np.testing.assert_allclose(host.value, general.value, rtol=1e-12)
