"""Round 46 (probes46): the histogram kernel's bin indices converted in vector lanes
(``kernels._bin_index``: float -> int32 -> uint32, was float -> uint32) give the same counts
as the NumPy definition of ``histograms.bin_counts``, bin for bin, on float32 and float64 data
with entries inside, at and beyond the edges, and the recorder's histograms are unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from depthlab.models import mlp
from depthlab.probes import ProbeRecorder, accel
from depthlab.probes.histograms import bin_counts, histogram_nonfinite
from depthlab.training import fit

kernels = accel.kernels()
needs_kernels = pytest.mark.skipif(kernels is None, reason="compiled kernels not installed")


def _numpy_counts(x: np.ndarray, lo: float, hi: float, n_bins: int) -> np.ndarray:
    """``histograms.bin_counts`` on its NumPy path (the definition)."""
    with accel.numpy_only():
        return bin_counts(x, lo, hi, n_bins)


def _data(dtype, n: int, seed: int) -> np.ndarray:
    """Normal entries with the range's edges, entries beyond it, huge and tiny magnitudes."""
    g = np.random.default_rng(seed)
    x = g.standard_normal(n).astype(dtype)
    info = np.finfo(dtype)
    special = np.array([-1.0, 1.0, -1.5, 1.5, 0.0, -0.0, info.max, -info.max, info.tiny,
                        -info.tiny, 0.999999, -0.999999, 1e-30, 2.0, -2.0], dtype=dtype)
    k = min(n, special.size)
    x[:k] = special[:k]
    g.shuffle(x)
    return x


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_bins", [1, 2, 7, 50, 1000, 4097])
@pytest.mark.parametrize("n", [1, 5, 4095, 4096, 4097, 78400])
def test_kernel_bin_counts_equal_the_numpy_definition(dtype, n_bins, n):
    x = _data(dtype, n, seed=n + n_bins)
    for lo, hi in ((-1.0, 1.0), (0.0, 3.0), (-0.3, 0.1), (-1e-3, 1e-3)):
        want = _numpy_counts(x, lo, hi, n_bins)
        got = kernels.bin_counts(np.ascontiguousarray(x), lo, n_bins / (hi - lo), n_bins)
        assert got.dtype == np.int64 and got.shape == (n_bins,)
        np.testing.assert_array_equal(got, want)
        assert got.sum() == n  # every (finite) entry in one bin


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["pre", "act", "grad", "weight"])
def test_histograms_with_kernels_equal_the_numpy_path(dtype, kind):
    g = np.random.default_rng(3)
    for shape, scale in (((60, 100), 1.0), ((784, 100), 0.05), ((3, 7), 1e-20), ((128, 256), 4.0)):
        x = (g.standard_normal(shape) * scale).astype(dtype)
        if kind == "act":
            x = np.maximum(x, 0)  # many ties at 0, as a ReLU's output
        fast = histogram_nonfinite(kind, x, 50)
        with accel.numpy_only():
            slow = histogram_nonfinite(kind, x, 50)
        assert fast[:2] == slow[:2] and fast[3] == slow[3]
        np.testing.assert_array_equal(fast[2], slow[2])


@needs_kernels
def test_recorded_histograms_equal_the_numpy_paths():
    """A training run's histograms (every kind, every layer, the default schedule) are the
    same with the compiled kernels as on the NumPy path."""
    g = np.random.default_rng(0)
    x = g.standard_normal((240, 30)).astype(np.float32)
    y = g.integers(0, 4, 240)
    out = []
    for numpy_only in (False, True):
        net = mlp([30, 40, 40, 4], activation="sigmoid", seed=1)
        rec = ProbeRecorder(every=2)
        ctx = accel.numpy_only() if numpy_only else np.errstate()
        with ctx:
            fit(net, x, y, loss="cross_entropy", optimizer="sgd", lr=0.1, batch_size=24,
                epochs=None, max_steps=12, eval_train=False, callbacks=[rec])
        out.append(rec.histograms())
    assert len(out[0]) > 0
    assert out[0].equals(out[1])


def _update_ratio_rows(rec: ProbeRecorder):
    df = rec.frame()
    return df[df["quantity"].isin(["update_ratio", "loss"])].reset_index(drop=True)


@needs_kernels
def test_a_layer_the_kernel_declines_still_gets_its_weight_snapshot(monkeypatch):
    """``before_update`` counts the snapshot buffers the statistics' pass filled; where a layer
    took the NumPy path (its buffer not filled), the weights are copied before the update, so
    every update ratio is the one of a run where the kernels filled every buffer."""
    g = np.random.default_rng(4)
    x = g.standard_normal((120, 12)).astype(np.float32)
    y = g.integers(0, 3, 120)

    def run():
        net = mlp([12, 16, 16, 16, 3], activation="tanh", seed=7)
        rec = ProbeRecorder(every=1, histogram_steps=())  # record and snapshot together
        fit(net, x, y, loss="cross_entropy", optimizer="adam", lr=0.01, batch_size=20,
            epochs=None, max_steps=10, eval_train=False, callbacks=[rec])
        return rec

    want = run()
    from depthlab.probes import fused

    call = fused.LayerStats.__call__
    declined = []

    def decline_layer_2(self, w_copy=None):
        if self.point.index == 2:
            declined.append(w_copy is not None)
            return None  # the NumPy path decides (and fills no buffer)
        return call(self, w_copy)

    monkeypatch.setattr(fused.LayerStats, "__call__", decline_layer_2)
    got = run()
    assert any(declined)  # a record with a snapshot buffer took the NumPy path
    a, b = _update_ratio_rows(want), _update_ratio_rows(got)
    assert (a["quantity"] == "update_ratio").sum() > 0
    assert a.equals(b)
