"""Experiment configs: TOML files with ``[data]``, ``[model]``, ``[train]``, ``[probes]`` and
(for sweeps) ``[sweep]`` sections, validated before anything starts.

Every problem raises :class:`ConfigError` with a one-line message naming the key, the value and
what is accepted. :func:`validate` returns a new dict with every default filled in, names
canonicalised (``"xavier_uniform"`` -> ``"glorot_uniform"``) and optimizer hyperparameters given
as direct ``[train]`` keys moved into ``train.optimizer_kwargs``; validating a validated config
returns it unchanged.

Layer sizes: ``model.sizes = [n_in, h_1, ..., h_L, n_out]``; the first entry may be ``"auto"``
(the number of input features of the data) and the last ``"auto"`` (the number of classes; 1
for ``binary_cross_entropy``). ``model.depth`` (number of hidden layers) and ``model.width``
rebuild the hidden part: ``sizes = [n_in] + [width] * depth + [n_out]`` (width defaults to the
first hidden width of ``sizes``); without ``sizes`` both ends are ``"auto"``.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import inspect
import json
import math
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

SECTIONS: tuple[str, ...] = ("data", "model", "train", "probes", "sweep")
TOP_LEVEL_KEYS: tuple[str, ...] = ("name",)


class ConfigError(ValueError):
    """A bad experiment configuration; ``str(err)`` is a one-line message for the user."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


# -- small value checkers ---------------------------------------------------------------
# Each takes (key, value) and returns the normalised value or raises ConfigError.


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_fmt(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return repr(value)


def _bad(key: str, value: Any, accepted: str, problem: str = "is not accepted") -> ConfigError:
    return ConfigError(f"{key} = {_fmt(value)} {problem}; accepted: {accepted}", key)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _int(lo: int | None = None, *, none: bool = False) -> Callable[[str, Any], Any]:
    desc = ("an integer" if lo is None else f"an integer >= {lo}") + (" (or omit it)" if none
                                                                       else "")

    def check(key: str, v: Any) -> Any:
        if v is None and none:
            return None
        if not _is_int(v):
            raise _bad(key, v, desc, "has the wrong type")
        if lo is not None and v < lo:
            raise _bad(key, v, desc, "is out of range")
        return int(v)

    return check


def _float(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = True) -> Callable[[str, Any], Any]:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    desc = "a finite number" + (" " + " and ".join(parts) if parts else "")

    def check(key: str, v: Any) -> Any:
        if not _is_num(v):
            raise _bad(key, v, desc, "has the wrong type")
        if not math.isfinite(v):
            raise _bad(key, v, desc, "is out of range")
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise _bad(key, v, desc, "is out of range")
        if hi is not None and (v > hi or (hi_open and v == hi)):
            raise _bad(key, v, desc, "is out of range")
        return float(v)

    return check


def _bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _bad(key, v, "true or false", "has the wrong type")
    return v


def _choice(choices: tuple[str, ...]) -> Callable[[str, Any], Any]:
    desc = ", ".join(_fmt(c) for c in choices)

    def check(key: str, v: Any) -> Any:
        if not isinstance(v, str):
            raise _bad(key, v, desc, "has the wrong type")
        if v.strip().lower() not in choices:
            raise _bad(key, v, desc)
        return v.strip().lower()

    return check


def _table(key: str, v: Any) -> dict:
    if not isinstance(v, dict):
        raise _bad(key, v, "a table of keyword arguments, e.g. {alpha = 0.1}",
                   "has the wrong type")
    return dict(v)


def _registry_name(kind: str, registry: tuple[str, ...], getter: Callable[[str], Any],
                   *, none: bool = False) -> Callable[[str, Any], Any]:
    """Validate a name through ``getter`` (which knows aliases); return its canonical name."""
    desc = ", ".join(registry) + (" (or \"none\")" if none else "")

    def check(key: str, v: Any) -> Any:
        if none and (v is None or (isinstance(v, str) and v.strip().lower() == "none")):
            return None
        if not isinstance(v, str):
            raise _bad(key, v, desc, "has the wrong type")
        try:
            obj = getter(v)
        except (ValueError, TypeError):
            close = difflib.get_close_matches(v.strip().lower(), registry, n=1)
            hint = f" (did you mean {_fmt(close[0])}?)" if close else ""
            raise ConfigError(
                f"{key} = {_fmt(v)} is not a known {kind}{hint}; accepted: {desc}", key
            ) from None
        return getattr(obj, "name", None) or v.strip().lower()

    return check


def _activation(key: str, v: Any, *, none: bool = False) -> Any:
    from ..activations import ACTIVATIONS, get_activation

    return _registry_name("activation", ACTIVATIONS, get_activation, none=none)(key, v)


def _init(key: str, v: Any, *, none: bool = False) -> Any:
    from ..initializers import INITIALIZERS, get_initializer

    return _registry_name("initializer", INITIALIZERS, get_initializer, none=none)(key, v)


def _loss(key: str, v: Any) -> Any:
    from ..losses import LOSSES, get_loss

    return _registry_name("loss", LOSSES, get_loss)(key, v)


def _optimizer_class(name: str) -> type:
    from ..optimizers import _REGISTRY

    return _REGISTRY[name]


def _optimizer(key: str, v: Any) -> Any:
    from ..optimizers import OPTIMIZERS

    def getter(name: str) -> str:
        if name.strip().lower() not in OPTIMIZERS:
            raise ValueError(name)
        return name.strip().lower()

    return _registry_name("optimizer", OPTIMIZERS, getter)(key, v)


def optimizer_hyperparameters(name: str) -> list[str]:
    """The keyword arguments optimizer ``name`` accepts besides ``params`` and ``lr``."""
    sig = inspect.signature(_optimizer_class(name).__init__)
    return [k for k in sig.parameters if k not in ("self", "params", "lr")]


def _all_optimizer_hyperparameters() -> list[str]:
    from ..optimizers import OPTIMIZERS

    names: list[str] = []
    for opt in OPTIMIZERS:
        for k in optimizer_hyperparameters(opt):
            if k not in names:
                names.append(k)
    return names


def _sizes(key: str, v: Any) -> Any:
    desc = ('a list of at least 2 positive integers [n_in, hidden..., n_out]; the first and the '
            'last may be "auto"')
    if not isinstance(v, list) or len(v) < 2:
        raise _bad(key, v, desc, "has the wrong type" if not isinstance(v, list)
                   else "is too short")
    out: list[Any] = []
    for i, s in enumerate(v):
        if isinstance(s, str) and s.strip().lower() == "auto" and i in (0, len(v) - 1):
            out.append("auto")
        elif _is_int(s) and s >= 1:
            out.append(int(s))
        else:
            raise ConfigError(
                f"{key}[{i}] = {_fmt(s)} (in {key} = {_fmt(v)}) is not accepted; accepted: "
                + desc, key)
    return out


def _batch_size(key: str, v: Any) -> Any:
    desc = 'an integer >= 1 or "full" (full-batch gradient descent)'
    if isinstance(v, str) and v.strip().lower() == "full":
        return "full"
    if not _is_int(v):
        raise _bad(key, v, desc, "has the wrong type")
    if v < 1:
        raise _bad(key, v, desc, "is out of range")
    return int(v)


def _step_values(v: Any) -> list | None:
    """Sorted unique steps (ints >= 0, then "end"), or None if ``v`` is not such a list."""
    if not isinstance(v, list):
        return None
    ints, end = set(), False
    for s in v:
        if _is_int(s) and s >= 0:
            ints.add(int(s))
        elif isinstance(s, str) and s.strip().lower() == "end":
            end = True
        else:
            return None
    return sorted(ints) + (["end"] if end else [])


def _steps_list(key: str, v: Any) -> Any:
    desc = 'a list of step numbers >= 0 and/or "end" (or omit it for the recorder\'s default)'
    if v is None:
        return None
    out = _step_values(v)
    if out is None:
        raise _bad(key, v, desc)
    return out


def _jacobian(key: str, v: Any) -> Any:
    desc = 'true (at initialization and at the end), false, or a list of steps (ints, "end")'
    if isinstance(v, bool):
        return [0, "end"] if v else []
    out = _step_values(v)
    if out is None:
        raise _bad(key, v, desc)
    return out


def _str(key: str, v: Any) -> Any:
    if not isinstance(v, str) or not v.strip():
        raise _bad(key, v, "a non-empty string", "has the wrong type")
    return v


def _label(key: str, v: Any) -> Any:
    if v is None or (isinstance(v, str) and v) or _is_int(v):
        return v
    raise _bad(key, v, "a column name or index", "has the wrong type")


# -- the schema -------------------------------------------------------------------------
# section -> key -> (checker, default).

Schema = dict[str, dict[str, tuple[Callable[[str, Any], Any], Any]]]


def _schema() -> Schema:
    return {
        "data": {
            "name": (_str, None),
            "path": (_str, None),
            "n": (_int(1, none=True), None),
            "standardize": (_bool, True),
            "seed": (_int(0), 0),
            "val_fraction": (_float(0.0, 1.0), 0.1),
            "test_fraction": (_float(0.0, 1.0), 0.2),
            "label": (_label, None),
            "options": (_table, {}),
        },
        "model": {
            "sizes": (_sizes, None),
            "depth": (_int(0, none=True), None),
            "width": (_int(1, none=True), None),
            "activation": (_activation, "relu"),
            "init": (_init, "glorot_uniform"),
            "batchnorm": (_bool, False),
            "residual": (_bool, False),
            "dropout": (_float(0.0, 1.0), 0.0),
            "dropout_type": (_choice(("auto", "standard", "alpha")), "auto"),
            "output_activation": (lambda k, v: _activation(k, v, none=True), None),
            "output_init": (lambda k, v: _init(k, v, none=True), None),
            "bias_init": (_init, "zeros"),
            "activation_kwargs": (_table, {}),
            "bn_inference": (_choice(("ema", "population")), "ema"),
            "bn_momentum": (_float(0.0, 1.0, hi_open=False), 0.01),
            "bn_eps": (_float(0.0, lo_open=True), 1e-5),
            "dtype": (_choice(("float32", "float64")), "float32"),
        },
        "train": {
            "loss": (_loss, "cross_entropy"),
            "loss_kwargs": (_table, {}),
            "optimizer": (_optimizer, "sgd"),
            "optimizer_kwargs": (_table, {}),
            "lr": (_float(0.0, lo_open=True), 0.01),
            "batch_size": (_batch_size, 32),
            "epochs": (_int(1, none=True), None),
            "max_steps": (_int(1, none=True), None),
            "seed": (_int(0), 0),
            "l1": (_float(0.0), 0.0),
            "l2": (_float(0.0), 0.0),
            "eval_every": (_int(1, none=True), None),
        },
        "probes": {
            "every": (_int(0), 10),
            "batch": (_int(1), 300),
            "histogram_steps": (_steps_list, None),
            "jacobian": (_jacobian, []),
        },
    }


def accepted_keys(section: str) -> list[str]:
    """The keys accepted in ``[section]`` (direct optimizer hyperparameters included)."""
    keys = list(_schema()[section])
    if section == "train":
        keys += [k for k in _all_optimizer_hyperparameters() if k not in keys]
    return keys


def _unknown_key(section: str | None, key: str, valid: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f" (did you mean {_fmt(close[0])}?)" if close else ""
    where = f"[{section}]" if section else "the top level"
    full = f"{section}.{key}" if section else key
    return ConfigError(
        f"unknown key {full!r} in {where}{hint}; accepted keys: {', '.join(valid)}", full
    )


# -- validation ---------------------------------------------------------------------------


def _validate_section(section: str, raw: Any, schema: Schema) -> dict[str, Any]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{section} = {_fmt(raw)} must be a table ([{section}] section); accepted keys: "
            + ", ".join(accepted_keys(section)), section)
    spec = schema[section]
    extra = [k for k in raw if k not in spec]
    if section == "train":
        hyper = _all_optimizer_hyperparameters()
        extra = [k for k in extra if k not in hyper]
    if extra:
        raise _unknown_key(section, extra[0], accepted_keys(section))
    out: dict[str, Any] = {}
    for key, (check, default) in spec.items():
        full = f"{section}.{key}"
        if key in raw and raw[key] is not None:
            out[key] = check(full, raw[key])
        else:
            out[key] = copy.deepcopy(default)
    if section == "train":
        out["_direct"] = {k: raw[k] for k in raw if k not in spec}
    return out


def _finish_data(d: dict[str, Any], base_dir: Path | None) -> None:
    from ..data import DATASETS, find_builtin

    if (d["name"] is None) == (d["path"] is None):
        raise ConfigError(
            "[data] needs exactly one of name (a built-in data set: " + ", ".join(DATASETS)
            + ") or path (a .npz, .csv or IDX file)", "data.name")
    if d["name"] is not None:
        spec = find_builtin(d["name"])
        if spec is None:
            close = difflib.get_close_matches(d["name"].strip().lower(), DATASETS, n=1)
            hint = f" (did you mean {_fmt(close[0])}?)" if close else ""
            raise ConfigError(
                f"data.name = {_fmt(d['name'])} is not a built-in data set{hint}; accepted: "
                + ", ".join(DATASETS) + " (or use data.path for a file)", "data.name")
        d["name"] = spec.name
        if spec.options is not None:
            bad = [k for k in d["options"] if k not in spec.options]
            if bad:
                raise ConfigError(
                    f"data.options.{bad[0]} is not an option of data set {spec.name!r}; "
                    f"accepted: {', '.join(spec.options) or '(none)'}", "data.options")
        if d["label"] is not None:
            raise ConfigError(
                f"data.label = {_fmt(d['label'])} applies only to data.path files; "
                f"data set {spec.name!r} has its own labels", "data.label")
    else:
        p = Path(os.path.expanduser(d["path"]))
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        if not p.exists():
            raise ConfigError(
                f"data.path = {_fmt(d['path'])}: no such file or folder ({p})", "data.path")
        d["path"] = str(p.resolve())
    if d["val_fraction"] + d["test_fraction"] >= 1.0:
        raise ConfigError(
            f"data.val_fraction + data.test_fraction = {d['val_fraction']} + "
            f"{d['test_fraction']} leaves no training data; accepted: a sum < 1", "data")


def _finish_model(m: dict[str, Any]) -> None:
    sizes, depth, width = m["sizes"], m["depth"], m["width"]
    if sizes is None and depth is None:
        raise ConfigError(
            "[model] needs sizes (e.g. sizes = [\"auto\", 128, 128, \"auto\"]) or depth and "
            "width", "model.sizes")
    if sizes is None:
        sizes = ["auto", "auto"]
    hidden = sizes[1:-1]
    uniform = bool(hidden) and all(h == hidden[0] for h in hidden)
    consistent = (
        (depth is None or depth == len(hidden))
        and (width is None or (uniform and hidden[0] == width) or (depth == 0 and not hidden))
    )
    if not consistent:
        if depth is None:
            depth = len(hidden)
        if width is None:
            if not hidden and depth > 0:
                raise ConfigError(
                    f"model.depth = {depth} needs model.width (no hidden width in "
                    f"model.sizes = {_fmt(sizes)}); accepted: an integer >= 1", "model.width")
            width = hidden[0] if hidden else 1
        sizes = [sizes[0], *([width] * depth), sizes[-1]]
        hidden = sizes[1:-1]
        uniform = bool(hidden)
    m["sizes"] = sizes
    m["depth"] = len(hidden)
    m["width"] = hidden[0] if uniform else None
    if m["residual"] and hidden and not uniform:
        raise ConfigError(
            f"model.residual = true needs equal hidden widths, got model.sizes = {_fmt(sizes)}",
            "model.residual")
    if m["activation_kwargs"]:
        from ..activations import get_activation

        try:
            get_activation(m["activation"], **m["activation_kwargs"])
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model.activation_kwargs = {_fmt(m['activation_kwargs'])}: {e}",
                              "model.activation_kwargs") from None


def _finish_train(t: dict[str, Any]) -> None:
    direct = t.pop("_direct")
    name = t["optimizer"]
    allowed = optimizer_hyperparameters(name)
    kwargs = dict(t["optimizer_kwargs"])
    for k, v in direct.items():
        if k in kwargs and kwargs[k] != v:
            raise ConfigError(
                f"train.{k} is given twice (directly and in train.optimizer_kwargs)", f"train.{k}")
        kwargs[k] = v
    for k in kwargs:
        if k not in allowed:
            where = f"train.{k}" if k in direct else f"train.optimizer_kwargs.{k}"
            raise ConfigError(
                f"{where} is not a hyperparameter of optimizer {name!r}; accepted: "
                + ", ".join(allowed), where)
    for k, v in kwargs.items():
        if k == "betas":
            if not (isinstance(v, list | tuple) and len(v) == 2 and all(
                    _is_num(b) and 0 <= b < 1 for b in v)):
                raise _bad("train.betas", v, "two numbers in [0, 1), e.g. [0.9, 0.999]")
            kwargs[k] = [float(b) for b in v]
        elif isinstance(v, bool):
            pass
        elif _is_num(v):
            if not math.isfinite(v) or v < 0:
                raise _bad(f"train.{k}", v, "a finite number >= 0", "is out of range")
            kwargs[k] = float(v)
        else:
            raise _bad(f"train.{k}", v, "a number or true/false", "has the wrong type")
    # Try the optimizer's own checks (e.g. nesterov needs momentum) on a dummy parameter.
    try:
        from ..backend import xp
        from ..optimizers import get_optimizer
        from ..parameter import Parameter

        get_optimizer(name, [Parameter("w", xp.zeros((1, 1), dtype="float32"), "weight")],
                      lr=t["lr"], **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"train.optimizer = {name!r} with {_fmt(kwargs)}: {e}",
                          "train.optimizer_kwargs") from None
    t["optimizer_kwargs"] = {k: kwargs[k] for k in sorted(kwargs)}
    if t["loss_kwargs"]:
        from ..losses import get_loss

        try:
            get_loss(t["loss"], **t["loss_kwargs"])
        except (TypeError, ValueError) as e:
            raise ConfigError(f"train.loss_kwargs = {_fmt(t['loss_kwargs'])}: {e}",
                              "train.loss_kwargs") from None
    if t["epochs"] is None and t["max_steps"] is None:
        t["epochs"] = 1


def _check_sweep(raw: Any, schema: Schema) -> dict[str, list]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"sweep = {_fmt(raw)} must be a table of \"section.key\" = [values]",
                          "sweep")
    valid = [f"{s}.{k}" for s in ("data", "model", "train", "probes") for k in accepted_keys(s)]
    out: dict[str, list] = {}
    for key, values in raw.items():
        if isinstance(values, dict):  # written as model.depth = [...] without quotes
            for sub, vals in values.items():
                out.update(_check_sweep({f"{key}.{sub}": vals}, schema))
            continue
        if key not in valid:
            raise _unknown_key("sweep", key, valid)
        if not isinstance(values, list) or not values:
            raise _bad(f"sweep.{key}", values, "a non-empty list of values to try",
                       "has the wrong type" if not isinstance(values, list) else "is empty")
        out[key] = list(values)
    return out


def validate(raw: dict[str, Any], *, base_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Check a config dict (as read from TOML) and return it with every default filled in.

    Raises :class:`ConfigError` (one line: key, value, what is accepted) on an unknown section
    or key (with the closest valid key suggested), a wrong type, an out-of-range value or an
    unknown name. ``base_dir`` resolves a relative ``data.path``. A ``[sweep]`` table is checked
    (keys and list values) and kept under ``"sweep"``; each expanded point is validated again by
    :func:`depthlab.experiments.sweep.expand`.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a table of sections, got {type(raw).__name__}")
    schema = _schema()
    for key in raw:
        if key not in SECTIONS and key not in TOP_LEVEL_KEYS:
            valid = [*SECTIONS, *TOP_LEVEL_KEYS]
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
            hint = f" (did you mean [{close[0]}]?)" if close else ""
            kind = "section" if isinstance(raw[key], dict) else "key"
            raise ConfigError(
                f"unknown {kind} [{key}]{hint}; accepted sections: "
                + ", ".join(f"[{s}]" for s in SECTIONS) + "; top-level keys: name", key)
    if "data" not in raw:
        raise ConfigError("missing [data] section (name = a built-in data set, or path = a "
                          "file)", "data")
    if "model" not in raw:
        raise ConfigError("missing [model] section (sizes = [n_in, hidden..., n_out])", "model")
    out: dict[str, Any] = {}
    name = raw.get("name")
    if name is not None:
        out["name"] = _str("name", name)
    bd = Path(base_dir) if base_dir is not None else None
    for section in ("data", "model", "train", "probes"):
        out[section] = _validate_section(section, raw.get(section), schema)
    _finish_data(out["data"], bd)
    _finish_model(out["model"])
    _finish_train(out["train"])
    _finish_output_size(out)
    sweep = _check_sweep(raw.get("sweep"), schema)
    if sweep:
        out["sweep"] = sweep
    return out


def _finish_output_size(cfg: dict[str, Any]) -> None:
    n_out = cfg["model"]["sizes"][-1]
    if cfg["train"]["loss"] == "binary_cross_entropy" and n_out not in ("auto", 1):
        raise ConfigError(
            f"model.sizes ends with {n_out} outputs but train.loss = \"binary_cross_entropy\" "
            "needs 1 output; accepted: 1 or \"auto\"", "model.sizes")


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a TOML file; a missing file or a syntax error is a one-line :class:`ConfigError`."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {str(p)!r} not found")
    if p.is_dir():
        raise ConfigError(f"config path {str(p)!r} is a folder; expected a .toml file")
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: TOML syntax error: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not a UTF-8 text file ({e.reason})") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(p)!r}: {e.strerror}") from None


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a TOML config file; messages are prefixed with the file name."""
    raw = read_toml(path)
    try:
        return validate(raw, base_dir=Path(path).resolve().parent)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}", e.key) from None


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces) used for hashing."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def run_id(config: dict[str, Any], kind: str = "run", extra: Any = None) -> str:
    """Stable id of a run: the first 12 hex digits of sha256 of the canonical JSON of the
    validated config (its ``name`` and ``sweep`` entries left out). Runs and sweep points with
    the same config share an id; ``kind`` values other than ``run``/``sweep-point`` (and
    ``extra``) are mixed in so e.g. a doctor diagnosis never replaces a training run."""
    body = {k: v for k, v in config.items() if k not in ("name", "sweep")}
    payload: Any = body if kind in ("run", "sweep-point") and extra is None else {
        "kind": kind, "config": body, "extra": extra}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:12]


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    """``config[section][key] = value`` for ``key = "section.key"`` (sections created)."""
    section, _, name = key.partition(".")
    config.setdefault(section, {})[name] = value
