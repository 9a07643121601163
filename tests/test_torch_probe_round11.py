"""depthlab.torch on models and loops the earlier rounds' tests were not shown: recurrent cells
called in a loop under a Watch with gradient accumulation, non-reentrant activation
checkpointing (hooks run again in the backward's recomputation), a CPU ``GradScaler`` with a
skipped (inf) step, sparse embedding gradients, channels-last and non-contiguous weights, a
model moved to float64 after the Watch was attached, and the errors for weights the probes
cannot see (used functionally, in a ``ParameterList``, or owned by a model with submodules).

Every recorded value is compared with a direct computation (my own forward hooks and tensor
hooks on the same training forward, population statistics in float64), and training with a
Watch is compared bit for bit with the same training without one."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.utils.checkpoint import checkpoint  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.probes.stats import PERCENTILES  # noqa: E402

F = nn.functional
CE = nn.CrossEntropyLoss()
D = torch.float64


def _pstd(v: torch.Tensor) -> float:
    return float(v.std(unbiased=False))


class _Tap:
    """Reference hooks: per layer (number -> module name) the outputs (first tensor) and their
    gradients of every call since :meth:`reset`, flattened, in float64."""

    def __init__(self, model: nn.Module, names: dict[int, str]) -> None:
        self.model, self.names = model, names
        mods = dict(model.named_modules())
        self.handles = [mods[n].register_forward_hook(self._hook(i)) for i, n in names.items()]
        self.reset()

    def _hook(self, i):
        def f(module, args, out):
            t = out if isinstance(out, torch.Tensor) else out[0]
            self.outs[i].append(t.detach().double().reshape(-1).clone())
            if t.requires_grad:
                t.register_hook(lambda g: self.grads[i].append(g.detach().double().reshape(-1)))
        return f

    def reset(self) -> None:
        self.outs = {i: [] for i in self.names}
        self.grads = {i: [] for i in self.names}

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def weights(self) -> dict[int, torch.Tensor]:
        mods = dict(self.model.named_modules())
        return {i: torch.cat([p.detach().double().reshape(-1) for p in
                              mods[n].parameters(recurse=False) if p.dim() >= 2])
                for i, n in self.names.items()}

    def expected(self, loss, before: dict[int, torch.Tensor] | None = None,
                 grad_scale: float = 1.0, weight_grad_scale: float = 1.0) -> dict:
        """``(layer, quantity) -> value`` of the pass since :meth:`reset` (gradient rows
        divided by ``grad_scale``, ``weight_grad_*`` by ``weight_grad_scale``)."""
        mods = dict(self.model.named_modules())
        want = {(0, "loss"): loss.item()}
        now = self.weights()
        for i, n in self.names.items():
            if self.outs[i]:
                s = torch.cat(self.outs[i])
                want[(i, "pre_mean")], want[(i, "pre_std")] = float(s.mean()), _pstd(s)
            if self.grads[i]:
                g = torch.cat(self.grads[i]) / grad_scale
                want[(i, "grad_pre_std")] = _pstd(g)
                want[(i, "grad_pre_absmean")] = float(g.abs().mean())
            want[(i, "weight_std")] = _pstd(now[i])
            gs = [p.grad for p in mods[n].parameters(recurse=False)
                  if p.dim() >= 2 and p.grad is not None]
            if gs:
                g = torch.cat([(q.to_dense() if q.is_sparse else q).double().reshape(-1)
                               for q in gs]) / weight_grad_scale
                want[(i, "weight_grad_std")] = _pstd(g)
                want[(i, "weight_grad_absmean")] = float(g.abs().mean())
            if before is not None:
                want[(i, "update_ratio")] = float((now[i] - before[i]).norm() / before[i].norm())
        return want


def _check(frame, step: int, want: dict, rel: float = 1e-6) -> None:
    got = frame[frame.step == step].set_index(["layer", "quantity"]).value
    for key, value in want.items():
        assert key in got.index, (step, key)
        assert got[key] == pytest.approx(value, rel=rel, abs=1e-12), (step, key)


def _train(make, batches, steps, every, *, watch=True, names=None, accum=1, opt=None,
           fwd=None, scaler=None, **watch_kw):
    """The user's loop; returns (losses, parameters, frame, expected rows per recorded step)."""
    torch.manual_seed(0)
    model = make()
    optim = (opt or (lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9)))(model.parameters())
    w = dlt.Watch(model, every=every, theory=False, **watch_kw) if watch else None
    tap = _Tap(model, names) if names else None
    before = tap.weights() if tap else None
    losses, want = [], {}
    for n in range(steps):
        optim.zero_grad()
        for k in range(accum):
            if tap:
                tap.reset()  # the layer rows are the last micro-batch's
            x, y = batches(n * accum + k)
            loss = CE((fwd or (lambda m, v: m(v)))(model, x), y) / accum
            loss.backward()
        if tap and n % every == 0:
            want[n] = tap.expected(loss, before if n else None)
        if tap:
            before = tap.weights()
        if w:
            w.step(loss)
        optim.step()
        losses.append(loss.item())
    if w:
        w.close()
    if tap:
        tap.remove()
    return losses, [p.detach().clone() for p in model.parameters()], w and w.frame(), want


def _same_training(make, batches, steps, every, names, rel=1e-6, **kw):
    """Training with the Watch is bit-identical to training without it, and every recorded
    row is the reference's."""
    l0, p0, _, _ = _train(make, batches, steps, every, watch=False, **kw)
    l1, p1, frame, want = _train(make, batches, steps, every, names=names, **kw)
    assert l0 == l1
    assert all(torch.equal(a, b) for a, b in zip(p0, p1))
    assert sorted(want) == sorted(set(frame.step))
    for n, rows in want.items():
        _check(frame, n, rows, rel)
    return frame


def _seq_data(seed=1, shape=(6, 4, 5), classes=3, n=20):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, dtype=D, generator=g)
    y = torch.randint(0, classes, (n, shape[0]), generator=g)
    return lambda i: (x[i], y[i])


class _CellLoop(nn.Module):
    """A recurrent cell called once per time step (T calls pooled), then a head."""

    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = None
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
        return self.head(h[0] if isinstance(h, tuple) else h)


@pytest.mark.parametrize("cell", [nn.LSTMCell, nn.GRUCell, nn.RNNCell])
def test_cells_in_a_time_loop_under_watch_with_gradient_accumulation(cell):
    """Rows pool the T calls of the cell in the last micro-batch; weight_grad_* are the
    accumulated .grad; update_ratio one optimizer step's change."""
    frame = _same_training(lambda: _CellLoop(cell(5, 8)).to(D), _seq_data(), steps=5,
                           every=2, names={1: "cell", 2: "head"}, accum=3)
    assert set(frame.step) == {0, 2, 4}
    assert (frame.quantity == "update_ratio").sum() == 4  # steps 2 and 4, two layers


class _Ckpt(nn.Module):
    def __init__(self, mode) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(10, 12), nn.Linear(12, 12), nn.Linear(12, 3)
        self.act = nn.Tanh()
        self.relu = nn.ReLU()
        self.mode = mode

    def seg(self, h):
        return self.act(self.b(self.relu(h)))

    def forward(self, x):
        h = self.a(x)
        h = self.seg(h) if self.mode is None else checkpoint(self.seg, h,
                                                             use_reentrant=self.mode)
        return self.c(h)


@pytest.mark.parametrize("mode", [False, True])
def test_checkpointed_segment_is_recorded_once_not_twice(mode):
    """The backward recomputes a checkpointed segment (its hooks run again): every row,
    percentiles included, equals that of the same model without checkpointing, and training
    is bit-identical."""
    batches = _seq_data(shape=(7, 10))
    frames = {}
    for m in (None, mode):
        _, _, frames[m], _ = _train(lambda m=m: _Ckpt(m).to(D), batches, 3, 1,
                                    percentiles=PERCENTILES)
    a = frames[None].set_index(["step", "layer", "quantity"]).value
    b = frames[mode].set_index(["step", "layer", "quantity"]).value
    assert list(a.index) == list(b.index)
    assert b.to_numpy() == pytest.approx(a.to_numpy(), rel=1e-9, abs=1e-15)
    _same_training(lambda: _Ckpt(mode).to(D), batches, 3, 1, {1: "a", 2: "b", 3: "c"})


def _mlp():
    return nn.Sequential(nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 9), nn.ReLU(),
                         nn.Linear(9, 3))


@pytest.mark.parametrize("unscale", [False, True])
def test_cpu_grad_scaler_with_a_skipped_step(unscale):
    """torch.amp.GradScaler on the CPU (fp32 model): gradient rows are the loss's own
    (divided by the scale the backward ran with, which grows every 2 steps), whether or not
    unscale_ ran first; a step whose gradients are inf is skipped by the scaler and recorded
    with NaN/inf gradient rows; the next update_ratio is 0; training is unchanged."""
    g = torch.Generator().manual_seed(1)
    xs, ys = torch.randn(6, 8, 6, generator=g), torch.randint(0, 3, (6, 8), generator=g)
    names = {1: "0", 2: "2", 3: "4"}

    def run(watch):
        torch.manual_seed(0)
        model = _mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.3)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=2)
        w = dlt.Watch(model, every=1, theory=False, scaler=scaler) if watch else None
        tap = _Tap(model, names)
        want, before, scales = {}, None, []
        for n in range(5):
            opt.zero_grad()
            tap.reset()
            loss = CE(model(xs[n]), ys[n]) * (float("inf") if n == 2 else 1.0)
            scaler.scale(loss).backward()
            if unscale:
                scaler.unscale_(opt)
            s = scaler.get_scale()
            scales.append(s)
            want[n] = tap.expected(loss, before, grad_scale=s,
                                   weight_grad_scale=1.0 if unscale else s)
            before = tap.weights()
            if w:
                w.step(loss)
            scaler.step(opt)
            scaler.update()
        tap.remove()
        if w:
            w.close()
        return [p.detach().clone() for p in model.parameters()], w and w.frame(), want, scales

    p0, _, _, _ = run(False)
    p1, frame, want, scales = run(True)
    assert all(torch.equal(a, b) for a, b in zip(p0, p1))
    assert len(set(scales)) > 1  # the scale changed during the run
    for n in (0, 1, 3, 4):
        _check(frame, n, want[n], rel=1e-5)
    skipped = frame[frame.step == 3].set_index(["layer", "quantity"]).value
    assert skipped[(1, "update_ratio")] == 0.0
    inf_step = frame[frame.step == 2].set_index(["layer", "quantity"]).value
    assert not torch.isfinite(torch.tensor(inf_step[(0, "loss")]))


class _Sparse(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.e = nn.Embedding(20, 6, sparse=True, padding_idx=0)
        self.h = nn.Linear(6, 3)

    def forward(self, x):
        return self.h(self.e(x).mean(1))


def test_sparse_embedding_gradients_are_measured_as_dense():
    """nn.Embedding(sparse=True): .grad is a sparse tensor (rows not looked up absent);
    weight_grad_* are those of the dense gradient (zeros included) under probe and Watch."""
    g = torch.Generator().manual_seed(3)
    xs, ys = torch.randint(0, 20, (6, 8, 5), generator=g), torch.randint(0, 3, (6, 8), generator=g)
    _same_training(lambda: _Sparse().to(D), lambda i: (xs[i], ys[i]), 3, 1, {1: "e", 2: "h"},
                   opt=lambda p: torch.optim.SGD(p, lr=0.1))
    torch.manual_seed(0)
    model = _Sparse().to(D)
    table = dlt.probe(model, xs[0], ys[0], CE).set_index(["layer", "quantity"]).value
    (dense,) = torch.autograd.grad(CE(model(xs[0]), ys[0]), [model.e.weight])
    dense = dense.to_dense()
    assert table[(1, "weight_grad_std")] == pytest.approx(_pstd(dense), rel=1e-9)
    assert table[(1, "weight_grad_absmean")] == pytest.approx(float(dense.abs().mean()),
                                                             rel=1e-9)


class _Transposed(nn.Module):
    """A weight stored transposed (non-contiguous parameter)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(10, 6).t())

    def forward(self, x):
        return x @ self.w.t()


def test_non_contiguous_and_channels_last_weights_update_ratio():
    """Weights whose memory is not in logical order (a transposed parameter; convolutions
    after model.to(memory_format=torch.channels_last)): weight rows and update ratios read the
    logical entries, also with Adam and every=2 (snapshot reused between records)."""
    g = torch.Generator().manual_seed(1)
    xs, ys = torch.randn(8, 4, 10, generator=g), torch.randint(0, 3, (8, 4), generator=g)

    def make():
        m = nn.Sequential(_Transposed(), nn.Tanh(), nn.Linear(6, 3))
        m[2].weight = nn.Parameter(torch.randn(6, 3).t() * 0.3)
        return m

    def adam(params):
        return torch.optim.Adam(params, lr=0.01)

    for every in (1, 2):
        _same_training(make, lambda i: (xs[i], ys[i]), 5, every, {1: "0", 2: "2"}, rel=2e-5,
                       opt=adam)
    ims = torch.randn(8, 4, 3, 8, 8, generator=g)

    def conv():
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=2),
                             nn.Sigmoid(), nn.Flatten(), nn.Linear(128, 3)
                             ).to(memory_format=torch.channels_last)

    assert not conv()[0].weight.is_contiguous()
    _same_training(conv, lambda i: (ims[i].to(memory_format=torch.channels_last), ys[i]), 5,
                   2, {1: "0", 2: "2", 3: "5"}, rel=2e-5, opt=adam)


def test_model_moved_to_float64_after_the_watch_was_attached():
    """model.double() between two recorded steps: the record after it reads the new float64
    weights, and its update ratio compares them with the float32 snapshot."""
    g = torch.Generator().manual_seed(1)
    xs, ys = torch.randn(4, 8, 6, generator=g), torch.randint(0, 3, (4, 8), generator=g)
    torch.manual_seed(0)
    model = _mlp()
    watch = dlt.Watch(model, every=1, theory=False)
    tap = _Tap(model, {1: "0", 2: "2", 3: "4"})
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    before = None
    for n in range(4):
        if n == 2:
            model.double()
        dtype = next(model.parameters()).dtype
        opt.zero_grad()
        tap.reset()
        loss = CE(model(xs[n].to(dtype)), ys[n])
        loss.backward()
        want = tap.expected(loss, before)
        before = tap.weights()
        watch.step(loss)
        opt.step()
        _check(watch.frame(), n, want, rel=1e-5 if n < 2 else 1e-6)
    watch.close()
    assert next(model.parameters()).dtype == torch.float64


# -- weights the probes cannot see: the errors say which and why ------------------------------

class _Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(5, 6), nn.Linear(6, 3)

    def forward(self, x):
        return F.linear(torch.tanh(F.linear(x, self.fc1.weight, self.fc1.bias)), self.fc2.weight)


class _ParamList(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ws = nn.ParameterList([nn.Parameter(torch.randn(5, 6)),
                                    nn.Parameter(torch.randn(6, 3))])

    def forward(self, x):
        return torch.tanh(x @ self.ws[0]) @ self.ws[1]


class _RootWeights(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.W1, self.W2 = nn.Parameter(torch.randn(5, 6)), nn.Parameter(torch.randn(6, 3))
        self.act = nn.Tanh()

    def forward(self, x):
        return self.act(x @ self.W1) @ self.W2


def _x():
    return torch.randn(4, 5), torch.randint(0, 3, (4,))


@pytest.mark.parametrize("call", ["probe", "predict"])
def test_weights_used_functionally_are_named_in_the_error(call):
    """Every weight module read by F.linear, never called: the error named nothing (was 'no
    weight layer of _Functional ran in the forward pass'); now the modules and the way out."""
    x, y = _x()
    run = (lambda m: dlt.probe(m, x, y, CE)) if call == "probe" else (lambda m: dlt.predict(m, x))
    with pytest.raises(ValueError, match=r"'fc1' \(Linear\), 'fc2' \(Linear\) own weights but "
                                         r"never ran.*F\.linear\(x, self\.fc1\.weight\).*"
                                         r"self\.fc1\(x\)"):
        run(_Functional())


def test_parameter_list_weights_are_layers():
    """Each matrix of a ParameterList used as a linear map is a layer (was: refused, round 40:
    torchhunt40 measures such maps)."""
    x, y = _x()
    df = dlt.probe(_ParamList(), x, y, CE)
    assert list(df[df.layer >= 1].drop_duplicates("layer").module) == ["ws.0", "ws.1"]


@pytest.mark.parametrize("call", ["probe", "watch", "discover"])
def test_model_own_weights_beside_submodules_are_named_in_the_error(call):
    """The model's own 2-dim parameters beside a child module are not a layer: the error said
    the model had no module owning a parameter of >= 2 dimensions, which it has."""
    x, y = _x()
    run = {"probe": lambda m: dlt.probe(m, x, y, CE), "watch": lambda m: dlt.Watch(m),
           "discover": lambda m: dlt.discover(m, x)}[call]
    with pytest.raises(ValueError, match=r"model _RootWeights has no weight layers: its own "
                                         r"parameters 'W1', 'W2' \(>= 2 dimensions\) are not "
                                         r"one, since _RootWeights also has submodules \('act'\)"):
        run(_RootWeights())


def test_watch_warning_names_weights_used_without_their_module():
    """A Watch on a model whose weights are all read functionally: its warning guessed 'was
    the Watch created after this step's forward?' though the model's forward ran while armed;
    it names the modules that never ran, as probe's error does."""
    x, y = _x()
    model = _Functional()
    watch = dlt.Watch(model, every=1, theory=False)
    loss = CE(model(x), y)
    loss.backward()
    with pytest.warns(RuntimeWarning, match=r"'fc1' \(Linear\), 'fc2' \(Linear\) own weights "
                                            r"but never ran.*records its loss only"):
        watch.step(loss)
    watch.close()


def test_single_logit_binary_classifier_gets_no_argmax_accuracy():
    """An (N, 1) logit with integer 0/1 labels and a BCE loss_fn: argmax over one column is
    always 0, so 'acc' was the fraction of 0 labels (0.49 on this batch, where the logit's sign
    is right for 0.46); the threshold is the loss's, so no acc row. Two columns keep it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    x = torch.randn(100, 4)
    y = (x[:, 0] > 0).long()

    def bce(out, target):
        return F.binary_cross_entropy_with_logits(out.squeeze(1), target.float())

    table = dlt.probe(model, x, y, bce)
    assert list(table[table.layer == 0].quantity) == ["loss"]
    seg = dlt.probe(nn.Conv2d(3, 1, 1), torch.randn(4, 3, 5, 5),
                    (torch.rand(4, 5, 5) > 0.5).long(), lambda o, t: bce(o, t))
    assert "acc" not in set(seg.quantity)
    two = nn.Sequential(nn.Linear(4, 2))
    table = dlt.probe(two, x, y, CE).set_index(["layer", "quantity"]).value
    with torch.no_grad():
        want = float((two(x).argmax(1) == y).double().mean())
    assert table[(0, "acc")] == want


def test_torch_func_per_example_gradients_while_the_watch_is_armed():
    """DP-SGD-style per-example gradients, ``vmap(grad(loss))(params, x, y)`` through
    ``functional_call``, while the Watch is armed (step 0 is): the hooks met torch.func's
    wrapped tensors, which have no storage (the CPU kernels raised 'Cannot access data pointer
    of Tensor that doesn't have storage' inside the user's vmap; the torch operations' batched
    statistics escaped the transform and raised at watch.step). Calls inside a transform are
    not measured: that step records its loss, the next ordinary step is the reference's."""
    from torch.func import functional_call, grad, vmap

    g = torch.Generator().manual_seed(1)
    xs, ys = torch.randn(2, 8, 6, generator=g, dtype=D), torch.randint(0, 3, (2, 8), generator=g)
    torch.manual_seed(0)
    model = _mlp().to(D)
    watch = dlt.Watch(model, every=1, theory=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.3)

    def one(params, xi, yi):
        return F.cross_entropy(functional_call(model, params, (xi[None],)), yi[None])

    params = {k: v.detach() for k, v in model.named_parameters()}
    per_example = vmap(grad(one), in_dims=(None, 0, 0))(params, xs[0], ys[0])
    twin = copy.deepcopy(model)  # the reference gradient, by a copy (not the watched pass)
    full = torch.autograd.grad(CE(twin(xs[0]), ys[0]), list(twin.parameters()))
    for (k, p), want in zip(model.named_parameters(), full):
        p.grad = per_example[k].mean(0)
        assert torch.allclose(p.grad, want, rtol=1e-10, atol=1e-14)
    with torch.no_grad():
        loss = CE(model(xs[0]), ys[0])
    with pytest.warns(RuntimeWarning, match="records its loss only"):
        watch.step(loss)
    opt.step()
    tap = _Tap(model, {1: "0", 2: "2", 3: "4"})
    opt.zero_grad()
    loss = CE(model(xs[1]), ys[1])
    loss.backward()
    want = tap.expected(loss)
    tap.remove()
    watch.step(loss)
    watch.close()
    frame = watch.frame()
    assert list(frame[frame.step == 0].quantity) == ["loss"]
    _check(frame, 1, want)
