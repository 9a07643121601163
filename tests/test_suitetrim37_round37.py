"""Round 37 (suitetrim37): schoenholz2017's gradient-growth figure drew its mean-field curve
``chi1^(L-1)`` from a full :func:`~depthlab.theory.meanfield` at each of its 120 points, which
also solves the correlation map's fixed point (``c*``, ``xi_c``) that the curve never reads:
~14 s of CPU per figure (twice per test of the growth claims), ~0.15 s with ``chi1`` alone."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pandas as pd
import pytest

from depthlab.reproduce import schoenholz2017

mf_module = importlib.import_module("depthlab.theory.meanfield")  # the module, not the function


def test_growth_figure_curve_is_chi1_without_the_correlation_fixed_point(monkeypatch):
    gdf = pd.DataFrame({"sigma_w2": [1.0, 1.76, 2.5], "measured": [1e-3, 1.0, 1e3]})
    # the values the figure must draw: meanfield's own chi1^(L-1) (at a few of its 120
    # points: each meanfield is slow), computed before the patch
    sw = np.linspace(0.9, 3.1, 120)
    at = [0, 37, 60, 119]
    expected = [mf_module.meanfield("tanh", sw[i], schoenholz2017.SIGMA_B2).chi1
                ** (schoenholz2017.GRAD_DEPTH - 1) for i in at]

    def no_c_star(*args, **kwargs):
        raise AssertionError("the growth curve solved the correlation map's fixed point")

    monkeypatch.setattr(mf_module, "_c_fixed_point", no_c_star)
    fig = schoenholz2017._fig_growth(gdf, 1.76)
    (curve, *_), = [ax.get_lines() for ax in fig.axes]
    np.testing.assert_array_equal(curve.get_xdata(), sw)
    assert [curve.get_ydata()[i] for i in at] == expected  # identical values


def test_digits_load_without_importing_scikit_learn_the_same_arrays(monkeypatch):
    """Each ``depthlab`` process that loaded digits imported all of scikit-learn (SciPy's
    stats, ...: ~0.7 s of CPU of a 3 s ``depthlab run``) to read one bundled CSV."""
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    from depthlab.data import digits

    x, y = load_digits(return_X_y=True)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # importing it now fails
    raw = digits.load()
    assert raw.x.dtype == np.uint8 and raw.y.dtype == np.int64
    np.testing.assert_array_equal(raw.x, x.astype(np.uint8))
    np.testing.assert_array_equal(raw.y, y)
    monkeypatch.delitem(sys.modules, "sklearn.datasets")
    monkeypatch.setattr(digits, "_bundled_csv", lambda: None)  # no file: load_digits itself
    np.testing.assert_array_equal(digits.load().x, raw.x)
