"""Round 20 (lead): regressions found while integrating the round."""
from __future__ import annotations


def test_the_doctors_text_shortens_a_finding_of_many_scattered_layers():
    # a 1000-block residual net's bn_drift listed 412 runs of layers in `depthlab doctor`'s
    # text ("layers 1-23, 25, 27-29, ..., 1999"), thirty lines before its message, while the
    # report and the playground already shortened it past 8 runs
    import pandas as pd

    from depthlab.diagnosis import Diagnosis, Finding
    from depthlab.report.build import _layers_text

    many = list(range(1, 24)) + list(range(25, 1000, 2))
    d = Diagnosis([Finding("bn_drift", many, {"metric": 2.0}, "drift", severity="high"),
                   Finding("saturation", [1, 2, 3, 5, 7], {"metric": 1.5}, "sat"),
                   Finding("dead_relu", [4], {"metric": 1.2}, "dead")],
                  {}, pd.DataFrame(), {"sizes": [2, 4, 2]}, {})
    text = str(d)
    assert "[high] bn_drift (511 layers: 1-23, 25, 27, 29, 31, 33, \u2026, 997, 999): drift" \
        in text
    assert "35, 37" not in text
    assert "saturation (layers 1-3, 5, 7): sat" in text
    assert "dead_relu (layer 4): dead" in text
    assert _layers_text(many) == "511 layers: 1-23, 25, 27, 29, 31, 33, \u2026, 997, 999"
    assert _layers_text([1, 2, 3, 5, 7]) == "1-3, 5, 7"


def test_a_network_whose_layer_widths_disagree_is_refused_by_name():
    # bridge20: Network([Dense(4, 6), Dense(5, 2)]) and a residual branch from 6 to 5 features
    # were accepted and failed at the first forward with NumPy's broadcast error
    import pytest

    import depthlab as dl
    from depthlab.layers import Activation, BatchNorm, Dense, Residual, Sequential

    with pytest.raises(ValueError, match=r"layers\[1\] \(.*Dense 5 -> 2\) expects 5 features, "
                                         r"the layers before it give 6"):
        dl.Network([Dense(4, 6), Dense(5, 2)], n_inputs=4)
    with pytest.raises(ValueError, match=r"layers\[1\] .*residual branch ends with 5 features, "
                                         r"its input has 6"):
        dl.Network([Dense(4, 6), Residual(Sequential([Dense(6, 5)])), Dense(5, 2)], n_inputs=4)
    with pytest.raises(ValueError, match=r"BatchNorm of 5 features\) gets 6 features"):
        dl.Network([Dense(4, 6), BatchNorm(5), Dense(6, 2)], n_inputs=4)
    with pytest.raises(ValueError, match=r"layers\[1\]\.branch\[1\] .*expects 5 features"):
        dl.Network([Dense(4, 6), Residual(Sequential([Activation("relu"), Dense(5, 6)]))],
                   n_inputs=4)
    ok = dl.Network([Dense(4, 6), Residual(Sequential([Activation("relu"), Dense(6, 6)])),
                     BatchNorm(6), Dense(6, 2)], n_inputs=4)
    assert ok.predict(dl.backend.xp.ones((3, 4))).shape == (3, 2)


def test_unscaled_targets_reads_statistics_of_several_target_dimensions():
    # torchdoctor20: rule_unscaled_targets indexed mean[j] with input_scale's raveled feature
    # index, so (C, L) statistics (targets shaped (N, C, L)) raised an IndexError
    import types

    import numpy as np
    import pandas as pd

    from depthlab.diagnosis.rules import rule_unscaled_targets

    mean = np.zeros((2, 3))
    mean[1, 2] = 500.0  # entry 5 of the raveled statistics
    ctx = types.SimpleNamespace(
        target_stats={"mean": mean.tolist(), "std": np.ones((2, 3)).tolist()},
        input_stats={}, table=pd.DataFrame(), steps=[], chance_loss=float("nan"))
    metric, finding = rule_unscaled_targets(ctx)
    assert finding is not None and finding.evidence["column"] == 5
    assert finding.evidence["column_mean"] == 500.0 and metric > 1


def test_rrelu_and_threshold_layers_get_act_rows_equal_to_their_outputs():
    # RReLU and Threshold were not in dlt.ACTIVATIONS: their layers had no act_* rows
    # (torchprobe20's patch, checked here against the modules' actual outputs)
    import torch
    from torch import nn

    import depthlab.torch as dlt

    for act in (nn.RReLU(0.1, 0.3), nn.Threshold(0.2, -1.0), nn.Threshold(0.0, 0.0)):
        torch.manual_seed(0)
        lin = nn.Linear(6, 16).double()
        model = nn.Sequential(lin, act, nn.Linear(16, 3).double()).eval()
        x, y = torch.randn(40, 6, dtype=torch.float64), torch.randint(0, 3, (40,))
        t = dlt.probe(model, x, y, nn.CrossEntropyLoss())
        a = act(lin(x)).detach()
        got = t[(t.layer == 1) & (t.quantity == "act_std")]["value"]
        assert len(got) == 1, type(act).__name__
        assert abs(float(got.iloc[0]) - float(a.std(unbiased=False))) < 1e-10


def test_the_torch_doctors_unscaled_targets_cure_speaks_of_the_torch_model():
    # the shared rule's text named NumPy's settings ("standardize_targets=True in dl.doctor,
    # [data] standardize_targets = true in a config"), which dlt.doctor does not take; its
    # translated cure now carries the torch alternative's text for the same changes
    import numpy as np
    from torch import nn

    import depthlab.torch as dlt

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    y = (1000 + 100 * (x @ rng.normal(size=(8, 2)))).astype(np.float32)

    def make():
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))

    d = dlt.doctor(make, (x[:160], y[:160], x[160:], y[160:]), loss_fn=nn.MSELoss(),
                   optimizer=("adam", {"lr": 1e-3}), steps=30, verify=True, max_cures=1)
    f = d.finding("unscaled_targets")
    assert f is not None, str(d)
    assert f.prescription == {"target_scale": "standardize"}
    assert "dl.doctor" not in f.prescription_text and "[data]" not in f.prescription_text
    assert "mean + std * output" in f.prescription_text
