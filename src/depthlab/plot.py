"""Public figures: matplotlib :class:`~matplotlib.figure.Figure` objects from depthlab's tables.

Every function takes what a notebook has at hand — a probe table (columns ``step, layer,
quantity, value``), a :class:`~depthlab.ProbeRecorder`, a :class:`~depthlab.History`, a
:class:`~depthlab.experiments.RunRecord`, a :class:`~depthlab.Diagnosis`, or a mapping
``{label: any of these}`` for several runs — and returns a figure drawn on an Agg canvas (no
pyplot state; Jupyter shows it when it is the cell's value). ``depthlab.report`` builds its
pages from these same functions.

The headline figures are :func:`gradient_per_layer` and :func:`activation_per_layer`: the
standard deviation of ``dL/ds`` (or of the activations) per layer, one line per run, on a log
axis, at initialization and at the end of training, each run's theory prediction dashed
beside it (``depthlab.theory.propagate``: ``Var(dL/ds_l) = n_{l+1} v_{l+1} E[f'(s_l)^2]
Var(dL/ds_{l+1})`` scaled to the run's measured top layer; ``Std(a_l) = sqrt(Var f(s_l))``;
batch-normalized and residual runs: ``depthlab.theory.predict_gradients``).

A table with a ``module`` column (``depthlab.torch``'s ``Watch.frame()``, ``probe()``,
``Diagnosis.probes``) labels the layer axes, ticks, legends and panel titles with the module
names (``layer1.0.conv1``; rotated, thinned so that no two overlap) instead of the layer numbers.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patheffects import Normal, Stroke

from .report import figures as _f

__all__ = [
    "activation_bands",
    "activation_histograms",
    "activation_per_layer",
    "gradient_heatmap",
    "gradient_per_layer",
    "gradient_ratio",
    "probe_table",
    "saturation",
    "sweep_metric",
    "theory_for_config",
    "training_curves",
    "update_ratio",
]

# one colour per run: Okabe-Ito without its yellow (#F0E442: contrast 1.3:1 on the white
# figure, a thin run line in it could not be seen)
RUN_COLORS = tuple(c for c in _f.OKABE_ITO if c.upper() != "#F0E442")
RUN_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
"""One marker per colour of :data:`RUN_COLORS`: printed in grayscale, the orange, the reddish
purple and the sky blue are one gray (162, 151, 158 of 255), and so are the green and the
vermillion (106, 119): with one circle for every colour, three runs of a sweep were one line
on paper."""
RUN_LINESTYLES = ("-", "-.", ":")
"""After every ``len(RUN_COLORS)`` runs the line style and the marker change together (see
:func:`run_style`); dashes (``--``) are the theory's."""


def run_style(i: int) -> tuple[str, str, str]:
    """(colour, marker, line style) of the ``i``-th run of an overlay, with ``k, c =
    divmod(i, len(RUN_COLORS))``: colour ``RUN_COLORS[c]``, marker ``RUN_MARKERS[(c + k) %
    len(RUN_MARKERS)]``, line style ``RUN_LINESTYLES[k % 3]``. The colours first, each with
    its own marker (told apart in grayscale too), then the same colours dash-dotted with the
    next markers, dotted, ...: distinct for ``len(RUN_COLORS) * 21`` runs (7 colours alone
    made run 8 look like run 1: the same colour and solid line, and the same dashed theory)."""
    k, c = divmod(int(i), len(RUN_COLORS))
    return RUN_COLORS[c], RUN_MARKERS[(c + k) % len(RUN_MARKERS)], \
        RUN_LINESTYLES[k % len(RUN_LINESTYLES)]


MAX_REDRAWN_POINTS = 30
"""Most measured points a per-layer panel draws again over the theory line (a ~5 in panel:
0.17 in apart, three marker widths; denser markers would hide the dashes)."""
HIST_MAX_LAYERS = 5
"""Histogram figures show at most this many layers: the first, the last and evenly spaced
ones between (the figure says which and why)."""


# -- inputs ------------------------------------------------------------------------------------
def probe_table(obj: Any) -> pd.DataFrame:
    """The tidy probe table (``step, layer, quantity, value``) of ``obj``: a DataFrame
    (``dl.probe``'s table without ``step`` gets step 0), a ProbeRecorder (``.frame()``), a
    RunRecord or Diagnosis (``.probes``)."""
    if isinstance(obj, pd.DataFrame):
        _require_columns(obj, ("layer", "quantity", "value"), "a probe table")
        obj = _numeric_columns(obj, ("step", "layer", "value"))
        return obj if "step" in obj.columns or obj.empty else obj.assign(step=0)
    if hasattr(obj, "frame") and callable(obj.frame):
        return obj.frame()
    probes = getattr(obj, "probes", None)
    if isinstance(probes, pd.DataFrame):
        return probes
    raise TypeError(f"expected a probe table (DataFrame with step, layer, quantity, value), a "
                    f"ProbeRecorder, a RunRecord or a Diagnosis; got {type(obj).__name__}")


def _numeric_columns(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``df`` with its ``columns`` as numbers (a table read as text: ``"3"`` -> 3); a column
    holding something else is a ValueError naming it and the first bad entry."""
    fixed = {}
    for c in columns:
        if c not in df.columns or pd.api.types.is_numeric_dtype(df[c].dtype):
            continue
        num = pd.to_numeric(df[c], errors="coerce")
        bad = df[c][num.isna() & df[c].notna()]
        if len(bad):
            raise ValueError(f"the probe table's {c!r} column must hold numbers; got "
                             f"{bad.iloc[0]!r}")
        fixed[c] = num
    return df.assign(**fixed) if fixed else df


def _require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """A non-empty DataFrame given as ``what`` must have ``columns`` (ValueError naming the
    missing ones, not a KeyError deep in a figure)."""
    missing = [c for c in columns if c not in df.columns]
    if missing and not df.empty:
        raise ValueError(f"expected {what} with columns {', '.join(columns)}; the DataFrame has "
                         f"no {', '.join(missing)} (columns: {', '.join(map(str, df.columns))})")


def _label(obj: Any, default: str) -> str:
    if isinstance(obj, pd.DataFrame):
        return default
    return str(getattr(obj, "name", None) or getattr(obj, "id", None) or default)


def _runs(table_or_runs: Any) -> dict[str, tuple[pd.DataFrame, Any]]:
    """``{label: (probe table, config or None)}`` from one run, a mapping or a sequence."""
    if isinstance(table_or_runs, pd.DataFrame) and "run" in table_or_runs.columns:
        return {str(k): (g.drop(columns="run"), None)
                for k, g in table_or_runs.groupby("run", sort=False)}
    if isinstance(table_or_runs, Mapping):
        items = list(table_or_runs.items())
    elif isinstance(table_or_runs, Sequence) and not isinstance(table_or_runs, (str, bytes)):
        items = [(_label(r, f"run {i + 1}"), r) for i, r in enumerate(table_or_runs)]
    else:
        items = [(_label(table_or_runs, "run"), table_or_runs)]
    if not items:
        raise ValueError("no runs given: expected at least one probe table or run")
    out: dict[str, tuple[pd.DataFrame, Any]] = {}
    for k, v in items:  # two runs of one name (seeds, reruns) both stay: "name (2)"
        label, n = str(k), 1
        while label in out:
            n += 1
            label = f"{k} ({n})"
        out[label] = (probe_table(v), getattr(v, "config", None))
    return out


def _theories(runs: dict[str, tuple[pd.DataFrame, Any]], theory: Any) -> dict[str, Any]:
    """Theory frame per run label: ``theory`` as given (one frame for a single run, a mapping
    label -> frame, False for none) or, by default, derived from each run's config."""
    if theory is False:
        return {}
    if isinstance(theory, pd.DataFrame):
        _theory_frame(theory, "theory")
        return {k: theory for k in runs}
    if isinstance(theory, Mapping):
        for k, v in theory.items():
            _theory_frame(v, f"theory[{k!r}]")
        return {str(k): v for k, v in theory.items()}
    if theory is not None and theory is not True:
        raise TypeError(f"theory must be a DataFrame (layer, grad_pre_var, act_var), a mapping "
                        f"run label -> DataFrame, False for none or None to derive it from "
                        f"each run's config; got {type(theory).__name__}")
    out = {}
    for k, (_, cfg) in runs.items():
        if cfg:
            th, _ = theory_for_config(cfg)
            if th is not None:
                out[k] = th
    return out


def _theory_frame(frame: Any, what: str) -> None:
    """A theory frame given by the caller has a ``layer`` column and at least one of
    ``grad_pre_var`` / ``act_var`` (else a TypeError / ValueError naming ``what``)."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{what} must be a DataFrame (layer, grad_pre_var, act_var), got "
                        f"{type(frame).__name__}")
    if "layer" not in frame.columns or not {"grad_pre_var", "act_var"} & set(frame.columns):
        raise ValueError(f"{what} must have the columns layer and grad_pre_var or act_var "
                         f"(depthlab.theory.propagate(...)); it has "
                         f"{', '.join(map(str, frame.columns)) or 'none'}")


def theory_for_config(config: Mapping[str, Any]) -> tuple[pd.DataFrame | None, str]:
    """The theory frame (``layer, grad_pre_var, act_var``) for a config with integer
    ``model.sizes`` and no dropout, and a note saying what it assumes; ``(None, reason)``
    otherwise. Plain MLPs: ``depthlab.theory.propagate``; batch-normalized or residual ones:
    ``depthlab.theory.predict_gradients`` (batch-norm mean field, residual recursion); a
    depthlab.torch run: the rows ``model.theory`` it stored (``depthlab.torch.predict``), or
    without them the reason it stored (``model.theory_note``). The note's output-gradient terms
    are those of the config's ``train.loss`` where it names one (``predict_gradients(loss=)``).
    An ``mlp()`` config
    (``Network.config``, ``Diagnosis.config``: ``sizes`` at the top level) is its own model
    section, so a diagnosis plots with its theory too."""
    section = config.get("model") if isinstance(config, Mapping) else None
    # a torch Diagnosis's config names its model's class there ("model": "Sequential")
    model = dict(section) if isinstance(section, Mapping) else {}
    if not model and isinstance(config, Mapping) and "sizes" in config:
        model = dict(config)  # dl.mlp's arguments (a Network's or a Diagnosis's config)
    rows = model.get("theory")  # depthlab.torch runs: depthlab.torch.predict at initialization
    if isinstance(rows, list) and rows and all(isinstance(r, Mapping) for r in rows):
        th = pd.DataFrame(rows)
        if {"layer", "grad_pre_var"} <= set(th.columns):
            th["act_var"] = pd.to_numeric(th.get("act_var"), errors="coerce")
            return th, ("theory: depthlab.torch.predict (variance propagation from the "
                        "model's weights at initialization)")
    source = config.get("source") if isinstance(config, Mapping) else None
    if isinstance(source, str) and source.startswith("depthlab.torch"):  # no rows stored
        note = model.get("theory_note")
        if isinstance(note, str) and note.strip():
            return None, "no theory curve: " + note.strip().removeprefix("no theory: ")
        return None, ("no theory curve: no depthlab.torch.predict rows were stored with this "
                      "run (a model the theory does not cover, or theory=False)")
    dropout = model.get("dropout") or 0
    if not isinstance(dropout, int | float):  # a store edited by hand: no curve, no TypeError
        return None, f"no theory curve: model.dropout = {dropout!r:.40} is not a rate"
    if dropout > 0:
        return None, "no theory curve: the prediction covers networks without dropout"
    sizes = model.get("sizes")
    if not isinstance(sizes, (list, tuple)) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in sizes):
        return None, "no theory curve: the config has no explicit integer layer sizes"
    from .theory.predict import has_zero_biases

    # batch norm, residual blocks and random zero-mean biases (sigma_b^2 added to each layer's
    # variance): predict_gradients; a constant non-zero bias gets its reason
    if model.get("batchnorm") or model.get("residual") or \
            not has_zero_biases(model.get("bias_init", "zeros")):
        from .losses import REGISTRY as LOSSES
        from .theory import predict_gradients

        # the run's loss sets the note's output-gradient terms (a regression loss's correction
        # is not told to a cross-entropy run); none, or a name edited by hand: not known
        train = config.get("train") if isinstance(config, Mapping) else None
        loss = train.get("loss") if isinstance(train, Mapping) else None
        try:
            pred = predict_gradients(model, loss=loss if isinstance(loss, str)
                                     and loss in LOSSES else None)
        except (ValueError, TypeError, OverflowError) as exc:
            return None, f"no theory curve: {exc}"
        if not pred.covered:
            return None, f"no theory curve: {pred.note.removeprefix('no prediction: ')}"
        return pred.frame, (f"theory: depthlab.theory.predict_gradients ({pred.architecture}: "
                            f"{pred.note})")
    from .theory import propagate

    try:
        kw = dict(model.get("activation_kwargs") or {})
        th = propagate(list(sizes), model.get("activation", "relu"),
                       init=model.get("init", "glorot_uniform"), **kw)
    except (ValueError, TypeError, OverflowError) as exc:
        return None, f"no theory curve: {exc}"
    note = "theory: depthlab.theory.propagate (Gaussian variance propagation at init"
    data = config.get("data") if isinstance(config, Mapping) else None
    if isinstance(data, Mapping) and data.get("standardize") is False:
        note += "; assumes unit-variance inputs, but this run did not standardize them"
    return th, note + ")"


# -- numbers -----------------------------------------------------------------------------------
def gradient_ratio(table: Any, step: int | None = None,
                   quantity: str = "grad_pre_std") -> float:
    """``std(dL/ds)`` of the first hidden layer over that of the last one at ``step`` (default:
    the first probed step, i.e. initialization). Far below 1: gradients vanish on their way
    back to the input; far above 1: they explode; near 1: they flow. NaN when not recorded.
    A depthlab.torch table (a ``module`` column) holds its output layer too, the last to run:
    it is left out, so the ratio is of the hidden layers, as a NumPy table holds them and as
    the report, a Watch's card and the doctor take it (it was the first layer against the
    head: 0.066 here, 0.45 on the same Watch's card)."""
    if step is not None and (isinstance(step, bool | np.bool_) or not (
            isinstance(step, int | np.integer)
            or isinstance(step, float | np.floating) and float(step).is_integer())):
        raise TypeError(f"step={step!r:.40} is not accepted; accepted: a probed step number "
                        "(an integer) or None (the first probed step)")  # 200.0 still is one
    t = probe_table(table)
    _check_quantity([t], quantity)
    if "module" in t.columns:
        from .report.build import _without_output_layer

        t = _without_output_layer(t)
    return _first_last_ratio(t, step, quantity)


def _first_last_ratio(table: Any, step: int | None = None,
                      quantity: str = "grad_pre_std") -> float:
    """:func:`gradient_ratio` of the layers ``table`` holds, its last one included (a torch
    table whose output layer the caller has already left out)."""
    pair = _first_last_values(table, step, quantity)
    if pair is None or not (0 < pair[1] < math.inf) or not math.isfinite(pair[0]):
        return math.nan
    with np.errstate(over="ignore", under="ignore"):  # 1e300 / 1e-300: past float64's
        return float(np.float64(pair[0]) / np.float64(pair[1]))  # largest, inf (no warning)


def _first_last_values(table: Any, step: int | None = None,
                       quantity: str = "grad_pre_std") -> tuple[float, float] | None:
    """``(first, last)``: ``quantity`` in the first and in the last layer ``table`` holds at
    ``step`` (default: the first probed step), each the mean of its rows there; None when
    nothing is recorded. The two numbers whose quotient :func:`_first_last_ratio` is, for a
    caller that must word a quotient float64 cannot hold (1e-320 / 1e30, 1 / 0)."""
    t = probe_table(table)
    sel = t[(t["quantity"] == quantity) & (t["layer"] >= 1)]
    if sel.empty:
        return None
    steps = np.sort(sel["step"].unique())
    if step is not None and step not in steps:
        raise ValueError(f"step {step!r} has no '{quantity}' probes; recorded steps: "
                         f"{_steps_text(steps)}")
    # layers without a row at that step are skipped; a NaN measured at the first or the last
    # one (a diverged run) makes the ratio NaN (dropping it read the last layer against
    # itself: a ratio of exactly 1, "flows"; a step of NaNs only was "not recorded")
    at = sel[sel["step"] == (steps[0] if step is None else step)]
    row = at.groupby("layer")["value"].agg(lambda v: v.mean(skipna=False)).sort_index()
    if row.empty:
        return None
    return float(row.iloc[0]), float(row.iloc[-1])


def _layer_span_text(layers: Sequence[int], names: dict[int, str], shown: int = 4) -> str:
    """``layers 1-298`` / ``layers 2, 5-7`` (the first ``shown`` runs, then ``...``), or the
    module name of a single named layer; named layers as their modules, neighbours joined
    (``modules [4] to [10]``, the first two runs, then ``... (N in all)``)."""
    if len(layers) == 1:
        return _f.cut_labels([_f.layer_label(layers[0], names)], 28)[0]
    if names:
        # the axis is labelled by module name: a diverged torch run's end panel said "layers
        # 3-6: not finite" beside ticks [0], [2], ..., [12], none of them a 3 or a 6
        runs: list[list[int]] = []
        for v in layers:
            if runs and v == runs[-1][-1] + 1:
                runs[-1].append(v)
            else:
                runs.append([v])
        kept = min(len(runs), 2)
        ends = _f.cut_labels([_f.layer_label(r[i], names) for r in runs[:kept]
                              for i in ((0, -1) if len(r) > 1 else (0,))], 16)
        parts, k = [], 0
        for r in runs[:kept]:
            parts.append(f"{ends[k]} to {ends[k + 1]}" if len(r) > 1 else ends[k])
            k += 2 if len(r) > 1 else 1
        return "modules " + ", ".join(parts) + (
            f", ... ({len(layers)} in all)" if len(runs) > kept else "")
    return "layers " + _f.number_runs(layers, shown)


def _nothing_positive(tables: Sequence[pd.DataFrame], quantity: str) -> str:
    """Why a per-layer figure (a log axis) has no point: ``quantity`` not recorded (no row at a
    layer >= 1 in any of ``tables``), every value NaN/inf, or none above 0."""
    values = [pd.to_numeric(t.loc[(t["quantity"] == quantity) & (t["layer"] >= 1), "value"],
                            errors="coerce").to_numpy(float)
              for t in tables if {"quantity", "layer", "value"} <= set(t.columns)]
    v = np.concatenate(values) if values else np.empty(0)
    if not v.size:
        return f"no '{quantity}' probes recorded"
    finite = v[np.isfinite(v)]
    if not finite.size:
        return f"every '{quantity}' probe is NaN or inf:\nnothing to draw"
    return (f"no positive '{quantity}' probes:\nevery one is 0 (a log axis has no 0)"
            if finite.size == v.size and not finite.any() else
            f"no positive '{quantity}' probes:\neach is 0 or NaN/inf (a log axis has no 0)")


def _steps_text(steps: Any, shown: int = 8) -> str:
    """``0, 10, 20, ..., 990 (100 steps)``: a long list of steps shortened for a message."""
    v = [int(s) for s in steps]
    if len(v) <= shown:
        return ", ".join(map(str, v))
    return f"{', '.join(map(str, v[:shown - 1]))}, ..., {v[-1]} ({len(v)} steps)"


# -- the headline figures ----------------------------------------------------------------------
@_f.quiet_extremes
def gradient_per_layer(table_or_runs: Any, theory: Any = None, *,
                       quantity: str = "grad_pre_std", title: str | None = None) -> Figure:
    """Std of the back-propagated gradient ``dL/ds`` per layer, one line per run (log y), at
    initialization (left) and at the last probed step (right); each run's theory prediction
    dashed in the same colour (scaled to the run's measured top layer: the theory predicts
    ratios between layers, not the loss's scale).

    ``table_or_runs``: a probe table, recorder, RunRecord or Diagnosis, a sequence of them or
    a mapping ``{label: ...}`` (a table with a ``run`` column is split by it). ``theory``: a
    theory frame (``layer, grad_pre_var``), a mapping label -> frame, False for none, or None to
    derive it from each RunRecord's config."""
    return _per_layer(table_or_runs, theory, quantity, "grad_pre_var", scale_to_top=True,
                      ylabel="std of dL/ds (log scale)",
                      title=title or "Back-propagated gradient std per layer")


@_f.quiet_extremes
def activation_per_layer(table_or_runs: Any, theory: Any = None, *,
                         quantity: str = "act_std", title: str | None = None) -> Figure:
    """Std of the activations per layer, one line per run (log y), at initialization and at
    the end, with each run's theory ``sqrt(act_var)`` dashed (unit-variance inputs assumed).
    Arguments as for :func:`gradient_per_layer`."""
    return _per_layer(table_or_runs, theory, quantity, "act_var", scale_to_top=False,
                      ylabel="std of the activations (log scale)",
                      title=title or "Activation std per layer")


def _recorded_after(table: pd.DataFrame, quantity: str, step: Any) -> bool:
    """Whether ``table`` has rows of ``quantity`` (hidden layers) at a step after ``step``."""
    if not {"quantity", "layer", "step"} <= set(table.columns):
        return False
    sel = table.loc[(table["quantity"] == quantity) & (table["layer"] >= 1), "step"]
    return bool(len(sel)) and bool((sel > step).any())


def _fit_huge_log_axis(ax, lo: float, hi: float) -> None:
    """Limits of a log y axis drawing ``lo`` .. ``hi`` (> 0) when its top margin passes 1e300
    (a float64 run's diverging activations): :func:`~depthlab.report.figures.huge_log_limits`
    (matplotlib's margin overflowed to inf and the axis fell back to 1 .. 10, showing none of
    the lines)."""
    if _f.log_margins(lo, hi)[1] > 300:
        _f.huge_log_limits(ax, lo, hi)


def _own_scales(ranges: Sequence[tuple[float, float]], whole: tuple[float, float]) -> bool:
    """Whether panels drawing the positive ``ranges`` (lo, hi) each need a y axis of their own:
    together they span more than 3 decades and some panel fills under a third of that."""
    span = math.log10(whole[1]) - math.log10(whole[0])  # (1e300 / 1e-20 overflows)
    return span > 3 and min(math.log10(h) - math.log10(lo) for lo, h in ranges) < span / 3


DEPTH_RATIO_LOG_X = 8.0
"""Deepest / shallowest run of an overlay beyond which its layer axis is logarithmic: on a
linear axis the shallow run fills 1 / ratio of the panel (2 layers beside 200: 1%)."""


def _depths_differ(wides: Any) -> bool:
    """Whether the overlaid wide tables (``step x layer``) are of runs so different in depth
    (their deepest hidden layer numbers, ``max / min > DEPTH_RATIO_LOG_X``) that a linear
    layer axis squeezes the shallow ones."""
    depths = [float(max(w.columns)) for w in wides if not w.empty and len(w.columns)]
    return len(depths) > 1 and min(depths) >= 1 and max(depths) / min(depths) > DEPTH_RATIO_LOG_X


def _log_layer_ticks(axis: Any, span: tuple[int, int]) -> None:
    """Ticks of a logarithmic layer axis over ``span`` (first, last layer): whole layers at
    1, 2, 5 times the powers of 10 (1, 2, 5, 10, 20, 50, 100, 200), written as plain numbers
    (not 10^2), no minor labels."""
    from matplotlib.ticker import FixedLocator, NullFormatter, StrMethodFormatter

    lo, hi = span
    ticks = [m * 10 ** e for e in range(0, int(math.log10(max(hi, 1))) + 1)
             for m in (1, 2, 5) if lo <= m * 10 ** e <= hi]
    if lo not in ticks:
        ticks.insert(0, lo)
    if hi not in ticks and hi / ticks[-1] > 1.25:  # the deepest layer, unless crowding a tick
        ticks.append(hi)
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(StrMethodFormatter("{x:.0f}"))
    axis.set_minor_formatter(NullFormatter())


def _covered_runs(drawn: Sequence[tuple[str, pd.Series]]) -> dict[str, str]:
    """Of the lines a panel drew (label, values by layer, in drawing order), each one whose
    every layer another line with more layers also drew with the same values (``rtol =
    1e-6``: runs sharing their first layers' weights, at initialization) -> that deeper run's
    label. See :func:`_hidden_runs` for lines of the same layers."""
    found: dict[str, str] = {}
    for label, row in drawn:
        for other, deeper in drawn:
            if other == label or len(deeper) <= len(row) or not row.index.isin(
                    deeper.index).all():
                continue
            if np.allclose(row.to_numpy(float), deeper.loc[row.index].to_numpy(float),
                           rtol=1e-6, atol=0.0):
                found[label] = other
                break
    return found


def _hidden_runs(drawn: Sequence[tuple[str, pd.Series]]) -> dict[str, str]:
    """Of the lines a panel drew (label, values by layer), ordered by their zorder (the last on
    top), each one that a later line of the same layers draws over with the same values
    (``rtol = 1e-6``) -> that later run's label: the runs of a learning-rate sweep of one seed
    start from the same weights, so at initialization the last run's line covered all the
    others (one colour on the panel, every run in the legend)."""
    found: dict[str, str] = {}
    for i, (label, row) in enumerate(drawn):
        for other, later in drawn[i + 1:]:
            if len(later) == len(row) and row.index.equals(later.index) and np.allclose(
                    row.to_numpy(float), later.to_numpy(float), rtol=1e-6, atol=0.0):
                found[label] = other
    return found


def _dollars(text: str) -> str:
    """``text`` with every ``$`` not already escaped written ``\\$``: drawn as itself, not
    as the start or end of a formula."""
    return re.sub(r"(?<!\\)\$", lambda _: "\\$", str(text))


def _per_layer(table_or_runs: Any, theory: Any, quantity: str, theory_col: str, *,
               scale_to_top: bool, ylabel: str, title: str) -> Figure:
    runs = _runs(table_or_runs)
    _check_quantity([t for t, _ in runs.values()], quantity)
    theories = _theories(runs, theory)
    # a "$" in a run's name is drawn as itself (as a module name's): "cost $\frac{1$" was
    # typeset as math in the legend and stopped the figure (ParseSyntaxException), and two
    # names in a panel's title ("run $a: same values as run b$") read as one formula
    # (a "$" already escaped, "\\$" of the report's labels, is left as it is)
    runs = {_dollars(k): v for k, v in runs.items()}
    theories = {_dollars(k): v for k, v in theories.items()}
    wides = {k: _f._quantity(t, quantity) for k, (t, _) in runs.items()}
    every = list(wides)  # a title naming some runs cuts only the start all of them share
    # the rows this figure draws: a run without this quantity (a transformer's or an LSTM's
    # activations) draws no line, and its module names must not label the other runs' layers
    tables = [t[t["quantity"] == quantity] if "quantity" in t.columns else t
              for t, _ in runs.values() if not t.empty]
    tables = [t for t in tables if not t.empty]
    # torch runs: module names (not when a NumPy run, numbered only, is overlaid; a run with
    # its loss rows only draws no layer and does not count)
    layered = [t for t in tables if "layer" in t.columns and bool((t["layer"] >= 1).any())]
    names = (_f.layer_names(*layered) if all("module" in t.columns for t in layered) else {})
    # runs of very different depths (2, 10 and 200 layers) on a linear layer axis: the 2-layer
    # run was one dot and the 10-layer one a smudge of 19 px beside the 200 layers. Then the
    # numbered axis is logarithmic (still in layer numbers), each run spread over its share
    log_x = not names and _depths_differ(wides.values())
    # a run whose later steps are all NaN (diverged: the pivot drops those rows) still has an
    # end: its right panel draws the last finite step and says so (was one panel, "at
    # initialization", with no word about the steps recorded after it)
    has_end = any(not w.empty and (w.index.max() != w.index.min()
                                   or _recorded_after(runs[k][0], quantity, w.index.min()))
                  for k, w in wides.items())
    ncols = 2 if has_end else 1
    # one panel: each legend entry ends in its step, " (step 0)", which the width must hold
    # ("sigmoid + glorot (step 0)", 25 characters at a limit of 24, read "sigmoid + gl…ot")
    longest = max((len(k) + (len(f" (step {w.index.min()})") if ncols == 1 and not w.empty
                             else 0) for k, w in wides.items()), default=10)
    legend_w = float(np.clip(0.6 + 0.065 * max(longest, 24), 2.0, 4.2))
    size = _f.tick_font_size(len(names))  # rotated module names: the margin for this size
    bottom = _f.names_margin(names, size=size) + 0.45 if names else None
    fig, axes = _f._new_figure(5.0 * ncols + legend_w, 3.9 + (bottom or 0.55) - 0.55,
                               ncols=ncols, right=legend_w + 0.1, top=0.7, bottom=bottom)
    all_vals: list[float] = []
    panel_vals: list[list[float]] = [[] for _ in axes]  # what each panel draws (its y range)
    all_layers: set[int] = set()
    stale: list[tuple[str, Any, str]] = []  # runs whose last recorded step has nothing to draw
    # per panel, the layers recorded as exactly 0 (a layer below a dead one): a log axis
    # cannot draw them, so they keep their place on the axis and the title names them
    # (each run's own: a union named a dead 4-layer run's layer 4 as zero in a 3-layer run
    # overlaid with it, and that run's drawn layer 1 too)
    zeros: list[dict[str, list[int]]] = [{} for _ in axes]
    # per panel, the runs drawn with some layers not finite (a diverged run's activations
    # past 1e32 at its last finite step): those layers vanished from the line unexplained
    gaps: list[list[tuple[str, list[int]]]] = [[] for _ in axes]
    # per panel, the runs with layers that have no row at that step (recorded at others)
    absent: list[list[tuple[str, list[int]]]] = [[] for _ in axes]
    # the runs with fewer layers drawn over those with more: runs of one seed and width share
    # their first layers' weights, so at initialization the 2-, 10- and 50-layer runs'
    # activation std equals the 200-layer run's there, and the deepest, drawn last, hid them
    # all (one line on the panel, four names in the legend). Measured lines keep their place
    # under the theory's (zorder 2..2.9, theory 3..3.9, redrawn markers 4..4.9)
    by_size = sorted((k for k, w in wides.items() if not w.empty),
                     key=lambda k: -len(wides[k].columns))
    lift = {k: 0.9 * r / max(1, len(by_size) - 1) for r, k in enumerate(by_size)}
    drawn_rows: list[list[tuple[str, pd.Series]]] = [[] for _ in axes]  # what each run drew
    for i, (label, wide) in enumerate(wides.items()):
        color, marker, linestyle = run_style(i)
        if wide.empty:
            continue
        measured = None  # the points of the first panel
        first, last = wide.index.min(), wide.index.max()
        drawable = wide.index[((wide > 0) & (wide < math.inf)).any(axis=1)]
        if len(drawable) and drawable.max() > first:  # the last step a log axis can show
            last = drawable.max()
        recorded = runs[label][0]
        if ncols == 2 and {"quantity", "layer", "step"} <= set(recorded.columns):
            recorded = recorded.loc[(recorded["quantity"] == quantity)
                                    & (recorded["layer"] >= 1), "step"]
            if len(recorded) and recorded.max() > last:  # a diverged run's NaN steps
                # or zeros (every unit dead after lr 10: finite, but no place on a log
                # axis), which "the last finite" misnamed
                after = wide.loc[wide.index > last, wide.notna().any()]
                zero = (set(recorded[recorded > last]) <= set(after.index)
                        and bool((after == 0).all(axis=None)))
                stale.append((label, last, "the last above 0" if zero else "the last finite"))
        table = runs[label][0]
        for k, (ax, step) in enumerate(zip(axes, (first, last))):
            full = pd.to_numeric(wide.loc[step], errors="coerce")
            finite = np.isfinite(full.to_numpy(float))
            rows = None  # the layers with a row at this step, where the table says
            if {"quantity", "layer", "step"} <= set(table.columns):
                # a layer with no row at this step (a branch of the forward that did not
                # run then: the table's pivot reads NaN) was not measured, not NaN/inf
                at = table[(table["quantity"] == quantity) & (table["step"] == step)]
                rows = {int(v) for v in at["layer"]}
                unrecorded = [int(v) for v in full.index if int(v) not in rows]
                finite |= np.asarray(full.index.isin(unrecorded))  # not a NaN/inf
                if unrecorded:
                    absent[k].append((label, unrecorded))
            if finite.any() and not finite.all():  # some layers drawn, the others vanished
                gaps[k].append((label, [int(v) for v in full.index[~finite]]))
            row = wide.loc[step].dropna()
            zero = [int(v) for v in row.index[row == 0]]
            if zero:
                zeros[k][label] = zero
            all_layers.update(zero)
            row = row[(row > 0) & (row < math.inf)]  # what a log axis can show
            if row.empty:
                continue
            x = row.index.to_numpy()
            all_layers.update(int(v) for v in x)
            # the line breaks at a measured layer the log axis cannot show (0, NaN/inf):
            # a ReLU run's dead layers 2-3 between 5e6 and 5 were a straight line across
            # them, as if 5e4 and 5e2 were measured there; a layer with no row at this
            # step (not measured, such as a layer without this quantity) is not a break
            line = full.where((full > 0) & (full < math.inf))
            line = line[line.notna() | (np.asarray(full.index.isin(list(rows))) if rows is not None
                                        else full.notna().to_numpy())]
            line = line.loc[x.min():x.max()]
            # one line per stretch of drawable layers (no NaN in a line's data: the first
            # stretch carries the run's label, the others none)
            ok = line.notna().to_numpy()
            starts = np.flatnonzero(ok & ~np.r_[False, ok[:-1]])
            ends = np.flatnonzero(ok & ~np.r_[ok[1:], False]) + 1
            pieces = [line.iloc[a:b] for a, b in zip(starts, ends)]
            drawn = None
            for piece in pieces:
                drawn_piece = ax.plot(
                    piece.index.to_numpy(), piece.to_numpy(float), marker=marker,
                    linestyle=linestyle, color=color, linewidth=1.8, markersize=4,
                    zorder=2 + lift[label],
                    label=("_nolegend_" if drawn is not None else
                           f"{label} (step {step})" if ax is axes[-1] or ncols == 1
                           else label))[0]
                drawn = drawn if drawn is not None else drawn_piece
            drawn_rows[k].append((label, row))
            if k == 0:
                measured = row  # every drawn point, over all stretches of the line
            all_vals.extend(row.to_numpy(float))
            panel_vals[k].extend(row.to_numpy(float))
        th = theories.get(label)
        init = wide.loc[first].dropna()
        init = init[init > 0]
        if th is None or theory_col not in getattr(th, "columns", ()) or init.empty:
            continue
        t = th.set_index("layer")[theory_col].astype(float).clip(lower=0)
        common = [la for la in init.index if la in t.index]
        if not common:
            continue
        pred = np.sqrt(t.loc[common])
        if scale_to_top:
            ref = pred.loc[max(common)]
            if not (ref > 0 and np.isfinite(ref)):
                continue
            pred = pred * (init.loc[max(common)] / ref)
        pred = pred[(pred > 0) & np.isfinite(pred)]
        if pred.empty:
            continue
        # on top of the measurement with a white halo: where theory and measurement agree
        # (a He-initialized ReLU net) the dashes of the run's colour vanished into its line
        # one hidden layer: a dashed line of one point is not drawn (the legend's "dashed:
        # theory" had nothing on the plot); a ring around the measured point instead
        one = {"marker": "o", "markersize": 10, "fillstyle": "none"} if len(pred) == 1 else {}
        if not one and i >= len(RUN_COLORS):  # a colour's second run: its marker, hollow
            one = {"marker": marker, "markersize": 5, "fillstyle": "none"}
        axes[0].plot(pred.index.to_numpy(), pred.to_numpy(float), "--", color=color,
                     linewidth=1.3, label=f"{label}: theory", zorder=3 + lift[label],
                     path_effects=[Stroke(linewidth=3.3, foreground="white"), Normal()], **one)
        # the measured points again, over the theory and its halo: where the two agree the
        # halo bit each marker it crossed into a "C". Not when they are dense (beyond
        # MAX_REDRAWN_POINTS on a panel): their markers touch and would hide every dash
        if measured is not None and len(measured) <= MAX_REDRAWN_POINTS:
            axes[0].plot(measured.index.to_numpy(), measured.to_numpy(float), linestyle="none",
                         marker=marker, markersize=4, color=color, zorder=4 + lift[label])
        all_vals.extend(pred.to_numpy(float))
        panel_vals[0].extend(pred.to_numpy(float))
    if not all_vals:
        for ax in axes:
            _f._empty(ax, _nothing_positive([t for t, _ in runs.values()], quantity))
        fig.suptitle(title, fontsize=11)
        return fig
    # a run with rows of the quantity and nothing a log axis can show at any step, not named
    # by the zero notes (a torch run whose weights were NaN from step 0): no line, no legend
    # entry, and it was left out without a word
    named = {label for k in range(len(axes)) for label in zeros[k]}
    drew = {label for k in range(len(axes)) for label, _ in drawn_rows[k]}
    undrawn = [label for label, (t, _) in runs.items() if label not in drew | named
               and _recorded_after(t, quantity, -math.inf)]
    lo, hi = min(all_vals), max(all_vals)
    # one y axis for both panels, so the eye compares the start with the end; but not when
    # one panel's range is a sliver of the other's: a diverged run's activations of 1e32 at
    # its last finite step drew every run's profile at initialization (0.3 .. 0.7) as one
    # flat line at the bottom of a 33-decade axis. Then each panel has its own scale, said
    ranges = [(min(v), max(v)) for v in panel_vals if v]
    own = ncols == 2 and len(ranges) == 2 and _own_scales(ranges, (lo, hi))
    if ncols == 2 and not own:
        axes[1].sharey(axes[0])
        axes[1].yaxis.set_tick_params(which="both", labelleft=False)
        axes[1].yaxis.offsetText.set_visible(False)
    # the first panel draws each run's first step with values: when no run has values at its
    # first recorded step (an fp16 run's overflowed gradients), that is not initialization
    late = [int(w.index.min()) for k, w in wides.items() if not w.empty
            and "step" in runs[k][0] and w.index.min() > runs[k][0]["step"].min()]
    start = "at initialization"
    if late and len(late) == sum(not w.empty for w in wides.values()):
        start = f"at step {late[0]}, the first with values" if len(late) == 1 else \
            "at the first step with values"
    end = "at the end of training"
    if len(stale) == 1:  # the right panel draws the last step with values: say which
        # the run's name on a line of its own when both do not fit on one (cut to 24
        # characters, "activation=r…th=8, lr=50" named neither the activation nor the depth)
        who = _f.cut_labels([stale[0][0]], 44, every)[0]
        when_ = f"step {stale[0][1]}, {stale[0][2]}"
        end += f"\n{who}: {when_}" if len(who) + len(when_) <= 46 else f"\n{who}:\n{when_}"
    elif len(stale) == 2:  # each named with its step (the count of two read "2 runs: their
        # last step with values above 0" beside a diverged run's last finite step)
        for who, (_, step_, why) in zip(_f.cut_labels([s[0] for s in stale], 24, every),
                                        stale):
            end += f"\n{who}: step {step_}, {why}"
    elif stale:
        whys = {why for *_, why in stale}
        end += (f"\n{len(stale)} runs: their last step with finite values"
                if whys == {"the last finite"} else
                f"\n{len(stale)} runs: their last step with values above 0"
                if whys == {"the last above 0"} else
                f"\n{len(stale)} runs: their last step with values\n(the last finite or above 0)")
    span = (min(all_layers), max(all_layers)) if all_layers else None
    for k, (ax, when) in enumerate(zip(axes, (start, end))):
        # the runs with the same zero layers share a line (said once)
        spans: dict[str, list[str]] = {}
        for label, zero in zeros[k].items():
            spans.setdefault(_layer_span_text(sorted(zero), names), []).append(label)
        if len(spans) > 3:
            when += f"\n{len(zeros[k])} runs: some layers zero (a log axis has no 0)"
            spans = {}
        n_runs = sum(not w.empty for w in wides.values())
        for g, (span_text, zero_runs) in enumerate(spans.items()):
            # several runs: named (was "3 runs: ", which left the reader to guess which)
            # one run: named in full up to 44 characters, on a line of its own when it and its
            # layers do not fit on one (cut to 20, "activation…=2, lr=50" named neither the
            # activation nor the depth)
            # two or three runs share the line's 44 characters (two cut to 14 each read
            # "torch-d…-lr1e3, torch-n…-lr1e9" though "torch-diverges-lr1e3" fits)
            n_zero = len(zero_runs)
            cut = _f.cut_labels(zero_runs, 44 if n_zero == 1 else
                                max(14, (44 - 2 * (n_zero - 1)) // n_zero), every)
            one = (f"{cut[0]}:\n" if len(cut[0]) + len(span_text) > 36 else f"{cut[0]}: ")
            whose = ("" if n_runs == 1 else one if len(cut) == 1 else
                     f"all {len(cut)} runs: " if len(cut) == n_runs else
                     f"{', '.join(cut)}:\n" if len(cut) <= 3 else  # a line of their own:
                     f"{len(cut)} runs ({', '.join(cut[:2])}, …):\n")  # wider than a panel
            why = " (a log axis has no 0)" if g == len(spans) - 1 else ""
            when += f"\n{whose}{span_text}: zero{why}"
        covered = _covered_runs(drawn_rows[k])
        hidden = {a: b for a, b in _hidden_runs(sorted(drawn_rows[k], key=lambda t: lift[t[0]])
                                                ).items() if a not in covered}
        if len(covered) == 1:
            (short, deep), = covered.items()
            a, b = _f.cut_labels([short, deep], 20, every)
            line = f"{a}: same values as {b} (drawn on top)"  # a panel holds ~46 characters
            when += f"\n{line}" if len(line) <= 46 else \
                f"\n{a}: same values as\n{b} (drawn on top)"
        elif covered:
            when += f"\n{len(covered)} runs: same values as a deeper run (drawn on top)"
        if len(hidden) == 1:
            (under, over), = hidden.items()
            a, b = _f.cut_labels([under, over], 20, every)
            line = f"{a}: same values as {b} (under it)"
            when += f"\n{line}" if len(line) <= 46 else f"\n{a}: same values as\n{b} (under it)"
        elif hidden:
            # the last of them is drawn: name it (the reader sees its colour)
            top = [b for b in hidden.values() if b not in hidden]
            shown_as = (_f.cut_labels([top[0]], 20, every)[0] if len(set(top)) == 1
                        else "another run")
            when += f"\n{len(hidden)} runs: same values as {shown_as} (under it)"
        if undrawn:
            cut = _f.cut_labels(undrawn, 44 if len(undrawn) == 1 else 20, every)
            when += (f"\n{cut[0]}: not finite at any step (not drawn)" if len(cut) == 1 else
                     f"\nnot finite at any step (not drawn): {len(cut)} runs,\n"
                     + ", ".join(cut[:2]) + (", …" if len(cut) > 2 else ""))
        for runs, why in ((gaps[k], "not finite (NaN/inf)"),
                          (absent[k], "not recorded at this step")):
            if len(runs) == 1:
                who = _f.cut_labels([runs[0][0]], 44, every)[0] + ":" if len(wides) > 1 else ""
                what = f"{_layer_span_text(runs[0][1], names)}: {why}"
                when += f"\n{who}\n{what}" if len(who) + len(what) > 58 else (
                    f"\n{who} {what}".replace("\n ", "\n"))
            elif runs:
                when += f"\n{len(runs)} runs: some layers {why}"
        if span is not None and span[1] > span[0]:  # every panel the same layers' range
            if log_x and span[0] > 0:
                pad = (span[1] / span[0]) ** 0.04  # 4% of the axis, as the linear one
                ax.set_xscale("log")
                ax.set_xlim(span[0] / pad, span[1] * pad)
            else:
                pad = 0.04 * (span[1] - span[0])
                ax.set_xlim(span[0] - pad, span[1] + pad)
        ax.set_yscale("log")
        _f._tidy_log_axis(ax.yaxis, *(ranges[k] if own else (lo, hi)))
        _fit_huge_log_axis(ax, *(ranges[k] if own else (lo, hi)))
        ax.set_xlabel("module (nearest the input on the left)" if names else
                      "layer (log scale; 1 = first hidden, nearest the input)"
                      if ax.get_xscale() == "log" else
                      "layer (1 = first hidden, nearest the input)")
        ax.set_title(when)
        if ax.get_xscale() == "log":
            _log_layer_ticks(ax.xaxis, span)
        else:
            _f.layer_ticks(ax, "x", sorted(all_layers), names, size=size)
    axes[0].set_ylabel(ylabel)
    if own:
        axes[1].set_ylabel("own scale (log)")
    fig.suptitle(title, fontsize=11)
    _room_for_titles(fig, axes, 0.7)
    handles, labels = [], []
    theory_shown, rings = False, True
    for h, lab in zip(*axes[0].get_legend_handles_labels()):
        if lab.endswith(": theory"):
            theory_shown = True
            rings = rings and len(h.get_xdata()) == 1
        else:
            handles.append(h)
            labels.append(lab)
    if theory_shown:
        from matplotlib.lines import Line2D

        if rings:  # every theory is one layer's point
            handles.append(Line2D([], [], linestyle="none", marker="o", fillstyle="none",
                                  color="#777777"))
            labels.append("ring: theory (run's colour)")
        else:
            handles.append(Line2D([], [], linestyle="--", color="#777777"))
            labels.append("dashed: theory (run's colour)")  # and its marker, hollow, from
            # the 8th run on (a longer label ran past the figure's right edge)
    # long run names cut to the legend's width (~0.065 in a character); round, not int:
    # (0.6 + 0.065 * 28 - 0.6) / 0.065 is 27.999..., which cut every 28-character name
    if handles:
        labels[:len(labels) - theory_shown] = _f.cut_labels(
            labels[:len(labels) - theory_shown], max(24, round((legend_w - 0.6) / 0.065)))
        # level with the panels' top: higher, a wide panel title (a run's name and its zero
        # layers) ran under it
        fig.legend(handles, labels, loc="upper left", fontsize=8, frameon=False,
                   bbox_to_anchor=(1 - (legend_w + 0.05) / fig.get_figwidth(),
                                   fig.subplotpars.top))
    return fig


def _room_for_titles(fig: Figure, axes: Sequence[Any], least_in: float) -> None:
    """Make the top margin (at least ``least_in`` inches) hold the figure's title above every
    panel's title as drawn: its measured height, the panel title's pad and, over an axis
    showing one, the y offset text (``×10^-3``) that lifts the panel's title by its height.
    The figure grows by what is added, the panels keep their size. Counting the title's lines
    (0.22 in each) missed the offset text's mathtext height: a three-line panel title (a run
    named in non-Latin script "same values as" another) overlapped the figure's title."""
    from matplotlib.ticker import ScalarFormatter

    renderer = fig.canvas.get_renderer()
    dpi = fig.dpi
    sup = getattr(fig, "_suptitle", None)
    sup_in = (sup.get_window_extent(renderer).height / dpi if sup is not None
              and sup.get_text() else 0.0)
    need = least_in
    for ax in axes:
        title_in = (ax.title.get_window_extent(renderer).height / dpi if ax.get_title()
                    else 0.0)
        offset_in = 0.0
        fmt = ax.yaxis.get_major_formatter()
        if isinstance(fmt, ScalarFormatter):  # its offset is set from the ticks' places
            fmt.set_locs(ax.yaxis.get_majorticklocs())
        if ax.yaxis.offsetText.get_visible() and fmt.get_offset():
            text = ax.yaxis.offsetText
            text.set_text(fmt.get_offset())
            offset_in = text.get_window_extent(renderer).height / dpi + 0.03
        # title pad 6 pt; figure title's own margin to the top, 0.02 of the height, and a gap
        need = max(need, title_in + offset_in + 6 / 72 + sup_in + 0.12
                   + 0.02 * fig.get_figheight())
    height = fig.get_figheight()
    top_in = (1 - fig.subplotpars.top) * height
    if need > top_in + 1e-6:
        below = fig.subplotpars.bottom * height
        height += need - top_in
        fig.set_figheight(height)
        fig.subplots_adjust(top=1 - need / height, bottom=below / height)


# -- one-run figures ---------------------------------------------------------------------------
@_f.quiet_extremes
def training_curves(history: Any, epochs: pd.DataFrame | None = None,
                    evals: pd.DataFrame | None = None, title: str = "") -> Figure:
    """Loss per step (raw and smoothed) and accuracy per epoch. ``history``: a
    :class:`~depthlab.History`, a RunRecord (``steps/epochs/evals`` frames), a
    :class:`depthlab.torch.Watch` (its ``losses()``: every step's loss) or the per-step
    DataFrame (``step, loss``) with optional ``epochs`` and ``evals`` frames. A History or
    RunRecord that diverged after its last drawn loss is titled so, as the report titles it
    (``diverged at step N (loss not finite): not drawn``), unless ``title`` is given."""
    if callable(getattr(history, "losses", None)) and not isinstance(history, pd.DataFrame):
        steps = history.losses()
        if not isinstance(steps, pd.DataFrame):
            raise TypeError(f"{type(history).__name__}.losses() returned "
                            f"{type(steps).__name__}, expected a DataFrame of (step, loss)")
        _require_columns(steps, ("step", "loss"), "a per-step table")
    elif hasattr(history, "steps_frame"):
        steps, epochs, evals = (history.steps_frame(), history.epochs_frame(),
                                history.evals_frame())
    elif isinstance(getattr(history, "steps", None), pd.DataFrame):
        steps, epochs, evals = history.steps, history.epochs, history.evals
    elif isinstance(history, pd.DataFrame) or history is None:
        if history is not None:
            _require_columns(history, ("step", "loss"), "a per-step table")
        steps = history
    else:
        raise TypeError(f"expected a History, a RunRecord, a Watch or a DataFrame of (step, "
                        f"loss); got {type(history).__name__}")
    div = None if isinstance(history, pd.DataFrame) else getattr(history, "divergence", None)
    if not title and div is not None:  # as the report titles it: a diverged History or
        # RunRecord drew its finite steps and said nothing of the divergence
        title = _f.divergence_title(div, steps)
    return _f.training_curves(steps, epochs, evals, title=title)


@_f.quiet_extremes
def activation_bands(table: Any, prefix: str = "act", max_steps: int = 12) -> Figure:
    """Mean (line) ± one standard deviation (shaded band) of each shown layer's activations
    over training (Glorot & Bengio 2010, Fig. 2), at most ``max_steps`` evenly spaced probed
    steps; the legend sits outside the axes."""
    _positive_int(max_steps, "max_steps")
    probes = probe_table(table)
    if prefix not in ("act", "pre"):  # prefix="x": an empty figure, "nothing recorded"
        raise ValueError(f"prefix={prefix!r} is not accepted; accepted: 'act' (activations) "
                         "or 'pre' (pre-activations)")
    mean, std = _f._quantity(probes, f"{prefix}_mean"), _f._quantity(probes, f"{prefix}_std")
    fig, (ax,) = _f._new_figure(7.6, 3.8, right=1.75, top=0.6)
    if mean.empty:
        _f._empty(ax, _f.nothing_recorded(probes, f"{prefix}_mean"), "Mean ± std of the "
                  + ("activations" if prefix == "act" else "pre-activations"))
        return fig
    steps = mean.index.to_numpy()
    keep = np.unique(np.round(np.linspace(0, len(steps) - 1,
                                          min(max_steps, len(steps)))).astype(int))
    layers = list(mean.columns)
    shown = _f._pick_layers(layers, HIST_MAX_LAYERS)
    colors = _f._layer_colors(shown)
    names = _f.layer_names(probes)
    scales = _band_scales(mean, std, shown, keep)
    if names or scales:  # a wider legend for the module names (and the scales): their width
        # at the legend's 8 pt plus the line sample and pads (0.062 in a character + 0.3 cut
        # a 40-character name)
        tail = 14 if scales else 0  # " (s = 7.1e+10)"
        extra = max(_f.names_margin(names, shown, size=8) if names else 0.0,
                    max(len(_f.layer_label(la, names)) for la in shown) * 0.062) \
            + tail * 0.062 + 0.45 - 1.75
        if extra > 0:
            fig.set_figwidth(fig.get_figwidth() + extra)
            fig.subplots_adjust(left=0.85 / fig.get_figwidth(),
                                right=1 - (1.75 + extra) / fig.get_figwidth())
    x = steps[keep]
    for layer in shown:
        s = scales.get(layer, 1.0)
        m = mean[layer].to_numpy(float)[keep] / s
        label = _f.layer_label(layer, names)
        ax.plot(x, m, "o-" if len(x) < 4 else "-", color=colors[layer], linewidth=1.5,
                markersize=3.5, label=f"{label} (s = {s:.2g})" if scales else label)
        if not std.empty and layer in std:
            sd = std[layer].reindex(mean.index).to_numpy(float)[keep] / s
            if len(x) == 1:  # one probed step: an error bar (a band over one x is invisible)
                ax.errorbar(x, m, yerr=sd, color=colors[layer], capsize=4, linewidth=1.2)
                continue
            # an overflowed step (inf - inf, 1e308 + 1e308) is no point of the band: not
            # drawn, and the title says so (was a RuntimeWarning leaked to the caller)
            with np.errstate(invalid="ignore", over="ignore"):
                low, high = m - sd, m + sd
            ax.fill_between(x, low, high, color=colors[layer], alpha=0.1, linewidth=0)
            for edge in (low, high):  # the band's edges, so overlapping bands stay legible
                ax.plot(x, edge, color=colors[layer], linewidth=0.8, alpha=0.8)
    what = "activation" if prefix == "act" else "pre-activation"
    _f.step_ticks(ax, x)
    ax.set_xlabel("training step")
    ylabel = f"{what} / s (each layer's own scale)" if scales else f"{what} value"
    ax.set_ylabel(ylabel)
    # a diverged run's values grow by decades (0.6 at step 0, 3.5e32 at step 4): on a linear
    # axis every earlier step lay flat on 0; symlog keeps the first step's range linear
    _f.symlog_if_runaway(ax, ylabel)
    # a layer whose values overflowed (a diverged run's last steps) has no point there: its
    # line stopped at step 0 without a word (the heatmap and the update ratio say where)
    sel = probes[(probes["quantity"] == f"{prefix}_mean") & probes["layer"].isin(shown)
                 & probes["step"].isin(x)]
    bad = ~np.isfinite(pd.to_numeric(sel["value"], errors="coerce"))
    note = ""
    if bad.any():
        # each layer with its own steps, module names included (a torch run's title said "not
        # finite at step 5" alone, under two modules' lines drawn at step 5)
        note = f"\nnot drawn: not finite (NaN/inf) {_f._bad_layers_text(sel[bad], sel, names)}"
    if scales:
        spread = max(scales.values()) / min(scales.values())
        note += (f"\nscales {spread:.2g} times apart: each layer divided by its s = "
                 "max(|mean| + std)")
    title = f"Mean ± std of the {what}s\n{_layers_text(shown, layers, bool(names))}{note}"
    ax.set_title(title, fontsize=9.5)
    if title.count("\n") > 2:  # the top margin holds three lines: a fourth was cut off
        fig.subplots_adjust(top=1 - (0.6 + 0.17 * (title.count("\n") - 2)) / fig.get_figheight())
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    _trim_legend_margin(fig, ax)
    return fig


def _trim_legend_margin(fig: Figure, ax: Any, pad: float = 0.2) -> None:
    """Narrow ``fig`` to the legend right of ``ax``: the right margin becomes the legend's
    measured width plus ``pad`` inches, the axes keep their size (never wider; the title,
    centred over the axes, keeps room). The bands' fixed 1.75 in margin held a 0.9 in legend
    ("layer 10"), so the report scaled the 7.6 in figure to 74% of its size in a half column,
    its text smaller than the figures beside it."""
    legend = ax.get_legend()
    if legend is None:
        return
    renderer = fig.canvas.get_renderer()
    dpi = fig.dpi
    width = fig.get_figwidth()
    box = ax.get_position()
    left_in, right_in = box.x0 * width, (1 - box.x1) * width
    legend_in = legend.get_window_extent(renderer).x1 / dpi - box.x1 * width
    title_in = ax.title.get_window_extent(renderer).width / dpi
    axes_in = box.width * width
    need = max(legend_in + pad, (title_in - axes_in) / 2 + pad, 0.3)
    if right_in - need > 0.1:
        new = width - (right_in - need)
        fig.set_figwidth(new)
        fig.subplots_adjust(left=left_in / new, right=1 - need / new)


BAND_SCALE_SPREAD = 1e3
"""Shown layers' activation scales further apart than this (three decades, the playground's
rule) are each drawn divided by their own scale in :func:`activation_bands`."""


def _band_scales(mean: pd.DataFrame, std: pd.DataFrame, shown: Sequence[int],
                 keep: np.ndarray) -> dict[int, float]:
    """Each shown layer's scale ``s = max over the drawn steps of (|mean| + std)`` (finite
    values only) when the largest is more than :data:`BAND_SCALE_SPREAD` times the smallest
    nonzero one, else ``{}`` (one common axis). An exploding ReLU net with N(0, 1) weights,
    20 layers: 0.28 in layer 1, 4.6e10 in layer 20, where one linear axis drew layers 1-15 as
    a flat line on 0. A layer of scale 0 (or none finite) is drawn as it is (s = 1)."""
    scales: dict[int, float] = {}
    for layer in shown:
        m = np.abs(mean[layer].to_numpy(float)[keep])
        sd = (std[layer].reindex(mean.index).to_numpy(float)[keep]
              if not std.empty and layer in std else np.zeros_like(m))
        sd = np.nan_to_num(sd, nan=0.0, posinf=np.nan, neginf=np.nan)
        with np.errstate(invalid="ignore", over="ignore"):
            top = m + sd
        # |mean| + std past float64's largest (1.7e308 + 1.7e308: inf) where both are finite:
        # the larger of the two, within a factor 2 (dropping the step left s = 2e300 from an
        # earlier one, and that layer's line at 8.5e7 s, far above the axis)
        top = np.where(np.isinf(top) & np.isfinite(m) & np.isfinite(sd), np.fmax(m, sd), top)
        top = top[np.isfinite(top)]
        if len(top) and top.max() > 0:
            scales[int(layer)] = float(top.max())
    if len(scales) < 2 or max(scales.values()) <= BAND_SCALE_SPREAD * min(scales.values()):
        return {}
    return {la: scales.get(int(la), 1.0) for la in shown}


def _layers_text(shown: Sequence[int], total: Sequence[int], named: bool = False) -> str:
    """Which of the ``total`` layers a figure draws. Numbers only when the layers with values
    are 1..N: a torch run's activations start after its stem and stop before its head
    (layers 2..9 of 10), which read 'layers 2, 4, 6, 7, 9 of 8' (the legend names them).
    ``named``: the legend or panels name modules, not numbers; a count then (a 9-layer
    ``nn.Sequential``'s 'layers 1, 3, 5, 7, 9 of 9' above modules '[0], [4], [8]' read as
    other layers: module [4] is layer 3)."""
    numbered = list(total) == list(range(1, len(total) + 1))
    if len(total) == 1:  # "all 1 layers" under a one-hidden-layer network's figures
        if named:  # "layer 1, the only one" above a legend naming it "[0]"
            return "the only layer"
        return f"layer {total[0]}, the only one" if numbered else "the one layer with values"
    if len(shown) == len(total):
        return f"all {len(total)} layers" if numbered else \
            f"the {len(total)} layers with values"
    if not numbered:
        return (f"{len(shown)} of the {len(total)} layers with values: first, last and evenly "
                "spaced")
    if named:
        return f"{len(shown)} of {len(total)} layers: first, last and evenly spaced"
    return (f"layers {', '.join(map(str, shown))} of {len(total)}: first, last and evenly "
            "spaced")


def _nonfinite(hs: pd.DataFrame) -> tuple[int, int, int] | None:
    """``(n_neginf, n_posinf, n_nan)`` of one histogram's rows, or None where the table does
    not have them (a table recorded before they were kept, or NaN: an older store's run)."""
    from .probes.histograms import NONFINITE_COLUMNS

    if hs.empty or not all(c in hs.columns for c in NONFINITE_COLUMNS):
        return None
    row = hs[list(NONFINITE_COLUMNS)].iloc[0].to_numpy(float)
    if not np.isfinite(row).all():
        return None
    neg, pos, nan = (int(v) for v in row)
    return neg, pos, nan


def _point_masses(ax: Any, left: np.ndarray, right: np.ndarray, count: np.ndarray,
                  full: np.ndarray, color: Any) -> str:
    """Draw a histogram holding bins of no width (``bin_left == bin_right``) as stems: each
    occupied bin's share of the finite entries, ``count / sum(count)``, at its value (a bin
    with a width, beside them, at its centre). Returns the panel title's words: ``all 300
    entries = 0.5`` for one value, else the values' range."""
    total = count.sum()
    at = np.where(right[full] > left[full], (left[full] + right[full]) / 2, left[full])
    where, slot = np.unique(at, return_inverse=True)  # bins of one value: one stem
    share = np.bincount(slot.ravel(), weights=count[full]) / total
    ax.vlines(where, 0, share, color=color, linewidth=2.0)
    ax.plot(where, share, "o", color=color, markersize=4)
    lo, hi = float(where.min()), float(where.max())
    pad = (hi - lo) * 0.1 if hi > lo else max(abs(lo) * 0.1, 1.0)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(0, 1.05)
    if len(where) == 1:
        return f"all {int(total):,} entries = {lo:.4g}"
    return f"{len(where)} values in [{lo:.3g}, {hi:.3g}] (bins of no width)"


def _nonfinite_text(bad: tuple[int, int, int], finite: int) -> str:
    """``"3,716 of 9,600 entries +inf/-inf, 5,884 NaN"``: a histogram's entries that are in no
    bin (``finite`` entries are in its bins)."""
    neg, pos, nan = bad
    total = finite + neg + pos + nan
    parts = []
    if neg + pos:
        sign = "+inf/-inf" if neg and pos else "+inf" if pos else "-inf"
        parts.append(f"{neg + pos:,} of {total:,} entries {sign}")
    if nan:
        parts.append(f"{nan:,} NaN" if parts else f"{nan:,} of {total:,} entries NaN")
    return ", ".join(parts)


def _hist_entries(h: pd.DataFrame, kind: str) -> dict[tuple[int, int], int]:
    """The number of entries each ``(step, layer)`` histogram of ``kind`` was drawn from, NaN
    included (their counts leave NaN out): the largest count of that layer's ``act``, ``pre``
    and ``grad`` histograms at that step (one tensor shape), for ``weight`` the largest over
    the steps."""
    if h.empty:
        return {}
    totals = h.groupby(["step", "layer", "kind"])["count"].sum()
    if kind == "weight":
        w = totals.xs("weight", level="kind") if "weight" in set(h["kind"]) else totals.iloc[:0]
        most = w.groupby(level="layer").max()
        return {(int(s), int(la)): int(most[la]) for s, la in w.index}
    same = totals[totals.index.get_level_values("kind").isin(("act", "pre", "grad"))]
    return {(int(s), int(la)): int(v)
            for (s, la), v in same.groupby(level=["step", "layer"]).max().items()}


@_f.quiet_extremes
def activation_histograms(recorder: Any, kind: str = "act", steps: Sequence[int] | None = None,
                          max_layers: int = HIST_MAX_LAYERS) -> Figure:
    """Density histograms of one quantity (``act``, ``pre``, ``grad`` = dL/ds or ``weight``):
    one row per shown layer, one column per step (default: the first and last recorded), each
    panel on its own bins (recorded from that layer's data at that step; the panel title gives
    the range). ``recorder``: a ProbeRecorder, a RunRecord or its histogram table."""
    _positive_int(max_layers, "max_layers")
    from .probes import HISTOGRAM_KINDS

    if kind not in HISTOGRAM_KINDS:
        raise ValueError(f"kind must be one of {', '.join(HISTOGRAM_KINDS)}; got {kind!r}")
    if steps is not None and (isinstance(steps, (str, bytes))
                              or not isinstance(steps, (Sequence, np.ndarray)) or not len(steps)):
        raise ValueError(f"steps must be a non-empty list of probed steps, got {steps!r}")
    h = _hist_table(recorder)
    entries = _hist_entries(h, kind)
    h = h[h["kind"] == kind] if not h.empty else h
    what = {"act": "activation", "pre": "pre-activation s",
            "grad": "back-propagated gradient dL/ds", "weight": "weight"}.get(kind, kind)
    if h.empty:
        fig, (ax,) = _f._new_figure()
        _f._empty(ax, f"no '{kind}' histograms recorded", f"Histograms of the {what}")
        return fig
    all_steps = sorted(int(s) for s in h["step"].unique())
    if steps is None:
        steps = [all_steps[0], all_steps[-1]] if len(all_steps) > 1 else all_steps
    missing = [s for s in steps if s not in all_steps]
    if missing:
        raise ValueError(f"no '{kind}' histograms at steps {missing}; recorded: {all_steps}")
    layers = sorted(int(v) for v in h["layer"].unique())
    shown = _f._pick_layers(layers, max_layers)
    names = _f.layer_names(h)
    w, row_h = 3.9 * len(steps) + 0.6, 1.55
    fig = _f.NotebookFigure(figsize=(w, 0.9 + row_h * len(shown)), dpi=_f.DPI)
    _f.Canvas(fig)
    axes = fig.subplots(len(shown), len(steps), squeeze=False)
    colors = _f._layer_colors(shown)
    for r, layer in enumerate(shown):
        for c, step in enumerate(steps):
            ax = axes[r][c]
            _f._style(ax)
            hs = h[(h["layer"] == layer) & (h["step"] == step)].sort_values("bin_left")
            left, right = hs["bin_left"].to_numpy(float), hs["bin_right"].to_numpy(float)
            count = hs["count"].to_numpy(float)
            total = count.sum()
            bad = _nonfinite(hs)
            if total <= 0:
                title = f"{_f.layer_label(layer, names)}, step {step}: no finite entry"
                _f._empty(ax, f"no finite entry: {_nonfinite_text(bad, 0)}" if bad is not None
                          and sum(bad) else "no finite values")
                ax.set_title(title, fontsize=8.5)
                continue
            full = np.flatnonzero(count > 0)
            points = full[~(right[full] > left[full])]  # bins of no width: one value each
            if len(points):
                # a table whose bins have no width (every entry one value, as a hand-made or
                # another tool's table gives it): its density is infinite, and was drawn as
                # a spike of 4e+298 ("density" up to 1e300); one stem per value, its share
                # of the entries, instead
                where = _point_masses(ax, left, right, count, full, colors[layer])
            else:
                dens = count / (total * (right - left))
                ax.stairs(dens, np.append(left, right[-1]), fill=True, alpha=0.45,
                          color=colors[layer])
                ax.stairs(dens, np.append(left, right[-1]), color=colors[layer],
                          linewidth=1.0)
                where = (f"range [{left[0]:.3g}, {right[-1]:.3g}]" if len(full) > 1 else
                         # one occupied bin (a dead layer's zeros): the bins' range says
                         # nothing
                         f"all in one bin [{left[full[0]]:.3g}, {right[full[0]]:.3g}]")
            # NaN entries are in no bin: a diverging run's last gradients read "all in one bin
            # [0, 0.02]" (its zeros) where 486 of 11,520 were NaN
            if bad is not None:  # counted when recorded: -inf, +inf and NaN are in no bin
                if sum(bad):
                    where += f"\n{_nonfinite_text(bad, int(total))}: not drawn"
            elif (nan := int(entries.get((step, layer), total) - total)) > 0:
                # a table without the counts (a store of an older depthlab): NaN entries guessed
                # from the largest count of the layer's histograms at that step
                where += f"\n{nan:,} of {nan + int(total):,} values NaN (in no bin)"
            ax.set_title(f"{_f.layer_label(layer, names)}, step {step}: {where}", fontsize=8.5)
            ax.tick_params(labelsize=7.5)
            ax.xaxis.set_major_locator(_f.MaxNLocator(5))
            # every tick its own number (1.2e-15): matplotlib's shared "1e-15" offset sits
            # above the axes' top left, into the panel title ("1e−8layer 3, step 3: ..."),
            # and the x one ("1e16") under the next row's title
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_major_formatter(_f.FuncFormatter(_short_number))
            ax.set_ylabel("fraction of entries" if len(points) else "density", fontsize=8)
            ax.set_xlabel(what, fontsize=8)
    # wrapped to the figure's width (a 10 pt character ~0.085 in): a 300-layer run's heading
    # ran past both edges of its 8.4 in figure ("Histograms" and "bins" cut off)
    import textwrap

    named = any(la in names for la in shown)  # panels titled by module name
    heading = (f"Histograms of the {what} ({_layers_text(shown, layers, named)}); each panel on "
               "its own bins")
    fig.suptitle(textwrap.fill(heading, max(30, int((w - 0.3) / 0.085))), fontsize=10)
    _grid_layout(fig, axes, tick_size=7.5)
    return fig


_PT = 1 / 72  # inches in a point
_PAD_IN = 3 * _PT  # constrained layout's pad around each panel and the figure's edges


def _lines_height_in(text: str, size: float) -> float:
    """Height in inches of ``text`` (``\\n``-separated lines) at ``size`` points as matplotlib
    lays it out: the height h of "lp" (descent d included) for the first line, 1.2 (h - d)
    for each further one."""
    if not text:
        return 0.0
    h, d = _lp_height(size)
    return h + text.count("\n") * 1.2 * (h - d)


@functools.lru_cache(maxsize=64)
def _lp_height(size: float) -> tuple[float, float]:
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    _w, h, d = TextToPath().get_text_width_height_descent("lp", FontProperties(size=size),
                                                          ismath=False)
    return h / 72.0, d / 72.0


def _lines_width_in(text: str, size: float) -> float:
    return max((_text_width(line, size) for line in text.split("\n") if line), default=0.0)


@functools.lru_cache(maxsize=4096)
def _text_width(text: str, size: float) -> float:
    """Width in inches of one line ``text`` at ``size`` points (DejaVu Sans, no math)."""
    return _f._text_width_in(text, size)


def _drawn_ticks(axis: Any) -> tuple[np.ndarray, list[str]]:
    """The major ticks ``axis`` will draw (inside its view interval) and their labels."""
    lo, hi = sorted(axis.get_view_interval())
    locs = np.asarray(axis.get_major_locator()(), float)
    tol = 1e-10 * max(abs(hi - lo), 1e-300)
    locs = locs[(locs >= lo - tol) & (locs <= hi + tol)]
    return locs, list(axis.get_major_formatter().format_ticks(locs)) if len(locs) else []


def _grid_layout(fig: Figure, axes: Any, tick_size: float) -> None:
    """Place a rows x columns grid of panels with margins measured from their texts instead of
    matplotlib's constrained layout (which measured every panel's tight bounding box twice:
    half of a histogram figure's rendering time). Per column: left = tick length + pad (7 pt)
    + the widest y tick label + label pad (4 pt) + the y label's line; right = how far the
    last x tick label reaches past the panel. Per row: top = the title's lines + title pad;
    bottom = 7 pt + an x tick label's line + 4 pt + the x label's line; 3 pt around each panel
    and the figure's edge, the suptitle on top; panels of one size. Falls back to constrained
    layout when a title is wider than its panel."""
    from matplotlib import rcParams

    width, height = fig.get_size_inches()
    rows, cols = len(axes), len(axes[0])
    tick_in = (rcParams["xtick.major.size"] + rcParams["xtick.major.pad"]) * _PT
    label_in = rcParams["axes.labelpad"] * _PT
    left, right, top, bottom = [0.0] * cols, [0.0] * cols, [0.0] * rows, [0.0] * rows
    title_w, spill = 0.0, [[] for _ in range(cols)]
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            _, ylabels = _drawn_ticks(ax.yaxis)
            ywide = max((_text_width(t, tick_size) for t in ylabels), default=0.0)
            yl = ax.yaxis.label
            left[c] = max(left[c], (tick_in + ywide if ylabels else 0) + (
                label_in + _lines_height_in(yl.get_text(), yl.get_fontsize())
                if yl.get_text() else 0))
            xlocs, xlabels = _drawn_ticks(ax.xaxis)
            xl, title = ax.xaxis.label, ax.title
            bottom[r] = max(bottom[r], (tick_in + _lines_height_in("0", tick_size)
                                        if xlabels else 0) + (
                label_in + _lines_height_in(xl.get_text(), xl.get_fontsize())
                if xl.get_text() else 0))
            top[r] = max(top[r], _lines_height_in(title.get_text(), title.get_fontsize())
                         + rcParams["axes.titlepad"] * _PT)
            title_w = max(title_w, _lines_width_in(title.get_text(), title.get_fontsize()))
            if xlabels:  # the last label's half width past its tick; the tick's place later
                lo, hi = sorted(ax.xaxis.get_view_interval())
                frac = (xlocs[-1] - lo) / (hi - lo) if hi > lo else 1.0
                spill[c].append((frac, _text_width(xlabels[-1], tick_size) / 2))
    sup = fig._suptitle
    sup_in = (_lines_height_in(sup.get_text(), sup.get_fontsize()) + 4 * _PAD_IN
              if sup is not None else 0.0)
    # the panel width without the right spills, then each column's spill past its panel
    panel_w = (width - 2 * _PAD_IN - sum(left) - 2 * cols * _PAD_IN) / cols
    for c in range(cols):
        right[c] = max((half - (1 - frac) * panel_w for frac, half in spill[c]), default=0.0)
        right[c] = max(right[c], 0.0)
    panel_w = (width - 2 * _PAD_IN - sum(left) - sum(right) - 2 * cols * _PAD_IN) / cols
    panel_h = (height - 2 * _PAD_IN - sup_in - sum(top) - sum(bottom)
               - 3 * rows * _PAD_IN) / rows
    if panel_w <= 0.5 or panel_h <= 0.3 or title_w > panel_w + 2 * _PAD_IN:
        fig.set_layout_engine("constrained")  # a long title or a tiny panel: let it decide
        return
    if sup is not None:
        sup.set_y(1 - _PAD_IN / height)
    for r in range(rows):  # one column's y labels in line (as constrained layout left them),
        for c in range(cols):  # beside the column's widest tick labels
            ax = axes[r][c]
            ax.yaxis.set_label_coords(-(left[c] - _lines_height_in(
                ax.yaxis.label.get_text(), ax.yaxis.label.get_fontsize())) / panel_w, 0.5)
    y = height - _PAD_IN - sup_in
    for r in range(rows):
        y -= top[r] + _PAD_IN + panel_h
        x = _PAD_IN
        for c in range(cols):
            x += _PAD_IN + left[c]
            axes[r][c].set_position((x / width, y / height, panel_w / width,
                                     panel_h / height))
            x += panel_w + right[c] + _PAD_IN
        y -= bottom[r] + 2 * _PAD_IN  # one pad more between rows: constrained's hspace


def _short_number(v: float, _pos: int | None = None) -> str:
    """A tick label of up to six significant digits (``0.002``, ``3000``, ``5e-16``,
    ``-1.6e+16``: ticks are round numbers, so this drops only float noise)."""
    return f"{v:.6g}"


def _positive_int(value: Any, name: str) -> None:
    """``value`` must be an integer >= 1 (TypeError / ValueError naming ``name``)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _hist_table(obj: Any) -> pd.DataFrame:
    if isinstance(obj, pd.DataFrame):
        _require_columns(obj, ("step", "layer", "kind", "bin_left", "bin_right", "count"),
                         "a histogram table")
        return obj
    if hasattr(obj, "histograms"):
        h = obj.histograms
        return h() if callable(h) else h
    raise TypeError(f"expected a ProbeRecorder, a RunRecord or a histogram table; got "
                    f"{type(obj).__name__}")


@_f.quiet_extremes
def gradient_heatmap(table: Any, quantity: str = "grad_pre_std") -> Figure:
    """Std of ``dL/ds`` per layer (rows) and probed step (columns), log colour scale; another
    per-layer ``quantity`` (``act_std``, ``weight_grad_std``, ...) titled by its meaning. A
    name that no probe measures (a typo) is a ValueError listing the table's quantities."""
    probes = probe_table(table)
    _check_quantity([probes], quantity)
    return _f.gradient_heatmap(probes, quantity)


def _check_quantity(tables: Sequence[pd.DataFrame], quantity: Any,
                    label: str = "quantity") -> None:
    """A TypeError (not a str) or ValueError (a name that no probe measures, a typo) naming
    ``quantity`` and the per-layer quantities ``tables`` hold; a known quantity a table does
    not hold passes (it draws nothing, or its ratio is NaN, as documented). Shared by the
    heatmap, :func:`gradient_ratio`, the per-layer figures and :func:`activation_bands`
    (``gradient_ratio(t, quantity="grad_std")`` was NaN, read as "not recorded")."""
    if not isinstance(quantity, str):
        raise TypeError(f"{label} must be a per-layer probe quantity's name (a str), got "
                        f"{type(quantity).__name__}")
    from .probes.stats import layer_quantities

    present: set = set()
    for t in tables:
        if len(t) and {"quantity", "layer"} <= set(t.columns):
            present |= set(t.loc[t["layer"] >= 1, "quantity"])
    if quantity not in present | set(_f.HEATMAP_TEXTS) | set(layer_quantities()):
        raise ValueError(f"{label}={quantity!r} is not a per-layer probe quantity; this "
                         f"table's: {', '.join(sorted(map(str, present))) or 'none'}")


@_f.quiet_extremes
def update_ratio(table: Any) -> Figure:
    """Per layer over training: ``||W_n - W_{n-1}|| / ||W_{n-1}||`` (``update_ratio``, log
    scale)."""
    return _f.update_ratio(probe_table(table))


@_f.quiet_extremes
def weight_std(table: Any, init_std: Mapping[int, float] | None = None,
               init_label: str = "initializer") -> Figure:
    """Per layer: the std of its weight entries (``weight_std``, log scale) at the first and
    the last probed step, beside ``init_std`` (layer -> the initializer's ``sqrt(Var(W))``,
    e.g. He's ``sqrt(2 / fan_in)``; :func:`depthlab.report.build.init_weight_std` computes it
    from a depthlab config), drawn dotted and labelled ``init_label``."""
    return _f.weight_std_profile(probe_table(table), dict(init_std) if init_std else None,
                                 init_label)


@_f.quiet_extremes
def saturation(table: Any) -> Figure:
    """Per layer over training: the fraction of saturated entries (``saturated_frac``, bounded
    activations), of inactive entries (``inactive_frac``, ReLU-family entries with ``s <= 0``)
    and of dead units (``dead_frac``: ``f'(s) == 0`` on every probe example)."""
    return _f.saturation_dead(probe_table(table))


# -- sweeps ------------------------------------------------------------------------------------
def forms_grid(runs: pd.DataFrame, x_key: str, y_key: str) -> bool:
    """True when every pair of the distinct ``x_key`` and ``y_key`` values has a run (a
    heatmap over the two keys has no empty cell)."""
    pairs = {(_f.value_key(a), _f.value_key(b)) for a, b in zip(runs[x_key], runs[y_key])}
    nx = len({_f.value_key(v) for v in runs[x_key]})
    ny = len({_f.value_key(v) for v in runs[y_key]})
    return len(pairs) == nx * ny


@_f.quiet_extremes
def sweep_metric(runs: pd.DataFrame, keys: Sequence[str], metric: str = "val_acc",
                 higher_is_better: bool = True) -> Figure:
    """A sweep's ``metric`` against its varying ``keys``: a heatmap when the first two keys
    form a complete grid, otherwise one bar per distinct combination of the keys (best run
    of each), so no empty cell or hidden axis appears. ``runs``: the store's runs table
    (``Store.runs()``: one row per run, its config keys and metrics; without a ``status``
    column every run counts as finished); ``keys``: column names (one name alone is one key)."""
    if not isinstance(runs, pd.DataFrame):
        raise TypeError(f"runs must be a DataFrame of runs (one row per run, config keys and "
                        f"metrics as columns), got {type(runs).__name__}")
    keys = [keys] if isinstance(keys, str) else list(keys)
    if not keys:
        raise ValueError("sweep_metric needs at least one varying key")
    if runs.empty:
        raise ValueError("sweep_metric: the runs table is empty (no run to draw)")
    if "status" not in runs.columns:
        runs = runs.assign(status="finished")
    if len(keys) == 2 and forms_grid(runs, keys[0], keys[1]):
        return _f.sweep_heatmap(runs, keys[0], keys[1], metric,
                                higher_is_better=higher_is_better)
    if len(keys) == 1:
        return _f.sweep_bars(runs, keys[0], metric, higher_is_better=higher_is_better)
    # one bar per combination in the grid's order (the first key's values ascending when
    # numbers, then the next key's, ...), not the store's order (the order in which the points
    # finished, with --jobs N): rank each key's values as the heatmap orders its axes
    ranks = [runs[k].map(_f.value_key).map(
        {_f.value_key(v): i for i, v in enumerate(_f._ordered_values(runs[k]))}) for k in keys]
    runs = runs.iloc[np.lexsort([r.to_numpy() for r in reversed(ranks)])]
    combo = [", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in zip(keys, vals))
             for vals in zip(*(runs[k] for k in keys))]
    names = list(runs["name"]) if "name" in runs else []
    by_name = (len(set(names)) == len(names) and all(names)
               and len(set(combo)) == len(combo))  # one run per combination, named
    frame = runs.assign(run=names if by_name else combo)
    fig = _f.sweep_bars(frame, "run", metric, higher_is_better=higher_is_better)
    fig.axes[0].set_xlabel("run (varying: " + ", ".join(k.split(".")[-1] for k in keys) + ")"
                           if by_name else " / ".join(k.split(".")[-1] for k in keys))
    # the bars' own title's later lines stay (what a ↑ on a cut bar means)
    rest = fig.axes[0].get_title().partition("\n")[2]
    fig.axes[0].set_title(f"{metric} by run" + (f"\n{rest}" if rest else ""),
                          fontsize=fig.axes[0].title.get_fontsize())
    return fig


def _short(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return f"[{len(v)} sizes]" if len(v) > 4 else "[" + ",".join(map(str, v)) + "]"
    return str(v)
