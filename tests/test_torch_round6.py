"""depthlab.torch as a practitioner uses it (round 6): a Watch in real training loops (param
groups, accumulation, clipping, bf16 autocast with a GradScaler, a module replaced or added
mid-run, a loop that ends before its first record, two Watches into one folder), the report of
those runs (the figures draw the stored values; module names with ``$``; the theory caption of
torch runs), and depthlab.bridge (odd shapes both ways, ``dl.probe`` = ``dlt.probe`` for every
activation)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab as dl  # noqa: E402
import depthlab.torch as dlt  # noqa: E402
from depthlab import plot  # noqa: E402
from depthlab.bridge.torch_bridge import from_torch, to_torch  # noqa: E402
from depthlab.experiments.store import Store  # noqa: E402
from depthlab.report import build, figures  # noqa: E402


def _data(n=64, d=6, classes=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.GELU(), nn.Dropout(0.2),
                         nn.Linear(16, 16), nn.Tanh(), nn.LayerNorm(16), nn.Linear(16, 3))


def _loop(model, steps, every=None, *, opt=None, watch_kw=None, before=None):
    """A plain training loop; with ``every`` a Watch; returns (losses, watch or None)."""
    x, y = _data()
    opt = opt or torch.optim.SGD(model.parameters(), lr=0.1)
    watch = dlt.Watch(model, every=every, **(watch_kw or {})) if every else None
    losses = []
    for step in range(steps):
        if before is not None:
            opt = before(step, model, opt) or opt
        idx = (torch.arange(16) + 16 * step) % len(x)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        if watch is not None:
            watch.step(loss)
        opt.step()
        losses.append(loss.detach().clone())
    if watch is not None:
        watch.close()
    return losses, watch


# ---------------------------------------------------------------------------------------------
# Watch in real loops


def _practitioner(optimizer, every, amp):
    """Param groups, two micro-batches per step, clipping after unscale_, a scheduler and
    (``amp``) bf16 autocast with an enabled GradScaler; set_to_none alternating."""
    model = _mlp()
    if optimizer == "adam":
        opt = torch.optim.Adam([
            {"params": model[0].parameters(), "lr": 0.01, "weight_decay": 1e-3},
            {"params": [p for m in list(model)[1:] for p in m.parameters()], "lr": 3e-3,
             "amsgrad": True}])
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.StepLR(opt, 3, 0.5)
    scaler = torch.amp.GradScaler("cpu", enabled=amp, init_scale=1024.0)
    watch = dlt.Watch(model, every=every, scaler=scaler if amp else None) if every else None
    x, y = _data(96)
    losses = []
    for step in range(7):
        opt.zero_grad(set_to_none=step % 2 == 0)
        for k in range(2):
            idx = (torch.arange(16) + 16 * step + 5 * k) % len(x)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx]) / 2
            scaler.scale(loss).backward()
        if watch is not None:
            watch.step(loss)
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        scaler.step(opt)
        scaler.update()
        sched.step()
        losses.append(loss.detach().clone())
    if watch is not None:
        watch.close()
    return model, losses, watch


@pytest.mark.parametrize("optimizer, every, amp", [("adam", 3, False), ("sgd", 1, True)])
def test_a_practitioners_loop_is_bit_identical_with_a_watch(optimizer, every, amp):
    ref, ref_losses, _ = _practitioner(optimizer, None, amp)
    got, losses, watch = _practitioner(optimizer, every, amp)
    assert all(torch.equal(a, b) for a, b in zip(ref_losses, losses))
    for (name, a), b in zip(ref.state_dict().items(), got.state_dict().values()):
        assert torch.equal(a, b), name
    frame = watch.frame()
    assert sorted(frame.step.unique()) == list(range(0, 7, every))
    assert set(frame[frame.layer >= 1].module) == {"0", "4", "7"}
    assert np.isfinite(frame.value).all()
    assert list(watch.losses().loss) == [v.item() for v in losses]


class _Swap(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(6, 8)
        self.b = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.a(x))
        if hasattr(self, "c"):
            h = torch.relu(self.c(h))
        return self.b(h)


def _swap(step, model, opt):
    if step == 4:  # a new head (fine-tuning), then a new layer before it
        torch.manual_seed(5)
        model.b = nn.Linear(8, 3)
    elif step == 7:
        torch.manual_seed(6)
        model.c = nn.Linear(8, 8)
    else:
        return None
    return torch.optim.SGD(model.parameters(), lr=0.1)


def test_a_module_replaced_or_added_mid_run_is_measured_from_then_on():
    ref_losses, _ = _loop(_Swap(), 12, before=_swap)
    model, at10 = _Swap(), {}

    def before(step, model, opt):
        if step == 10:  # the weights step 10 records (before its optimizer step)
            at10.update({n: getattr(model, n).weight.detach().clone() for n in "abc"})
        return _swap(step, model, opt)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses, watch = _loop(model, 12, every=2, before=before)
    assert all(torch.equal(a, b) for a, b in zip(ref_losses, losses))
    said = [str(w.message) for w in caught if "changed" in str(w.message)]
    assert len(said) == 2 and "b" in said[0] and "c" in said[1]
    frame = watch.frame()

    def value(step, module, quantity):
        row = frame[(frame.step == step) & (frame.module == module) & (frame.quantity == quantity)]
        assert len(row) == 1, (step, module, quantity)
        return row.value.item()

    # the last record (step 10) measures the modules the model has then, numbered by name
    assert watch.layer_names() == {1: "a", 2: "b", 3: "c"}
    for name in ("a", "b", "c"):
        assert value(10, name, "weight_std") == pytest.approx(
            at10[name].std(unbiased=False).item(), rel=1e-6)
        assert value(10, name, "update_ratio") > 0  # trained, not a detached copy
        assert np.isfinite(value(10, name, "grad_pre_std"))


def test_a_loop_that_ends_before_its_first_record_and_two_watches_in_one_folder(tmp_path):
    out = tmp_path / "runs"
    empty = dlt.Watch(_mlp(), every=5, out=out, name="no step")
    assert list(empty.frame().columns) == ["step", "layer", "module", "quantity", "value"]
    assert empty.frame().empty and empty.losses().empty
    empty.close()
    empty.close()  # idempotent: stored once
    model = _mlp()
    _, once = _loop(model, 7, every=10**9, watch_kw={"out": out, "name": "huge every"})
    assert set(once.frame().step) == {0}
    assert list(once.losses().step) == list(range(7))
    with pytest.raises(RuntimeError, match="after close"):
        once.step(1.0)
    _, again = _loop(_mlp(seed=1), 7, every=10**9, watch_kw={"out": out, "name": "huge every"})
    assert again.run_id != once.run_id
    store = Store(out)
    runs = store.runs()
    assert sorted(runs.name) == ["huge every", "huge every", "no step"]
    key = ["step", "layer", "quantity"]
    pd.testing.assert_frame_equal(
        store.probes(again.run_id).sort_values(key, ignore_index=True),
        again.frame()[[*key, "value"]].sort_values(key, ignore_index=True), check_dtype=False)
    page = build.write_report(tmp_path / "rep", store).read_text()
    assert "its depthlab.torch Watch was closed before any" in page
    assert "[probes] every = N" not in page  # the NumPy config hint is not for these runs


def test_the_report_figures_draw_the_stored_values(tmp_path):
    out = tmp_path / "runs"
    _, watch = _loop(_mlp(), 9, every=4, watch_kw={"out": out, "name": "drawn"})
    store = Store(out)
    runs = build._runs_table(store)
    config = runs["config"].iloc[0]
    probes = build._named(build._clean_probes(store.probes(watch.run_id)), config)
    frame = watch.frame()

    def stored(quantity, step):
        sub = frame[(frame.quantity == quantity) & (frame.step == step)]
        return dict(zip(sub.layer, sub.value))

    fig = plot.gradient_per_layer({"drawn": probes}, False)
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["[0]", "[4]", "[7]"]
    lines = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "drawn"]
    assert lines, [ln.get_label() for ln in fig.axes[0].get_lines()]
    want = stored("grad_pre_std", 0)
    np.testing.assert_allclose(lines[0].get_ydata(), [want[k] for k in sorted(want)], rtol=1e-12)
    last = [ln for ln in fig.axes[1].get_lines() if ln.get_label() == "drawn (step 8)"]
    want = stored("grad_pre_std", 8)
    np.testing.assert_allclose(last[0].get_ydata(), [want[k] for k in sorted(want)], rtol=1e-12)
    fig = plot.update_ratio(probes)
    drawn = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    for layer, name in ((1, "[0]"), (3, "[7]")):
        np.testing.assert_array_equal(drawn[name].get_xdata(), [4, 8])
        np.testing.assert_allclose(drawn[name].get_ydata(),
                                   [stored("update_ratio", s)[layer] for s in (4, 8)],
                                   rtol=1e-12)


class _Dollars(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleDict({"a$b": nn.Linear(6, 8), "cost$5": nn.Linear(8, 8),
                                     "$\\bad$": nn.Linear(8, 3)})
        self.act = nn.Tanh()

    def forward(self, x):
        h = self.act(self.blocks["a$b"](x))
        return self.blocks["$\\bad$"](self.act(self.blocks["cost$5"](h)))


def test_module_names_with_dollar_signs_are_drawn_as_they_are(tmp_path):
    """``$\\bad$`` in a module name was parsed as mathtext: the report stopped (ValueError)."""
    _, watch = _loop(_Dollars(), 5, every=2, watch_kw={"out": tmp_path, "name": "dollars"})
    names = ["blocks.a$b", "blocks.cost$5", "blocks.$\\bad$"]
    frame = watch.frame()
    for fn in (plot.gradient_per_layer, plot.activation_bands, plot.update_ratio):
        fig = fn(frame)
        texts = [t for ax in fig.axes for t in ax.get_xticklabels()]
        texts += [t for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
        drawn = {t._preprocess_math(t.get_text()) for t in texts
                 if t.get_text().startswith("blocks.")}
        assert len(drawn) >= 2 and drawn <= {(n, False) for n in names}, drawn  # not math
        figures.figure_png(fig)  # drawn without a mathtext error
    build.write_report(tmp_path / "rep", Store(tmp_path))


def test_the_theory_caption_of_a_torch_run_says_why_there_is_none(tmp_path):
    class Sine(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.b(torch.sin(self.a(x)))

    x, y = _data()
    dlt.doctor(Sine, (x, y), steps=2, batch_size=32, verify=False, probe_every=1, out=tmp_path,
               name="sine")
    config = Store(tmp_path).run(Store(tmp_path).runs().id.iloc[0])["config"]
    theory, note = plot.theory_for_config(config)
    assert theory is None and "Sin" in note and note.startswith("no theory curve: ")
    assert "integer layer sizes" not in note  # the NumPy config's reason, not this one
    bare = {"source": "depthlab.torch.Watch", "model": {"class": "X", "layers": {"1": "a"}}}
    assert "depthlab.torch.predict" in plot.theory_for_config(bare)[1]


# ---------------------------------------------------------------------------------------------
# depthlab.bridge


@pytest.mark.parametrize("activation, kw", [
    *[(a, {}) for a in dl.ACTIVATIONS if a != "softmax"],
    ("swish", {"beta": 1.5}), ("penalized_tanh", {"a": 0.4}), ("leaky_relu",
                                                                {"negative_slope": 0.2})])
def test_bridged_probe_equals_numpy_probe_for_every_activation(activation, kw):
    """Every quantity both tables have agrees to 1e-6 (float64), and the torch table has every
    NumPy row (bridge's Swish(beta), PenalizedTanh and Step are recognised activations: their
    act_*, saturated/inactive rows were missing; Step's gradient is 0, not None, so the layers
    below it have their zero gradient rows) but for identity."""
    net = dl.mlp([5, 9, 7, 3], activation=activation, activation_kwargs=kw, seed=2,
                 dtype="float64", bias_init="normal")
    g = np.random.default_rng(4)
    x, y = g.standard_normal((30, 5)) * 1.5, g.integers(0, 3, 30)
    want = dl.probe(net, x, y).dropna()
    got = dlt.probe(to_torch(net), torch.from_numpy(x), torch.from_numpy(y),
                    nn.CrossEntropyLoss())
    got = got[got.layer <= want.layer.max()]
    both = want.merge(got, on=["layer", "quantity"], suffixes=("_np", "_torch"))
    assert len(both) >= 2 * 8 + 2
    np.testing.assert_allclose(both.value_torch, both.value_np, rtol=1e-6, atol=1e-13)
    if activation != "identity":  # nn.Identity is no activation module: no act_* rows
        missing = want.merge(got, on=["layer", "quantity"], how="left", indicator=True)
        assert (missing["_merge"] == "both").all(), missing[missing["_merge"] != "both"]


def test_bridged_activations_are_predicted_and_diagnosed():
    net = dl.mlp([5, 9, 7, 3], activation="penalized_tanh", activation_kwargs={"a": 0.4},
                 seed=2, dtype="float64")
    model = to_torch(net)
    assert isinstance(model[1], dlt.ACTIVATIONS)
    x = torch.from_numpy(np.random.default_rng(4).standard_normal((30, 5)))
    pred = dlt.predict(model, x)  # was refused: not a chain of known activations
    assert pred[pred.quantity == "grad_pre_std"].predicted.notna().all()
    from depthlab.torch import prescriptions as rx

    assert rx.activation_kwargs(model[1]) == {"a": 0.4}
    assert rx.activation_kwargs(to_torch(dl.mlp([3, 4, 2], activation="swish",
                                                activation_kwargs={"beta": 2.0}))[1]) == {
        "beta": 2.0}


@pytest.mark.parametrize("sizes, kw", [
    ([1, 1], {}),
    ([2, 9, 1], {"batchnorm": True, "dtype": "float32", "activation": "elu"}),
    ([6, 1, 6, 2], {"activation": "tanh", "init": "orthogonal", "bias_init": "normal"}),
    ([3, 4, 4, 4, 2], {"residual": True, "batchnorm": True, "bn_ema_start": "zero",
                       "output_activation": "sigmoid", "activation": "selu"}),
])
def test_bridge_round_trips_of_odd_shapes(sizes, kw):
    kw = {"dtype": "float64", **kw}
    net = dl.mlp(sizes, seed=3, **kw)
    model = to_torch(net)
    back = from_torch(model)
    assert back.dtype == net.dtype and back.n_inputs == sizes[0]
    again = to_torch(back)  # and back to torch: the same state
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert a.dtype == b.dtype and torch.equal(a, b), k
    x = np.random.default_rng(0).standard_normal((7, sizes[0])).astype(net.dtype)
    tol = 1e-5 if net.dtype == np.float32 else 1e-12
    for training in (False, True):
        model.train(training)
        xt = torch.tensor(x, requires_grad=True)
        out = model(xt)
        ours = net.forward(x, training=training)
        assert out.dtype == (torch.float64 if net.dtype == np.float64 else torch.float32)
        np.testing.assert_allclose(out.detach().numpy(), ours, rtol=tol, atol=tol)
        np.testing.assert_array_equal(back.forward(x, training=training), ours)
        up = np.ones_like(ours)
        out.backward(torch.tensor(up))
        np.testing.assert_allclose(xt.grad.numpy(), net.backward(up), rtol=tol, atol=tol)


def test_short_runs_draw_their_loss_without_a_smoothing_that_changes_nothing():
    """The EMA has span n/50: under 51 steps it was the raw loss itself, drawn bold over the
    faint raw line and labelled 'smoothed'."""
    rng = np.random.default_rng(0)
    for n, want in ((5, ["per step"]), (30, ["per step"]), (120, ["per step", "smoothed (EMA)"])):
        steps = pd.DataFrame({"step": np.arange(n), "loss": 1 + rng.random(n)})
        ax = figures.training_curves(steps).axes[0]
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        assert list(lines) == want, n
        raw = lines["per step"]
        np.testing.assert_array_equal(raw.get_ydata(), steps.loss)
        assert (raw.get_alpha() or 1.0) == (0.25 if n == 120 else 1.0)
        if n == 120:
            assert np.abs(lines["smoothed (EMA)"].get_ydata() - steps.loss).max() > 0.1


def test_watch_argument_types_and_its_stored_theory_note(tmp_path):
    with pytest.raises(TypeError, match="name must be a string"):
        dlt.Watch(_mlp(), name=5)
    with pytest.raises(TypeError, match="theory must be True or False"):
        dlt.Watch(_mlp(), theory="no")
    uncovered = _mlp()
    uncovered[6] = nn.Softshrink()  # (its LayerNorm is covered since round 30)
    _, watch = _loop(uncovered, 2, every=1, watch_kw={"out": tmp_path})
    assert watch.theory is None and "Softshrink" in watch.theory_note  # not a chain it covers
    config = Store(tmp_path).run(watch.run_id)["config"]
    assert config["model"]["theory_note"] == watch.theory_note
    assert plot.theory_for_config(config)[1] == (
        "no theory curve: " + watch.theory_note.removeprefix("no theory: "))


def test_a_module_removed_mid_run_is_no_longer_recorded_but_keeps_its_name(tmp_path):
    model = _Swap()
    model.c = nn.Linear(8, 8)

    def before(step, model, opt):
        if step == 3:
            del model.c
            return torch.optim.SGD(model.parameters(), lr=0.1)
        return None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        _, watch = _loop(model, 7, every=2, before=before, watch_kw={"out": tmp_path})
    frame = watch.frame()
    assert set(frame[frame.step == 2].module) == {"", "a", "c", "b"}
    assert set(frame[frame.step >= 4].module) == {"", "a", "b"}
    config = Store(tmp_path).run(watch.run_id)["config"]
    assert config["model"]["layers"] == {"1": "a", "2": "c", "3": "b"}  # step 2's rows named


@pytest.mark.parametrize("kw", [{"batchnorm": True}, {"batchnorm": True, "residual": True}])
def test_bridged_batch_norm_and_residual_mlps_agree_but_where_pre_is_defined_apart(kw):
    """As the README says: depthlab's pre_* (and grad_pre_*) are of the activation's input
    (after the norm, the residual sum), torch's of the layer's output; every other row both
    tables have agrees (batch statistics in training mode on both sides)."""
    net = dl.mlp([5, 7, 7, 7, 3], activation="tanh", seed=2, dtype="float64", **kw)
    g = np.random.default_rng(4)
    x, y = g.standard_normal((30, 5)), g.integers(0, 3, 30)
    want = dl.probe(net, x, y).dropna()
    got = dlt.probe(to_torch(net), torch.from_numpy(x), torch.from_numpy(y),
                    nn.CrossEntropyLoss())
    both = want.merge(got[got.layer <= want.layer.max()], on=["layer", "quantity"])
    apart = both.quantity.str.startswith(("pre_", "grad_pre_"))
    assert apart.any() and (~apart).sum() >= 10
    np.testing.assert_allclose(both[~apart].value_y, both[~apart].value_x, rtol=1e-6,
                               atol=1e-13)
    assert not np.allclose(both[apart & (both.quantity == "pre_std")].value_y,
                           both[apart & (both.quantity == "pre_std")].value_x, rtol=1e-3)


def test_a_run_with_its_loss_only_gets_a_note_not_empty_figures(tmp_path):
    model = _mlp()
    x, y = _data()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()  # before the Watch: its one record holds the loss only (and warns)
    with pytest.warns(RuntimeWarning, match="records its loss only"), \
            dlt.Watch(model, every=1, out=tmp_path, name="late") as watch:
        watch.step(loss)
    assert set(watch.frame().layer) == {0}
    page = build.write_report(tmp_path / "rep", Store(tmp_path)).read_text()
    assert "Only the loss was probed" in page
    assert build.FIG_GRAD_PROFILE not in page and build.FIG_TRAINING in page


def test_a_first_panel_without_values_at_the_first_step_is_not_called_initialization():
    """An fp16 run whose first gradients overflowed (NaN rows until the GradScaler backs
    off): the left panel draws the first step with values, and says which."""
    rows = [(s, la, "grad_pre_std", np.nan if s < 4 else 0.01 * la)
            for s in (0, 2, 4, 6) for la in (1, 2, 3)]
    late = pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"])
    titles = [ax.get_title() for ax in plot.gradient_per_layer(late).axes]
    assert titles == ["at step 4, the first with values", "at the end of training"]
    drawn = plot.gradient_per_layer(late).axes[0].get_lines()[0]
    np.testing.assert_allclose(drawn.get_ydata(), [0.01, 0.02, 0.03])
    ok = late.assign(value=late.value.fillna(0.02))
    assert plot.gradient_per_layer(ok).axes[0].get_title() == "at initialization"
    assert plot.gradient_per_layer({"a": late, "b": ok}).axes[0].get_title() == \
        "at initialization"


def test_a_bridged_step_network_gives_its_lower_layers_zero_gradients_not_none():
    net = dl.mlp([4, 6, 3], activation="step", seed=1, dtype="float64")
    model = to_torch(net)
    x = torch.randn(8, 4, dtype=torch.float64)
    nn.functional.cross_entropy(model(x), torch.randint(0, 3, (8,))).backward()
    assert model[0].weight.grad is not None and not model[0].weight.grad.any()
    assert model[2].weight.grad.abs().sum() > 0
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.5)
    before = model[0].weight.detach().clone()
    opt.step()  # weight decay acts on the layer below the step, as in depthlab
    torch.testing.assert_close(model[0].weight.detach(), before * (1 - 0.1 * 0.5))


def test_a_loss_only_run_overlaid_keeps_the_other_runs_module_names():
    _, watch = _loop(_mlp(), 3, every=1)
    named = watch.frame()
    loss_only = named[named.layer == 0].drop(columns="module")  # as the report reads it
    fig = plot.gradient_per_layer({"named": named, "late": loss_only})
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["[0]", "[4]", "[7]"]


def test_the_gradient_heatmap_keeps_steps_whose_gradients_are_all_nan_as_blank_columns():
    rows = [(s, la, "grad_pre_std", np.nan if s < 4 else 0.01 * la)
            for s in (0, 2, 4, 6) for la in (1, 2, 3)]
    table = pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"])
    mesh = plot.gradient_heatmap(table).axes[0].collections[0]
    z = mesh.get_array()
    assert z.shape == (3, 4)  # layers x the four recorded steps
    assert z.mask[:, :2].all() and not z.mask[:, 2:].any()
    np.testing.assert_allclose(z[:, 2], [0.01, 0.02, 0.03])
