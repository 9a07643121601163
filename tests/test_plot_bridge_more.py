"""Adversarial checks of the public figures (``depthlab.plot``), the notebook reprs and the torch
bridge (``depthlab.bridge.to_torch``): odd but legal tables (one probed step, text columns,
hundreds of layers, duplicated or unsorted rows, a torch ``Watch``), bad arguments refused in one
clear error, and the bridged module's batch-norm statistics, pickling and buffers."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection

import depthlab as dl
from depthlab import plot


def _table(steps=(0, 10, 20), layers=3, quantities=None) -> pd.DataFrame:
    """A synthetic probe table: gradients shrinking 10x per layer towards the input."""
    quantities = quantities or {
        "grad_pre_std": lambda s, la: 1e-3 * 10.0 ** (la - layers) * (1 + s / 100),
        "act_std": lambda s, la: 0.5, "act_mean": lambda s, la: 0.1 * la,
        "saturated_frac": lambda s, la: 0.05 * la, "dead_frac": lambda s, la: 0.0,
        "update_ratio": lambda s, la: 1e-3 * la,
    }
    rows = [(s, la, q, f(s, la)) for s in steps for la in range(1, layers + 1)
            for q, f in quantities.items()]
    return pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"])


def _tick_texts(ax) -> list[str]:
    ax.figure.canvas.draw()
    return [t.get_text() for t in ax.get_xticklabels() if t.get_text()]


def _panel_texts(fig) -> str:
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


# -- one probed step ---------------------------------------------------------------------------
def test_one_probed_step_is_visible_and_its_step_axis_has_no_fractional_ticks():
    """With one probed step the over-training figures drew lines of one point (invisible: the
    saturation panel looked empty) on an axis ticked -0.045 ... 0.045 "training step"."""
    one = _table(steps=(7,))
    for fig in (plot.saturation(one), plot.activation_bands(one), plot.gradient_heatmap(one),
                plot.update_ratio(one)):
        for ax in fig.axes:
            if ax.get_xlabel() == "training step":  # the data panels (not a colour bar)
                assert _tick_texts(ax) == ["7"], (ax.get_title(), _tick_texts(ax))
    sat = plot.saturation(one)
    assert all(line.get_marker() not in (None, "None", "") for line in sat.axes[0].lines)
    bands = plot.activation_bands(one)  # the ± std band of one step: an error bar per layer
    bars = [c for c in bands.axes[0].collections if isinstance(c, LineCollection)]
    assert len(bars) == 3
    lo, hi = bars[0].get_segments()[0][:, 1]
    assert (lo, hi) == pytest.approx((0.1 - 0.5, 0.1 + 0.5))


def test_training_curves_of_one_step_tick_that_step():
    fig = plot.training_curves(pd.DataFrame({"step": [1], "loss": [2.3]}))
    assert _tick_texts(fig.axes[0]) == ["1"]


def test_heatmap_ticks_are_the_probed_steps_not_the_cell_edges():
    """Steps 0, 5, 10: the cells reach -2.5 .. 12.5 and the axis was ticked -2 ... 12."""
    fig = plot.gradient_heatmap(_table(steps=(0, 5, 10)))
    assert _tick_texts(fig.axes[0]) == ["0", "5", "10"]


def test_training_curves_with_only_non_finite_losses_says_so():
    """Every loss NaN (a run that diverged at once) drew empty axes with a "per step" legend."""
    fig = plot.training_curves(pd.DataFrame({"step": [1, 2, 3], "loss": [np.nan, np.inf,
                                                                         np.nan]}))
    assert "no finite loss" in _panel_texts(fig)
    assert fig.axes[0].get_legend() is None


# -- odd but legal tables ------------------------------------------------------------------------
def test_text_columns_read_as_numbers_and_other_text_is_named():
    """A table read back as text (layer "3") failed deep in pandas: "Invalid comparison between
    dtype=str and int"."""
    t = _table()
    as_text = t.astype({"layer": str, "step": str, "value": str})
    assert plot.gradient_ratio(as_text) == pytest.approx(plot.gradient_ratio(t))
    plot.gradient_per_layer(as_text)
    with pytest.raises(ValueError, match=r"'layer' column must hold numbers; got 'first'"):
        plot.gradient_ratio(t.assign(layer=t["layer"].astype(str).replace("1", "first")))


def test_duplicated_unsorted_and_shifted_tables_give_the_same_numbers():
    t = _table(steps=(0, 10, 20))
    ratio = plot.gradient_ratio(t)
    assert ratio == pytest.approx(1e-2)
    assert plot.gradient_ratio(pd.concat([t, t])) == pytest.approx(ratio)
    assert plot.gradient_ratio(t.sample(frac=1.0, random_state=0)) == pytest.approx(ratio)
    shifted = t.assign(step=t["step"] + 1000)  # resumed training: the first step is 1000
    assert plot.gradient_ratio(shifted) == pytest.approx(ratio)
    assert plot.gradient_ratio(shifted, step=1020) == pytest.approx(plot.gradient_ratio(t, 20))
    fig = plot.gradient_per_layer(shifted)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["at initialization",
                                                        "at the end of training"]


def test_hundreds_of_layers_keep_ticks_and_titles_readable():
    """300 layers: at most a dozen tick labels, and a saturation title that named every shown
    layer ran into the panel beside it."""
    t = _table(steps=(0, 50), layers=300)
    fig = plot.gradient_per_layer(t)
    assert 2 <= len(_tick_texts(fig.axes[0])) <= 12
    assert fig.axes[0].get_yscale() == "log"
    sat = plot.saturation(t)
    for ax in sat.axes:
        title = ax.get_title()
        assert "8 of 300 layers" in title and max(map(len, title.split("\n"))) <= 50, title
    assert len(sat.axes[-1].get_legend().get_texts()) == 8


def test_the_saturation_legend_sits_outside_the_data():
    """A line across the whole panel (layer 1 saturated at 53% throughout) ran under the
    legend that ``loc="best"`` put inside the axes."""
    rows = [(s, la, q, 0.53 if la == 1 else 0.1 * la) for s in (0, 10, 20)
            for la in range(1, 9) for q in ("saturated_frac", "dead_frac")]
    fig = plot.saturation(pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"]))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 1
    box = legends[0].get_window_extent(renderer)
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent(renderer)) or box.x0 >= ax.bbox.x1
    assert box.x1 <= fig.bbox.x1 + 1  # and it is not cut off at the figure's edge


def test_minor_log_labels_match_the_powers_of_ten_beside_them():
    """Between 10^-5 and 10^-3 the minor labels read "5e-05" beside "10^-4"."""
    from depthlab.report.figures import _label_two_five

    assert _label_two_five(5e-5) == "$5\\times10^{-5}$"
    assert _label_two_five(0.2) == "0.2" and _label_two_five(50.0) == "50"
    assert _label_two_five(3e-5) == "" and _label_two_five(0.0) == ""


def test_zero_negative_and_infinite_gradients_are_not_drawn_on_the_log_axis():
    t = _table()
    sel = t["quantity"] == "grad_pre_std"
    bad = t.copy()
    bad.loc[sel & (t["layer"] == 2), "value"] = [0.0, -1.0, np.inf]
    fig = plot.gradient_per_layer(bad)
    for ax in fig.axes:
        for line in ax.lines:
            y = np.asarray(line.get_ydata(), float)
            assert np.all(np.isfinite(y) & (y > 0))
    assert math.isnan(plot.gradient_ratio(t.assign(value=np.where(sel, np.nan, t["value"]))))
    empty = plot.gradient_per_layer(t.assign(value=np.where(sel, 0.0, t["value"])))
    assert "no positive 'grad_pre_std' probes" in _panel_texts(empty)


# -- bad arguments -------------------------------------------------------------------------------
def test_bad_arguments_are_one_clear_error_naming_what_was_expected():
    rec = dl.ProbeRecorder(np.zeros((4, 3), np.float32), np.zeros(4, int), every=1)
    t = _table()
    cases = [
        (lambda: plot.activation_bands(t, max_steps=0), ValueError, "max_steps must be"),
        (lambda: plot.activation_bands(t, max_steps=2.5), TypeError, "max_steps must be"),
        (lambda: plot.activation_histograms(rec, max_layers=0), ValueError,
         "max_layers must be an integer >= 1, got 0"),
        (lambda: plot.activation_histograms(rec, kind="gradient"), ValueError,
         "kind must be one of pre, act, grad, weight; got 'gradient'"),
        (lambda: plot.activation_histograms(rec, steps=[]), ValueError,
         "steps must be a non-empty list"),
        (lambda: plot.activation_histograms(rec, steps=5), ValueError,
         "steps must be a non-empty list"),
        (lambda: plot.sweep_metric([{"val_acc": 1}], ["model.depth"]), TypeError,
         "runs must be a DataFrame"),
        (lambda: plot.sweep_metric(pd.DataFrame({"model.depth": [], "val_acc": []}),
                                   ["model.depth"]), ValueError, "the runs table is empty"),
        (lambda: plot.gradient_per_layer(None), TypeError, "expected a probe table"),
        (lambda: plot.gradient_per_layer({}), ValueError, "no runs given"),
        (lambda: plot.training_curves(3), TypeError, "expected a History"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind, match=message):
            call()


def test_sweep_metric_takes_one_key_as_a_string_and_a_table_without_status():
    """``keys="model.depth"`` iterated its characters (KeyError 'm'); a hand-made runs table
    without the store's ``status`` column was refused."""
    runs = pd.DataFrame({"name": ["a", "b", "c", "d"], "model.depth": [2, 2, 6, 6],
                         "model.activation": ["relu", "tanh", "relu", "tanh"],
                         "val_acc": [0.9, 0.8, 0.7, 0.5]})
    bars = plot.sweep_metric(runs, "model.depth")
    assert bars.axes[0].get_xlabel()
    grid = plot.sweep_metric(runs, ["model.depth", "model.activation"])
    assert grid.axes[0].collections  # the heatmap over the complete 2 x 2 grid


# -- a torch Watch and the NumPy recorder ------------------------------------------------------
def test_every_figure_takes_a_torch_watch_like_a_numpy_recorder():
    torch = pytest.importorskip("torch")
    import depthlab.torch as dlt

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8),
                                torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    x, y = torch.randn(32, 6, dtype=torch.float64), torch.randint(0, 3, (32,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with dlt.Watch(model, every=2, theory=False) as watch:
        for _ in range(5):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
    assert plot.gradient_ratio(watch) == pytest.approx(plot.gradient_ratio(watch.frame()))
    for fn in (plot.gradient_per_layer, plot.activation_per_layer, plot.activation_bands,
               plot.gradient_heatmap, plot.update_ratio, plot.saturation,
               plot.training_curves):
        fig = fn(watch)  # nothing is missing but the accuracy (a Watch records no accuracy)
        assert _panel_texts(fig) in ("", "no accuracy recorded"), (fn.__name__,
                                                                   _panel_texts(fig))
    grad = plot.gradient_per_layer(watch)
    assert "module" in grad.axes[0].get_xlabel()


# -- notebook reprs ------------------------------------------------------------------------------
def test_reprs_count_one_step_and_one_layer_in_the_singular():
    from depthlab.data import load_dataset

    data = load_dataset("digits", seed=0, standardize=True)
    net = dl.mlp([64, 8, 10], activation="tanh", seed=0)
    rec = dl.ProbeRecorder(data.x_val[:40], data.y_val[:40], every=1000)
    hist = dl.fit(net, data.x_train[:64], data.y_train[:64], loss="cross_entropy", epochs=1,
                  batch_size=64, seed=0, callbacks=[rec])
    assert repr(hist).startswith("History(1 step, finished")
    assert "1 layer," in repr(rec) and "1 layers" not in repr(rec)
    assert "1 step," in hist._repr_html_()
    empty = dl.ProbeRecorder(data.x_val[:40], data.y_val[:40], every=5)
    assert repr(empty) == "ProbeRecorder(every=5, 0 steps recorded, 0 layers, 0 rows)"
    assert "nothing recorded yet" in empty._repr_html_()


# -- the torch bridge ----------------------------------------------------------------------------
def _bn_pairs(net, tnet):
    import torch

    ours = [la for la in net.layers if type(la).__name__ == "BatchNorm"]
    theirs = [m for m in tnet.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(ours) == len(theirs) > 0
    return list(zip(ours, theirs))


@pytest.mark.parametrize("ema_start", ["first_batch", "zero"])
def test_bridged_batch_norm_running_statistics_follow_depthlab_over_training(ema_start):
    """depthlab's default ``ema_start="first_batch"`` starts the average at the first batch;
    the bridged ``nn.BatchNorm1d`` started at mean 0, variance 1, so after one training batch
    its running statistics were off by ~0.5 and eval outputs disagreed."""
    torch = pytest.importorskip("torch")
    from depthlab.bridge.torch_bridge import to_torch

    net = dl.mlp([5, 7, 7, 3], activation="relu", batchnorm=True, dtype="float64", seed=2,
                 bn_ema_start=ema_start)
    tnet = to_torch(net).train()
    g = np.random.default_rng(0)
    for i in range(3):
        x = g.standard_normal((16, 5)) * 3.0 + i
        net.forward(x, training=True)
        tnet(torch.tensor(x))
        for ours, theirs in _bn_pairs(net, tnet):
            np.testing.assert_allclose(theirs.running_mean.numpy(), ours.running_mean,
                                       rtol=0, atol=1e-12)
            np.testing.assert_allclose(theirs.running_var.numpy(), ours.running_var,
                                       rtol=0, atol=1e-12)
            assert int(theirs.num_batches_tracked) == ours.num_batches == i + 1
    xe = g.standard_normal((9, 5))
    np.testing.assert_allclose(tnet.eval()(torch.tensor(xe)).detach().numpy(),
                               net.forward(xe, training=False), rtol=0, atol=1e-12)
    # a network already trained: the copy continues the moving average, no fresh start
    tnet2 = to_torch(net).train()
    x = g.standard_normal((16, 5))
    net.forward(x, training=True)
    tnet2(torch.tensor(x))
    for ours, theirs in _bn_pairs(net, tnet2):
        np.testing.assert_allclose(theirs.running_mean.numpy(), ours.running_mean, atol=1e-12)


def test_bridged_modules_pickle_move_and_name_their_parameters():
    """Swish(beta), penalized tanh and step were lambdas (``torch.save`` failed: "Can't pickle
    local object") shown as ``_Fn()``; Standardize kept its statistics outside the module, so
    ``.double()`` left them float32 and the ``state_dict`` lost them."""
    torch = pytest.importorskip("torch")
    from depthlab.bridge.torch_bridge import to_torch
    from depthlab.layers import Activation, Dense
    from depthlab.layers.standardize import Standardize

    g = np.random.default_rng(1)
    x = (g.standard_normal((10, 4)) * 5 + 3).astype(np.float32)
    net = dl.Network([Standardize.fit(x, np.float32), Dense(4, 6, rng=1),
                      Activation("swish", beta=2.0), Dense(6, 6, rng=2),
                      Activation("penalized_tanh", a=0.5), Dense(6, 5, rng=3),
                      Activation("step"), Dense(5, 2, rng=4)], n_inputs=4)
    tnet = to_torch(net).eval()
    text = repr(tnet)
    assert "Swish(beta=2.0)" in text and "PenalizedTanh(a=0.5)" in text and "_Fn" not in text
    buf = io.BytesIO()
    torch.save(tnet, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=False)
    want = net.forward(x, training=False)
    np.testing.assert_allclose(back(torch.from_numpy(x)).detach().numpy(), want, atol=1e-5)
    assert {"0.mean", "0.std"} <= set(tnet.state_dict())
    d = tnet.double()
    assert d[0].mean.dtype == torch.float64
    np.testing.assert_allclose(d(torch.from_numpy(x.astype(np.float64))).detach().numpy(), want,
                               atol=1e-5)


@pytest.mark.parametrize("bad", [None, 3, "net.npz"])
def test_to_torch_of_something_else_is_a_type_error_naming_it(bad):
    pytest.importorskip("torch")
    from depthlab.bridge.torch_bridge import to_torch

    with pytest.raises(TypeError, match=f"expects a depthlab Network.*got {type(bad).__name__}"):
        to_torch(bad)


def test_to_torch_refuses_a_torch_module():
    torch = pytest.importorskip("torch")
    from depthlab.bridge.torch_bridge import to_torch

    with pytest.raises(TypeError, match="got Linear"):
        to_torch(torch.nn.Linear(2, 2))


def test_a_run_record_shows_itself_in_one_line_and_a_card():
    """The dataclass repr printed every stored table (steps, probes, histograms, ...)."""
    from depthlab.experiments.store import RunRecord

    steps = pd.DataFrame({"step": np.arange(30), "epoch": 0, "loss": np.linspace(2, 1, 30),
                          "lr": 0.1, "seconds": 0.0})
    rec = RunRecord(id="abc123", name="tanh <deep>", status="diverged", steps=steps,
                    probes=_table(), metrics={"train_loss": 1.0, "val_acc": 0.25},
                    divergence={"message": "loss became nan at step 30 <layer 2>"})
    text = repr(rec)
    assert text == ("RunRecord('abc123', name='tanh <deep>', diverged, 30 steps, "
                    "train_loss=1, val_acc=0.25)")
    html = rec._repr_html_()
    assert "<b>Diverged.</b> loss became nan at step 30 &lt;layer 2&gt;" in html
    assert html.count("<img") == 2 and "tanh &lt;deep&gt;" in html
    assert "\n" not in repr(RunRecord(id="x"))


def test_a_torch_watch_shows_what_it_recorded():
    torch = pytest.importorskip("torch")
    import depthlab.torch as dlt

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    watch = dlt.Watch(model, every=2, theory=False)
    assert repr(watch) == "Watch(Sequential, every=2, 0 steps seen, 0 recorded, 0 layers, open)"
    assert "nothing recorded yet" in watch._repr_html_()
    for _ in range(3):
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
    watch.close()
    assert repr(watch) == "Watch(Sequential, every=2, 3 steps seen, 2 recorded, 2 layers, closed)"
    html = watch._repr_html_()
    assert "<img" in html and "Gradient ratio" in html and "theory=False" in html


# -- torch -> depthlab ---------------------------------------------------------------------------
def _every_activation_model(torch):
    nn = torch.nn
    acts = [nn.Sigmoid(), nn.Tanh(), nn.Identity(), nn.ReLU(inplace=True), nn.LeakyReLU(0.2),
            nn.ELU(0.7), nn.SELU(), nn.SiLU(), nn.Softsign(), nn.Mish(), nn.GELU()]
    layers = [nn.Linear(6, 8)]
    for a in acts:
        layers += [nn.BatchNorm1d(8, momentum=0.2), a, nn.Dropout(0.3), nn.Linear(8, 8, bias=False)]
    return nn.Sequential(*layers, nn.Linear(8, 3), nn.Softmax(dim=-1)).double()


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_from_torch_gives_the_same_outputs_and_gradients(mode):
    """Every activation, batch norm (statistics, eps, momentum), dropout and no-bias layers."""
    torch = pytest.importorskip("torch")
    from depthlab.bridge.torch_bridge import from_torch

    torch.manual_seed(0)
    model = _every_activation_model(torch)
    with torch.no_grad():  # running statistics that are not the defaults
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    if mode == "train":  # dropout's masks come from two generators: compare without them
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    getattr(model, mode)()
    net = from_torch(model)
    assert net.dtype == np.float64 and net.n_inputs == 6
    g = np.random.default_rng(3)
    x, up = g.standard_normal((12, 6)), g.standard_normal((12, 3))
    xt = torch.tensor(x, requires_grad=True)
    out = model(xt)
    out.backward(torch.tensor(up))
    ours = net.forward(x, training=mode == "train")
    gx = net.backward(up)
    np.testing.assert_allclose(ours, out.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=0, atol=1e-12)
    theirs = list(model.parameters())
    assert len(theirs) == len(net.parameters())
    for p, q in zip(theirs, net.parameters()):
        want = p.grad.numpy()
        np.testing.assert_allclose(q.grad.T if q.grad.ndim == 2 else q.grad, want, rtol=0,
                                   atol=1e-12)
    for ours_bn, theirs_bn in _bn_pairs(net, model):  # updated alike in training mode
        np.testing.assert_allclose(ours_bn.running_mean, theirs_bn.running_mean.numpy(),
                                   rtol=0, atol=1e-12)
        np.testing.assert_allclose(ours_bn.running_var, theirs_bn.running_var.numpy(),
                                   rtol=0, atol=1e-12)


@pytest.mark.parametrize("kw", [
    {"activation": "penalized_tanh", "batchnorm": True},
    {"activation": "swish", "activation_kwargs": {"beta": 1.5}, "residual": True,
     "batchnorm": True},
    {"activation": "step", "dtype": "float32"},
])
def test_a_round_trip_through_torch_changes_nothing(kw):
    pytest.importorskip("torch")
    from depthlab.bridge.torch_bridge import from_torch, to_torch

    kw = {"dtype": "float64", **kw}
    net = dl.mlp([6, 8, 8, 8, 3], seed=1, **kw)
    back = from_torch(to_torch(net))
    assert back.dtype == net.dtype
    x = np.random.default_rng(0).standard_normal((10, 6)).astype(net.dtype)
    for training in (False, True):
        np.testing.assert_array_equal(back.forward(x, training=training),
                                      net.forward(x, training=training))
    for p, q in zip(net.parameters(), back.parameters()):
        np.testing.assert_array_equal(p.value, q.value)


def test_from_torch_refuses_what_depthlab_cannot_express_naming_the_module():
    torch = pytest.importorskip("torch")
    from depthlab.bridge.torch_bridge import from_torch

    nn = torch.nn
    cases = [
        (nn.Sequential(nn.Conv2d(1, 2, 3)), r"module '0' \(Conv2d"),
        (nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)), r"module '1' \(LayerNorm"),
        (nn.Sequential(nn.Linear(2, 2), nn.PReLU()), "PReLU"),
        (nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.MaxPool1d(2))),
         r"module '1.1' \(MaxPool1d"),
        (nn.LSTM(2, 2), r"the model itself \(LSTM"),
        (nn.Sequential(nn.Linear(2, 2)).half(), "float32 or float64 parameters"),
        (nn.Sequential(nn.ReLU()), "at least one Linear"),
        ("model.pt", "expects a torch.nn.Module, got str"),
    ]
    for model, message in cases:
        with pytest.raises(TypeError, match=message):
            from_torch(model)


def test_two_runs_of_one_name_both_get_a_line():
    """Two RunRecords named alike (two seeds of one config) were one dict key: one run vanished
    from the figure without a word."""
    from depthlab.experiments.store import RunRecord

    a = RunRecord(id="a1", name="tanh", probes=_table())
    b = RunRecord(id="b2", name="tanh", probes=_table().assign(value=lambda d: d["value"] * 3))
    fig = plot.gradient_per_layer([a, b], theory=False)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["tanh", "tanh (2)"]
    assert len(fig.axes[0].lines) == 2


def test_a_theory_argument_that_is_not_a_theory_frame_is_refused():
    """``theory=5`` and a frame without the theory's columns were ignored without a word."""
    t = _table()
    from depthlab.theory import propagate

    good = propagate([8, 8, 8, 8, 3], "tanh", init="glorot_uniform")
    fig = plot.gradient_per_layer(t, theory=good)
    assert any(line.get_linestyle() == "--" for line in fig.axes[0].lines)
    with pytest.raises(TypeError, match="theory must be a DataFrame.*got int"):
        plot.gradient_per_layer(t, theory=5)
    with pytest.raises(ValueError, match="theory must have the columns layer and grad_pre_var"):
        plot.gradient_per_layer(t, theory=pd.DataFrame({"depth": [1], "var": [1.0]}))
    with pytest.raises(TypeError, match=r"theory\['run'\] must be a DataFrame"):
        plot.activation_per_layer({"run": t}, theory={"run": [1, 2]})


def test_a_reproduction_result_escapes_its_title():
    """``Glorot & Bengio`` went into the notebook's <h1> unescaped (a ``<`` would open a tag)."""
    from depthlab.reproduce.base import Result

    html = Result(name="x", title="Glorot & Bengio <2010>")._repr_html_()
    assert "<h1>Glorot &amp; Bengio &lt;2010&gt;</h1>" in html


def test_a_log_axis_over_one_to_two_decades_labels_its_2s_and_5s():
    """Activation stds from 0.09 to 0.98 got two labels (10^-1, 10^0) on a whole panel."""
    rows = [(0, la, "act_std", v) for la, v in enumerate(np.geomspace(0.09, 0.98, 12), 1)]
    fig = plot.activation_per_layer(pd.DataFrame(rows, columns=["step", "layer", "quantity",
                                                                "value"]))
    ax = fig.axes[0]
    fig.canvas.draw()
    lo, hi = ax.get_ylim()
    minor = [t.get_text() for t in ax.yaxis.get_minorticklabels()
             if t.get_text() and lo <= t.get_position()[1] <= hi]
    assert minor == ["0.2", "0.5"]


def test_a_histogram_with_one_occupied_bin_says_so_instead_of_the_bins_range():
    """Every gradient of a dead ReLU layer is 0: the panel said "range [0, 1]" (the default
    bins) above one spike at 0."""
    rows = [(0, 1, "grad", i / 50, (i + 1) / 50, 256 if i == 0 else 0) for i in range(50)]
    rows += [(0, 2, "grad", -1 + i / 25, -1 + (i + 1) / 25, 5) for i in range(50)]
    hist = pd.DataFrame(rows, columns=["step", "layer", "kind", "bin_left", "bin_right",
                                       "count"])
    titles = [ax.get_title() for ax in plot.activation_histograms(hist, "grad").axes]
    assert titles == ["layer 1, step 0: all in one bin [0, 0.02]",
                      "layer 2, step 0: range [-1, 1]"]


def test_the_watch_and_run_cards_draw_the_theory_and_module_names_they_mention(monkeypatch):
    """The Watch card named its theory but drew none; a torch RunRecord's card numbered the
    layers instead of naming the modules."""
    torch = pytest.importorskip("torch")
    import depthlab.torch as dlt
    from depthlab.report import notebook

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 6),
                                torch.nn.Tanh(), torch.nn.Linear(6, 2))
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    with dlt.Watch(model, every=2) as watch:
        for _ in range(3):
            model.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            watch.step(loss)
    assert watch.theory is not None
    drawn = []
    real = plot.gradient_per_layer
    monkeypatch.setattr(plot, "gradient_per_layer",
                        lambda runs, theory=None, **kw: drawn.append((runs, theory))
                        or real(runs, theory, **kw))
    notebook.watch_html(watch)
    notebook.run_record_html(watch.record())
    (w_runs, w_theory), (r_runs, r_theory) = drawn
    assert isinstance(w_theory, pd.DataFrame) and isinstance(r_theory, pd.DataFrame)
    (r_table,) = r_runs.values()
    assert set(r_table["module"]) >= {"0", "2"}
