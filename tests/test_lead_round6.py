"""Regression tests for the lead's fixes of the sixth round."""

from __future__ import annotations

import numpy as np
import pytest

from depthlab.data import apply_standardizer, fit_standardizer, load_dataset


def _offset_file(tmp_path, dtype=np.float64):
    rng = np.random.default_rng(0)
    x = np.column_stack([1e7 + rng.standard_normal(400), rng.standard_normal(400)]).astype(dtype)
    y = (x[:, 1] > 0).astype(np.int64)
    path = tmp_path / "offset.npz"
    np.savez(path, x=x, y=y)
    return path, x


def test_load_dataset_standardizes_before_the_float32_cast(tmp_path):
    path, _ = _offset_file(tmp_path)
    ds = load_dataset(path, standardize=True, seed=0)
    ref = load_dataset(path, standardize=True, seed=0, dtype="float64")
    assert ds.x_train.dtype == np.float32 and ds.info["dtype"] == "float32"
    assert ds.info["standardization"]["mean"].dtype == np.float32
    # before: the float32 cast left 8 distinct values of the offset feature, wrong signs
    assert len(np.unique(ds.x_train[:, 0])) > 200
    np.testing.assert_allclose(ds.x_train, ref.x_train, atol=1e-5)
    np.testing.assert_allclose(ds.x_test, ref.x_test, atol=1e-5)
    assert np.std(ds.x_train[:, 0]) == pytest.approx(1.0, abs=1e-5)


def test_load_dataset_exact_inputs_keep_the_float32_path(tmp_path):
    """uint8 or float32 data cast to float32 exactly: standardized as before, bit for bit."""
    path, x = _offset_file(tmp_path, dtype=np.float32)
    ds = load_dataset(path, standardize=True, seed=0)
    plain = load_dataset(path, seed=0)
    mean, std = fit_standardizer(plain.x_train)
    np.testing.assert_array_equal(ds.x_train, apply_standardizer(plain.x_train, mean, std))


# -- nn.PReLU is a known activation of the torch probes ----------------------------------------

torch = pytest.importorskip("torch")


def _prelu_case(per_channel: int, conv: bool = False):
    from torch import nn

    torch.manual_seed(0)
    if conv:
        model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.PReLU(per_channel), nn.Flatten(),
                              nn.Linear(6 * 6 * 6, 4)).double()
        x = torch.randn(16, 3, 8, 8, dtype=torch.float64)
    else:
        model = nn.Sequential(nn.Linear(10, 6), nn.PReLU(per_channel), nn.Linear(6, 4)).double()
        x = torch.randn(64, 10, dtype=torch.float64)
    with torch.no_grad():  # distinct slopes, one of them 0: a unit-level dead check
        model[1].weight.copy_(torch.linspace(0.0, 0.5, per_channel, dtype=torch.float64))
    return model, x, torch.randint(0, 4, (x.shape[0],))


@pytest.mark.parametrize("per_channel,conv", [(1, False), (6, False), (6, True)])
def test_prelu_rows_match_autograd(per_channel, conv):
    import depthlab.torch as dlt

    model, x, y = _prelu_case(per_channel, conv)
    df = dlt.probe(model, x, y, torch.nn.CrossEntropyLoss(), percentiles=())
    got = {q: v for q, v in zip(df[df.layer == 1].quantity, df[df.layer == 1].value)}
    with torch.no_grad():
        s = model[0](x)
        a = model[1](s)
    a_ref = torch.where(s > 0, s, model[1].weight.reshape((1, -1) + (1,) * (s.dim() - 2)) * s)
    torch.testing.assert_close(a, a_ref)
    assert got["act_mean"] == pytest.approx(float(a.mean()), rel=1e-9)
    assert got["act_std"] == pytest.approx(float(a.std(unbiased=False)), rel=1e-9)
    assert got["inactive_frac"] == pytest.approx(float((s <= 0).double().mean()), rel=1e-12)
    # per-channel slope 0 on unit 0: dead only where that unit's inputs are all <= 0
    slope0 = per_channel > 1
    units = s.transpose(0, 1).reshape(s.shape[1], -1)
    dead = ((units <= 0).all(dim=1) & slope0 & (torch.arange(s.shape[1]) == 0)).double().mean()
    assert got["dead_frac"] == pytest.approx(float(dead), abs=1e-12)


def test_prelu_slope_is_read_when_measured():
    """The spec follows a slope that training changed (it is not captured at first use)."""
    from depthlab.torch.layers import activation_spec

    m = torch.nn.PReLU()
    spec = activation_spec(m)
    s = torch.tensor([-2.0, 3.0])
    assert spec.derivative(s).tolist() == pytest.approx([0.25, 1.0])
    with torch.no_grad():
        m.weight.fill_(0.5)
    assert spec.derivative(s).tolist() == pytest.approx([0.5, 1.0])
    assert spec.function(s).tolist() == pytest.approx([-1.0, 3.0])


def test_prelu_theory_scalar_slope_and_refusal_per_channel(monkeypatch):
    import importlib

    import depthlab.torch as dlt

    # population variances: predict's 1/n finite-unit term (_finite_units) left out
    monkeypatch.setattr(importlib.import_module("depthlab.torch.predict"), "_finite_units",
                        lambda rows: [(0.0, 0.0)] * len(rows))
    model, x, _ = _prelu_case(1)
    with torch.no_grad():
        model[1].weight.fill_(0.3)
        model[0].bias.zero_()  # s ~ N(0, q) exactly
    # examples of one length (predict propagates varied lengths as groups, whose ReLU-family
    # mean E sqrt(q_i) is below sqrt(E q_i))
    x = x * (10 ** 0.5 / x.norm(dim=1, keepdim=True))
    pred = dlt.predict(model, x)
    # E[f(s)^2] for s ~ N(0, q), f = PReLU(0.3): q (1 + 0.09) / 2
    q = float(pred[(pred.layer == 1) & (pred.quantity == "pre_std")].predicted.iloc[0]) ** 2
    act = float(pred[(pred.layer == 1) & (pred.quantity == "act_std")].predicted.iloc[0]) ** 2
    mean = (1 - 0.3) * np.sqrt(q / (2 * np.pi))
    assert act == pytest.approx(q * 1.09 / 2 - mean ** 2, rel=1e-6)
    model, x, _ = _prelu_case(6)
    with pytest.raises(ValueError, match=r"'1' \(PReLU\) has a learned slope per channel"):
        dlt.predict(model, x)


def test_prelu_matched_init_uses_the_mean_slope():
    from depthlab.torch.prescriptions import init_weight

    torch.manual_seed(0)
    act = torch.nn.PReLU(4, init=0.5)
    w = torch.empty(2000, 500)
    init_weight(w, "matched", act)
    assert float(w.var()) == pytest.approx(2.0 / (1.25 * 500), rel=0.02)


def test_prelu_orthogonal_gain_is_the_leaky_relu_gain_of_its_slope():
    """The orthogonal/LSUV cures on a PReLU model raised AttributeError (no negative_slope)."""
    from depthlab.torch.prescriptions import _gain

    act = torch.nn.PReLU(3, init=0.5)
    assert _gain(act) == pytest.approx(torch.nn.init.calculate_gain("leaky_relu", 0.5))


# -- a model that changes its input in place does not change the doctor's data -----------------

class _Divides(torch.nn.Module):
    def __init__(self, in_place: bool):
        super().__init__()
        self.in_place = in_place
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(),
                                       torch.nn.Linear(16, 10))

    def forward(self, x):
        if self.in_place:
            x /= 16.0  # the caller's tensor: a common beginner's forward
        else:
            x = x / 16.0
        return self.net(x)


def test_doctor_feeds_copies_to_a_model_that_divides_its_input_in_place():
    import depthlab.torch as dlt

    ds = load_dataset("digits", seed=0)
    x = torch.tensor(ds.x_train[:200] * 16, dtype=torch.float32)
    y = torch.tensor(ds.y_train[:200])
    runs = [dlt.doctor(lambda p=p: _Divides(p), (x, y), steps=12, batch_size=32, verify=False,
                       probe_every=4) for p in (True, False)]
    # before: every evaluation and probe divided the stored data again (layer 1 pre_std
    # 0.28 at step 0, 0.07 from step 4 on; validation accuracy 0.18 against 0.38)
    assert runs[0].baseline == {**runs[1].baseline, "seconds": runs[0].baseline["seconds"]}
    pd_ = pytest.importorskip("pandas")
    pd_.testing.assert_frame_equal(runs[0].probes, runs[1].probes)


def test_reproduction_results_compare_by_value():
    """Result == Result compared tables by value (the generated __eq__ raised on a DataFrame);
    figures (drawings) and seconds (timing) are left out."""
    import pandas as pd

    from depthlab.reproduce import Claim, Result

    def result(value: float, seconds: float) -> Result:
        return Result("x", "X", claims=[Claim("c", "paper", "measured", True, value)],
                      tables={"t": pd.DataFrame({"a": [1.0, value]})}, notes=["n"],
                      figures={"f": object()}, seconds=seconds)

    assert result(0.5, 1.0) == result(0.5, 2.0)
    assert result(0.5, 1.0) != result(0.25, 1.0)


def test_torch_doctor_judges_help_by_the_numpy_doctors_rule():
    """A cure within one run's noise (loss 1.381 -> 1.380 at chance) did not help: the torch
    doctor counted any lower loss."""
    from depthlab.torch.doctor import _better

    before = {"train_loss": 1.381, "val_acc": 0.2375}
    assert not _better({"train_loss": 1.380, "val_acc": 0.2375}, before)
    assert _better({"train_loss": 1.2, "val_acc": 0.2375}, before)
    assert not _better({"train_loss": 1.2, "val_acc": 0.10}, before)  # accuracy clearly worse
    assert _better({"train_loss": 1.381, "val_acc": 0.30}, before)


# -- Ctrl-C that lands where Python discards exceptions still stops `depthlab run` ------------

def test_an_interrupt_discarded_in_a_finalizer_still_stops_depthlab_run(tmp_path, capsys,
                                                                        monkeypatch):
    """A SIGINT whose KeyboardInterrupt is raised inside a ``__del__`` (or a GC callback,
    a weakref finalizer: 'Exception ignored in ...') was lost and the run trained on to its
    end (a Ctrl-C in the first second of training, while a library was loading, was
    ignored); it is raised again in the main thread."""
    import os
    import signal
    import time

    from depthlab.training import trainer
    from tests.helpers.cli import run_cli

    class SignalsWhenCollected:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # the handler runs here, inside __del__

    real_step, calls, when = trainer.Trainer._step, [0], {}

    def step(self, *a, **k):
        calls[0] += 1
        if calls[0] == 20:
            when["t"] = time.monotonic()
            SignalsWhenCollected()  # dropped at once: __del__ runs now
        return real_step(self, *a, **k)

    monkeypatch.setattr(trainer.Trainer, "_step", step)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "digits"\n[model]\nsizes = ["auto", 8, "auto"]\n'
                   "[train]\nepochs = 400\nbatch_size = 64\n")
    code, _, err = run_cli(capsys, "run", cfg, "--out", tmp_path / "out", "--quiet")
    assert code == 130 and err.strip().splitlines()[-1] == "depthlab: interrupted", err
    assert time.monotonic() - when["t"] < 5 and calls[0] < 20000


def test_export_writes_the_sweep_points_table_too(tmp_path):
    """A sweep's membership (``sweep_points``: points it computed and points it found stored)
    was the one table ``export`` left out, so an exported extended sweep lost which runs it
    held; an older store without the table exports it empty with its columns."""
    import sqlite3

    import pandas as pd

    from depthlab.experiments.store import Store

    store = Store(tmp_path / "s")
    store.add_sweep_points("grid1", ["a", "b"])
    paths = store.export(tmp_path / "x")
    store.close()
    assert tmp_path / "x" / "sweep_points.csv" in paths
    got = pd.read_csv(tmp_path / "x" / "sweep_points.csv")
    assert sorted(zip(got["sweep"], got["run_id"])) == [("grid1", "a"), ("grid1", "b")]
    conn = sqlite3.connect(tmp_path / "s" / "depthlab.db")  # as a store from before the table
    conn.execute("DROP TABLE sweep_points")
    conn.commit()
    conn.close()
    old = Store(tmp_path / "s", create=False, readonly=True)
    old.export(tmp_path / "y")
    old.close()
    assert list(pd.read_csv(tmp_path / "y" / "sweep_points.csv").columns) == ["sweep", "run_id"]


@pytest.mark.parametrize("x", [None, "numpy"])
def test_probe_of_a_numpy_or_none_input_names_x(x):
    """``dlt.probe(model, ndarray, ...)`` raised torch's "linear(): argument 'input' (position
    1) must be Tensor, not numpy.ndarray", naming an argument of an inner function."""
    torch = pytest.importorskip("torch")
    import depthlab.torch as dlt

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    if x == "numpy":
        x = np.ones((5, 3), np.float32)
    with pytest.raises(TypeError, match=r"^x must be a torch.Tensor .*got "
                       + ("ndarray" if x is not None else "NoneType")):
        dlt.probe(model, x, torch.zeros(5, dtype=torch.long), torch.nn.CrossEntropyLoss())


def test_predict_refuses_an_unbatched_input():
    """A 1-D ``x`` ran (``nn.Linear`` takes it) with its features taken for the batch."""
    torch = pytest.importorskip("torch")
    import depthlab.torch as dlt

    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    with pytest.raises(ValueError, match=r"x must be a batch .*got shape \(8,\)"):
        dlt.predict(model, torch.randn(8))
    assert set(dlt.predict(model, torch.randn(1, 8)).layer) == {1, 2}


def test_a_csv_with_a_duplicate_label_column_is_refused(tmp_path):
    """Two columns named 'label': pandas read the second as 'label.1', a feature holding the
    labels (the network could read its answer from its input)."""
    from depthlab.data.files import load_file

    path = tmp_path / "d.csv"
    path.write_text("a,label,b,label\n1,0,2,0\n3,1,4,1\n5,0,6,0\n")
    with pytest.raises(ValueError, match=r"column name\(s\) \['label'\] appear more than once"):
        load_file(path)


def test_a_saved_pandas_index_column_is_left_out_with_a_warning(tmp_path):
    """``df.to_csv(path)`` writes the index as a first column with an empty name: it was read
    as a feature ('Unnamed: 0', the row number)."""
    import pandas as pd

    from depthlab.data.files import load_file

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=6), "b": rng.normal(size=6), "label": [0, 1] * 3})
    df.to_csv(tmp_path / "with_index.csv")
    df.to_csv(tmp_path / "plain.csv", index=False)
    with pytest.warns(UserWarning, match="no name and holds 0, 1, 2"):
        got = load_file(tmp_path / "with_index.csv")
    want = load_file(tmp_path / "plain.csv")
    assert got.info["feature_names"] == ["a", "b"]
    np.testing.assert_array_equal(got.x, want.x)
    np.testing.assert_array_equal(got.y, want.y)


def test_a_store_path_with_a_tilde_is_in_the_home_folder(tmp_path, monkeypatch):
    """``Watch(model, out="~/runs")`` or ``Store("~/runs")`` from Python (no shell to expand
    it) created a folder literally named '~' in the current folder."""
    from depthlab.experiments.store import Store

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    store = Store("~/runs")
    store.close()
    assert (tmp_path / "home" / "runs" / "depthlab.db").is_file()
    assert not (tmp_path / "~").exists()
