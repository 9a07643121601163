"""Round 44, the lead's own fixes."""

from __future__ import annotations

import numpy as np

import depthlab as dl
from depthlab.data import load_dataset


def test_a_relu_net_whose_loss_overflowed_is_cured_by_a_rate_scaled_to_its_first_update():
    """A relu net at sgd lr 100 went NaN at step 5 and was prescribed lr/10 (10), which went
    NaN at step 7 ('did not help'); the first update, measured before the overflow, rewrote
    the weights 13x their norm, so the cure is 1e3x smaller (0.1: val acc 0.96)."""
    data = load_dataset("digits", seed=0, standardize=True)
    net = dl.mlp([64, 64, 64, 10], activation="relu", seed=0)
    d = dl.doctor(net, data, steps=200, lr=100.0, verify=True)
    f = d.finding("divergence")
    assert "non-finite" in f.message
    assert f.evidence["first_update_ratio"] > 1.0
    assert f.prescription["lr"] <= 1.0, f.prescription
    v = next(v for v in d.verifications if v.kind == "divergence")
    assert v.prescription == f.prescription and v.helped and v.resolved, d


def test_a_near_miss_of_a_listed_optimizer_is_told_the_listed_one():
    """'adma' was told "did you mean 'adamax'?" (registered, but not in the same line's list
    of choices) instead of the listed 'adam' (clihunt44)."""
    import pytest

    net = dl.mlp([4, 8, 3], seed=0)
    x, y = np.zeros((8, 4), np.float32), np.zeros(8, np.int64)
    with pytest.raises(ValueError, match=r"did you mean 'adam'\?"):
        dl.fit(net, x, y, optimizer="adma", epochs=1)


def test_a_half_precision_dtype_is_named_unsupported_not_told_float64():
    """model.dtype = "float16" was told 'did you mean "float64"?' (clihunt44)."""
    import pytest

    from depthlab.fieldcheck import Dtype

    for name in ("float16", "bfloat16", "float128", "half"):
        with pytest.raises(ValueError, match="is not supported") as err:
            Dtype()("model.dtype", name)
        assert "did you mean" not in str(err.value) and "single or double" in str(err.value)


def test_the_torch_doctor_takes_radam_and_adamax_as_configs_and_fit_do():
    """fit and configs take optimizer='radam'/'adamax'; the torch doctor refused them as
    unknown optimizers (nphunt44)."""
    import torch
    from torch import nn

    import depthlab.torch as dlt

    torch.manual_seed(0)
    x = torch.randn(64, 6)
    y = (x[:, 0] > 0).long()
    for name in ("radam", "adamax"):
        d = dlt.doctor(lambda: nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2)),
                       (x, y), loss_fn=nn.CrossEntropyLoss(), optimizer=(name, {"lr": 1e-2}),
                       steps=20, batch_size=16, verify=False)
        assert d.settings["optimizer"] == name, d.settings
