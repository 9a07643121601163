"""Tests for depthlab.report: figures and the self-contained HTML page."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from depthlab.experiments.store import RunRecord, Store
from depthlab.report import build, figures, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUN_HEADINGS = (build.FIG_TRAINING, build.FIG_ACTIVATIONS, build.FIG_PERCENTILES,
                build.FIG_GRAD_HEATMAP, build.FIG_GRAD_PROFILE, build.FIG_HIST_ACT,
                build.FIG_HIST_GRAD, build.FIG_SATURATION)


# -- synthetic but realistic records ------------------------------------------------------------
def synthetic_probes(n_layers: int = 4, steps=range(0, 201, 20), seed: int = 0,
                     diverge_at: int | None = None) -> pd.DataFrame:
    """Sigmoid-like network: top layer saturates then recovers; gradients shrink with depth."""
    g = np.random.default_rng(seed)
    rows = []
    for step in steps:
        t = step / 200
        for layer in range(1, n_layers + 1):
            depth_frac = layer / n_layers
            sat = 0.6 * depth_frac * np.exp(-4 * t) if layer == n_layers else 0.05 * t
            mean = 0.5 - 0.45 * sat + 0.01 * g.standard_normal()
            std = 0.1 + 0.1 * t + 0.02 * depth_frac
            centre, spread = -2.5 * sat, 1.0 + 0.5 * t
            grad = 1e-2 * 0.4 ** (n_layers - layer) * (1 + t)
            if diverge_at is not None and step >= diverge_at:
                grad = np.inf
            vals = {
                "act_mean": mean, "act_std": std, "pre_mean": centre, "pre_std": spread,
                "pre_p2": centre - 2.05 * spread, "pre_p15": centre - 1.04 * spread,
                "pre_p50": centre, "pre_p85": centre + 1.04 * spread,
                "pre_p98": centre + 2.05 * spread, "saturated_frac": sat,
                "dead_frac": 0.02 * layer * t, "grad_pre_std": grad,
                "grad_pre_absmean": 0.8 * grad, "weight_std": 0.1,
            }
            rows.extend((step, layer, q, float(v)) for q, v in vals.items())
        rows.append((step, 0, "loss", 2.3 * np.exp(-2 * t)))
    return pd.DataFrame(rows, columns=["step", "layer", "quantity", "value"])


def synthetic_histograms(n_layers: int = 4, steps=(0, 200), bins: int = 25) -> pd.DataFrame:
    rows = []
    for step in steps:
        for layer in range(1, n_layers + 1):
            for kind, lo, hi, scale in (("act", 0.0, 1.0, 0.1 + 0.05 * layer),
                                        ("grad", -1e-2, 1e-2, 2e-3 * 0.5 ** (n_layers - layer))):
                edges = np.linspace(lo, hi, bins + 1)
                mid = (edges[:-1] + edges[1:]) / 2
                centre = (lo + hi) / 2
                cnt = np.round(1000 * np.exp(-0.5 * ((mid - centre) / scale) ** 2)).astype(int)
                rows.extend((step, layer, kind, float(a), float(b), int(c))
                            for a, b, c in zip(edges[:-1], edges[1:], cnt))
    return pd.DataFrame(rows, columns=["step", "layer", "kind", "bin_left", "bin_right", "count"])


def synthetic_record(rid: str, *, depth: int = 4, lr: float = 0.1, act: str = "sigmoid",
                     status: str = "finished", val_acc: float = 0.9, sweep: str | None = "s1",
                     findings: dict | None = None, probes: bool = True,
                     histograms: bool = True) -> RunRecord:
    n_steps = 200
    step = np.arange(1, n_steps + 1)
    g = np.random.default_rng(abs(hash(rid)) % 2**32)
    loss = 2.3 * np.exp(-step / 60) + 0.2 + 0.05 * g.standard_normal(n_steps) ** 2
    divergence = None
    metrics = {"train_loss": float(loss[-1]), "train_acc": val_acc + 0.03, "val_acc": val_acc,
               "val_loss": 0.4, "test_acc": val_acc - 0.01, "steps": n_steps, "seconds": 1.5}
    diverge_at = None
    if status == "diverged":
        loss = loss[:120]
        step = step[:120]
        divergence = {"step": 121, "epoch": 3, "loss": None, "layer": "dense3",
                      "nonfinite_parameters": ["dense3.W"], "max_grad": 1e9,
                      "message": "training diverged at step 121"}
        metrics = {"steps": 120, "seconds": 0.7}
        diverge_at = 140
    epochs = pd.DataFrame({"epoch": [1, 2, 3, 4], "step": [50, 100, 150, 200],
                           "train_loss": [1.2, 0.6, 0.4, 0.3],
                           "train_acc": [0.6, 0.8, 0.88, val_acc + 0.03],
                           "val_loss": [1.3, 0.7, 0.5, 0.4],
                           "val_acc": [0.55, 0.75, 0.85, val_acc]})
    if status == "diverged":
        epochs = epochs.iloc[:2]
    config = {"data": {"name": "digits", "standardize": True},
              "model": {"sizes": [64] + [32] * depth + [10], "activation": act,
                        "init": "glorot_uniform", "batchnorm": False},
              "train": {"optimizer": "sgd", "lr": lr, "batch_size": 32, "epochs": 4}}
    return RunRecord(
        id=rid, name=f"depth{depth}-lr{lr}", kind="sweep-point" if sweep else "run",
        sweep=sweep, status=status, config=config, metrics=metrics, divergence=divergence,
        error="ValueError: boom" if status == "failed" else None, seconds=1.5,
        steps=pd.DataFrame({"step": step, "loss": loss}), epochs=epochs,
        probes=(synthetic_probes(depth, diverge_at=diverge_at) if probes and status != "failed"
                else None),
        histograms=(synthetic_histograms(depth) if histograms and probes and status == "finished"
                    else None),
        findings=findings)


FINDINGS = {"summary": "1 problem found", "findings": [
    {"kind": "vanishing_gradients", "layers": [1, 2], "evidence": {"ratio": 1e-3},
     "prescription": "use init = 'he_normal'", "verified": {"before": 1e-3, "after": 0.5}}]}


@pytest.fixture()
def sweep_store(tmp_path: Path) -> tuple[Path, list[str]]:
    store = Store(tmp_path)
    ids = []
    k = 0
    for depth in (2, 4):
        for lr in (0.01, 0.1, 1.0):
            rid = f"run{k:02d}abcd"
            status = "diverged" if lr == 1.0 and depth == 4 else "finished"
            store.add_run(synthetic_record(rid, depth=depth, lr=lr, status=status,
                                           val_acc=0.7 + 0.05 * k,
                                           findings=FINDINGS if k == 0 else None))
            ids.append(rid)
            k += 1
    store.add_run(synthetic_record("failed0001", depth=3, lr=0.1, status="failed"))
    ids.append("failed0001")
    store.close()
    return tmp_path, ids


def _check_self_contained(text: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert "http://" not in text and "https://" not in text
    imgs = re.findall(r"<img[^>]*src=\"([^\"]+)\"", text)
    assert imgs and all(s.startswith("data:image/png;base64,") for s in imgs)
    assert "<link" not in text and "<script src" not in text


# -- tests --------------------------------------------------------------------------------
def test_sweep_report(sweep_store):
    out, ids = sweep_store
    path = write_report(out)
    assert path == out / "report.html"
    text = path.read_text(encoding="utf-8")
    _check_self_contained(text)
    for heading in (build.SECTION_FLOW, build.FIG_GRAD_OVERLAY, build.SECTION_RUNS,
                    *RUN_HEADINGS, build.SECTION_FINDINGS, build.SECTION_DIVERGENCE,
                    build.SECTION_ERROR):
        assert f">{heading}</h" in text, heading
    # the overlaid gradient figure comes before every other figure
    first_fig = re.search(r"<figure[^>]*><h3>([^<]+)</h3>", text).group(1)
    assert first_fig == build.FIG_GRAD_OVERLAY
    assert ">Sweep s1</h2>" in text
    # the sweep table lists every run of the sweep exactly once, with its status
    table = text[text.index('id="runs-table-sweep-s1"'):]
    table = table[:table.index("</table>")]
    assert table.count("<tr") == len(ids) + 1
    for rid in ids:
        assert rid in table
    assert "diverged</span>" in table and "failed</span>" in table
    # the varying keys (depth derived from sizes, lr) are columns; constant ones and the
    # run's name are not
    assert ">train.lr</th>" in table and ">depth</th>" in table
    assert "train.optimizer" not in table and "model.sizes" not in table
    assert ">name</th>" in table and "Varying: name" not in text
    # the best run (highest val acc among finished) is the one open
    opened = re.findall(r'<details class="run" id="run-([^"]+)" open>', text)
    assert opened == ["run04abcd"]
    assert text.count("<details") == len(ids)
    assert "vanishing_gradients" in text and "he_normal" in text
    pngs = sorted((out / "figures").glob("*.png"))
    # 5 finished runs x 9 figures, the diverged run without histograms (7), the failed run's
    # training curves, two sweep heatmaps and the two overlaid per-layer figures (round 35b:
    # + each probed run's weight std per layer, its probes recording weight_std)
    assert len(pngs) == 5 * 9 + 7 + 1 + 2 + 2
    names = {p.name for p in pngs}
    assert {"sweep-s1_val_acc.png", "sweep-s1_train_loss.png",
            "sweep-s1_gradient_per_layer.png", "depth4-lr0.01_gradient_per_layer.png",
            "depth4-lr0.01_histograms_grad.png", "depth4-lr0.1_gradient_heatmap.png"} <= names
    for p in pngs:
        assert p.read_bytes()[:8] == PNG_MAGIC
    assert not [p for p in out.rglob("*.tmp")]


def test_cap_on_shown_runs(tmp_path):
    store = Store(tmp_path)
    for k in range(6):
        store.add_run(synthetic_record(f"r{k}", lr=0.01 * (k + 1), val_acc=0.5 + 0.05 * k,
                                       probes=False))
    store.add_run(synthetic_record("bad", lr=9.0, status="diverged", probes=False))
    text = write_report(tmp_path, store=store, max_runs=2, title="Capped <sweep>").read_text()
    shown = re.findall(r'<details class="run" id="run-([^"]+)"', text)
    assert shown == ["r5", "r4", "bad"]  # two best plus every diverged one
    assert "Showing 2 of 6 finished runs" in text
    assert "Capped &lt;sweep&gt;" in text  # title escaped
    for k in range(6):
        assert f"<code>r{k}</code>" in text  # all runs still in the table
    store.close()


def test_existing_report_survives_failure(tmp_path, monkeypatch):
    out = tmp_path
    with Store(out) as store:
        # no histograms: two figures fewer to draw twice; the second report still fails at
        # its saturation figure, after drawing others
        store.add_run(synthetic_record("only", depth=2, sweep=None, histograms=False))
    write_report(out)
    before = (out / "report.html").read_bytes()
    figs_before = {p.name: p.stat().st_mtime_ns for p in (out / "figures").glob("*.png")}

    def boom(*args, **kwargs):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(figures, "saturation_dead", boom)
    with pytest.raises(RuntimeError, match="figure failed"):
        write_report(out, title="new title")
    assert (out / "report.html").read_bytes() == before
    assert {p.name: p.stat().st_mtime_ns for p in (out / "figures").glob("*.png")} == figs_before
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_empty_and_missing_store(tmp_path):
    from depthlab.experiments.store import StoreError

    with pytest.raises(StoreError, match="no results store"):
        write_report(tmp_path / "nothing-here")
    assert not (tmp_path / "nothing-here").exists()
    Store(tmp_path).close()
    text = write_report(tmp_path).read_text()
    assert "no runs yet" in text and "<img" not in text


def test_gradient_profile_theory_scaling():
    probes = synthetic_probes(4)
    theory = pd.DataFrame({"layer": [1, 2, 3, 4, 5],
                           "grad_pre_var": [1e-4, 1e-3, 1e-2, 1e-1, 1.0]})
    fig = figures.gradient_profile(probes, theory)
    lines = {ln.get_label(): ln for ln in fig.axes[0].lines}
    th = lines["theory (scaled at top layer)"]
    measured = lines["measured, step 0"]
    # scaled sqrt: equal at the top hidden layer (4), a factor sqrt(10) per layer below it
    np.testing.assert_allclose(th.get_ydata()[-1], measured.get_ydata()[-1])
    np.testing.assert_allclose(np.diff(np.log10(th.get_ydata())), 0.5)
    assert fig.axes[0].get_yscale() == "log"


def test_percentile_layer_default_and_bad_layer():
    probes = synthetic_probes(3)
    fig = figures.percentile_bands(probes)
    assert "layer 3" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="layer 7"):
        figures.percentile_bands(probes, layer=7)


def test_sweep_heatmap_marks_diverged_cells():
    runs = pd.DataFrame({"depth": [2, 2, 4, 4], "lr": [0.1, 1.0, 0.1, 1.0],
                         "status": ["finished", "finished", "finished", "diverged"],
                         "val_acc": [0.8, 0.85, 0.9, np.nan]})
    fig = figures.sweep_heatmap(runs, "lr", "depth", "val_acc")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "0.9" in texts and any("diverged" in t for t in texts)
    with pytest.raises(ValueError, match="nope"):
        figures.sweep_heatmap(runs, "nope", "depth")


def test_theory_for_config():
    cfg = {"model": {"sizes": [16, 32, 32, 4], "activation": "tanh", "init": "glorot_uniform"}}
    th, note = build.theory_for(cfg)
    assert th is not None and list(th["layer"]) == [1, 2, 3]
    assert th["grad_pre_var"].iloc[-1] == pytest.approx(1.0)
    th, note = build.theory_for({"model": {**cfg["model"], "batchnorm": True}})
    assert list(th["layer"]) == [1, 2] and "predict_gradients (batchnorm" in note
    assert th["grad_pre_var"].iloc[0] > 1.0  # batch norm: gradients grow towards the input
    th, note = build.theory_for({"model": {**cfg["model"], "batchnorm": True,
                                           "activation": "identity"}})
    assert th is None and "affine" in note
    th, note = build.theory_for({"model": {**cfg["model"], "dropout": 0.5}})
    assert th is None and "dropout" in note


def test_end_to_end_real_training(tmp_path):
    import depthlab as dl
    from depthlab.probes import ProbeRecorder

    g = np.random.default_rng(0)
    x = g.standard_normal((256, 8)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    sizes = [8, 16, 16, 16, 2]
    net = dl.mlp(sizes, activation="tanh", init="glorot_uniform", seed=0)
    recorder = ProbeRecorder(x[192:], y[192:], every=4)
    hist = dl.fit(net, x[:192], y[:192], x[192:], y[192:], loss="cross_entropy",
                  optimizer="sgd", lr=0.1, batch_size=32, epochs=3, seed=0,
                  callbacks=[recorder])
    final = hist.final()
    record = RunRecord(
        id="e2e000000001", name="tiny tanh", status=hist.status,
        config={"model": {"sizes": sizes, "activation": "tanh", "init": "glorot_uniform"},
                "train": {"optimizer": "sgd", "lr": 0.1}},
        metrics={k: final[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc")},
        seconds=hist.seconds, steps=hist.steps_frame(), epochs=hist.epochs_frame(),
        probes=recorder.frame(), histograms=recorder.histograms())
    with Store(tmp_path) as store:
        store.add_run(record)
    text = write_report(tmp_path).read_text()
    _check_self_contained(text)
    assert "e2e000000001" in text
    for heading in RUN_HEADINGS:
        assert f">{heading}</h" in text, heading
    assert "theory: depthlab.theory.propagate" in text
    for name in ("training", "gradient_per_layer", "histograms_act", "histograms_grad",
                 "saturation"):
        png = tmp_path / "figures" / f"tiny_tanh_{name}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC
    assert build.SECTION_FLOW not in text  # a single run has no sweep overview


def test_report_shows_a_real_verified_diagnosis(tmp_path, monkeypatch):
    """A Diagnosis from dl.doctor(verify=True), stored with its run, appears in the report with
    its message, prescription and before/after verdict."""
    import depthlab as dl

    g = np.random.default_rng(0)
    x = g.standard_normal((300, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0).astype(int)
    net = dl.mlp([8] + [16] * 6 + [3], activation="sigmoid", init="normal", seed=0)
    diagnosis = dl.doctor(net, (x, y), steps=60, verify=True)
    assert diagnosis.findings, "a deep sigmoid net with N(0, 1) weights has findings"
    # the findings section's words are under test, not the run's 9 figures: not drawn
    monkeypatch.setattr(build._Pngs, "add", lambda self, name, fn, *a, **k: b"")
    store = Store(tmp_path)
    store.add_run(synthetic_record("doc00001", sweep=None, findings=diagnosis.to_dict()))
    store.close()
    text = write_report(tmp_path).read_text(encoding="utf-8")
    section = text[text.index(f">{build.SECTION_FINDINGS}</h"):]
    first = diagnosis.findings[0]
    assert html.escape(first.message)[:60] in section
    assert "Baseline run: 60 steps of sgd" in section
    verdicts = section.count(": helped") + section.count(": did not help")
    assert verdicts == len(diagnosis.findings)


def test_standalone_runs_get_an_overview_first(tmp_path, monkeypatch):
    # the sections' order and the overview's figures (their titles), not their drawing, are
    # under test (test_sweep_report draws the same figures): 20 PNGs not drawn
    monkeypatch.setattr(build._Pngs, "add", lambda self, name, fn, *a, **k: b"")
    with Store(tmp_path) as store:
        store.add_run(synthetic_record("solo1", depth=2, sweep=None))
        store.add_run(synthetic_record("solo2", depth=4, sweep=None))
    text = write_report(tmp_path).read_text()
    first_fig = re.search(r"<figure[^>]*><h3>([^<]+)</h3>", text).group(1)
    assert first_fig == build.FIG_GRAD_OVERLAY
    heads = re.findall(r"<h2 id=\"[^\"]+\">([^<]+)</h2>", text)
    assert heads == [build.SECTION_ALL, "Run depth2-lr0.1", "Run depth4-lr0.1"]
