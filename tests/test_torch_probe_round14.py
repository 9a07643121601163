"""depthlab.torch on models and loops the earlier rounds' tests were not shown (round 14):
U-Net skips by concatenation, residual adds in place / scaled / projected, ``Upsample``,
``PixelShuffle``, ``Unflatten``, ``Fold`` between layers, mixture-of-experts routing (an expert
on an empty slice, one called twice), parametrized weights, ``F.linear`` with a module's own
Parameter, dict and keyword inputs, channels-last, batch 1, huge float32 values, and Watch
corner cases (``every`` past the run, ``step`` after ``close()``, ``step`` under ``no_grad``).
Every value is compared with a direct autograd computation in float64 (population std), and
the compiled CPU kernels' path with the torch operations' path.

Bug found this round (``test_float32_squares_that_overflow_*``): on the compiled kernels' path
a float32 block of squares that overflowed (entries beyond ~1e19; a layer output of std 6e18)
gave ``pre_std``/``act_std``/``weight_*`` NaN, where the torch operations (float64 norms) gave
6.0e18; now such a sum is taken again in float64, as one that underflows is.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.probes import accel  # noqa: E402
from depthlab.torch.accumulators import watch_kernels  # noqa: E402

CE = nn.CrossEntropyLoss()
D = torch.float64


def _pstd(v: torch.Tensor) -> float:
    return float(v.detach().double().std(unbiased=False))


def _values(frame, step: int = 0):
    return frame[frame.step == step].set_index(["layer", "quantity"]).value


@pytest.fixture
def kernels():
    wk = watch_kernels()
    if wk is None:
        pytest.skip("Numba not installed: no compiled kernels' path")
    return wk


# -- the bug: float32 squares overflowing on the kernels' path -----------------------------------

def test_float32_squares_that_overflow_in_the_kernels(kernels):
    """Each kernel's sums of float32 entries of ~1e20 (squares 1e40 > float32's 3.4e38) equal
    float64 sums: they were inf (a std then NaN)."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(2048) * 1e20).astype(np.float32)
    x64 = x.astype(np.float64)
    s1, s2, ab = kernels.sums(x)
    assert s2 == pytest.approx(float((x64 ** 2).sum()), rel=1e-9)
    assert s1 == pytest.approx(float(x64.sum()), rel=1e-6, abs=1e-6 * float(np.abs(x64).sum()))
    a = np.maximum(x, 0).reshape(64, 32, 1)
    alive = np.zeros(32, dtype=bool)
    r1, r2, z = kernels.relu_units(a, alive)
    a64 = a.astype(np.float64)
    assert r2 == pytest.approx(float((a64 ** 2).sum()), rel=1e-9)
    assert z == int((a64 <= 0).sum()) and alive.all()
    alive = np.zeros(32, dtype=bool)
    p1, p2, r1, r2, z = kernels.layer_relu(x.reshape(64, 32), alive)
    assert p2 == pytest.approx(float((x64 ** 2).sum()), rel=1e-9)
    assert r2 == pytest.approx(float((np.maximum(x64, 0) ** 2).sum()), rel=1e-9)
    g = (rng.standard_normal(2048) * 1e-3).astype(np.float32)
    w0 = (x * np.float32(0.5)).copy()
    out = kernels.weight_sums(x, g, w0, False)
    assert out[1] == pytest.approx(float((x64 ** 2).sum()), rel=1e-9)
    assert out[3] == pytest.approx(float((g.astype(np.float64) ** 2).sum()), rel=1e-9)
    assert out[5] == pytest.approx(float((w0.astype(np.float64) ** 2).sum()), rel=1e-9)
    assert out[6] == pytest.approx(float(((x64 - w0.astype(np.float64)) ** 2).sum()), rel=1e-9)


def _huge_model() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 64), nn.Tanh(),
                      nn.Linear(64, 3))
    with torch.no_grad():
        m[0].weight.mul_(1e20)
        m[0].bias.mul_(1e20)
    return m


def _huge_reference(m: nn.Module, x: torch.Tensor) -> dict:
    with torch.no_grad():
        h = m[0](x).double()
        h2 = m[2](m[1](m[0](x))).double()
    return {(1, "pre_std"): _pstd(h), (1, "pre_mean"): float(h.mean()),
            (1, "act_std"): _pstd(h.relu()), (1, "act_mean"): float(h.relu().mean()),
            (1, "weight_std"): _pstd(m[0].weight), (2, "pre_std"): _pstd(h2)}


def test_float32_squares_that_overflow_probe_and_watch(kernels):
    """A float32 layer output of std ~1e20 (2048 entries): ``pre_std``, ``act_std`` of its ReLU
    (measured from the ReLU's output at the first record, in the layer's own pass from the
    second on) and ``weight_std`` (weights of ~1e19) equal the float64 values, as on the
    torch operations' path; they were NaN."""
    x, y = torch.randn(32, 40, generator=torch.Generator().manual_seed(1)), torch.arange(32) % 3
    m = _huge_model()
    want = _huge_reference(m, x)
    got = _values(dlt.probe(m, x, y, CE, percentiles=()))
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-5), key
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    with dlt.Watch(m, every=1, theory=False) as watch:
        for _ in range(2):
            opt.zero_grad()
            loss = CE(m(x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
    for step in range(2):
        got = _values(watch.frame(), step)
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-5), (step, key)


# -- complex weights ------------------------------------------------------------------------------

class _ComplexFront(nn.Module):
    """A complex-valued linear layer, its magnitude into a real head."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Linear(4, 6, dtype=torch.cfloat)
        self.act = nn.Tanh()
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.act(self.c(x.to(torch.cfloat)).abs()))


def test_complex_weights_are_not_a_layer():
    """A module with a complex weight is no layer (only real floating-point weights are): probe
    and Watch measure the real head; both ran the model and then failed inside torch
    ('linalg.vector_norm: dtype should be complex for complex inputs, but got Double')."""
    torch.manual_seed(0)
    model = _ComplexFront()
    x, y = torch.randn(8, 4, generator=torch.Generator().manual_seed(1)), torch.arange(8) % 3
    assert [info.name for info in dlt.discover(model, x)] == ["head"]
    frame = dlt.probe(model, x, y, CE, percentiles=())
    assert frame[frame.layer > 0].module.unique().tolist() == ["head"]
    got = _values(frame)
    with torch.no_grad():
        h = model.head(model.act(model.c(x.to(torch.cfloat)).abs()))
    assert got[(1, "pre_std")] == pytest.approx(_pstd(h), rel=1e-6)
    assert got[(1, "weight_std")] == pytest.approx(_pstd(model.head.weight), rel=1e-6)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with dlt.Watch(model, every=1, theory=False) as watch:
        for _ in range(2):
            opt.zero_grad()
            loss = CE(model(x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
    assert set(watch.frame().module.dropna()) <= {"head", ""}
    assert (1, "update_ratio") in _values(watch.frame(), 1).index


# -- checked and found correct: model kinds against autograd --------------------------------------

def _reference(model: nn.Module, x, y, names: list[str]) -> dict:
    """``name -> (outputs, output gradients)`` of the modules ``names`` (every call pooled), from
    forward hooks that hand on ``out + 0`` (so an in-place change after the module does not
    reach the stashed output) and one ``autograd.grad``."""
    mods = dict(model.named_modules())
    outs: dict[str, list[torch.Tensor]] = {}
    handles = []
    for n in names:
        def hook(module, args, out, n=n):
            outs.setdefault(n, []).append(out)
            return out + 0
        handles.append(mods[n].register_forward_hook(hook))
    try:
        loss = CE(model(x), y)
    finally:
        for h in handles:
            h.remove()
    keys = [(n, t) for n in outs for t in outs[n]]
    grads = torch.autograd.grad(loss, [t for _, t in keys], allow_unused=True)
    res: dict[str, tuple[list, list]] = {}
    for (n, t), g in zip(keys, grads):
        o, gs = res.setdefault(n, ([], []))
        o.append(t.detach().reshape(-1))
        if g is not None:
            gs.append(g.reshape(-1))
    return {n: (torch.cat(o), torch.cat(g) if g else None) for n, (o, g) in res.items()}


def _matches(frame, ref: dict, blocks: tuple = (), rel: float = 1e-9) -> None:
    q = frame[frame.step == 0].set_index(["module", "quantity"]).value
    for n, (o, g) in ref.items():
        if n in blocks:
            assert q[(n, "block_grad_std")] == pytest.approx(_pstd(g), rel=rel), n
            continue
        assert q[(n, "pre_mean")] == pytest.approx(float(o.double().mean()), rel=rel, abs=1e-15)
        assert q[(n, "pre_std")] == pytest.approx(_pstd(o), rel=rel), n
        if g is not None:
            assert q[(n, "grad_pre_std")] == pytest.approx(_pstd(g), rel=rel), n
            assert q[(n, "grad_pre_absmean")] == pytest.approx(
                float(g.double().abs().mean()), rel=rel), n
    found = set(frame[frame.quantity == "block_grad_std"].module)
    assert found == set(blocks), found


class _UNet(nn.Module):
    """Encoder output concatenated into the decoder: no residual add anywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.a1 = nn.ReLU()
        self.down = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1), nn.Tanh())
        self.up = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(6, 4, 3, padding=1))
        self.c2 = nn.Conv2d(8, 4, 3, padding=1)
        self.a2 = nn.GELU()
        self.head = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        e = self.a1(self.c1(x))
        d = self.up(self.down(e))
        return self.head(self.a2(self.c2(torch.cat([e, d], 1))).flatten(1))


class _Residual(nn.Module):
    """``relu(l2(tanh(l1(x))) (+)= shortcut)``: the add in place, scaled, projected, or the
    layer's output scaled in place first."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.l1, self.act, self.l2 = nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 6)
        self.proj = nn.Linear(6, 6, bias=False)

    def forward(self, x):
        out = self.l2(self.act(self.l1(x)))
        if self.mode == "inplace":
            out += x
        elif self.mode == "scaled":
            out = out + 0.5 * x
        elif self.mode == "projected":
            out = out + self.proj(x)
        elif self.mode == "scaled_inplace":
            out *= 0.5
            out += x
        return torch.relu(out)


Y5 = torch.tensor([0, 2, 1, 1, 0])


def test_unet_concatenation_is_no_residual_block():
    torch.manual_seed(0)
    model = _UNet().double()
    x = torch.randn(5, 3, 8, 8, dtype=D, generator=torch.Generator().manual_seed(2))
    frame = dlt.probe(model, x, Y5, CE, percentiles=())
    names = ["c1", "down.1", "up.1", "c2", "head"]
    _matches(frame, _reference(model, x, Y5, names))
    with torch.no_grad():
        e = model.c1(x)
    q = _values(frame)
    assert q[(1, "act_std")] == pytest.approx(_pstd(e.relu()), rel=1e-9)
    assert q[(1, "dead_frac")] == float((e <= 0).all(3).all(2).all(0).double().mean())


@pytest.mark.parametrize("mode", ["inplace", "scaled", "projected", "scaled_inplace"])
def test_residual_adds_in_place_scaled_projected(mode):
    """Each kind of add makes a block (``block_grad_std`` = std of dL/d(block output)); a layer
    output scaled in place after its module returned keeps ``pre_*`` and ``grad_pre_*`` of the
    module's output. The block runs three times (weights shared): its calls pooled."""
    torch.manual_seed(0)
    blk = _Residual(mode)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp, self.blk, self.second, self.head = (nn.Linear(4, 6), blk,
                                                          _Residual(mode), nn.Linear(6, 3))

        def forward(self, x):
            h = self.inp(x)
            for _ in range(3):
                h = self.blk(h)
            return self.head(self.second(h))

    model = Net().double()
    x = torch.randn(5, 4, dtype=D, generator=torch.Generator().manual_seed(3))
    frame = dlt.probe(model, x, Y5, CE, percentiles=())
    names = ["inp", "blk.l1", "blk.l2", "second.l1", "second.l2", "head", "blk", "second"]
    if mode == "projected":
        names += ["blk.proj", "second.proj"]
    _matches(frame, _reference(model, x, Y5, names), blocks=("blk", "second"))


class _MoE(nn.Module):
    """Top-1 routing to three experts through one shared Tanh; which experts run is set per
    call (``route``): an expert may run on no row (skipped), on some, or on all."""

    def __init__(self) -> None:
        super().__init__()
        self.experts = nn.ModuleList(nn.Linear(6, 6) for _ in range(3))
        self.act = nn.Tanh()
        self.route = [0, 1]

    def forward(self, x):
        idx = torch.tensor([self.route[i % len(self.route)] for i in range(x.shape[0])])
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            sel = idx == e
            if sel.any():
                out = out.index_put((sel,), self.act(expert(x[sel])))
        return out + x


def test_mixture_of_experts_in_a_watch():
    """Experts that run at some recorded steps and not at others: each step's rows are that
    step's experts' (their own rows through the shared activation), an expert that did not run
    has weight rows only, its update ratio 0 while it gets no gradient; layer numbers stay."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), _MoE(), nn.Linear(6, 3)).double()
    x = torch.randn(6, 4, dtype=D, generator=torch.Generator().manual_seed(4))
    y = torch.arange(6) % 3
    routes = [[0, 1], [2], [1, 2], [0]]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    with dlt.Watch(model, every=1, theory=False, percentiles=()) as watch:
        for route in routes:
            model[1].route = route
            before = [e.weight.detach().clone() for e in model[1].experts]
            outs: dict[int, torch.Tensor] = {}
            handles = [e.register_forward_hook(
                lambda m, a, o, k=k, outs=outs: outs.__setitem__(k, o.detach().clone()))
                for k, e in enumerate(model[1].experts)]
            opt.zero_grad()
            loss = CE(model(x), y)
            loss.backward()
            for h in handles:
                h.remove()
            grads = [e.weight.grad for e in model[1].experts]
            watch.step(loss)
            opt.step()
            seen.append((outs, [None if g is None else g.clone() for g in grads], before))
    frame = watch.frame()
    numbers = frame[frame.layer > 0].groupby("module").layer.unique()
    assert all(len(v) == 1 for v in numbers)
    assert numbers["1.experts.2"][0] == 5  # first ran at step 1, after '2' (layer 4)
    for step, (outs, grads, before) in enumerate(seen):
        q = frame[frame.step == step].set_index(["module", "quantity"]).value
        for k in range(3):
            n = f"1.experts.{k}"
            if k in outs:
                o = outs[k]
                assert q[(n, "pre_std")] == pytest.approx(_pstd(o), rel=1e-9)
                assert q[(n, "act_std")] == pytest.approx(_pstd(torch.tanh(o)), rel=1e-9)
                assert q[(n, "weight_grad_std")] == pytest.approx(_pstd(grads[k]), rel=1e-9)
            else:
                assert (n, "pre_std") not in q.index and (n, "weight_grad_std") not in q.index
            if step:
                prev = seen[step - 1][2][k]
                want = float((before[k] - prev).norm() / prev.norm())
                assert q[(n, "update_ratio")] == pytest.approx(want, rel=1e-9, abs=1e-15)


def test_layers_between_upsample_pixelshuffle_unflatten_fold():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.Unflatten(1, (4, 2, 2)), nn.Conv2d(4, 8, 1), nn.PixelShuffle(2),
        nn.Conv2d(2, 3, 3, padding=1), nn.Sigmoid(), nn.Upsample(scale_factor=2, mode="bilinear"),
        nn.Flatten(1), nn.Unflatten(1, (12, 16)), nn.Fold((8, 8), (2, 2), stride=2),
        nn.Conv2d(3, 2, 1), nn.Flatten(), nn.Linear(128, 3)).double()
    x = torch.randn(5, 8, dtype=D, generator=torch.Generator().manual_seed(5))
    frame = dlt.probe(model, x, Y5, CE, percentiles=())
    _matches(frame, _reference(model, x, Y5, ["0", "2", "4", "10", "12"]))
    q = _values(frame)
    assert (1, "act_std") not in q.index  # an Unflatten between: no follower
    with torch.no_grad():
        s = model[4](model[3](model[2](model[1](model[0](x)))))
    assert q[(3, "act_std")] == pytest.approx(_pstd(torch.sigmoid(s)), rel=1e-9)


class _ConvResidual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.bn = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.r1, self.c2 = nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, h):
        out = self.c2(self.r1(self.bn(self.c1(h))))
        out += h
        return torch.relu(out)


class _Mixed(nn.Module):
    """A channels-last conv stem, an in-place residual block with batch norm and in-place ReLU,
    two wide layers into one shared ReLU (both outputs made before either goes in), a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.r0 = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()
        self.block = _ConvResidual()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.a, self.b, self.shared = nn.Linear(8, 600), nn.Linear(8, 600), nn.ReLU()
        self.head = nn.Linear(600, 3)

    def forward(self, x):
        z = self.pool(self.block(self.r0(self.stem(x)))).flatten(1)
        p, q = self.a(z), self.b(z)
        return self.head(self.shared(p) + self.shared(q))


def _watched(monkeypatch, torch_ops: bool, percentiles: tuple):
    with monkeypatch.context() as mp:
        if torch_ops:
            mp.setattr(accel, "kernels", lambda: None)
        torch.manual_seed(0)
        model = _Mixed().to(memory_format=torch.channels_last)
        g = torch.Generator().manual_seed(6)
        x = torch.randn(8, 3, 10, 10, generator=g).to(memory_format=torch.channels_last)
        y = torch.arange(8) % 3
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        with dlt.Watch(model, every=1, theory=False, percentiles=percentiles) as watch:
            for _ in range(3):
                opt.zero_grad()
                loss = CE(model(x), y)
                loss.backward()
                watch.step(loss)
                opt.step()
        return watch.frame().set_index(["step", "layer", "quantity"]).value, model


@pytest.mark.parametrize("percentiles", [(), (5, 50, 95)])
def test_kernels_path_equals_torch_operations_path(kernels, monkeypatch, percentiles):
    """The compiled CPU kernels and the torch operations give the same rows (to 1e-6) over
    three recorded steps (without percentiles the ReLUs after Linear layers are measured in
    their layer's pass from the second record on), and training is the same."""
    fast, m1 = _watched(monkeypatch, False, percentiles)
    ops, m2 = _watched(monkeypatch, True, percentiles)
    assert set(fast.index) == set(ops.index)
    for key in fast.index:
        assert fast[key] == pytest.approx(ops[key], rel=1e-6, abs=1e-9), key
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))
    assert {"block_grad_std", "update_ratio", "dead_frac", "inactive_frac"} <= set(
        fast.index.get_level_values(2))


@pytest.mark.parametrize("torch_ops", [False, True], ids=["kernels", "torch-ops"])
def test_nan_entries_rows_as_the_readme_says(monkeypatch, torch_ops):
    """A NaN entry is no error nor warning: that tensor's mean and std rows are NaN, its
    percentiles NumPy's rule over the values sorted with NaN last, and a NaN entry is neither
    inactive nor saturated, its unit alive (README, torch section); the same on both paths."""
    if torch_ops:
        monkeypatch.setattr(accel, "kernels", lambda: None)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.Sigmoid(),
                          nn.Linear(6, 3))
    with torch.no_grad():
        model[0].weight[2] = float("nan")  # unit 2: NaN on every row (and after it, all NaN)
        model[0].bias[3] = -1e3  # unit 3: dead
    x, y = torch.randn(8, 4, generator=torch.Generator().manual_seed(8)), torch.arange(8) % 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = _values(dlt.probe(model, x, y, CE, percentiles=(0, 50, 100)))
    with torch.no_grad():
        h = model[0](x)
    for key in ("pre_mean", "pre_std", "act_mean", "act_std", "pre_p100", "grad_pre_std"):
        assert math.isnan(q[(1, key)]), key
    v = np.sort(h.double().numpy().ravel())  # NaN last
    assert q[(1, "pre_p0")] == v[0]
    assert q[(1, "pre_p50")] == pytest.approx(float(v[23] + 0.5 * (v[24] - v[23])), rel=1e-12)
    assert q[(1, "inactive_frac")] == float((h <= 0).double().mean())  # NaN: not <= 0
    assert q[(1, "dead_frac")] == 1 / 6  # unit 3 only: the NaN unit is alive
    assert q[(2, "saturated_frac")] == 0.0 and q[(2, "dead_frac")] == 0.0
    assert math.isnan(q[(2, "act_std")]) and math.isnan(q[(0, "loss")])
