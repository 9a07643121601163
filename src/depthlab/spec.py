"""The recipe of a run, written once: :class:`ModelSpec`, :class:`TrainSpec`, :class:`DataSpec`,
:class:`ProbeSpec` and :class:`RunSpec` (a name and the four sections).

Every field carries its default, its documentation (``metadata["doc"]``) and its check
(``metadata["check"]``, a :mod:`depthlab.fieldcheck` object that normalises the value or raises
:class:`ConfigError` with one line naming key, value and what is accepted). Everything else is
derived from these declarations:

* the TOML schema of ``depthlab run`` (:meth:`RunSpec.from_dict` / :meth:`RunSpec.to_dict`,
  used by :func:`depthlab.experiments.config.validate`) and :meth:`RunSpec.to_toml`,
* ``mlp(sizes, **options)`` (its options are the :class:`ModelSpec` fields) and
  ``Network.config`` (``spec.to_dict()`` plus the seed),
* the experiment runner (``build_net``, ``make_trainer``) and ``Trainer``'s keyword
  arguments and defaults (the :class:`TrainSpec` fields, by name),
* run ids (:func:`depthlab.experiments.config.run_id`; a field added later is hashed only
  when it differs from its default, so existing ids stay valid),
* prescriptions (``dataclasses.replace(spec.model, init="he_normal")``),
* user interfaces (:func:`fields_schema`: name, type, default, doc, choices and bounds).

Specs are frozen; constructing one validates and normalises it (``ModelSpec(activation="ReLU")
.activation == "relu"``), a ``None`` field takes its default, and ``replace`` re-validates.
Error keys are the field names (``dropout = 1.5 ...``); inside :meth:`RunSpec.from_dict` they
are dotted (``model.dropout = 1.5 ...``).

Layer sizes: ``sizes = (n_in, h_1, ..., h_L, n_out)``; the first entry may be ``"auto"`` (the
number of input features of the data) and the last ``"auto"`` (the number of classes; 1 for
``binary_cross_entropy``). ``depth`` (number of hidden layers) and ``width``, when they disagree
with ``sizes``, rebuild the hidden part: ``sizes = (n_in, *[width] * depth, n_out)`` (width
defaults to the hidden width; sizes whose hidden widths differ are refused, not rebuilt from
their first); once normalised they describe ``sizes`` (``width`` is None
for unequal widths). ``spec.with_sizes(sizes)`` changes the sizes (``replace(spec, sizes=...)``
would let the old depth and width rebuild them).
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from .activations import REGISTRY as ACTIVATIONS
from .fieldcheck import (
    BatchSize,
    Bool,
    Check,
    Choice,
    ConfigError,
    ConfigTypeError,
    Dtype,
    FilePath,
    Float,
    Int,
    JacobianSteps,
    Label,
    Name,
    Sizes,
    Steps,
    Table,
    Text,
    as_list,
    bad,
    did_you_mean,
    fmt,
    is_num,
)
from .initializers import REGISTRY as INITIALIZERS
from .losses import REGISTRY as LOSSES
from .optimizers import REGISTRY as OPTIMIZERS
from .validators import BN_PROBE_ROWS, closest_name, keyword_hints

__all__ = [
    "ConfigError", "DataSpec", "ModelSpec", "ProbeSpec", "RunSpec", "TrainSpec", "check_field",
    "fields_schema", "optimizer_hyperparameters", "to_toml",
]

# "model." inside RunSpec.from_dict (keys in messages are dotted there), "" otherwise.
_PREFIX: contextvars.ContextVar[str] = contextvars.ContextVar("spec_prefix", default="")
# Folder that a relative data.path is resolved against (the TOML file's folder).
_BASE_DIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar("spec_base", default=None)


def option(default: Any, check: Check, doc: str) -> Any:
    """A spec field: ``default`` (a dict or list default is copied per instance), its check and
    its one-line documentation."""
    meta = {"check": check, "doc": doc}
    if isinstance(default, dict | list):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def optimizer_hyperparameters(name: str) -> list[str]:
    """The keyword arguments optimizer ``name`` accepts besides ``params`` and ``lr``."""
    return [k for k in OPTIMIZERS[name].hyperparameter_names() if k != "lr"]


def _optimizer_flags(name: str) -> frozenset[str]:
    """The hyperparameters of optimizer ``name`` that are switches (a bool default)."""
    import inspect

    params = inspect.signature(OPTIMIZERS[name].__init__).parameters
    return frozenset(k for k, p in params.items() if isinstance(p.default, bool))


def all_optimizer_hyperparameters() -> list[str]:
    """Every optimizer hyperparameter name (each once, in registry order)."""
    names: list[str] = []
    for opt in OPTIMIZERS.names:
        names += [k for k in optimizer_hyperparameters(opt) if k not in names]
    return names


def loss_arguments() -> dict[str, str]:
    """The keyword arguments of the registered losses (``label_smoothing``, ``delta``), each
    with the first loss that takes it: given where an optimizer hyperparameter may be (a
    ``[train]`` key, ``fit(..., delta=2.0)``) they are named as ``loss_kwargs``."""
    import inspect

    out: dict[str, str] = {}
    takers: dict[str, int] = {}
    for name in LOSSES.names:
        for k, p in inspect.signature(LOSSES[name].__init__).parameters.items():
            if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                out.setdefault(k, name)  # (mse's *args, **kwargs: named as its arguments)
                takers[k] = takers.get(k, 0) + 1
    n = len(LOSSES.names)
    return {k: (EVERY if n > 1 and takers[k] == n else v) for k, v in out.items()}


EVERY = "*"
"""The owner :func:`loss_arguments` gives an argument every loss takes (``reduction``)."""


def activation_arguments() -> dict[str, str]:
    """The keyword arguments of the registered activations (``negative_slope``, ``alpha``),
    each with the first activation that takes it: given as a ``[model]`` key (or a grid's
    ``"model.negative_slope"``) they are named as ``activation_kwargs``."""
    out: dict[str, str] = {}
    for name in ACTIVATIONS.names:
        for k in ACTIVATIONS.arguments(name):
            out.setdefault(k, name)
    return out


_ARGUMENT_TABLES: dict[str, tuple[str, str, Any]] = {
    "train": ("loss", "loss_kwargs", loss_arguments),
    "model": ("activation", "activation_kwargs", activation_arguments),
}
"""A section's table of a registered object's keyword arguments: (what, table key, the
arguments by name)."""


def _argument_hint(section: str | None, key: str) -> str:
    """`` (delta is an argument of the loss "huber": loss_kwargs = {delta = ...})`` for an
    argument of a loss or activation given as a key of its section (in a ``[sweep]`` grid:
    ``sweep "train.loss_kwargs" = [{delta = ...}]``), else ``""``."""
    sweep = section == "sweep"
    if sweep:
        section, _, key = str(key).partition(".")
    if section not in _ARGUMENT_TABLES:
        return ""
    what, table, arguments = _ARGUMENT_TABLES[section]
    owner = arguments().get(key)
    if owner is None:
        return ""
    usage = (f'sweep "{section}.{table}" = [{{{key} = ...}}]' if sweep else
             f"{table} = {{{key} = ...}}")
    whose = f"every {what}" if owner == EVERY else f"the {what} {fmt(owner)}"
    return f" ({key} is an argument of {whose}: {usage})"


def check_field(spec_cls: type, name: str, value: Any) -> Any:
    """``value`` checked and normalised as field ``name`` of ``spec_cls`` is (the key in the
    message is ``name``): the one rule for that setting, also where no spec is built."""
    f = next((f for f in fields(spec_cls) if f.name == name), None)
    if f is None:  # (StopIteration would escape, or become RuntimeError in a generator)
        raise ValueError(f"{name!r} is not a field of {spec_cls.__name__}; accepted: "
                         f"{', '.join(x.name for x in fields(spec_cls))}")
    check = f.metadata["check"]
    if value is None and getattr(check, "none_means", None) is not None:
        return check.none_means  # as a spec reads it (batch_size None: "full", as in fit)
    return check(name, value)


# -- the base class ------------------------------------------------------------------------


def _default(f: dataclasses.Field) -> Any:
    """The default of field ``f`` (a fresh copy for dict/list defaults)."""
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _plain(value: Any) -> Any:
    """Tuples as lists and dicts copied, recursively (the form of a validated config dict),
    with NumPy values as Python ones: a scalar's ``item()`` (``np.float32(0.5)`` -> 0.5,
    ``np.int64(2)`` -> 2, ``np.bool_`` -> bool) and an array's ``tolist()``. A ``[sweep]`` grid
    built in Python (``np.arange``, an array's elements) kept them: ``to_toml`` wrote
    ``np.float64(1e-07)`` (no TOML) or refused the value, and ``to_dict`` was no JSON. The
    numbers are unchanged (``float(np.float32(x))`` is what the fields' checks read)."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if type(value).__module__ == "numpy" and callable(getattr(value, "tolist", None)) \
            and callable(getattr(value, "item", None)):
        return _plain(value.tolist()) if getattr(value, "ndim", 0) else value.item()
    return value




KEY_SYNONYMS: dict[str, dict[str, str]] = {
    "data": {"dataset": "name", "file": "path", "filename": "path", "val_split": "val_fraction",
             "validation_split": "val_fraction", "test_split": "test_fraction",
             "target": "label", "n_samples": "n", "num_samples": "n", "normalize": "standardize"},
    "model": {"initializer": "init", "initialization": "init", "act": "activation",
              "nonlinearity": "activation", "bn": "batchnorm", "layers": "sizes",
              "hidden_size": "width", "units": "width", "n_layers": "depth",
              "num_layers": "depth", "hidden_layers": "depth", "skip": "residual"},
    "train": {"learning_rate": "lr", "bs": "batch_size", "optim": "optimizer", "opt": "optimizer",
              "criterion": "loss", "steps": "max_steps"},
}
"""Other libraries' names of a key (``learning_rate``, ``bn``, ``val_split``): the "did you
mean" hint names the key they mean, where spelling similarity guessed another or none."""
SECTION_SYNONYMS: dict[str, str] = {"optimizer": "train", "optim": "train", "training": "train",
                                    "network": "model", "net": "model", "architecture": "model",
                                    "dataset": "data", "probe": "probes"}


def _close_key(section: str | None, key: str, valid: list[str]) -> str | None:
    """The key of ``[section]`` (among ``valid``) a mistyped ``key`` most likely meant: another
    library's name of it (``learning_rate`` -> ``lr``), else the closest spelling, else the
    key whose other name is spelled closest (``learnig_rate`` -> ``lr``); a ``[sweep]`` key
    is read as ``"section.key"`` (:func:`_close_sweep_key`)."""
    if section == "sweep":
        return _close_sweep_key(key, valid)
    synonyms = KEY_SYNONYMS.get(section or "", {})
    synonym = synonyms.get(str(key).strip().lower().replace("-", "_"))
    if synonym in valid:
        return synonym
    close = closest_name(key, valid)
    if close is None:
        near = closest_name(key, list(synonyms))
        close = synonyms[near] if near is not None and synonyms[near] in valid else None
    return close


def _close_sweep_key(key: str, valid: list[str]) -> str | None:
    """The ``"section.key"`` a mistyped grid key meant, found within its section as that
    section's own keys are (``train.learning_rate`` -> ``train.lr``, ``optimizer.lr`` ->
    ``train.lr``; the closest spelling over every section's keys said "train.dampening" and
    "train.optimizer"), else the one section whose keys hold its last part (``lr``,
    ``model.lr`` -> ``train.lr``), else the closest spelling among ``valid``."""
    text = str(key).strip()
    head, dot, name = text.rpartition(".")
    head = head.strip().lower()
    section = head if head in SPECS else SECTION_SYNONYMS.get(head)
    if dot and section in SPECS:
        close = _close_key(section, name, SPECS[section].keys())
        if close is not None and f"{section}.{close}" in valid:
            return f"{section}.{close}"
    holders = _sweep_holders(key, valid)
    if len(holders) == 1:
        return holders[0]
    return closest_name(key, valid)


def _sweep_holders(key: str, valid: list[str]) -> list[str]:
    """The ``"section.key"`` grid keys whose key (or another library's name of it) is the
    last part of ``key``: ``seed`` -> ``data.seed``, ``train.seed``."""
    text = str(key).strip()
    head, dot, name = text.rpartition(".")
    word = (name if dot else text).strip().lower().replace("-", "_")
    holders = [f"{s}.{k}" for s, spec_cls in SPECS.items() for k in spec_cls.keys()
               if k in (word, KEY_SYNONYMS.get(s, {}).get(word))]  # (learning_rate: lr)
    return [h for h in holders if h in valid]


def _table_grid_hint(key: str, valid: list[str]) -> str:
    """`` (model.activation_kwargs is one setting, a table: its values are swept as tables,
    "model.activation_kwargs" = [{negative_slope = ...}, ...])`` for a grid key that names a
    value inside a table setting (``data.options``, ``model.activation_kwargs``,
    ``train.loss_kwargs``, ``train.optimizer_kwargs``), as other sweep tools' nested keys do;
    ``""`` otherwise, or when the section has the value as a key of its own
    (``"train.optimizer_kwargs.momentum"``: ``"train.momentum"``)."""
    parts = str(key).strip().split(".")
    if len(parts) < 3 or f"{parts[0]}.{parts[-1]}" in valid:
        return ""
    spec_cls, table = SPECS.get(parts[0]), parts[1]
    f = next((f for f in fields(spec_cls) if f.name == table), None) if spec_cls else None
    if f is None or not isinstance(_default(f), dict):
        return ""
    setting, inner = f"{parts[0]}.{table}", ".".join(parts[2:])
    return (f" ({setting} is one setting, a table: its values are swept as tables, "
            f"\"{setting}\" = [{{{inner} = ...}}, ...])")


def _other_section_hint(section: str | None, key: Any) -> str:
    """`` (lr is a key of [train]: write it under the [train] header)`` for a key given in
    the wrong section, or above the first header (TOML reads such a key as top-level); also
    for another library's name of it (``learning_rate``: ``did you mean lr, a key of
    [train]?``) and for the top-level ``name`` given inside a section; ``""`` otherwise.
    A key of another section was named as the closest spelling in its own (``activation``
    in ``[train]``: did you mean "loss"?) or given no hint at all (``lr`` in ``[model]`` or
    at the top level: "unknown key [lr]")."""
    word = str(key).strip().lower().replace("-", "_")
    if section is not None and word in TOP_LEVEL_KEYS:
        return (f" ({word} is a top-level key: write it above the first [section] header, "
                f"not in [{section}])")
    owners = [(s, k) for s, spec_cls in SPECS.items() if s != section
              for k in spec_cls.keys() if k in (word, KEY_SYNONYMS.get(s, {}).get(word))]
    if not owners:
        return ""
    where = ("a key above the first [section] header is top-level: "
             if section is None else "")
    if len(owners) > 1:
        sections = " and ".join(f"[{s}]" for s, _ in owners)
        named, under = f"{word} is a key of {sections}", "one of those headers"
    else:
        s, k = owners[0]
        named = f"{k} is a key of [{s}]" if k == word else f"did you mean {k}, a key of [{s}]?"
        under = f"the [{s}] header"
    sep = " " if named.endswith("?") else ("; " if where else ": ")
    return f" ({named}{sep}{where}write it under {under})"


def _unknown_key(section: str | None, key: str, valid: list[str]) -> ConfigError:
    close = _close_key(section, key, valid)
    # a key of another section ("lr" in [model]): named there, unless a name of this
    # section's own ("learning_rate" in [train]) or a grid key
    own = KEY_SYNONYMS.get(section or "", {}).get(str(key).strip().lower().replace("-", "_"))
    elsewhere = ("" if section == "sweep" or own in valid
                 else _other_section_hint(section, key))
    # "seed" in a grid: data.seed or train.seed (the first spelled alike was named alone)
    holders = _sweep_holders(key, valid) if section == "sweep" and "." not in str(key) else []
    either = f" (did you mean {' or '.join(fmt(h) for h in holders)}?)" if len(holders) > 1 else ""
    # "delta": not "did you mean betas?"; "label_smoothing" in a grid: not "train.dampening";
    # "model.activation_kwargs.negative_slope" in a grid: not "model.activation"
    hint = ((_table_grid_hint(key, valid) if section == "sweep" else "")
            or _argument_hint(section, key) or either or elsewhere
            or (f" (did you mean {fmt(close)}?)" if close else ""))
    where = f"[{section}]" if section else "the top level"
    full = f"{section}.{key}" if section else key
    return ConfigError(
        f"unknown key {full!r} in {where}{hint}; accepted keys: {', '.join(valid)}", full)


def _hinted(cls: type) -> type:
    """A spec class whose constructor names a mistyped keyword and the closest field
    (``TrainSpec(epoch=3)``: "did you mean 'epochs'?"), as its TOML section does: another
    library's name (``TrainSpec(learning_rate=0.1)``, ``ModelSpec(bn=True)``) names the field
    it means, and an optimizer hyperparameter given to ``TrainSpec`` names
    ``optimizer_kwargs`` (both were "unexpected keyword argument" and the list of fields)."""
    import functools

    checked = keyword_hints(cls.__init__)
    section = getattr(cls, "section", None)
    own = [f.name for f in fields(cls)]

    @functools.wraps(checked)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        unknown = next((k for k in kwargs if k not in own), None)
        if unknown is not None and section is not None:
            start = f"{cls.__name__}() got an unexpected keyword argument {unknown!r}"
            if section == "train" and unknown in all_optimizer_hyperparameters():
                raise TypeError(f"{start}: an optimizer hyperparameter, given as "
                                f"optimizer_kwargs={{{unknown!r}: ...}} (a [train] table, "
                                "TrainSpec.from_dict, takes it directly)")
            close = _close_key(section, unknown, own)
            if close is not None:
                raise TypeError(f"{start} (did you mean {close!r}?)")
        checked(self, *args, **kwargs)

    init.__defaults__, init.__kwdefaults__ = checked.__defaults__, checked.__kwdefaults__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


class _Section:
    """Shared behaviour of the four section specs (``section`` is the TOML table name)."""

    section: ClassVar[str]

    def __post_init__(self) -> None:
        prefix = _PREFIX.get()
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if v is None and getattr(f.metadata["check"], "none_means", None) is not None:
                v = f.metadata["check"].none_means  # None is a value of its own here
            elif v is None:
                v = _default(f)
            else:
                v = f.metadata["check"](prefix + f.name, v)
            object.__setattr__(self, f.name, v)
        self._finish(prefix)

    def _finish(self, prefix: str) -> None:
        """Checks across fields (after every field is normalised)."""

    def _set(self, **values: Any) -> None:
        for k, v in values.items():
            object.__setattr__(self, k, v)

    @classmethod
    def keys(cls) -> list[str]:
        """The keys accepted in this section of a TOML file."""
        return [f.name for f in fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, raw: Any) -> Any:
        """The spec of a ``[section]`` table (unknown keys are an error naming the valid ones);
        inside :meth:`RunSpec.from_dict` messages use dotted keys."""
        return cls._build(cls.check_fields(raw))

    @classmethod
    def check_fields(cls, raw: Any) -> dict[str, Any]:
        """The table's keys and each given value checked one by one (the checks across fields
        come when the spec is built): a run reports a bad value in any section before a
        conflict between values."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{cls.section} = {fmt(raw)} must be a table ([{cls.section}] "
                              f"section); accepted keys: {', '.join(cls.keys())}", cls.section)
        for k in raw:
            if k not in cls.keys():
                raise _unknown_key(cls.section, k, cls.keys())
        prefix = _PREFIX.get()
        out = {f.name: f.metadata["check"](prefix + f.name, raw[f.name])
               for f in fields(cls)  # type: ignore[arg-type]
               if raw.get(f.name) is not None}  # in the order of the fields
        return {**out, **{k: v for k, v in raw.items() if k not in out}}

    @classmethod
    def _build(cls, checked: dict[str, Any]) -> Any:
        return cls(**checked)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every field's default as plain data (None where the default is None)."""
        return {f.name: _plain(_default(f)) for f in fields(cls)}  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain data (tuples as lists): the validated config section."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore


# -- the four sections ---------------------------------------------------------------------


@_hinted
@dataclass(frozen=True)
class DataSpec(_Section):
    """``[data]``: a built-in data set (``name``) or a user file (``path``), and its splits."""

    section: ClassVar[str] = "data"

    name: str | None = option(None, Text(), "built-in data set (see `depthlab datasets`)")
    path: str | None = option(None, FilePath(), "a .npz, .csv or IDX file (instead of name); "
                              "relative to the TOML file")
    n: int | None = option(None, Int(1, optional=True), "use n examples: a random subsample "
                           "drawn with seed (a generated data set: its size)")
    standardize: bool = option(True, Bool(), "standardize features with training statistics")
    seed: int = option(0, Int(0), "seed of the train/validation/test split")
    val_fraction: float = option(0.1, Float(0.0, 1.0), "fraction held out for validation")
    test_fraction: float = option(0.2, Float(0.0, 1.0), "fraction held out for testing")
    label: str | int | list | None = option(None, Label(), "label column of a .csv file (name "
                                            "or index; a list: several regression targets)")
    targets: str = option("auto", Choice("auto", "classes", "values"),
                          "a file's labels: classes, real regression targets (values), or "
                          "auto (values for train.loss mse/huber when they are not integers "
                          "or several columns)")
    standardize_targets: bool = option(False, Bool(), "train on regression targets "
                                       "standardized with training statistics (predictions "
                                       "in the targets' units)")
    options: dict = option({}, Table(), "options of the built-in data set (of a data file: "
                           "label, scale)")

    def _finish(self, prefix: str) -> None:
        from .data import DATASETS, find_builtin

        if (self.name is None) == (self.path is None):
            raise ConfigError(
                f"[data] needs exactly one of name (a built-in data set: {', '.join(DATASETS)}"
                ") or path (a .npz, .csv or IDX file)", prefix + "name")
        if self.name is not None:
            builtin = find_builtin(self.name)
            if builtin is None:
                hint = did_you_mean(self.name, DATASETS)
                raise ConfigError(
                    f"{prefix}name = {fmt(self.name)} is not a built-in data set{hint}; "
                    f"accepted: {', '.join(DATASETS)} (or use {prefix}path for a file)",
                    prefix + "name")
            self._set(name=builtin.name)
            names = builtin.options
            if names is None and builtin.name == "mnist1d" and self.options:
                # its generator's options, checked here as the other data sets' are (only
                # the loader checked them: a grid of data.options ran and stored its bad
                # points as failed, where a bad clusters option refuses the config)
                from .data.mnist1d import _check_option, option_names

                names = option_names()
                for k, v in self.options.items() if names is not None else ():
                    if k in names:
                        try:
                            _check_option(k, v, said=f"{prefix}options.{k} = {fmt(v)}")
                        except ValueError as e:
                            raise ConfigError(str(e), f"{prefix}options.{k}") from None
            if names is not None:
                wrong = [k for k in self.options if k not in names]
                if wrong:
                    hint = did_you_mean(wrong[0], names)
                    raise ConfigError(
                        f"{prefix}options.{wrong[0]} is not an option of data set "
                        f"{builtin.name!r}{hint}; accepted: "
                        f"{', '.join(names) or '(none)'}", prefix + "options")
            from .data.synthetic import OPTION_CHECKS

            options = dict(self.options)
            for k, v in self.options.items():  # the generator's checks, before it runs
                check = OPTION_CHECKS.get(builtin.name, {}).get(k)
                try:
                    if check is not None:
                        # the value as the generator reads it: noise = 0 and 0.0 (or -0.0)
                        # make the same data, one config (they had two run ids)
                        checked = check(v)
                        options[k] = checked + 0.0 if isinstance(checked, float) else checked
                except (TypeError, ValueError) as e:
                    error = ConfigTypeError if isinstance(e, TypeError) else ConfigError
                    raise error(f"{prefix}options.{k} = {fmt(v)} is not accepted: {e}",
                                f"{prefix}options.{k}") from None
            if isinstance(options.get("path"), str) and options["path"].strip():
                # a built-in's folder (fashion-mnist's) relative to the TOML file, as data.path
                # is: it was read relative to the working folder, so one config found other
                # files (or none) depending on where it was started
                folder = Path(os.path.expanduser(options["path"]))
                base = _BASE_DIR.get()
                if not folder.is_absolute() and base is not None:
                    folder = base / folder
                options["path"] = str(folder.resolve())
            self._set(options=options)
            if self.label is not None:
                raise ConfigError(
                    f"{prefix}label = {fmt(self.label)} applies only to {prefix}path files; "
                    f"data set {builtin.name!r} has its own labels", prefix + "label")
        else:
            from .data.registry import FILE_OPTIONS

            # a file's loader takes these options only: another one was accepted here and
            # failed every run (every sweep point) when its data were loaded
            wrong = [k for k in self.options if k not in FILE_OPTIONS]
            if wrong:
                hint = did_you_mean(wrong[0], FILE_OPTIONS)
                raise ConfigError(
                    f"{prefix}options.{wrong[0]} is not an option of a data file{hint}; "
                    f"accepted: {', '.join(FILE_OPTIONS)} (or leave out {prefix}options)",
                    prefix + "options")
            self._check_options_label(prefix)
            p = Path(os.path.expanduser(self.path))
            base = _BASE_DIR.get()
            if not p.is_absolute() and base is not None:
                p = base / p
            if not p.exists():
                raise ConfigError(f"{prefix}path = {fmt(self.path)}: no such file or folder "
                                  f"({p})", prefix + "path")
            if not (p.is_file() or p.is_dir()):  # /dev/zero, a pipe: its fingerprint (the run
                # id) read it for ever, or waited for a writer
                raise ConfigError(f"{prefix}path = {fmt(self.path)} is not a file or a folder "
                                  "(a device or a pipe); accepted: a .npz, .csv or IDX file, or "
                                  "a folder of IDX files", prefix + "path")
            self._set(path=str(p.resolve()))
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError(
                f"{prefix}val_fraction + {prefix}test_fraction = {self.val_fraction} + "
                f"{self.test_fraction} leaves no training data; accepted: a sum < 1",
                prefix.rstrip(".") or "val_fraction")

    def _check_options_label(self, prefix: str) -> None:
        """``options.label`` (the loader's spelling of ``label``) checked as ``label`` is, and
        refused beside a ``label`` naming another column (``label`` won, silently)."""
        if "label" not in self.options:
            return
        value = Label()(f"{prefix}options.label", self.options["label"])
        if self.label is not None and value != self.label:
            raise ConfigError(
                f"{prefix}label = {fmt(self.label)} and {prefix}options.label = {fmt(value)} "
                f"name different label columns; accepted: one of them ({prefix}label)",
                prefix + "label")


CUMULATIVE = "cumulative"


class BnMomentum(Float):
    """A batch-norm momentum in (0, 1], or ``"cumulative"``: torch's ``momentum=None``, the
    running statistics being the plain mean of every training batch's so far (``BatchNorm``
    builds it with ``momentum=None``; a network from ``from_torch`` with it has this recipe)."""

    none_means: ClassVar[str] = CUMULATIVE
    """``None`` (JSON ``null``) is torch's ``momentum=None``, as in :func:`depthlab.mlp`: not
    the default 0.01, which a ``None`` of another field stands for."""

    def __init__(self) -> None:
        super().__init__(0.0, 1.0, lo_open=True, hi_open=False)
        self.accepted += (f' or "{CUMULATIVE}" (torch\'s momentum=None, JSON null: the plain '
                          "mean of the batch statistics)")

    def __call__(self, key: str, v: Any) -> Any:
        if isinstance(v, str) and v.strip().lower() == CUMULATIVE:
            return CUMULATIVE
        return super().__call__(key, v)


@_hinted
@dataclass(frozen=True)
class ModelSpec(_Section):
    """``[model]``: the network (an MLP: plain, batch-normalized and/or residual)."""

    section: ClassVar[str] = "model"

    sizes: tuple | None = option(None, Sizes(), "layer widths [n_in, hidden..., n_out]; the "
                                 'ends may be "auto" (from the data)')
    depth: int | None = option(None, Int(0, optional=True), "number of hidden layers "
                               "(rebuilds sizes with width)")
    width: int | None = option(None, Int(1, optional=True), "width of every hidden layer "
                               "(with depth)")
    activation: Any = option("relu", Name(ACTIVATIONS), "hidden nonlinearity")
    init: Any = option("glorot_uniform", Name(INITIALIZERS), "weight initializer")
    batchnorm: bool = option(False, Bool(), "batch normalization before each nonlinearity "
                             "(the Dense before it has no bias)")
    residual: bool = option(False, Bool(), "pre-activation residual blocks (equal hidden "
                            "widths)")
    dropout: float = option(0.0, Float(0.0, 1.0, what="a dropout rate"), "dropout rate after "
                            "each nonlinearity")
    input_dropout: float = option(0.0, Float(0.0, 1.0, what="a dropout rate"), "dropout rate "
                                  "on the inputs (Srivastava et al. 2014 use 0.2)")
    dropout_type: str = option("auto", Choice("auto", "standard", "alpha"),
                               'dropout kind; "auto" = alpha dropout for selu')
    output_activation: Any = option(None, Name(ACTIVATIONS, none=True),
                                    "nonlinearity after the last layer (none: logits)")
    output_init: Any = option(None, Name(INITIALIZERS, none=True), "initializer of the last layer "
                              "(none: init)")
    bias_init: Any = option("zeros", Name(INITIALIZERS), "bias initializer")
    activation_kwargs: dict = option({}, Table(), "arguments of the hidden layers' "
                                     "activation, e.g. {negative_slope = 0.1} (the output "
                                     "activation keeps its defaults)")
    bn_inference: str = option("ema", Choice("ema", "population"), "batch-norm statistics at "
                               "inference: running average or whole training set")
    bn_momentum: float | str = option(0.01, BnMomentum(), "weight of the new batch in the "
                                      'running averages, or "cumulative" (their plain mean)')
    bn_eps: float = option(1e-5, Float(0.0, lo_open=True), "added to the batch variance")
    bn_ema_start: str = option("first_batch", Choice("first_batch", "zero"),
                               "running averages start at the first batch's statistics or at "
                               "mean 0, variance 1 (PyTorch)")
    dtype: str = option("float32", Dtype(), "floating-point precision")

    def _finish(self, prefix: str) -> None:
        sizes, depth, width = self.sizes, self.depth, self.width
        if sizes is None and depth is None:
            raise ConfigError(
                "[model] needs sizes (e.g. sizes = [\"auto\", 128, 128, \"auto\"]) or depth "
                "and width", prefix + ("depth" if self.width is not None else "sizes"))
            # (width given: depth is the key missing, which a grid sweeping it supplies)
        if sizes is None:
            sizes = ("auto", "auto")
        hidden = sizes[1:-1]
        uniform = bool(hidden) and all(h == hidden[0] for h in hidden)
        consistent = ((depth is None or depth == len(hidden))
                      and (width is None or (uniform and hidden[0] == width)
                           or (depth == 0 and not hidden)))
        if not consistent and len(set(hidden)) > 1:  # was: rebuilt from the first width
            from .memory import sizes_text

            given = " and ".join(f"{prefix}{k} = {v}" for k, v in (("depth", self.depth),
                                                                  ("width", self.width))
                                 if v is not None)
            raise ConfigError(
                f"{given} would replace the unequal hidden widths of {prefix}sizes = "
                f"{sizes_text(sizes)}; accepted: sizes alone, or depth and width with "
                f"sizes = {sizes_text([sizes[0], sizes[-1]])} (its ends)",
                prefix + ("depth" if self.depth is not None else "width"))
        if not consistent:
            if depth is None:
                if not hidden:  # width = 64 beside sizes = [4, 3]: a linear model was built,
                    # the width silently dropped (a sweep of widths ran one network N times)
                    raise ConfigError(
                        f"{prefix}width = {width} has no hidden layer to size: {prefix}sizes = "
                        f"{fmt(sizes)} has none and {prefix}depth is not given; accepted: "
                        f"{prefix}depth >= 1 beside {prefix}width (or leave out {prefix}width)",
                        prefix + "depth")  # the missing key: a grid sweeping depth lifts it
                depth = len(hidden)
            if width is None:
                if not hidden and depth > 0:
                    raise ConfigError(
                        f"{prefix}depth = {depth} needs {prefix}width (no hidden width in "
                        f"{prefix}sizes = {fmt(sizes)}); accepted: an integer >= 1",
                        prefix + "width")
                width = hidden[0] if hidden else 1
            _check_depth_fits(sizes, depth, width, self.dtype, prefix)
            sizes = (sizes[0], *([width] * depth), sizes[-1])
            hidden = sizes[1:-1]
            uniform = bool(hidden)
        self._set(sizes=sizes, depth=len(hidden), width=hidden[0] if uniform else None)
        if self.residual and hidden and not uniform:
            raise ConfigError(
                f"{prefix}residual = true needs equal hidden widths, got {prefix}sizes = "
                f"{fmt(sizes)}", prefix + "residual")
        if self.activation_kwargs:
            from .activations import get_activation

            try:
                get_activation(self.activation, **self.activation_kwargs)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{prefix}activation_kwargs = {fmt(self.activation_kwargs)}: "
                                  f"{e}", prefix + "activation_kwargs") from None
            self._set(activation_kwargs=plain_arguments(self.activation_kwargs, ACTIVATIONS,
                                                        self.activation))
        _check_bias_init(self.bias_init, prefix)

    @property
    def hidden(self) -> tuple:
        """The hidden widths ``sizes[1:-1]``."""
        return self.sizes[1:-1]

    def with_sizes(self, sizes: Any) -> ModelSpec:
        """This spec with new layer ``sizes`` (``depth`` and ``width`` follow them; a plain
        ``replace(spec, sizes=...)`` would let the old depth and width rebuild them)."""
        return dataclasses.replace(self, sizes=sizes, depth=None, width=None)


def plain_arguments(kwargs: dict[str, Any], registry: Any, name: Any) -> dict[str, Any]:
    """Accepted keyword arguments of a registered activation or loss in one form: NumPy
    scalars as Python numbers, and a number given where the constructor's default is a float
    as that float (``alpha = 2`` and ``alpha = 2.0`` are one setting, one run id, as an
    optimizer's ``momentum = 1`` is; ``-0.0`` as ``0.0``). A NumPy scalar was kept as is:
    ``dl.save`` then refused the network's recipe as not plain JSON."""
    import numpy as np

    try:
        defaults = registry.defaults(name)
    except (KeyError, TypeError, ValueError):  # an object passed through: no arguments
        defaults = {}
    out = {}
    for k, v in kwargs.items():
        if isinstance(v, np.generic):
            v = v.item()
        if is_num(v) and isinstance(defaults.get(k), float):
            v = float(v) + 0.0
        out[k] = v
    return out


def _check_bias_init(bias_init: Any, prefix: str) -> None:
    """Refuse a bias initializer that cannot fill a vector (``orthogonal`` needs a matrix)
    when the config is checked, not when the network is built."""
    from .backend import resolve_dtype, rng
    from .initializers import get_initializer

    try:
        get_initializer(bias_init)((2,), rng(0), resolve_dtype("float32"))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix}bias_init = {fmt(bias_init)}: {e}",
                          prefix + "bias_init") from None


def _check_depth_fits(sizes: tuple, depth: int, width: int, dtype: str, prefix: str) -> None:
    """Refuse ``depth`` hidden layers of ``width`` whose network cannot fit in memory before
    the ``depth + 2`` sizes are built (``depth = 10**9`` would exhaust memory in the list
    alone); ``"auto"`` ends count as 1 unit."""
    from .memory import MemoryRefusal, check_fits, uniform_network_bytes

    ends = [v if isinstance(v, int) else 1 for v in (sizes[0], sizes[-1])]
    try:
        check_fits(uniform_network_bytes(ends[0], width, depth, ends[1], dtype),
                   f"{prefix}depth = {depth} with {prefix}width = {width}")
    except MemoryRefusal as e:
        raise ConfigError(str(e), prefix + "depth") from None


EARLY_STOPPING_METRICS = ("val_loss", "val_acc", "train_loss", "train_acc")


@_hinted
@dataclass(frozen=True)
class TrainSpec(_Section):
    """``[train]``: loss, optimizer and schedule. Optimizer hyperparameters may be given
    directly (``momentum = 0.9``); they are moved into ``optimizer_kwargs``."""

    section: ClassVar[str] = "train"

    loss: str = option("cross_entropy", Name(LOSSES), "loss function")
    loss_kwargs: dict = option({}, Table(), "arguments of the loss, e.g. "
                               "{label_smoothing = 0.1}")
    optimizer: str = option("sgd", Name(OPTIMIZERS),
                            "optimizer (torch.optim names and defaults)")
    optimizer_kwargs: dict = option({}, Table(), "optimizer hyperparameters, e.g. "
                                    "{momentum = 0.9}")
    lr: float = option(0.01, Float(0.0, lo_open=True, what="a learning rate, a finite number"),
                       "learning rate (> 0; an optimizer's lr may be set to 0 between steps)")
    batch_size: int | str = option(32, BatchSize(), 'examples per step, or "full"')
    epochs: int | None = option(None, Int(1, optional=True), "passes over the training set "
                                "(1 when max_steps is not given either)")
    max_steps: int | None = option(None, Int(1, optional=True), "stop after this many steps")
    seed: int = option(0, Int(0), "seed of the weights, shuffling and dropout")
    l1: float = option(0.0, Float(0.0), "L1 penalty on the weights")
    l2: float = option(0.0, Float(0.0), "L2 penalty on the weights")
    eval_every: int | None = option(None, Int(1, optional=True), "validation every k steps")
    patience: int | None = option(None, Int(1, optional=True), "early stopping: end the run "
                                  "when monitor has not improved for this many epochs; the "
                                  "network keeps its best epoch's weights")
    monitor: str = option("val_loss", Choice(*EARLY_STOPPING_METRICS),
                          "early stopping's epoch metric")
    min_delta: float = option(0.0, Float(0.0), "early stopping: the least change that counts "
                              "as an improvement")

    @classmethod
    def keys(cls) -> list[str]:
        own = [f.name for f in fields(cls)]
        return own + [k for k in all_optimizer_hyperparameters() if k not in own]

    @classmethod
    def _build(cls, checked: dict[str, Any]) -> TrainSpec:
        """Direct optimizer hyperparameters join ``optimizer_kwargs`` (given both ways with
        different values is an error)."""
        own = {f.name for f in fields(cls)}
        direct = {k: v for k, v in checked.items() if k not in own}
        if not direct:
            return cls(**checked)
        prefix = _PREFIX.get()
        kwargs = dict(checked.get("optimizer_kwargs") or {})
        for k, v in direct.items():
            if k in kwargs and kwargs[k] != v:
                raise ConfigError(f"{prefix}{k} is given twice (directly and in "
                                  f"{prefix}optimizer_kwargs)", prefix + k)
            kwargs[k] = v
        token = _DIRECT.set(frozenset(direct))
        try:
            return cls(**{k: v for k, v in checked.items()
                          if k in own and k != "optimizer_kwargs"}, optimizer_kwargs=kwargs)
        finally:
            _DIRECT.reset(token)

    def _finish(self, prefix: str) -> None:
        name = self.optimizer
        allowed = optimizer_hyperparameters(name)
        direct = _DIRECT.get()
        kwargs = dict(self.optimizer_kwargs)

        def at(k: str) -> str:  # where the config gives it: [train] directly, or the table
            return f"{prefix}{k}" if k in direct else f"{prefix}optimizer_kwargs.{k}"

        for k in kwargs:
            if k not in allowed:
                where = at(k)
                # a typo names the closest one; another optimizer's names those taking it
                takers = [o for o in OPTIMIZERS.names if k in optimizer_hyperparameters(o)]
                hint = (f" (a hyperparameter of {', '.join(takers)})" if takers
                        else did_you_mean(k, allowed))
                raise ConfigError(f"{where} is not a hyperparameter of optimizer {name!r}"
                                  f"{hint}; accepted: {', '.join(allowed)}", where)
        flags = _optimizer_flags(name)
        for k, v in kwargs.items():
            if k == "betas":
                pair = as_list(v)  # a tuple or a NumPy array too, as fit takes them
                if not (pair is not None and len(pair) == 2
                        and all(is_num(b) and 0 <= b < 1 for b in pair)):
                    raise bad(at(k), pair if pair is not None else v,
                              "two numbers in [0, 1), e.g. [0.9, 0.999]")
                kwargs[k] = [float(b) + 0.0 for b in pair]
            elif _is_bool(v):  # a NumPy bool too (fit took it; the config called true wrong)
                kwargs[k] = bool(v)
            elif k in flags:  # a switch (amsgrad, nesterov, ...) given as a number
                raise bad(at(k), v, "true or false", "has the wrong type")
            elif is_num(v):  # SGD's dampening may be negative (torch.optim.SGD, dl.fit)
                low = None if k in _SIGNED_HYPERPARAMETERS else 0.0
                kwargs[k] = Float(low, what="a finite number")(at(k), v)
            else:
                raise bad(at(k), v, "a finite number", "has the wrong type")
        try:  # the optimizer's own rules (e.g. nesterov needs momentum > 0)
            OPTIMIZERS[name].check_hyperparameters(lr=self.lr, **kwargs)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{prefix}optimizer = {name!r} with {fmt(kwargs)}: {e}",
                              prefix + "optimizer_kwargs") from None
        self._set(optimizer_kwargs={k: kwargs[k] for k in sorted(kwargs)})
        if self.loss_kwargs:
            from .losses import get_loss

            try:
                get_loss(self.loss, **self.loss_kwargs)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{prefix}loss_kwargs = {fmt(self.loss_kwargs)}: {e}",
                                  prefix + "loss_kwargs") from None
            self._set(loss_kwargs=plain_arguments(self.loss_kwargs, LOSSES, self.loss))
        if self.epochs is None and self.max_steps is None:
            self._set(epochs=1)


def _is_bool(v: Any) -> bool:
    """A Python or NumPy bool (``np.bool_`` is no ``bool``)."""
    import numpy as np

    return isinstance(v, bool | np.bool_)


# Optimizer hyperparameters that may be negative (the others are numbers >= 0).
_SIGNED_HYPERPARAMETERS = frozenset({"dampening"})

# Names of the optimizer hyperparameters given as direct [train] keys (for messages).
_DIRECT: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("spec_direct",
                                                                   default=frozenset())


@_hinted
@dataclass(frozen=True)
class ProbeSpec(_Section):
    """``[probes]``: what the probe recorder measures during training."""

    section: ClassVar[str] = "probes"

    every: int = option(10, Int(0), "measure every k steps (0: no probes)")
    batch: int = option(300, Int(1), "most examples in the probe batch: the first held-out "
                        "(validation) rows, or training rows when fewer than 3 are held out")
    histogram_steps: tuple | None = option(None, Steps(), "steps with histograms "
                                           '(ints and/or "end")')
    jacobian: tuple = option((), JacobianSteps(), "steps with input-output Jacobian "
                             "spectra (true: 0 and end)")

    def _finish(self, prefix: str) -> None:
        # every = 0 turns the recorder off: steps asked for Jacobian spectra or histograms
        # were never recorded (the run finished, exit 0, its jacobian table empty)
        asked = [k for k in ("jacobian", "histogram_steps") if getattr(self, k)]
        if self.every == 0 and asked:
            key = prefix + asked[0]
            raise ConfigError(
                f"{key} = {fmt(list(getattr(self, asked[0])))} is recorded by the probes, "
                f"which {prefix}every = 0 turns off; accepted: {prefix}every >= 1 (or leave "
                f"out {key})", key)


# -- the whole run -------------------------------------------------------------------------

SECTIONS: tuple[str, ...] = ("data", "model", "train", "probes", "sweep")
TOP_LEVEL_KEYS: tuple[str, ...] = ("name",)
SPECS: dict[str, type] = {"data": DataSpec, "model": ModelSpec, "train": TrainSpec,
                          "probes": ProbeSpec}


@_hinted
@dataclass(frozen=True)
class RunSpec:
    """A whole run: an optional ``name``, the four sections and an optional ``sweep`` grid
    (``"section.key"`` -> values; each point is validated again when the sweep expands)."""

    data: DataSpec
    model: ModelSpec
    train: TrainSpec = field(default_factory=TrainSpec)
    probes: ProbeSpec = field(default_factory=ProbeSpec)
    name: str | None = None
    sweep: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Any, *, base_dir: str | os.PathLike | None = None) -> RunSpec:
        """Validate a config dict as read from TOML (see
        :func:`depthlab.experiments.config.validate`); ``base_dir`` resolves ``data.path``.
        A ``RunSpec`` is read as its :meth:`to_dict` (the recipe's one form everywhere)."""
        if isinstance(raw, RunSpec):
            raw = raw.to_dict()
        if not isinstance(raw, dict):
            hint = (" (a TOML file's path? read it with depthlab.experiments.read_toml(path))"
                    if isinstance(raw, str | os.PathLike) else "")
            raise ConfigTypeError(f"a config must be a table of sections (a dict), got "
                                  f"{type(raw).__name__}{hint}")
        for key in raw:
            if key not in SECTIONS and key not in TOP_LEVEL_KEYS:
                valid = [*SECTIONS, *TOP_LEVEL_KEYS]
                table = isinstance(raw[key], dict)
                close = ((SECTION_SYNONYMS.get(str(key).strip().lower()) if table else None)
                         or closest_name(key, valid))
                hint = ((f" (did you mean [{close}]?)" if close in SECTIONS else
                         f" (did you mean {fmt(close)}?)") if close else "")
                # a value above the first header ("lr = 0.1"): the section it belongs to
                # (it said "unknown key [lr]", as if it were a section, and nothing else)
                what = f"section [{key}]" if table else f"top-level key {fmt(key)}"
                hint = (_other_section_hint(None, key) if not table else "") or hint
                raise ConfigError(
                    f"unknown {what}{hint}; accepted sections: "
                    + ", ".join(f"[{s}]" for s in SECTIONS) + "; top-level keys: name", key)
        if "data" not in raw:
            raise ConfigError("missing [data] section (name = a built-in data set, or path = "
                              "a file)", "data")
        if "model" not in raw:
            raise ConfigError("missing [model] section (sizes = [n_in, hidden..., n_out])",
                              "model")
        name = raw.get("name")
        if name is not None:
            name = Text()("name", name)
        checked = {s: _in_section(s, spec_cls.check_fields, raw.get(s))
                   for s, spec_cls in SPECS.items()}
        base = _BASE_DIR.set(Path(base_dir) if base_dir is not None else None)
        try:
            parts = {s: _in_section(s, spec_cls._build, checked[s])
                     for s, spec_cls in SPECS.items()}
        finally:
            _BASE_DIR.reset(base)
        sweep = _check_sweep(raw.get("sweep"))
        return cls(name=name, sweep=sweep, **parts)

    def __post_init__(self) -> None:
        if self.model.batchnorm and self.train.batch_size == 1:
            raise ConfigError(
                "model.batchnorm = true needs at least 2 rows per batch but train.batch_size "
                "= 1; accepted: train.batch_size >= 2 or \"full\" (or model.batchnorm = "
                "false)", "train.batch_size")
        if self.model.batchnorm and self.probes.every and self.probes.batch < BN_PROBE_ROWS:
            # over 2 rows batch norm maps each unit to -1 and +1 whatever its inputs: no
            # gradient reaches the layers below it, which the probes would show as vanishing
            raise ConfigError(
                f"model.batchnorm = true needs at least {BN_PROBE_ROWS} rows in the probe batch "
                f"(over 2 rows batch norm passes no gradient) but probes.batch = "
                f"{self.probes.batch}; accepted: probes.batch >= {BN_PROBE_ROWS} (or "
                "probes.every = 0)", "probes.batch")
        t = self.train
        if t.patience is None and (t.monitor != "val_loss" or t.min_delta != 0):
            key = "train.monitor" if t.monitor != "val_loss" else "train.min_delta"
            shown = f'"{t.monitor}"' if key == "train.monitor" else f"{t.min_delta:g}"
            raise ConfigError(
                f"{key} = {shown} applies to early stopping, which needs train.patience; "
                "accepted: train.patience = an integer >= 1 (or leave out train.monitor and "
                "train.min_delta)", key)
        own_split = str(self.data.path or "").lower().endswith(".npz")  # x_val/y_val: its own
        if t.patience is not None and t.monitor.startswith("val_") \
                and self.data.val_fraction == 0 and not own_split:  # (prepare checks those)
            raise ConfigError(
                f"train.monitor = \"{t.monitor}\" needs a validation split but "
                "data.val_fraction = 0; accepted: data.val_fraction > 0 or train.monitor = "
                "\"train_loss\"", "train.monitor")
        logit_twin = {"bce_loss": ("binary_cross_entropy", "BCELoss", "probabilities"),
                      "nll_loss": ("cross_entropy", "NLLLoss", "log-probabilities")}
        if self.train.loss in logit_twin:  # Python-API losses: a config trains on logits
            twin, torch_name, takes = logit_twin[self.train.loss]
            raise ConfigError(
                f"train.loss = \"{self.train.loss}\" (torch's {torch_name}, on {takes}) is "
                f"not a config loss; accepted: \"{twin}\" (the same loss on the network's "
                "logits, without model.output_activation)", "train.loss")
        n_out = self.model.sizes[-1]
        if self.train.loss == "binary_cross_entropy" and n_out not in ("auto", 1):
            raise ConfigError(
                f"model.sizes ends with {n_out} outputs but train.loss = "
                "\"binary_cross_entropy\" needs 1 output; accepted: 1 or \"auto\"",
                "model.sizes")

    def to_dict(self) -> dict[str, Any]:
        """The validated config dict: ``name`` (if any), the four sections, ``sweep`` (if
        any). ``RunSpec.from_dict(spec.to_dict()) == spec``."""
        out: dict[str, Any] = {} if self.name is None else {"name": self.name}
        for section in SPECS:
            out[section] = getattr(self, section).to_dict()
        if self.sweep:
            out["sweep"] = _plain(self.sweep)
        return out

    def to_toml(self) -> str:
        """A TOML file that ``depthlab run`` accepts and that reads back to this spec (unset
        optional values are left out; initializer/activation objects cannot be written)."""
        return to_toml(self.to_dict())


def _in_section(section: str, fn: Any, arg: Any) -> Any:
    """``fn(arg)`` with the keys in messages dotted as ``section.key``."""
    token = _PREFIX.set(section + ".")
    try:
        return fn(arg)
    finally:
        _PREFIX.reset(token)


def _check_sweep(raw: Any) -> dict[str, list]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"sweep = {fmt(raw)} must be a table of \"section.key\" = [values]",
                          "sweep")
    valid = [f"{s}.{k}" for s, spec_cls in SPECS.items() for k in spec_cls.keys()]
    out: dict[str, list] = {}
    for key, values in raw.items():
        if isinstance(values, dict):  # written as model.depth = [...] without quotes
            for sub, vals in values.items():
                for k, v in _check_sweep({f"{key}.{sub}": vals}).items():
                    if k in out:  # "model.depth" = [...] and model.depth = [...]
                        # (or a [sweep.model] table: named too, it read "without quotes")
                        table = k.rpartition(".")[0]
                        raise ConfigError(f"sweep.{k} is given twice (as \"{k}\" and as {k} "
                                          f"without quotes or in a [sweep.{table}] table); "
                                          "accepted: one list per key", k)
                    out[k] = v
            continue
        if key in out:
            raise ConfigError(f"sweep.{key} is given twice (as \"{key}\" and as {key} without "
                              "quotes); accepted: one list per key", key)
        if key not in valid:
            raise _unknown_key("sweep", key, valid)
        listed = as_list(values)  # a tuple, range or 1-D array from Python too
        if not listed:
            raise bad(f"sweep.{key}", values, "a non-empty list of values to try",
                      "has the wrong type" if listed is None else "is empty")
        out[key] = _plain(listed)
    return out


# -- TOML output -----------------------------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_value(key)


def _toml_value(v: Any) -> str:
    v = _plain(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(int(v))
    if isinstance(v, float):  # (a float subclass's repr is no TOML: np.float64(0.1))
        return repr(float(v)) if v == v and abs(v) != float("inf") else (
            "nan" if v != v else ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise ValueError(f"cannot write {v!r} ({type(v).__name__}) to TOML; use a registered name "
                     "(e.g. init = \"he_normal\") instead of an object")


def _sweep_none(key: str) -> Any:
    """What a ``None`` in the grid list of ``"section.key"`` is written as in TOML, which has
    no null: the value None stands for in that section (``"full"`` for ``train.batch_size``,
    ``"cumulative"`` for ``model.bn_momentum``, the field's default, ``"none"`` for an
    optional name); a field whose None has no spelling (``train.patience``: no early
    stopping) raises a ValueError naming the key."""
    section, _, name = key.partition(".")
    f = SPECS[section].__dataclass_fields__.get(name) if section in SPECS else None
    if f is not None:
        check = f.metadata["check"]
        word = getattr(check, "none_means", None)
        if word is not None:
            return word
        default = _default(f)
        if default is not None:
            return _plain(default)
        try:
            if check(key, "none") is None:
                return "none"
        except (TypeError, ValueError):
            pass
    raise ValueError(f'cannot write sweep "{key}" to TOML: its list holds null (None), which '
                     "TOML cannot write and this key has no word for; accepted: a JSON config "
                     "(null), or a grid without None")


def to_toml(config: dict[str, Any]) -> str:
    """A config dict as TOML text (None values left out, except a field's whose None is a
    value of its own: ``bn_momentum`` "cumulative", ``batch_size`` "full"; a None in a
    ``[sweep]`` list written as the value it stands for, :func:`_sweep_none`)."""
    lines: list[str] = []
    if config.get("name") is not None:
        lines += [f"name = {_toml_value(config['name'])}", ""]
    for section in SECTIONS:
        body = config.get(section)
        if not body:
            continue
        if section == "sweep" and isinstance(body, dict):
            body = {k: [_sweep_none(k) if x is None else x for x in v]
                    if isinstance(v, list | tuple) else v for k, v in body.items()}
        elif section in SPECS and isinstance(body, dict):  # a raw config's None: the word
            # it stands for (bn_momentum "cumulative", batch_size "full"), not left out
            owned = SPECS[section].__dataclass_fields__
            body = {k: (getattr(owned[k].metadata["check"], "none_means", None)
                        if v is None and k in owned else v) for k, v in body.items()}
        lines.append(f"[{section}]")
        lines += [_toml_line(section, k, v) for k, v in body.items() if v is not None]
        lines.append("")
    return "\n".join(lines)


def _toml_line(section: str, key: str, value: Any) -> str:
    """``key = value``; an activation or initializer object (which TOML cannot hold) is a
    ValueError naming ``section.key`` and its spelling in a config: its registered name, and
    for a hidden activation with arguments the ``activation_kwargs`` table
    (:func:`_object_spelling`)."""
    try:
        return f"{_toml_key(key)} = {_toml_value(value)}"
    except ValueError:
        spelling = _object_spelling(key, value)
        if spelling is None:
            raise
        raise ValueError(f"cannot write {section}.{key} = {value!r} ({type(value).__name__}) "
                         f"to TOML, which holds names, not objects; {spelling}") from None


def _object_spelling(key: str, obj: Any) -> str | None:
    """How a config writes the activation or initializer object ``obj`` given as ``key``:
    ``write key = "name"`` when its constructor arguments are at their defaults (or, for
    ``activation``, with ``activation_kwargs``); otherwise which arguments a config cannot
    give. None when ``obj`` is no registered kind's object."""
    registry = ACTIVATIONS if key.endswith("activation") else INITIALIZERS
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or name not in registry:
        return None
    defaults = registry.defaults(name)
    given = {k: getattr(obj, k) for k in registry.arguments(name) if hasattr(obj, k)}
    changed = {k: v for k, v in given.items() if k in defaults and v != defaults[k]}
    if not changed:
        return f'write {key} = "{name}" (the same {registry.kind})'
    if key == "activation":
        return (f'write activation = "{name}" with activation_kwargs = '
                f"{_toml_value(changed)}")
    return (f'a config names {key} = "{name}" with its default arguments only '
            f"({_toml_value(defaults)}), not {_toml_value(changed)}: keep this recipe in "
            "Python (dl.mlp)")


# -- for user interfaces ---------------------------------------------------------------------


def fields_schema() -> list[dict[str, Any]]:
    """One row per setting: ``section``, ``name``, ``key`` (``"model.dropout"``), ``type``,
    ``default``, ``doc``, ``accepted`` (the words of the error message) and, where they exist,
    ``choices``, ``min``/``max`` (with ``min_open``/``max_open``) and ``optional``. A user
    interface builds its controls from these rows."""
    rows = []
    for section, spec_cls in SPECS.items():
        for f in fields(spec_cls):
            rows.append({"section": section, "name": f.name, "key": f"{section}.{f.name}",
                         "default": _plain(_default(f)), "doc": f.metadata["doc"],
                         **f.metadata["check"].schema()})
    return rows
