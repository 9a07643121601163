"""The Doctor button: ``depthlab.doctor`` on the session's setup, as JSON for the page.

The doctor trains its own fresh copy of the network (built from the same ``mlp()`` arguments
and seed, on the session's data) for :data:`DOCTOR_STEPS` steps (fewer for very deep networks,
:func:`doctor_steps`) with the session's optimizer settings, with ``verify=True``: every
prescription is re-run under the same budget and the before/after numbers come back. Each
finding also carries the setup with its prescription applied (``apply``), i.e. the page's URL
query after pressing "apply".
"""

from __future__ import annotations

import threading
from typing import Any

from ..diagnosis import doctor
from ..diagnosis.doctor import doctor_train_kwargs
from ..diagnosis.findings import jsonable
from ..training.trainer import Callback
from .setup import SetupError, apply_prescription, parse_setup, to_config, to_query

DOCTOR_STEPS = 200
"""The doctor's training budget per run (its own default)."""

DEEP_STEPS = ((100, 200), (300, 100))
"""``(max hidden layers, steps)``: deeper networks get 50 steps per run, so that the doctor's
runs (one plus one per prescription) stay within a minute or two on a laptop."""


def doctor_steps(depth: int) -> int:
    """The doctor's budget for a network of ``depth`` hidden layers (see :data:`DEEP_STEPS`)."""
    return next((steps for limit, steps in DEEP_STEPS if depth <= limit), 50)


class DoctorStopped(Exception):
    """The doctor was stopped (its page closed) before it finished."""


class _StopWhenSet(Callback):
    """Ends the doctor's current training run at the next step once ``event`` is set."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def after_update(self, trainer: Any, step: int, loss: float) -> None:
        if self.event.is_set():
            raise DoctorStopped("the doctor was stopped")


def applied_query(setup: dict[str, Any], prescription: dict[str, Any]
                  ) -> tuple[dict[str, str] | None, str | None]:
    """``(query, None)``: the page's query with ``prescription`` applied, a setup the
    playground accepts; ``(None, why)`` when it has no control for it or refuses the setup
    it makes. Batch norm prescribed for a setup of batch size 1 got an apply button whose
    click was refused ('model.batchnorm = true needs at least 2 rows per batch'), under a
    note saying the prescription had been applied."""
    try:
        applied = apply_prescription(setup, prescription)
    except SetupError as e:
        return None, str(e)
    try:
        to_config(parse_setup(to_query(applied)))  # the checks of the page's own changes
    except SetupError as e:
        return None, f"no apply button: the setup it makes is refused here: {e}"
    return to_query(applied), None


def verification_texts(obj: Any) -> dict[str, str]:
    """What the page writes of one ``Verification`` as the command line writes it:
    ``trade_off`` (what the verdict weighed: ", held-out accuracy up 16 points although the
    train loss rose 2%"; the page said only "helped"), ``reason`` (why a cure did not help:
    " (the train loss ended at 1.378e+12, more than 1.5x a constant prediction's 2.292: the
    run did not learn)") and ``metric_change``, the finding's metric before and after
    (``inf → none judged (...)`` for an init mismatch whose cure has no layer of 20 weights:
    JSON has no infinity or NaN, and the page read both as "not finite → not finite", a cure
    that broke the measurement)."""
    from ..diagnosis.findings import _fmt

    def word(v: Any) -> str:  # the page's word for a NaN (a diverged run's), as elsewhere
        return "not finite" if isinstance(v, float) and v != v else _fmt(v)

    after = obj._metric_after()
    if not after.startswith("none"):
        after = word(obj.metric_after)
    return {"trade_off": obj.trade_off(), "reason": "" if obj.helped else obj._chance_reason(),
            "metric_change": f"{word(obj.metric_before)} \u2192 {after}"}


def run_doctor(prep: Any, setup: dict[str, Any], steps: int | None = None,
               stop: threading.Event | None = None) -> dict[str, Any]:
    """Diagnose the prepared run ``prep`` (``experiments.runner.Prepared``) of ``setup``
    (``steps`` default: :func:`doctor_steps` of its depth). ``stop``: once set, the doctor
    ends within one training step by raising :class:`DoctorStopped` (its tab was closed:
    minutes of training for nobody)."""
    if steps is None:
        steps = doctor_steps(int(setup["model.depth"]))
    t = prep.config["train"]
    ds = prep.data
    data = ((ds.x_train, prep.y_train, ds.x_val, prep.y_val) if prep.y_val is not None
            else (ds.x_train, prep.y_train))
    batch = t["batch_size"] if isinstance(t["batch_size"], int) else int(ds.x_train.shape[0])
    # the page's l2 too: the doctor diagnosed the setup's training without its penalty
    train = {k: v for k, v in doctor_train_kwargs(t).items() if k != "batch_size"}
    diagnosis = doctor(dict(prep.net.config), data, steps=steps, batch_size=batch, **train,
                       verify=True, callbacks=() if stop is None else (_StopWhenSet(stop),))
    out = diagnosis.to_dict()
    out.pop("config", None)
    for v, obj in zip(out["verifications"], diagnosis.verifications):
        v.update(verification_texts(obj))
    for f in out["findings"]:
        f["apply"], error = applied_query(setup, f["prescription"] or {})
        if error is not None:
            f["apply_error"] = error
        f["verifications"] = [v for v in out["verifications"] if v["kind"] == f["kind"]]
    out["text"] = str(diagnosis)
    out["steps"] = steps
    return jsonable(out)
