"""Round 33 (playhist33): the playground's histogram of a layer whose values overflowed.

A ReLU net with N(0, 1) weights, 64 wide and 66 deep, overflows float32 at step 0 from layer 52
on (layer 53: 4,080 of its 12,800 probe values are inf or NaN; layers 56 on: all of them). The
histogram panel showed the last shown layer (66) as a flat line at 0 without a word (the bins
count finite values only, and ``p = counts / max(sum, 1)``), and layer 53's histogram was
normalised over its finite values without saying so, while the saturation panel beneath named
the overflowed layers.
"""

from __future__ import annotations

import numpy as np
import pytest

from depthlab.playground.measure import HIST_BINS, Monitor
from depthlab.playground.setup import parse_setup, to_config

OVERFLOW = {"model.depth": "66", "model.width": "64", "model.activation": "relu",
            "model.init": "normal"}


def test_histograms_count_the_values_that_are_not_finite():
    from depthlab.experiments.runner import prepare
    from depthlab.losses import get_loss
    from depthlab.probes.stats import measurement_pass

    prep = prepare(to_config(parse_setup(OVERFLOW)))
    ds = prep.data
    mon = Monitor(prep.net, ds.x_val, prep.y_val, get_loss("cross_entropy"), ds.x_train,
                  prep.y_train)
    # the probe pass the measurement makes, its activations kept (measure clears them)
    measurement_pass(mon.net, mon.x, mon.y, mon.loss)
    acts = {layer: np.array(mon.points[layer - 1].activation.a, dtype=np.float64)
            for layer in mon.hist_layers}
    snap = mon.measure(0)
    assert [h["layer"] for h in snap["hist"]] == [1, 14, 27, 40, 53, 66]
    for h in snap["hist"]:
        a = acts[h["layer"]].reshape(-1)
        ok = np.isfinite(a)
        assert h["n"] == a.size == len(mon.x) * 64
        assert h["nonfinite"] == a.size - np.count_nonzero(ok), h["layer"]
        # the finite values, binned over [lo, hi] (values beyond go to the end bins)
        lo, hi = h["lo"], h["hi"]
        idx = np.clip(np.floor((a[ok] - lo) / (hi - lo) * HIST_BINS), 0, HIST_BINS - 1)
        counts = np.bincount(idx.astype(int), minlength=HIST_BINS)
        expected = counts / max(int(ok.sum()), 1)
        np.testing.assert_allclose(h["p"], expected, rtol=0, atol=2e-4)
    by_layer = {h["layer"]: h for h in snap["hist"]}
    # layer 53 partly overflowed (its histogram is that of its finite values), 66 entirely
    assert 0 < by_layer[53]["nonfinite"] < by_layer[53]["n"]
    assert sum(by_layer[53]["p"]) == pytest.approx(1, abs=1e-3)
    assert by_layer[66]["nonfinite"] == by_layer[66]["n"]
    assert all(by_layer[layer]["nonfinite"] == 0 for layer in (1, 14, 27, 40))


def test_the_histogram_panel_names_the_overflowed_layers(browser, server):
    pytest.importorskip("playwright")
    from helpers.browser import checked_page, screenshot_dir

    shots = screenshot_dir(__import__("pathlib").Path("/tmp/team/playhist33"))
    query = "&".join(f"{k}={v}" for k, v in OVERFLOW.items())
    with checked_page(browser) as pg:
        pg.goto(server.url + "?" + query)
        pg.wait_for_function("S.last && S.last.hist.length === 6", timeout=30_000)
        hist = pg.evaluate("S.last.hist.map(h => [h.layer, h.nonfinite, h.n])")
        data = pg.evaluate("S.plots['plot-hist'].data.slice(1)")
        note = pg.evaluate("(document.getElementById('hist-note') || {}).textContent")
        pg.locator("#panel-hist").screenshot(path=str(shots / "hist_overflow.png"))
    (l53, bad53, n53), (l66, bad66, n66) = hist[4], hist[5]
    assert (l53, l66) == (53, 66) and 0 < bad53 < n53 and bad66 == n66
    # was: "" (layer 66 a flat line at 0, layer 53 normalised over its finite values silently)
    assert note == (f"layer 53: {bad53:,} of {n53:,} values not finite, drawn over the finite "
                    f"ones; layer 66: all {n66:,} values not finite (overflowed): not drawn")
    # layer 66 is no line (was a line of zeros); the other layers are drawn
    assert all(v is None for v in data[5]), data[5]
    assert all(any(v for v in series) for series in data[:5])
