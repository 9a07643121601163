"""Round 49 (torchhunt49): dlt.probe / dlt.Watch / dlt.predict on models nobody tried -- a
model that computes its loss inside ``forward`` (``loss_fn=None``), layers followed by an
``nn.Upsample``/``F.interpolate`` before their activation, custom autograd Functions, a user's
own hooks, pruning, embeddings with ``padding_idx``/``sparse=True``, hand-looped cells, Watch
lifecycles -- each against a direct float64 autograd computation (the reference of
tests/test_torchhunt48_round48.py) or a one-line refusal."""

from __future__ import annotations

import collections
import copy
import dataclasses
import math
import warnings

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.nn.utils import prune  # noqa: E402

import depthlab.torch as dlt  # noqa: E402

D = torch.float64
CE = nn.CrossEntropyLoss()


def _stats(ts: list[torch.Tensor]) -> tuple[float, float, float]:
    """mean, population std and mean |.| of the entries of ``ts`` pooled (float64)."""
    v = torch.cat([(t.to_dense() if t.is_sparse else t).detach().double().reshape(-1)
                   for t in ts])
    return float(v.mean()), float(v.std(correction=0)), float(v.abs().mean())


def _first(out):
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out


def _call(model, x):
    if isinstance(x, tuple):
        return model(*x)
    if isinstance(x, dict):
        return model(**x)
    return model(x)


def reference(model: nn.Module, x, y, weights: dict, loss_fn=CE) -> dict:
    """``{name: {quantity: value}}`` by float64 autograd: ``pre_mean/pre_std`` of each call's
    output ``s`` of the layer ``name``, ``grad_pre_std/absmean`` of ``dL/ds`` (calls pooled),
    ``weight_std`` and ``weight_grad_std/absmean`` of ``weights[name]`` (a sparse gradient
    as its dense table); ``{"": {"loss": L}}``; ``loss_fn=None``: the output is the loss."""
    names = list(weights)
    outs: dict[str, list[torch.Tensor]] = {}
    handles = [model.get_submodule(n).register_forward_hook(
        lambda m, i, o, n=n: outs.setdefault(n, []).append(_first(o))) for n in names]
    try:
        out = _call(model, x)
        loss = out if loss_fn is None else loss_fn(out, y)
        loss = loss["loss"] if isinstance(loss, dict) else getattr(loss, "loss", loss)
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


def _assert_matches(got: dict, ref: dict, rel: float = 1e-9) -> None:
    assert math.isclose(got[("", "loss")], ref[""]["loss"], rel_tol=rel)
    assert {m for m, _ in got} - {""} == set(ref) - {""}
    for n, row in ref.items():
        if not n:
            continue
        for q, v in row.items():
            assert math.isclose(got[(n, q)], v, rel_tol=rel, abs_tol=1e-15), (n, q)
        for q in ("grad_pre_std", "weight_grad_std"):  # absent where no gradient, not 0
            assert ((n, q) in got) == (q in row), (n, q)


# ---------------------------------------------------------------------------------------------
# loss_fn=None: the model computes its loss inside forward (Hugging Face style)

Output = collections.namedtuple("Output", "loss logits")


@dataclasses.dataclass
class DataOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None


class LossInside(nn.Module):
    """Returns its cross-entropy loss when given labels: as a scalar, a dict, a namedtuple or
    a dataclass (``transformers``' ModelOutput is a dict with attributes)."""

    def __init__(self, form: str) -> None:
        super().__init__()
        self.a, self.c, self.form = nn.Linear(6, 8), nn.Linear(8, 4), form

    def forward(self, x, labels=None):
        logits = self.c(torch.tanh(self.a(x)))
        if labels is None:
            return logits
        loss = F.cross_entropy(logits, labels)
        if self.form == "scalar":
            return loss
        if self.form == "dict":
            return {"logits": logits, "loss": loss}
        if self.form == "namedtuple":
            return Output(loss, logits)
        return DataOutput(logits, loss)


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(12, 6, generator=g, dtype=D), torch.randint(0, 4, (12,), generator=g)


@pytest.mark.parametrize("form", ["scalar", "dict", "namedtuple", "dataclass"])
def test_loss_fn_none_takes_the_loss_the_model_returns(form):
    # dlt.probe refused it: "loss_fn must be callable (output, y) -> scalar tensor, got
    # NoneType", with no way to probe a model whose forward computes its loss
    torch.manual_seed(0)
    model = LossInside(form).double()
    x, y = _batch()
    batch = {"x": x, "labels": y}
    weights = {"a": [model.a.weight], "c": [model.c.weight]}
    ref = reference(model, batch, None, weights, loss_fn=None)
    _assert_matches(_table(dlt.probe(model, batch)), ref)
    _assert_matches(_table(dlt.probe(model, batch, None, None)), ref)
    _assert_matches(_table(dlt.probe(model, (x, y), loss_fn=None)), ref)


def test_loss_fn_none_refuses_an_output_without_a_loss_and_unread_targets():
    torch.manual_seed(0)
    model = LossInside("dict").double()
    x, y = _batch()
    with pytest.raises(ValueError, match=r"^loss_fn is None, so the model must return its "
                                         r"loss, but it returned a tensor of shape \(12, 4\);"):
        dlt.probe(model, x)  # no labels: logits
    with pytest.raises(ValueError, match=r"^y is given \(a tensor of shape \(12,\)\) but "
                                         r"loss_fn is None"):
        dlt.probe(model, {"x": x, "labels": y}, y)


# ---------------------------------------------------------------------------------------------
# a layer whose output is upsampled before its activation: act_* of the activation it reaches


class Upsampled(nn.Module):
    """``conv -> [norm] -> upsample -> act`` by an ``nn.Upsample`` module or by
    ``F.interpolate`` in the forward; records the activation's input and output."""

    def __init__(self, act: nn.Module, mode: str = "nearest", functional: bool = False,
                 norm: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4) if norm else nn.Identity()
        self.up = nn.Upsample(scale_factor=2, mode=mode)
        self.act, self.functional, self.mode = act, functional, mode
        self.head = nn.Linear(4 * 100, 4)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x):
        h = self.norm(self.conv(x))
        u = F.interpolate(h, scale_factor=2, mode=self.mode) if self.functional else self.up(h)
        a = self.act(u)
        self.seen.append((u.detach().clone(), a.detach().clone()))
        return self.head(a.flatten(1))


def _linear_percentile(v: torch.Tensor, q: float) -> float:
    return float(torch.quantile(v.reshape(-1), q / 100, interpolation="linear"))


def _act_reference(model: Upsampled, x, derivative, bounded: bool) -> dict:
    model.seen.clear()
    with torch.no_grad():
        model(x)
    (u, a), = model.seen
    d = derivative(u).abs()
    row = {"act_mean": float(a.mean()), "act_std": float(a.std(correction=0)),
           "dead_frac": float((d.amax(dim=(0, 2, 3)) == 0).double().mean())}
    row.update({f"act_p{q:g}": _linear_percentile(a, q) for q in (2, 15, 50, 85, 98)})
    if bounded:
        row["saturated_frac"] = float((d < 0.05 * 1.0).double().mean())
    else:
        row["inactive_frac"] = float((u <= 0).double().mean())
    return row


def _relu_grad(u):
    return (u > 0).to(u.dtype)


def _tanh_grad(u):
    return 1 - torch.tanh(u) ** 2


UPSAMPLED = {
    # name: (model factory, derivative, bounded)
    "Upsample nearest, ReLU": (lambda: Upsampled(nn.ReLU()), _relu_grad, False),
    "Upsample bilinear, Tanh": (lambda: Upsampled(nn.Tanh(), "bilinear"), _tanh_grad, True),
    "BatchNorm, Upsample, ReLU": (lambda: Upsampled(nn.ReLU(), norm=True), _relu_grad, False),
    "F.interpolate nearest, ReLU": (lambda: Upsampled(nn.ReLU(), functional=True), _relu_grad,
                                    False),
    "F.interpolate bicubic, Tanh": (lambda: Upsampled(nn.Tanh(), "bicubic", functional=True),
                                    _tanh_grad, True),
}


@pytest.mark.parametrize("name", list(UPSAMPLED))
def test_a_layer_upsampled_before_its_activation_has_the_activations_rows(name):
    # Conv -> nn.Upsample / F.interpolate -> activation: the conv had no act_*, dead_frac,
    # inactive_frac or saturated_frac rows (the activation reads a new tensor)
    make, derivative, bounded = UPSAMPLED[name]
    torch.manual_seed(0)
    model = make().double()
    with torch.no_grad():  # one dead channel, and tanh units driven into saturation
        model.conv.bias[0] = -50.0
        model.conv.weight[1] *= 8.0
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 3, 5, 5, generator=g, dtype=D), torch.randint(0, 4, (6,), generator=g)
    got = _table(dlt.probe(model, x, y, CE))
    want = _act_reference(model, x, derivative, bounded)
    if name.startswith("BatchNorm"):  # (train mode: its dead channel is no longer dead)
        want.pop("dead_frac")
        assert got[("conv", "dead_frac")] == 0.0
    else:
        assert want["dead_frac"] == 0.25  # (tanh(-50) is -1.0: f' is 0 there too)
    for q, v in want.items():
        assert math.isclose(got[("conv", q)], v, rel_tol=1e-9, abs_tol=1e-12), q
    weights = {"conv": [model.conv.weight], "head": [model.head.weight]}
    ref = reference(model, x, y, weights)
    for n, row in ref.items():
        for q, v in row.items():
            assert math.isclose(got[(n, q) if n else ("", q)], v, rel_tol=1e-9), (n, q)


@pytest.mark.parametrize("name", ["Upsample nearest, ReLU", "F.interpolate bicubic, Tanh"])
def test_watch_frame_of_an_upsampled_layer_equals_probe(name):
    make = UPSAMPLED[name][0]
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randn(6, 3, 5, 5, generator=g, dtype=D),
                torch.randint(0, 4, (6,), generator=g)) for _ in range(3)]
    torch.manual_seed(0)
    model = make().double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    states = []
    with dlt.Watch(model, every=2, theory=False) as watch:
        for x, y in batches:
            states.append(copy.deepcopy(model.state_dict()))
            opt.zero_grad()
            loss = CE(model(x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
    frame = watch.frame()
    model.load_state_dict(states[2])
    want = _table(dlt.probe(model, *batches[2], CE, percentiles=()))
    want.pop(("", "acc"))
    rows = frame[frame.step == 2]
    got = {(m, q): v for m, q, v in zip(rows.module, rows.quantity, rows.value)
           if q != "update_ratio"}
    assert ("conv", "act_std") in got and ("conv", "dead_frac") in got
    assert got.keys() == want.keys()
    for key, v in want.items():
        assert math.isclose(got[key], v, rel_tol=1e-9, abs_tol=1e-13), key


# ---------------------------------------------------------------------------------------------
# coverage: new model kinds against float64 autograd, and a Watch's frame against dlt.probe


class _Clip(torch.autograd.Function):
    """A custom Function with its own backward (not the derivative of its forward)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(-1, 1) * 2

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 2 * (x.abs() < 1) + 0.1 * g


class Three(nn.Module):
    def __init__(self, custom: bool = False) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 4)
        self.custom = custom

    def forward(self, x):
        h = self.a(x)
        h = _Clip.apply(h) if self.custom else torch.relu(h)
        return self.c(torch.tanh(self.b(h)))


def _user_hooked() -> nn.Module:
    m = Three().double()
    m.b.register_forward_hook(lambda mod, i, o: o * 3 + 1)  # changes the output
    m.c.register_forward_pre_hook(lambda mod, i: (i[0] * 0.5,))  # changes the input
    m.a.register_full_backward_hook(lambda mod, gi, go: None)
    return m


def _pruned() -> nn.Module:
    m = Three().double()
    prune.l1_unstructured(m.b, "weight", amount=0.5)
    return m


class Bag(nn.Module):
    def __init__(self, **kw) -> None:
        super().__init__()
        self.e, self.o = nn.EmbeddingBag(20, 8, padding_idx=0, **kw), nn.Linear(8, 4)

    def forward(self, t):
        return self.o(torch.relu(self.e(t)))


class Tokens(nn.Module):
    def __init__(self, **kw) -> None:
        super().__init__()
        self.e, self.l, self.o = nn.Embedding(20, 8, **kw), nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, t):
        return self.o(torch.tanh(self.l(self.e(t))).mean(1))


class CellLoop(nn.Module):
    """An LSTMCell driven by hand over the time steps (the cell pooled over its calls)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.cell, self.o = nn.Linear(6, 8), nn.LSTMCell(8, 8), nn.Linear(8, 4)

    def forward(self, x):
        h = c = torch.zeros(x.shape[0], 8, dtype=x.dtype)
        for t in range(x.shape[1]):
            h, c = self.cell(torch.relu(self.inp(x[:, t])), (h, c))
        return self.o(h)


def _ids(seed: int):
    g = torch.Generator().manual_seed(400 + seed)
    t = torch.randint(0, 20, (6, 5), generator=g)
    t[:, -1] = 0  # padding
    return t, torch.randint(0, 4, (6,), generator=g)


def _seqs(seed: int):
    g = torch.Generator().manual_seed(500 + seed)
    return torch.randn(6, 5, 6, generator=g, dtype=D), torch.randint(0, 4, (6,), generator=g)


def _signal(seed: int):
    g = torch.Generator().manual_seed(600 + seed)
    return torch.randn(6, 3, 10, generator=g, dtype=D), torch.randint(0, 4, (6,), generator=g)


def _plain(m):
    return [m.weight]


def _cell(m):
    return [m.weight_ih, m.weight_hh]


KINDS = {
    # name: (factory, data, {layer: its weights})
    "custom autograd Function": (lambda: Three(custom=True).double(), _batch,
                                 {"a": _plain, "b": _plain, "c": _plain}),
    "user hooks": (_user_hooked, _batch, {"a": _plain, "b": _plain, "c": _plain}),
    "pruned (weight_orig)": (_pruned, _batch,
                             {"a": _plain, "b": lambda m: [m.weight_orig], "c": _plain}),
    "Embedding padding_idx": (lambda: Tokens(padding_idx=0).double(), _ids,
                              {"e": _plain, "l": _plain, "o": _plain}),
    "Embedding sparse": (lambda: Tokens(sparse=True).double(), _ids,
                         {"e": _plain, "l": _plain, "o": _plain}),
    "EmbeddingBag max": (lambda: Bag(mode="max").double(), _ids, {"e": _plain, "o": _plain}),
    "Conv1d same reflect/circular": (
        lambda: nn.Sequential(nn.Conv1d(3, 5, 4, padding="same", padding_mode="reflect"),
                              nn.GELU(), nn.Conv1d(5, 5, 3, padding="same", dilation=2,
                                                   padding_mode="circular"),
                              nn.Tanh(), nn.Flatten(), nn.Linear(50, 4)).double(),
        _signal, {"0": _plain, "2": _plain, "5": _plain}),
    "hand-looped LSTMCell": (lambda: CellLoop().double(), _seqs,
                             {"inp": _plain, "cell": _cell, "o": _plain}),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_probe_equals_float64_autograd(kind):
    make, data, weights = KINDS[kind]
    torch.manual_seed(0)
    model = make()
    x, y = data(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (a full backward hook on inputs without grad)
        got = _table(dlt.probe(model, x, y, CE))
        ref = reference(model, x, y, {n: w(model.get_submodule(n)) for n, w in weights.items()})
    _assert_matches(got, ref)


def test_the_users_hooks_stay_in_place_and_working():
    torch.manual_seed(0)
    model = _user_hooked()
    calls = []
    model.a.register_full_backward_hook(lambda mod, gi, go: calls.append(1))
    before = {n: (dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks))
              for n, m in model.named_modules()}
    x, y = _batch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dlt.probe(model, x, y, CE)
        assert calls == [1]  # the probe's backward ran the user's backward hook once
        with dlt.Watch(model, every=1, theory=False) as watch:
            loss = CE(model(x), y)
            loss.backward()
            watch.step(loss)
        after = {n: (dict(m._forward_hooks), dict(m._forward_pre_hooks),
                     dict(m._backward_hooks)) for n, m in model.named_modules()}
        assert after == before
        calls.clear()
        out = model(x)
        CE(out, y).backward()
    assert calls == [1]
    with torch.no_grad():  # the forward hook and pre-hook still change what the model computes
        h = model.b(torch.relu(model.a(x)))
        assert torch.equal(out, model.c(torch.tanh(h)))
        raw = torch.tanh(nn.functional.linear(torch.relu(model.a(x)), model.b.weight,
                                              model.b.bias) * 3 + 1) * 0.5
        assert torch.allclose(out, nn.functional.linear(raw, model.c.weight, model.c.bias))


def _watched(make, batches, every: int = 2):
    torch.manual_seed(0)
    model = make()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.5)
    states = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with dlt.Watch(model, every=every, theory=False) as watch:
            for x, y in batches:
                states.append(copy.deepcopy(model.state_dict()))
                opt.zero_grad()
                loss = CE(model(x), y)
                loss.backward()
                watch.step(loss)
                opt.step()
    return watch.frame(), states


@pytest.mark.parametrize("kind", ["custom autograd Function", "user hooks",
                                  "pruned (weight_orig)", "Embedding sparse",
                                  "hand-looped LSTMCell"])
def test_watch_frame_at_step_k_equals_probe_on_that_steps_weights(kind):
    make, data, _ = KINDS[kind]
    batches = [data(s) for s in range(3)]
    frame, states = _watched(make, batches)
    torch.manual_seed(0)
    model = make()
    model.load_state_dict(states[2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = _table(dlt.probe(model, *batches[2], CE, percentiles=()))
    want.pop(("", "acc"), None)
    rows = frame[frame.step == 2]
    got = {(m, q): v for m, q, v in zip(rows.module, rows.quantity, rows.value)
           if q != "update_ratio"}
    assert got.keys() == want.keys()
    for key, v in want.items():
        assert math.isclose(got[key], v, rel_tol=1e-7, abs_tol=1e-13), key


def test_gradient_accumulation_rows_are_the_last_micro_batch_and_the_summed_grad():
    # README: with a backward per micro-batch the layer rows are the last micro-batch's and
    # weight_grad_* the accumulated .grad
    torch.manual_seed(0)
    model = Three().double()
    micro = [_batch(s) for s in range(4)]
    state = copy.deepcopy(model.state_dict())
    with dlt.Watch(model, every=1, theory=False) as watch:
        total = 0.0
        for x, y in micro:
            loss = CE(model(x), y) / 4
            loss.backward()
            total += float(loss.detach())
        watch.step(total)
    frame = watch.frame()
    got = {(m, q): v for m, q, v in zip(frame.module, frame.quantity, frame.value)}
    twin = Three().double()
    twin.load_state_dict(state)
    weights = {n: [twin.get_submodule(n).weight] for n in ("a", "b", "c")}
    last = reference(twin, *micro[-1], weights, loss_fn=lambda o, y: CE(o, y) / 4)
    summed = reference(twin, torch.cat([b[0] for b in micro]),
                       torch.cat([b[1] for b in micro]), weights)
    for n in weights:
        for q in ("pre_mean", "pre_std", "grad_pre_std", "grad_pre_absmean"):
            assert math.isclose(got[(n, q)], last[n][q], rel_tol=1e-9), (n, q)
        for q in ("weight_grad_std", "weight_grad_absmean"):
            assert math.isclose(got[(n, q)], summed[n][q], rel_tol=1e-9), (n, q)
