"""Round 34 (reportplay34): the playground's histogram panel of an exploding network.

A ReLU net with N(0, 1) weights, 32 wide and 20 deep (the lecture's "exploding" setup): its
shown layers' activations reach 6.5 (layer 1), 1.2e3, 2.0e5, 1.3e7, 4.1e9 and 9.5e11 (layer 20)
at step 0. The panel drew them on one linear axis from 0 to 9.5e11: layers 1-16 were each a
spike of fraction 1 in the first of 60 bins, read as "every activation is 0" (dead units) in a
network whose activations explode. Now layers whose ranges differ by more than 1000 times
(three decades, the loss panel's rule for a log scale) are drawn each over its own range,
x = value / s (s = the layer's largest |value|), the axis says so and a note under the panel
gives every layer's s; ranges closer than that keep one axis (a vanishing net's deeper layers
narrowing towards 0 is the Glorot & Bengio figure's point).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

EXPLODING = "model.depth=20&model.width=32&model.activation=relu&model.init=normal"
N_COMMON = 60  # the panel's common bins (app.js)


def _fmt(v: float) -> str:
    """The page's number format (app.js fmt): 4 significant digits, or 3 in exponent form at
    1e4 and beyond, the exponent as JavaScript writes it (``2.05e+5``)."""
    text = f"{v:.2e}" if abs(v) >= 1e4 else f"{float(f'{v:.4g}'):g}"
    return re.sub(r"e([+-])0(\d)", r"e\1\2", text)


def _rebinned(lo: float, hi: float, p: list[float], glo: float, ghi: float) -> np.ndarray:
    """A layer's bins [lo + i w, lo + (i+1) w) moved onto N_COMMON equal bins of [glo, ghi],
    each bin's fraction shared in proportion to its overlap with the common bins."""
    out = np.zeros(N_COMMON)
    edges = np.linspace(lo, hi, len(p) + 1)
    common = np.linspace(glo, ghi, N_COMMON + 1)
    for frac, a, b in zip(p, edges[:-1], edges[1:], strict=True):
        overlap = np.clip(np.minimum(b, common[1:]) - np.maximum(a, common[:-1]), 0, None)
        out += frac * overlap / (b - a)
    return out


def test_an_exploding_networks_histograms_are_each_drawn_over_their_own_range(browser, server,
                                                                           tmp_path):
    pytest.importorskip("playwright")
    from helpers.browser import checked_page, screenshot_dir

    shots = screenshot_dir(Path(tmp_path))
    with checked_page(browser) as pg:
        pg.goto(server.url + "?" + EXPLODING)
        pg.wait_for_function("S.last && S.last.hist.length === 6", timeout=30_000)
        # the page's own snapshot, drawn once more so that series and snapshot are the same one
        hist = pg.evaluate("onUpdate(S.last), S.last.hist.map(h => [h.layer, h.lo, h.hi, h.p])")
        data = pg.evaluate("S.plots['plot-hist'].data")
        note = pg.evaluate("(document.getElementById('hist-scale') || {}).textContent")
        label = pg.evaluate("S.plots['plot-hist'].axes[0].label")  # drawn on the canvas
        pg.locator("#panel-hist").screenshot(path=str(shots / "exploding_hist.png"))
        # the same snapshot with the ranges 100 times apart (layer 1's a hundredth): one axis
        common = pg.evaluate("""() => { const m = JSON.parse(JSON.stringify(S.last));
            const top = m.hist[m.hist.length - 1].hi;
            m.hist.forEach((h, i) => { h.lo = 0; h.hi = top / (i ? 1 : 100); }); onUpdate(m);
            return [(document.getElementById('hist-scale') || {}).textContent,
                    S.plots['plot-hist'].axes[0].label, S.plots['plot-hist'].data[0].at(-1)]; }""")
    scales = {layer: max(abs(lo), abs(hi)) for layer, lo, hi, _ in hist}
    spans = [hi - lo for _, lo, hi, _ in hist]
    assert max(spans) > 1e9 * min(spans)  # the exploding net: ranges 1e11 apart
    # every layer on x = value / s: the common axis is [min lo/s, max hi/s] = [0, 1] for ReLU
    glo = min(lo / scales[layer] for layer, lo, _, _ in hist)
    ghi = max(hi / scales[layer] for layer, _, hi, _ in hist)
    assert data[0] == pytest.approx(glo + (np.arange(N_COMMON) + 0.5) * (ghi - glo) / N_COMMON)
    for (layer, lo, hi, p), ys in zip(hist, data[1:], strict=True):
        s = scales[layer]
        expected = _rebinned(lo / s, hi / s, p, glo, ghi)
        np.testing.assert_allclose(ys, expected, atol=1e-9, err_msg=f"layer {layer}")
        # was: layers 1-16 a single spike (their whole mass in the first of 60 bins)
        assert np.count_nonzero(np.asarray(ys) > 1e-3) >= 10, (layer, ys)
    assert label == "value / the layer's max |value|", label
    top = hist[-1][2]
    assert common == ["", "activation value", pytest.approx(top * (N_COMMON - 0.5) / N_COMMON)]
    ratio = max(spans) / min(spans)
    assert note.startswith(f"The layers' ranges differ {_fmt(ratio)} times: each is drawn over its "
                           "own range, x = value / s, s = its largest |value|: "), note
    for layer, s in scales.items():
        assert f"layer {layer} s = {_fmt(s)}" in note, (layer, s, note)


def test_the_playgrounds_activations_over_training_of_an_exploding_net_are_each_in_view(
        browser, server):
    """The playground's "activations over training" panel of the lecture's exploding net (ReLU,
    N(0, 1) weights, 20 layers of 32): layer means 0.46 (layer 1) to 7.1e10 (layer 20) on one
    linear axis up to 2e11, so layers 1-16 lay flat on 0, read as "no activation" in a net
    whose activations explode; and a layer whose mean overflowed (null) just had no point,
    without a word. Now, as the histogram panel beside it does, layers whose scales differ
    more than 1000 times are each divided by their own s (the largest |mean| + std), the axis
    and a note say so, and the note names the layers not drawn at the latest step."""
    pytest.importorskip("playwright")
    from helpers.browser import checked_page

    with checked_page(browser) as pg:
        pg.goto(server.url + "?" + EXPLODING)
        pg.wait_for_function("S.last && S.last.hist.length === 6", timeout=30_000)
        # the panel drawn afresh from the page's own step-0 snapshot (histories emptied)
        pg.evaluate("""() => { window.fresh = () => {
            S.evo = {step: [], mean: [], std: []};
            S.hist = {step: [], train: [], probe: [], acc: []}; };
            window.shown = () => [S.plots['plot-evo'].data, S.plots['plot-evo'].axes[1].label,
                                  (document.getElementById('evo-scale') || {}).textContent]; }""")
        evo, (data, label, note) = pg.evaluate("fresh(), onUpdate(S.last), [S.evo, shown()]")
        # scales 100 times apart keep one axis; a layer's mean overflowed: named
        near = pg.evaluate("""() => { const m = JSON.parse(JSON.stringify(S.last));
            m.step = 99; fresh();
            m.hist.forEach((h, j) => { m.act_mean[h.layer - 1] = 0.5 * (j ? 1 : 0.01);
                                       m.act_std[h.layer - 1] = 0.5 * (j ? 1 : 0.01); });
            m.act_mean[19] = null; onUpdate(m); const [d, l, n] = shown();
            return [d[1][0], l, n]; }""")
    mean, std = np.array(evo["mean"], float), np.array(evo["std"], float)
    s = (np.abs(mean) + np.abs(std)).max(axis=0)
    assert s.max() > 1e9 * s.min()  # the exploding net
    k = mean.shape[1]
    for j in range(k):
        np.testing.assert_allclose(data[1 + j], mean[:, j] / s[j], rtol=1e-9)
        np.testing.assert_allclose(data[1 + k + 2 * j], (mean[:, j] + std[:, j]) / s[j], rtol=1e-9)
        # was: layers 1-16 at most 4e-3 of the axis's top (flat on 0)
        assert np.abs(data[1 + j]).max() > 0.1, (j, data[1 + j])
    assert label == "activation / s"
    for layer, sj in zip([1, 5, 9, 12, 16, 20], s, strict=True):
        assert f"layer {layer} s = {_fmt(sj)}" in note, (layer, sj, note)
    assert near[0] == pytest.approx(0.005)  # layer 1 unscaled: 0.5 x 0.01
    assert near[1] == "activation"
    assert near[2] == ("layer 20: mean or std not finite at step 99 (overflowed): not drawn "
                       "there. "), near[2]
