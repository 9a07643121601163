"""The playground's setup: the controls, their ranges, the URL query and the TOML export.

A setup is a flat dict ``{"section.key": value}`` (``"model.depth": 30``). The same dotted keys
are the URL query parameters, the names of the page's inputs and (grouped by section) the keys
of the TOML config that ``depthlab run`` reads, so one table, :data:`FIELDS`, drives all four.

Checking happens in two layers: :func:`parse_setup` turns query strings into typed values
inside the playground's ranges (depth 1-1000, width 1-4096, ...); :func:`to_config` then runs
``depthlab.experiments.config.validate`` on the result, so a setup the page accepts is exactly
one ``depthlab run`` accepts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..activations import ACTIVATIONS
from ..data.registry import BUILTINS, DATASETS
from ..experiments.config import ConfigError, optimizer_hyperparameters, validate
from ..initializers import INITIALIZERS
from ..losses import LOSSES
from ..optimizers import OPTIMIZERS

MAX_DEPTH = 1000
MAX_WIDTH = 4096
MAX_BATCH = 4096


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

    def describe(self) -> str:
        """What the field accepts, for messages: ``an integer >= 1 and <= 1000``."""
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        what = "an integer" if self.kind == "int" else "a number"
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {self.hi:g}")
        return f"{what} {' and '.join(parts)}" if parts else what

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "default": self.default, "doc": self.doc,
                "group": self.group, "choices": list(self.choices), "lo": self.lo,
                "hi": self.hi, "lo_open": self.lo_open, "hi_open": self.hi_open,
                "accepts": self.describe(), "datasets": list(self.datasets),
                "optimizers": list(self.optimizers)}


def _takes(option: str) -> tuple[str, ...]:
    return tuple(n for n, s in BUILTINS.items() if s.options and option in s.options)


def _with_momentum() -> tuple[str, ...]:
    return tuple(o for o in OPTIMIZERS if "momentum" in optimizer_hyperparameters(o))


FIELDS: tuple[Field, ...] = (
    Field("data.name", "choice", "spirals", "built-in data set (2-D sets show the decision "
          "boundary)", choices=DATASETS),
    Field("data.options.n_classes", "int", 2, "number of classes", lo=2, hi=10,
          datasets=_takes("n_classes")),
    Field("data.options.noise", "float", 0.1, "noise added to the spirals", lo=0, hi=2,
          datasets=_takes("noise")),
    Field("data.options.d", "int", 2, "input dimension of the clusters", lo=1, hi=1024,
          datasets=_takes("d")),
    Field("model.depth", "int", 10, "number of hidden layers", lo=1, hi=MAX_DEPTH),
    Field("model.width", "int", 32, "units per hidden layer", lo=1, hi=MAX_WIDTH),
    Field("model.activation", "choice", "tanh", "hidden nonlinearity", choices=ACTIVATIONS),
    Field("model.init", "choice", "glorot_uniform", "weight initializer "
          "(normal = N(0, 1), uniform = U(-1, 1))", choices=INITIALIZERS),
    Field("model.batchnorm", "bool", False, "batch normalization before each nonlinearity"),
    Field("model.residual", "bool", False, "pre-activation residual blocks x + F(x)"),
    Field("model.dropout", "float", 0.0, "dropout rate", lo=0, hi=1, hi_open=True),
    Field("train.optimizer", "choice", "sgd", "optimizer (torch.optim rules)",
          choices=OPTIMIZERS),
    Field("train.lr", "float", 0.05, "learning rate", lo=0, hi=10, lo_open=True),
    Field("train.momentum", "float", 0.9, "momentum (sgd, rmsprop)", lo=0, hi=1,
          hi_open=True, optimizers=_with_momentum()),
    Field("train.batch_size", "int", 32, "examples per step", lo=1, hi=MAX_BATCH),
    Field("train.seed", "int", 0, "one seed for the data, the weights and the batches",
          lo=0, hi=2**31 - 1),
    Field("train.loss", "choice", "cross_entropy", "loss", group="more", choices=LOSSES),
    Field("train.l2", "float", 0.0, "L2 penalty on the weights", group="more", lo=0, hi=1),
    Field("model.bias_init", "choice", "zeros", "bias initializer", group="more",
          choices=INITIALIZERS),
    Field("model.bn_momentum", "float", 0.01, "batch-norm running-statistics momentum",
          group="more", lo=0, hi=1),
    Field("model.bn_inference", "choice", "ema", "batch-norm statistics at inference",
          group="more", choices=("ema", "population")),
    Field("model.dtype", "choice", "float32", "floating-point precision", group="more",
          choices=("float32", "float64")),
    Field("train.epochs", "int", 20, "epochs written into the exported TOML for `depthlab "
          "run` (the playground trains until paused)", group="more", lo=1, hi=100_000),
)

BY_KEY: dict[str, Field] = {f.key: f for f in FIELDS}

DEFAULTS: dict[str, Any] = {f.key: f.default for f in FIELDS}


def _parse_value(f: Field, raw: Any) -> Any:
    bad = SetupError(f"{f.key} = {raw!r} is not accepted; expected {f.describe()}", f.key)
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
        text = str(raw).strip().lower()
        if text not in f.choices:
            raise bad
        return text
    if isinstance(raw, bool):
        raise bad
    try:
        v = float(raw) if f.kind == "float" else _to_int(raw)
    except (TypeError, ValueError):
        raise bad from None
    if not math.isfinite(v):
        raise bad
    if f.lo is not None and (v < f.lo or (f.lo_open and v == f.lo)):
        raise bad
    if f.hi is not None and (v > f.hi or (f.hi_open and v == f.hi)):
        raise bad
    return v


def _to_int(raw: Any) -> int:
    if isinstance(raw, int):
        return raw
    text = str(raw).strip()
    v = float(text)
    if v != int(v):
        raise ValueError(text)
    return int(v)


def parse_setup(query: Mapping[str, Any]) -> dict[str, Any]:
    """A complete, typed setup from query parameters (strings) or values; missing keys take
    their defaults. Raises :class:`SetupError` naming the first bad or unknown key."""
    unknown = [k for k in query if k not in BY_KEY]
    if unknown:
        raise SetupError(f"unknown setting {unknown[0]!r}; accepted: "
                         + ", ".join(BY_KEY), unknown[0])
    return {f.key: _parse_value(f, query[f.key]) if f.key in query else f.default
            for f in FIELDS}


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
        raise SetupError(str(e), key) from None


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float):
        return repr(v)
    return str(v)


def to_toml(setup: Mapping[str, Any]) -> str:
    """The setup as a TOML config that ``depthlab run FILE`` accepts unchanged."""
    cfg = raw_config(setup)
    lines = ["# exported by `depthlab playground`; run it with: depthlab run THIS_FILE",
             f"name = {_toml_value(cfg['name'])}"]
    for section in ("data", "model", "train", "probes"):
        lines += ["", f"[{section}]"]
        tables = []
        for key, v in cfg[section].items():
            if isinstance(v, dict):
                tables.append((key, v))
            else:
                lines.append(f"{key} = {_toml_value(v)}")
        for key, table in tables:
            lines += ["", f"[{section}.{key}]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def to_query(setup: Mapping[str, Any]) -> dict[str, str]:
    """The URL query of a setup (every field, as text)."""
    return {k: (_toml_value(v) if isinstance(v, bool) else str(v)) for k, v in setup.items()}


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
        out[key] = _parse_value(BY_KEY[key], v)
    return out
