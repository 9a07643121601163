"""depthlab.torch.Watch in more practitioners' loops: gradient accumulation with ``every`` not
dividing the run, bf16 autocast with a CPU ``GradScaler`` and clipping after ``unscale_``,
validation passes between ``backward`` and ``watch.step`` (with and without ``no_grad``, through
the model or its submodules), losses given as NumPy scalars, two Watches on one model, and a
store reopened by a second Watch and rendered by ``depthlab report``. Every recorded value is
compared with the same quantity computed directly: module hooks written here, autograd and
plain tensor maths."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.cli import main as cli_main  # noqa: E402
from depthlab.experiments.store import Store  # noqa: E402

F = nn.functional


class _Taps:
    """Each ``nn.Linear``'s output and ``dL/d output`` in every forward with gradients enabled
    (float64 copies), grouped by forward of the model; submodule calls outside a forward of
    the model open a group of their own."""

    def __init__(self, model: nn.Module) -> None:
        self.names = {m: n for n, m in model.named_modules()}
        self.passes: list[dict] = []
        self.handles = [model.register_forward_pre_hook(self._new)]
        self.handles += [m.register_forward_hook(self._post) for m in model.modules()
                         if isinstance(m, nn.Linear)]

    def _new(self, module=None, args=None) -> None:
        if torch.is_grad_enabled():
            self.passes.append({})

    mark = _new  # a loop that calls submodules: a new group for its next calls

    def _post(self, module, args, out) -> None:
        if not torch.is_grad_enabled():
            return
        if not self.passes:
            self.passes.append({})
        d = self.passes[-1].setdefault(self.names[module], {"out": [], "grad": []})
        d["out"].append(out.detach().double().clone())
        if out.requires_grad:
            grads = d["grad"]
            out.register_hook(lambda g: grads.append(g.detach().double().clone()))

    def rows(self, name: str, which: int = -1) -> dict[str, float]:
        d = self.passes[which][name]
        o = torch.cat([t.reshape(-1) for t in d["out"]])
        r = {"pre_mean": o.mean().item(), "pre_std": o.std(unbiased=False).item()}
        if d["grad"]:
            g = torch.cat([t.reshape(-1) for t in d["grad"]])
            r["grad_pre_std"] = g.std(unbiased=False).item()
            r["grad_pre_absmean"] = g.abs().mean().item()
        return r


def _weight_rows(m: nn.Module, scale: float = 1.0) -> dict[str, float]:
    w = m.weight.detach().double()
    r = {"weight_std": w.std(unbiased=False).item()}
    if m.weight.grad is not None:
        g = m.weight.grad.double() / scale
        r["weight_grad_std"] = g.std(unbiased=False).item()
        r["weight_grad_absmean"] = g.abs().mean().item()
    return r


def _table(watch, step) -> dict[tuple[str, str], float]:
    f = watch.frame()
    f = f[f.step == step]
    return {(r.module, r.quantity): r.value for r in f.itertuples()}


def _check(table, name, expected, rel):
    for q, v in expected.items():
        assert (name, q) in table, f"{name} {q} missing"
        assert table[(name, q)] == pytest.approx(v, rel=rel, abs=1e-300), f"{name} {q}"


def _mlp(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 3)).to(dtype)


LINEARS = ("0", "2", "4")


# ---------------------------------------------------------------------------------------------
# gradient accumulation


@pytest.mark.parametrize("kernels", ["numba", "numpy"])
@pytest.mark.parametrize("every", [1, 7])
def test_gradient_accumulation_records_the_last_micro_batch_and_the_summed_grad(
        monkeypatch, kernels, every):
    """k = 4 micro-batches per optimizer step, ``watch.step`` once per optimizer step: the
    layer rows are the last micro-batch's (its output, its ``dL/d output`` of the loss / k),
    ``weight_grad_*`` the accumulated ``.grad`` and ``update_ratio`` the change made by the
    single optimizer step before the record (``||W_n - W_{n-1}|| / ||W_{n-1}||``)."""
    if kernels == "numpy":
        monkeypatch.setenv("DEPTHLAB_PROBE_KERNELS", "numpy")
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    taps = _Taps(model)
    watch = dlt.Watch(model, every=every, theory=False)
    g = torch.Generator().manual_seed(1)
    before = None
    recorded = []
    for step in range(9):
        opt.zero_grad()
        for _ in range(4):
            x = torch.randn(8, 5, generator=g, dtype=torch.float64)
            y = torch.randint(0, 3, (8,), generator=g)
            loss = F.cross_entropy(model(x), y) / 4
            loss.backward()
        watch.step(loss)
        if step % every == 0:
            recorded.append(step)
            table = _table(watch, step)
            for name in LINEARS:
                layer = model[int(name)]
                expected = {**taps.rows(name), **_weight_rows(layer)}
                if before is not None:
                    w0, w1 = before[name], layer.weight.detach()
                    expected["update_ratio"] = ((w1 - w0).norm() / w0.norm()).item()
                _check(table, name, expected, rel=1e-10)
            assert table[("", "loss")] == loss.item()
        before = {n: model[int(n)].weight.detach().clone() for n in LINEARS}
        opt.step()
    watch.close()
    assert sorted(set(watch.frame().step)) == recorded == list(range(0, 9, every))
    assert len(watch.losses()) == 9


# ---------------------------------------------------------------------------------------------
# bf16 autocast with a GradScaler on the CPU


@pytest.mark.parametrize("unscale_and_clip", [False, True])
def test_bf16_autocast_with_a_cpu_grad_scaler(unscale_and_clip):
    """``scaler.scale(loss).backward()`` under bf16 autocast, optionally ``unscale_`` and
    ``clip_grad_norm_`` before ``watch.step``: the gradient rows are those of the loss itself
    (the hooks' scaled ``dL/d output`` divided by the scale of that backward, which grows
    during the run), ``weight_grad_*`` the ``.grad`` the optimizer will use divided by the
    scale unless ``unscale_`` did so (clipped, when clipped)."""
    model = _mlp(torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=1)
    taps = _Taps(model)
    watch = dlt.Watch(model, every=2, theory=False, scaler=scaler)
    g = torch.Generator().manual_seed(1)
    scales = []
    for step in range(5):
        opt.zero_grad()
        x, y = torch.randn(8, 5, generator=g), torch.randint(0, 3, (8,), generator=g)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scale = scaler.get_scale()
        scales.append(scale)
        if unscale_and_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
        watch.step(loss)
        if step % 2 == 0:
            table = _table(watch, step)
            for name in LINEARS:
                expected = taps.rows(name)
                expected["grad_pre_std"] /= scale
                expected["grad_pre_absmean"] /= scale
                expected.update(_weight_rows(model[int(name)],
                                             1.0 if unscale_and_clip else scale))
                _check(table, name, expected, rel=1e-5)
            assert table[("", "loss")] == loss.float().item()
        scaler.step(opt)
        scaler.update()
    assert len(set(scales)) > 1  # the scale changed between the records


# ---------------------------------------------------------------------------------------------
# validation between backward and watch.step


def _validation_loop(through_model: bool, no_grad: bool, every: int):
    """A train step, then a validation forward of another batch (5x larger inputs, in eval
    mode) before ``watch.step``; returns the train batch's expected rows per recorded step."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    taps = _Taps(model)
    watch = dlt.Watch(model, every=every, theory=False)
    g = torch.Generator().manual_seed(1)
    x_val = 5 * torch.randn(32, 5, generator=g, dtype=torch.float64)
    expected = {}
    for step in range(4):
        model.train()
        opt.zero_grad()
        x = torch.randn(8, 5, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (8,), generator=g)
        if through_model:
            out = model(x)
        else:  # a loop that calls the model's parts (an encoder, a head) itself
            taps.mark()
            out = model[4](model[3](model[2](model[1](model[0](x)))))
        loss = F.cross_entropy(out, y)
        loss.backward()
        train = len(taps.passes) - 1
        model.eval()
        if no_grad:
            with torch.no_grad():
                model(x_val) if through_model else model[0](x_val)
        else:
            F.cross_entropy(model(x_val), torch.zeros(32, dtype=torch.long)).item()
        if step % every == 0:
            expected[step] = {n: {**taps.rows(n, train), **_weight_rows(model[int(n)])}
                              for n in LINEARS}
        watch.step(loss)
        opt.step()
    return watch, expected


@pytest.mark.parametrize("every", [1, 2])
def test_validation_through_the_model_under_no_grad_is_not_recorded(every):
    watch, expected = _validation_loop(through_model=True, no_grad=True, every=every)
    for step, rows in expected.items():
        table = _table(watch, step)
        for name, r in rows.items():
            _check(table, name, r, rel=1e-10)


@pytest.mark.parametrize("every", [1, 2])
def test_a_submodule_called_under_no_grad_outside_the_models_forward_is_not_recorded(every):
    """A loop that calls the model's submodules (no forward of the model itself) and runs a
    validation call of its first layer under ``no_grad`` before ``watch.step``: the record is
    the training call's. Before the patch the validation call was pooled into it (layer 1
    ``pre_std`` 2.79 where the training batch's is 0.575)."""
    watch, expected = _validation_loop(through_model=False, no_grad=True, every=every)
    for step, rows in expected.items():
        table = _table(watch, step)
        for name, r in rows.items():
            _check(table, name, r, rel=1e-10)


@pytest.mark.parametrize("kernels", ["numba", "numpy"])
@pytest.mark.parametrize("every", [1, 2])
def test_a_validation_forward_with_gradients_but_no_backward_is_not_recorded(
        monkeypatch, kernels, every):
    """A validation forward in eval mode without ``no_grad`` (a metric computed between
    ``backward`` and ``watch.step``) is not the training pass: the record is the training
    batch's, gradient rows included. Before the patch the validation batch was recorded
    (layer 1 ``pre_std`` 3.10 where the training batch's is 0.575) and the ``grad_pre_*`` rows
    were missing."""
    if kernels == "numpy":
        monkeypatch.setenv("DEPTHLAB_PROBE_KERNELS", "numpy")
    watch, expected = _validation_loop(through_model=True, no_grad=False, every=every)
    for step, rows in expected.items():
        table = _table(watch, step)
        for name, r in rows.items():
            _check(table, name, r, rel=1e-10)


# ---------------------------------------------------------------------------------------------
# a model that returns a dataclass


@dataclasses.dataclass
class _Output:
    loss: torch.Tensor
    logits: torch.Tensor


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))

    def forward(self, x):
        return x + self.f(x)


class _ReturnsDataclass(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(5, 8)
        self.blocks = nn.Sequential(_Block(), _Block())
        self.head = nn.Linear(8, 3)

    def forward(self, x, y):
        logits = self.head(self.blocks(self.inp(x)))
        return _Output(F.cross_entropy(logits, y), logits)


def test_residual_blocks_of_a_model_returning_a_dataclass():
    """A model whose forward returns a dataclass (loss and logits): its two residual blocks
    have ``block_grad_std`` = the std of ``dL/d block output`` (hooks written here) at every
    record, and the ``nn.Sequential`` holding them is not a block. Before the patch the
    block search never concluded, and from the second record on the container got a
    ``block_grad_std`` row of its own (a copy of the last block's)."""
    model = _ReturnsDataclass().double()
    grads: dict[str, list[torch.Tensor]] = {}

    def tap(name):
        def hook(module, args, out):
            grads[name] = []
            out.register_hook(lambda g: grads[name].append(g.detach().clone()))
        return hook

    for i, block in enumerate(model.blocks):
        block.register_forward_hook(tap(f"blocks.{i}"))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = dlt.Watch(model, every=1, theory=False)
    g = torch.Generator().manual_seed(1)
    for step in range(3):
        opt.zero_grad()
        x = torch.randn(16, 5, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (16,), generator=g)
        out = model(x, y)
        out.loss.backward()
        watch.step(out.loss)
        opt.step()
        table = _table(watch, step)
        blocks = {name for name, q in table if q == "block_grad_std"}
        assert blocks == {"blocks.0", "blocks.1"}, f"step {step}: {sorted(blocks)}"
        for name in blocks:
            (grad,) = grads[name]
            assert table[(name, "block_grad_std")] == pytest.approx(
                grad.std(unbiased=False).item(), rel=1e-10)


# ---------------------------------------------------------------------------------------------
# losses as numbers, two Watches on one model, a store written twice and reported


def test_losses_as_numbers_and_two_watches_on_one_model():
    """``watch.step`` takes a tensor of any float dtype, a Python or NumPy number; two Watches
    on one model (every 1 and every 2) each record the batch of their steps (hooks written
    here), and closing both leaves no hook on the model."""
    model = _mlp()
    taps = _Taps(model)
    first, second = dlt.Watch(model, every=1, theory=False), dlt.Watch(model, every=2,
                                                                        theory=False)
    g = torch.Generator().manual_seed(1)
    given = []
    for step in range(4):
        model.zero_grad()
        x = torch.randn(8, 5, generator=g, dtype=torch.float64)
        loss = F.cross_entropy(model(x), torch.randint(0, 3, (8,), generator=g))
        loss.backward()
        value = [loss, loss.item(), np.float32(loss.item()), loss.to(torch.bfloat16)][step]
        given.append(float(value))
        first.step(value)
        second.step(loss)
        for watch, every in ((first, 1), (second, 2)):
            if step % every == 0:
                table = _table(watch, step)
                for name in LINEARS:
                    _check(table, name, {**taps.rows(name), **_weight_rows(model[int(name)])},
                           rel=1e-10)
    first.close()
    second.close()
    assert list(first.losses().loss) == given
    assert list(first.frame().query("quantity == 'loss'").value) == given
    mine = {h.id for h in taps.handles}  # only the hooks written here are left
    assert all(set(m._forward_hooks) | set(m._forward_pre_hooks) <= mine
               for m in model.modules())


def test_a_store_written_by_two_watches_is_reported(tmp_path, capsys):
    """A second Watch with the same ``out`` adds its run to the store (a finished run every 7
    steps over 10, then a run ended by an exception: stored as failed, with the records it
    made); ``depthlab report`` renders both."""
    x = torch.randn(16, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (16,))
    frames = []
    for run, steps in (("first", 10), ("second", 3)):
        model = _mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with pytest.raises(KeyboardInterrupt) if run == "second" else _nothing():
            with dlt.Watch(model, every=7, out=tmp_path, name=run, theory=False) as watch:
                for _ in range(steps):
                    opt.zero_grad()
                    loss = F.cross_entropy(model(x), y)
                    loss.backward()
                    watch.step(loss)
                    opt.step()
                if run == "second":
                    raise KeyboardInterrupt
        frames.append(watch.frame())
    assert sorted(set(frames[0].step)) == [0, 7] and sorted(set(frames[1].step)) == [0]
    with Store(tmp_path) as store:
        runs = store.runs().set_index("name")
        assert runs.loc["first", "status"] == "finished"
        assert runs.loc["second", "status"] == "failed"
        for name, frame in zip(("first", "second"), frames):
            assert len(store.probes(runs.loc[name, "id"])) == len(frame)
    assert cli_main(["report", str(tmp_path)]) == 0
    text = (tmp_path / "report.html").read_text()
    assert "first" in text and "second" in text


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_loss_of_one_value_per_example_is_refused_in_watchs_words():
    """``watch.step(per_example_losses)`` (``reduction='none'``): one ValueError line that
    calls it the loss and says how to reduce it (it said 'loss_fn must return ...', an
    argument Watch does not have)."""
    model = _mlp()
    watch = dlt.Watch(model, every=1, theory=False)
    x, y = torch.randn(4, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    losses = F.cross_entropy(model(x), y, reduction="none")
    losses.mean().backward()
    with pytest.raises(ValueError, match=r"^the loss must be a scalar \(one-element\) tensor, "
                                         r"got shape \(4,\); reduce it over the batch") as info:
        watch.step(losses)
    assert "loss_fn" not in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"^the loss must be a scalar .* got shape \(4,\)"):
        dlt.probe(model, x, y, nn.CrossEntropyLoss(reduction="none"))


def _keep(outs: dict, name: str):
    """A forward hook that keeps its module's output under ``name`` (its ``.grad`` retained)."""
    def hook(module, args, out):
        out.retain_grad()
        outs[name] = out
    return hook


def test_a_trunk_shared_by_two_watched_models_is_measured_per_model():
    """Two models sharing a trunk (multi-task heads), each with a Watch, the second model run
    first: each record of the trunk's layer is its own model's forward (output and
    ``dL/d output`` by autograd here). Before the patch the first model's forward was pooled
    into the second's pass (``pre_std`` 1.28 where its own batch's is 1.64)."""
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(5, 8), nn.Tanh())
    a = nn.Sequential(trunk, nn.Linear(8, 3)).double()
    b = nn.Sequential(trunk, nn.Linear(8, 2)).double()
    watches = {"a": dlt.Watch(a, every=1, theory=False), "b": dlt.Watch(b, every=1, theory=False)}
    g = torch.Generator().manual_seed(1)
    for step in range(2):
        a.zero_grad()
        b.zero_grad()
        xa = torch.randn(8, 5, generator=g, dtype=torch.float64)
        xb = 3 * torch.randn(8, 5, generator=g, dtype=torch.float64)
        outs: dict[str, torch.Tensor] = {}
        handle = trunk[0].register_forward_hook(_keep(outs, "b"))
        loss_b = F.cross_entropy(b(xb), torch.zeros(8, dtype=torch.long))
        handle.remove()
        handle = trunk[0].register_forward_hook(_keep(outs, "a"))
        loss_a = F.cross_entropy(a(xa), torch.zeros(8, dtype=torch.long))
        handle.remove()
        (loss_a + loss_b).backward()
        watches["a"].step(loss_a)
        watches["b"].step(loss_b)
        for name, watch in watches.items():
            table = _table(watch, step)
            out = outs[name]
            _check(table, "0.0", {"pre_mean": out.mean().item(),
                                  "pre_std": out.std(unbiased=False).item(),
                                  "grad_pre_std": out.grad.std(unbiased=False).item()}, rel=1e-10)
