"""Lead's round-50 regression tests: paths written ``~user`` for an unknown user are used as
written (as bash leaves them), in the parts clihunt50 did not own."""

from __future__ import annotations

import os

import numpy as np
import pytest


def test_a_watch_out_folder_of_an_unknown_user_is_the_name_as_written(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    import depthlab.torch as dlt

    monkeypatch.chdir(tmp_path)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    # before: RuntimeError 'Could not determine home directory' from Path.expanduser
    watch = dlt.Watch(model, every=1, out="~nobody_depthlab_50/runs")
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    watch.step(loss)
    watch.close()
    assert (tmp_path / "~nobody_depthlab_50" / "runs" / "depthlab.db").is_file()
    assert not np.isnan(watch.frame()["value"]).all()


def test_expand_home_keeps_the_known_home(monkeypatch):
    from depthlab.atomic import expand_home

    monkeypatch.setenv("HOME", "/tmp/some_home_50")
    assert str(expand_home("~/x")) == "/tmp/some_home_50/x"
    assert str(expand_home("~nobody_depthlab_50/x")) == "~nobody_depthlab_50/x"
    assert os.fspath(expand_home("plain")) == "plain"




def test_ctrl_c_stops_without_the_deferred_pass_and_its_reader_sees_the_eager_values(
        monkeypatch):
    """engbn50's deferred epoch-end calibration: a Ctrl-C mid-epoch stops without an inference
    pass over the training set (it was in a ``finally``: one pass more than the eager code), and
    a later read of the statistics gives the values the eager pass set at the last epoch's end."""
    from test_engbn50_round50 import assert_same_states, net_, state, train

    from depthlab.network import Network
    from depthlab.training.trainer import Callback

    class CtrlC(Callback):
        def after_update(self, trainer, step, loss):
            if step == 9:  # 6 steps an epoch: one epoch's end behind, the second under way
                raise KeyboardInterrupt

    passes = []
    real = Network.calibrate
    monkeypatch.setattr(Network, "calibrate", lambda self, x: passes.append(1) or real(self, x))
    counts, states = [], []
    for eager in (True, False):
        net = net_()
        del passes[:]
        with pytest.raises(KeyboardInterrupt):
            train(eager, monkeypatch, callbacks=[CtrlC()], net=net)
        counts.append(len(passes))
        states.append(state(net))  # reading settles a pending pass now
    assert counts == [1, 0]  # eager: epoch 1's end; deferred: none at the interrupt
    assert_same_states(*states)


def test_data_paths_of_an_unknown_user_are_the_names_as_written(tmp_path, monkeypatch):
    """clihunt50's ~user fix in the data loaders (data/files.py, cache.py, fashion_mnist.py):
    before, each raised RuntimeError 'Could not determine home directory'."""
    from depthlab.data import files
    from depthlab.data.cache import cache_dir

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "~nobody_depthlab_50"
    folder.mkdir()
    rng = np.random.default_rng(0)
    np.savetxt(folder / "d.csv", np.c_[rng.normal(size=(12, 3)), np.arange(12) % 2],
               delimiter=",", header="a,b,c,label", comments="")
    path = "~nobody_depthlab_50/d.csv"
    assert files.loadable(path)
    assert files.file_bytes(path) is not None
    raw = files.load_file(path)
    assert len(raw.x) == 12
    with pytest.raises((FileNotFoundError, ValueError), match="nobody_depthlab_50"):
        files.load_file("~nobody_depthlab_50/missing.csv")
    monkeypatch.setenv("DEPTHLAB_CACHE", "~nobody_depthlab_50/cache")
    assert "~nobody_depthlab_50" in str(cache_dir())
