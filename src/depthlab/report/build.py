"""Build the report: read the store, draw the figures, write ``report.html`` and
``figures/*.png`` atomically (everything is rendered in memory first; each file is written to a
temporary name in its folder, and only when all are written are they moved into place with
``os.replace``)."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..atomic import atomic_write_all, stage_bytes
from ..validators import as_number
from . import figures, glyphs
from . import html as H

MAX_RUNS = 12
MAX_DIVERGED = 12

SECTION_RUNS = "Runs"
FIG_TRAINING = "Training curves"
FIG_ACTIVATIONS = "Activations over training"
FIG_PERCENTILES = "Pre-activation percentiles"
FIG_GRAD_HEATMAP = "Back-propagated gradients"
FIG_GRAD_PROFILE = "Gradient std per layer vs theory"
FIG_HIST_ACT = "Histograms of activations"
FIG_HIST_GRAD = "Histograms of back-propagated gradients"
FIG_SATURATION = "Saturation and dead units"
FIG_UPDATE_RATIO = "Relative weight update per layer"
FIG_JACOBIAN = "Input–output Jacobian singular values"
FIG_WEIGHT_STD = "Weight std per layer vs initializer"
FIG_WEIGHT_GRAD = "Weight gradients per layer"
FIG_HIST_WEIGHT = "Histograms of weights"
SECTION_FINDINGS = "Doctor findings"
SECTION_DIVERGENCE = "Divergence"
SECTION_ERROR = "Error"
METRIC_COLUMNS = ("train_loss", "val_acc", "test_acc")
REGRESSION_COLUMNS = ("val_loss", "test_loss")
"""What a run without accuracies (mse/huber on real targets) is shown and ranked by besides
its train loss."""


# -- small utilities ---------------------------------------------------------------------------
def _section(config: Any, name: str) -> dict:
    """The ``name`` section of a run's config when it is a table, else ``{}``."""
    value = config.get(name) if isinstance(config, dict) else None
    return value if isinstance(value, dict) else {}


def _as_dict(value: Any) -> dict:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {"message": value}
    return dict(value) if isinstance(value, dict) else {}


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


def _mpl(text: Any) -> Any:
    """A run name or config value as matplotlib draws it literally: ``$`` escaped, so that
    ``cost $5 and $x`` is not typeset as math (and ``$\\frac{1$`` does not stop the report).
    Non-strings are returned unchanged."""
    return text.replace("$", r"\$") if isinstance(text, str) else text


def _get(frame: Any) -> pd.DataFrame:
    return frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(frame or [])


def _clean_probes(probes: pd.DataFrame) -> pd.DataFrame:
    if probes.empty:
        return probes
    p = probes.copy()
    p["value"] = pd.to_numeric(p["value"], errors="coerce").replace([np.inf, -np.inf], np.nan)
    return p


def _module_names(config: Any) -> dict[int, str]:
    """Layer number -> module name of a depthlab.torch run (``config.model.layers``: Watch and
    torch doctor runs); empty for NumPy runs."""
    model = _as_dict(config).get("model")
    names = model.get("layers") if isinstance(model, dict) else None
    if not isinstance(names, dict):
        return {}
    out = {}
    for k, v in names.items():
        try:
            out[int(k)] = str(v)
        except (TypeError, ValueError):
            continue
    return out


def _no_hidden_layer(config: Any) -> bool:
    """A depthlab (NumPy) run whose ``model.sizes`` holds its input and output sizes only
    (``depth = 0``: a linear or logistic model): its probes measure hidden layers, so it has
    none to draw. False for depthlab.torch runs and configs without explicit sizes."""
    cfg = _as_dict(config)
    sizes = _as_dict(cfg.get("model")).get("sizes")
    return (not cfg.get("source") and isinstance(sizes, (list, tuple)) and len(sizes) == 2)


def _named(table: pd.DataFrame, config: Any) -> pd.DataFrame:
    """``table`` with a ``module`` column from the run's module names (the figures label
    layers by it); unchanged for NumPy runs or when the table has one already."""
    names = _module_names(config)
    if table.empty or not names or "module" in table.columns or "layer" not in table.columns:
        return table
    return table.assign(module=table["layer"].map(lambda v: names.get(int(v), "")))


# -- the runs table ----------------------------------------------------------------------------
def _as_validated(config: dict) -> dict:
    """``config`` with optimizer hyperparameters given as direct ``[train]`` keys moved into
    ``train.optimizer_kwargs``, as validation does: a sweep point refused before validation
    (``train.betas`` with ``optimizer = "sgd"``) is stored as written, and would otherwise
    make ``train.betas`` and ``train.optimizer_kwargs`` look like two varying keys."""
    train = config.get("train") if isinstance(config, dict) else None
    if not isinstance(train, dict):
        return config
    from ..spec import all_optimizer_hyperparameters

    direct = [k for k in all_optimizer_hyperparameters() if k in train]
    if not direct:
        return config
    kwargs = train.get("optimizer_kwargs")
    kwargs = dict(kwargs) if isinstance(kwargs, dict) else {}
    kwargs.update({k: train[k] for k in direct})
    moved = {k: v for k, v in train.items() if k not in direct}
    return {**config, "train": {**moved, "optimizer_kwargs": kwargs}}


def _runs_table(store) -> pd.DataFrame:
    """One row per run: id, name, status, sweep, config/metrics dicts, flattened config columns
    (``cfg:<dotted key>``) and the metric columns of :data:`METRIC_COLUMNS`."""
    runs = store.runs()  # config/metrics already parsed, metric columns float64
    if runs.empty:
        return runs
    runs["config"] = [_as_validated(c or {}) for c in runs["config"]]
    flat = [_flatten(c) for c in runs["config"]]
    keys: list[str] = []
    for f in flat:
        keys.extend(k for k in f if k not in keys)
    for k in keys:
        runs["cfg:" + k] = [f.get(k) for f in flat]
    sizes = runs.get("cfg:model.sizes", pd.Series([None] * len(runs), index=runs.index))
    runs["cfg:depth"] = [len(s) - 2 if isinstance(s, tuple) and len(s) >= 2 else None
                         for s in sizes]
    runs["cfg:width"] = [s[1] if isinstance(s, tuple) and len(s) >= 3 and len(set(s[1:-1])) == 1
                         else None for s in sizes]
    if "cfg:source" in runs:  # a PyTorch run's (Watch, doctor) beside depthlab's own
        runs["cfg:source"] = [NUMPY_SOURCE if _missing(v) else v for v in runs["cfg:source"]]
    return runs


def _missing(value: Any) -> bool:
    """A config key a run does not have: None, or the NaN pandas puts in its place."""
    return value is None or (isinstance(value, float) and value != value)


NUMPY_SOURCE = "depthlab (NumPy)"
"""The ``source`` column of a run of depthlab's own engine (its config names none) in a store
that also holds PyTorch runs (``depthlab.torch.Watch``, ``depthlab.torch.doctor``)."""


NEVER_VARYING = ("name", "sweep")
"""Config keys that label a run rather than configure it: never listed as varying."""

DESCRIPTIVE_KEYS = ("model.theory", "model.layers", "model.blocks")
"""Config keys (and their dotted sub-keys) a PyTorch run records to describe its model, not to
set it up: the theory's per-layer prediction from the weights at initialization and the module
names (each run's details show them). Never listed as varying: the prediction differs between
any two runs, and as a column its list of dicts made each row of a runs table 376 px tall."""


def _descriptive(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in DESCRIPTIVE_KEYS)


def varying_keys(runs: pd.DataFrame) -> list[str]:
    """Dotted config keys whose value differs between runs, most distinct values first.

    ``name`` is never one, nor a key of :data:`DESCRIPTIVE_KEYS`; when ``model.sizes`` varies
    and the derived ``depth`` (hidden layers) and ``width`` (hidden units, when all hidden
    layers share it) explain the difference, the varying ones of them are listed in its place.
    Runs of several engines (``source``: depthlab's NumPy runs beside PyTorch Watch or doctor
    runs) list ``source`` first, and a key counts the values of the engines that have it: a
    key one engine's configs never hold (``data.name`` of a Watch run) is no difference (the
    43 keys of four runs, two of each, were all listed as varying)."""
    engines = (runs["cfg:source"] if "cfg:source" in runs
               else pd.Series([None] * len(runs), index=runs.index))

    def distinct(col: str) -> int:
        if col not in runs:
            return 0
        values, kinds = list(runs[col]), list(engines)
        if col == "cfg:width" and "cfg:depth" in runs:
            # a net without hidden layers (depth 0) has no width: its None beside the others'
            # 16 listed "width" as varying in a sweep of depth [0, 1, 4] x lr, which then drew
            # bars of "not every combination was run" instead of its full depth x lr heatmap
            has = [d != 0 for d in runs["cfg:depth"]]
            if any(has):
                values = [v for v, h in zip(values, has, strict=True) if h]
                kinds = [e for e, h in zip(kinds, has, strict=True) if h]
        if col != "cfg:source" and engines.nunique(dropna=False) > 1:
            held = {e for e, v in zip(kinds, values) if not _missing(v)}
            values = [v for e, v in zip(kinds, values) if e in held]
        if col == "cfg:model.sizes" and any(isinstance(v, tuple) and "auto" in v
                                            for v in values):
            # a point refused before its data were read keeps "auto" ends where the others
            # have the data's widths: only the hidden sizes tell networks apart then
            values = [v[1:-1] if isinstance(v, tuple) else v for v in values]
        return len({figures.value_key(v) for v in values})

    out = [(distinct(c), c[4:]) for c in runs.columns if c.startswith("cfg:")
           and c[4:] not in (*NEVER_VARYING, "depth", "width") and not _descriptive(c[4:])
           and distinct(c) > 1]
    out.sort(key=lambda t: (t[1] != "source", -t[0]))  # stable: ties keep config order
    keys = [k for _, k in out]
    if "model.sizes" in keys:
        derived = [k for k in ("depth", "width") if distinct("cfg:" + k) > 1]
        # of the runs that have sizes (a PyTorch run's depth and width are missing)
        pairs = {figures.value_key(p) for p in zip(runs["cfg:depth"], runs["cfg:width"])
                 if not _missing(p[0])}
        if derived and len(pairs) == distinct("cfg:model.sizes"):
            i = keys.index("model.sizes")
            keys[i:i + 1] = derived
            keys = [k for k in keys if k not in ("model.depth", "model.width")]
    return keys


def _legend_order(n_runs: int) -> str:
    """The overlay captions' sentence on their legends' order, :func:`_rank`'s (empty for one
    run): a sweep's legend read in no order a reader could tell (a 2 x 2 x 2 grid listed
    ``tanh, depth=2, lr=0.1`` first and ``tanh, depth=2, lr=0.01`` last)."""
    if n_runs < 2:
        return ""
    return (" The legend lists the runs best first (finished runs first, then by validation "
            "accuracy, else validation loss, else training loss), as the gradient-flow table "
            "does.")


def _rank(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs ordered best first: finished before others, then val_acc (desc), then train_loss;
    runs without any accuracy (regressions: mse/huber on real targets) by val_loss (asc) before
    train_loss (the lowest training loss of an overfitting net was taken for the best)."""
    r = runs.copy()
    r["_fin"] = (r["status"] != "finished").astype(int)
    r["_acc"] = -r["val_acc"].fillna(-np.inf)
    no_acc = not np.isfinite(pd.to_numeric(r["val_acc"], errors="coerce")).any()
    r["_val"] = (pd.to_numeric(r["val_loss"], errors="coerce").fillna(np.inf)
                 if no_acc and "val_loss" in r else 0.0)
    r["_loss"] = r["train_loss"].fillna(np.inf)
    return r.sort_values(["_fin", "_acc", "_val", "_loss"], kind="stable").drop(
        columns=["_fin", "_acc", "_val", "_loss"])


# -- theory ------------------------------------------------------------------------------------
def theory_for(config: dict) -> tuple[pd.DataFrame | None, str]:
    """``depthlab.theory.propagate`` for a plain MLP config, else ``(None, reason)`` (see
    :func:`depthlab.plot.theory_for_config`)."""
    from .. import plot

    return plot.theory_for_config(_as_dict(config))


def init_weight_std(config: Any) -> tuple[dict[int, float], str]:
    """Hidden layer ``l`` -> the std ``sqrt(Var(W))`` its initializer draws from, for a
    depthlab config with integer ``model.sizes`` (``l`` maps ``sizes[l-1] -> sizes[l]``:
    ``sqrt(2 / fan_in)`` for ``he_*``, ``sqrt(2 / (fan_in + fan_out))`` for ``glorot_*``,
    ``initializers.weight_variance``), and a label naming it; ``({}, reason)`` for a torch
    run (its init is the model's code), a residual net (its probes number nonlinearities), or
    an initializer without a theoretical variance."""
    from ..initializers import weight_variance

    cfg = _as_dict(config)
    model = _as_dict(cfg.get("model"))
    source = cfg.get("source")
    if isinstance(source, str) and source.startswith("depthlab.torch"):
        return {}, "a PyTorch model's initialization is its own code: no initializer line"
    sizes = model.get("sizes")
    if not isinstance(sizes, (list, tuple)) or len(sizes) < 3 or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes):
        return {}, "no explicit integer layer sizes: no initializer line"
    if model.get("residual"):
        return {}, ("a residual network's probes number its nonlinearities, not its weight "
                    "matrices: no initializer line")
    init = model.get("init", "glorot_uniform")
    if not isinstance(init, str):
        return {}, f"init = {init!r:.40}: no initializer line"
    try:
        std = {layer: math.sqrt(weight_variance(init, int(sizes[layer - 1]), int(sizes[layer])))
               for layer in range(1, len(sizes) - 1)}
    except (TypeError, ValueError, KeyError) as exc:
        return {}, f"init = {init!r}: no theoretical variance ({exc})"
    return std, f"{init}: sqrt(Var(W))"


# -- sections ----------------------------------------------------------------------------------
class _Pngs:
    """Collects rendered figures (name -> PNG bytes) before anything is written."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def add(self, name: str, fig_fn: Callable[..., Any], *args: Any, **kw: Any) -> bytes:
        # a run named ".hidden" drew .hidden_training.png: hidden files, which the next
        # report's cleanup (never a dot file) then left behind for good
        name = name.lstrip(".") or "run.png"
        stem, k = name.rsplit(".", 1)[0], 2
        # two runs with one name: keep both files; also two names that differ in case only
        # ("RUN 1" and "run_1"), one file on macOS's and Windows' file systems
        taken = {n.casefold() for n in self.files}
        while name.casefold() in taken:
            name = f"{stem}_{k}.png"
            k += 1
        with _quiet_extremes():
            fig = fig_fn(*args, **kw)
            png = figures.figure_png(fig)
        self.files[name] = png
        return png


@contextmanager
def _quiet_extremes() -> Iterator[None]:
    """NumPy's floating-point warnings and matplotlib's "non-positive ylim on a log-scaled
    axis" off while a figure is drawn: values near float64's largest (1e300) make matplotlib's
    own autoscaling of a log axis overflow, and the report printed "depthlab: warning:
    overflow encountered in exp" / "in scalar divide" a dozen times, about limits the figures
    then set themselves. Other warnings (a glyph no font has) still reach the user."""
    import warnings

    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Attempt to set non-positive",
                                category=UserWarning)
        warnings.filterwarnings("ignore", message="overflow encountered",
                                category=RuntimeWarning)
        warnings.filterwarnings("ignore", message="invalid value encountered",
                                category=RuntimeWarning)
        warnings.filterwarnings("ignore", message="divide by zero encountered",
                                category=RuntimeWarning)
        yield


# -- groups: one section per sweep, per doctor diagnosis and per stand-alone run ---------------
class _Group:
    """Runs reported together: a sweep's points, or one stand-alone run / diagnosis.
    ``by_run``: unrelated runs (many stand-alone runs) whose metric chart has one bar per run
    instead of one per combination of their differing settings."""

    def __init__(self, anchor: str, title: str, kind: str, runs: pd.DataFrame,
                 by_run: bool = False) -> None:
        self.anchor, self.title, self.kind, self.runs = anchor, title, kind, runs
        self.by_run = by_run
        self.sweep: str | None = None  # the sweep's id (its points' ``sweep`` column)
        self.planned: int | None = None  # the points it is to run (Store.sweep_sizes)
        self.grid_keys: list[str] = []  # its swept keys in the grid's order (sweep_grids)
        self.grid: dict[str, list] = {}  # its grid's values per key (sweep_grids)


def _groups(runs: pd.DataFrame, fold_beyond: int | None = None,
            members: dict[str, list[str]] | None = None) -> list[_Group]:
    """Sweeps first (in order of first appearance), then stand-alone runs and diagnoses. A
    sweep's runs are those its ``sweep`` column names and those ``members`` (the store's
    :meth:`~depthlab.experiments.store.Store.sweep_points`) list for it: a run computed by one
    sweep is also in every later sweep that found it stored (an extended grid). Each
    group's anchor is unique (sweep names that differ only in characters an anchor drops, such
    as ``深さ`` and ``幅``, get ``-2``, ``-3``, ...). More than ``fold_beyond`` stand-alone
    runs (diagnoses and reproductions apart) are reported together like a sweep's points: one
    table of all of them, details for the best, so a folder of a thousand runs gives a page
    of a dozen detailed runs rather than a thousand sections."""
    out: list[_Group] = []
    used = {f"run-{_safe_name(r)}" for r in runs["id"]}  # the runs' own sections' ids

    def unique(anchor: str) -> str:
        base, k = anchor, 2
        while anchor in used:
            anchor, k = f"{base}-{k}", k + 1
        used.add(anchor)
        return anchor

    sweeps = runs["sweep"].where(runs["sweep"].notna(), None) if "sweep" in runs else \
        pd.Series([None] * len(runs), index=runs.index)
    ids = runs["id"].astype(str)
    of_sweep = {name: {*ids[sweeps == name]} for name in dict.fromkeys(s for s in sweeps if s)}
    for name, rids in (members or {}).items():
        of_sweep.setdefault(name, set()).update(map(str, rids))
    position = {rid: k for k, rid in enumerate(ids)}  # sweeps in order of their first run
    order = sorted((min((position[r] for r in rids if r in position), default=None), name)
                   for name, rids in of_sweep.items() if rids & position.keys())
    for _, name in order:
        sel = runs[ids.isin(of_sweep[name])]
        own = sel[sweeps[sel.index] == name]  # its name from the runs it computed
        cfg_names = {str(n) for n in (own if len(own) else sel).get(
            "cfg:name", pd.Series(dtype=object)).dropna()}
        label = f"{cfg_names.pop()} ({name})" if len(cfg_names) == 1 else str(name)
        title = f"Sweep {label}" if name != "demo" else "Demo: one deep network, several recipes"
        out.append(_Group(unique(f"sweep-{_safe_name(name)}"), title, "sweep", sel))
        out[-1].sweep = str(name)
    in_sweeps = set().union(*of_sweep.values()) if of_sweep else set()
    alone = runs[(sweeps.isna() | (sweeps == "")) & ~ids.isin(in_sweeps)]
    kinds = [str(k or "run") for k in alone.get("kind", pd.Series([None] * len(alone)))]
    plain = alone[[k not in ("doctor", "reproduce") for k in kinds]]
    fold = fold_beyond is not None and len(plain) > fold_beyond
    if fold:
        out.append(_Group(unique("runs"), f"{len(plain)} stand-alone runs", "sweep", plain,
                          by_run=True))
    # a name two stand-alone runs share (`depthlab run` twice with two seeds) gets each run's
    # id after it: two sections and contents links read "Run same"
    shared = alone["name"].dropna().astype(str).value_counts() if "name" in alone else {}
    for _, row in alone.iterrows():
        if fold and row.name in plain.index:
            continue
        label = row.get("name") or row["id"]
        if row.get("name") and shared.get(str(row["name"]), 0) > 1:
            label = f"{label} ({row['id']})"
        kind = str(row.get("kind") or "run")
        # the doctors name their runs "doctor FILE" ("Doctor: doctor models.py:make_model")
        shown = (label[len("doctor "):] if kind == "doctor" and str(label).startswith(
            "doctor ") and len(str(label)) > len("doctor ") else label)
        title = (f"Doctor: {shown}" if kind == "doctor" else
                 f"Reproduction: {label}" if kind == "reproduce" else f"Run {label}")
        out.append(_Group(unique(f"{kind}-{_safe_name(row['id'])}"), title, kind,
                          runs.loc[[row.name]]))
    return out


def _labels(runs: pd.DataFrame) -> dict[str, str]:
    """A short unique label per run id: its name when names differ (a sweep's common
    ``<sweep name>:`` prefix removed); a name two runs share gets the id after it
    (``M (dc496c22f488)``: two Watch runs of one model class, told apart and still named,
    where every run was labelled by its id alone); a run without a name, its id. A doctor's
    run reads ``doctor NAME``, as the torch doctor names its own: ``depthlab doctor cfg.toml``
    stores the config's name, and beside ``depthlab run cfg.toml``'s run the two read
    ``NAME (id)``, the doctor's short baseline not told apart from the trained run. Runs that
    share a name are told apart by the settings that differ among them (``same (depth=6,
    activation=relu)``, :func:`_telling_values`; the values alone when every run has that name)
    where those tell each apart, else by their ids."""
    names = [str(n) if n else "" for n in runs["name"]]
    kinds = (runs["kind"] if "kind" in runs else pd.Series([None] * len(runs))).tolist()
    names = [f"doctor {n}" if n and str(k) == "doctor" and not n.startswith("doctor ") else n
             for n, k in zip(names, kinds)]
    ids = [str(r) for r in runs["id"]]
    unique = len(set(names)) == len(names) and all(names)
    if unique and len(names) > 1 and all(":" in n for n in names):
        prefixes = {n.split(":", 1)[0] for n in names}
        if len(prefixes) == 1:
            names = [n.split(":", 1)[1] for n in names]
    if unique:
        return dict(zip(ids, names))
    telling: dict[str, str] = {}
    for n in {n for n in names if n and names.count(n) > 1}:
        telling.update(_telling_values(runs[[m == n for m in names]]))
    if len(set(names)) == 1 and len(telling) == len(ids):  # one name: it tells nothing apart
        return {r: telling[r] for r in ids}
    labels = [n if n and names.count(n) == 1 else
              f"{n} ({telling.get(r, r)})" if n else r for r, n in zip(ids, names)]
    return dict(zip(ids, labels if len(set(labels)) == len(labels) else ids))


MAX_LABEL_KEYS = 3
"""At most this many settings tell runs of one name apart in their labels (else their ids)."""


def _telling_values(runs: pd.DataFrame) -> dict[str, str]:
    """``{id: "depth=6, activation=relu"}`` for runs that share a name: the values of the keys
    that vary among them (:func:`varying_keys`, at most :data:`MAX_LABEL_KEYS`, each by its
    last dotted part where those differ), when they tell every run apart; else ``{}`` (the
    runs keep their ids). ``depthlab run cfg.toml`` again with another depth stores a second
    run of the config's name: 30 such runs were "same (a3c391b49157)", "same (2261521b505b)",
    ... in every legend, bar chart and table of the overview."""
    if not any(str(c).startswith("cfg:") for c in runs.columns):
        return {}
    keys = varying_keys(runs)
    if not keys or len(keys) > MAX_LABEL_KEYS:
        return {}
    short = [k.rsplit(".", 1)[-1] for k in keys]
    shown = short if len(set(short)) == len(short) else keys
    out = {}
    for _, row in runs.iterrows():
        parts = [f"{s}={H.fmt(_cell(row['cfg:' + k]))}" for s, k in zip(shown, keys)
                 if not _missing(row["cfg:" + k])]
        out[str(row["id"])] = ", ".join(parts)
    return out if all(out.values()) and len(set(out.values())) == len(out) else {}


# -- the headline: gradients and activations of every run, one figure --------------------------
FIG_GRAD_OVERLAY = "Gradient std per layer, all runs"
FIG_ACT_OVERLAY = "Activation std per layer, all runs"
SECTION_FLOW = "Gradient flow"
SECTION_ALL = "All runs"
MAX_OVERLAY_RUNS = 16
OVERLAY_DIVERGED = 4
"""Of the MAX_OVERLAY_RUNS places in a section's overlay and gradient-flow table, those kept
for diverged runs (the best finished runs take the others)."""


def _finite_any(runs: pd.DataFrame, column: str) -> bool:
    """Whether ``runs[column]`` holds a finite number (a missing column: no)."""
    if column not in runs:
        return False
    return bool(np.isfinite(pd.to_numeric(runs[column], errors="coerce")).any())


def _flow_score(runs: pd.DataFrame) -> str | None:
    """The metric the gradient-flow table shows beside each run: the first of ``val_acc``,
    ``val_loss`` (a sweep of regressions, as its runs table) and ``train_loss`` (depthlab.torch
    Watch runs measure nothing else) that some run has a finite value of; None when none has.
    The "val acc" column was blank in every row of a report of Watch runs."""
    return next((c for c in ("val_acc", "val_loss", "train_loss") if _finite_any(runs, c)),
                None)


def _flow_section(store: Any, group: _Group, pngs: _Pngs) -> str:
    """The overlaid per-layer gradient and activation figures and the first/last-layer gradient
    ratio of each run (at initialization and at the end)."""
    from .. import plot

    ranked = _rank(group.runs)
    # a failed run that recorded probes before its error (a Watch whose training loop raised
    # at step 4000, an out-of-memory error: its gradients up to there) is drawn with the
    # others; one without probes has nothing to draw (was: every failed run left out and
    # counted as "failed (no probes)")
    failed = ranked["status"] == "failed"
    probed_failed = {str(rid) for rid in ranked.loc[failed, "id"]
                     if not _get(store.probes(str(rid))).empty}
    ranked = ranked[~failed | ranked["id"].astype(str).isin(probed_failed)]
    # beyond MAX_OVERLAY_RUNS runs, the diverged ones (the explosions a gradient lab is about)
    # keep up to OVERLAY_DIVERGED places: ranked last, they were never drawn or tabled
    diverged = ranked[ranked["status"] == "diverged"].head(OVERLAY_DIVERGED)
    ranked = pd.concat([ranked[ranked["status"] != "diverged"].head(
        MAX_OVERLAY_RUNS - len(diverged)), diverged]) if len(ranked) > MAX_OVERLAY_RUNS \
        else ranked
    labels = _labels(group.runs)
    keys = varying_keys(group.runs)
    if keys and max(len(v) for v in labels.values()) > 24 and all(
            "=" in v for v in labels.values()):  # long generated names: the varying values
        values = {str(r["id"]): ", ".join(f"{k.rsplit('.', 1)[-1]}={_plot_value(r['cfg:' + k])}"
                                          for k in keys) for _, r in group.runs.iterrows()}
        if len(set(values.values())) == len(values):  # (runs told apart by their names only
            labels = values                           # keep them)
    tables = {}
    for _, r in ranked.iterrows():
        probes = _named(_clean_probes(_get(store.probes(str(r["id"])))), r["config"])
        if not probes.empty:
            tables[str(r["id"])] = probes
    if not tables:
        return ""
    series = {_mpl(labels[rid]): t for rid, t in tables.items()}
    theories, kinds = {}, set()
    for _, r in ranked.iterrows():
        if str(r["id"]) in tables:
            th, _ = theory_for(r["config"])
            if th is not None:
                theories[_mpl(labels[str(r["id"])])] = th
                source = _as_dict(r["config"]).get("source")
                kinds.add(isinstance(source, str) and source.startswith("depthlab.torch"))
    # the captions' "dashed" only where a theory is drawn (runs of an attention model or with
    # dropout have none), and "unit-variance inputs" only for depthlab's own recursion
    # (depthlab.torch.predict propagates the recorded batch itself)
    n_th = len(theories)
    dashed = "" if not n_th else (
        " Dashed: the theory's prediction for the same network (scaled to its measured top "
        "layer)" + ("" if n_th == len(tables) else f"; drawn for {n_th} of the "
                    f"{len(tables)} runs") + ".")
    act_dashed = "" if not n_th else "; dashed: theory " + {
        frozenset({False}): "for unit-variance inputs",
        frozenset({True}): "from the recorded batch (depthlab.torch.predict)",
        frozenset({False, True}): "(depthlab runs: for unit-variance inputs; depthlab.torch "
                                  "runs: from the recorded batch)"}[frozenset(kinds)]
    prefix = _safe_name(group.anchor)
    n_div = sum(str(r["status"]) == "diverged" for _, r in ranked.iterrows()
                if str(r["id"]) in tables)
    # why runs are missing: a failed run or one without probes has nothing to draw (was
    # "Showing 1 of 2 runs: the 1 best." beside a failed point, as if ranked out)
    status = group.runs["status"].astype(str)
    n_failed = int((status == "failed").sum()) - len(probed_failed)
    n_unprobed = len(ranked) - len(tables)
    ranked_out = len(group.runs) - len(tables) - n_failed - n_unprobed
    capped = ""
    if len(group.runs) > len(tables):
        capped = f" Showing {len(tables)} of {len(group.runs)} runs"
        if ranked_out > 0:
            capped += (f": the {len(tables) - n_div} best"
                       + (f" and {n_div} diverged" if n_div else ""))
        if n_failed:
            capped += f"; {n_failed} failed (no probes)"
        if n_unprobed:
            capped += f"; {n_unprobed} recorded no probes"
        capped += "."
    # a NumPy residual run's probes number its nonlinearities (two per block), not its hidden
    # layers: its line runs to layer 2 D - 1 (see _residual_note)
    residual = [rid for rid, t in tables.items() if _residual_note(
        group.runs.loc[group.runs["id"].astype(str) == rid, "config"].iloc[0], t)]
    if residual:
        capped += (" A residual network's line numbers its nonlinearities, two per residual "
                   "block (2 D − 1 of them for D hidden layers), not its hidden layers.")
    png = pngs.add(f"{prefix}_gradient_per_layer.png", plot.gradient_per_layer, series,
                   theories or False)
    blocks = [H.figure_block(
        png, FIG_GRAD_OVERLAY,
        "Std of dL/ds per hidden layer (log scale), one colour per run; left at "
        f"initialization, right at the end of training.{dashed} A line falling towards the "
        "input (the left end) means vanishing gradients; a flat line means the gradient reaches "
        "the first layer intact." + _legend_order(len(tables)) + capped, wide=True,
        alt="gradient std per layer for every run")]
    png = pngs.add(f"{prefix}_activation_per_layer.png", plot.activation_per_layer, series,
                   theories or False)
    blocks.append(H.figure_block(
        png, FIG_ACT_OVERLAY,
        "Std of each hidden layer's activations (log scale), one colour per run, at "
        f"initialization (left) and at the end (right){act_dashed}. Shrinking std with depth "
        "means the signal dies out going forward." + _legend_order(len(tables))
        + capped, wide=True, alt="activation std per layer for every run"))
    rows = []
    outputs_left_out = []
    score = _flow_score(group.runs)
    for rid, t in tables.items():
        r = group.runs[group.runs["id"].astype(str) == rid].iloc[0]
        names = _module_names(r["config"])
        if names:
            # a depthlab.torch table holds the output layer too (the last to run), a NumPy
            # one its hidden layers only: the ratio is of the hidden layers, as the doctor
            # takes it (a torch doctor's "8.06e+05x smaller" sat beside this table's "1e+07x",
            # its first layer against the head)
            t = _without_output_layer(t)
            for top in dict.fromkeys(output_layers(tables[rid]).values()):
                name = names.get(top, "")  # an nn.Sequential's index as the figures label it
                outputs_left_out.append((f"[{name}]" if name.isdigit() else name)
                                        or f"layer {top}")
        grads = t[(t["quantity"] == "grad_pre_std") & (t["layer"] >= 1)]
        if grads["layer"].nunique() == 1:
            # its own first and last layer: a ratio of 1 by construction ("flows: within a
            # factor 1 of 1" read as measured)
            rows.append([labels[rid], None, None, "one hidden layer: no first/last ratio to "
                         "take", _cellnum(r.get(score))])
            continue
        if names and grads.empty and not tables[rid].empty:
            # a model of one layer (nn.Linear): its only layer is its output layer (the row
            # read "not measured", although the figures draw it)
            rows.append([labels[rid], None, None, "no hidden layer (its one layer is the "
                         "output layer): no first/last ratio to take", _cellnum(r.get(score))])
            continue
        if grads.empty and _no_hidden_layer(r["config"]):
            # depth 0 (sizes = [in, out]): the row read "not measured" as if the probes failed
            rows.append([labels[rid], None, None, "no hidden layer (depth 0): no gradient "
                         "ratio to take", _cellnum(r.get(score))])
            continue
        end = int(grads["step"].max()) if len(grads) else None  # a step of NaNs too
        init_ratio = plot._first_last_ratio(t)
        at_end: float | str | None = (_cellnum(plot._first_last_ratio(t, end))
                                      if end is not None else None)
        end_ratio, when = at_end, "at the end"
        # measured, but past float64's range (1e-320 / 1e30, 1e300 / 1e-300, 1 / 0): it read
        # "not measured", or "0" and "no gradient at all" for a first layer's 1e-320
        init_x = _extreme_ratio(t)
        end_x = _extreme_ratio(t, end) if end is not None else None
        if end_x is not None:
            at_end, end_ratio = end_x.cell, end_x.stand_in
        # every layer's gradient exactly 0 at the end: 0 / 0, measured, not "not finite" (a
        # ReLU sweep point at lr 3 whose units all died after step 5 read "0.07333 at step 5,
        # then not finite" beside a finished run and a figure saying "the last above 0")
        dead = end is not None and at_end is None and bool(
            (grads.loc[grads["step"] == end, "value"] == 0).all())
        if at_end is None and end is not None and not dead:
            # a diverged run's last step is NaN: its last finite ratio (the one the figure's
            # "end" panel draws) is the explosion; "none" and the init's "flows" hid it
            last = _last_finite_ratio(t, grads["step"])
            if last is not None and last[0] != grads["step"].min():
                step, end_ratio = last
                when = f"at step {step} (last finite)"
                at_end = f"{H.fmt(end_ratio)} at step {step}, then not finite"
        if dead:
            # every layer's gradient exactly 0 (every unit dead after lr 10, or a loss with
            # no gradient left): 0 / 0, which left a blank cell beside the init's "flows"
            at_end = "0 / 0: no gradient in any layer"
        if at_end is None and r["status"] != "finished":
            at_end = f"none ({r['status']})"  # not a blank that reads as "not measured"
        elif isinstance(at_end, float | str) and r["status"] == "failed" and (
                end_x is not None or isinstance(at_end, float)):
            # its last recorded step before the error, not the end of a training
            at_end = f"{H.fmt(at_end)} at step {end}, then failed"
        # the meaning is of the ratio at init; when the end's ratio means something else
        # (a ResNet flowing at 0.5 at init, 41x less at the end) it says so too
        meaning = _describe_ratio(init_ratio) if init_x is None else init_x.words
        if init_x is not None:
            init_ratio = init_x.stand_in
        start = int(grads["step"].min()) if len(grads) else None
        dead_init = start is not None and bool(
            (grads.loc[grads["step"] == start, "value"] == 0).all())
        shown_init: float | str | None = (_cellnum(init_ratio) if init_x is None
                                          else init_x.cell)
        if dead_init:
            # every layer's gradient exactly 0 at step 0 (weights initialized to zeros, every
            # unit dead): measured, 0 / 0; the row read "not measured" beside a figure that
            # draws it ("layers 1-6: zero")
            shown_init = "0 / 0: no gradient in any layer"
            meaning = ("no gradient at all, at init and at the end (0 in every layer)" if dead
                       else "at init no gradient at all (0 in every layer)")
        kind = meaning.split(":")[0]
        if dead and not dead_init:
            meaning += "; at the end no gradient at all (0 in every layer)"
        if isinstance(end_ratio, float):
            end_meaning = _describe_ratio(end_ratio) if end_x is None else end_x.words
            if end_meaning.split(":")[0] != kind:
                meaning = f"{meaning}; {when} {end_meaning}"
            elif (when == "at the end" and init_ratio > 0 and end_ratio > 0
                  and abs(math.log(end_ratio / init_ratio)) > math.log(FLOW_CHANGE)):
                # one class, another number: "flows: within a factor 1.7 of 1" beside an end
                # ratio of 3.27 quoted the init's number alone
                meaning += f"; at the end {end_meaning.split(': ', 1)[1]}"
            elif when != "at the end":  # a diverged run's last finite reading, still flowing
                meaning += f"; {when} too, then not finite"
        elif not dead and r["status"] != "finished" and math.isfinite(init_ratio):
            # a diverged run with no finite ratio after init: its init's "flows: within a
            # factor 1.04 of 1" alone read as the run's state
            meaning += f"; no finite ratio after it ({r['status']})"
        if not (isinstance(end_ratio, float) and when == "at the end"
                and (_describe_ratio(end_ratio) if end_x is None
                     else end_x.words).split(":")[0] == kind
                and r["status"] == "finished") and math.isfinite(init_ratio):
            meaning = f"at init, {meaning}"  # the first reading is the init's, not the run's
        if start is not None and start == end and isinstance(at_end, float):
            # one recorded step (a Watch closed after its first watch.step): its one reading
            # in both columns read as a second measurement that had not moved
            at_end = f"step {start} is the only one recorded"
        rows.append([labels[rid], shown_init, at_end, meaning,
                     _cellnum(r.get(score))])
    if outputs_left_out:
        shown = ", ".join(f"<code>{H.esc(n)}</code>" for n in dict.fromkeys(outputs_left_out))
        torch_note = (" A PyTorch run's last hidden layer is the one before its output layer "
                      f"(the last to run: {shown}), which the figures draw too; the doctor "
                      "counts them so.")
    else:
        torch_note = ""
    note = ("<p class=\"note\">Gradient ratio = std(dL/ds) in the first hidden layer / in the "
            "last: 1 means the gradient reaches the first layer intact, far below 1 that it "
            f"vanishes on the way, far above 1 that it explodes.{torch_note}{capped}</p>")
    if score is None:  # no run measured any: no column of blanks
        rows = [row[:-1] for row in rows]
    table = H.table(["run", "ratio at init", "ratio at end", "meaning"]
                    + ([score.replace("_", " ")] if score else []), rows)
    return (f"<h3>{H.esc(SECTION_FLOW)}</h3>{note}<div class=\"card\">{table}</div>"
            f"<div class=\"grid\">{''.join(blocks)}</div>")


def output_layers(table: pd.DataFrame) -> dict[int, int]:
    """Step -> the output layer of a depthlab.torch probe table at that step: the last layer
    to run at the first recorded step (layers are numbered in the order they first run: the
    highest number there) for as long as it runs, then (a head replaced) the highest number of
    the step where it no longer does. A layer first run after the first step (a branch of the
    forward taken at later steps only) is numbered after the output layer without being it:
    "the highest number" read the last hidden layer as the output (the ratio table's first
    layer against the head). Empty without layer rows."""
    layers = pd.to_numeric(table["layer"], errors="coerce")
    rows = table[layers >= 1]
    if rows.empty or "step" not in rows.columns:
        return {}
    out: dict[int, int] = {}
    current = None
    for step, g in rows.groupby("step", sort=True):
        present = {int(v) for v in g["layer"]}
        if current not in present:
            current = max(present)
        out[int(step)] = current
    return out


def _without_output_layer(table: pd.DataFrame) -> pd.DataFrame:
    """A depthlab.torch probe table without its output layer (:func:`output_layers`: the last
    to run) at each step: its hidden layers, as a NumPy table holds them."""
    layers = pd.to_numeric(table["layer"], errors="coerce")
    outs = output_layers(table)
    if not outs:
        return table[layers != layers.max()]
    return table[layers != pd.to_numeric(table["step"], errors="coerce").map(outs)]


FLOW_CHANGE = 1.5
"""A ratio at the end this factor or more away from the one at init is quoted too."""


def _last_finite_ratio(table: pd.DataFrame, steps: pd.Series) -> tuple[int, float] | None:
    """``(step, ratio)`` of the latest of ``steps`` whose first/last-layer gradient ratio
    (:func:`depthlab.plot.gradient_ratio`) is finite and positive, else None."""
    from .. import plot

    for step in sorted(set(steps), reverse=True):
        ratio = plot._first_last_ratio(table, step)
        if math.isfinite(ratio) and ratio > 0:
            return int(step), float(ratio)
    return None


def _plot_value(v: Any) -> str:
    return H.fmt(list(v) if isinstance(v, tuple) else v)


@dataclass(frozen=True)
class _Extreme:
    """A first/last gradient ratio that was measured but that float64 cannot hold (or holds
    only as a subnormal, whose reciprocal overflows): ``cell`` for the table, ``words`` for
    its meaning, ``stand_in`` a float of the same class (vanishing/exploding) for the
    comparisons the table makes, NaN for 0 / 0."""

    cell: str
    words: str
    stand_in: float


def _pow10_text(log10: float) -> str:
    """``1e-330`` / ``3.2e+400``: 10 ** ``log10`` written out, although float64 cannot hold
    it (mantissa ``10 ** (log10 - floor(log10))`` to two digits)."""
    exp = math.floor(log10)
    mant = round(10 ** (log10 - exp), 1)
    if mant >= 10:
        mant, exp = 1.0, exp + 1
    return f"{mant:.2g}e{exp:+d}"


def _extreme_ratio(table: pd.DataFrame, step: int | None = None) -> _Extreme | None:
    """The first/last-layer gradient ratio of ``table`` at ``step`` when its two measured
    values are finite and >= 0 but their quotient is past float64's range (below its smallest
    normal number 2.2e-308, 0 by underflow, or above 1.8e+308, inf) or divides by 0: taken
    in logarithms, ``log10 r = log10 first - log10 last``. None for any ratio float64 holds
    (and for a NaN/inf measurement: not measured)."""
    from .. import plot

    pair = plot._first_last_values(table, step)
    if pair is None:
        return None
    first, last = pair
    if not (math.isfinite(first) and math.isfinite(last) and first >= 0 and last >= 0):
        return None
    if first == 0 and last == 0:
        grads = table[(table["quantity"] == "grad_pre_std") & (table["layer"] >= 1)]
        at = grads[grads["step"] == (grads["step"].min() if step is None else step)]
        if not (pd.to_numeric(at["value"], errors="coerce") != 0).any():
            return None  # every layer 0: the caller's "0 / 0: no gradient in any layer"
        # 0 / 0 with some gradient between them
        return _Extreme("0 / 0", "no gradient in the first or in the last layer (0 in both)",
                        math.nan)
    if first == 0:
        return None  # exactly 0: the caller's "no gradient at all (0)", a float64 ratio
    if last == 0:
        return _Extreme(f"infinite ({H.fmt(first)} / 0)",
                        f"exploding: the last layer gets no gradient (0), the first "
                        f"layer {H.fmt(first)}", sys.float_info.max)
    log10 = math.log10(first) - math.log10(last)
    if math.log10(sys.float_info.min) <= log10 <= math.log10(sys.float_info.max):
        return None  # float64 holds it (and its reciprocal) as a normal number
    value = _pow10_text(log10)
    past = "below float64's normal range" if log10 < 0 else "past float64's largest"
    shown = f"{value} ({H.fmt(first)} / {H.fmt(last)}, {past})"
    if log10 < 0:
        return _Extreme(shown, f"vanishing: the first layer gets {_pow10_text(-log10)}x less "
                        "gradient", sys.float_info.min)
    return _Extreme(shown, f"exploding: the first layer gets {value}x more gradient",
                    sys.float_info.max)


def _describe_ratio(ratio: float) -> str:
    from ..demo import describe_ratio

    if ratio == 0:  # measured: the first layer's gradient is exactly 0 (its units all dead),
        # which demo.describe_ratio's "not measured" (for NaN or no rows) misnamed
        return "vanishing: the first layer gets no gradient at all (0)"
    return describe_ratio(ratio)


def _sweep_overview(group: _Group, keys: list[str], pngs: _Pngs, shown: set[str]) -> str:
    runs = group.runs
    parts = []
    counts = runs["status"].value_counts().to_dict()
    status_txt = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    planned = group.planned if group.planned is not None and group.planned > len(runs) else None
    stored = (f"{len(runs)} of the sweep's {planned} points stored ({planned - len(runs)} not "
              "run yet: the sweep is still running or was stopped). " if planned else "")
    # swept keys of one value (``"train.lr" = [0.05]``, or a grid of which one value was
    # stored): the sweep varies them over that value (was: "No configuration key varies
    # between runs" and neither the key nor its value anywhere in the section)
    single = _single_value_keys(group, keys)
    one = "".join(f" Swept over one value: {H.esc(k)} = {H.esc(_plot_value(v))}." if v is not
                  _NO_VALUE else f" Swept: {H.esc(k)} (one value)." for k, v in single.items())
    parts.append(f"<p class=\"note\">{stored}{len(runs)} run{'s' * (len(runs) != 1)} "
                 f"({H.esc(status_txt)}). "
                 + (f"Varying: {H.esc(', '.join(keys))}." if keys else
                    "" if single else "No configuration key varies between runs.")
                 + one + " Click a column header to sort.</p>")
    drawn = [k for k, v in single.items() if v is not _NO_VALUE]
    shown_keys = keys if keys else drawn  # the single point's value in its own column
    ranked = _rank(runs)
    # a sweep of regressions (mse/huber on real targets) measures no accuracy: its validation
    # and test losses (the accuracy columns were empty)
    regression = not any(np.isfinite(pd.to_numeric(runs.get(k), errors="coerce")).any()
                         for k in ("val_acc", "test_acc")) and any(
        np.isfinite(pd.to_numeric(runs.get(k), errors="coerce")).any()
        for k in ("val_loss", "test_loss"))
    second = REGRESSION_COLUMNS if regression else ("val_acc", "test_acc")
    cols = ["id", "name", "status", *shown_keys, "train loss",
            *(k.replace("_", " ") for k in second), "steps", "seconds"]
    rows, classes = [], []
    for _, r in ranked.iterrows():
        rid = str(r["id"])
        link = (f"<a href=\"#run-{H.esc(_safe_name(rid))}\"><code>{H.esc(rid)}</code></a>"
                if rid in shown else f"<code>{H.esc(rid)}</code>")
        vals = [_cell(r["cfg:" + k]) for k in shown_keys]
        rows.append([link, r.get("name") or "", H.badge(r["status"]), *vals,
                     _cellnum(r["train_loss"]), _cellnum(r[second[0]]),
                     _cellnum(r[second[1]]), _cellnum(r["steps"]), _cellnum(r["seconds"])])
        classes.append(r["status"] if r["status"] != "finished" else "")
    parts.append("<div class=\"card\">" + H.table(
        cols, rows, sortable=True, row_classes=classes,
        table_id=f"runs-table-{_safe_name(group.anchor)}",
        raw_html_columns=("id", "status")) + "</div>")
    from .. import plot

    blocks = []
    metrics = [(m, hib) for m, hib in (("val_acc", True), ("train_loss", False),
                                       *((("val_loss", False),) if regression else ()))
               if np.isfinite(runs[m]).any()]
    prefix = _safe_name(group.anchor)
    if group.by_run and metrics:
        labels = _labels(runs)
        frame = _plain(runs, ()).assign(run=[_mpl(labels[str(r)]) for r in runs["id"]])
        blocks += _metric_figures(pngs, prefix, metrics, frame, ["run"], lambda m: (
            f"{m} of each run. Hatched ✗ bars: no value (the run diverged or failed, or did "
            "not measure it)."))
    composite = _grid_columns(runs, keys, group.grid)
    if not group.by_run and metrics and composite is not None:
        # a grid over tables or lists ("train.optimizer_kwargs" x "model.sizes"): drawn over
        # one column per swept key, its values the grid's (momentum=0.9, [auto, 8×2, auto]),
        # a heatmap when full; its sub-keys (momentum, nesterov) and depth/width made 6 bars
        # labelled "optimizer_kwargs={momentum=0.…#1"
        frame, use = composite
        grid = len(use) == 2 and plot.forms_grid(frame, use[0], use[1])

        def caption(m: str) -> str:
            if grid:
                once = not frame[list(use)].map(figures.value_key).duplicated().any()
                cap = (f"{m} over {use[1]} × {use[0]}: every pair of values was run"
                       + ("; each cell is that pair's run" if once else
                          "; each cell holds the best run of the pair"))
            elif len(use) == 1:
                cap = f"{m} for each value of {use[0]} (the best run of each)"
            else:
                cap = (f"{m} of each combination of {', '.join(use)}: one bar per "
                       "combination, the best run of each")
            return cap + (". Tables are labelled by their differing entries, lists as the grid "
                          f"lists them. Hatched ✗ {'cells' if grid else 'bars'}: {_MISSING}")
        blocks += _metric_figures(pngs, prefix, metrics, frame, use, caption)
    elif keys:
        use = keys[:2] if len(keys) == 2 and plot.forms_grid(
            _plain(runs, tuple(keys)), keys[0], keys[1]) else keys
        grid = len(use) == 2 and plot.forms_grid(_plain(runs, tuple(use)), use[0], use[1])
        if not grid and group.grid_keys:  # bars: one per combination, in the grid's
            # order of keys (they went by the ranking of varying_keys: labels naming the
            # optimizer first read sgd, adam, sgd, adam along a sweep of optimizer x lr x ...)
            at = {k: i for i, k in enumerate(group.grid_keys)}
            at.update({k: at["model.sizes"] for k in ("depth", "width")
                       if "model.sizes" in at and k not in at})
            use = sorted(use, key=lambda k: at.get(k, len(at)))

        def caption(m: str) -> str:
            if grid:
                # "the best run of the pair" where each pair was run once read as if runs
                # were hidden
                once = not _plain(runs, tuple(use))[list(use)].astype(str).duplicated().any()
                cap = (f"{m} over {use[1]} × {use[0]}: every pair of values was run"
                       + ("; each cell is that pair's run" if once else
                          "; each cell holds the best run of the pair")
                       + f". Hatched ✗ cells: {_MISSING}")
            elif len(use) == 1:
                cap = (f"{m} for each value of {use[0]} (the best run of each). Hatched ✗ "
                       f"bars: {_MISSING}")
            elif len(use) > 2:
                # a heatmap has two axes: three keys are bars whether or not every combination
                # ran (was: "the values do not form a full grid" beside a full 2 x 2 x 2 grid)
                plain = _plain(runs, tuple(use))[list(use)].map(figures.value_key)
                full = len(plain.drop_duplicates()) == int(np.prod(
                    [plain[k].nunique() for k in use]))
                cap = (f"{m} of each combination of {', '.join(use)}: {len(use)} keys vary ("
                       + ("every combination was run" if full else
                          "not every combination was run")
                       + f"): one bar per combination, the best run of each. Hatched ✗ bars: "
                       f"{_MISSING}")
            else:
                cap = (f"{m} of each combination of {', '.join(use)} (the values do not form "
                       f"a full grid, so bars instead of a heatmap). Hatched ✗ bars: {_MISSING}")
            return cap
        blocks += _metric_figures(pngs, prefix, metrics, _plain(runs, tuple(use)), use, caption)
    elif drawn and metrics and not group.by_run:
        blocks += _metric_figures(pngs, prefix, metrics, _plain(runs, tuple(drawn)), drawn,
                                  lambda m: (f"{m} at the one value swept of "
                                             f"{', '.join(drawn)} (the best run of it). Hatched "
                                             f"✗ bars: {_MISSING}"))
    if blocks:
        parts.append("<div class=\"grid\">" + "".join(blocks) + "</div>")
    return "".join(parts)


_NO_VALUE = object()
"""A swept key the runs' configs do not hold under its own name (:func:`_single_value_keys`)."""


def _single_value_keys(group: _Group, keys: list[str]) -> dict[str, Any]:
    """``{swept key: its one value}`` of a sweep's grid keys (:attr:`_Group.grid_keys`) that
    take one value among its runs, so do not appear in ``keys`` (:func:`varying_keys`); the
    value is :data:`_NO_VALUE` where the configs do not hold the key under that name
    (``model.depth``, held as ``model.sizes``). Keys ``keys`` explains (``depth``/``width`` of a
    varying ``model.sizes``) are left out."""
    runs = group.runs
    out: dict[str, Any] = {}
    for k in group.grid_keys:
        if k in keys or k.rsplit(".", 1)[-1] in keys or _descriptive(k) or k in NEVER_VARYING:
            continue
        col = "cfg:" + k
        if col not in runs:
            out[k] = _NO_VALUE
            continue
        held = [v for v in runs[col] if not _missing(v)]
        if len({figures.value_key(v) for v in held}) == 1:
            out[k] = held[0]
    return out


_MISSING = ("no value: every run there diverged or failed (as marked), or finished without a "
            "finite value (n/a).")
"""What a hatched cell or bar of a sweep's metric figure means: its runs' status."""


def _metric_figures(pngs: Any, prefix: str, metrics: list, frame: pd.DataFrame,
                    use: list[str], caption: Callable[[str], str]) -> list[str]:
    """One figure block per ``(metric, higher_is_better)`` of ``metrics``: ``frame``'s
    metric over the keys ``use`` (:func:`depthlab.plot.sweep_metric`: a heatmap of two keys
    that form a full grid, else bars), captioned by ``caption(metric)``; wider than a half
    column (many bars or columns, up to 11 in) it spans the row (a half column showed a
    32-bar sweep at 50%, its run names at ~4 pt)."""
    from .. import plot

    out = []
    for m, hib in metrics:
        png = pngs.add(f"{prefix}_{_safe_name(m)}.png", plot.sweep_metric, frame, use, m,
                       higher_is_better=hib)
        out.append(H.figure_block(png, f"{m} by {' × '.join(use)}", caption(m),
                                  wide=_too_wide(png)))
    return out


def _same(a: Any, b: Any) -> bool:
    """Whether config value ``a`` (a run's, lists as tuples) is the grid's value ``b`` (lists
    as lists; ``"auto"`` in a list matches the width a run found there)."""
    if isinstance(b, (list, tuple)):
        return (isinstance(a, (list, tuple)) and len(a) == len(b)
                and all(y == "auto" or _same(x, y) for x, y in zip(a, b)))
    if isinstance(a, (list, tuple)) or isinstance(a, bool) != isinstance(b, bool):
        return False
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _grid_value(row: pd.Series, key: str, values: list, scalars: dict[str, Any]) -> Any:
    """The value of the grid's ``values`` for ``key`` that run ``row`` holds (a table: the one
    whose entries all match, the most specific first), or None when none matches.
    ``scalars``: the values that are neither tables nor lists, by :func:`figures.value_key`."""
    if "cfg:" + key in row and not isinstance(row["cfg:" + key], (list, tuple)):
        # a scalar: looked up (a grid of thousands of values beside thousands of runs)
        got = scalars.get(figures.value_key(row["cfg:" + key]))
        if got is not None:
            return got
    best, size = None, -1
    for v in values:
        if isinstance(v, dict):
            flat = _flatten(v, key + ".")
            ok = all(_same(row.get("cfg:" + k), x) for k, x in flat.items())
            if ok and len(flat) > size:
                best, size = v, len(flat)
        elif "cfg:" + key in row and _same(row["cfg:" + key], v) and size < 0:
            best, size = v, 0
    return best


def _grid_columns(runs: pd.DataFrame, keys: list[str],
                  grid: dict[str, list]) -> tuple[pd.DataFrame, list[str]] | None:
    """A sweep's figure columns over its grid's keys when some swept values are tables or
    lists (``"train.optimizer_kwargs" = [{momentum = 0.9}, ...]``, ``"model.sizes"``), which
    :func:`varying_keys` splits into their entries (momentum, nesterov; depth, width): one
    column per swept key holding the grid's value each run has, rows in the grid's order
    (the first key's values slowest). None when the grid is unknown, has no such key, a varying
    key is not one of its keys or their entries, or a run holds a value it does not list."""
    if not grid or runs.empty or not any(
            isinstance(v, (dict, list)) for vals in grid.values() for v in vals):
        return None

    def covered(k: str) -> bool:
        return any(k == g or k.startswith(g + ".")
                   or (g == "model.sizes" and k in ("depth", "width")) for g in grid)
    if not keys or not all(covered(k) for k in keys):
        return None
    cols: dict[str, list] = {}
    ranks: list[list[int]] = []
    for g, values in grid.items():
        if not values:  # numbers, recorded without an order (the figures sort them)
            if "cfg:" + g not in runs or any(_missing(v) for v in runs["cfg:" + g]):
                return None
            picked = list(runs["cfg:" + g])
            values = figures._ordered_values(runs["cfg:" + g])
        else:
            scalars = {figures.value_key(v): v for v in values
                       if not isinstance(v, (dict, list))}
            picked = [_grid_value(row, g, values, scalars) for _, row in runs.iterrows()]
        if any(p is None for p in picked):
            return None
        at = {figures.value_key(v): i for i, v in enumerate(values)}
        if len({figures.value_key(p) for p in picked}) > 1:  # a key of one value: no axis
            cols[g] = [_mpl(p) for p in picked]
            ranks.append([at[figures.value_key(p)] for p in picked])
    if not cols or len(cols) >= len(keys):  # no key split in two (depth and width): the
        return None  # varying keys' own axes (numbers sorted) say as much
    order = np.lexsort([np.asarray(r) for r in reversed(ranks)])
    frame = pd.DataFrame(cols).iloc[order].reset_index(drop=True)
    rest = _plain(runs, ()).iloc[order].reset_index(drop=True)
    return pd.concat([frame, rest], axis=1), list(cols)


def _plain(runs: pd.DataFrame, keys: tuple[str, ...]) -> pd.DataFrame:
    out = pd.DataFrame({k: [_mpl(v) for v in runs["cfg:" + k]] for k in keys})
    for col in ("name", "status", *METRIC_COLUMNS, *REGRESSION_COLUMNS):
        if col in runs:  # (a regression's losses: plotted when no run has an accuracy)
            out[col] = [_mpl(v) for v in runs[col]]
    return out


def _cell(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return H.fmt(list(v))
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _cellnum(v: Any) -> float | None:
    f = as_number(v)
    return f if math.isfinite(f) else None


def _diverged_step(m: dict) -> int | None:
    """The step at which a doctor's run diverged, as the command line names it: the NumPy
    doctor's ``diverged_step``, else the torch doctor's ``steps`` (its count includes the step
    whose loss was not finite); None when neither is a whole number. The torch doctor's
    diverged cures read "train loss 2.315 → diverged" here beside the command line's "nan
    (diverged at step 8)"."""
    for key in ("diverged_step", "steps"):
        at = m.get(key)
        if isinstance(at, (int, float)) and not isinstance(at, bool) and math.isfinite(at) \
                and at == int(at):
            return int(at)
    return None


def _failed_verification_text(v: dict, loss_before: str) -> str:
    """``train loss a → none: did not help (its re-training failed: ERROR)``: a verification
    whose re-training raised, as the command line says it (``Verification.summary``). Each
    "after" read "not finite", as if the cured run had diverged, where none was measured."""
    try:
        from ..diagnosis.findings import Verification

        verdict = Verification.from_dict({**v, "kind": v.get("kind") or ""}).verdict()
    except (KeyError, TypeError, ValueError, AttributeError):  # an older or partial record
        verdict = f"did not help (its re-training failed: {v['error']})"
    return f"train loss {loss_before} → none: {verdict}"


def _verification_text(v: dict) -> str:
    """``train loss a -> b, val acc a -> b, <metric> a -> b: helped`` from a Verification."""
    b, a = _as_dict(v.get("before")), _as_dict(v.get("after"))
    inf = v.get("infinite") if isinstance(v.get("infinite"), dict) else {}

    def finite(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    def run_text(m: dict, key: str) -> str:
        # a run that diverged has no loss or accuracy (was "train loss  → , val acc  → ")
        if finite(m.get(key)):
            return H.fmt(m[key])
        if m.get("diverged"):
            at = _diverged_step(m)
            return "diverged" + (f" at step {at}" if at is not None else "")
        return "not finite"

    def metric_text(name: str) -> str:  # an infinity is stored as None beside its sign
        x = v.get(name)
        return H.fmt(x) if finite(x) else (inf.get(name) if inf.get(name) in ("inf", "-inf")
                                           else "not finite")

    if v.get("error"):  # the cure's re-training raised: nothing was measured after it
        return _failed_verification_text(v, run_text(b, "train_loss"))
    bits = []
    if "train_loss" in b or "train_loss" in a:
        bits.append(f"train loss {run_text(b, 'train_loss')} → {run_text(a, 'train_loss')}")
    if finite(b.get("val_acc")) or finite(a.get("val_acc")):  # none measured: none shown
        bits.append(f"val acc {run_text(b, 'val_acc')} → {run_text(a, 'val_acc')}")
    try:  # the doctor's own verdict: what decided it (a constant prediction's loss, a metric
        # still above its threshold) said as the command line says it; a record stored
        # without its finding's kind (an older or hand-written one) has no rule's threshold,
        # but the rest of the verdict is the doctor's (it fell back to a bare "did not help")
        from ..diagnosis.findings import Verification

        obj: Any = Verification.from_dict({**v, "kind": v.get("kind") or ""})
    except (KeyError, TypeError, ValueError, AttributeError):  # an older or partial record
        obj = None
    if v.get("metric"):
        after = metric_text("metric_after")
        if obj is not None and after == "not finite" and obj._metric_after().startswith("none"):
            # a cure that removed what the metric measures (a relu swap: no saturating layer
            # left), as the command line says it: "not finite" read as a broken measurement
            after = obj._metric_after()
        bits.append(f"{v['metric']} {metric_text('metric_before')} → {after}")
    if obj is not None:
        try:
            return ", ".join(bits) + ": " + obj.verdict()
        except (KeyError, TypeError, ValueError, AttributeError):
            pass
    verdict = "helped" if v.get("helped") else "did not help"
    resolved = ""
    if v.get("resolved"):
        resolved = " (resolved)"
        m_before, m_after = as_number(v.get("metric_before")), as_number(v.get("metric_after"))
        if v.get("helped") and m_after >= m_before:
            # gone although its metric did not fall, as the command line says (the rule's
            # other conditions no longer hold: mean_shift does not judge a ReLU)
            resolved = (" (resolved: its rule no longer applies to this setup, although the "
                        "metric did not fall)")
    return ", ".join(bits) + f": {verdict}" + resolved


def _findings_html(payload: dict) -> str:
    """The doctor's diagnosis: the baseline run, then one row per finding with its message,
    evidence, prescription and (when verified) the before/after numbers."""
    items = payload.get("findings") if isinstance(payload.get("findings"), list) else None
    if items is None:
        items = [payload] if payload.get("kind") else []
    # every verified cure of each finding, best first (the first alone was shown: a cure
    # that did not help, which the command line prints, was missing from the page)
    verifs: dict[str, list[dict]] = {}
    for v in payload.get("verifications") or []:
        verifs.setdefault(str(_as_dict(v).get("kind")), []).append(_as_dict(v))
    parts = []
    summary = payload.get("summary") or payload.get("message")
    if summary:
        parts.append(f"<p>{H.esc(summary)}</p>")
    base, settings = _as_dict(payload.get("baseline")), _as_dict(payload.get("settings"))
    if base:
        run = (f"{settings.get('steps')} steps of {settings.get('optimizer')} lr "
               f"{H.fmt(settings.get('lr'))}, " if settings else "")
        # the weight penalties the diagnosis trained with, as its text's run line names them
        run += "".join(f"{k} {H.fmt(settings[k])}, " for k in ("l1", "l2") if settings.get(k))
        if base.get("diverged"):
            # was "train loss , val acc ." (both NaN, written as None)
            at = _diverged_step(base)
            outcome = ("diverged" + (f" at step {at}" if at is not None else "")
                       + ": no finite train loss or val acc")
        else:  # a regression loss (mse) measures no accuracy: none named (was "val acc .")
            acc = H.fmt(base.get("val_acc"))
            outcome = (f"train loss {H.fmt(base.get('train_loss')) or 'not finite'}"
                       + (f", val acc {acc}" if acc else ""))
        parts.append(f"<p>Baseline run: {H.esc(run)}{H.esc(outcome)}.</p>")
    if not items:
        from ..diagnosis.findings import unlearned_text

        chance = payload.get("chance_loss")
        un = unlearned_text(base, chance if isinstance(chance, (int, float)) else math.nan)
        parts.append(f"<p class=\"note\">No findings, but {H.esc(un)}.</p>" if un else
                     "<p class=\"note\">Clean bill of health: the doctor found nothing to "
                     "report.</p>")
        return "".join(parts)
    rows = []
    for f in items:
        f = _as_dict(f)
        presc = f.get("prescription", f.get("cure", ""))
        text = f.get("prescription_text")
        verified = verifs.get(str(f.get("kind")))
        if verified and len(verified) > 1:  # one paragraph per cure, named by its changes
            check = "".join(
                f"<p class=\"cure\"><b>{H.esc(_text(_as_dict(v.get('prescription'))) or '?')}"
                f"</b>: {H.esc(_verification_text(v))}</p>" for v in verified)
        elif verified:
            check = H.esc(_verification_text(verified[0]))
        else:
            v = f.get("verified", f.get("verification"))
            check = H.esc(_text(v) if v is not None else "not verified (run with --verify)")
        rows.append([
            _text(f.get("severity", "")), _text(f.get("kind", "")), _layers_text(f.get("layers")),
            _text(f.get("message", "")), _evidence_text(f),
            (f"{text} ({_text(presc)})" if text else _text(presc)), check,
        ])
    cols = ["severity", "kind", "layers", "finding", "evidence", "prescription", "verification"]
    keep = [i for i, c in enumerate(cols) if c == "kind" or any(r[i] for r in rows)]
    parts.append(H.table([cols[i] for i in keep], [[r[i] for i in keep] for r in rows],
                         raw_html_columns=("verification",), stacked=True))
    return "".join(parts)


def _evidence_text(finding: dict) -> str:
    """A finding's evidence, ``key=value; ...``: a number stored as None is an infinity where
    the record's ``infinite`` entry says so (``evidence.metric: "inf"``), else not finite (a
    diverged run's metric read "metric=" with nothing after it)."""
    evidence = finding.get("evidence")
    if not isinstance(evidence, dict):
        return _text(evidence) if evidence is not None else ""
    inf = finding.get("infinite") if isinstance(finding.get("infinite"), dict) else {}
    bits = []
    for k, v in evidence.items():
        if v is None:
            sign = inf.get(f"evidence.{k}")
            v = float(sign) if sign in ("inf", "-inf") else "not finite"
        bits.append(f"{k}={v if isinstance(v, str) else H.fmt(v)}")
    return "; ".join(bits)


def _layers_text(layers: Any) -> str:
    """A finding's layers as the doctor prints them, neighbours joined (``1-300``: a
    300-layer network's finding listed "1, 2, 3, ..., 300" down a narrow table column), past
    ``findings.LAYER_RUNS_SHOWN`` runs their count, the first runs and the last two."""
    if (isinstance(layers, (list, tuple)) and layers
            and all(isinstance(v, int) and not isinstance(v, bool) for v in layers)):
        from ..diagnosis.findings import layers_text

        text = layers_text(list(layers))
        return text.split(" ", 1)[1] if text.startswith("layer") else text
    return _text(layers)


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
    if isinstance(msg, str):  # the trainer's "loss = nan" (Python's text of a NaN): as the
        # playground's banner, in the report's words ("not finite"), NaN or inf named
        msg = re.sub(r"\bloss = (nan|-?inf)\b", lambda m: "the loss was not finite ("
                     + {"nan": "NaN", "inf": "+inf"}.get(m.group(1), m.group(1)) + ")", msg)
    # a divergence's loss is never finite: the store keeps its NaN/inf as null (was shown as
    # "loss none" under "loss = nan"); an unmeasured max_grad says nothing
    rest = [(k, "not finite (NaN/inf)" if k == "loss" and (
             v is None or (isinstance(v, float) and not math.isfinite(v))) else v)
            for k, v in div.items() if k != "message" and not (k == "max_grad" and v is None)]
    # the weights still finite when the loss was not: an empty list read "[]"
    rest = [("non-finite parameters", (", ".join(map(str, v)) if v else
                                       "none (every weight still finite)"))
            if k == "nonfinite_parameters" and isinstance(v, (list, tuple)) else (k, v)
            for k, v in rest]
    return ("<div class=\"alert\"><b>Training diverged.</b>"
            + (f" {H.esc(msg)}" if msg else "") + H.key_values(rest) + "</div>")


def _nonfinite_losses(store: Any, rid: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The run's recorded steps and whether each one's loss is NaN or inf; None without loss
    rows or when every loss is finite."""
    steps = _get(store.steps(rid)) if hasattr(store, "steps") else pd.DataFrame()
    if steps.empty or not {"step", "loss"} <= set(steps.columns):
        return None
    loss = pd.to_numeric(steps["loss"], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(loss)
    return (steps["step"].to_numpy(), bad) if bad.any() else None


def _first_nonfinite_step(store: Any, rid: str) -> int | None:
    """The first recorded step whose loss is NaN or inf (None: none, or no loss rows)."""
    found = _nonfinite_losses(store, rid)
    return None if found is None else int(found[0][found[1].argmax()])


def _diverged_where(store: Any, rid: str, detail: dict) -> str:
    """A diverged run's line in the collapsed list: ``diverged at step 3 (loss not finite,
    layer dense6)`` from its divergence report, or ``loss not finite from step 4`` from its loss
    rows (a depthlab.torch Watch stores no report); empty when neither says. The runs' list of
    a sweep read only "diverged" and the values of its keys: which step, and how, was inside
    each run's folded section."""
    div = _as_dict(detail.get("divergence"))
    at = div.get("step") if isinstance(div, dict) else None
    if isinstance(at, (int, np.integer)) and not isinstance(at, bool):
        loss = div.get("loss")
        what = ("loss not finite" if not isinstance(loss, (int, float)) or isinstance(loss, bool)
                or not math.isfinite(loss) else f"loss {H.fmt(loss)}")
        layer = div.get("layer")
        return f"diverged at step {int(at)} ({what}" + (
            f", layer {layer}" if isinstance(layer, str) and layer else "") + ")"
    first = _first_nonfinite_step(store, rid)
    return "" if first is None else f"loss not finite from step {first}"


def _unreported_divergence(store: Any, rid: str) -> str:
    """What a diverged run without a divergence report (a depthlab.torch Watch stores none)
    says: the first step whose loss was not finite, from its loss rows (was: "status is
    'diverged' (no report)")."""
    found = _nonfinite_losses(store, rid)
    if found is None:
        return "status is 'diverged' (no report)"
    step, bad = found
    first, last = int(step[bad.argmax()]), int(step.max())
    after = (f"; it stayed so to the last recorded step, {last}" if bad[bad.argmax():].all()
             and last > first else "")
    return (f"The loss was first not finite (NaN or inf) at step {first}{after}. No "
            "divergence report was stored (a depthlab.torch Watch keeps none); the "
            "figures below mark the steps whose values were not finite.")


FIG_TRAINING_CAP = ("Left: loss per step (over 50 steps faint, beside its exponential moving "
                    "average); right: accuracy. A flat loss from the start means the network is "
                    "not learning.")


def _training_caption(steps: pd.DataFrame, has_acc: bool, final: bool) -> str:
    """The training figure's caption: :data:`FIG_TRAINING_CAP` says what the figure draws,
    the faint per-step loss beside its moving average only where the figure draws them
    (:func:`figures.loss_smoothed`: a 12-step run's caption named a moving average it did not
    have), the accuracy panel only where there is one (``final``: an accuracy recorded at the
    end only)."""
    cap = FIG_TRAINING_CAP
    if "loss" not in steps.columns or not figures.loss_smoothed(steps["loss"]):
        cap = cap.replace(" (over 50 steps faint, beside its exponential moving average)", "")
    if has_acc:
        return cap
    return cap.replace("Left: loss", "Loss").replace("; right: accuracy.", (
        "; this run recorded its accuracy at the end only (above), so no accuracy "
        "curve is drawn." if final else "; this run recorded no accuracy, so none is drawn."))


def _penalty_note(config: Any) -> str:
    """The training caption's word on a weight penalty (``train.l1``/``train.l2`` > 0): the
    per-step loss is the trainer's, ``loss + l1 Σ|w| + l2 Σw²`` over the weights, and the
    epoch rows are the data loss alone (an l2 = 0.5 run's per-step loss fell from 20 to 0.7
    beside epoch losses of 0.7, without a word). Empty without a penalty."""
    cfg = _as_dict(config)
    train = cfg.get("train") if isinstance(cfg, dict) else None
    if not isinstance(train, dict):
        return ""
    terms = [f"{train[k]:g} · {t}" for k, t in (("l1", "Σ|w|"), ("l2", "Σw²"))
             if isinstance(train.get(k), (int, float)) and not isinstance(train.get(k), bool)
             and train[k] > 0]
    if not terms:
        return ""
    return (" The per-step loss is the one the optimizer minimized: the data loss plus the "
            f"weight penalty {' + '.join(terms)} (over the weights); the epoch losses are the "
            "data loss alone.")


def _residual_note(config: Any, probes: pd.DataFrame) -> str:
    """For a NumPy run of residual blocks, what its figures' layer numbers count: its probes
    number the nonlinearities (the stem's Dense feeds the first block; two per block, then the
    one before the output layer: 2 D - 1 for D hidden layers), so "layer 11" of a run of
    "depth (hidden layers) 6" named a layer it does not have (the playground labels the same
    axis "nonlinearity (two per residual block)"). Empty for any other run."""
    cfg = _as_dict(config)
    model = cfg.get("model") if isinstance(cfg, dict) else None
    if not isinstance(model, dict) or model.get("residual") is not True or cfg.get("source"):
        return ""
    sizes = model.get("sizes")
    depth = len(sizes) - 2 if isinstance(sizes, (list, tuple)) and len(sizes) >= 3 else None
    n = int(probes.loc[probes["layer"] >= 1, "layer"].nunique())
    if depth is None or n <= depth:
        return ""
    return (f"A residual network: its {depth} hidden layers are a stem and {depth - 1} "
            f"residual block{'s' * (depth != 2)}, and its figures number its {n} "
            "nonlinearities, two per residual block (then the one before the output layer; "
            "1 is nearest the input), where they read \"layer\".")


def _wide_note(text_html: str) -> str:
    """A note spanning the whole figure grid (``text_html`` is inserted as it is)."""
    return f"<p class=\"note\" style=\"grid-column: 1 / -1\">{text_html}</p>"


def _divergence_title(store: Any, rid: str, steps: pd.DataFrame) -> str:
    """The training figure's title for a run that diverged (:func:`.figures.divergence_title`
    of the stored divergence)."""
    run = store.run(rid) if hasattr(store, "run") else None
    return figures.divergence_title(_as_dict((run or {}).get("divergence")), steps)


HALF_COLUMN_PX = 700
"""Widest PNG (pixels at figures.DPI) a run's gradient heatmap is drawn beside another figure:
the page's half column is ~564 px at a 1400 px window, so a module-named heatmap of 760 px was
shown at 74% and its 7 pt module names at 5 pt. A wider one, or one naming modules on its
rows, takes the whole row (shown at its drawn size)."""


ACTIVATIONS_HALF_PX = 800
"""Widest activation-bands PNG shown in a half column (its own size is 760 px, layer numbers in
its legend); module names that widen it beyond take the whole row."""


def _png_width(png: bytes) -> int:
    """The width in pixels of the PNG ``png`` (its IHDR width, bytes 16..20 big-endian; 0 when
    too short to hold one)."""
    return int.from_bytes(png[16:20], "big") if len(png) > 24 else 0


def _too_wide(png: bytes) -> bool:
    """Whether the PNG ``png`` is wider than :data:`HALF_COLUMN_PX`."""
    return _png_width(png) > HALF_COLUMN_PX


def _heatmap_block(probes: pd.DataFrame, safe: str, pngs: _Pngs) -> str:
    """The run's gradient heatmap (layer x step) as a figure block: across the whole row when
    it names modules or is wider than :data:`HALF_COLUMN_PX` (:func:`_too_wide`)."""
    from .. import plot

    png = pngs.add(f"{safe}_gradient_heatmap.png", plot.gradient_heatmap, probes)
    return H.figure_block(
        png, FIG_GRAD_HEATMAP, "Std of dL/ds per layer (rows) and step (columns), log "
        "colours: a colour change from top to bottom means vanishing or exploding "
        "gradients; a change left to right, that training moved them.",
        wide=_too_wide(png) or bool(figures.layer_names(probes)))


def _activations_block(probes: pd.DataFrame, safe: str, pngs: _Pngs) -> str:
    """The run's activation bands (mean ± std per layer over training) as a figure block:
    across the whole row when its legend's module names widened it beyond
    :data:`ACTIVATIONS_HALF_PX` (a PyTorch run's ``encoder.layers.3.linear1``: 9 in and more,
    which a half column showed at ~60%, its 7.5 pt names at 4.5 pt), else in a half column
    beside the percentile bands."""
    from .. import plot

    png = pngs.add(f"{safe}_activations.png", plot.activation_bands, probes)
    return H.figure_block(
        png, FIG_ACTIVATIONS, "Line: mean activation of each shown layer; shaded: ± one "
        "standard deviation (Glorot & Bengio 2010, Fig. 2). Look for a layer whose band "
        "collapses (saturation) or drifts away from the others.",
        wide=_png_width(png) > ACTIVATIONS_HALF_PX)


def _run_figures(store: Any, rid: str, label: str, config: dict, pngs: _Pngs,
                 percentile_layer: int | None) -> tuple[list[str], pd.DataFrame]:
    from .. import plot

    # a label with no Latin letter or digit (日本語の実験) names its files by the id: "__"
    safe = _safe_name(label if label and re.search(r"[A-Za-z0-9]", label) else rid)
    steps, epochs, evals = _get(store.steps(rid)), _get(store.epochs(rid)), _get(store.evals(rid))
    probes = _named(_clean_probes(_get(store.probes(rid))), config)
    hists = _named(_get(store.histograms(rid)), config)
    # per-layer figures need layer rows: a torch run whose layers never ran while its
    # Watch's hooks were on has its loss rows only (its figures were all empty)
    layered = not probes.empty and bool((probes["layer"] >= 1).any())
    blocks: list[str] = []
    residual = _residual_note(config, probes) if layered else ""
    if residual:
        blocks.append(_wide_note(residual))
    if layered:
        th, note = theory_for(config)
        png = pngs.add(f"{safe}_gradient_per_layer.png", plot.gradient_per_layer,
                       {_mpl(label or rid): probes}, th if th is not None else False)
        # one layer: the theory is a ring around its one point (a dashed line needs two);
        # no theory (a Watch run of an attention model, a dropout config): no "dashed: theory"
        # beside the note saying why none is drawn
        one = probes.loc[(probes["layer"] >= 1) & (probes["quantity"] == "grad_pre_std"),
                         "layer"].nunique() == 1
        drawn = f"; {'ring' if one else 'dashed'}: theory" if th is not None else ""
        blocks.append(H.figure_block(
            png, FIG_GRAD_PROFILE if th is not None else FIG_GRAD_PROFILE.removesuffix(
                " vs theory"), "Std of dL/ds per hidden layer (log scale) at "
            f"{_profile_when(probes)}{drawn}. A line "
            "falling towards the input (the left end) means vanishing gradients. "
            f"{note}.", wide=True))
    if not (steps.empty and epochs.empty and evals.empty):
        png = pngs.add(f"{safe}_training.png", plot.training_curves, steps, epochs, evals,
                       title=_divergence_title(store, rid, steps))
        has_acc = any(c in t and t[c].notna().any() for t in (epochs, evals)
                      for c in ("train_acc", "val_acc", "test_acc"))
        # no accuracy (a torch Watch run, a regression loss): the loss panel alone (was: an
        # empty "no accuracy recorded" panel beside it)
        # a torch doctor's run has its accuracy in its final metrics only (was: "recorded no
        # accuracy" under its "val acc 0.1222")
        metrics = ((store.run(rid) or {}).get("metrics") or {}
                   if not has_acc and hasattr(store, "run") else {})
        final = any(isinstance(metrics.get(c), (int, float)) and not isinstance(
            metrics.get(c), bool) for c in ("train_acc", "val_acc", "test_acc"))
        cap = _training_caption(steps, has_acc, final)
        cap += _penalty_note(config)
        stop = _early_stop_note(((store.run(rid) or {}).get("metrics") if hasattr(
            store, "run") else None), config)
        if stop:  # the curves run to the stopping epoch, the stated metrics are the best's
            cap += (f" Early stopping: the curves run to the epoch that ended training; the "
                    f"run's stated metrics and saved network are not the curves' last point "
                    f"({stop}).")
        blocks.append(H.figure_block(png, FIG_TRAINING, cap, wide=True))
    # a torch model whose layers feed no recognised activation or normalization module (an
    # LSTM, a transformer's functional activations) records no act_* and no saturation rows:
    # one note says so instead of two empty panels
    sat_qs = [q for q, _, _ in figures.SATURATION_QUANTITIES]
    has_act = layered and bool((probes["quantity"] == "act_mean").any())
    has_sat = layered and bool(np.isfinite(pd.to_numeric(
        probes.loc[probes["quantity"].isin(sat_qs), "value"], errors="coerce")).any())
    if layered and not has_act:
        blocks.append(_wide_note(
            f"No activation{'' if has_sat else ' or saturation'} figure: no layer's output "
            "goes into a recognised activation or normalization module (<code>dlt.ACTIVATIONS"
            "</code>, <code>dlt.NORMS</code>), so none was measured."))
    elif layered and not has_sat:
        blocks.append(_wide_note("No saturation figure: no layer's activation is bounded "
                                 "(sigmoid, tanh) or of the ReLU family."))
    if has_act:
        blocks.append(_activations_block(probes, safe, pngs))
    if layered:
        layers = figures.hidden_layers(probes)
        layer = percentile_layer if percentile_layer in layers else None
        if (probes["quantity"] == "pre_p50").any():  # not recorded: no empty figure
            png = pngs.add(f"{safe}_percentiles.png", figures.percentile_bands, probes, layer)
            blocks.append(H.figure_block(
                png, FIG_PERCENTILES, "Percentiles of one layer's input to its nonlinearity "
                f"({_percentiles_text(probes)}; Ioffe & Szegedy 2015, Fig. 1b/c): a drifting "
                "band is internal covariate shift."))
        blocks.append(_heatmap_block(probes, safe, pngs))
    if not hists.empty:
        for kind, title, what in (("act", FIG_HIST_ACT, "activations"),
                                  ("grad", FIG_HIST_GRAD, "back-propagated gradients dL/ds"),
                                  ("weight", FIG_HIST_WEIGHT, "weights W")):
            if not (hists["kind"] == kind).any():
                continue
            png = pngs.add(f"{safe}_histograms_{kind}.png", plot.activation_histograms,
                           hists, kind)
            blocks.append(H.figure_block(
                png, title, f"Density of the {what} of each shown layer at the first and the "
                "last recorded step (Glorot & Bengio 2010, Figs. 6–7). Every panel has its own "
                "bins and states its range; layers shown: the first, the last and evenly "
                "spaced ones between.", wide=True))
    if has_sat:
        png = pngs.add(f"{safe}_saturation.png", plot.saturation, probes)
        blocks.append(H.figure_block(
            png, FIG_SATURATION, "Saturated: entries of a bounded unit (sigmoid, tanh) whose "
            "derivative is below 5% of its maximum; inactive: ReLU-family entries with s ≤ 0 "
            "(the flat or negative side); dead: units whose derivative is 0 on every probe "
            "example (a ReLU unit inactive on all of them; an ELU or GELU unit passes a "
            "gradient there).", wide=True))
    # the weight std and dL/dW figures: a pair of half columns, or both across the row when
    # the map is wide (module names, many steps) or absent, so neither sits alone in half
    weight_blocks: list[str] = []
    pair_wide = True
    if layered and (probes["quantity"] == "weight_grad_std").any():
        png = pngs.add(f"{safe}_weight_grad_heatmap.png", plot.gradient_heatmap, probes,
                       "weight_grad_std")
        pair_wide = _too_wide(png) or bool(figures.layer_names(probes))
        weight_blocks.append(H.figure_block(
            png, FIG_WEIGHT_GRAD, "Std of dL/dW per layer (rows) and step (columns), log "
            "colours: what the optimizer actually steps each weight matrix with. A colour "
            "change from top to bottom means some layers' weights get vanishing or exploding "
            "gradients (they learn orders of magnitude slower or faster); blank: zero or not "
            "finite (the title says where).",
            wide=pair_wide))
    if layered and (probes["quantity"] == "weight_std").any():
        init_std, init_label = init_weight_std(config)
        png = pngs.add(f"{safe}_weight_std.png", figures.weight_std_profile, probes,
                       init_std, init_label)
        weight_blocks.insert(0, H.figure_block(
            png, FIG_WEIGHT_STD, "Std of each layer's weight entries (log scale) at the "
            "first and the last probed step"
            + ("; dotted: the initializer's std sqrt(Var(W)) for each layer's fans ("
               f"{_as_dict(_as_dict(config).get('model')).get('init')}; He: "
               "sqrt(2 / fan_in), Glorot: sqrt(2 / (fan_in + fan_out))). The first step's "
               "points on the dotted line: the layers start at their initializer's scale"
               if init_std else f" ({init_label})")
            + ". A layer far from the scale its fans call for, or moving far from its start "
            "by the end, scales every signal that passes it (forward and backward): look "
            "for the layer where the gradient figures above change.", wide=pair_wide))
    blocks += weight_blocks
    if layered and (probes["quantity"] == "update_ratio").any():
        png = pngs.add(f"{safe}_update_ratio.png", plot.update_ratio, probes)
        blocks.append(H.figure_block(
            png, FIG_UPDATE_RATIO, "||W_n − W_(n−1)|| / ||W_(n−1)|| of each shown layer "
            "per recorded step (log scale): the relative size of one optimizer step. "
            "Around 1e-3 is the usual order; far above, the step is too large; far "
            "below, that layer barely learns.", wide=has_sat))  # after saturation: alone
    # `[probes] jacobian = true`: recorded at the start and the end, drawn nowhere before
    jac = _get(store.jacobian(rid)) if hasattr(store, "jacobian") else pd.DataFrame()
    if not jac.empty:
        png = pngs.add(f"{safe}_jacobian.png", figures.jacobian_spectrum, jac)
        # a step whose every σ overflowed (a diverged run's end) is said, not left out
        per_step = "; ".join(
            (f"step {step}: mean σ² {H.fmt(ms)}, σ {H.fmt(lo)} to {H.fmt(hi)}"
             + (f" ({bad} not finite)" if bad else "")) if n else
            f"step {step}: all {bad} σ not finite"
            for step, n, ms, lo, hi, bad in figures.jacobian_summary(jac) if n or bad)
        blocks.append(H.figure_block(
            png, FIG_JACOBIAN, "Singular values σ of the input–output Jacobian ∂(outputs)/∂"
            "(inputs) of each probe example, pooled, as a cumulative distribution (log σ): "
            "every σ near 1 is dynamical isometry (Saxe et al. 2014; Pennington et al. 2017), "
            "a spectrum far below 1 a vanishing, far above an exploding input–output map. "
            + (f"{per_step}." if per_step else "No finite singular value."),
            wide=True))
    return blocks, probes


def _profile_when(probes: pd.DataFrame) -> str:
    """When the gradient profile figure draws a run: ``initialization and at the end``, or,
    for a run that recorded one step (a Watch closed after its first ``watch.step``), that
    step alone (the caption said "and at the end" over one panel)."""
    grads = probes[(probes["layer"] >= 1) & (probes["quantity"] == "grad_pre_std")]
    recorded = grads["step"].nunique()
    if recorded == 1:
        return f"step {int(grads['step'].iloc[0])}, the only step recorded (no later one to " \
            "compare with)"
    return "initialization and at the end"


def _percentiles_text(probes: pd.DataFrame) -> str:
    """What the percentile figure draws, from the percentiles the run recorded:
    ``median, 15–85th band (and 2–98th, lighter)`` by default (was always "15/50/85th
    percentiles (and 2–98th band)", also of a Watch that recorded 10, 50, 90 and 99)."""
    pairs, alone = figures.percentile_pairs(figures.percentiles_recorded(probes))
    bits = ["median"]
    if pairs:
        inner = f"{pairs[-1][0]:g}–{pairs[-1][1]:g}th band"
        outer = [f"{lo:g}–{hi:g}th" for lo, hi in pairs[:-1]]
        bits.append(inner + (f" (and {', '.join(outer)}, lighter)" if outer else ""))
    if alone:
        bits.append(", ".join(f"{k:g}th" for k in alone) + " dotted")
    return ", ".join(bits)


def _early_stop_note(metrics: Any, config: Any) -> str:
    """``early stop after epoch 16; metrics and network of epoch 14`` for a run that
    ``train.patience`` ended (as ``depthlab run`` says it), else ``""``."""
    metrics = metrics if isinstance(metrics, dict) else {}
    stopped, best = metrics.get("stopped_epoch"), metrics.get("best_epoch")
    if not isinstance(stopped, (int, float)) or isinstance(stopped, bool) \
            or not math.isfinite(stopped):
        return ""
    if not isinstance(best, (int, float)) or isinstance(best, bool) or not math.isfinite(best):
        monitor = _section(config if isinstance(config, dict) else {}, "train").get(
            "monitor") or "monitored value"
        return (f"early stop after epoch {int(stopped)}; no epoch had a finite {monitor}: "
                f"metrics and network of epoch {int(stopped)}")
    return f"early stop after epoch {int(stopped)}; metrics and network of epoch {int(best)}"


def _data_text(data: dict) -> str | None:
    """The data a run trained on: its built-in set's ``name``, else its file's ``path``."""
    for key in ("name", "path"):
        if isinstance(data.get(key), str) and data[key]:
            return data[key]
    return None


def _setup_pairs(config: Any) -> list[tuple[str, Any]]:
    """The run card's settings: the hidden-layer count (len(sizes) - 2), the data, the model's
    shape, activation, init, normalization, dropout and floating-point precision (``dtype``),
    and the training's loss, optimizer, lr, batch and length, each as the config has it (a
    key the config lacks is left out). The data, the loss and the dtype were left out: a
    float64 run read as a float32 one, and an mse run's "train loss 0.43" as a cross-entropy."""
    data, model, train = (_section(config, k) for k in ("data", "model", "train"))
    pairs: list[tuple[str, Any]] = []
    sizes = model.get("sizes")
    if isinstance(sizes, (list, tuple)) and len(sizes) >= 2:
        pairs.append(("depth (hidden layers)", len(sizes) - 2))
    source = _data_text(data)
    if source is not None:
        pairs.append(("data", source))
    pairs += [(f"model.{k}", model[k]) for k in ("sizes", "activation", "init", "batchnorm",
                                                  "residual", "dropout", "dtype") if k in model]
    pairs += [(f"train.{k}", train[k]) for k in ("loss", "optimizer", "lr", "batch_size",
                                                  "epochs", "max_steps") if k in train]
    return pairs


def _run_section(store, row: pd.Series, rank_label: str, is_open: bool, pngs: _Pngs,
                 keys: list[str], percentile_layer: int | None, label: str = "") -> str:
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
    shown = METRIC_COLUMNS if any(math.isfinite(as_number(row.get(m))) for m in
                                  METRIC_COLUMNS[1:]) else ("train_loss", *REGRESSION_COLUMNS)
    sub = ", ".join(f"{m.replace('_', ' ')} {H.fmt(row[m])}" for m in shown
                    if math.isfinite(as_number(row.get(m))))
    stop = _early_stop_note(row.get("metrics"), row.get("config"))
    if stop and sub:  # the metrics are the best epoch's, not those the curves end on
        sub += f" ({stop})"
    if status == "diverged":  # where, in the line a store of many runs is read by
        where = _diverged_where(store, rid, detail if isinstance(detail, dict) else {})
        sub = f"{sub}, {where}" if sub and where else sub or where
    if keys:
        sub = "; ".join(f"{k}={H.fmt(_cell(row['cfg:' + k]))}" for k in keys[:4]) + (
            f" — {sub}" if sub else "")
    head = (f"<summary>{' '.join(title_bits)}<span class=\"sub\">{H.esc(sub)}</span></summary>")
    body: list[str] = []
    config = row["config"]
    findings = store.findings(rid) if hasattr(store, "findings") else None
    if findings or row.get("kind") == "doctor":
        body.append(f"<h3>{H.esc(SECTION_FINDINGS)}</h3>")
        body.append(_findings_html(_as_dict(findings)))
    # a section that is no table (a store edited by hand: "model": 5) is shown as absent
    summary_pairs = _setup_pairs(config)
    metrics = row["metrics"]
    # a failed run's unmeasured metrics (None) are left out: "seconds none, test_acc none,
    # ..., val_loss none" stood above its error
    summary_pairs += [(k, v) for k, v in metrics.items() if not isinstance(v, (dict, list))
                      and not (v is None and status == "failed")]
    if summary_pairs:
        body.append(H.key_values(summary_pairs))
    names = _module_names(config)  # depthlab.torch runs: layer number -> module name
    if names:
        body.append("<h3>Layers (module names)</h3>")
        # an nn.Sequential's index as the figures label it, [4] as in model[4] (the table
        # said "layer 3: 4" beside ticks reading [4])
        body.append(H.key_values([(f"layer {k}", f"[{v}]" if v.isdigit() else v)
                                  for k, v in sorted(names.items())]))

    div = _as_dict(detail.get("divergence", row.get("divergence")))
    if status == "diverged" or div:
        body.append(f"<h3>{H.esc(SECTION_DIVERGENCE)}</h3>")
        body.append(_divergence_html(div or {"message": _unreported_divergence(store, rid)}))
    error = detail.get("error", row.get("error"))
    if status == "failed" or (isinstance(error, str) and error):
        body.append(f"<h3>{H.esc(SECTION_ERROR)}</h3><div class=\"alert\"><pre>"
                    f"{H.esc(error or 'failed (no message recorded)')}</pre></div>")
    blocks, probes = _run_figures(store, rid, label or str(row.get("name") or rid), config,
                                  pngs, percentile_layer)
    if blocks:
        body.append("<div class=\"grid\">" + "".join(blocks) + "</div>")
    if probes.empty and status != "failed":
        source = config.get("source") if isinstance(config, dict) else None
        hint = ("its depthlab.torch Watch was closed before any <code>watch.step(loss)</code>"
                if isinstance(source, str) and source.startswith("depthlab.torch")
                else "enable them with <code>[probes] every = N</code>")
        body.append(f"<p class=\"note\">No probes were recorded for this run ({hint}).</p>")
    elif not (probes["layer"] >= 1).any() and _no_hidden_layer(config):
        # a depth-0 network was told its Watch was created too late, a depthlab.torch hint
        body.append("<p class=\"note\">This network has no hidden layer (depth 0): the probes "
                    "measure hidden layers, so only its loss (and, when probed, its "
                    "input–output Jacobian) is drawn.</p>")
    elif not (probes["layer"] >= 1).any() and status != "failed":
        body.append("<p class=\"note\">Only the loss was probed: no layer ran while the hooks "
                    "were on (a Watch created after its step's forward, or a loop that calls the "
                    "model's submodules rather than the model).</p>")
    open_attr = " open" if is_open else ""
    return (f"<details class=\"run\" id=\"run-{H.esc(safe)}\"{open_attr}>{head}"
            f"<div class=\"body\">{''.join(body)}</div></details>")


# -- entry point -------------------------------------------------------------------------------
def write_report(out_dir: str | os.PathLike, store: Any = None, title: str | None = None, *,
                 max_runs: int = MAX_RUNS, max_diverged: int = MAX_DIVERGED,
                 percentile_layer: int | None = None,
                 echo: Callable[[str], None] | None = None) -> Path:
    """Write ``out_dir/report.html`` (self-contained) and ``out_dir/figures/*.png`` from the
    runs in ``store`` (default: ``Store(out_dir)``, i.e. ``out_dir/depthlab.db``, which must
    exist: a missing store raises ``depthlab.experiments.store.StoreError``). An ``out_dir``
    naming a store file (``results.db``, as ``--out results.db`` writes) puts the report in
    the file's folder.

    One section per sweep (its gradient-flow figures overlaid over all its runs first, then
    its runs table and metric chart, then per-run details) and one per stand-alone run or
    doctor diagnosis (the diagnosis leads with its findings). Per sweep, details are drawn for
    the ``max_runs`` best runs by validation accuracy plus up to ``max_diverged`` diverged
    runs; every run appears in the sweep's table. More than ``max_runs`` stand-alone runs
    are reported the same way, as one section "N stand-alone runs". Figures are named
    ``<run or sweep>_<figure>.png``. ``echo`` receives a line per section being drawn.
    All figures are rendered before any file is written, and every file is replaced
    atomically, so a failure leaves the previous report untouched. Returns the path of
    ``report.html``.
    """
    for label, v in (("max_runs", max_runs), ("max_diverged", max_diverged)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{label} must be an integer >= 0, got {v!r}")
    _check_options(out_dir, title, percentile_layer, echo)
    from ..experiments.store import DB_NAME, Store, resolve_db_path

    out = Path(out_dir)
    db = resolve_db_path(out)
    if db.name != DB_NAME or db.parent != out:  # a store file (results.db): report beside it
        out = db.parent
    own_store = store is None
    if own_store:
        store = Store(db, create=False, readonly=True)  # a report only reads the store
    out.mkdir(parents=True, exist_ok=True)
    try:
        _check_writable(out)
        # a Ctrl-C stops the report inside a long store read (Store.interruptible; a store
        # of another kind is read as it is)
        reads = (store.interruptible() if hasattr(store, "interruptible")
                 else nullcontext())
        with reads:
            return _write(out, store, title, max_runs, max_diverged, percentile_layer,
                          echo or (lambda _line: None))
    finally:
        if own_store:
            store.close()




def _check_options(out_dir: Any, title: Any, percentile_layer: Any, echo: Any) -> None:
    """Refuse, before the store is read, arguments of :func:`write_report` of the wrong kind
    in one line naming the value: a ``title`` that is not text was drawn as its repr
    (``title=5``), a ``percentile_layer`` of ``"x"``, ``2.5`` or ``0`` was silently ignored
    (every run drew its default layer), and an ``echo`` that cannot be called stopped the
    report at its first section with ``'int' object is not callable``."""
    if isinstance(out_dir, bytes) or not isinstance(out_dir, str | os.PathLike):
        raise TypeError(f"out_dir must be a folder path (str or os.PathLike), got "
                        f"{out_dir!r:.60}")
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a string or None, got {title!r:.60}")
    if percentile_layer is not None:
        if isinstance(percentile_layer, bool) or not isinstance(percentile_layer,
                                                                 int | np.integer):
            raise TypeError(f"percentile_layer must be a hidden layer's number (an integer "
                            f">= 1) or None, got {percentile_layer!r:.60}")
        if percentile_layer < 1:
            raise ValueError(f"percentile_layer must be a hidden layer's number (1 = the "
                             f"first hidden layer) or None, got {percentile_layer!r}")
    if echo is not None and not callable(echo):
        raise TypeError(f"echo must be a function taking one line of text, or None, got "
                        f"{echo!r:.60}")


def _check_writable(out: Path) -> None:
    """Refuse a folder the report cannot be written to before anything is drawn: ``figures``
    not a folder (a ``FileExistsError`` naming it, as creating it says), and an empty scratch
    file staged and discarded where ``report.html`` goes and in an existing ``figures`` (an
    :class:`~depthlab.atomic.AtomicWriteError` naming the file: read-only, ``report.html`` a
    folder). Such a folder of 10 runs was refused only after about two minutes of drawing,
    when the first figure was written."""
    fig_dir = out / "figures"
    if os.path.lexists(fig_dir) and not fig_dir.is_dir():
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(fig_dir))
    stage_bytes(out / "report.html", b"").discard()
    if fig_dir.is_dir():
        stage_bytes(fig_dir / "figure.png", b"").discard()


def _group_section(store: Any, group: _Group, pngs: _Pngs, max_runs: int, max_diverged: int,
                   percentile_layer: int | None, first_open: bool,
                   echo: Callable[[str], None] = lambda _line: None,
                   detailed_before: set[str] | None = None) -> str:
    """A group's section; a run already detailed in an earlier section (a point of two
    sweeps) is linked there, not drawn again. Adds the runs it details to ``detailed_before``."""
    earlier = set() if detailed_before is None else detailed_before
    runs = group.runs
    body = [f"<h2 id=\"{H.esc(group.anchor)}\">{H.esc(group.title)}</h2>"]
    if group.kind != "sweep":
        row = runs.iloc[0]
        body.append(_run_section(store, row, "", first_open, pngs, [], percentile_layer))
        return "".join(body)
    keys = varying_keys(runs)
    ranked = _rank(runs)
    div_mask = ranked["status"] == "diverged"
    fail_mask = ranked["status"] == "failed"
    best_rows = ranked[~div_mask & ~fail_mask].head(max_runs)
    div_rows = ranked[div_mask].head(max_diverged)
    failed_rows = ranked[fail_mask]
    shown = {*best_rows["id"].astype(str), *div_rows["id"].astype(str),
             *failed_rows["id"].astype(str), *(earlier & {*runs["id"].astype(str)})}
    body.append(_flow_section(store, group, pngs))
    body.append(_sweep_overview(group, keys, pngs, shown))
    n_ok = int((~div_mask & ~fail_mask).sum())
    # no finished run: "Showing 0 of 0 finished runs ... The best run is expanded" said
    # there was a best one
    note = [f"Showing {len(best_rows)} of {n_ok} finished run{'s' * (n_ok != 1)}"
            + (f" (the {max_runs} best by validation accuracy)" if n_ok > max_runs else "")
            if n_ok else "No run finished"]
    if div_mask.any():
        n_div = int(div_mask.sum())
        note.append(f"{len(div_rows)} of {n_div} diverged run{'s' * (n_div != 1)}")
    if fail_mask.any():
        n_fail = int(fail_mask.sum())
        note.append(f"{n_fail} failed run{'s' * (n_fail != 1)} (errors only)")
    detailed = pd.concat([best_rows, div_rows, failed_rows])
    again = detailed["id"].astype(str).isin(earlier)
    if again.any():
        note.append(f"{int(again.sum())} of them detailed in an earlier section (linked)")
        detailed = detailed[~again]
    earlier.update(detailed["id"].astype(str))
    # only the report's first section opens a run (a later sweep's note said "The best run is
    # expanded" above a closed one)
    opened = (("The best run" if len(best_rows) else "The first run") + " is expanded; click"
              if first_open and len(detailed) else "Click")
    body.append(f"<h3>{H.esc(SECTION_RUNS)}</h3><p class=\"note\">{H.esc('; '.join(note))}. "
                f"{opened} a run to expand it.</p>")
    labels = _labels(runs)
    first = first_open
    for k, (_, row) in enumerate(detailed.iterrows()):
        echo(f"report:   run {k + 1}/{len(detailed)}: {labels[str(row['id'])]}")
        label = "best" if k == 0 and len(best_rows) and len(runs) > 1 else ""
        body.append(_run_section(store, row, label, first, pngs, keys, percentile_layer,
                                 labels[str(row["id"])]))
        first = False
    return "".join(body)


def _in_grid_order(runs: pd.DataFrame, grid: dict[str, list]) -> pd.DataFrame:
    """A sweep's ``runs`` in its grid's order (:meth:`Store.sweep_grids`: the first key's
    values slowest, each key's values as the grid lists them), so that the figures' text
    values (``optimizer``, ``activation``), which keep their first appearance's order, follow
    the grid: on Dask or ``--jobs N`` the store holds the points in the order they finished.
    A value the grid does not list (a run found stored by an extended grid) comes after."""
    def frozen(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return tuple(frozen(x) for x in v)
        return v

    ranks = []
    for key in reversed(list(grid)):  # np.lexsort: the last key given sorts first
        col = "cfg:" + key
        if col not in runs or not grid[key]:  # numbers only: the figures sort them
            continue
        pos = {repr(frozen(v)): i for i, v in enumerate(grid[key])}
        ranks.append([pos.get(repr(frozen(v)), len(pos)) for v in runs[col]])
    if not ranks:
        return runs
    return runs.iloc[np.lexsort([np.asarray(r) for r in ranks])]


def _write(out: Path, store: Any, title: str | None, max_runs: int, max_diverged: int,
           percentile_layer: int | None, echo: Callable[[str], None]) -> Path:
    with glyphs.recorded() as missing:
        return _write_recorded(out, store, title, max_runs, max_diverged, percentile_layer,
                               echo, missing)


def _missing_glyphs_note(missing: set[str]) -> str:
    """A note on the characters the figures write as code points (no font here has them)."""
    if not missing:
        return ""
    chars = sorted(missing)
    shown = "".join(chars[:24]) + ("…" if len(chars) > 24 else "")
    return ("<p class=\"note\">No font on the machine that drew the figures has "
            f"{len(chars)} character{'s' * (len(chars) != 1)} of the names here "
            f"(<span lang=\"und\">{H.esc(shown)}</span>): the figures write "
            f"{'them' if len(chars) != 1 else 'it'} as Unicode code points, "
            f"<code>{H.esc(glyphs.drawable(chars[0]))}</code> for {H.esc(chars[0])}. "
            "Install a font that has them (for Chinese, Japanese and Korean: Noto Sans CJK) "
            "and write the report again to see them drawn.</p>")


def _write_recorded(out: Path, store: Any, title: str | None, max_runs: int,
                    max_diverged: int, percentile_layer: int | None,
                    echo: Callable[[str], None], missing: set[str]) -> Path:
    runs = _runs_table(store)
    pngs = _Pngs()
    n = len(runs)
    body: list[str] = []
    toc: list[tuple[str, str]] = []
    members = store.sweep_points() if n and hasattr(store, "sweep_points") else {}
    groups = _groups(runs, fold_beyond=max_runs, members=members) if n else []
    sizes = store.sweep_sizes() if groups and hasattr(store, "sweep_sizes") else {}
    grids = store.sweep_grids() if groups and hasattr(store, "sweep_grids") else {}
    for g in groups:  # a sweep still running (or stopped): "17 of 24 runs"
        g.planned = sizes.get(g.sweep) if g.sweep is not None else None
        if g.sweep in grids:  # its figures in the grid's order, not the order it finished in
            g.runs = _in_grid_order(g.runs, grids[g.sweep])
            g.grid_keys = list(grids[g.sweep])
            g.grid = grids[g.sweep]
    detailed: set[str] = set()  # runs drawn in a section so far (a run in two sweeps: once)
    if n == 0:
        body.append(f"<h2 id=\"runs\">{H.esc(SECTION_RUNS)}</h2>"
                    "<p class=\"note\">The store holds no runs yet. Add some with "
                    "<code>depthlab run CONFIG --out DIR</code>, <code>depthlab sweep CONFIG "
                    "--out DIR</code> or a PyTorch loop's <code>depthlab.torch.Watch(model, "
                    "out=DIR)</code>, then write this report again with <code>depthlab report "
                    "DIR</code>.</p>")
    if len(groups) > 1 and groups[0].kind != "sweep":
        # several stand-alone runs: the overlaid per-layer figures of all of them come first
        echo("report: overview of all runs")
        flow = _flow_section(store, _Group("all-runs", SECTION_ALL, "overview", runs), pngs)
        if flow:
            body.append(f"<h2 id=\"all-runs\">{H.esc(SECTION_ALL)}</h2>{flow}")
            toc.append(("all-runs", SECTION_ALL))
    for k, group in enumerate(groups):
        echo(f"report: section {k + 1}/{len(groups)}: {group.title} "
             f"({len(group.runs)} run{'s' if len(group.runs) != 1 else ''})")
        body.append(_group_section(store, group, pngs, max_runs, max_diverged,
                                   percentile_layer, first_open=(k == 0), echo=echo,
                                   detailed_before=detailed))
        toc.append((group.anchor, group.title))

    from .. import __version__

    if title is None:
        title = ("depthlab report — " + groups[0].title if len(groups) == 1 else
                 f"depthlab report — {len(groups)} sections" if groups else "depthlab report")
    meta = [("generated", time.strftime("%Y-%m-%d %H:%M")), ("depthlab", __version__),
            ("runs", str(n))]
    if n:
        counts = runs["status"].value_counts().to_dict()
        meta.append(("status", ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))))
    document = H.page(title, meta, _missing_glyphs_note(missing) + "".join(body),
                      toc=toc if len(toc) > 1 else ())
    echo(f"report: writing {len(pngs.files)} figures and report.html")
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    written_before = _figures_written(fig_dir)
    target = out / "report.html"
    files = [*((fig_dir / name, png) for name, png in pngs.files.items()),
             (target, document.encode("utf-8")),
             (fig_dir / FIGURE_LIST, json.dumps(sorted(pngs.files)).encode("utf-8"))]
    # all written, then all renamed: a Ctrl-C among the writes (one fsync per file) left some
    # of the new PNG copies beside the previous report.html and its figure list
    atomic_write_all([(path, lambda fh, data=data: fh.write(data)) for path, data in files])
    drawn = {name.casefold() for name in pngs.files}  # (a file system may ignore case)
    for name in written_before:  # the previous report's, not drawn now
        if name.casefold() not in drawn:
            (fig_dir / name).unlink(missing_ok=True)
    return target


FIGURE_LIST = ".depthlab-report-figures.json"
"""The names of the PNG copies the last report wrote (in ``figures/``): the next report
removes those it does not draw again, so the folder never mixes two reports' figures; files
the report did not write are never touched."""


def _figures_written(fig_dir: Path) -> set[str]:
    try:
        names = json.loads((fig_dir / FIGURE_LIST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    if not isinstance(names, list):
        return set()
    return {n for n in names if isinstance(n, str) and n.endswith(".png")
            and Path(n).name == n and not n.startswith(".")}
