"""Small checks of scalar arguments shared by the engine (activations, initializers, losses,
layers, probes, data generators): each returns the value as a plain Python number or raises
TypeError (wrong type; :class:`ArgumentTypeError`, also a ValueError, from the integer and rate
checks) / ValueError (out of range) naming the argument and the value.

Python floats are returned on purpose: NumPy 2 keeps them weak, so a float32 computation
stays float32 (NEP 50). Experiment settings have their own one-line checks in
:mod:`depthlab.fieldcheck`.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

__all__ = ["ArgumentTypeError", "as_number", "closest_name", "positive_int", "rate", "real",
           "to_float"]


class ArgumentTypeError(ValueError, TypeError):
    """A value of the wrong type for an argument checked by :func:`positive_int` or
    :func:`rate` (``every="5"``, ``p=None``): a TypeError, and still the ValueError these
    checks have always raised, so callers catching either see it."""


def real(name: str, value: Any, *, low: float | None = None, strict: bool = False,
         positive: bool = False) -> float:
    """``float(value)`` for a finite real number (NumPy numbers too; bools refused), at least
    ``low`` (above it with ``strict``; ``positive`` is ``low=0, strict=True``)."""
    if positive:
        low, strict = 0.0, True
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    out = to_float(value)
    if not math.isfinite(out) or (low is not None and (out < low or (strict and out == low))):
        kind = "finite" if low is None else f"a finite number {'>' if strict else '>='} {low:g}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return out


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """``int(value)`` for an integer ``>= minimum`` (NumPy integers too; bools refused)."""
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ArgumentTypeError(f"{name} must be {what}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def rate(name: str, value: Any) -> float:
    """``float(value)`` for a rate in [0, 1) (a dropout probability)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be in [0, 1), got {value!r}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


def as_number(value: Any) -> float:
    """``float(value)`` for a real number (bools and NumPy numbers included), NaN for anything
    else (None, strings): for tables whose cells may be missing."""
    return to_float(value) if isinstance(value, numbers.Real) else float("nan")


def to_float(value: numbers.Real) -> float:
    """``float(value)`` of a real number; an integer beyond the float range (``10**400``) is
    ``+-inf`` instead of an OverflowError, so range checks refuse it as not finite."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def did_you_mean(word: str, names: Iterable[str], quote: Callable[[Any], str] = repr) -> str:
    """`` (did you mean 'adam'?)`` naming :func:`closest_name` of ``word``, written by
    ``quote`` (Python's ``repr``; the config's ``fmt`` in :func:`depthlab.fieldcheck.did_you_mean`),
    else ``""``."""
    close = closest_name(word, names)
    return f" (did you mean {quote(close)}?)" if close else ""


def torch_module_hint(obj: Any, remedy: str) -> str:
    """For a PyTorch module handed to the NumPy engine's API (``dl.probe(model, ...)``): a
    hint naming ``remedy`` of ``depthlab.torch`` (``dlt.probe(model, x, y, loss_fn)``), else
    "". Read from the object's class and its bases' modules: torch is not imported."""
    if not any(c.__module__.partition(".")[0] == "torch" and c.__name__ == "Module"
               for c in type(obj).__mro__):
        return ""
    return f" (a torch.nn.Module: import depthlab.torch as dlt; {remedy})"


def keyword_hints(fn: Callable | None = None, *, positional_hint: str = "") -> Callable:
    """``fn`` (a function or a class's ``__init__``) refusing an unknown keyword argument with
    one TypeError line naming it and the closest accepted one (Python said only
    "__init__() got an unexpected keyword argument 'evry'"), else the accepted ones.
    ``@keyword_hints(positional_hint="...")``: a call with more positional arguments than
    ``fn`` takes is refused naming them and adding the hint (``dl.doctor(net, x, y)``: the
    data is one argument)."""
    if fn is None:
        return functools.partial(keyword_hints, positional_hint=positional_hint)
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return fn
    names = [p.name for p in params if p.name != "self"
             and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    accepted = frozenset(names)
    label = fn.__qualname__.removesuffix(".__init__")
    positional = [p.name for p in params
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    limit = None if any(p.kind is p.VAR_POSITIONAL for p in params) else len(positional)

    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if positional_hint and limit is not None and len(args) > limit:
            shown = [n for n in positional if n != "self"]
            given = len(args) - (len(positional) - len(shown))
            raise TypeError(f"{label}() takes {len(shown)} positional arguments "
                            f"({', '.join(shown)}) but {given} were given; {positional_hint}")
        if not accepted.issuperset(kwargs):
            key = next(k for k in kwargs if k not in accepted)
            hint = did_you_mean(key, names) or f"; accepted: {', '.join(names)}"
            raise TypeError(f"{label}() got an unexpected keyword argument {key!r}{hint}")
        return fn(*args, **kwargs)
    # the defaults stay readable where they were (fn.__kwdefaults__["loss_fn"]); the wrapper's
    # own (*args, **kwargs) ignores them
    checked.__defaults__, checked.__kwdefaults__ = fn.__defaults__, fn.__kwdefaults__
    return checked


def closest_name(word: str, names: Iterable[str]) -> str | None:
    """The accepted name a mistyped ``word`` most likely meant, for "did you mean" hints: a
    name that has ``word`` as one of its ``_``-separated parts (``steps`` -> ``max_steps``,
    ``batch`` -> ``batch_size``; the shortest such), else a name that is one of ``word``'s
    parts (``weight_init`` -> ``init``; the longest such), else a name one edit away (a letter
    changed, added or dropped, two neighbours swapped; the most similar such: ``adma`` ->
    ``adam``, not ``adamax``), else the closest by difflib's similarity ratio ``2 M / T`` (at
    least 0.6), else None. Case, ``-`` and surrounding spaces do not count."""
    names = [str(n) for n in names]
    w = str(word).strip().lower().replace("-", "_")
    parts = [n for n in names if w and w in n.lower().replace("-", "_").split("_")]
    if parts:
        return min(parts, key=len)
    # a name that is one of the word's parts (weight_init -> init, dropout_rate -> dropout:
    # difflib said bias_init and dropout_type); the longest such
    w_parts = w.split("_")

    def inside(name: str) -> bool:  # name's parts appear, in a row, among the word's
        p = name.lower().replace("-", "_").split("_")
        return any(w_parts[i:i + len(p)] == p for i in range(len(w_parts) - len(p) + 1))

    within = [n for n in names if n and inside(n)]
    if within:
        return max(within, key=len)
    lowered = {n.lower(): n for n in names}
    near = [n for n in lowered if _one_edit_apart(w, n)]  # adma -> adam (difflib: adamax)
    if near:
        return lowered[min(near, key=lambda n: (-difflib.SequenceMatcher(None, w, n).ratio(), n))]
    close = difflib.get_close_matches(w, list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def _one_edit_apart(a: str, b: str) -> bool:
    """Whether ``b`` is ``a`` with one letter changed, added or dropped, or two neighbouring
    letters swapped (optimal string alignment distance 1)."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


BN_PROBE_ROWS = 3
"""Fewest rows of a probe batch through batch normalization: over 2 rows it maps each unit to
-1 and +1 whatever its inputs, so no gradient reaches the layers below it (the probes would
report them as vanishing). The config's ``probes.batch``, :func:`depthlab.probe` and a
``ProbeRecorder``'s ``probe_x`` share this rule."""


def check_bn_probe_rows(rows: int, what: str) -> None:
    """Refuse a probe batch of ``rows`` < :data:`BN_PROBE_ROWS` rows through batch norm."""
    if rows < BN_PROBE_ROWS:
        raise ValueError(f"batch normalization needs at least {BN_PROBE_ROWS} rows in {what} "
                         f"(over 2 rows it passes no gradient), got {rows}")


def run_name(value: Any, what: str = "name") -> str | None:
    """A run's name as the store keeps it: None (the default name), or a string that is not
    blank (``depthlab run --name`` refuses one too) and is UTF-8 text (a lone surrogate, as
    ``os.fsdecode`` gives for a non-UTF-8 file name, fails in SQLite only when the run is
    stored, after the training). TypeError for a non-string, ValueError naming the value."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string (the run's name in the store) or None, got "
                        f"{type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{what}={value!r} is blank; expected a non-empty name, or None for "
                         "the default name")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what}={ascii(value)} is not UTF-8 text (it holds the undecodable "
                         f"{ascii(value[e.start])[1:-1]}); expected a name the store can "
                         "hold") from None
    return value
