"""Jupyter views: the ``_repr_html_`` of :class:`~depthlab.History`,
:class:`~depthlab.Diagnosis` and :class:`~depthlab.ProbeRecorder` (reproduction results use
:func:`depthlab.reproduce.page.result_body`). Each is a small card in the report's style: the
key numbers, then the one figure that matters, drawn with :mod:`depthlab.plot` and embedded
as a PNG."""

from __future__ import annotations

import math
from typing import Any

from . import html as H

_STYLE = ("<style>.depthlab-card{font:13px/1.45 system-ui,sans-serif;max-width:1000px}"
          ".depthlab-card table{border-collapse:collapse;margin:6px 0}"
          ".depthlab-card th,.depthlab-card td{padding:3px 9px;border-bottom:1px solid #ddd;"
          "text-align:left;vertical-align:top}.depthlab-card .note{color:#5b6573}"
          ".depthlab-card img{max-width:100%}</style>")


def _img(fig: Any, alt: str) -> str:
    from .figures import figure_png

    return f"<img alt=\"{H.esc(alt)}\" src=\"{H.data_uri(figure_png(fig))}\">"


def _card(title: str, inner: str) -> str:
    return f"{_STYLE}<div class=\"depthlab-card\"><b>{H.esc(title)}</b>{inner}</div>"


def _n(count: int, noun: str) -> str:
    """``1 step``, ``2 steps``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _num(v: Any) -> str:
    return H.fmt(v) if not (isinstance(v, float) and not math.isfinite(v)) else str(v)


def history_html(history: Any) -> str:
    """Steps, final metrics, divergence and the training curves of a History."""
    from .. import plot

    final = history.final()
    rows = [[k, _num(v)] for k, v in final.items()]
    parts = [f"<p class=\"note\">{_n(history.steps, 'step')}, {history.status}, "
             f"{history.seconds:.1f} s</p>"]
    if history.divergence is not None:
        parts.append(f"<p><b>Diverged.</b> {H.esc(history.divergence.message)}</p>")
    if rows:
        parts.append(H.table(["final metric", "value"], rows))
    if history.steps:
        parts.append(_img(plot.training_curves(history), "training loss and accuracy"))
    return _card("History", "".join(parts))


def history_repr(history: Any) -> str:
    """``History(200 steps, finished, train_loss=0.31, val_acc=0.9)``."""
    final = history.final()
    keys = [k for k in ("train_loss", "val_loss", "val_acc") if k in final]
    if not keys and history.step_loss:
        return (f"History({_n(history.steps, 'step')}, {history.status}, last loss "
                f"{_num(float(history.step_loss[-1]))})")
    return (f"History({_n(history.steps, 'step')}, {history.status}"
            + "".join(f", {k}={_num(final[k])}" for k in keys) + ")")


def diagnosis_html(diagnosis: Any) -> str:
    """The findings first (kind, layers, evidence, prescription, verified before/after), then
    the gradient-per-layer figure of the baseline run with its theory dashed (from the
    diagnosis's ``mlp`` config, when the theory covers it)."""
    from .. import plot
    from .build import _findings_html

    parts = [_findings_html(diagnosis.to_dict())]
    if diagnosis.probes is not None and not diagnosis.probes.empty:
        theory, _ = plot.theory_for_config(diagnosis.config or {})  # dashed, as in the report
        parts.append(_img(plot.gradient_per_layer({"baseline": diagnosis.probes},
                                                  theory if theory is not None else False),
                          "gradient std per layer of the diagnosed network"))
    return _card("Diagnosis", "".join(parts))


def diagnosis_repr(diagnosis: Any) -> str:
    """``Diagnosis(2 findings: vanishing_gradients, saturation; verified 2)``."""
    if diagnosis.healthy:
        from ..diagnosis.findings import unlearned_text

        if unlearned_text(diagnosis.baseline, getattr(diagnosis, "chance_loss", math.nan)):
            return "Diagnosis(no findings, but the run did not learn)"
        return "Diagnosis(healthy: no findings)"
    kinds = ", ".join(f.kind for f in diagnosis.findings)
    ver = f"; verified {len(diagnosis.verifications)}" if diagnosis.verifications else ""
    return f"Diagnosis({len(diagnosis.findings)} finding(s): {kinds}{ver})"


def recorder_html(recorder: Any) -> str:
    """What a ProbeRecorder holds, the gradient ratio and the per-layer gradient figure."""
    from .. import plot

    table = recorder.frame()
    if table.empty:
        return _card("ProbeRecorder", "<p class=\"note\">nothing recorded yet</p>")
    layers = table.loc[(table["quantity"] == "grad_pre_std") & (table["layer"] >= 1), "layer"]
    if layers.nunique() == 1:
        # its one layer against itself: "1" read as a gradient that flows intact (the Watch
        # card and the report say there is no ratio)
        said = "Gradient ratio: one hidden layer: no first/last ratio to take."
    else:
        said = ("Gradient ratio (first / last hidden layer) at the first probed step: "
                f"<b>{_num(plot.gradient_ratio(table))}</b>.")
    parts = [f"<p class=\"note\">{recorder_repr(recorder)}</p>",
             f"<p>{said} Tables: <code>.frame()</code>, <code>.histograms()</code>, "
             "<code>.jacobian()</code>.</p>",
             _img(plot.gradient_per_layer({"recorded": table}, False),
                  "gradient std per layer")]
    return _card("ProbeRecorder", "".join(parts))


def recorder_repr(recorder: Any) -> str:
    """``ProbeRecorder(every=10, 21 steps recorded, 8 layers, 3403 rows)``."""
    steps = recorder.steps
    table = recorder.frame() if steps else None
    layers = 0 if table is None else int(table.loc[table["layer"] >= 1, "layer"].nunique())
    return (f"ProbeRecorder(every={recorder.every}, {_n(len(steps), 'step')} recorded, "
            f"{_n(layers, 'layer')}, {_n(recorder.n_records, 'row')})")


def run_record_repr(record: Any) -> str:
    """``RunRecord('3f2a…', name='digits-tanh', finished, 120 steps, val_acc=0.93)``: one line
    (the dataclass default printed every stored table)."""
    steps = record.steps
    # the steps recorded, counted: a NumPy run numbers them 1..N, a torch Watch 0..N-1 ("max
    # + 1" read 201 steps for a NumPy run of 200)
    n = int(steps["step"].nunique()) if steps is not None and len(steps) else 0
    keys = [k for k in ("train_loss", "val_loss", "val_acc")  # a failed run's are None: left
            if (record.metrics or {}).get(k) is not None]  # out, not "train_loss=, val_acc="
    name = f", name={record.name!r}" if record.name else ""
    kind = "" if record.kind == "run" else f", {record.kind}"
    return (f"RunRecord({record.id!r}{name}{kind}, {record.status}, {_n(n, 'step')}"
            + "".join(f", {k}={_num(record.metrics[k])}" for k in keys) + ")")


def run_record_html(record: Any) -> str:
    """Status and final metrics of a stored run, why it stopped (divergence, error), then its
    training curves and gradient-per-layer figure."""
    from .. import plot

    parts = [f"<p class=\"note\">{H.esc(run_record_repr(record))}</p>"]
    if record.divergence:
        parts.append(f"<p><b>Diverged.</b> {H.esc(record.divergence.get('message', ''))}</p>")
    if record.error:
        parts.append(f"<p><b>Failed.</b> {H.esc(record.error)}</p>")
    rows = [[k, _num(v)] for k, v in (record.metrics or {}).items()]
    if rows:
        parts.append(H.table(["final metric", "value"], rows))
    if record.steps is not None and len(record.steps):
        parts.append(_img(plot.training_curves(record), "training loss and accuracy"))
    import pandas as pd

    layered = record.probes is not None and len(record.probes) > 0 and bool(
        (pd.to_numeric(record.probes["layer"], errors="coerce") >= 1).any())
    if record.probes is not None and len(record.probes) and not layered:
        from .build import _no_hidden_layer

        # an empty panel read "no positive 'grad_pre_std' probes recorded", as if the
        # gradients had vanished
        parts.append("<p class=\"note\">" + (
            "No hidden layer (depth 0): no per-layer gradients to draw." if _no_hidden_layer(
                record.config) else "Only the loss was probed: no per-layer gradients to "
            "draw.") + "</p>")
    if layered:
        from .build import _mpl, _named

        probes = _named(record.probes, record.config)  # a torch run: its module names
        theory, _ = plot.theory_for_config(record.config or {})
        # "$" escaped, as the report does: "cost $\frac{1$" was typeset as math and failed
        parts.append(_img(plot.gradient_per_layer({_mpl(record.name or record.id): probes},
                                                  theory if theory is not None else False),
                          "gradient std per layer"))
    return _card("RunRecord", "".join(parts))


def watch_repr(watch: Any) -> str:
    """``Watch(Sequential, every=5, 20 steps seen, 4 recorded, 3 layers, open)``."""
    if not hasattr(watch, "_col_value"):  # its __init__ raised (a repr in the traceback)
        return "Watch(not set up)"
    table = watch.frame()
    recorded = int(table["step"].nunique()) if len(table) else 0
    layers = int(table.loc[table["layer"] >= 1, "layer"].nunique()) if len(table) else 0
    state = "closed" if watch._closed else "open"
    return (f"Watch({watch.name}, every={watch.every}, {_n(watch.steps_seen, 'step')} seen, "
            f"{recorded} recorded, {_n(layers, 'layer')}, {state})")


def watch_html(watch: Any) -> str:
    """What a torch Watch recorded, its gradient ratio, theory note and gradient figure."""
    from .. import plot

    table = watch.frame()
    parts = [f"<p class=\"note\">{H.esc(watch_repr(watch))}</p>"]
    if table.empty:
        parts.append("<p class=\"note\">nothing recorded yet</p>")
        return _card("Watch", "".join(parts))
    note = (watch.theory_note or "").rstrip(".")
    parts.append(f"<p>{_watch_ratio_text(table)} {H.esc(note) + '. ' if note else ''}"
                 "Tables: <code>.frame()</code>, <code>.losses()</code>.</p>")
    from .build import _mpl

    theory = watch.theory  # dlt.predict at the first recorded step, or None
    parts.append(_img(plot.gradient_per_layer({_mpl(watch.name): table},
                                              theory if theory is not None else False),
                      "gradient std per layer"))
    return _card("Watch", "".join(parts))


def _watch_ratio_text(table: Any) -> str:
    """The card's gradient ratio: of the hidden layers, the output layer (the last to run) left
    out as the report's gradient-flow table and the doctor leave it out. It was the first layer
    against the head (0.1062 on the card, 0.3556 in the report for the same run)."""
    import pandas as pd

    from .build import _without_output_layer, output_layers

    layers = pd.to_numeric(table["layer"], errors="coerce")
    outs = output_layers(table)  # the ratio is of the first recorded step: its output layer
    top = outs[min(outs)] if outs else layers.max()
    names = table.loc[layers == top, "module"] if "module" in table.columns else pd.Series([])
    name = str(names.iloc[0]) if len(names) else ""
    head = (f"<code>{H.esc(f'[{name}]' if name.isdigit() else name)}</code>" if name else
            f"layer {int(top)}")
    hidden = _without_output_layer(table)
    grads = hidden[(hidden["quantity"] == "grad_pre_std") & (hidden["layer"] >= 1)]
    out = (f"the output layer {head}, the last to run, not counted, as in "
           "the report and the doctor")
    if grads.empty:
        return (f"Gradient ratio: no hidden layer (its one layer, {head}, is the output "
                "layer): no first/last ratio to take.")
    if grads["layer"].nunique() == 1:
        return f"Gradient ratio: one hidden layer ({out}): no first/last ratio to take."
    return (f"Gradient ratio (first / last hidden layer, at the first recorded step; {out}): "
            f"<b>{_ratio_text(hidden)}</b>.")


def _ratio_text(hidden: Any) -> str:
    """The first/last ratio of ``hidden``'s gradients, written out in logarithms where float64
    cannot hold it (``1e+600 (1e+300 / 1e-300, past float64's largest)``, not ``inf``)."""
    from .. import plot
    from .build import _extreme_ratio

    extreme = _extreme_ratio(hidden)
    return H.esc(extreme.cell) if extreme is not None else _num(
        plot._first_last_ratio(hidden))
