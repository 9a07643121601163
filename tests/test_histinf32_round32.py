"""Round 32 (histinf32): histograms of a diverged step count only finite entries in their bins
and keep how many entries were -inf, +inf and NaN (recorder, store, report)."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from matplotlib.text import Text

from depthlab import mlp, plot
from depthlab.experiments.store import RunRecord, Store
from depthlab.losses import get_loss
from depthlab.probes import ProbeRecorder
from depthlab.probes.stats import measurement_pass
from depthlab.training.trainer import fit


def _diverging_run():
    """A ReLU net whose layer-3 pre-activations overflow to +-inf and whose layer-4 ones are
    NaN (inf - inf) on the probe batch at step 0; the arrays are computed directly too."""
    g = np.random.default_rng(0)
    x = g.standard_normal((40, 6)).astype(np.float32)
    y = g.integers(0, 3, 40)
    net = mlp([6, 16, 16, 16, 16, 3], activation="relu", seed=0)
    pts = net.probe_points()
    pts[1].dense.W.value[...] *= 1e37
    pts[2].dense.W.value[:, :8] *= 1e10  # half the units overflow
    measurement_pass(net, x[:20], y[:20], get_loss("cross_entropy"))
    direct = {(p.index, k): np.array(getattr(p.activation, a), dtype=np.float64)
              for p in pts for k, a in (("pre", "s"), ("act", "a"))}
    rec = ProbeRecorder(x[:20], y[:20], "cross_entropy", every=1, histogram_steps=(0,),
                        n_bins=10)
    with np.errstate(all="ignore"):
        fit(net, x, y, lr=1e-9, batch_size=8, epochs=None, max_steps=2, callbacks=[rec])
    return rec, direct


@pytest.fixture(scope="module")
def run():
    return _diverging_run()


def test_counts_are_the_finite_entries_and_the_nonfinite_are_kept(run):
    rec, direct = run
    h = rec.histograms()
    h0 = h[h["step"] == 0]
    seen_inf = seen_nan = False
    for (layer, kind), v in direct.items():
        hs = h0[(h0["layer"] == layer) & (h0["kind"] == kind)].sort_values("bin_left")
        fin = v[np.isfinite(v)]
        neg, pos, nan = int(np.sum(v == -np.inf)), int(np.sum(v == np.inf)), int(np.isnan(v).sum())
        seen_inf |= neg + pos > 0
        seen_nan |= nan > 0
        assert int(hs["count"].sum()) == fin.size, (layer, kind)
        assert (hs["n_neginf"] == neg).all() and (hs["n_posinf"] == pos).all(), (layer, kind)
        assert (hs["n_nan"] == nan).all(), (layer, kind)
        if fin.size:  # the bins: NumPy's histogram of the finite entries over the same edges
            edges = np.append(hs["bin_left"].to_numpy(), hs["bin_right"].to_numpy()[-1])
            want = np.histogram(np.clip(fin, edges[0], edges[-1]), bins=edges)[0]
            np.testing.assert_array_equal(hs["count"].to_numpy(), want)
    assert seen_inf and seen_nan  # the fixture really has both


def test_the_store_keeps_the_nonfinite_counts_and_reads_an_old_store(run, tmp_path):
    rec, _ = run
    h = rec.histograms()
    with Store(tmp_path / "new") as store:
        store.add_run(RunRecord(id="r", status="diverged", histograms=h))
        back = store.histograms("r")
    cols = ["step", "layer", "kind", "bin_left", "bin_right", "count", "n_neginf", "n_posinf",
            "n_nan"]
    assert list(back.columns) == cols
    key = ["step", "layer", "kind", "bin_left"]
    want = h.sort_values(key, kind="stable", ignore_index=True)[cols]
    np.testing.assert_array_equal(back[cols[3:]].to_numpy(float), want[cols[3:]].to_numpy(float))
    # a store written before the columns existed: opens read-only and writable, and its
    # histograms read with the counts unknown (NaN); a run added to it keeps them
    old = tmp_path / "old" / "depthlab.db"
    old.parent.mkdir()
    conn = sqlite3.connect(old)
    conn.executescript(_OLD_SCHEMA)
    conn.execute("INSERT INTO runs (id, kind, status, config, metrics, created) VALUES "
                 "('o', 'run', 'finished', '{}', '{}', 0)")
    conn.execute("INSERT INTO histograms VALUES ('o', 0, 1, 'pre', -1.0, 1.0, 7)")
    conn.commit()
    conn.close()
    with Store(old, readonly=True) as store:
        got = store.histograms("o")
    assert list(got.columns) == cols and int(got["count"].iloc[0]) == 7
    assert got[["n_neginf", "n_posinf", "n_nan"]].isna().all().all()
    with Store(old) as store:
        store.add_run(RunRecord(id="r", status="diverged", histograms=h))
        assert store.histograms("o")[["n_nan"]].isna().all().all()
        again = store.histograms("r")
    np.testing.assert_array_equal(again[cols[3:]].to_numpy(float), want[cols[3:]].to_numpy(float))


_OLD_SCHEMA = """
CREATE TABLE runs (id TEXT PRIMARY KEY, name TEXT, kind TEXT NOT NULL, sweep TEXT,
    status TEXT NOT NULL, config TEXT NOT NULL, metrics TEXT NOT NULL, divergence TEXT,
    error TEXT, created REAL NOT NULL, seconds REAL);
CREATE TABLE steps (run_id TEXT NOT NULL, step INTEGER, loss REAL);
CREATE TABLE histograms (run_id TEXT NOT NULL, step INTEGER, layer INTEGER,
    kind TEXT, bin_left REAL, bin_right REAL, count INTEGER);
"""


def _texts(fig) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(Text) if t.get_text())


def _said(v: np.ndarray) -> str:
    """What a panel says of the entries of ``v`` that are not drawn."""
    neg, pos, nan = int(np.sum(v == -np.inf)), int(np.sum(v == np.inf)), int(np.isnan(v).sum())
    sign = "+inf/-inf" if neg and pos else "+inf" if pos else "-inf"
    parts = ([f"{neg + pos:,} of {v.size:,} entries {sign}"] if neg + pos else []) + (
        [f"{nan:,} NaN" if neg + pos else f"{nan:,} of {v.size:,} entries NaN"] if nan else [])
    return ", ".join(parts)


def test_the_report_panels_say_how_many_entries_were_not_finite(run):
    rec, direct = run
    for kind in ("pre", "act"):
        text = _texts(plot.activation_histograms(rec, kind, steps=[0]))
        partial = nothing = 0
        for (layer, k), v in direct.items():
            if k != kind or np.isfinite(v).all():
                continue
            if np.isfinite(v).any():
                partial += 1
                assert f"{_said(v)}: not drawn" in text, (kind, layer, text)
            else:
                nothing += 1
                assert f"no finite entry: {_said(v)}" in text, (kind, layer, text)
        assert partial and (nothing or kind == "act")  # relu(-inf) = 0 is finite
        assert "range [-1, 1]" not in text and "range [0, 1]" not in text
