"""Round 34b (badinput34b): bad input to public functions refused at the boundary with one
line naming the value (before: an AttributeError deep inside, NumPy's MemoryError, or a
silently wrong result)."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl
from depthlab import layers as L
from depthlab import theory
from depthlab.memory import MemoryRefusal


@pytest.mark.parametrize("name", ["glorot_uniform", "orthogonal"])
def test_initializer_refuses_a_shape_that_cannot_fit_before_drawing(monkeypatch, name):
    # 1000 x 1000: 8 MB of float64 samples (orthogonal: 3 such arrays) over a 4 MiB limit;
    # before: drawn (or NumPy's "Unable to allocate 7.28 TiB" for (10**6, 10**6))
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "4M")
    init = dl.initializer(name)
    with pytest.raises(MemoryRefusal, match=r"of shape \(1000, 1000\) \(1,000,000 float32 "
                                            r"values\) needs about .* nothing was allocated"):
        init((1000, 1000), np.random.default_rng(0))
    # a small shape is drawn as before: W^T W = I for orthogonal, glorot's bound kept
    w = init((20, 10), np.random.default_rng(0), "float64")
    if name == "orthogonal":
        np.testing.assert_allclose(w.T @ w, np.eye(10), atol=1e-12)
    else:
        assert np.abs(w).max() <= np.sqrt(6.0 / 30.0)


def test_residual_branch_checked_when_built_and_a_list_of_layers_is_a_branch():
    x = np.random.default_rng(1).normal(size=(5, 4))
    with pytest.raises(TypeError, match=r"Residual branch = None is not accepted; accepted: "
                                        r"a Sequential, a depthlab layer or a list"):
        L.Residual(None)  # before: accepted; "'NoneType' object has no attribute 'leaves'"
    dense = L.Dense(4, 4, rng=0, dtype="float64")
    net = dl.Network([L.Residual([dense])], n_inputs=4)
    ref = x + (x @ dense.W.value + dense.b.value)  # y = x + F(x), F the Dense layer
    np.testing.assert_allclose(net.predict(x), ref, rtol=1e-12)
    with pytest.raises(ValueError, match="the residual branch ends with 5 features, its "
                                         "input has 4"):
        dl.Network([L.Residual(L.Dense(4, 5, rng=0))], n_inputs=4)


@pytest.mark.parametrize("sizes", ["555", [5, "3", 5], [5, float("inf"), 3]])
def test_theory_sizes_of_text_or_infinity_refused(sizes):
    # before: "555" was the widths [5, 5, 5], "3" a width of 3; inf an OverflowError
    with pytest.raises(TypeError, match="sizes must be a sequence of positive integers, got"):
        theory.propagate(sizes, "tanh")


def test_theory_sizes_from_a_generator_still_read():
    a = theory.propagate((n for n in [5, 4, 3]), "tanh")
    b = theory.propagate([5, 4, 3], "tanh")
    assert a.equals(b)


def test_execute_and_ids_of_something_that_is_not_a_config():
    from depthlab.experiments import execute, run_id, sweep_id
    from depthlab.experiments.config import ConfigError

    # before: AttributeError "'NoneType' object has no attribute 'items'"
    with pytest.raises(ConfigError, match=r"a config must be a table of sections \(a dict\), "
                                          "got NoneType"):
        execute(None)
    with pytest.raises(TypeError, match="run_id needs a config"):
        run_id(["model"])
    with pytest.raises(TypeError, match="sweep_id needs a sweep config"):
        sweep_id(None)  # before: the id of "null"


def test_forward_training_must_be_a_bool():
    net = dl.mlp([4, 8, 3], dropout=0.5, seed=0)
    x = np.ones((6, 4), dtype=np.float32)
    with pytest.raises(TypeError, match=r"training='eval' is not accepted; accepted: True"):
        net.forward(x, training="eval")  # before: truthy, dropout applied
    np.testing.assert_array_equal(net.forward(x, training=np.bool_(False)), net.predict(x))


def test_store_flags_must_be_bools(tmp_path):
    from depthlab.experiments import Store

    with pytest.raises(TypeError, match=r"create='no' is not accepted; accepted: True or False"):
        Store(tmp_path / "s", create="no")
    assert not (tmp_path / "s").exists()  # before: the store was created


def test_probe_recorder_refuses_histogram_bins_that_cannot_fit_before_training(monkeypatch):
    # before: n_bins=10**9 was counted into 8 GB per histogram for minutes (no refusal);
    # 10**6 bins x 4 kinds x (step 0 + end) x 1 layer is 64 MB + 24 MB over a 16 MiB limit
    x = np.random.default_rng(0).normal(size=(8, 3))
    y = np.arange(8) % 2
    net = dl.mlp([3, 4, 2], seed=0)
    w0 = net.parameters()[0].value.copy()
    rec = dl.ProbeRecorder(x, y, n_bins=10**6, histogram_steps=[0, "end"])
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "16M")
    with pytest.raises(MemoryRefusal, match=r"ProbeRecorder\(n_bins=1,000,000\) histograms "
                                            r"\(2 histogram steps x 1 layers x 4 kinds"):
        dl.fit(net, x, y, epochs=1, callbacks=[rec])
    np.testing.assert_array_equal(net.parameters()[0].value, w0)  # refused before training


@pytest.mark.parametrize("bad, kind, text", [
    (np.array([[1.0, 2.0], [3.0, np.nan]]), ValueError, r"row 1, column 1: nan\)"),
    (np.array([["a", "b"]]), TypeError, r"dtype <U1 is not accepted \(row 0, column 0 holds"),
])
def test_fit_standardizer_refuses_nan_and_text(bad, kind, text):
    from depthlab.data import fit_standardizer

    # before: NaN -> a NaN mean and std returned (every standardized value NaN); text ->
    # NumPy's "the resolved dtypes are not compatible with add.reduce"
    with pytest.raises(kind, match=text):
        fit_standardizer(bad)


def test_diagnosis_finding_of_a_misspelt_kind_is_named_not_none():
    import pandas as pd

    from depthlab.diagnosis import Diagnosis

    d = Diagnosis(findings=[], baseline={}, probes=pd.DataFrame(), config={}, settings={})
    # before: None, read as "no vanishing gradients" whatever the diagnosis found
    with pytest.raises(ValueError, match=r"unknown finding kind 'vanishing_gradient' \(did you "
                                         r"mean 'vanishing_gradients'\?\)"):
        d.finding("vanishing_gradient")
    assert d.finding("vanishing_through_time") is None  # dlt.doctor's own kind, not found here
    for kind in d.kinds:
        assert d.finding(kind).kind == kind


def test_gauss_expect_names_an_integrand_that_is_not_elementwise():
    # before: "'str' object is not callable" and NumPy's matmul "mismatch in its core
    # dimension 0 ... (size 3 is different from 464)"
    with pytest.raises(TypeError, match=r"gauss_expect: g must be a function of the Gaussian "
                                        r"nodes .*got str 'tanh'"):
        theory.gauss_expect("tanh", 1.0)
    with pytest.raises(ValueError, match=r"g returned an array of shape \(3,\); expected g "
                                         "applied elementwise"):
        theory.gauss_expect(lambda s: np.ones(3), 1.0)
    # E[s^2] = var; a constant g broadcasts: E[2] = 2
    assert theory.gauss_expect(np.square, 2.5) == pytest.approx(2.5, rel=1e-12)
    assert theory.gauss_expect(lambda s: 2.0, 2.5) == pytest.approx(2.0, rel=1e-12)


@pytest.mark.parametrize("layers", [None, "abc"])
def test_network_of_no_layer_list_named(layers):
    # before: Python's "'NoneType' object is not iterable"; "abc": "layers[0] = 'a'"
    with pytest.raises(TypeError, match=r"layers = (None|'abc') is not accepted; accepted: a "
                                        "list of depthlab layers"):
        dl.Network(layers, n_inputs=4)


@pytest.mark.parametrize("value", ["0.1", None, False])
def test_load_dataset_fraction_of_text_none_or_bool_refused(value):
    from depthlab.data import load_dataset

    # before: "0.1" parsed (a split of 10%), False a fraction of 0, None Python's float() error
    with pytest.raises(TypeError, match=r"val_fraction=.* is not accepted; accepted: a "
                                        r"fraction, a number in \[0, 1\)"):
        load_dataset("spirals", n=40, val_fraction=value)


def test_optimizer_step_refuses_a_complex_or_text_gradient_before_any_update():
    net = dl.mlp([4, 5, 3], seed=0)
    opt = dl.optimizer("adam", net.parameters(), lr=0.1)
    net.forward(np.ones((6, 4), dtype=np.float32))
    net.backward(np.ones((6, 3)))
    before = [p.value.copy() for p in net.parameters()]
    net.parameters()[1].grad = np.zeros(5, dtype=complex)
    # before: NumPy's UFuncTypeError "Cannot cast ufunc 'multiply' output from
    # dtype('complex128')", after the parameter before it had been updated
    with pytest.raises(ValueError, match=r"parameter 'dense1.b' has .grad of dtype complex128 "
                                         r".*no parameter was updated"):
        opt.step()
    for b, p in zip(before, net.parameters(), strict=True):
        np.testing.assert_array_equal(p.value, b)


def test_boolean_features_refused_with_the_cast_that_takes_them():
    x = np.random.default_rng(0).normal(size=(6, 4)) > 0
    # before: "x of dtype bool is not accepted; accepted: real numbers" (no way out named)
    with pytest.raises(TypeError, match=r"dtype bool is not accepted \(booleans: "
                                        r"x.astype\(np.float32\) gives 0/1 features\)"):
        dl.mlp([4, 5, 3], seed=0).predict(x)


def test_plot_quantity_typo_refused_not_nan_or_an_empty_figure():
    from depthlab import plot

    x = np.random.default_rng(0).normal(size=(8, 4))
    table = dl.probe(dl.mlp([4, 5, 5, 3], seed=0), x, np.arange(8) % 3)
    # before: NaN (read as "not recorded") and an empty figure
    with pytest.raises(ValueError, match=r"quantity='grad_std' is not a per-layer probe "
                                         r"quantity; this table's: .*grad_pre_std"):
        plot.gradient_ratio(table, quantity="grad_std")
    with pytest.raises(ValueError, match=r"quantity='act_sd' is not a per-layer"):
        plot.activation_per_layer(table, quantity="act_sd")
    # a known quantity this table does not hold is still NaN, as documented
    assert np.isnan(plot.gradient_ratio(table, quantity="update_ratio"))
    g = table[table.quantity == "grad_pre_std"].set_index("layer").value
    assert plot.gradient_ratio(table) == pytest.approx(g.loc[1] / g.loc[2], rel=1e-12)


def test_store_has_run_statuses_of_a_str_or_unknown_name_refused(tmp_path):
    from depthlab.experiments import Store

    store = Store(tmp_path)
    # before: "finished" was read letter by letter and "finishd" matched nothing: both
    # answered False, also for a finished run
    with pytest.raises(TypeError, match=r"statuses='finished' is not accepted; accepted: a "
                                        r"list of run statuses, e.g. \['finished'\]"):
        store.has_run("abc", "finished")
    with pytest.raises(ValueError, match=r"'finishd' is not a run status; accepted: finished"):
        store.has_run("abc", ["finishd"])
    assert store.has_run("abc", ["finished"]) is False
    store.close()


def test_apply_standardizer_checks_its_statistics():
    from depthlab.data import apply_standardizer, fit_standardizer

    x = np.random.default_rng(0).normal(size=(5, 3))
    mean, std = fit_standardizer(x)
    # before: NumPy's broadcast error; std 0: all-NaN output, no error
    with pytest.raises(ValueError, match=r"mean of shape \(3,\) .*expected 4 finite numbers"):
        apply_standardizer(np.ones((5, 4)), mean, std)
    with pytest.raises(ValueError, match=r"std holds 0.0 \(feature 1\); expected numbers > 0"):
        apply_standardizer(x, mean, np.array([1.0, 0.0, 1.0]))
    np.testing.assert_allclose(apply_standardizer(x, mean, std), (x - mean) / std, rtol=1e-15)
