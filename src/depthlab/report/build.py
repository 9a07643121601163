"""Build the report: read the store, draw the figures, write ``report.html`` and
``figures/*.png`` atomically (everything is rendered in memory first; each file is written to a
temporary name in its folder and moved into place with ``os.replace``)."""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..atomic import atomic_write_bytes
from . import figures
from . import html as H

MAX_RUNS = 12
MAX_DIVERGED = 12

SECTION_SWEEP = "Sweep overview"
SECTION_RUNS = "Runs"
FIG_TRAINING = "Training curves"
FIG_ACTIVATIONS = "Activations over training"
FIG_PERCENTILES = "Pre-activation percentiles"
FIG_GRAD_HEATMAP = "Back-propagated gradients"
FIG_GRAD_PROFILE = "Gradient std at initialization vs theory"
FIG_HIST_ACT = "Histograms of activations"
FIG_HIST_GRAD = "Histograms of back-propagated gradients"
FIG_SATURATION = "Saturation and dead units"
SECTION_FINDINGS = "Doctor findings"
SECTION_DIVERGENCE = "Divergence"
SECTION_ERROR = "Error"
METRIC_COLUMNS = ("train_loss", "val_acc", "test_acc")


# -- small utilities ---------------------------------------------------------------------------
def _as_dict(value: Any) -> dict:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {"message": value}
    return dict(value) if isinstance(value, dict) else {}


def _num(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return v


def _flatten(cfg: dict, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"sizes": [..]}}`` -> ``{"model.sizes": (..)}`` (lists become tuples)."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        elif isinstance(v, list):
            out[key] = tuple(v)
        else:
            out[key] = v
    return out


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text))[:80] or "run"


def _get(frame: Any) -> pd.DataFrame:
    return frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(frame or [])


def _clean_probes(probes: pd.DataFrame) -> pd.DataFrame:
    if probes.empty:
        return probes
    p = probes.copy()
    p["value"] = pd.to_numeric(p["value"], errors="coerce").replace([np.inf, -np.inf], np.nan)
    return p


# -- the runs table ----------------------------------------------------------------------------
def _runs_table(store) -> pd.DataFrame:
    """One row per run: id, name, status, sweep, config/metrics dicts, flattened config columns
    (``cfg:<dotted key>``) and the metric columns of :data:`METRIC_COLUMNS`."""
    runs = store.runs()  # config/metrics already parsed, metric columns float64
    if runs.empty:
        return runs
    runs["config"] = [c or {} for c in runs["config"]]
    flat = [_flatten(c) for c in runs["config"]]
    keys: list[str] = []
    for f in flat:
        keys.extend(k for k in f if k not in keys)
    for k in keys:
        runs["cfg:" + k] = [f.get(k) for f in flat]
    return runs


def varying_keys(runs: pd.DataFrame) -> list[str]:
    """Dotted config keys whose value differs between runs, most distinct values first."""
    out = []
    for col in runs.columns:
        if not col.startswith("cfg:"):
            continue
        n = len({figures._key(v) for v in runs[col]})
        if n > 1:
            out.append((n, col[4:]))
    out.sort(key=lambda t: -t[0])  # stable: ties keep config order
    return [k for _, k in out]


def _rank(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs ordered best first: finished before others, then val_acc (desc), then train_loss."""
    r = runs.copy()
    r["_fin"] = (r["status"] != "finished").astype(int)
    r["_acc"] = -r["val_acc"].fillna(-np.inf)
    r["_loss"] = r["train_loss"].fillna(np.inf)
    return r.sort_values(["_fin", "_acc", "_loss"], kind="stable").drop(
        columns=["_fin", "_acc", "_loss"])


# -- theory ------------------------------------------------------------------------------------
def theory_for(config: dict) -> tuple[pd.DataFrame | None, str]:
    """``depthlab.theory.propagate`` for a plain MLP config (no batchnorm, residual or dropout,
    integer sizes), else ``(None, reason)``."""
    model = _as_dict(config).get("model", {}) or {}
    if model.get("batchnorm") or model.get("residual") or _num(model.get("dropout", 0)) > 0:
        return None, "no theory curve: the prediction covers plain MLPs only"
    sizes = model.get("sizes")
    if not isinstance(sizes, (list, tuple)) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in sizes):
        return None, "no theory curve: the config has no explicit integer layer sizes"
    from ..theory import propagate

    try:
        kw = dict(model.get("activation_kwargs") or {})
        th = propagate(list(sizes), model.get("activation", "relu"),
                       init=model.get("init", "glorot_uniform"), **kw)
    except (ValueError, TypeError, OverflowError) as exc:
        return None, f"no theory curve: {exc}"
    note = "theory: depthlab.theory.propagate (Gaussian variance propagation at init"
    if (_as_dict(config).get("data") or {}).get("standardize") is False:
        note += "; assumes unit-variance inputs, but this run did not standardize them"
    return th, note + ")"


# -- sections ----------------------------------------------------------------------------------
class _Pngs:
    """Collects rendered figures (name -> PNG bytes) before anything is written."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def add(self, name: str, fig_fn: Callable[..., Any], *args: Any, **kw: Any) -> bytes:
        fig = fig_fn(*args, **kw)
        png = figures.figure_png(fig)
        self.files[name] = png
        return png


def _sweep_section(runs: pd.DataFrame, keys: list[str], pngs: _Pngs, shown: set[str]) -> str:
    parts = [f"<h2 id=\"sweep\">{H.esc(SECTION_SWEEP)}</h2>"]
    counts = runs["status"].value_counts().to_dict()
    status_txt = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    parts.append(f"<p class=\"note\">{len(runs)} runs ({H.esc(status_txt)}). "
                 + (f"Varying: {H.esc(', '.join(keys))}." if keys else
                    "No configuration key varies between runs.")
                 + " Click a column header to sort.</p>")
    ranked = _rank(runs)
    cols = ["id", "name", "status", *keys, "train loss", "val acc", "test acc", "steps",
            "seconds"]
    rows, classes = [], []
    for _, r in ranked.iterrows():
        rid = str(r["id"])
        link = (f"<a href=\"#run-{H.esc(_safe_name(rid))}\"><code>{H.esc(rid)}</code></a>"
                if rid in shown else f"<code>{H.esc(rid)}</code>")
        status = H.badge(r["status"])
        vals = [_cell(r["cfg:" + k]) for k in keys]
        rows.append([link, r.get("name") or "", status, *vals, _cellnum(r["train_loss"]),
                     _cellnum(r["val_acc"]), _cellnum(r["test_acc"]), _cellnum(r["steps"]),
                     _cellnum(r["seconds"])])
        classes.append(r["status"] if r["status"] != "finished" else "")
    parts.append("<div class=\"card\">" + H.table(cols, rows, sortable=True, row_classes=classes,
                                                  table_id="runs-table",
                                                  raw_html_columns=("id", "status")) + "</div>")
    blocks = []
    metrics = [(m, hib) for m, hib in (("val_acc", True), ("train_loss", False))
               if np.isfinite(runs[m]).any()]
    if len(keys) >= 2:
        kx, ky = keys[0], keys[1]
        for m, hib in metrics:
            png = pngs.add(f"sweep_{_safe_name(m)}.png", figures.sweep_heatmap,
                           _plain(runs, (kx, ky)), kx, ky, m, higher_is_better=hib)
            blocks.append(H.figure_block(
                png, f"{m} over {ky} × {kx}",
                "Each cell: the best run with that pair over the other keys. "
                "Hatched ✗ cells: every run there diverged or failed."))
    elif len(keys) == 1:
        for m, hib in metrics:
            png = pngs.add(f"sweep_{_safe_name(m)}.png", figures.sweep_bars,
                           _plain(runs, (keys[0],)), keys[0], m, higher_is_better=hib)
            blocks.append(H.figure_block(png, f"{m} by {keys[0]}",
                                         "Hatched ✗ bars: every run there diverged or failed."))
    if blocks:
        parts.append("<div class=\"grid\">" + "".join(blocks) + "</div>")
    return "".join(parts)


def _plain(runs: pd.DataFrame, keys: tuple[str, ...]) -> pd.DataFrame:
    out = pd.DataFrame({k: runs["cfg:" + k].to_list() for k in keys})
    for col in ("status", *METRIC_COLUMNS):
        out[col] = runs[col].to_list()
    return out


def _cell(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return H.fmt(list(v))
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _cellnum(v: Any) -> float | None:
    f = _num(v)
    return f if math.isfinite(f) else None


def _verification_text(v: dict) -> str:
    """``train loss a -> b, val acc a -> b, <metric> a -> b: helped`` from a Verification."""
    b, a = _as_dict(v.get("before")), _as_dict(v.get("after"))
    bits = [f"{label} {H.fmt(b.get(key))} → {H.fmt(a.get(key))}"
            for label, key in (("train loss", "train_loss"), ("val acc", "val_acc"))
            if key in b or key in a]
    if v.get("metric"):
        bits.append(f"{v['metric']} {H.fmt(v.get('metric_before'))} → "
                    f"{H.fmt(v.get('metric_after'))}")
    verdict = "helped" if v.get("helped") else "did NOT help"
    return ", ".join(bits) + f": {verdict}" + (" (resolved)" if v.get("resolved") else "")


def _findings_html(payload: dict) -> str:
    """The doctor's diagnosis: the baseline run, then one row per finding with its message,
    evidence, prescription and (when verified) the before/after numbers."""
    items = payload.get("findings") if isinstance(payload.get("findings"), list) else None
    if items is None:
        items = [payload] if payload.get("kind") else []
    verifs = {str(_as_dict(v).get("kind")): _as_dict(v)
              for v in payload.get("verifications") or []}
    parts = []
    summary = payload.get("summary") or payload.get("message")
    if summary:
        parts.append(f"<p>{H.esc(summary)}</p>")
    base, settings = _as_dict(payload.get("baseline")), _as_dict(payload.get("settings"))
    if base:
        run = (f"{settings.get('steps')} steps of {settings.get('optimizer')} lr "
               f"{H.fmt(settings.get('lr'))}, " if settings else "")
        parts.append(f"<p>Baseline run: {H.esc(run)}train loss "
                     f"{H.esc(H.fmt(base.get('train_loss')))}, val acc "
                     f"{H.esc(H.fmt(base.get('val_acc')))}.</p>")
    if not items:
        parts.append("<p class=\"note\">Clean bill of health: the doctor found nothing to "
                     "report.</p>")
        return "".join(parts)
    rows = []
    for f in items:
        f = _as_dict(f)
        presc = f.get("prescription", f.get("cure", ""))
        text = f.get("prescription_text")
        verified = verifs.get(str(f.get("kind")))
        if verified:
            check = _verification_text(verified)
        else:
            v = f.get("verified", f.get("verification"))
            check = _text(v) if v is not None else "not verified (run with --verify)"
        rows.append([
            _text(f.get("severity", "")), _text(f.get("kind", "")), _text(f.get("layers", "")),
            _text(f.get("message", "")), _text(f.get("evidence", "")),
            (f"{text} ({_text(presc)})" if text else _text(presc)), check,
        ])
    cols = ["severity", "kind", "layers", "finding", "evidence", "prescription", "verification"]
    keep = [i for i, c in enumerate(cols) if c == "kind" or any(r[i] for r in rows)]
    parts.append(H.table([cols[i] for i in keep], [[r[i] for i in keep] for r in rows]))
    return "".join(parts)


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, dict):
        return "; ".join(f"{k}={H.fmt(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(_text(x) for x in v)
    return H.fmt(v)


def _divergence_html(div: dict) -> str:
    msg = div.get("message")
    rest = [(k, v) for k, v in div.items() if k != "message"]
    return ("<div class=\"alert\"><b>Training diverged.</b>"
            + (f" {H.esc(msg)}" if msg else "") + H.key_values(rest) + "</div>")


def _run_section(store, row: pd.Series, rank_label: str, is_open: bool, pngs: _Pngs,
                 keys: list[str], percentile_layer: int | None) -> str:
    rid = str(row["id"])
    safe = _safe_name(rid)
    detail = _as_dict(store.run(rid)) if hasattr(store, "run") else {}
    status = row["status"]
    title_bits = [f"<code>{H.esc(rid)}</code>"]
    if row.get("name"):
        title_bits.append(H.esc(row["name"]))
    title_bits.append(H.badge(status))
    if rank_label:
        title_bits.append(f"<span class=\"badge best\">{H.esc(rank_label)}</span>")
    sub = ", ".join(f"{m.replace('_', ' ')} {H.fmt(row[m])}" for m in METRIC_COLUMNS
                    if math.isfinite(_num(row[m])))
    if keys:
        sub = "; ".join(f"{k}={H.fmt(_cell(row['cfg:' + k]))}" for k in keys[:4]) + (
            f" — {sub}" if sub else "")
    head = (f"<summary>{' '.join(title_bits)}<span class=\"sub\">{H.esc(sub)}</span></summary>")
    body: list[str] = []
    config = row["config"]
    model = config.get("model", {}) if isinstance(config, dict) else {}
    train = config.get("train", {}) if isinstance(config, dict) else {}
    summary_pairs = [(f"model.{k}", model[k]) for k in ("sizes", "activation", "init",
                                                         "batchnorm", "residual", "dropout")
                     if k in model]
    summary_pairs += [(f"train.{k}", train[k]) for k in ("optimizer", "lr", "batch_size",
                                                         "epochs", "max_steps") if k in train]
    metrics = row["metrics"]
    summary_pairs += [(k, v) for k, v in metrics.items() if not isinstance(v, (dict, list))]
    if summary_pairs:
        body.append(H.key_values(summary_pairs))

    div = _as_dict(detail.get("divergence", row.get("divergence")))
    if status == "diverged" or div:
        body.append(f"<h3>{H.esc(SECTION_DIVERGENCE)}</h3>")
        body.append(_divergence_html(div or {"message": "status is 'diverged' (no report)"}))
    error = detail.get("error", row.get("error"))
    if status == "failed" or (isinstance(error, str) and error):
        body.append(f"<h3>{H.esc(SECTION_ERROR)}</h3><div class=\"alert\"><pre>"
                    f"{H.esc(error or 'failed (no message recorded)')}</pre></div>")

    steps, epochs, evals = _get(store.steps(rid)), _get(store.epochs(rid)), _get(store.evals(rid))
    probes = _clean_probes(_get(store.probes(rid)))
    hists = _get(store.histograms(rid))
    blocks: list[str] = []
    if not (steps.empty and epochs.empty and evals.empty):
        png = pngs.add(f"{safe}_training.png", figures.training_curves, steps, epochs, evals)
        blocks.append(H.figure_block(png, FIG_TRAINING, "Left: per-step loss (faint) and its "
                                     "exponential moving average. Right: accuracy.", wide=True))
    if not probes.empty:
        png = pngs.add(f"{safe}_activations.png", figures.activation_mean_std, probes)
        blocks.append(H.figure_block(png, FIG_ACTIVATIONS, "Line: mean activation per layer; "
                                     "bars: ± one standard deviation (Glorot & Bengio 2010, "
                                     "Fig. 2)."))
        layers = figures.hidden_layers(probes)
        layer = percentile_layer if percentile_layer in layers else None
        png = pngs.add(f"{safe}_percentiles.png", figures.percentile_bands, probes, layer)
        blocks.append(H.figure_block(png, FIG_PERCENTILES, "15/50/85th percentiles (and 2–98th "
                                     "band) of one layer's input to its nonlinearity "
                                     "(Ioffe & Szegedy 2015, Fig. 1b/c)."))
        png = pngs.add(f"{safe}_grad_heatmap.png", figures.gradient_heatmap, probes)
        blocks.append(H.figure_block(png, FIG_GRAD_HEATMAP, "Std of dL/ds per layer and step; "
                                     "a vertical colour gradient means vanishing or exploding "
                                     "gradients."))
        th, note = theory_for(config)
        png = pngs.add(f"{safe}_grad_profile.png", figures.gradient_profile, probes, th)
        blocks.append(H.figure_block(png, FIG_GRAD_PROFILE, note))
    if not hists.empty:
        png = pngs.add(f"{safe}_hist_act.png", figures.layer_histograms, hists, "act")
        blocks.append(H.figure_block(png, FIG_HIST_ACT, "Glorot & Bengio 2010, Fig. 6 style.",
                                     wide=True))
        png = pngs.add(f"{safe}_hist_grad.png", figures.layer_histograms, hists, "grad")
        blocks.append(H.figure_block(png, FIG_HIST_GRAD, "Glorot & Bengio 2010, Fig. 7 style.",
                                     wide=True))
    if not probes.empty:
        png = pngs.add(f"{safe}_saturation.png", figures.saturation_dead, probes)
        blocks.append(H.figure_block(png, FIG_SATURATION, "Saturated: |activation| near its "
                                     "bound; dead: units that never fire on the probe batch.",
                                     wide=True))
    if blocks:
        body.append("<div class=\"grid\">" + "".join(blocks) + "</div>")
    if probes.empty and status != "failed":
        body.append("<p class=\"note\">No probes were recorded for this run "
                    "(enable them with <code>[probes] every = N</code>).</p>")
    findings = store.findings(rid) if hasattr(store, "findings") else None
    if findings:
        body.append(f"<h3>{H.esc(SECTION_FINDINGS)}</h3>")
        body.append(_findings_html(_as_dict(findings)))
    open_attr = " open" if is_open else ""
    return (f"<details class=\"run\" id=\"run-{H.esc(safe)}\"{open_attr}>{head}"
            f"<div class=\"body\">{''.join(body)}</div></details>")


# -- entry point -------------------------------------------------------------------------------
def write_report(out_dir: str | os.PathLike, store: Any = None, title: str | None = None, *,
                 max_runs: int = MAX_RUNS, max_diverged: int = MAX_DIVERGED,
                 percentile_layer: int | None = None) -> Path:
    """Write ``out_dir/report.html`` (self-contained) and ``out_dir/figures/*.png`` from the
    runs in ``store`` (default: ``Store(out_dir)``, i.e. ``out_dir/depthlab.db``, which must
    exist: a missing store raises ``depthlab.experiments.store.StoreError``).

    Per-run sections are drawn for the ``max_runs`` best runs by validation accuracy plus up to
    ``max_diverged`` diverged runs; every run appears in the sweep table. All figures are
    rendered before any file is written, and every file is replaced atomically, so a failure
    leaves the previous report untouched. Returns the path of ``report.html``.
    """
    for label, v in (("max_runs", max_runs), ("max_diverged", max_diverged)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{label} must be an integer >= 0, got {v!r}")
    out = Path(out_dir)
    own_store = store is None
    if own_store:
        from ..experiments.store import Store

        store = Store(out, create=False)
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _write(out, store, title, max_runs, max_diverged, percentile_layer)
    finally:
        if own_store:
            store.close()


def _write(out: Path, store: Any, title: str | None, max_runs: int, max_diverged: int,
           percentile_layer: int | None) -> Path:
    runs = _runs_table(store)
    pngs = _Pngs()
    n = len(runs)
    body: list[str] = []
    toc: list[tuple[str, str]] = []
    if n == 0:
        body.append(f"<h2 id=\"runs\">{H.esc(SECTION_RUNS)}</h2>"
                    "<p class=\"note\">The store holds no runs yet.</p>")
    else:
        ranked = _rank(runs)
        keys = varying_keys(runs)
        div_mask = ranked["status"] == "diverged"
        fail_mask = ranked["status"] == "failed"
        best_rows = ranked[~div_mask & ~fail_mask].head(max_runs)
        div_rows = ranked[div_mask].head(max_diverged)
        failed_rows = ranked[fail_mask]
        shown_ids = [*best_rows["id"].astype(str), *div_rows["id"].astype(str),
                     *failed_rows["id"].astype(str)]
        if n > 1:
            body.append(_sweep_section(runs, keys, pngs, set(shown_ids)))
            toc.append(("sweep", SECTION_SWEEP))
        body.append(f"<h2 id=\"runs\">{H.esc(SECTION_RUNS)}</h2>")
        toc.append(("runs", SECTION_RUNS))
        n_ok = int((~div_mask & ~fail_mask).sum())
        note = [f"Showing {len(best_rows)} of {n_ok} finished runs"
                + (f" (the {max_runs} best by validation accuracy)" if n_ok > max_runs else "")]
        if div_mask.any():
            note.append(f"{len(div_rows)} of {int(div_mask.sum())} diverged runs")
        if fail_mask.any():
            note.append(f"{int(fail_mask.sum())} failed runs (errors only)")
        body.append(f"<p class=\"note\">{H.esc('; '.join(note))}. The best run is expanded; "
                    "click a run to expand it.</p>")
        first = True
        for _, row in best_rows.iterrows():
            label = "best" if first and n > 1 else ""
            body.append(_run_section(store, row, label, first, pngs, keys, percentile_layer))
            first = False
        for _, row in div_rows.iterrows():
            body.append(_run_section(store, row, "", first, pngs, keys, percentile_layer))
            first = False
        for _, row in failed_rows.iterrows():
            body.append(_run_section(store, row, "", first, pngs, keys, percentile_layer))
            first = False

    from .. import __version__

    sweeps = sorted({str(s) for s in runs.get("sweep", pd.Series(dtype=object)).dropna()}) \
        if n else []
    if title is None:
        title = ("depthlab report — sweep " + ", ".join(sweeps) if sweeps else
                 f"depthlab report — {runs['name'].iloc[0] or runs['id'].iloc[0]}" if n == 1
                 else "depthlab report")
    meta = [("generated", time.strftime("%Y-%m-%d %H:%M")), ("depthlab", __version__),
            ("runs", str(n))]
    if n:
        counts = runs["status"].value_counts().to_dict()
        meta.append(("status", ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))))
    document = H.page(title, meta, "".join(body), toc=toc)

    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    for name, png in pngs.files.items():
        atomic_write_bytes(fig_dir / name, png)
    target = out / "report.html"
    atomic_write_bytes(target, document.encode("utf-8"))
    return target
