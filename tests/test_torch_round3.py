"""Adversarial tests of depthlab.torch's theory (predict), doctor, training loop, prescriptions
and the ``depthlab doctor --torch`` command on models the other torch tests do not build.

Each regression test names the bug it guards against in its docstring."""

from __future__ import annotations

import copy
import json
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import depthlab.torch as dlt  # noqa: E402
from depthlab.torch import prescriptions as rx  # noqa: E402
from depthlab.torch.train import TorchTrainSpec  # noqa: E402
from tests.helpers.cli import assert_one_line_error, run_cli  # noqa: E402

CE = nn.CrossEntropyLoss()


def _ratios(df, quantity):
    sub = df[df.quantity == quantity]
    return (sub.predicted / sub.value).to_numpy()


# -- predict: the formula against Monte Carlo over initializations -----------------------------

def _mc_grad_ratio(make, shape, n_classes, seeds):
    """Mean over ``seeds`` random initializations of predicted^2 / measured^2 of
    ``grad_pre_std`` per layer (the prediction is an expectation over the weights)."""
    out = []
    for s in range(seeds):
        torch.manual_seed(s)
        x = torch.randn(*shape)
        y = torch.randint(0, n_classes, (shape[0],))
        df = dlt.predict(make(), x, y, CE)
        out.append(_ratios(df, "grad_pre_std") ** 2)
    return np.mean(out, axis=0)


def test_tanh_gradient_prediction_is_unbiased_over_initializations():
    def make():
        return nn.Sequential(nn.Linear(32, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(),
                             nn.Linear(256, 16))

    r = _mc_grad_ratio(make, (256, 32), 16, seeds=6)
    assert np.all(np.abs(r - 1) < 0.04), r


def test_padded_strided_dilated_grouped_conv_prediction_is_unbiased():
    def make():
        return nn.Sequential(
            nn.Conv2d(3, 24, 3, padding=1), nn.Tanh(),
            nn.Conv2d(24, 24, 3, stride=2, padding=2, dilation=2), nn.Tanh(),
            nn.Conv2d(24, 24, 3, padding=1, groups=4, bias=False), nn.Tanh(),
            nn.Flatten(), nn.Linear(24 * 6 * 6, 10))

    r = _mc_grad_ratio(make, (48, 3, 12, 12), 10, seeds=4)
    assert np.all(np.abs(r - 1) < 0.08), r
    torch.manual_seed(0)
    df = dlt.predict(make(), torch.randn(48, 3, 12, 12), torch.randint(0, 10, (48,)), CE)
    assert np.all(np.abs(_ratios(df, "pre_std")[:3] - 1) < 0.05)


@pytest.mark.parametrize("act", [nn.Sigmoid(), nn.GELU(), nn.GELU(approximate="tanh"), nn.SiLU(),
                                 nn.ELU(alpha=0.5), nn.SELU(), nn.LeakyReLU(0.3), nn.Softsign(),
                                 nn.Mish(), nn.Hardtanh(-0.5, 0.5), nn.CELU(0.7), nn.Softplus(2.0),
                                 nn.Hardswish(), nn.ReLU6()], ids=lambda m: repr(m))
def test_every_activation_module_is_predicted(act):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 384), act, nn.Linear(384, 384), act,
                          nn.Linear(384, 64))
    x = torch.randn(256, 32)
    df = dlt.predict(model, x, torch.randn(256, 64), nn.MSELoss())
    for q in ("pre_std", "act_std"):
        assert np.all(np.abs(_ratios(df, q)[:2] - 1) < 0.04), (q, df)
    assert np.all(np.abs(_ratios(df, "grad_pre_std") - 1) < 0.06), df


def test_conv1d_conv3d_circular_padding_and_float64():
    torch.manual_seed(0)
    m1 = nn.Sequential(nn.Conv1d(2, 32, 5, padding=2), nn.ReLU(),
                       nn.Conv1d(32, 32, 3, padding="same", padding_mode="circular"), nn.ReLU(),
                       nn.Flatten(), nn.Linear(32 * 32, 10)).double()
    df = dlt.predict(m1, torch.randn(64, 2, 32, dtype=torch.float64),
                     torch.randint(0, 10, (64,)), CE)
    assert np.all(np.abs(_ratios(df, "pre_std")[:2] - 1) < 0.06), df
    m3 = nn.Sequential(nn.Conv3d(1, 16, 3, padding=1), nn.SiLU(),
                       nn.Conv3d(16, 16, 3, stride=2, padding=1), nn.SiLU(),
                       nn.Flatten(), nn.Linear(16 * 4 ** 3, 10))
    df = dlt.predict(m3, torch.randn(16, 1, 8, 8, 8), torch.randint(0, 10, (16,)), CE)
    assert np.all(np.abs(_ratios(df, "pre_std")[:2] - 1) < 0.08), df


def test_shape_only_and_inert_modules_between_layers_are_accepted():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 128), nn.Identity(), nn.ReLU(), nn.Dropout(0.5),
                          nn.Unflatten(1, (8, 16)), nn.Flatten(), nn.Linear(128, 4)).eval()
    df = dlt.predict(model, torch.randn(256, 16), torch.randint(0, 4, (256,)), CE)
    assert np.all(np.abs(_ratios(df, "pre_std")[:1] - 1) < 0.03)
    assert set(df.layer) == {1, 2}


def test_flatten_that_copies_a_non_contiguous_input_is_still_a_chain():
    """Flatten of a non-contiguous tensor copies it (new storage): the values are the same, so
    the chain holds (the first-layer check must not refuse it)."""
    torch.manual_seed(0)
    x = torch.randn(64, 8, 8).transpose(1, 2)[:, None]
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 4))
    df = dlt.predict(model, x, torch.randint(0, 4, (64,)), CE)
    assert set(df.layer) == {1, 2}
    # an AlphaDropout there (no theory of its own; refused between layers) made the first
    # layer's input without weights: the theory starts from the values that layer reads
    # (torchhunt26; it was refused as "'0' (Flatten) -> '1' (AlphaDropout)")
    assert set(dlt.predict(nn.Sequential(nn.Flatten(), nn.AlphaDropout(0.5), nn.Linear(64, 4)),
                           x).layer) == {1}
    # train-mode dropout after the copying Flatten is modelled (E[a^2] / (1 - p))
    assert set(dlt.predict(nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(64, 4)),
                           x).layer) == {1}


# -- predict: models it must refuse, with the module named ------------------------------------

class _Block(nn.Module):
    def __init__(self, w, scale=None, functional_post=False):
        super().__init__()
        self.f = nn.Sequential(nn.Linear(w, w), nn.ReLU(), nn.Linear(w, w))
        self.post = nn.ReLU()
        self.scale, self.functional_post = scale, functional_post

    def forward(self, x):
        h = self.f(x) if self.scale is None else self.scale * self.f(x)
        return F.relu(x + h) if self.functional_post else self.post(x + h)


def _res(**kw):
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), _Block(64, **kw), _Block(64, **kw),
                         nn.Linear(64, 4))


def test_plain_residual_blocks_are_still_predicted():
    torch.manual_seed(0)
    df = dlt.predict(_res(), torch.randn(128, 16), torch.randint(0, 4, (128,)), CE)
    assert df.layer.nunique() == 6


@pytest.mark.parametrize("kw", [{"scale": 0.1}])
def test_scaled_residual_is_predicted(kw):
    """Regression: x + 0.1 F(x) was predicted as x + F(x) (gradients 10x off), then refused;
    since round 43 the branch enters the sum with c^2 times its variance and takes c^2 times
    the sum's gradient back. (A functional relu after the add is modelled as the module since
    round 29: test_functionally_activated_residual_is_predicted_as_the_module.)"""
    torch.manual_seed(0)
    df = dlt.predict(_res(**kw), torch.randn(64, 16), torch.randint(0, 4, (64,)), CE)
    g = df[df.quantity == "grad_pre_std"]
    assert ((g.value / g.predicted).between(0.85, 1.15)).all()


def test_functionally_activated_residual_is_predicted_as_the_module():
    """F.relu(x + F(x)) is the block's post activation, as nn.ReLU() after the add."""
    x, y = torch.randn(64, 16), torch.randint(0, 4, (64,))
    torch.manual_seed(0)
    ref = dlt.predict(_res(), x, y, CE)
    torch.manual_seed(0)
    got = dlt.predict(_res(functional_post=True), x, y, CE)
    assert got["predicted"].to_numpy() == pytest.approx(ref["predicted"].to_numpy(), rel=1e-9)


@pytest.mark.parametrize("first, name", [(nn.BatchNorm1d(16), "'0' (BatchNorm1d)")])
def test_a_module_before_the_first_layer_is_refused(first, name):
    """Regression: an activation or normalization before the first layer was ignored (pre_std
    predicted from the raw input: 1.6x off after a tanh). A module without trainable weights
    before the first layer (a Tanh) is now the chain's start: the theory starts from the values
    the first layer reads (tests/test_torchhunt_round26.py); one with weights (a BatchNorm's
    affine) is still refused."""
    model = nn.Sequential(first, nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    with pytest.raises(ValueError, match="the input of '1' is not the model's input") as e:
        dlt.predict(model, torch.randn(64, 16))
    assert name in str(e.value)


def test_an_activation_before_the_first_layer_is_predicted_from_its_output():
    """The Tanh case of the test above: predicted from tanh(x), as the model without it on
    tanh(x) (it was predicted from the raw input, 1.6x off, then refused)."""
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    x = torch.randn(64, 16) * 3
    got = dlt.predict(nn.Sequential(nn.Tanh(), *body), x)
    want = dlt.predict(body, torch.tanh(x))
    assert np.allclose(got.predicted.to_numpy(), want.predicted.to_numpy(), rtol=1e-12)


@pytest.mark.parametrize("model, fragment", [
    (nn.Sequential(nn.Linear(16, 64), nn.Dropout(0.5), nn.ReLU(), nn.Linear(64, 4)),
     "'1' (Dropout) -> '2' (ReLU)"),
    (nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Tanh(), nn.Linear(64, 4)), "'2' (Tanh)"),
])
def test_the_modules_in_between_are_named(model, fragment):
    """Regression: a training-mode Dropout or a second activation was refused without naming
    it."""
    with pytest.raises(ValueError, match="the input of '3'") as e:
        dlt.predict(model, torch.randn(64, 16))
    assert fragment in str(e.value)


class _InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.act, self.b = nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)

    def forward(self, x):
        h = self.act(self.a(x))
        h.mul_(3.0)  # same storage: not visible as a different tensor
        return self.b(h)


def test_an_in_place_change_between_layers_is_refused():
    """Regression: ``h.mul_(3)`` between two layers was invisible (same storage)."""
    with pytest.raises(ValueError, match="'b' was changed in place after 'act' \\(ReLU\\)"):
        dlt.predict(_InPlace(), torch.randn(64, 16))


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(16, 16)
        self.att = nn.MultiheadAttention(16, 2, batch_first=True)
        self.out = nn.Linear(16, 4)

    def forward(self, x):
        h = self.inp(x).unsqueeze(1)
        h, _ = self.att(h, h, h)
        return self.out(h.squeeze(1))


class _Lstm(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.out = nn.LSTM(4, 8, batch_first=True), nn.Linear(8, 4)

    def forward(self, x):
        h, _ = self.rnn(x.view(len(x), 4, 4))
        return self.out(h[:, -1])


class _Sin(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(16, 32), nn.Linear(32, 4)

    def forward(self, x):
        return self.b(torch.sin(self.a(x)))


@pytest.mark.parametrize("model, fragment", [
    (_Attention(), "'att' is a MultiheadAttention"), (_Lstm(), "'rnn' is a LSTM"),
    (_Sin(), "the input of 'b' is not the previous layer's output (pooling or another "
             "operation in between); it is computed by the torch operation 'Sin'"),
    (nn.Sequential(nn.Linear(16, 32), nn.InstanceNorm1d(32), nn.ReLU(), nn.Linear(32, 4)),
     "'1' is a InstanceNorm1d"),
])
def test_models_that_are_not_chains_are_refused(model, fragment):
    with pytest.raises(ValueError) as e:
        dlt.predict(model, torch.randn(32, 16))
    assert fragment in str(e.value)


def test_input_of_another_dtype_is_a_type_error():
    """Regression: a float64 model with float32 inputs raised torch's RuntimeError."""
    model = nn.Sequential(nn.Linear(16, 4)).double()
    with pytest.raises(TypeError, match="float32 but the model's weights are torch.float64"):
        dlt.predict(model, torch.randn(8, 16))


# -- doctor ------------------------------------------------------------------------------------

def _xy(n=120, d=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).long()


def _mlp(out=2, act=nn.ReLU):
    return lambda: nn.Sequential(nn.Linear(10, 16), act(), nn.Linear(16, 16), act(),
                                 nn.Linear(16, out))


def test_regression_target_shape_that_broadcasts_is_refused():
    """Regression: MSELoss on outputs (N, 1) and targets (N,) trained on the (N, N) broadcast
    (torch only warns) and the doctor reported that run."""
    x, _ = _xy()
    with pytest.raises(ValueError, match=r"broadcasts the model's outputs \(shape \(1,\)"):
        dlt.doctor(_mlp(1, nn.Tanh), (x, x[:, 0]), loss_fn=nn.MSELoss(), steps=3, verify=False)
    d = dlt.doctor(_mlp(1, nn.Tanh), (x.numpy(), x[:, :1].numpy()), loss_fn=nn.MSELoss(),
                   steps=3, verify=False)
    assert math.isfinite(d.baseline["train_loss"]) and math.isnan(d.baseline["val_acc"])


def test_batch_norm_on_one_row_batches_is_refused_before_training():
    """Regression: batch_size=1 with BatchNorm failed inside training with torch's message
    (no batch size named)."""
    x, y = _xy()

    def make():
        return nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))

    with pytest.raises(ValueError, match="fails on mini-batches of 1 row \\(batch_size 1"):
        dlt.doctor(make, (x, y), steps=3, batch_size=1, verify=False)
    d = dlt.doctor(make, (x, y), steps=3, batch_size=8, verify=False)
    assert d.baseline["steps"] == 3


def test_labels_as_numpy_int32_and_factory_class_and_optimizer_options():
    x, y = _xy()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = _mlp()()

        def forward(self, v):
            return self.body(v)

    a = dlt.doctor(Net, (x.numpy(), y.numpy().astype(np.int32)), steps=4, verify=False,
                   optimizer=("Adam", {"lr": 0.01, "betas": (0.8, 0.99)}))
    b = dlt.doctor(Net, (x, y), steps=4, verify=False,
                   optimizer=("adam", {"lr": 0.01, "betas": (0.8, 0.99)}))
    assert a.settings["optimizer"] == "adam" and a.settings["optimizer_kwargs"]["betas"]
    assert a.baseline["train_loss"] == b.baseline["train_loss"]
    for opt in (("rmsprop", {"lr": 1e-3, "momentum": 0.9}), ("adamw", {"weight_decay": 0.1}),
                ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True})):
        d = dlt.doctor(Net, (x, y), steps=3, verify=False, optimizer=opt)
        assert math.isfinite(d.baseline["train_loss"])


@pytest.mark.parametrize("opt, err, fragment", [
    ("lbfgs", ValueError, "unknown optimizer 'lbfgs'"),
    (("sgd", {"momentm": 0.9}), ValueError, "does not accept"),
    (("sgd", {"lr": 0.1, "nesterov": True}), ValueError, "Nesterov"),
    (("sgd", {"lr": float("nan")}), ValueError, "lr must be a positive finite number"),
    (("sgd",), TypeError, "optimizer must be a name or (name, kwargs)"),
])
def test_bad_optimizers_are_clear_errors(opt, err, fragment):
    x, y = _xy()
    with pytest.raises(err) as e:
        dlt.doctor(_mlp(), (x, y), optimizer=opt, steps=3, verify=False)
    assert fragment in str(e.value)


class _Attrs(nn.Module):
    """Layers as attributes (no nn.Sequential), one sigmoid module called three times."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(10, 16), nn.Linear(16, 16), nn.Linear(16, 16)
        self.d, self.act = nn.Linear(16, 2), nn.Sigmoid()
        for m in (self.a, self.b, self.c):  # N(0, 144): 2304x Glorot's, 22x the sigmoid's
            nn.init.normal_(m.weight, 0.0, 12.0)  # critical variance (N(0, 4), 64x: below it)

    def forward(self, x):
        return self.d(self.act(self.c(self.act(self.b(self.act(self.a(x)))))))


def test_cures_that_cannot_apply_are_skipped_and_the_run_is_reproducible():
    x, y = _xy(200)
    runs = [dlt.doctor(_Attrs, (x, y), steps=20, batch_size=16, seed=3, verify=True,
                       max_cures=5) for _ in range(2)]
    a, b = runs
    assert a.findings, "a sigmoid net with N(0, 144) weights has something to cure"
    assert [f.to_dict() for f in a.findings] == [f.to_dict() for f in b.findings]
    assert a.probes.equals(b.probes)
    assert [(v.prescription, v.after["train_loss"]) for v in a.verifications] == \
        [(v.prescription, v.after["train_loss"]) for v in b.verifications]
    # layers outside an nn.Sequential get their norm by wrapping (round 13); a model whose
    # activations are all functions of its forward has no activation module to swap
    wrapped = _Attrs()
    assert rx.insert_batchnorm(wrapped, x[:4]) == 3 and isinstance(wrapped.a, nn.Sequential)
    functional = nn.Module()
    functional.a, functional.d = nn.Linear(10, 16), nn.Linear(16, 2)
    functional.forward = lambda t: functional.d(torch.sigmoid(functional.a(t)))
    with pytest.raises(rx.NotApplicable):
        rx.swap_activations(functional, "relu", x[:4])


def test_diverging_model_is_a_divergence_finding_with_verified_cures():
    x, y = _xy()
    d = dlt.doctor(_mlp(), (x * 100, y), optimizer=("sgd", {"lr": 1e3}), steps=20,
                   batch_size=16, verify=True, max_cures=2)
    assert d.baseline["diverged"] and d.findings[0].kind in ("divergence", "lr_too_high")
    # a cure that trained (Adam: train loss 2.275, val acc 0.71) but whose loss ended above
    # 1.5x a constant prediction's (0.692, inputs x100) did not learn: 'did not help' since
    # doctorfix26, its line says why
    assert any(math.isfinite(v.after["train_loss"]) for v in d.verifications)
    assert all(v.helped or "did not help" in v.summary() for v in d.verifications)
    json.dumps(d.to_dict(), allow_nan=True)


def test_tiny_data_fewer_rows_than_the_batch():
    x, y = _xy(6)
    d = dlt.doctor(_mlp(), (x, y), steps=4, batch_size=64, verify=True, max_cures=1)
    assert d.baseline["steps"] == 4 and math.isnan(d.baseline["val_loss"])


# -- the command line --------------------------------------------------------------------------

FACTORIES = """
import torch
from torch import nn

def mlp():
    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))

def nan_mlp():
    m = mlp()
    with torch.no_grad():
        m[0].weight.fill_(float("nan"))
    return m

def conv1d():
    return nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 64, 10))

class Gru(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.out = nn.GRU(8, 8, batch_first=True), nn.Linear(8, 10)

    def forward(self, x):
        h, _ = self.rnn(x)
        return self.out(h[:, -1])

def not_a_module():
    return 42

def raises():
    raise RuntimeError("boom\\nsecond line")

class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(64, 10)

    def forward(self, x):
        raise KeyError("forward fails")

def broken():
    return Broken()

def wrong_width():
    return nn.Sequential(nn.Linear(100, 10))
"""


@pytest.fixture
def factories(tmp_path):
    p = tmp_path / "models.py"
    p.write_text(FACTORIES)
    (tmp_path / "syntax.py").write_text("def f(:\n    pass\n")
    return tmp_path


def _strict(text):
    def bad(c):
        raise ValueError(f"not strict JSON: {c}")

    return json.loads(text, parse_constant=bad)


@pytest.mark.parametrize("fn", ["mlp", "nan_mlp"])
def test_cli_json_is_strict_and_alone_on_stdout(factories, capsys, fn):
    """Regression: --json printed the JSON on stderr (stdout stayed empty)."""
    code, out, err = run_cli(capsys, "doctor", "--torch", f"{factories}/models.py:{fn}",
                             "--data", "digits", "--n", "150", "--steps", "3", "--json",
                             "--out", factories / "runs")
    assert code == 0, err
    d = _strict(out)
    assert set(d) >= {"findings", "baseline", "config"} and "stored in" in err
    assert d["baseline"]["diverged"] is (fn == "nan_mlp")
    code, out, err = run_cli(capsys, "doctor", "--torch", f"{factories}/models.py:mlp",
                             "--data", "digits", "--n", "150", "--steps", "3", "--json", "-q",
                             "--out", factories / "runs")
    # --quiet --json: the JSON alone, as run, sweep and reproduce print it (no messages)
    assert code == 0 and err == "" and "findings" in _strict(out), (out, err)


@pytest.mark.parametrize("fn", ["conv1d", "Gru"])
def test_cli_shapes_conv1d_and_rnn_inputs(factories, capsys, fn):
    code, out, err = run_cli(capsys, "doctor", "--torch", f"{factories}/models.py:{fn}",
                             "--data", "digits", "--n", "120", "--steps", "2",
                             "--out", factories / "runs")
    assert code == 0, err
    assert "depthlab doctor" in out


@pytest.mark.parametrize("spec, data, fragments", [
    ("syntax.py:f", "digits", ("importing", "SyntaxError")),
    ("models.py:missing", "digits", ("has no 'missing'",)),
    ("models.py:not_a_module", "digits", ("returned an int",)),
    ("models.py:raises", "digits", ("RuntimeError: boom second line",)),
    ("models.py:broken", "digits", ("KeyError", "forward fails")),
    ("models.py:wrong_width", "digits", ("fails on inputs of shape (64,)",)),
    ("models.py:mlp", "no-such-data-set", ("--data 'no-such-data-set'",)),
    ("models.py", "digits", ("FILE.py:FUNCTION",)),
])
def test_cli_bad_inputs_are_one_line_and_exit_2(factories, capsys, spec, data, fragments):
    code, out, err = run_cli(capsys, "doctor", "--torch", f"{factories}/{spec}", "--data", data,
                             "--n", "100", "--steps", "2", "--out", factories / "runs")
    assert out == ""
    assert_one_line_error(code, err, *fragments)


def test_no_warning_escapes_the_loss_check():
    x, _ = _xy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="broadcasts"):
            dlt.doctor(_mlp(1), (x, x[:, 0]), loss_fn=nn.MSELoss(), steps=2, verify=False)


# -- prescriptions -----------------------------------------------------------------------------

@pytest.mark.parametrize("init, target", [("matched", 2.0 / 100), ("he_normal", 2.0 / 100),
                                          ("lsuv", None)])
def test_reinitializing_a_weight_norm_layer_changes_the_weight_it_uses(init, target):
    """Regression: re-initialization and LSUV changed weight_norm's direction v only, so the
    layer kept its row norms g and its (10x too large) scale."""
    from torch.nn.utils.parametrizations import weight_norm

    torch.manual_seed(0)
    model = nn.Sequential(weight_norm(nn.Linear(100, 100)), nn.ReLU(), nn.Linear(100, 10))
    with torch.no_grad():
        model[0].parametrizations.weight.original0.mul_(10.0)
    x = torch.randn(256, 100)
    new, _ = rx.apply({"init": init}, model, TorchTrainSpec(), x)
    if target is None:  # LSUV: unit output variance on the batch
        assert abs(float(new[0](x).detach().var()) - 1.0) < rx.LSUV_TOL
    else:
        assert abs(float(new[0].weight.detach().var()) / target - 1) < 0.15


def test_diagnoses_of_two_models_of_the_same_layout_are_both_stored(tmp_path):
    """Regression: the stored id hashed the class, layer names and settings only, so the
    diagnosis of the same layout with other weights (e.g. the user's fixed init) silently
    replaced the first; the same call again still replaces its own."""
    from depthlab.experiments.store import Store

    x, y = _xy()

    def bad():
        m = _mlp()()
        nn.init.normal_(m[0].weight, 0.0, 1.0)
        return m

    ids = [dlt.doctor(f, (x, y), steps=3, verify=False, out=tmp_path).settings["run_id"]
           for f in (_mlp(), bad, _mlp())]
    assert ids[0] != ids[1] and ids[0] == ids[2]
    with Store(tmp_path) as store:
        assert sorted(store.runs()["id"]) == sorted(set(ids))


def test_population_batchnorm_counts_every_row_once():
    """Regression: the running statistics were the average of per-batch averages, so a short
    last batch (2 rows after 1024) weighed as much as a full one: with sorted data the mean
    was off by half the shift."""
    from depthlab.torch.train import population_batchnorm

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 8),
                          nn.BatchNorm1d(8, momentum=0.3))
    x = torch.cat([torch.randn(1024, 10), torch.randn(2, 10) + 5.0])
    assert population_batchnorm(model, x) == 2
    with torch.no_grad():
        h = model[0](x)
    torch.testing.assert_close(model[1].running_mean, h.mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model[1].running_var, h.var(0), rtol=1e-5, atol=1e-5)
    assert model[4].momentum == 0.3 and model.training


@pytest.mark.parametrize("where, make_bad, fragment", [
    ("x", lambda x, y: (x.__setitem__((7, 2), np.nan), (x, y))[1],
     "x contains NaN or infinity (first at row 7, column 2)"),
    ("x", lambda x, y: (x.__setitem__((7, 2), 1e300), (x, y))[1],
     "x value 1e+300 (row 7, column 2) does not fit"),
    ("y", lambda x, y: (x, np.where(np.arange(len(x))[:, None] == 3, np.inf, x[:, :1])),
     "y contains NaN or infinity (first at row 3, column 0)"),
])
def test_non_finite_data_are_refused_by_row_and_column(where, make_bad, fragment):
    """Regression: NaN or infinite inputs (or float64 values beyond float32) trained until the
    loss was NaN and the doctor reported a 'divergence' finding instead of the bad entry."""
    x, y = _xy()
    data = make_bad(x.numpy().astype(np.float64), y.numpy())
    kw = {"loss_fn": nn.MSELoss()} if where == "y" else {}
    with pytest.raises(ValueError) as e:
        dlt.doctor(_mlp(1 if where == "y" else 2), data, steps=2, verify=False, **kw)
    assert fragment in str(e.value)


def test_numpy_integers_are_accepted_for_counts_and_seed():
    x, y = _xy()
    a = dlt.doctor(_mlp(), (x, y), steps=np.int64(3), batch_size=np.int32(16),
                   seed=np.int64(2), max_cures=np.int64(1), verify=False)
    b = dlt.doctor(_mlp(), (x, y), steps=3, batch_size=16, seed=2, verify=False)
    assert a.settings["seed"] == 2 and a.baseline["train_loss"] == b.baseline["train_loss"]


# -- reports of torch runs ---------------------------------------------------------------------

def test_stored_doctor_run_carries_the_theory_the_report_draws(tmp_path):
    """Regression (issue: theory "shown in the report next to the measured values"): a stored
    torch doctor run had no theory, so its report figure had no dashed prediction."""
    from depthlab import plot
    from depthlab.experiments.store import Store

    x, y = _xy(200)
    make = _mlp(2, nn.Tanh)
    d = dlt.doctor(make, (x, y), steps=4, verify=False, out=tmp_path)
    with Store(tmp_path) as store:
        config = store.run(d.settings["run_id"])["config"]
    th, note = plot.theory_for_config(config)
    assert th is not None and "depthlab.torch.predict" in note
    assert list(th["layer"]) == sorted(set(d.probes.loc[d.probes.layer >= 1, "layer"]))
    assert th["grad_pre_var"].iloc[-1] == pytest.approx(1.0)
    assert th["act_var"].iloc[:-1].gt(0).all() and math.isnan(th["act_var"].iloc[-1])
    fig = plot.gradient_per_layer({"run": d.probes}, {"run": th})
    assert any(line.get_linestyle() == "--" for line in fig.axes[0].get_lines())


def test_a_model_the_theory_does_not_cover_is_stored_without_theory(tmp_path):
    from depthlab import plot
    from depthlab.experiments.store import Store

    x, y = _xy(120)
    model = nn.Sequential(nn.Linear(10, 16), nn.Softshrink(), nn.Linear(16, 2))
    d = dlt.doctor(model, (x, y), steps=3, verify=False, out=tmp_path)
    with Store(tmp_path) as store:
        config = store.run(d.settings["run_id"])["config"]
    assert "theory" not in config["model"]
    assert plot.theory_for_config(config)[0] is None


def _deep(act, std, n=8, width=32, d_in=10, out=2):
    def make():
        layers = [nn.Linear(d_in, width), act()]
        for _ in range(n - 1):
            layers += [nn.Linear(width, width), act()]
        model = nn.Sequential(*layers, nn.Linear(width, out))
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, std)
        return model
    return make


@pytest.mark.parametrize("act, kind", [(nn.Hardtanh, "saturation"), (nn.ReLU6, "dead_relu"),
                                       (nn.Hardsigmoid, "saturation")])
def test_activation_modules_outside_the_numpy_registry_are_diagnosed(act, kind):
    """Regression: Hardtanh, ReLU6, Hardsigmoid, CELU, Softplus, ... (probed, in
    dlt.ACTIVATIONS) were 'no activation module' to the doctor: a Hardtanh net with N(0, 1)
    weights, saturated everywhere, got no saturation finding."""
    x, y = _xy(200)
    d = dlt.doctor(_deep(act, 1.0), (x, y), steps=10, batch_size=32, verify=False)
    assert d.config["activation"] == dlt.activation_spec(act()).name
    assert kind in [f.kind for f in d.findings], [f.kind for f in d.findings]


def test_prescriptions_swap_and_match_activations_outside_the_numpy_registry():
    model = _deep(nn.Hardtanh, 1.0, n=3)()
    assert rx.swap_activations(model, "relu") == 3
    assert not any(isinstance(m, nn.Hardtanh) for m in model.modules())
    relu6 = _deep(nn.ReLU6, 1.0, n=2, width=400)()
    layers = rx.trace(relu6, torch.randn(4, 10))
    assert [t.activation_name for t in layers] == ["relu6", "relu6", None]
    rx.reinitialize(relu6, layers, "matched")
    assert float(relu6[2].weight.var()) == pytest.approx(2.0 / 400, rel=0.05)  # He, as ReLU


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_cli_gives_a_conv2d_model_the_images_of_an_npz_file(tmp_path, capsys, layout):
    """Regression: an .npz of images (N, H, W, C) or (N, C, H, W) was flattened with no image
    shape, so a model starting with a Conv2d got rows (N, H*W*C) and failed."""
    rng = np.random.default_rng(0)
    x = rng.random((90, 6, 6, 3)).astype(np.float32)
    np.savez(tmp_path / "imgs.npz", x=x if layout == "nhwc" else x.transpose(0, 3, 1, 2),
             y=rng.integers(0, 3, 90))
    (tmp_path / "cnn.py").write_text(
        "from torch import nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),\n"
        "                         nn.Linear(4 * 36, 3))\n")
    code, out, err = run_cli(capsys, "doctor", "--torch", f"{tmp_path}/cnn.py:make", "--data",
                             tmp_path / "imgs.npz", "--steps", "2", "--out", tmp_path / "runs")
    assert code == 0, err


def test_the_output_layer_is_not_hidden_even_with_a_sigmoid_after_it():
    """Regression: with nn.Sigmoid after the last Linear (BCELoss) the output layer counted as
    a hidden layer: its init was judged, and it was the 'last hidden layer' of the gradient
    ratio (the NumPy doctor excludes the output activation)."""
    x, _ = _xy(300)
    y = (x[:, :1] + x[:, 1:2] > 0).float()

    def make():
        return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                             nn.Linear(32, 1), nn.Sigmoid())

    d = dlt.doctor(make, (x, y), loss_fn=nn.BCELoss(), steps=10, batch_size=32, verify=False)
    assert d.findings and all(3 not in f.layers for f in d.findings), \
        [(f.kind, f.layers) for f in d.findings]


def test_batch_norm_after_a_layer_with_few_inputs_per_channel():
    """Regression: BN's backward factor used 1 / mean_c(qb_c); each channel is divided by its
    own batch variance, and E[1 / qb_c] ~ 2 / mean(qb_c) for 4 inputs per unit, so the
    first layer's gradient was predicted ~0.7x too small."""
    own = []
    for s in range(6):
        torch.manual_seed(s)
        model = nn.Sequential(nn.Linear(4, 256), nn.BatchNorm1d(256), nn.ReLU(),
                              nn.Linear(256, 256), nn.BatchNorm1d(256), nn.ReLU(),
                              nn.Linear(256, 10))
        df = dlt.predict(model, torch.randn(512, 4), torch.randint(0, 10, (512,)), CE)
        r = _ratios(df, "grad_pre_std")
        own.append(r[0] / r[1])  # layer 1's own factor (layer 2 feeds it)
    assert abs(np.mean(own) - 1) < 0.04, own


def test_the_warm_up_cure_of_a_short_run_changes_something():
    """Regression: with fewer than 20 steps the warm-up cure was ``warmup = 1`` (update k uses
    ``lr * min(1, k / 1)`` = lr: no change), retrained and reported as 'did not help'."""
    for steps in (3, 15, 40):
        spec = TorchTrainSpec(steps=steps)
        cures = [c for c, _ in rx.alternatives("divergence", "relu", spec, False)]
        (warm,) = [c["warmup"] for c in cures if "warmup" in c]
        assert warm >= 2 and warm == max(2, steps // 10)


def test_mixed_activations_led_by_one_outside_the_numpy_registry():
    """Regression: a ReLU layer with a bad init in a mostly-Hardtanh net made the rules
    prescribe ``init = None`` ('the None variance recommended for hardtanh units'), and
    verifying it crashed with ValueError: unknown init 'None'."""
    x, y = _xy(200)

    def make():
        m = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.Hardtanh(),
                          nn.Linear(32, 32), nn.Hardtanh(), nn.Linear(32, 2))
        nn.init.normal_(m[0].weight, 0.0, 3.0)
        return m

    d = dlt.doctor(make, (x, y), steps=10, batch_size=32, verify=True, max_cures=2)
    assert d.config["activation"] == "hardtanh"
    for f in d.findings:
        assert "None" not in f.message and None not in f.prescription.values(), f
    assert rx.translate({"init": None}, TorchTrainSpec()) == {"init": "matched"}


def test_cli_json_stays_strict_when_the_users_code_prints(tmp_path, capsys):
    """Regression: a factory or forward that prints (common while debugging) wrote into the
    JSON on stdout."""
    (tmp_path / "noisy.py").write_text(
        "from torch import nn\n"
        "print('importing the model file')\n"
        "class Noisy(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.body = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))\n"
        "    def forward(self, x):\n"
        "        print('forward', tuple(x.shape))\n"
        "        return self.body(x)\n"
        "def make():\n"
        "    print('building')\n"
        "    return Noisy()\n")
    code, out, err = run_cli(capsys, "doctor", "--torch", f"{tmp_path}/noisy.py:make", "--data",
                             "digits", "--n", "120", "--steps", "2", "--json",
                             "--out", tmp_path / "runs")
    assert code == 0, err
    assert "findings" in _strict(out) and "building" in err and "forward" in err


def test_cli_unusable_out_fails_before_training(tmp_path, capsys):
    (tmp_path / "taken").write_text("a file where the results folder should be")
    (tmp_path / "m.py").write_text(
        "from torch import nn\n"
        "def make():\n"
        "    raise AssertionError('the factory must not run')\n")
    code, out, err = run_cli(capsys, "doctor", "--torch", f"{tmp_path}/m.py:make", "--data",
                             "digits", "--out", tmp_path / "taken")
    assert_one_line_error(code, err, "taken")


def test_a_factory_that_returns_one_shared_instance():
    """Regression: ``def make(): return model`` (a global) handed the baseline's trained model
    to every cure, so the cures were verified from trained weights, not from the model as
    built; the result must equal the same model given as a factory of fresh copies."""
    x, y = _xy()
    torch.manual_seed(5)
    shared = _mlp()()  # diverges at this lr: trained, its weights are NaN
    as_built = copy.deepcopy(shared)

    def make_shared():
        return shared

    kw = {"optimizer": ("sgd", {"lr": 1e3}), "steps": 20, "batch_size": 16, "verify": True,
          "max_cures": 2}
    a = dlt.doctor(make_shared, (x * 100, y), **kw)
    b = dlt.doctor(as_built, (x * 100, y), **kw)
    # cures trained from the model as built (not its NaN weights): finite losses
    assert a.baseline["diverged"] and any(math.isfinite(v.after["train_loss"])
                                          for v in a.verifications)
    assert a.baseline["steps"] == b.baseline["steps"]
    assert [v.prescription for v in a.verifications] == [v.prescription for v in b.verifications]
    np.testing.assert_equal([v.after["train_loss"] for v in a.verifications],
                            [v.after["train_loss"] for v in b.verifications])


def test_cli_user_file_imports_the_modules_beside_it(tmp_path, capsys):
    """Regression: ``from myblocks import Block`` in the user's file failed
    (ModuleNotFoundError): unlike ``python FILE.py`` the file's folder was not on the path."""
    import sys

    (tmp_path / "round3_sibling_blocks.py").write_text(
        "from torch import nn\n"
        "def block():\n"
        "    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))\n")
    (tmp_path / "model.py").write_text(
        "from round3_sibling_blocks import block\n"
        "def make():\n"
        "    return block()\n"
        "def lazy():\n"
        "    import round3_sibling_blocks as b\n"
        "    return b.block()\n")
    before = list(sys.path)
    try:
        for fn in ("make", "lazy"):
            code, out, err = run_cli(capsys, "doctor", "--torch", f"{tmp_path}/model.py:{fn}",
                                     "--data", "digits", "--n", "100", "--steps", "2",
                                     "--out", tmp_path / "runs")
            assert code == 0, err
        assert sys.path == before
    finally:
        sys.modules.pop("round3_sibling_blocks", None)


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_same_padding_with_an_even_kernel(mode):
    """Regression: padding='same' with an even kernel was taken as symmetric (k - 1) // 2, one
    output position short per dimension, so the gradient into that conv's input was predicted
    0.88x of the measured one (depthwise conv, then a 4x4 'same' conv)."""
    def make():
        return nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.Tanh(),
            nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.Tanh(),
            nn.Conv2d(32, 32, 4, padding="same", padding_mode=mode), nn.Tanh(),
            nn.Flatten(), nn.Linear(32 * 64, 10))

    r = np.sqrt(_mc_grad_ratio(make, (32, 3, 8, 8), 10, seeds=4))
    assert abs(r[1] - 1) < 0.05, r


def test_storing_with_theory_leaves_the_diagnosis_unchanged(tmp_path):
    """The theory is computed on the untrained baseline before it trains: its forward pass must
    leave batch-norm statistics, modes and random streams as they were."""
    x, y = _xy(200)

    def make():
        return nn.Sequential(nn.Linear(10, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 32),
                             nn.Tanh(), nn.Linear(32, 2))

    a = dlt.doctor(make, (x, y), steps=8, batch_size=16, verify=False)
    b = dlt.doctor(make, (x, y), steps=8, batch_size=16, verify=False, out=tmp_path)
    assert a.probes.equals(b.probes) and a.baseline["train_loss"] == b.baseline["train_loss"]


def test_float_class_labels_are_named_in_the_error():
    """The error for labels the loss cannot take names the targets' dtype and shape, not only
    the inputs' shape (float 0/1 labels with CrossEntropyLoss): since round 10 one TypeError
    before any forward, with the fix."""
    x, y = _xy()
    with pytest.raises(TypeError, match=r"CrossEntropyLoss needs integer class labels, got "
                       r"floating-point targets of shape \(\) per example.*astype\(np\.int64\)"):
        dlt.doctor(_mlp(), (x, y.float()), steps=2, verify=False)


class _TanhBlock(nn.Module):
    def __init__(self, w_in, w, projection):
        super().__init__()
        self.f = nn.Sequential(nn.Linear(w_in, w), nn.Tanh(), nn.Linear(w, w))
        self.p = nn.Linear(w_in, w, bias=False) if projection else None
        self.post = nn.Tanh()

    def forward(self, x):
        return self.post((x if self.p is None else self.p(x)) + self.f(x))


def test_tanh_residual_blocks_with_a_projection_shortcut_are_unbiased():
    def make():
        return nn.Sequential(nn.Linear(16, 128), nn.Tanh(), _TanhBlock(128, 256, True),
                             _TanhBlock(256, 256, False), _TanhBlock(256, 256, False),
                             nn.Linear(256, 10))

    r = np.sqrt(_mc_grad_ratio(make, (256, 16), 10, seeds=5))
    assert len(r) == 9 and np.all(np.abs(r - 1) < 0.05), r


def test_the_users_own_warnings_still_show():
    x, y = _xy()

    class Warns(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = _mlp()()

        def forward(self, v):
            warnings.warn("round3: a warning of the user's own", UserWarning, stacklevel=2)
            return self.body(v)

    with pytest.warns(UserWarning, match="round3: a warning of the user's own"):
        dlt.doctor(Warns, (x, y), steps=2, verify=False)


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_doctor_and_predict_inside_no_grad_or_inference_mode(context):
    """Regression: called inside ``torch.no_grad()`` (e.g. from an evaluation helper) the
    doctor failed its first training step ('element 0 of tensors does not require grad') and
    predict failed inside ``inference_mode`` (data made there, too)."""
    x, y = _xy()
    ref = dlt.doctor(_mlp(), (x, y), steps=4, verify=False)
    model = _mlp()()
    with context():
        xs, ys = x.clone(), y.clone()  # inference tensors under inference_mode
        d = dlt.doctor(_mlp(), (xs, ys), steps=4, verify=False)
        p = dlt.predict(model, xs, ys, CE)
    assert d.baseline["train_loss"] == ref.baseline["train_loss"]
    assert p["value"].notna().all()


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_probe_and_discover_inside_no_grad_or_inference_mode(context):
    """Regression: ``dlt.probe`` called inside ``torch.no_grad()`` silently returned NaN for
    every gradient quantity; inside ``inference_mode`` probe and discover raised
    'Inference tensors do not track version counter'."""
    torch.manual_seed(0)
    model = _mlp()()
    x, y = _xy(64)
    ref = dlt.probe(model, x, y, CE)
    with context():
        xs, ys = x.clone(), y.clone()
        got = dlt.probe(model, xs, ys, CE)
        layers = dlt.discover(model, xs)
    pd_testing = pytest.importorskip("pandas.testing")
    pd_testing.assert_frame_equal(got, ref)
    assert [info.name for info in layers] == ["0", "2", "4"]


def test_reinitialization_keeps_frozen_layers():
    """Regression: a 'matched' or LSUV re-initialization also re-drew frozen layers
    (requires_grad False, e.g. a pretrained backbone), which training can never repair."""
    torch.manual_seed(0)
    model = _mlp()()
    model[0].requires_grad_(False)
    frozen = model[0].weight.detach().clone()
    for init in ("matched", "lsuv"):
        rx.apply({"init": init}, model, TorchTrainSpec(), torch.randn(64, 10))
        assert torch.equal(model[0].weight, frozen)
    model.requires_grad_(False)
    with pytest.raises(rx.NotApplicable, match="no trainable weight layers"):
        rx.apply({"init": "matched"}, model, TorchTrainSpec(), torch.randn(8, 10))


def test_frozen_pretrained_layers_are_not_judged_for_their_init():
    """A frozen layer's weights (a pretrained backbone) are not an initialization: no
    init_mismatch for it, only for the trainable ones."""
    x, y = _xy(200)

    def make():
        m = _mlp()()
        for layer in (m[0], m[2]):
            nn.init.normal_(layer.weight, 0.0, 3.0)  # far from He: judged if trainable
        m[0].requires_grad_(False)
        return m

    d = dlt.doctor(make, (x, y), steps=5, batch_size=16, verify=False)
    f = d.finding("init_mismatch")
    assert f is not None and 1 not in f.layers and 2 in f.layers
