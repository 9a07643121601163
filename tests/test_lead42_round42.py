"""Round 42, lead: the torch activations the NumPy engine gained this round (Softplus,
Hardtanh, LogSigmoid, ReLU6, Hardsigmoid, Hardswish) cross the bridge both ways with their
arguments, and a bridged network's gradients equal torch autograd's."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl

torch = pytest.importorskip("torch")
from depthlab.bridge import from_torch, to_torch  # noqa: E402

CASES = [
    ("softplus", {"beta": 2.0, "threshold": 1.5}, torch.nn.Softplus),
    ("softplus", {}, torch.nn.Softplus),
    ("hardtanh", {"min_val": -0.5, "max_val": 2.0}, torch.nn.Hardtanh),
    ("logsigmoid", {}, torch.nn.LogSigmoid),
    ("relu6", {}, torch.nn.ReLU6),
    ("hardsigmoid", {}, torch.nn.Hardsigmoid),
    ("hardswish", {}, torch.nn.Hardswish),
]


@pytest.mark.parametrize("name,kwargs,cls", CASES)
def test_torch_activations_cross_the_bridge_both_ways(name, kwargs, cls) -> None:
    net = dl.mlp([4, 6, 6, 3], activation=name, activation_kwargs=kwargs or None,
                 dtype="float64", seed=3)
    model = to_torch(net)
    acts = [m for m in model if isinstance(m, cls)]
    assert len(acts) == 2 and all(type(m) is cls for m in acts)
    for key, value in kwargs.items():
        assert getattr(acts[0], key) == value
    x = np.random.default_rng(1).normal(size=(11, 4)) * 4.0  # past every kink and threshold
    g = np.random.default_rng(2).normal(size=(11, 3))
    xt = torch.from_numpy(x).requires_grad_(True)
    out = model(xt)
    out.backward(torch.from_numpy(g))
    assert np.abs(out.detach().numpy() - net.forward(x, training=True)).max() < 1e-12
    assert np.abs(net.backward(g.copy()) - xt.grad.numpy()).max() < 1e-12
    for p, q in zip(net.parameters(), model.parameters(), strict=True):
        want = q.grad.numpy().T if q.ndim == 2 else q.grad.numpy()
        assert np.abs(p.grad - want).max() < 1e-12
    back = from_torch(model)
    assert np.abs(back.predict(x) - net.predict(x)).max() == 0.0
    assert [a.fn.name for a in back.layers if hasattr(a, "fn")] == [name, name]


@pytest.mark.parametrize("out", ["taken", "taken/sub/runs"])
def test_torch_doctor_refuses_an_unusable_out_before_the_users_file_runs(tmp_path, capsys,
                                                                         out) -> None:
    """tdochunt42 opened --out's store after the factory (so a refused factory leaves no store
    behind); an unusable --out must still be refused before the user's file runs."""
    from tests.helpers.cli import assert_one_line_error, run_cli

    (tmp_path / "taken").write_text("a file where the results folder should be")
    (tmp_path / "m.py").write_text("raise AssertionError('the file must not run')\n")
    code, _, err = run_cli(capsys, "doctor", "--torch", f"{tmp_path}/m.py:make", "--data",
                           "digits", "--out", tmp_path / out)
    assert_one_line_error(code, err, "taken", "is a file, not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.py", "taken"]


def test_torch_doctor_leaves_no_store_when_the_factory_is_refused(tmp_path, capsys) -> None:
    from tests.helpers.cli import assert_one_line_error, run_cli

    (tmp_path / "m.py").write_text("def make():\n    return None\n")
    code, _, err = run_cli(capsys, "doctor", "--torch", f"{tmp_path}/m.py:make", "--data",
                           "digits", "--out", tmp_path / "runs")
    assert_one_line_error(code, err, "returned None")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("module", [torch.nn.Softplus(beta=3.0, threshold=2.0),
                                    torch.nn.Hardtanh(-0.5, 2.0), torch.nn.ReLU6(),
                                    torch.nn.Softplus()])
def test_torch_doctor_judges_an_activation_with_its_own_arguments(module) -> None:
    """The registry found Softplus/Hardtanh (nphunt42) while the torch doctor passed them no
    arguments: nn.Softplus(beta=3) was judged as Softplus(beta=1)."""
    from depthlab.torch.doctor import _activation_fn

    fn = _activation_fn(module)
    s = np.linspace(-4.0, 4.0, 81)
    want = module(torch.from_numpy(s)).numpy()
    assert np.abs(fn.forward(s) - want).max() < 1e-12


def test_an_lsuv_cure_of_one_hidden_layer_says_what_was_not_judged() -> None:
    """tdochunt42: LSUV curing an init mismatch of an LSTM classifier (one hidden layer: no
    step-0 signal from a first to a last hidden layer) read 'init variance factor 40.48 ->
    none (the cure left nothing this metric measures)', though the layer is still there."""
    import math

    from depthlab.diagnosis.findings import Verification

    v = Verification("init_mismatch", {"init": "lsuv"}, {"train_loss": 1.204},
                     {"train_loss": 0.890}, "init variance factor", 40.48, math.nan,
                     resolved=True, helped=True)
    line = v.summary()
    assert "left nothing this metric measures" not in line, line
    assert "40.48 -> none judged (a data-driven init is judged by its step-0 signal" in line


def test_fit_takes_torchs_weight_and_bias_groups_in_any_order() -> None:
    """paramgroups42: weights with weight decay in one group, biases without in another hold
    every parameter of the net in another order than net.parameters(); fit refused them."""
    net = dl.mlp([4, 6, 3], seed=0)
    weights = [p for p in net.parameters() if p.value.ndim == 2]
    biases = [p for p in net.parameters() if p.value.ndim == 1]
    opt = dl.optimizer("sgd", [{"params": weights, "weight_decay": 1e-4},
                               {"params": biases, "weight_decay": 0.0}], lr=0.1, momentum=0.9)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype(np.float32), rng.integers(0, 3, 32)
    before = [p.value.copy() for p in net.parameters()]
    dl.fit(net, x, y, optimizer=opt, epochs=2, batch_size=8)
    assert all(np.any(p.value != b) for p, b in zip(net.parameters(), before))
    with pytest.raises(TypeError, match=r"param_groups\[i\]\['lr'\]"):
        dl.fit(net, x, y, optimizer=opt, lr=0.5, epochs=1)


@pytest.mark.parametrize("paths", ["kernels", "numpy"])
def test_relu6_units_on_the_flat_side_are_inactive_not_saturated(paths) -> None:
    """listacts42: dl.probe counted ReLU6's flat side (s <= 0) as saturated (0.42-0.64 of the
    entries at He init) and gave it no inactive_frac, where dlt.probe counts it inactive."""
    from depthlab.probes import accel

    net = dl.mlp([5, 40, 40, 3], activation="relu6", init="he_normal", seed=0,
                 dtype="float64")
    x = np.random.default_rng(0).normal(size=(64, 5)) * 3.0
    y = np.arange(64) % 3
    with accel.numpy_only() if paths == "numpy" else _nothing():
        t = dl.probe(net, x, y)
    s = x @ net.parameters()[0].value + net.parameters()[1].value
    row = t[t.layer == 1].set_index("quantity")["value"]
    assert row["inactive_frac"] == pytest.approx(np.mean(s <= 0))
    assert row["saturated_frac"] == pytest.approx(np.mean(s >= 6))


def _nothing():
    import contextlib

    return contextlib.nullcontext()
