"""What the doctor returns: findings, verifications of their prescriptions, the diagnosis."""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..jsonable import jsonable

#: finding kinds only ``dlt.doctor`` gives (its recurrent-model rule,
#: ``depthlab.torch.through_time``), beside the shared rules' ``KINDS``
TORCH_ONLY_KINDS: tuple[str, ...] = ("exploding_through_time", "vanishing_through_time")

SEVERITIES = ("low", "medium", "high")


def _measured(v: Any) -> bool:
    """Whether a metric was measured: a validation accuracy is None or NaN where there is none
    (a regression loss such as mse; it was printed as 'val acc nan')."""
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}"
    return str(v)


def _loss(m: dict[str, Any]) -> str:
    """A run's final train loss; a diverged run's as 'nan (diverged at step k)' (a bare 'nan'
    read as a measurement)."""
    text = _fmt(m.get("train_loss"))
    if m.get("diverged") and not _measured(m.get("train_loss")):
        # the step whose loss was not finite (the NumPy doctor's diverged_step, as its
        # divergence finding says; torch's steps count that step among them)
        step = m.get("diverged_step")
        if not (isinstance(step, (int, float)) and math.isfinite(step)):
            step = m.get("steps")
        text += f" (diverged at step {step})" if isinstance(step, (int, float)) and \
            math.isfinite(step) else " (diverged)"
    return text


def _numbers(d: Any) -> dict[str, Any]:
    """A metrics or evidence dict read back from JSON: None (how :func:`jsonable` writes a
    non-finite number) as NaN, other values as they are."""
    return {str(k): math.nan if v is None else v for k, v in dict(d or {}).items()}


def _number(v: Any) -> float:
    return math.nan if v is None else float(v)


def _infinities(**groups: Any) -> dict[str, str]:
    """Where the numbers of ``groups`` (a name -> a number, or a name -> a dict of numbers)
    are infinite: ``{"metric_before": "inf", "evidence.metric": "inf"}``. Strict JSON holds
    them as None, which reads back as NaN: a divergence's 'loss rise inf -> inf' came back from
    ``depthlab doctor --json`` as 'nan -> nan'; :func:`_restore` puts them back."""
    out = {}
    for name, value in groups.items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for key, v in items:
            if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isinf(v):
                out[name if key is None else f"{name}.{key}"] = "inf" if v > 0 else "-inf"
    return out


def _with_infinities(d: dict[str, Any], infinities: dict[str, str]) -> dict[str, Any]:
    """``d`` (a ``jsonable`` dict) with an ``"infinite"`` entry when there are any (other
    readers of the JSON see the numbers as null, as before)."""
    if infinities:
        d["infinite"] = infinities
    return d


def _restore(d: dict[str, Any], name: str, value: Any) -> Any:
    """``value`` read back as ``name`` of the dict ``d`` (NaN for None), an infinity where
    ``d["infinite"]`` says so; a dict of numbers entry by entry."""
    inf = d.get("infinite") if isinstance(d.get("infinite"), dict) else {}
    if isinstance(value, dict) or value is None and any(k.startswith(f"{name}.") for k in inf):
        out = _numbers(value)
        for key, sign in inf.items():
            if key.startswith(f"{name}.") and sign in ("inf", "-inf"):
                out[key[len(name) + 1:]] = float(sign)
        return out
    if inf.get(name) in ("inf", "-inf"):
        return float(inf[name])
    return value


@dataclass
class Finding:
    """One problem found in a network.

    ``kind``: one of :data:`depthlab.diagnosis.rules.KINDS`; ``layers``: hidden-layer indices
    (1 = first; batch-norm layers numbered in forward order for ``bn_drift``; empty when the
    finding concerns the whole network); ``evidence``: the numbers behind it, ``evidence["metric"]``
    being the rule's summary number (lower is healthier; the rule fires above
    ``evidence["threshold"]``); ``prescription``: config changes to try (``mlp()`` arguments or
    training settings ``lr``/``optimizer``/``batch_size``), ``prescription_text`` says why.
    """

    kind: str
    layers: list[int]
    evidence: dict[str, float]
    message: str
    prescription: dict[str, Any] = field(default_factory=dict)
    prescription_text: str = ""
    severity: str = "medium"

    def to_dict(self) -> dict[str, Any]:
        """The finding as strict-JSON values (``Finding.from_dict`` reads it back)."""
        return _with_infinities(jsonable({
            "kind": self.kind, "layers": list(self.layers), "evidence": self.evidence,
            "message": self.message, "prescription": self.prescription,
            "prescription_text": self.prescription_text, "severity": self.severity,
        }), _infinities(evidence=self.evidence))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        """The finding :meth:`to_dict` wrote (evidence written as None is NaN, or an infinity
        where its ``"infinite"`` entry says so)."""
        return cls(kind=d["kind"], layers=[int(i) for i in d.get("layers") or []],
                   evidence=_restore(d, "evidence", d.get("evidence")),
                   message=d.get("message", ""),
                   prescription=dict(d.get("prescription") or {}),
                   prescription_text=d.get("prescription_text", ""),
                   severity=d.get("severity", "medium"))


_SIGNED_NOTES = {
    "vanishing_gradients": "below 0: the gradients grow toward the input instead of shrinking",
    "exploding_gradients": "below 0: the gradients shrink toward the input instead of growing",
}
"""What a gradient-flow metric below 0 means, per finding kind (:class:`Verification`)."""


@dataclass
class Verification:
    """A prescription re-run with the same budget, seed and data.

    ``before``/``after``: final train loss, validation accuracy (and loss), divergence;
    ``metric_before``/``metric_after``: the finding's own evidence metric (lower is healthier);
    ``resolved``: the finding is absent from the re-run; ``helped``: the metric went down (by
    more than 1%: :func:`depthlab.diagnosis.doctor._improved`) *and* training got better
    (final train loss at least 1% lower, and below the loss of a constant prediction,
    ``chance_loss``, or
    validation accuracy more than one point and one example higher, and neither clearly worse:
    :func:`depthlab.diagnosis.doctor._better`; a non-finite loss counts as worst; a run whose
    train loss ends more than 1.5x ``chance_loss`` did not learn and never helped, unless its
    validation error is at most half the constant prediction's; when the accuracy rose and the
    loss rose too, it helped if the run left chance for learning, or its validation error fell
    by a larger factor than the loss rose: :func:`depthlab.diagnosis.doctor.accuracy_outweighs`).
    """

    kind: str
    prescription: dict[str, Any]
    before: dict[str, float]
    after: dict[str, float]
    metric: str
    metric_before: float
    metric_after: float
    resolved: bool
    helped: bool
    new_findings: list[str] = field(default_factory=list)
    # the loss of the best constant prediction of the training targets (NaN: not known), the
    # level a train loss must end below for its fall to count (doctor.constant_loss)
    chance_loss: float = math.nan
    # that constant prediction's validation accuracy (NaN: not known), the level an accuracy
    # must end above for its rise to count (doctor.constant_accuracy)
    chance_acc: float = math.nan
    # validation examples the accuracies were measured on (None: not known): an accuracy
    # counts as above chance_acc only beyond its noise there (doctor._chance_noise)
    n_val: int | None = None
    # why the prescription's re-training failed ('' where it ran): the error it raised, in one
    # line (a cured model whose forward raised at step 8 stopped the whole doctor); such a
    # cure never helped, and ``after`` holds no measurement
    error: str = ""

    def __post_init__(self) -> None:
        """A gradient-flow metric below 0 says which way the gradients now go: the depth in
        depth scales, ``2 n ln(R) / (n - 1)``, is signed (``R`` the last/first hidden layer's
        gradient-std ratio for vanishing, first/last for exploding), and batch norm curing
        vanishing gradients left 'depth in gradient depth scales 10.25 -> -2.595', a negative
        depth that read as a bug; the metric's name now says what a value below 0 means."""
        note = _SIGNED_NOTES.get(self.kind)
        if note and note not in self.metric and any(
                isinstance(v, (int, float)) and v < 0
                for v in (self.metric_before, self.metric_after)):
            self.metric = f"{self.metric} ({note})"

    def to_dict(self) -> dict[str, Any]:
        """The verification as strict-JSON values (``Verification.from_dict`` reads it back)."""
        return _with_infinities(jsonable({
            "kind": self.kind, "prescription": self.prescription, "before": self.before,
            "after": self.after, "metric": self.metric, "metric_before": self.metric_before,
            "metric_after": self.metric_after, "resolved": self.resolved,
            "helped": self.helped, "new_findings": self.new_findings,
            "chance_loss": self.chance_loss, "chance_acc": self.chance_acc,
            "n_val": self.n_val, **({"error": self.error} if self.error else {}),
        }), _infinities(before=self.before, after=self.after,
                        metric_before=self.metric_before, metric_after=self.metric_after))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Verification:
        """The verification :meth:`to_dict` wrote (numbers written as None are NaN, or an
        infinity where its ``"infinite"`` entry says so)."""
        return cls(kind=d["kind"], prescription=dict(d.get("prescription") or {}),
                   before=_restore(d, "before", d.get("before")),
                   after=_restore(d, "after", d.get("after")), metric=d.get("metric", ""),
                   metric_before=_number(_restore(d, "metric_before", d.get("metric_before"))),
                   metric_after=_number(_restore(d, "metric_after", d.get("metric_after"))),
                   resolved=bool(d.get("resolved")), helped=bool(d.get("helped")),
                   new_findings=list(d.get("new_findings") or []),
                   chance_loss=_number(d.get("chance_loss")),
                   chance_acc=_number(d.get("chance_acc")),
                   n_val=d["n_val"] if isinstance(d.get("n_val"), int) else None,
                   error=str(d.get("error") or ""))

    @property
    def gain(self) -> tuple[float, float]:
        """How much the prescription improved training: (validation accuracy after - before,
        relative train-loss reduction (before - after) / before), a diverged or missing value
        counting as accuracy 0 and loss +inf. Ranks the findings of a verified diagnosis."""
        def acc(d: dict[str, float]) -> float:
            v = d.get("val_acc", math.nan)
            return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else 0.0

        def loss(d: dict[str, float]) -> float:
            v = d.get("train_loss", math.nan)
            return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else math.inf

        lb, la = loss(self.before), loss(self.after)
        if math.isinf(lb):
            rel = 0.0 if math.isinf(la) else 1.0
        else:
            rel = (lb - la) / lb if lb > 0 else 0.0
        return acc(self.after) - acc(self.before), max(-1.0, min(1.0, rel))

    def trade_off(self) -> str:
        """For a cure that helped by the held-out accuracy while the train loss rose beyond
        noise (``_better``'s rule): ``", held-out accuracy up 16 points although the train loss
        rose 2%"``, so the line says what improved and what got worse; else ``""``."""
        from .doctor import LOSS_TOLERANCE

        def num(d: dict[str, float], key: str) -> float:
            v = d.get(key, math.nan)
            return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else math.nan

        lb, la = num(self.before, "train_loss"), num(self.after, "train_loss")
        ab, aa = num(self.before, "val_acc"), num(self.after, "val_acc")
        if not (lb > 0 and la > (1.0 + LOSS_TOLERANCE) * lb and aa > ab):
            return ""
        rise = 100 * (la - lb) / lb
        pct = f"{rise:.2g}" if rise < 100 else f"{rise:.0f}"  # "144%", not "1.4e+02%"
        return (f", held-out accuracy up {100 * (aa - ab):.3g} points although the train loss "
                f"rose {pct}%")

    def _above_threshold(self) -> str:
        """The rule's threshold (``"0.25"``) when :attr:`metric_after` is finite and above
        it, else ``""``."""
        from .rules import RULES

        rule = RULES.get(self.kind)
        m = self.metric_after
        if rule is None or not (isinstance(m, (int, float)) and math.isfinite(m)):
            return ""
        return f"{rule.threshold:g}" if m > rule.threshold else ""

    def _chance_reason(self) -> str:
        """Why a fall of the train loss or a rise of the validation accuracy beyond noise did
        not count: it did not end beyond the best constant prediction's (``" (the train loss
        did not end below a constant prediction's, 0.6931)"``; '1.36 -> 0.7089: did not help'
        gave no reason; ``" (the validation accuracy did not end above a constant
        prediction's, 0.1)"``); a run that did not learn (its train loss more than 1.5x that
        prediction's: ``" (the train loss ended at 1.378e+12, more than 1.5x a constant
        prediction's 2.292: the run did not learn)"``); an accuracy that rose while the train
        loss rose by a larger factor than the validation error fell
        (:func:`~.doctor.accuracy_outweighs`: ``" (the validation accuracy rose 5 points, but
        its error fell only 1.14x, 0.4 -> 0.35, while the train loss rose 2x)"``); a
        re-training that raised (:attr:`error`): ``" (its re-training failed: ...)"``; else
        ``""``."""
        if self.error:  # no run to weigh: the re-training raised
            return f" (its re-training failed: {self.error})"
        from .doctor import (
            ACC_TOLERANCE,
            CHANCE_ACC_Z,
            LOSS_TOLERANCE,
            NOT_LEARNED_RISE,
            _chance_noise,
            accuracy_outweighs,
            did_not_learn,
        )

        def num(d: dict[str, float], key: str, worst: float) -> float:
            v = d.get(key, math.nan)
            return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else worst

        lb, la = num(self.before, "train_loss", math.inf), num(self.after, "train_loss", math.inf)
        ab, aa = num(self.before, "val_acc", -math.inf), num(self.after, "val_acc", -math.inf)
        c, ca = self.chance_loss, self.chance_acc
        if did_not_learn(self.after, c, ca):  # e.g. a clipped run that no longer diverged
            gone = "the finding is gone, but " if self.resolved else ""
            return (f" ({gone}the train loss ended at {la:.4g}, more than {NOT_LEARNED_RISE:g}x "
                    f"a constant prediction's {c:.4g}: the run did not learn)")
        if ab + ACC_TOLERANCE < aa < 1.0 and math.isfinite(ab) and math.isfinite(lb) \
                and lb > 0 and math.isfinite(la) and (1.0 + LOSS_TOLERANCE) * lb < la \
                and not accuracy_outweighs(self.before, self.after, ca):
            # the accuracy rose, the train loss rose by a larger factor than the error fell:
            # _better's trade-off refused it ("did not help" alone read as a run that
            # changed nothing)
            return (f" (the validation accuracy rose {100 * (aa - ab):.3g} points, but its "
                    f"error fell only {(1 - ab) / (1 - aa):.3g}x, {1 - ab:.3g} -> "
                    f"{1 - aa:.3g}, while the train loss rose {la / lb:.3g}x)")
        loss = (isinstance(c, (int, float)) and math.isfinite(c) and math.isfinite(la)
                and (1.0 - LOSS_TOLERANCE) * c <= la < (1.0 - LOSS_TOLERANCE) * lb)
        tol = max(ACC_TOLERANCE, 1.5 / self.n_val) if self.n_val else ACC_TOLERANCE
        margin = _chance_noise(ca, self.n_val, tol)  # as doctor._better reads them
        acc = (isinstance(ca, (int, float)) and math.isfinite(ca) and math.isfinite(aa)
               and ab + tol < aa <= ca + margin)
        noise = (f" by more than {margin:.2g}, {CHANCE_ACC_Z:g} standard errors of an accuracy "
                 f"on {self.n_val} examples" if margin > tol else "")
        if loss and acc:
            return (f" (the train loss did not end below a constant prediction's, {c:.4g}, nor "
                    f"the validation accuracy above its {ca:.4g}{noise})")
        if loss:
            return f" (the train loss did not end below a constant prediction's, {c:.4g})"
        if acc:
            return (" (the validation accuracy did not end above a constant prediction's, "
                    f"{ca:.4g}{noise})")
        return ""

    def summary(self) -> str:
        """One line: train loss, val accuracy and the finding's metric before -> after, and
        whether the prescription helped (the rule in the class docstring); a re-training that
        failed (:attr:`error`) has no after: ``train loss 1.366 -> none: did not help (its
        re-training failed: ...)``."""
        b, a = self.before, self.after
        if self.error:
            return f"train loss {_loss(b)} -> none: {self.verdict()}"
        val = (f"val acc {_fmt(b.get('val_acc'))} -> {_fmt(a.get('val_acc'))}, "
               if _measured(b.get("val_acc")) or _measured(a.get("val_acc")) else "")
        return (f"train loss {_loss(b)} -> {_loss(a)}, "
                f"{val}{self.metric} {self._metric_before()} -> {self._metric_after()}"
                f": {self.verdict()}")

    def _metric_after(self) -> str:
        """The finding's metric after the cure; NaN after a run that trained (finite loss,
        not diverged) while it was measured before is the cure removing what it measures (a
        relu swap: no saturating layer left for the saturated fraction; LSUV's orthogonal
        recurrent matrices: no ratio judged), said so: a bare 'nan' read as a broken
        measurement."""
        after = self.metric_after
        if (isinstance(after, float) and math.isnan(after) and _measured(self.metric_before)
                and not self.after.get("diverged") and _measured(self.after.get("train_loss"))):
            if self.kind == "init_mismatch" and self.prescription.get("init") != "lsuv":
                # a formula initializer's random weights are judged only in layers of
                # INIT_MIN_WEIGHTS or more (a variance of 0 in any layer): "inf -> none (the
                # cure left nothing this metric measures)" read as if it removed the weights
                from .rules import INIT_MIN_WEIGHTS

                return ("none judged (the cure's weights are a random draw, whose variance is "
                        f"judged only in a layer of {INIT_MIN_WEIGHTS} weights or more; every "
                        f"layer has fewer than {INIT_MIN_WEIGHTS} weights)")
            if self.kind == "init_mismatch":  # LSUV: a data-driven init, no variance rule
                return ("none judged (a data-driven init is judged by its step-0 signal "
                        "from the first to the last hidden layer, which needs 2 of them)")
            return "none (the cure left nothing this metric measures)"
        return _fmt(after)

    def _metric_before(self) -> str:
        """The finding's metric before the cure; an init mismatch's infinite factor is a
        variance of 0 (zeros or constant init), said so: a bare 'inf' read as a broken
        measurement."""
        before = self.metric_before
        if self.kind == "init_mismatch" and before == math.inf:
            return "inf (a variance of 0: all weights equal)"
        return _fmt(before)

    def verdict(self) -> str:
        """The end of :meth:`summary`: ``helped`` or ``did not help`` with what decided it (the
        report's verification lines end with it too)."""
        if self.helped:
            verdict = "helped" + (" (finding resolved)" if self.resolved else "")
            above = self._above_threshold()
            if self.resolved and (self.metric_after >= self.metric_before or above):
                # gone although its metric did not fall, or fell but stays above the rule's
                # threshold: the rule's other conditions no longer hold (mean_shift does not
                # judge ReLU, f(0) = 0; "0.587 -> 0.640: helped (finding resolved)" read as a
                # contradiction, "0.5417 -> 0.4223: helped (finding resolved)" as a ReLU's
                # mean of 0.42 being fine)
                why = ("the metric did not fall" if self.metric_after >= self.metric_before
                       else f"the metric is still above its threshold {above}")
                verdict = ("helped (finding resolved: its rule no longer applies to this setup, "
                           f"although {why})")
            verdict += self.trade_off()
        else:
            verdict = "did not help" + self._chance_reason()
        return verdict


def _timeless(value: Any) -> Any:
    """``value`` (a :meth:`Diagnosis.to_dict`) without its ``seconds`` entries."""
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


@dataclass
class Diagnosis:
    """The doctor's report: ``findings`` (empty = clean bill of health), the ``baseline`` run's
    metrics, ``verifications`` (with ``verify=True``), the probe table ``probes`` (columns
    step, layer, quantity, value), the network ``config`` and training ``settings``;
    ``chance_loss``: the best constant prediction's loss ``L_c`` on the training set (NaN where
    unknown, as in a diagnosis stored before it was kept), for :func:`unlearned_text`."""

    findings: list[Finding]
    baseline: dict[str, float]
    probes: pd.DataFrame
    config: dict[str, Any]
    settings: dict[str, Any]
    verifications: list[Verification] = field(default_factory=list)
    bn_drift: list[dict[str, float]] = field(default_factory=list)
    chance_loss: float = math.nan

    @property
    def healthy(self) -> bool:
        """True when no rule fired."""
        return not self.findings

    @property
    def kinds(self) -> list[str]:
        return [f.kind for f in self.findings]

    def finding(self, kind: str) -> Finding | None:
        """The finding of ``kind``, or None when the diagnosis has none of that kind. A name
        that is no finding kind (:data:`~depthlab.diagnosis.rules.KINDS`) is a ValueError
        naming it and the likely one: ``finding("vanishing_gradient")`` was None, read as
        "no vanishing gradients" whatever the diagnosis found."""
        from ..validators import did_you_mean
        from .rules import KINDS

        if not isinstance(kind, str):
            raise TypeError(f"kind must be a finding kind's name (a str), got "
                            f"{type(kind).__name__} {kind!r:.40}")
        known = KINDS + TORCH_ONLY_KINDS
        if kind not in known and kind not in self.kinds:
            raise ValueError(f"unknown finding kind {kind!r}{did_you_mean(kind, known)}; "
                             f"accepted: {', '.join(known)}")
        return next((f for f in self.findings if f.kind == kind), None)

    def __eq__(self, other: object) -> bool:
        """The same results: findings, verifications, metrics, probe table, config and settings
        (the generated ``__eq__`` compared the probe DataFrames by truth value: an error). The
        wall-clock ``seconds`` of the runs, which differ between identical runs, are left out;
        non-finite values compare equal, as :meth:`to_dict` writes them (None)."""
        if not isinstance(other, Diagnosis):
            return NotImplemented
        return (_timeless(self.to_dict()) == _timeless(other.to_dict())
                and self.probes.equals(other.probes))

    __hash__ = None  # mutable, compared by value

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (the probe table is not included; see ``probes``)."""
        return jsonable({
            "healthy": self.healthy,
            "config": self.config,
            "settings": self.settings,
            "baseline": self.baseline,
            "findings": [f.to_dict() for f in self.findings],
            "verifications": [v.to_dict() for v in self.verifications],
            "bn_drift": self.bn_drift,
            "chance_loss": self.chance_loss,
        })

    @classmethod
    def from_dict(cls, d: dict[str, Any], probes: pd.DataFrame | None = None) -> Diagnosis:
        """The diagnosis :meth:`to_dict` wrote, e.g. read back from its JSON (``depthlab doctor
        --json``) or a stored doctor run's ``findings``; ``probes``: its probe table (not in
        the dict; default empty). ``Diagnosis.from_dict(json.loads(json.dumps(dg.to_dict())),
        dg.probes) == dg``; non-finite numbers, which JSON holds as None, come back as NaN, or as
        the infinities of a finding's evidence or a verification's numbers that their
        ``"infinite"`` entries name."""
        if not isinstance(d, dict) or "findings" not in d:
            raise TypeError(f"expected the dict of Diagnosis.to_dict() (with 'findings'), got "
                            f"{type(d).__name__}")
        table = probes if probes is not None else pd.DataFrame(
            {"step": pd.Series(dtype="int64"), "layer": pd.Series(dtype="int64"),
             "quantity": pd.Series(dtype=object), "value": pd.Series(dtype="float64")})
        return cls(findings=[Finding.from_dict(f) for f in d.get("findings") or []],
                   baseline=_numbers(d.get("baseline")), probes=table,
                   config=dict(d.get("config") or {}), settings=dict(d.get("settings") or {}),
                   verifications=[Verification.from_dict(v)
                                  for v in d.get("verifications") or []],
                   bn_drift=[_numbers(b) for b in d.get("bn_drift") or []],
                   chance_loss=_number(d.get("chance_loss")))

    def __repr__(self) -> str:
        from ..report.notebook import diagnosis_repr

        return diagnosis_repr(self)

    def _repr_html_(self) -> str:
        """Findings first, then the gradient-per-layer figure (Jupyter)."""
        from ..report.notebook import diagnosis_html

        return diagnosis_html(self)

    def __str__(self) -> str:
        c, s, b = self.config, self.settings, self.baseline
        sizes = c.get("sizes")
        arch = "-".join(str(v) for v in sizes) if sizes else str(c.get("model") or "network")
        extras = [k for k in ("batchnorm", "residual") if c.get(k)]
        if c.get("batchnorm") and c.get("normalization"):  # a torch model's: e.g. LayerNorm
            extras[0] = str(c["normalization"])
        if c.get("dropout"):
            extras.append(f"dropout {c['dropout']}")
        lines = [
            f"depthlab doctor: {arch}"
            + (f" {c['activation']}" if c.get("activation") else "")  # hand-built: no "?"
            + f", init {c.get('init', '?')}"
            + (f" ({', '.join(extras)})" if extras else ""),
            f"  run: {s.get('steps')} step{'' if s.get('steps') == 1 else 's'} of "
            f"{s.get('optimizer')} lr {s.get('lr')}"
            + "".join(f" {k} {v}" for k, v in (s.get("optimizer_kwargs") or {}).items())
            + "".join(f", {k} {s[k]}" for k in ("l1", "l2") if s.get(k))
            + f", batch {s.get('batch_size')}"
            + (f" (all {s['rows_per_step']} training rows each step)"
               if s.get("rows_per_step") else "")
            + f", seed {s.get('seed')}"
            + (", inputs standardized" if s.get("standardize") else "")
            + (", targets standardized (losses in their units)"
               if s.get("standardize_targets") else ""),
            f"  baseline: train loss {_fmt(b.get('train_loss'))}"
            + (f", val acc {_fmt(b.get('val_acc'))}" if _measured(b.get("val_acc")) else "")
            + (" (diverged)" if b.get("diverged") else ""),
        ]
        if self.healthy:
            unlearned = unlearned_text(b, self.chance_loss)
            lines.append(f"  no findings, but {unlearned}" if unlearned else
                         "  clean bill of health: no findings.")
            return "\n".join(lines)
        lines.append(f"  findings ({len(self.findings)}):")
        by_kind: dict[str, list[Verification]] = {}
        for v in self.verifications:
            by_kind.setdefault(v.kind, []).append(v)
        for f in self.findings:
            where = f" ({layers_text(f.layers)})" if f.layers else ""
            lines.append(f"  [{f.severity}] {f.kind}{where}: {f.message}")
            if f.prescription:
                lines.append(f"      prescription {json.dumps(jsonable(f.prescription))}: "
                             f"{f.prescription_text}")
            elif f.prescription_text:  # advice with no config change to verify
                lines.append(f"      advice: {f.prescription_text}")
            tried = by_kind.get(f.kind, [])
            for v in tried:  # several cures of one finding (torch doctor): say which
                which = f" {json.dumps(jsonable(v.prescription))}" if len(tried) > 1 else ""
                lines.append(f"      verified{which}: {v.summary()}")
        return "\n".join(lines)


UNLEARNED_SHARE = 0.95
"""A baseline whose final train loss ``L`` is at least this share of a constant prediction's
``L_c`` (``Diagnosis.chance_loss``) did not learn: a diagnosis with no findings says so rather
than "clean bill of health" (a GAP CNN at 2.275 against ln 10 = 2.303 read healthy)."""


def unlearned_text(baseline: dict[str, Any], chance: float) -> str | None:
    """For a baseline whose train loss ``L`` did not leave a constant prediction's ``L_c``
    (``chance``), ``L >= UNLEARNED_SHARE L_c`` (finite, ``L_c > 0``), the sentence that says it:
    ``"the run did not learn: train loss 2.275, 0.99x a constant prediction's 2.303 (...)"``;
    None otherwise, or where ``L_c`` is NaN (unknown, or a diagnosis stored before it was
    kept)."""
    loss = baseline.get("train_loss")
    finite = [isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
              for v in (loss, chance)]
    if not (all(finite) and chance > 0 and loss >= UNLEARNED_SHARE * chance):
        return None
    return (f"the run did not learn: train loss {loss:.4g}, {loss / chance:.2f}x a constant "
            f"prediction's {chance:.4g} (a longer run, another learning rate or optimizer may; "
            "nothing the doctor measures is sick)")


LAYER_RUNS_SHOWN = 8
"""A finding's layers are all listed up to this many runs of neighbours; beyond, their count,
the first six runs and the last two (the doctor's text, the report's findings table)."""


def layers_text(layers: list[int]) -> str:
    """A finding's layers for a person: ``"layer 5"``, ``"layers 1-3, 5"``; past
    :data:`LAYER_RUNS_SHOWN` runs of neighbours ``"511 layers: 1-23, 25, 27, 29, 31, 33, …,
    997, 999"`` (a 1000-block residual net's ``bn_drift`` listed 412 runs, thirty lines of
    numbers before its message)."""
    parts = _ranges(list(layers)).split(", ")
    if len(parts) <= LAYER_RUNS_SHOWN:
        return f"{'layer' if len(set(layers)) == 1 else 'layers'} {', '.join(parts)}"
    return (f"{len(set(layers))} layers: {', '.join(parts[:6])}, \u2026, "
            f"{', '.join(parts[-2:])}")


def _ranges(layers: list[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``"1-3, 5"``."""
    out: list[str] = []
    start = prev = None
    for v in sorted(layers):
        if start is None:
            start = prev = v
        elif v == prev + 1:
            prev = v
        else:
            out.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = v
    if start is not None:
        out.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ", ".join(out)
