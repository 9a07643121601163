"""Checks for the fields of a run spec (:mod:`depthlab.spec`): one small object per kind of value.

A check is called as ``check(key, value)`` and returns the normalised value (``"ReLU"`` ->
``"relu"``, ``[0, "end"]`` -> ``(0, "end")``) or raises :class:`ConfigError` with one line
``key = value problem; accepted: what`` (``key`` is ``"model.dropout"`` for a TOML file and
``"dropout"`` for a keyword argument). ``check.accepted`` is that "what" and ``check.schema()``
describes the value for a user interface (type, choices, bounds).
"""

from __future__ import annotations

import datetime
import json
import math
import numbers
import os
import re
from typing import Any

import numpy as np

from . import validators
from .validators import to_float

__all__ = [
    "BatchSize", "Bool", "Check", "Choice", "ConfigError", "ConfigTypeError", "Dtype",
    "FilePath", "Float", "Int", "JacobianSteps", "Label", "Name", "Sizes", "Steps", "Text",
    "Table", "fmt", "is_int", "is_num",
]


class ConfigError(ValueError):
    """A bad setting of a run; ``str(err)`` is a one-line message naming key, value and what
    is accepted. ``key`` is the dotted key (``"model.dropout"``) or None."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def fmt(value: Any, _depth: int = 0) -> str:
    """A value as it is written in a TOML file (strings quoted, booleans lower case); lists
    and tables nested more than 8 levels deep shown as ``[...]``/``{...}`` (a value nested
    thousands deep raised RecursionError instead of its message); a TOML date or time in its
    ISO form, as the file wrote it (``1979-05-27``, not ``datetime.date(1979, 5, 27)``)."""
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, dict | list | tuple) and _depth >= 8:
        return "{...}" if isinstance(value, dict) else "[...]"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {fmt(v, _depth + 1)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(fmt(v, _depth + 1) for v in value) + "]"
    if isinstance(value, int) and abs(value) >= 10**21:  # 10**400: short, and str() of
        exp = math.floor(math.log10(abs(value)))  # more than 4300 digits would raise
        return f"{'-' if value < 0 else ''}{10 ** (math.log10(abs(value)) - exp):.3g}e+{exp}"
    return repr(value)


class ConfigTypeError(ConfigError, TypeError):
    """A setting of the wrong type (also a TypeError, as the Python API raises for those)."""


def did_you_mean(word: Any, names: Any) -> str:
    """`` (did you mean "relu"?)``: the accepted name a mistyped ``word`` most likely meant
    (:func:`depthlab.validators.did_you_mean`), written as the config writes values
    (:func:`fmt`), else ``""`` (also for a ``word`` that is not text). The one hint of every
    field with named values: registries, fixed choices, data set names and options."""
    return validators.did_you_mean(word, names, fmt) if isinstance(word, str) else ""


def bad(key: str, value: Any, accepted: str, problem: str = "is not accepted",
        names: Any = None) -> ConfigError:
    """``key = value problem (did you mean ...?); accepted: accepted`` as a
    :class:`ConfigError` (a :class:`ConfigTypeError` when the problem is the type); the hint
    (:func:`did_you_mean`) when ``names`` lists the accepted words and ``value`` is text."""
    cls = ConfigTypeError if problem == "has the wrong type" else ConfigError
    hint = did_you_mean(value, names) if names is not None else ""
    return cls(f"{key} = {fmt(value)} {problem}{hint}; accepted: {accepted}", key)


def number_hint(v: Any, whole: bool) -> str:
    """What to write for a number given in another form: a number in quotes (``seed = "0"``,
    ``lr = "0.1"``: TOML and JSON read text) is `` (did you mean 0, without quotes?)``, and a
    whole number written with a decimal point where an integer is expected (``batch_size =
    8.0``) `` (did you mean 8?)``, as the CLI's options say of ``--limit 1e3``; ``""`` for any
    other value (a fraction where an integer is expected, text that is no number)."""
    if isinstance(v, str):
        text = v.strip()
        if not re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", text):
            return ""  # "nan", "inf", "1_000" and words are no number to suggest
        value = float(text)
        if not math.isfinite(value) or (whole and abs(value) >= 2.0**53):
            return ""  # (a whole number past 2**53 printed in full: a 301-digit hint)
        if whole:
            if value != int(value):
                return ""
            text = str(int(value))
        return f" (did you mean {text}, without quotes?)"
    if whole and isinstance(v, float) and math.isfinite(v) and v == int(v) \
            and abs(v) < 2.0**53:
        return f" (did you mean {int(v)}?)"
    return ""


def wrong_type(key: str, value: Any, accepted: str, whole: bool,
               names: Any = None) -> ConfigError:
    """:func:`bad`'s "has the wrong type" with :func:`number_hint` at its end (``whole``: an
    integer is expected)."""
    e = bad(key, value, accepted, "has the wrong type", names=names)
    hint = number_hint(value, whole)
    if hint and "(did you mean" not in str(e):
        e = type(e)(f"{e}{hint}", key)
    return e


def is_int(v: Any) -> bool:
    """An integer (NumPy integers too) that is not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    """A real number (NumPy numbers too) that is not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def as_list(v: Any) -> list | None:
    """``v`` as a list when it is a list, a tuple, a ``range`` or a 1-D NumPy array (what
    ``mlp(sizes)`` takes: ``np.array([64, 128, 10])`` was refused by ``ModelSpec``, the config
    and ``Trainer`` while ``mlp`` built it), else None."""
    if isinstance(v, list | tuple | range):
        return list(v)
    if getattr(v, "ndim", None) == 1 and callable(getattr(v, "tolist", None)) \
            and getattr(getattr(v, "dtype", None), "kind", "") in "biuf":
        return v.tolist()
    return None


class Check:
    """Base class: ``__call__(key, value)`` normalises or raises; ``accepted``; ``schema()``."""

    kind = "any"
    accepted = "any value"

    def __call__(self, key: str, value: Any) -> Any:
        return value

    def schema(self) -> dict[str, Any]:
        """``{"type": ..., "accepted": ...}`` plus choices/bounds where they exist."""
        return {"type": self.kind, "accepted": self.accepted}


class Int(Check):
    """An integer ``>= lo``; ``optional``: None (omitted) is accepted too."""

    kind = "int"

    def __init__(self, lo: int | None = None, *, optional: bool = False) -> None:
        self.lo, self.optional = lo, optional
        self.accepted = ("an integer" if lo is None else f"an integer >= {lo}") + (
            " (or omit it)" if optional else "")

    def __call__(self, key: str, v: Any) -> Any:
        if v is None and self.optional:
            return None
        if not is_int(v):
            raise wrong_type(key, v, self.accepted, whole=True)
        if self.lo is not None and v < self.lo:
            raise bad(key, v, self.accepted, "is out of range")
        return int(v)

    def schema(self) -> dict[str, Any]:
        return {**super().schema(), "min": self.lo, "optional": self.optional}


class Float(Check):
    """A finite number between ``lo`` and ``hi`` (each bound closed unless ``*_open``)."""

    kind = "float"

    def __init__(self, lo: float | None = None, hi: float | None = None, *,
                 lo_open: bool = False, hi_open: bool = True, what: str = "a finite number"
                 ) -> None:
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open
        parts = []
        if lo is not None:
            parts.append(f"{'>' if lo_open else '>='} {lo:g}")
        if hi is not None:
            parts.append(f"{'<' if hi_open else '<='} {hi:g}")
        self.accepted = what + (" " + " and ".join(parts) if parts else "")

    def __call__(self, key: str, v: Any) -> Any:
        if not is_num(v):
            raise wrong_type(key, v, self.accepted, whole=False)
        f = to_float(v)  # 10**400: inf, refused as not finite
        lo, hi = self.lo, self.hi
        if (not math.isfinite(f) or (lo is not None and (f < lo or (self.lo_open and f == lo)))
                or (hi is not None and (f > hi or (self.hi_open and f == hi)))):
            raise bad(key, v, self.accepted, "is out of range")
        return f + 0.0  # -0.0 as 0.0: one config, one run id

    def schema(self) -> dict[str, Any]:
        return {**super().schema(), "min": self.lo, "max": self.hi,
                "min_open": self.lo_open, "max_open": self.hi_open}


class Bool(Check):
    kind = "bool"
    accepted = "true or false"

    def __call__(self, key: str, v: Any) -> Any:
        if not isinstance(v, bool | np.bool_):
            raise bad(key, v, self.accepted, "has the wrong type")
        return bool(v)


class Choice(Check):
    """One of a few fixed strings (case and surrounding blanks ignored)."""

    kind = "choice"

    def __init__(self, *choices: str) -> None:
        self.choices = choices
        self.accepted = ", ".join(fmt(c) for c in choices)

    def __call__(self, key: str, v: Any) -> Any:
        if not isinstance(v, str):
            raise bad(key, v, self.accepted, "has the wrong type")
        if v.strip().lower() not in self.choices:
            raise bad(key, v, self.accepted, names=self.choices)
        return v.strip().lower()

    def schema(self) -> dict[str, Any]:
        return {**super().schema(), "choices": list(self.choices)}


UNSUPPORTED_FLOATS = frozenset({"float16", "half", "bfloat16", "float128", "longdouble"})
"""Floating-point types a network cannot be computed in (named as such, without a hint)."""


class Dtype(Choice):
    """``"float32"`` or ``"float64"``; NumPy dtypes (``np.float64``) are accepted too."""

    def __init__(self) -> None:
        super().__init__("float32", "float64")

    def __call__(self, key: str, v: Any) -> Any:
        if isinstance(v, list | tuple | dict):  # np.dtype makes a structured "void" of them
            raise bad(key, v, self.accepted, "has the wrong type")
        if not isinstance(v, str):
            try:
                v = np.dtype(v).name
            except TypeError:
                raise bad(key, v, self.accepted, "has the wrong type") from None
        if isinstance(v, str) and v.strip().lower() in UNSUPPORTED_FLOATS:
            # no near miss to suggest: "float16" was told 'did you mean "float64"?'
            raise bad(key, v, self.accepted + " (depthlab computes in single or double "
                      "precision)", "is not supported")
        return super().__call__(key, v)


class Table(Check):
    """A table (dict) of keyword arguments, copied."""

    kind = "table"
    accepted = "a table of keyword arguments, e.g. {alpha = 0.1}"

    def __call__(self, key: str, v: Any) -> Any:
        if not isinstance(v, dict):
            raise bad(key, v, self.accepted, "has the wrong type")
        return dict(v)


class Text(Check):
    kind = "str"
    accepted = "a non-empty string"

    def __call__(self, key: str, v: Any) -> Any:
        if not isinstance(v, str):
            raise bad(key, v, self.accepted, "has the wrong type")
        if not v.strip():  # a string, but blank
            raise bad(key, v, self.accepted, "is empty")
        lone = unencodable(v)
        if lone:  # a JSON "\ud800": the run trained, then its name failed to be stored
            raise bad(key, v, f"{self.accepted} of Unicode text (it holds the lone surrogate "
                      f"{lone})")
        return v


class FilePath(Text):
    """A file's path: a string or an ``os.PathLike`` (``pathlib.Path``), kept as the string
    (a ``Path`` was refused from Python as having "the wrong type", though it names the same
    file as its string and gives the same run)."""

    accepted = "a non-empty string or path (os.PathLike)"

    def __call__(self, key: str, v: Any) -> Any:
        if isinstance(v, os.PathLike):
            text = os.fspath(v)
            if not isinstance(text, str):  # a bytes path
                raise bad(key, v, self.accepted + " of text, not bytes", "has the wrong type")
            v = text
        v = super().__call__(key, v)
        if isinstance(v, str) and "\x00" in v:  # no file name holds one (os.stat raises)
            raise bad(key, v, self.accepted + " without NUL characters",
                      "holds a NUL character, which no file name can")
        if isinstance(v, str) and _URL.match(v):  # was "no such file (/cwd/https:/host/f)"
            raise bad(key, v, "a path on this machine (download the file first)", "is a URL")
        return v


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
"""A URL's start (``https://``, ``s3://``): file paths are read from this machine only."""


def unencodable(text: str) -> str | None:
    """The first character of ``text`` that UTF-8 cannot encode (a lone surrogate, from a JSON
    ``\\ud800`` escape or undecodable command-line bytes), escaped; None when there is none."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return ascii(text[e.start])[1:-1]
    return None


class Label(Check):
    """A CSV label column: a name, or a 0-based column index (the loader's rule,
    ``depthlab.data.files``)."""

    kind = "label"
    accepted = ("a column name or a 0-based column index (an integer >= 0), or a list of them "
                "(the target columns of a regression)")

    def __call__(self, key: str, v: Any) -> Any:
        if isinstance(v, list | tuple):
            if not v:
                raise bad(key, v, self.accepted, "names no column")
            out = [self(f"{key}[{i}]", one) for i, one in enumerate(v)]
            if any(isinstance(one, list) for one in out) or len(set(map(str, out))) < len(out):
                raise bad(key, v, self.accepted, "names a column twice or nests lists")
            return out
        if v is None or (isinstance(v, str) and v):
            return v
        if is_int(v):
            if v < 0:
                raise bad(key, v, self.accepted, "is out of range")
            return v
        raise bad(key, v, self.accepted, "has the wrong type")


class Name(Check):
    """A name registered in ``registry`` (a :class:`depthlab.registry.Registry`), returned
    canonical (``"xavier_uniform"`` -> ``"glorot_uniform"``); objects the registry passes
    through (an ``Initializer`` built with arguments) are returned unchanged. ``none``: None
    or ``"none"`` means "no such thing"."""

    kind = "name"

    def __init__(self, registry: Any, *, none: bool = False) -> None:
        self.registry, self.none = registry, none

    @property
    def accepted(self) -> str:  # type: ignore[override]
        return ", ".join(self.registry.names) + (' (or "none")' if self.none else "")

    def __call__(self, key: str, v: Any) -> Any:
        if self.none and (v is None or (isinstance(v, str) and v.strip().lower() == "none")):
            return None
        reg = self.registry
        if reg.passes(v):
            return v
        if not isinstance(v, str):
            raise bad(key, v, self.accepted, "has the wrong type")
        try:
            return reg.key(v)
        except (ValueError, TypeError):
            # aliases too (`init = "xavier"`: did you mean "glorot_normal"?), each shown as
            # the name it stands for
            close = validators.closest_name(v, (*reg.names, *reg.aliases))
            hint = f" (did you mean {fmt(reg.aliases.get(close, close))}?)" if close else ""
            raise ConfigError(f"{key} = {fmt(v)} is not a known {reg.kind}{hint}; accepted: "
                              f"{self.accepted}", key) from None

    def schema(self) -> dict[str, Any]:
        return {**super().schema(), "choices": list(self.registry.names),
                "optional": self.none}


class Sizes(Check):
    """Layer widths ``[n_in, hidden..., n_out]``; the ends may be ``"auto"`` (from the data)."""

    kind = "sizes"
    accepted = ('a list of at least 2 positive integers [n_in, hidden..., n_out]; the first and '
                'the last may be "auto"')

    def __call__(self, key: str, v: Any) -> Any:
        listed = as_list(v)
        if listed is None or len(listed) < 2:
            raise bad(key, v, self.accepted, "has the wrong type"
                      if listed is None else "is too short")
        v = listed
        out: list[Any] = []
        for i, s in enumerate(v):
            if isinstance(s, str) and s.strip().lower() == "auto" and i in (0, len(v) - 1):
                out.append("auto")
            elif is_int(s) and s >= 1:
                out.append(int(s))
            else:
                raise ConfigError(f"{key}[{i}] = {fmt(s)} (in {key} = {fmt(v)}) is not "
                                  f"accepted; accepted: {self.accepted}", key)
        return tuple(out)


class BatchSize(Check):
    kind = "batch_size"
    accepted = 'an integer >= 1 or "full" (full-batch gradient descent)'
    none_means = "full"
    """``None`` (JSON ``null``) is full-batch gradient descent, as ``fit(batch_size=None)`` and
    ``Trainer`` read it: a spec field read None as its default 32, so one recipe trained
    mini-batches of 32 from a config, a ``TrainSpec`` or a grid and full batches from ``fit``."""

    def __call__(self, key: str, v: Any) -> Any:
        if isinstance(v, str) and v.strip().lower() == "full":
            return "full"
        if not is_int(v):  # "ful": did you mean "full"? "8", 8.0: did you mean 8?
            raise wrong_type(key, v, self.accepted, whole=True, names=("full",))
        if v < 1:
            raise bad(key, v, self.accepted, "is out of range")
        return int(v)

    def schema(self) -> dict[str, Any]:
        return {**super().schema(), "min": 1, "choices": ["full"]}


def step_values(v: Any) -> tuple | None:
    """Sorted unique steps (ints >= 0, then ``"end"``), or None if ``v`` is not such a list."""
    v = as_list(v)
    if v is None:
        return None
    ints, end = set(), False
    for s in v:
        if is_int(s) and s >= 0:
            ints.add(int(s))
        elif isinstance(s, str) and s.strip().lower() == "end":
            end = True
        else:
            return None
    return (*sorted(ints), *(("end",) if end else ()))


class Steps(Check):
    """A list of training steps (ints >= 0 and/or ``"end"``), or None for the default."""

    kind = "steps"
    accepted = 'a list of step numbers >= 0 and/or "end" (or omit it for the recorder\'s default)'

    def __call__(self, key: str, v: Any) -> Any:
        if v is None:
            return None
        out = step_values(v)
        if out is None:
            raise bad(key, v, self.accepted)
        return out


class JacobianSteps(Check):
    """``true`` (= at step 0 and at the end), ``false`` (never) or a list of steps."""

    kind = "steps"
    accepted = 'true (at initialization and at the end), false, or a list of steps (ints, "end")'

    def __call__(self, key: str, v: Any) -> Any:
        if isinstance(v, bool):
            return (0, "end") if v else ()
        out = step_values(v)
        if out is None:
            raise bad(key, v, self.accepted)
        return out
