"""Claims, results and the experiment registry behind ``depthlab reproduce``."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..equality import value_eq
from ..training import fit


@dataclass
class Claim:
    """One checked statement: the paper's number beside the number measured here.

    ``value``: the measured number the verdict rests on (a ratio, an accuracy, a count), so
    tests can pin it in a band; None when the verdict is not one number."""

    claim: str
    paper: str
    measured: str
    holds: bool
    value: float | None = None
    computed: str = ""
    """A cross-check against our own computation (theory, a NumPy re-derivation), shown in
    its own column beside the paper's number."""

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["holds"] = bool(self.holds)
        v = None if self.value is None else float(self.value)
        d["value"] = v if v is not None and math.isfinite(v) else None  # strict JSON
        return d


@dataclass
class Result:
    """What an experiment leaves: claims (the paper's results, counted), sanity checks
    (identities the code must satisfy, e.g. a Taylor coefficient in closed form: reported,
    not counted as reproduced), figures (matplotlib Figures), tables, notes."""

    name: str
    title: str
    claims: list[Claim] = field(default_factory=list)
    checks: list[Claim] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    quick: bool = False
    seconds: float = 0.0
    captions: dict[str, str] = field(default_factory=dict)
    """Per figure key: what the figure shows and what to look for (the page's caption)."""

    # by value: claims, checks, tables, notes, captions (figures are drawings, seconds timing)
    __eq__ = value_eq("figures", "seconds")

    def __repr__(self) -> str:
        held = sum(c.holds for c in self.claims)
        return (f"Result({self.name!r}: {held}/{len(self.claims)} claims hold, "
                f"{len(self.figures)} figures, {len(self.tables)} tables, "
                f"{'quick' if self.quick else 'full'}, {self.seconds:.0f} s)")

    def _repr_html_(self) -> str:
        """Claims, notes, figures and tables as HTML (Jupyter)."""
        from ..report.html import CSS, esc
        from .page import result_body

        body, _ = result_body(self)
        return (f"<div class=\"depthlab\"><style>{CSS}</style><h1>{esc(self.title)}</h1>"
                f"{body}</div>")


@dataclass(frozen=True)
class Experiment:
    """A registered reproduction: ``run(quick=..., data=..., progress=...) -> Result``.

    ``progress``: an :class:`~depthlab.progress.ExperimentProgress` from
    :func:`run_experiment` (or a plain setting such as False when called directly; wrap it with
    ``ExperimentProgress.of``); the experiment plans its stages, then runs each in
    ``with progress.stage(label):``."""

    name: str
    title: str
    paper: str
    run: Callable[..., Result]
    summary: str = ""
    data: tuple[str, ...] | None = None
    """The data sets ``data=`` may name (None: any data set; ``()``: none, the experiment's
    data are part of its setup, so a ``data=`` is refused rather than ignored)."""


REGISTRY: dict[str, Experiment] = {}


def readable(v: float, fmt: str) -> str:
    """``v`` in ``fmt`` (``.3f``, ``+.3f``, ``.2%``, ``.2e``, ...) where that is readable; a
    fixed-point or percent number that would print as 0 (``4.3e-05`` as "0.00") or with more
    than four integer digits (a broken run's loss of 1.6e36 as "1585202142783466671454437589162
    917888.000") in two significant digits instead ("4.3e-05", "1.6e+36"); nan/inf as such.
    For the measured column of a claim that a deliberately broken setup makes fail."""
    v = float(v)
    m = re.fullmatch(r"(\+?)\.(\d+)([f%])", fmt)
    if m is None or not math.isfinite(v):
        return format(v, fmt)
    shown, unit = (100 * v, "%") if m[3] == "%" else (v, "")
    if shown != 0 and (abs(shown) < 10.0 ** -int(m[2]) or abs(shown) >= 1e4):
        return f"{shown:{m[1]}.2g}{unit}"
    return format(v, fmt)


class ExperimentDataError(ValueError):
    """The data set asked of an experiment is not one it accepts, or cannot be loaded here."""


def guess_rate(y: Any) -> float:
    """The accuracy of always guessing the commonest class of labels ``y``: ``max_k n_k / n``
    (1.0 for no labels)."""
    counts = np.bincount(np.asarray(y, dtype=np.int64).ravel())
    return float(counts.max() / counts.sum()) if counts.sum() else 1.0


def load_data(experiment: str, data: str | None, default: str, *,
              accepted: tuple[str, ...] | None = None, guess_below: float | None = None,
              threshold: str = "", **kwargs: Any) -> tuple[Any, str]:
    """``load_dataset(data or default, **kwargs)`` and its name; a data set outside
    ``accepted`` or one that fails to load raises :class:`ExperimentDataError` (never a silent
    fallback to other data).

    ``guess_below``: the experiment's claims read absolute training accuracies (``threshold``
    says which, e.g. "'fails to train': accuracy < 20%") set for balanced 10-class data, so
    a data set on which always guessing the commonest class scores ``max_k n_k / n >=
    guess_below`` (``n_k`` the training rows of class k) is refused too: there a net that
    learned nothing would pass that threshold (spirals' 2 classes: 50%)."""
    from depthlab.data import find_builtin, load_dataset

    name = data or default
    builtin = find_builtin(name)  # Fashion-MNIST, fashion_mnist: as other names
    if accepted is not None and (builtin is None or builtin.name not in accepted):
        raise ExperimentDataError(f"{experiment}: data={name!r} is not accepted; expected one "
                                  f"of: {', '.join(accepted)}")
    try:
        ds = load_dataset(name, **kwargs)
    except (ValueError, OSError) as exc:
        raise ExperimentDataError(f"{experiment}: data set {name!r} could not be loaded: "
                                  f"{exc}") from exc
    if guess_below is not None:
        guess = guess_rate(ds.y_train)
        if guess >= guess_below:
            raise ExperimentDataError(
                f"{experiment}: data={name!r} cannot test its claims: always guessing its "
                f"commonest class scores {guess:.1%} training accuracy, not below the claims' "
                f"threshold ({threshold or f'{guess_below:.0%}'}); expected a data set whose "
                f"commonest class is under {guess_below:.0%} of the training rows (e.g. "
                f"{default}: 10 classes)")
    return ds, name


def experiment_name(name: str) -> str:
    """The registered name ``name`` stands for: case, surrounding blanks and ``_`` for ``-``
    do not matter (``Depth_Ladder`` is ``depth-ladder``, ``XU2016`` is ``xu2016``, as on the
    command line); ValueError naming the registered ones otherwise."""
    from . import experiments  # noqa: F401  (registers the built-ins)

    if isinstance(name, str) and name not in REGISTRY:
        given = name.strip().lower().replace("_", "-")
        name = next((k for k in REGISTRY if k.lower().replace("_", "-") == given), name)
    if not isinstance(name, str) or name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise ValueError(f"unknown experiment {name!r}; expected one of: {known}")
    return name


def takes_data(exp: Experiment) -> bool:
    """Whether ``exp`` takes a ``data=`` at all (``data=()`` registers one that takes none)."""
    return exp.data != ()


def no_data_message(name: str, data: str) -> str:
    """The one line refusing ``data`` for experiment ``name``, which takes no data set."""
    takers = ", ".join(sorted(k for k, e in REGISTRY.items() if takes_data(e)))
    return (f"{name} takes no data set (its data are part of the paper's setup), got "
            f"data={data!r}; expected no data (the experiments that take one: {takers})")


def check_data_accepted(exp: Experiment, data: str | None) -> None:
    """:class:`ExperimentDataError` (one line) when ``data`` is given to an experiment that
    takes none or names a data set outside the ones it accepts: refused before it runs, never
    ignored after minutes of training on other data."""
    if data is None or exp.data is None:
        return
    if exp.data == ():
        raise ExperimentDataError(no_data_message(exp.name, data))
    from depthlab.data import find_builtin

    builtin = find_builtin(data)
    if builtin is None or builtin.name not in exp.data:
        raise ExperimentDataError(f"{exp.name}: data={data!r} is not accepted; expected one "
                                  f"of: {', '.join(exp.data)}")


def register(name: str, title: str, paper: str, summary: str = "", *,
             data: tuple[str, ...] | None = None):
    """Decorator registering ``fn(quick: bool, data: str | None, progress) -> Result`` (see
    :class:`Experiment` for ``progress``); ``data``: the data sets it accepts, if limited
    (checked before any experiment runs; ``()`` for an experiment that takes none)."""

    def deco(fn: Callable[..., Result]) -> Callable[..., Result]:
        REGISTRY[name] = Experiment(name, title, paper, fn, summary, data)
        return fn

    return deco


def train_accuracy(net: Any, ds, steps: int, seed: int, lr: float = 0.01,
                   progress: bool | str | None = None) -> tuple[float, bool]:
    """Train with SGD (``lr``, momentum 0.9, batch 64) for ``steps``; returns (training
    accuracy, diverged). A non-finite loss or non-finite predictions count as diverged, with
    accuracy 0. The shared budget of the depth studies (depth-ladder, schoenholz2017,
    yang2019). ``progress``: the trainer's bar or status lines (:mod:`depthlab.progress`).

    Batch norms in ``population`` mode train in ``ema`` mode and are calibrated once, at
    the end: the trainer would set their population statistics from the whole training set
    at every epoch's end (for inference-mode metrics, none of which is asked for here), which
    no training step reads (training normalizes each batch by its own statistics) and the
    final :meth:`~depthlab.network.Network.calibrate` replaces: the same accuracy, without
    one full pass over the training set per epoch (6% of a 100-layer BN net's training)."""
    population = [bn for bn in net.batchnorms() if bn.inference == "population"]
    for bn in population:
        bn.inference = "ema"
    try:
        hist = fit(net, ds.x_train, ds.y_train, optimizer="sgd", lr=lr,
                   optimizer_kwargs={"momentum": 0.9}, batch_size=64, epochs=None,
                   max_steps=steps, seed=seed, eval_train=False, progress=progress)
    finally:
        for bn in population:
            bn.inference = "population"
    if hist.diverged:
        return 0.0, True
    if net.batchnorms():
        net.calibrate(ds.x_train)
    with np.errstate(all="ignore"):
        pred = net.predict(ds.x_train)
    if not np.isfinite(pred).all():
        return 0.0, True
    return float(np.mean(np.argmax(pred, axis=1) == ds.y_train)), False


def format_claims(claims: list[Claim], width: int | None = None) -> str:
    """A plain-text claims table for the terminal; long cells wrap onto further lines (never
    cut). ``width``: the terminal's columns (default: ``shutil.get_terminal_size``)."""
    import shutil
    import textwrap

    total = width or max(shutil.get_terminal_size((120, 24)).columns, 80)
    rows = [("claim", "paper", "measured here", "holds")]
    rows += [(c.claim, c.paper, c.measured, "yes" if c.holds else "NO") for c in claims]
    natural = [max(len(r[i]) for r in rows) for i in range(4)]
    avail = total - 2 * 3 - natural[3]
    share = (0.4, 0.25, 0.35)
    widths = [min(natural[i], max(12, int(avail * share[i]))) for i in range(3)] + [natural[3]]

    lines = []
    for k, r in enumerate(rows):
        cells = [textwrap.wrap(v, w) or [""] for v, w in zip(r, widths)]
        for j in range(max(len(c) for c in cells)):
            lines.append("  ".join((c[j] if j < len(c) else "").ljust(w)
                                   for c, w in zip(cells, widths)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_experiment(name: str, *, quick: bool = False, out: str | Path | None = None,
                   data: str | None = None, progress: Any = False,
                   echo: Callable[[str], None] | None = print) -> Result:
    """Run a registered experiment, write ``out/claims.json``, figures and ``out/report.html``.

    ``progress``: a setting of :mod:`depthlab.progress` (``"bar"``, ``"lines"``, False) or an
    :class:`~depthlab.progress.ExperimentProgress`; the experiment receives the latter, declares
    its stages and labels each (``stage 3/11: tanh, standard init``); every declared stage
    must run."""
    from . import experiments  # noqa: F401  (registers the built-ins)

    name = experiment_name(name)
    exp = REGISTRY[name]
    check_data_accepted(exp, data)
    from ..progress import ExperimentProgress

    tracker = ExperimentProgress.of(progress)
    t0 = time.perf_counter()
    result = exp.run(quick=quick, data=data, progress=tracker)
    if tracker.done != tracker.total:
        raise RuntimeError(f"{name}: {tracker.done} of the {tracker.total} stages it declared "
                           f"ran ({tracker.labels})")
    result.seconds = time.perf_counter() - t0
    result.quick = quick
    if out is not None:
        from .page import write_result

        write_result(result, Path(out), exp)
    if echo is not None:
        echo(f"{exp.title} ({'quick' if quick else 'full'}, {result.seconds:.0f} s)")
        echo(format_claims(result.claims))
        if result.checks:
            echo("sanity checks (not counted as claims):")
            echo(format_claims(result.checks))
        for note in result.notes:
            echo(f"note: {note}")
    return result


def claims_json(result: Result) -> str:
    """``claims.json``: the list of claims (``claim``, ``paper``, ``measured``, ``holds``,
    ``value``); sanity checks are not in it (see :func:`checks_json`)."""
    return json.dumps([c.as_dict() for c in result.claims], indent=2)


def checks_json(result: Result) -> str:
    """``checks.json``: the sanity checks, in the same format as ``claims.json``."""
    return json.dumps([c.as_dict() for c in result.checks], indent=2)
