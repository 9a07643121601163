"""``Diagnosis == Diagnosis``: equal results of one seed compare equal (the generated ``__eq__``
raised on the probe DataFrame), other seeds do not; wall-clock seconds are not results."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl


def _data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 6)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(int)


def test_numpy_doctor_runs_of_one_seed_are_equal():
    x, y = _data()
    init = dl.initializers.get_initializer("normal", std=10.0)  # 1600x Glorot's: a mismatch
    net = dl.mlp([6, 16, 16, 16, 2], activation="sigmoid", init=init, seed=0)
    a = dl.doctor(net, (x, y), steps=30, verify=True)
    b = dl.doctor(net, (x, y), steps=30, verify=True)
    assert a.findings and a.verifications  # something to compare
    assert a == b and not (a != b)
    other = dl.doctor(net, (x, y), steps=30, verify=True, seed=1)
    assert a != other
    assert a != "a diagnosis" and a.__eq__(1) is NotImplemented
    with pytest.raises(TypeError):
        hash(a)


def test_torch_doctor_runs_of_one_seed_are_equal():
    torch = pytest.importorskip("torch")
    import depthlab.torch as dlt

    x, y = _data()

    def make():
        return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Sigmoid(),
                                   torch.nn.Linear(16, 16), torch.nn.Sigmoid(),
                                   torch.nn.Linear(16, 2))

    data = (torch.from_numpy(x), torch.from_numpy(y))
    runs = [dlt.doctor(make, data, loss_fn=torch.nn.CrossEntropyLoss(), steps=20,
                       batch_size=32, seed=s) for s in (0, 0, 1)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_datasets_records_and_predictions_compare_by_value():
    import pandas as pd

    from depthlab.data import load_dataset
    from depthlab.experiments.store import RunRecord
    from depthlab.theory import predict_gradients

    a = load_dataset("digits", seed=0, standardize=True)
    assert a == load_dataset("digits", seed=0, standardize=True)  # info holds mean/std arrays
    assert a != load_dataset("digits", seed=1, standardize=True)
    assert a != load_dataset("digits", seed=0)
    p = predict_gradients(dl.mlp([4, 8, 8, 2], activation="tanh"))
    assert p == predict_gradients(dl.mlp([4, 8, 8, 2], activation="tanh"))
    assert p != predict_gradients(dl.mlp([4, 8, 8, 2], activation="relu"))
    steps = pd.DataFrame({"step": [1, 2], "loss": [0.5, float("nan")]})
    rec = RunRecord(id="abc123", name="r", metrics={"val_acc": float("nan")}, steps=steps)
    assert rec == RunRecord(id="abc123", name="r", metrics={"val_acc": float("nan")},
                            steps=steps.copy())
    assert rec != RunRecord(id="abc123", name="other", steps=steps)
    assert rec != RunRecord(id="abc123", name="r", metrics={"val_acc": float("nan")},
                            steps=steps.assign(loss=[0.5, 0.6]))
