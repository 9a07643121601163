"""Round 48 (torchhunt48): dlt.probe / dlt.Watch / dlt.predict on models nobody tried --
parametrized weights, lazy modules, frozen layers, grouped and transposed convolutions, Conv3d,
Bilinear, attention with kdim != vdim, a full nn.Transformer, recurrent layers with dropout and
packed sequences, channels_last, other dtypes -- each quantity against a direct float64
autograd computation (the reference of tests/test_torchhunt47_round47.py), a Watch's frame at
a recorded step against ``dlt.probe`` on that step's weights and batch, and ``dlt.predict``
against the measurement where a conv reads a map of per-position variances."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402

D = torch.float64
CE = nn.CrossEntropyLoss()


# ---------------------------------------------------------------------------------------------
# dlt.predict: a conv without padding reads its input's positions unevenly


def _mean_ratios(make, x_of, seeds=range(4)) -> dict[tuple[int, str], float]:
    """Measured / predicted ``pre_std`` and ``grad_pre_std`` per layer, the mean over seeds."""
    acc: dict[tuple[int, str], list[float]] = {}
    for seed in seeds:
        torch.manual_seed(seed)
        model = make()
        x, y = x_of()
        with torch.no_grad():
            model(x)  # a lazy head takes its shape
        table = dlt.predict(model, x, y, CE)
        for layer, q, v, p in zip(table.layer, table.quantity, table.value, table.predicted):
            if q in ("pre_std", "grad_pre_std") and np.isfinite(v) and p > 0:
                acc.setdefault((int(layer), q), []).append(v / p)
    return {k: float(np.mean(v)) for k, v in acc.items()}


C = 32


def _wide_images():
    return torch.randn(64, C, 12, 12), torch.randint(0, 10, (64,))


UNEVEN = {
    # a ConvTranspose's output holds 1 and 2 taps in turn (4, 2, 1 in 2-D) and nothing on its
    # output padding; a stride-2 conv without padding reads the 2-tap rows twice and the 1-tap
    # rows once: its pre_std was 1.10-1.16x the prediction, the layers below it 1.17x
    "transposed then strided": lambda: nn.Sequential(
        nn.Conv2d(C, C, 3, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(C, C, 3, stride=2, groups=2, output_padding=1), nn.ReLU(),
        nn.Conv2d(C, C, 3, stride=2), nn.Tanh(), nn.Flatten(), nn.LazyLinear(10)),
    "transposed then strided, no groups": lambda: nn.Sequential(
        nn.ConvTranspose2d(C, C, 3, stride=2), nn.ReLU(),
        nn.Conv2d(C, C, 3, stride=2), nn.Tanh(), nn.Flatten(), nn.LazyLinear(10)),
}


@pytest.mark.parametrize("name", list(UNEVEN))
def test_a_conv_without_padding_reads_the_variance_map_of_its_input(name):
    ratios = _mean_ratios(UNEVEN[name], _wide_images)
    last = max(layer for layer, _ in ratios)
    for (layer, q), r in ratios.items():
        if layer < last:  # the Linear head's pre_std: 10 outputs, noise
            assert abs(r - 1) < 0.07, (layer, q, r)


# ---------------------------------------------------------------------------------------------
# dlt.probe against float64 autograd, and a Watch's frame against dlt.probe, on new model kinds


def _stats(ts: list[torch.Tensor]) -> tuple[float, float, float]:
    """mean, population std and mean |.| of the entries of ``ts`` pooled (float64)."""
    v = torch.cat([t.detach().double().reshape(-1) for t in ts])
    return float(v.mean()), float(v.std(correction=0)), float(v.abs().mean())


def _first(out):
    """A module's output tensor: the first of a tuple, a PackedSequence's data."""
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out


def reference(model: nn.Module, x, y, names: list[str], weights: dict) -> dict:
    """``{name: {quantity: value}}``: ``pre_mean/pre_std`` of each call's output ``s``,
    ``grad_pre_std/absmean`` of ``dL/ds`` (calls pooled; absent where ``s`` has no gradient),
    ``weight_std`` and ``weight_grad_std/absmean`` of ``weights[name]`` (absent where none
    requires grad); ``{"": {"loss": L}}``."""
    outs: dict[str, list[torch.Tensor]] = {}
    handles = [model.get_submodule(n).register_forward_hook(
        lambda m, i, o, n=n: outs.setdefault(n, []).append(_first(o))) for n in names]
    try:
        loss = CE(model(*x) if isinstance(x, tuple) else model(x), y)
    finally:
        for h in handles:
            h.remove()
    calls = [t for n in names for t in outs.get(n, []) if t.requires_grad]
    trained = [w for n in names for w in weights[n] if w.requires_grad]
    grads = dict(zip(map(id, calls + trained),
                     torch.autograd.grad(loss, calls + trained, allow_unused=True)))
    table: dict = {"": {"loss": float(loss.detach())}}
    for n in names:
        row = table[n] = {}
        if outs.get(n):
            row["pre_mean"], row["pre_std"], _ = _stats(outs[n])
            gs = [grads[id(t)] for t in outs[n] if grads.get(id(t)) is not None]
            if gs:
                _, row["grad_pre_std"], row["grad_pre_absmean"] = _stats(gs)
        _, row["weight_std"], _ = _stats(weights[n])
        wg = [grads[id(w)] for w in weights[n] if grads.get(id(w)) is not None]
        if wg:
            _, row["weight_grad_std"], row["weight_grad_absmean"] = _stats(wg)
    return table


def _table(df) -> dict:
    return {(m, q): v for m, q, v in zip(df.module, df.quantity, df.value)}


def _plain(m: nn.Module) -> list:
    return [m.weight]


def _original(m: nn.Module) -> list:
    """The trainable original of a parametrized weight (weight norm: its direction v)."""
    ps = [p for p in m.parametrizations.weight.parameters(recurse=False) if p.dim() >= 2]
    return [max(ps, key=lambda p: p.numel())]


def _recurrent(m: nn.Module) -> list:
    return [p for n, p in m.named_parameters() if n.startswith("weight_")]


class Bilinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.o = nn.Linear(6, 5), nn.Bilinear(5, 6, 7), nn.Linear(7, 4)

    def forward(self, x):
        return self.o(torch.tanh(self.b(torch.relu(self.a(x)), x)))


class Packed(nn.Module):
    """Two-layer LSTM on a packed padded batch; the head reads the padded output and h_n."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm, self.o = nn.LSTM(6, 8, num_layers=2, batch_first=True), nn.Linear(8, 4)

    def forward(self, x):
        lengths = torch.tensor([7, 3, 5, 2, 6])
        p = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                              enforce_sorted=False)
        out, (h, _) = self.lstm(p)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
        return self.o(out.sum(1) + h[-1])


class BiGRU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(6, 8, num_layers=2, bidirectional=True, dropout=0.3, batch_first=True)
        self.o = nn.Linear(16, 4)

    def forward(self, x):
        return self.o(self.gru(x)[0][:, -1])


def _dense(seed: int):
    g = torch.Generator().manual_seed(100 + seed)
    return torch.randn(12, 6, generator=g, dtype=D), torch.randint(0, 4, (12,), generator=g)


def _seqs(seed: int):
    g = torch.Generator().manual_seed(200 + seed)
    return torch.randn(5, 7, 6, generator=g, dtype=D), torch.randint(0, 4, (5,), generator=g)


def _images(seed: int, c: int = 4):
    g = torch.Generator().manual_seed(300 + seed)
    return torch.randn(6, c, 7, 7, generator=g, dtype=D), torch.randint(0, 4, (6,), generator=g)


def _mlp(param=None, frozen: bool = False):
    def make():
        m = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(),
                          nn.Linear(8, 4)).double()
        if param is not None:
            param(m[2])
        if frozen:  # a frozen first layer, and the second's weight (its bias trains)
            m[0].requires_grad_(False)
            m[2].weight.requires_grad_(False)
        return m
    return make


P = nn.utils.parametrizations
KINDS = {
    # name: (factory, data, {layer: its weights})
    "orthogonal": (_mlp(P.orthogonal), _dense, {"0": _plain, "2": _original, "4": _plain}),
    "weight_norm": (_mlp(P.weight_norm), _dense, {"0": _plain, "2": _original, "4": _plain}),
    "spectral_norm": (_mlp(P.spectral_norm), _dense,
                      {"0": _plain, "2": _original, "4": _plain}),
    "frozen": (_mlp(frozen=True), _dense, {"0": _plain, "2": _plain, "4": _plain}),
    "grouped and depthwise": (
        lambda: nn.Sequential(nn.Conv2d(4, 4, 3, groups=4, padding=1), nn.ReLU(),
                              nn.Conv2d(4, 6, 3, groups=2, dilation=2), nn.Tanh(),
                              nn.Flatten(), nn.Linear(54, 4)).double(),
        _images, {"0": _plain, "2": _plain, "5": _plain}),
    "transposed groups output_padding": (
        lambda: nn.Sequential(nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2,
                                                 output_padding=1), nn.ELU(),
                              nn.Conv2d(6, 2, 3, stride=4), nn.Flatten(),
                              nn.Linear(32, 4)).double(),
        _images, {"0": _plain, "2": _plain, "4": _plain}),
    "conv3d": (
        lambda: nn.Sequential(nn.Conv3d(1, 4, 3), nn.SELU(), nn.Flatten(),
                              nn.Linear(4 * 5 * 5 * 5, 4)).double(),
        lambda s: (_images(s, 7)[0][:, None], _images(s)[1]), {"0": _plain, "3": _plain}),
    "bilinear": (lambda: Bilinear().double(), _dense,
                 {"a": _plain, "b": _plain, "o": _plain}),
    "packed lstm": (lambda: Packed().double(), _seqs, {"lstm": _recurrent, "o": _plain}),
    "bidirectional gru, dropout, eval": (lambda: BiGRU().double().eval(), _seqs,
                                         {"gru": _recurrent, "o": _plain}),
    "channels_last": (
        lambda: nn.Sequential(nn.Conv2d(4, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(),
                              nn.Linear(150, 4)).double().to(memory_format=torch.channels_last),
        lambda s: (_images(s)[0].to(memory_format=torch.channels_last), _images(s)[1]),
        {"0": _plain, "4": _plain}),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_probe_equals_float64_autograd(kind):
    make, data, weights = KINDS[kind]
    torch.manual_seed(0)
    model = make()
    x, y = data(0)
    got = _table(dlt.probe(model, x, y, CE))
    ref = reference(model, x, y, list(weights),
                    {n: w(model.get_submodule(n)) for n, w in weights.items()})
    assert math.isclose(got[("", "loss")], ref[""]["loss"], rel_tol=1e-9)
    assert {m for m, _ in got} - {""} == set(weights)
    for n in weights:
        for q, v in ref[n].items():
            assert math.isclose(got[(n, q)], v, rel_tol=1e-9, abs_tol=1e-15), (n, q)
        for q in ("grad_pre_std", "weight_grad_std"):  # absent where no gradient, not 0
            assert ((n, q) in got) == (q in ref[n]), (n, q)


def _watched(make, batches):
    """SGD (momentum 0.5) under a Watch recording every 2nd step; the frame, and the state
    and random-number state before each step's forward."""
    torch.manual_seed(0)
    model = make()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1,
                          momentum=0.5)
    states, rngs = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        watch = dlt.Watch(model, every=2, theory=False)
        for x, y in batches:
            states.append(copy.deepcopy(model.state_dict()))
            rngs.append(torch.get_rng_state())
            opt.zero_grad()
            loss = CE(model(x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
        watch.close()
    return watch.frame(), states, rngs


WATCHED = [*KINDS, "bidirectional gru, dropout, train"]


@pytest.mark.parametrize("kind", WATCHED)
def test_watch_frame_at_step_k_equals_probe_on_that_steps_weights(kind):
    if kind == "bidirectional gru, dropout, train":  # dropout draws: the same RNG state
        make, data = (lambda: BiGRU().double()), _seqs
    else:
        make, data, _ = KINDS[kind]
    batches = [data(s) for s in range(5)]
    frame, states, rngs = _watched(make, batches)
    assert sorted(set(frame.step)) == [0, 2, 4]
    for k in (2, 4):
        torch.manual_seed(0)
        model = make()
        model.load_state_dict(states[k])
        torch.set_rng_state(rngs[k])
        x, y = batches[k]
        want = _table(dlt.probe(model, x, y, CE, percentiles=()))
        rows = frame[frame.step == k]
        got = {(m, q): v for m, q, v in zip(rows.module, rows.quantity, rows.value)
               if q != "update_ratio"}
        want.pop(("", "acc"), None)  # a Watch records no accuracy (it sees no targets)
        assert got.keys() == want.keys()
        for key, v in want.items():
            assert math.isclose(got[key], v, rel_tol=1e-7, abs_tol=1e-13), (k, key)
