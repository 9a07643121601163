"""Round 13 (core13): the NumPy side tried as a demanding user would, on inputs the other
tests do not use; each result checked independently (the parameters a built network really
holds, ...)."""

from __future__ import annotations

import warnings

import pytest

import depthlab as dl
from depthlab.memory import dense_chain, parameter_count
from tests.helpers.cli import assert_one_line_error, one_blas_thread, run_cli


# -- memory: a residual network holds two Dense layers per block --------------------------
@pytest.mark.parametrize("hidden", [[7], [7, 7], [7, 7, 7, 7]])
def test_dense_chain_counts_the_parameters_a_residual_net_holds(hidden):
    sizes = [5, *hidden, 3]
    for residual in (False, True):
        net = dl.mlp(sizes, residual=residual)
        held = sum(p.value.size for p in net.parameters())
        assert parameter_count(dense_chain(sizes, residual)) == held


def test_residual_net_that_cannot_fit_is_refused_before_allocating(monkeypatch):
    # [10, 3000 x 4, 10]: plain 27.1M parameters (207 MiB with gradients), residual 54.1M
    # (413 MiB); the residual one was counted as the plain one and built under a 300 MiB limit
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "300M")
    sizes = [10, 3000, 3000, 3000, 3000, 10]
    with pytest.raises(ValueError, match="needs about") as e:
        dl.mlp(sizes, residual=True)
    assert "54,081,010 parameters" in str(e.value) and "nothing was allocated" in str(e.value)


def test_config_run_of_a_residual_net_that_cannot_fit_exits_2(tmp_path, capsys, monkeypatch):
    one_blas_thread(monkeypatch)
    monkeypatch.setenv("DEPTHLAB_MEMORY_LIMIT", "300M")
    cfg = tmp_path / "res.toml"
    cfg.write_text('[data]\nname = "spirals"\n[model]\nsizes = ["auto", 3000, 3000, 3000, 3000, '
                   '"auto"]\nresidual = true\n[train]\nepochs = 1\n')
    code, _, err = run_cli(capsys, "run", cfg, "--out", tmp_path / "out")
    assert_one_line_error(code, err, "needs about", "nothing was allocated")
    assert not (tmp_path / "out" / "depthlab.db").exists()


# -- theory: a forward variance past float64 is one OverflowError naming the layer ---------
@pytest.mark.parametrize("kwargs, where", [
    ({"activation": "relu"}, "pre-activation variance overflowed at layer 1018"),
    ({"activation": "relu", "residual": True}, "residual stream's variance overflowed at layer"),
])
def test_predict_gradients_of_an_exploding_net_raises_no_runtime_warning(kwargs, where):
    # N(0, 1) weights on width 4 (plain) or 8 (residual): the variance grows x2 (x9) per layer;
    # E[f(s)^2] overflowed inside the Gaussian quadrature first ("RuntimeWarning: overflow
    # encountered in multiply" before the OverflowError), and the residual error named no layer.
    # 1100 layers (was 3000): the overflow is at layer 1018 (plain) and 500 (residual) whatever
    # the depth past it; with the old code both cases still fail at this depth
    width = 8 if kwargs.get("residual") else 4
    net = dl.mlp([3] + [width] * 1100 + [2], init="normal", **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(OverflowError, match=where):
            dl.theory.predict_gradients(net)
