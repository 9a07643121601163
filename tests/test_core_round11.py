"""Round 11 (core11): the public API, the recipe spec and the store tried as a user would, on
networks, data and values the other tests do not use; each result checked independently
(torch.optim on the same weights, autograd in float64, a quantity recomputed by hand)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import depthlab as dl
from depthlab import spec
from tests.helpers.cli import assert_one_line_error, one_blas_thread, run_cli


# -- the recipe spec: a bad value is named as given ---------------------------------------
@pytest.mark.parametrize("value", [[], {}, ["float64"]])
def test_dtype_list_or_table_is_named_as_given_not_as_void(value):
    # np.dtype([]) and np.dtype({}) are structured "void" dtypes: the message named "void",
    # a value the user never wrote, as if it were a string they had given
    with pytest.raises(TypeError) as e:
        spec.ModelSpec(sizes=[2, 3, 2], dtype=value)
    msg = str(e.value)
    assert "void" not in msg and "wrong type" in msg, msg
    assert "float32" in msg and "float64" in msg
    with pytest.raises(TypeError, match="wrong type"):
        dl.mlp([2, 3, 2], dtype=value)


def test_dtype_table_in_a_json_config_exits_2_naming_it(tmp_path, capsys, monkeypatch):
    one_blas_thread(monkeypatch)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"data": {"name": "spirals"},
                               "model": {"sizes": ["auto", 4, "auto"], "dtype": {}}}))
    code, _, err = run_cli(capsys, "run", cfg, "--out", tmp_path / "out")
    line = assert_one_line_error(code, err, "model.dtype = {}", "wrong type")
    assert "void" not in line


def test_dtype_still_accepts_numpy_types():
    assert spec.ModelSpec(sizes=[2, 3, 2], dtype=np.float64).dtype == "float64"
    assert spec.ModelSpec(sizes=[2, 3, 2], dtype=np.dtype("float32")).dtype == "float32"
    assert dl.mlp([2, 3, 2], dtype=float).dtype == np.float64


# -- memory: the recorder's probe batch is refused before it is allocated -----------------
def test_recorder_probe_batch_that_cannot_fit_is_refused_like_probe(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    net = dl.mlp([8, 300, 300, 2], seed=0)  # 400 rows x 610 widths x 4 B x 3 = 2.8 MiB
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "2M")  # the batches of 8 rows fit
    with pytest.raises(ValueError, match="needs about") as e1:
        dl.probe(net, x, y)
    assert "nothing was allocated" in str(e1.value)
    rec = dl.ProbeRecorder(x, y, every=1)
    with pytest.raises(ValueError, match="needs about") as e2:
        dl.fit(net, x[:16], y[:16], batch_size=8, max_steps=1, epochs=None, callbacks=[rec])
    assert "probe batch" in str(e2.value) and "400 rows" in str(e2.value)


# -- batch norm probed on a 2-row held-out set: no gradient below it ----------------------
def _bn_two_row_case():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 4))
    return x, (x[:, 0] > 0).astype(np.int64)


def test_batch_norm_kills_the_gradient_of_any_two_row_batch():
    # the fact the fixes rest on: over 2 rows batch norm maps a unit to -1 and +1 (up to
    # eps) whatever the inputs, so dL/ds of the layer below is ~0; over 3 rows it is not.
    # dl.probe refuses such a batch (round 29); the engine's own backward shows the fact
    import numpy as np

    net = dl.mlp([4, 6, 6, 2], batchnorm=True, seed=0, dtype="float64")
    x, y = _bn_two_row_case()
    loss = dl.loss("cross_entropy")
    ratio = {}
    for n in (2, 3):
        loss.forward(net.forward(x[:n], training=True), y[:n])
        net.backward(loss.backward())
        w = [p.grad for p in net.parameters() if p.kind == "weight"]
        ratio[n] = np.std(w[0]) / np.std(w[-1])  # below BN over the output layer (no BN)
    assert ratio[2] < 0.02 < 0.2 < ratio[3]
    with pytest.raises(ValueError, match="at least 3 rows.*got 2"):
        dl.probe(net, x[:2], y[:2])


def test_doctor_of_a_healthy_bn_net_on_ten_rows_finds_no_vanishing_gradients():
    # 10 rows: 2 held out, the probe batch. Layer 1's gradient std came out 125x below
    # layer 2's at initialization: "vanishing_gradients (layer 1) ... prescription residual"
    # for a 2-hidden-layer ReLU + batch-norm net; now probed on the 8 training rows
    x, y = _bn_two_row_case()
    d = dl.doctor(dl.mlp([4, 6, 6, 2], batchnorm=True, seed=0), (x, y), steps=10, batch_size=3)
    assert "vanishing_gradients" not in [f.kind for f in d.findings], str(d)
    p = d.probes
    g = p[(p.quantity == "grad_pre_std") & (p.step == 0)].set_index("layer").value
    assert 0.2 < g[1] / g[2] < 5


def test_config_run_of_a_bn_net_with_two_validation_rows_probes_training_rows():
    from depthlab.experiments.runner import execute

    cfg = {"data": {"name": "spirals", "n": 20, "val_fraction": 0.1, "test_fraction": 0.1},
           "model": {"sizes": ["auto", 6, 6, "auto"], "batchnorm": True},
           "train": {"max_steps": 1, "batch_size": 4}, "probes": {"every": 1}}
    rec = execute(cfg)
    assert rec.status == "finished"
    p = rec.probes
    g = p[(p.quantity == "grad_pre_std") & (p.step == 0)].set_index("layer").value
    assert g[1] / g[2] > 0.1, g  # was 0.00071 (0.000148 vs 0.208) on the 2 validation rows


def test_config_with_batch_norm_and_a_two_row_probe_batch_is_refused_naming_it():
    from depthlab.experiments import validate
    from depthlab.fieldcheck import ConfigError

    raw = {"data": {"name": "spirals"}, "model": {"sizes": ["auto", 6, "auto"],
                                                  "batchnorm": True},
           "probes": {"every": 1, "batch": 2}}
    with pytest.raises(ConfigError, match=r"needs at least 3 rows in the probe batch .* but "
                                          r"probes\.batch = 2; accepted: probes\.batch >= 3"):
        validate(raw)
    assert validate({**raw, "probes": {"every": 1, "batch": 3}})
    assert validate({**raw, "model": {"sizes": ["auto", 6, "auto"]}})  # no batch norm: fine


# -- the doctor: a finding names the layers its message is about --------------------------
def test_vanishing_gradients_of_a_net_that_dies_names_its_layers():
    # ReLU with N(0, 0.01) weights: the gradient vanishes 2.5e12x over 10 layers, then every
    # unit dies and later probes hold only zeros. The ratio came from the 4 probes with
    # gradients, the layer list from the medians over all 11: layer 10's median was 0, so
    # the finding said "layer 1 is 3.82e+12x smaller than layer 10" with layers = []
    from depthlab.data import load_dataset
    from depthlab.initializers import get_initializer

    data = load_dataset("digits", seed=0, standardize=True)
    net = dl.mlp([64] + [32] * 10 + [10], activation="relu",
                 init=get_initializer("normal", std=0.01), seed=0)
    d = dl.doctor(net, data, steps=100)
    f = next(f for f in d.findings if f.kind == "vanishing_gradients")
    p = d.probes
    g = p[(p.quantity == "grad_pre_std") & (p.layer >= 1)].pivot(index="step", columns="layer",
                                                                 values="value")
    assert (g.iloc[-1] == 0).all()  # the case: every gradient 0 at the end
    live = g[(g[1] > 0) & (g[10] > 0)]  # the probes the ratio is taken over
    # the median of the logs (round 18b: an even number of probes' geometric middle)
    assert f.evidence["ratio"] == pytest.approx(
        float(np.exp(np.median(np.log(live[10] / live[1])))))
    med = live.median()
    assert f.layers == [i for i in range(1, 11) if med[i] < med[10] / 10] == list(range(1, 10))


def test_doctor_probes_every_run_on_the_same_rows_with_two_held_out_rows():
    # 2 held-out rows: a batch-norm net is probed on the training rows, so the baseline
    # without batch norm is too (a batchnorm cure's metrics are compared with the baseline's)
    x, y = _bn_two_row_case()
    for bn in (False, True):
        net = dl.mlp([4, 6, 6, 2], activation="tanh", batchnorm=bn, seed=0)
        d = dl.doctor(net, (x[:8], y[:8], x[8:], y[8:]), steps=2)
        loss0 = d.probes.query("step == 0 and layer == 0 and quantity == 'loss'").value
        ref = dl.probe(net, x[:8], y[:8]).query("layer == 0 and quantity == 'loss'").value
        assert float(loss0.iloc[0]) == pytest.approx(float(ref.iloc[0]), rel=1e-6)


def test_torch_doctor_of_a_healthy_bn_mlp_on_ten_rows_finds_no_vanishing_gradients():
    torch = pytest.importorskip("torch")
    import depthlab.torch as dlt

    x, y = _bn_two_row_case()

    def make():
        return torch.nn.Sequential(
            torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.ReLU(),
            torch.nn.Linear(6, 6), torch.nn.BatchNorm1d(6), torch.nn.ReLU(),
            torch.nn.Linear(6, 2))

    d = dlt.doctor(make, (x.astype(np.float32), y), loss_fn=torch.nn.CrossEntropyLoss(),
                   steps=10, batch_size=3, verify=False)
    p = d.probes
    g = p[(p.quantity == "grad_pre_std") & (p.step == 0)].set_index("layer").value
    assert g[1] / g[3] > 0.01, g  # was 1.08e-7 vs 0.254 on the 2 held-out rows
    assert "vanishing_gradients" not in [f.kind for f in d.findings], str(d)
