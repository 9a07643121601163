"""Lead, round 18: regression tests."""

from __future__ import annotations

import numpy as np
import pytest

import depthlab as dl


def _net():
    return dl.mlp([4, 8, 2], seed=0)


X = np.random.default_rng(0).standard_normal((20, 4)).astype("float32")
Y = np.arange(20) % 2


@pytest.mark.parametrize("call, name, hint", [
    (lambda: dl.probe(_net(), X, Y, los="mse"), "probe", "did you mean 'loss'"),
    (lambda: dl.lsuv(_net(), X, iters=3), "lsuv", "did you mean 'max_iter'"),
    (lambda: dl.mc_dropout_predict(_net(), X, sample=3), "mc_dropout_predict", "accepted: net"),
    (lambda: dl.Network([], n_inputs=2, seeed=0), "Network", "accepted: layers"),
    (lambda: dl.ModelSpec(widht=3), "ModelSpec", "did you mean 'width'"),
    (lambda: dl.TrainSpec(lrate=0.1), "TrainSpec", "accepted: loss"),
    (lambda: dl.DataSpec(nmae="digits"), "DataSpec", "did you mean 'name'"),
    (lambda: dl.ProbeSpec(evry=5), "ProbeSpec", "did you mean 'every'"),
    (lambda: dl.RunSpec(dat=1), "RunSpec", "did you mean 'data'"),
])
def test_a_mistyped_keyword_of_the_public_api_names_the_one_meant(call, name, hint):
    # Python said only "probe() got an unexpected keyword argument 'los'" (Network and the
    # specs: "__init__() got ..."), without the accepted names
    with pytest.raises(TypeError) as e:
        call()
    msg = str(e.value)
    assert msg.startswith(f"{name}() got an unexpected keyword argument") and hint in msg, msg
    assert "\n" not in msg


def test_the_hinted_constructors_still_build_copy_and_pickle():
    import dataclasses
    import pickle

    spec = dl.TrainSpec(lr=0.2)
    assert spec.lr == 0.2
    assert dataclasses.replace(spec, lr=0.3).lr == 0.3
    assert pickle.loads(pickle.dumps(spec)) == spec
    net = _net()
    assert net.forward(X).shape == (20, 2)


def test_torch_probe_and_predict_name_the_keyword_meant():
    torch = pytest.importorskip("torch")
    import depthlab.torch as dlt

    m = torch.nn.Sequential(torch.nn.Linear(4, 3))
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    with pytest.raises(TypeError, match=r"^probe\(\) .* 'loss' \(did you mean 'loss_fn'\?\)"):
        dlt.probe(m, x, y, loss=torch.nn.CrossEntropyLoss())
    with pytest.raises(TypeError, match=r"^predict\(\) .* 'los' \(did you mean 'loss_fn'\?\)"):
        dlt.predict(m, x, los=None)


def test_predict_names_a_device_or_a_pipe_given_as_data_or_model(tmp_path):
    # `depthlab predict RUN /dev/zero` (or a named pipe) said "no such file (nor a built-in
    # data set ...)" although the path exists; a model path /dev/null said "no such file"
    import os

    from depthlab.inference import read_labeled_inputs, resolve_model

    fifo = tmp_path / "rows.csv"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo)):
        with pytest.raises(ValueError, match=r"is not a file \(a device or a pipe\)"):
            read_labeled_inputs(path)
    with pytest.raises(ValueError, match="no such file"):
        read_labeled_inputs(str(tmp_path / "absent.csv"))
    model = tmp_path / "net.npz"
    os.mkfifo(model)
    with pytest.raises(ValueError, match=r"is not a file \(a folder, a device or a pipe\)"):
        resolve_model(str(model), tmp_path)


def test_the_reports_verification_line_says_what_decided_the_verdict():
    # the report built its own verdict: 'train loss 1.36 -> 0.7089: did not help' with no
    # reason, and 'max |mean activation| 0.5417 -> 0.4223: helped (resolved)' for a ReLU's
    # mean still above the rule's threshold; the command line said both
    from depthlab.diagnosis.findings import Verification
    from depthlab.report.build import _verification_text

    chance = Verification(kind="saturation", prescription={"batchnorm": True},
                          before={"train_loss": 1.36, "val_acc": 0.5},
                          after={"train_loss": 0.7089, "val_acc": 0.5}, metric="saturated",
                          metric_before=0.9, metric_after=0.1, resolved=True, helped=False,
                          chance_loss=0.6931)
    text = _verification_text(chance.to_dict())
    assert text.endswith("did not help (the train loss did not end below a constant "
                         "prediction's, 0.6931)"), text
    relu = Verification(kind="mean_shift", prescription={"activation": "relu"},
                        before={"train_loss": 2.0}, after={"train_loss": 1.0},
                        metric="max |mean activation|", metric_before=0.5417,
                        metric_after=0.4223, resolved=True, helped=True)
    text = _verification_text(relu.to_dict())
    assert "still above its threshold 0.25" in text and text.startswith("train loss 2"), text


def test_a_report_of_a_sweep_still_running_says_how_many_of_its_points_are_stored(tmp_path):
    # the store keeps each sweep's planned points (Store.set_sweep_size) since cli18b, but the
    # report said only '2 runs (2 finished)' for a sweep of 5 points stopped after 2
    from depthlab.experiments.store import Store
    from depthlab.experiments.sweep import run_sweep
    from depthlab.report.build import write_report

    cfg = {"data": {"name": "spirals", "n": 60}, "model": {"sizes": [2, 4, 2]},
           "train": {"epochs": 1, "batch_size": 30},
           "sweep": {"train.lr": [0.01, 0.02]}}
    result = run_sweep(cfg, tmp_path, echo=None)
    with Store(tmp_path) as store:
        assert store.sweep_sizes() == {result.sweep: 2}
        store.set_sweep_size(result.sweep, 5)  # as a sweep of 5 points stopped after 2 leaves it
    page = write_report(tmp_path)
    html = (page if page.is_file() else tmp_path / "report.html").read_text()
    assert "2 of the sweep's 5 points stored (3 not run yet" in html.replace("&#x27;", "'")


def test_a_grid_listing_a_point_twice_is_not_reported_as_unfinished(tmp_path):
    # [0.01, 0.01, 0.02] is 3 points but 2 runs: the report said "2 of the sweep's 3 points
    # stored (1 not run yet ...)" for a finished sweep
    from depthlab.experiments.store import Store
    from depthlab.experiments.sweep import run_sweep
    from depthlab.report.build import write_report

    cfg = {"data": {"name": "spirals", "n": 60}, "model": {"sizes": [2, 4, 2]},
           "train": {"epochs": 1, "batch_size": 30},
           "sweep": {"train.lr": [0.01, 0.01, 0.02]}}
    result = run_sweep(cfg, tmp_path, echo=None)
    with Store(tmp_path) as store:
        assert store.sweep_sizes() == {result.sweep: 2}
    page = write_report(tmp_path)
    html = (page if page.is_file() else tmp_path / "report.html").read_text()
    assert "points stored" not in html.replace("&#x27;", "'")
