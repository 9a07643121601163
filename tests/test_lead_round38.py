"""Round 38, lead: hints and refusals the helpers' hunts handed over (files they did not own)."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl
from depthlab.experiments.config import validate


def _net_and_batch():
    net = dl.mlp([4, 8, 3], activation="relu", seed=0)
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    return net, x, np.arange(16) % 3


def test_a_generator_of_percentiles_gives_its_rows():
    net, x, y = _net_and_batch()
    df = dl.probe(net, x, y, percentiles=(q for q in (5, 95)))
    assert sorted(q for q in df.quantity.unique() if q.startswith("pre_p")) == \
        ["pre_p5", "pre_p95"]
    assert dl.ProbeRecorder(every=1, percentiles=iter([50])).percentiles == (50.0,)


def test_probe_refuses_a_loss_of_one_value_per_example():
    net, x, y = _net_and_batch()
    with pytest.raises(ValueError, match="one loss per batch.*reduction='mean'"):
        dl.probe(net, x, y, loss=dl.loss("cross_entropy", reduction="none"))


def test_a_reduction_key_in_train_is_hinted_as_every_losss_argument():
    raw = {"data": {"name": "digits"}, "model": {"width": 8, "depth": 1},
           "train": {"epochs": 1, "reduction": "sum"}}
    with pytest.raises(Exception, match="reduction is an argument of every loss") as info:
        validate(raw)
    assert '"mse"' not in str(info.value)
    with pytest.raises(Exception, match='delta is an argument of the loss "huber"'):
        validate({**raw, "train": {"epochs": 1, "delta": 2}})


torch = pytest.importorskip("torch")


def test_torch_doctor_names_the_column_and_the_class_scores():
    import depthlab.torch as dlt
    nn = torch.nn
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 8, generator=gen)

    def regression():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))

    def one_number():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1), nn.Flatten(0))

    with pytest.raises(ValueError, match=r"give y as a column, y\.reshape\(-1, 1\)"):
        dlt.doctor(regression, (x, torch.randn(32, generator=gen)), loss_fn=nn.MSELoss(),
                   steps=2, batch_size=16, verify=False)
    with pytest.raises(ValueError, match=r"one score per class, \(N, C\).*BCEWithLogitsLoss"):
        dlt.doctor(one_number, (x, torch.randint(0, 2, (32,), generator=gen)),
                   loss_fn=nn.CrossEntropyLoss(), steps=2, batch_size=16, verify=False)
