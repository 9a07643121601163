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
