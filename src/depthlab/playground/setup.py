"""The playground's setup: the controls, their ranges, the URL query and the TOML export.

A setup is a flat dict ``{"section.key": value}`` (``"model.depth": 30``). The same dotted keys
are the URL query parameters, the names of the page's inputs and (grouped by section) the keys
of the TOML config that ``depthlab run`` reads, so one table, :data:`FIELDS`, drives all four.

Each control is a field of the run spec (:mod:`depthlab.spec`): its type, default, doc, choices
and bounds come from :func:`depthlab.spec.fields_schema`; the playground only narrows ranges to
what a browser session can train (depth 1-1000, width and batch size up to 4096, lr from
:data:`MIN_LR` to 10)
and picks its own starting values. Three controls are not spec fields: the data set options
(``data.options.*``, from the built-in data set table) and ``train.momentum`` (an optimizer
hyperparameter, for the optimizers whose signature has it).

Checking happens in two layers: :func:`parse_setup` turns query strings into typed values
inside the playground's ranges; :func:`to_config` then validates the TOML-shaped config with
``depthlab.experiments.config.validate`` (the spec), so a setup the page accepts is exactly one
``depthlab run`` accepts, and :func:`to_toml` writes it with the spec's TOML writer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any

from ..data.registry import BUILTINS, DATASETS
from ..experiments.config import ConfigError, validate
from ..initializers import INITIALIZERS, get_initializer
from ..optimizers import OPTIMIZERS
from ..spec import CUMULATIVE, fields_schema, optimizer_hyperparameters
from ..spec import to_toml as spec_to_toml

MAX_DEPTH = 1000
MAX_WIDTH = 4096
MAX_BATCH = 4096
MIN_LR = 1e-8
"""The smallest learning rate the page accepts. An SGD step ``w - lr * g`` changes a weight only
when ``|lr * g|`` is above half the spacing of the numbers near ``w`` (3.7e-9 near 0.1 in
float32), and an Adam step is about ``lr`` whatever ``g``: below 1e-8 a float32 network's weights
barely change, if at all (100,000 steps of 1e-8 move a weight by 1e-3), and the panels show
nothing learning, as at ``lr = 1e-8`` itself. ``5e-324`` was accepted (the spec asks
``lr > 0``) and trained with a learning rate of 0 in effect, which the page refuses: it is 0
in float32, and in float64 ``lr * g`` is 0 for every ``|g| < 0.5`` and changes no weight
larger than 1e-300."""


class SetupError(ValueError):
    """A setup the playground refuses; ``key`` names the control (None: the whole setup)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Field:
    """One control: ``kind`` in {int, float, bool, choice}; numeric bounds are inclusive
    unless ``lo_open``/``hi_open``; ``datasets`` limits a data option to the sets that take it;
    ``optimizers`` limits an optimizer hyperparameter to those that accept it."""

    key: str
    kind: str
    default: Any
    doc: str
    group: str = "main"
    choices: tuple[str, ...] = ()
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    datasets: tuple[str, ...] = ()
    optimizers: tuple[str, ...] = ()
    words: tuple[str, ...] = ()  # a number field's values that are words ("cumulative")

    def describe(self) -> str:
        """What the field accepts, for messages: ``an integer >= 1 and <= 1000``."""
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        what = "an integer" if self.kind == "int" else "a number"
        parts = []
        # 1e-8, not 1e-08 (Python's exponent of two digits)
        num = (lambda v: str(int(v))) if self.kind == "int" else \
            (lambda v: re.sub(r"e([+-])0(\d)", r"e\1\2", f"{v:g}").replace("e+", "e"))
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {num(self.lo)}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {num(self.hi)}")
        text = f"{what} {' and '.join(parts)}" if parts else what
        return text + "".join(f' or "{w}"' for w in self.words)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "default": self.default, "doc": self.doc,
                "group": self.group, "choices": list(self.choices), "lo": self.lo,
                "hi": self.hi, "lo_open": self.lo_open, "hi_open": self.hi_open,
                "accepts": self.describe(), "datasets": list(self.datasets),
                "optimizers": list(self.optimizers), "words": list(self.words)}


def _takes(option: str) -> tuple[str, ...]:
    return tuple(n for n, s in BUILTINS.items() if s.options and option in s.options)


def _with_momentum() -> tuple[str, ...]:
    return tuple(o for o in OPTIMIZERS if "momentum" in optimizer_hyperparameters(o))


def _bias_initializers() -> tuple[str, ...]:
    """The initializers that can fill a bias (a 1-D shape); ``orthogonal`` needs a matrix, so
    offering it would build nothing but an error."""
    out = []
    for name in INITIALIZERS:
        try:
            get_initializer(name)((2,), 0)
        except ValueError:
            continue
        out.append(name)
    return tuple(out)


# (key, group, playground overrides of the spec's row)
_CONTROLS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("data.name", "main", {"kind": "choice", "choices": DATASETS, "default": "spirals",
                           "doc": "built-in data set (2-D sets show the decision boundary)"}),
    ("model.depth", "main", {"default": 10, "lo": 1, "hi": MAX_DEPTH}),
    ("model.width", "main", {"default": 32, "hi": MAX_WIDTH}),
    ("model.activation", "main", {"default": "tanh"}),
    ("model.init", "main", {"doc": "weight initializer (normal = N(0, 1), uniform = "
                                   "U(-1, 1))"}),
    ("model.batchnorm", "main", {}),
    ("model.residual", "main", {}),
    ("model.dropout", "main", {}),
    ("train.optimizer", "main", {}),
    ("train.lr", "main", {"default": 0.05, "lo": MIN_LR, "lo_open": False, "hi": 10.0,
                          "hi_open": False}),
    # the spec's doc says 'examples per step, or "full"', a value of the TOML file that the
    # page's integer control refuses (its tooltip offered it)
    ("train.batch_size", "main", {"kind": "int", "choices": (), "hi": MAX_BATCH,
                                  "doc": "examples per step"}),
    ("train.seed", "main", {"hi": 2**31 - 1, "doc": "one seed for the data, the weights and "
                                                    "the batches"}),
    ("train.loss", "more", {}),
    ("train.l2", "more", {"hi": 1.0, "hi_open": False}),
    ("model.bias_init", "more", {"choices": _bias_initializers()}),
    # the spec's "cumulative" (the plain mean of the batch statistics): the control's own
    # tooltip offered it, and typing it was refused as "expected a number > 0 and <= 1"
    ("model.bn_momentum", "more", {"words": (CUMULATIVE,)}),
    ("model.bn_inference", "more", {}),
    ("model.dtype", "more", {}),
    ("train.epochs", "more", {"default": 20, "hi": 100_000, "doc": "epochs written into the "
                              "exported TOML for `depthlab run` (the playground trains until "
                              "paused)"}),
)


def _from_spec(key: str, group: str, over: dict[str, Any]) -> Field:
    row = next(r for r in fields_schema() if r["key"] == key)
    kind = {"bool": "bool", "int": "int", "float": "float"}.get(row["type"], "choice")
    spec = {"kind": kind, "default": row["default"], "doc": row["doc"],
            "choices": tuple(row.get("choices") or ()), "lo": row.get("min"),
            "hi": row.get("max"), "lo_open": bool(row.get("min_open")),
            "hi_open": bool(row.get("max_open"))}
    spec.update(over)
    return Field(key, group=group, **spec)


FIELDS: tuple[Field, ...] = (
    *(_from_spec(k, g, o) for k, g, o in _CONTROLS[:1]),
    Field("data.options.n_classes", "int", 2, "number of classes (data set option)", lo=2,
          hi=10, datasets=_takes("n_classes")),
    Field("data.options.noise", "float", 0.1, "noise added to the spirals (data set option)",
          lo=0, hi=2, datasets=_takes("noise")),
    Field("data.options.d", "int", 2, "input dimension of the clusters (data set option)",
          lo=1, hi=1024, datasets=_takes("d")),
    *(_from_spec(k, g, o) for k, g, o in _CONTROLS[1:10]),
    Field("train.momentum", "float", 0.9, "momentum (optimizers with a momentum "
          "hyperparameter)", lo=0, hi=1, hi_open=True, optimizers=_with_momentum()),
    *(_from_spec(k, g, o) for k, g, o in _CONTROLS[10:]),
)

BY_KEY: dict[str, Field] = {f.key: f for f in FIELDS}

DEFAULTS: dict[str, Any] = {f.key: f.default for f in FIELDS}


def _parse_value(f: Field, raw: Any) -> Any:
    bad = SetupError(f"{f.key} = {_short(raw)} is not accepted; expected {f.describe()}",
                     f.key)
    if f.kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("true", "1", "on", "yes"):
            return True
        if text in ("false", "0", "off", "no"):
            return False
        raise bad
    if f.kind == "choice":
        text = _canonical_name(f, str(raw).strip())
        if text not in f.choices:
            raise bad
        return text
    if isinstance(raw, str) and raw.strip().lower() in f.words:
        return raw.strip().lower()
    if isinstance(raw, bool):
        raise bad
    try:
        v = _to_float(raw) if f.kind == "float" else _to_int(raw)
    except (TypeError, ValueError, OverflowError):  # "1e400" as an integer: int(inf)
        hint = _comma_hint(f, raw)
        if hint:
            raise SetupError(f"{bad}, {hint}", f.key) from None
        raise bad from None
    if isinstance(v, float) and not math.isfinite(v):  # an int of any size is finite
        raise bad
    if f.lo is not None and (v < f.lo or (f.lo_open and v == f.lo)):
        raise bad
    if f.hi is not None and (v > f.hi or (f.hi_open and v == f.hi)):
        raise bad
    return v


def _canonical_name(f: Field, text: str) -> str:
    """A choice as the spec reads it (``leaky-relu``, ``LeakyReLU``, ``xavier_uniform``,
    ``CrossEntropyLoss``, ``fashion_mnist``: the canonical name a config file, ``dl.mlp`` and
    ``dl.fit`` make of them, refused here before); lower case when the spec knows no such
    name (the message then lists the control's choices)."""
    from ..spec import SPECS, check_field

    section, _, name = f.key.partition(".")
    try:
        if f.key == "data.name":
            from ..data import find_builtin

            found = find_builtin(text)
            return found.name if found is not None else text.lower()
        canonical = check_field(SPECS[section], name, text)
    except (KeyError, TypeError, ValueError):
        return text.lower()
    return canonical if isinstance(canonical, str) else text.lower()


def _comma_hint(f: Field, raw: Any) -> str:
    """What a number written with a comma needs: a phone's decimal keyboard in a German or
    French locale types "0,05", which was refused as if it were no number at all."""
    text = raw.strip() if isinstance(raw, str) else ""
    if f.kind == "float" and re.fullmatch(r"[+-]?[0-9]*,[0-9]+([eE][+-]?[0-9]+)?", text):
        return f"written with a decimal point: {text.replace(',', '.')}"
    if f.kind == "int" and re.fullmatch(r"[+-]?[0-9]{1,3}(,[0-9]{3})+", text):
        return f"written without thousands separators: {text.replace(',', '')}"
    return ""


def _short(raw: Any) -> str:
    """``repr(raw)`` cut to 40 characters (a value of hundreds of digits: its start says
    enough; an int too long for ``repr`` is described by its digit count)."""
    if isinstance(raw, int) and not isinstance(raw, bool) and raw.bit_length() > 130:
        return f"an integer of about {int(raw.bit_length() * 0.30103) + 1} digits"
    text = repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
"""A number as text: ASCII digits with an optional sign, point and exponent (``12``, ``1e3``,
``.5``). Python's ``float`` also reads ``1_0`` (10), ``٣٢`` (32, Arabic-Indic digits) and
``１２`` (full-width): a typo or a pasted string the page showed back as another value."""


def _number_text(raw: str) -> str:
    text = raw.strip()
    if not _NUMBER.fullmatch(text):
        raise ValueError(text)
    return text


def _to_float(raw: Any) -> float:
    return float(_number_text(raw) if isinstance(raw, str) else raw)


def _to_int(raw: Any) -> int:
    """An integer from an int, an integral float or number text (``10``, ``1e3``, ``5.0``).
    Text is read exactly (``9.9999999999999999`` is no integer, although it rounds to the
    float 10.0); more than 100 digits is refused before it is built."""
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str):
        d = Decimal(_number_text(raw))
        if d.adjusted() > 100 or d != d.to_integral_value():
            raise ValueError(raw)
        return int(d)
    v = float(raw)
    if v != int(v):
        raise ValueError(raw)
    return int(v)


def parse_setup(query: Mapping[str, Any]) -> dict[str, Any]:
    """A complete, typed setup from query parameters (strings) or values; missing keys take
    their defaults. Raises :class:`SetupError` naming the first unknown key, else every bad
    value in one line (its ``key``: the first of them in the controls' order; a link with
    ``model.width=0&model.activation=nope`` named only the width, and the learner met the
    activation's refusal only after fixing it)."""
    unknown = [k for k in query if k not in BY_KEY]
    if unknown:
        raise SetupError(f"unknown setting {_short(unknown[0])}; accepted: "
                         + ", ".join(BY_KEY), unknown[0])
    setup: dict[str, Any] = {}
    refused: list[SetupError] = []
    for f in FIELDS:
        if f.key not in query:
            setup[f.key] = f.default
            continue
        try:
            setup[f.key] = one_value(f.key, query[f.key], partial(_parse_value, f))
        except SetupError as e:
            refused.append(e)
    if refused:
        raise _all_refused(refused)
    return setup


def _all_refused(refused: list[SetupError]) -> SetupError:
    """One :class:`SetupError` for the refusals of several settings: the single one as it is,
    else ``N settings are not accepted: <first>; <second>; ...`` keyed by the first."""
    if len(refused) == 1:
        return refused[0]
    return SetupError(f"{len(refused)} settings are not accepted: "
                      + "; ".join(str(e) for e in refused), refused[0].key)


def _stripped(raw: Any) -> str:
    return str(raw).strip()


def one_value(key: str, raw: Any, parse: Callable[[Any], Any] | None = None) -> Any:
    """The one value a setting was given, parsed by ``parse``: ``parse(raw)``, or the single
    distinct ``parse(v)`` of a list of values ``v`` (a link with ``train.lr=0.1&train.lr=5``,
    read as ``['0.1', '5']``; ``0.1`` and ``0.10`` are one value). Raises :class:`SetupError`
    naming the values when they differ (the last one was taken silently: the link read lr 0.1
    and trained at 5), or when the list is empty. Without ``parse``: the text, stripped."""
    if parse is None:
        parse = _stripped
    if not isinstance(raw, (list, tuple)):
        return parse(raw)
    if not raw:
        raise SetupError(f"{key} is given no value (an empty list); expected one", key)
    parsed = {}
    for v in raw:
        parsed.setdefault(parse(v), v)
    if len(parsed) == 1:
        return next(iter(parsed))
    shown = [_short(v) for v in parsed.values()]
    listed = ", ".join(shown[:4]) + (", ..." if len(shown) > 4 else "")
    raise SetupError(f"{key} is given {len(parsed)} different values ({listed}); expected "
                     "one", key)


def active(setup: Mapping[str, Any], f: Field) -> bool:
    """Whether ``f`` applies to ``setup`` (a data option of another data set or the momentum
    of an optimizer without one does not)."""
    if f.datasets and setup["data.name"] not in f.datasets:
        return False
    return not (f.optimizers and setup["train.optimizer"] not in f.optimizers)


def raw_config(setup: Mapping[str, Any]) -> dict[str, Any]:
    """The TOML-shaped config (sections of plain values) of a parsed setup."""
    s = dict(setup)
    options = {f.key.rsplit(".", 1)[1]: s[f.key] for f in FIELDS
               if f.key.startswith("data.options.") and active(s, f)}
    cfg: dict[str, Any] = {
        "name": "playground",
        "data": {"name": s["data.name"], "seed": s["train.seed"], "standardize": True},
        "model": {"depth": s["model.depth"], "width": s["model.width"]},
        "train": {},
        "probes": {"every": 10},
    }
    if options:
        cfg["data"]["options"] = options
    for f in FIELDS:
        section, _, key = f.key.partition(".")
        if section in ("model", "train") and key not in ("depth", "width") and active(s, f):
            cfg[section][key] = s[f.key]
    return cfg


def to_config(setup: Mapping[str, Any]) -> dict[str, Any]:
    """``raw_config(setup)`` validated by ``depthlab.experiments.config.validate`` (defaults
    filled). A :class:`ConfigError` becomes a :class:`SetupError` naming the control."""
    try:
        return validate(raw_config(setup))
    except ConfigError as e:
        key = e.key if e.key in BY_KEY else None
        if key is None and e.key:
            key = next((k for k in BY_KEY if e.key.startswith(k) or k.startswith(e.key)), None)
        message = str(e)
        if key == "train.batch_size":  # the config file's "full" is no value of the page's
            # integer control (was offered by the batch-norm message: 'accepted: >= 2 or "full"')
            message = message.replace(' or "full"', "")
        raise SetupError(message, key) from None


def to_toml(setup: Mapping[str, Any]) -> str:
    """The setup as a TOML config that ``depthlab run FILE`` accepts unchanged (the spec's
    writer on :func:`raw_config`: only the settings the page controls)."""
    return ("# exported by `depthlab playground`; run it with: depthlab run THIS_FILE\n"
            + spec_to_toml(raw_config(setup)))


def to_query(setup: Mapping[str, Any]) -> dict[str, str]:
    """The URL query of a setup (every field, as text)."""
    return {k: (("true" if v else "false") if isinstance(v, bool) else str(v))
            for k, v in setup.items()}


def apply_prescription(setup: Mapping[str, Any], prescription: Mapping[str, Any]
                       ) -> dict[str, Any]:
    """``setup`` with a doctor's prescription (``mlp()`` arguments or training settings such
    as ``init``, ``batchnorm``, ``lr``) put into the matching controls. Keys without a control
    raise :class:`SetupError`."""
    out = dict(setup)
    for k, v in prescription.items():
        key = next((f"{s}.{k}" for s in ("model", "train") if f"{s}.{k}" in BY_KEY), None)
        if key is None:
            if v in ({}, None):  # e.g. activation_kwargs = {}: the playground's own default
                continue
            raise SetupError(f"the prescription sets {k!r}, which has no control here")
        if isinstance(v, float) and BY_KEY[key].kind == "float" and math.isfinite(v) and v:
            # a computed value (lr / 10 of 0.7: 0.06999999999999999) as the control shows
            # it: the apply button, the note and the lr control read 0.06999999999999999
            v = float(f"{v:.{PRESCRIBED_DIGITS}g}")
        out[key] = _parse_value(BY_KEY[key], v)
    return out


PRESCRIBED_DIGITS = 12
"""Significant digits of a prescribed number (a float's last digits are rounding noise)."""
