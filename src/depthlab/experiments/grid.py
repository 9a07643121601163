"""Sweep grids, expanded lazily: the size first, then one validated point at a time.

A ``[sweep]`` table ``{"section.key": [v_1, ..., v_k], ...}`` describes the Cartesian product
of its value lists (``itertools.product`` in the order the keys are written), so a grid of
keys with ``k_1, ..., k_m`` values has ``k_1 · k_2 · ... · k_m`` points. :func:`grid_size`
computes that number without building anything; :func:`iter_points` yields the points one by
one (each override applied to the base config and validated on its own), so a grid of 10⁶
points costs the memory of one point, not of the grid.

Before the first point, :func:`check_values` validates every *single* value of the grid on the
base config (``k_1 + ... + k_m`` validations instead of the product; a value the base refuses
is tried with each value of the other keys, for a value that needs another swept one, such as
``train.betas`` with a swept ``train.optimizer``), so a typo anywhere in the grid fails at
once; a bad *combination* of individually valid values (``model.batchnorm =
true`` with ``train.batch_size = 1``) is found when its point is reached: :func:`iter_points`
raises there, or with ``invalid="fail"`` yields the point with its ``error`` set (a sweep
stores it as a failed point and goes on with the others).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import math
import numbers
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..spec import SPECS, _check_sweep
from .config import ConfigError, canonical_json, data_digest, run_id, set_dotted, validate


@dataclass
class SweepPoint:
    """One grid point: its run id, a short name (``activation=tanh,seed=0``), the overrides
    and the validated config; for a combination the config checks refuse, ``error`` (the
    one-line message) and the validated base config with the point's values instead (id: its
    hash)."""

    id: str
    name: str
    overrides: dict[str, Any]
    config: dict[str, Any]
    error: str | None = None
    data_digest: str | None = None
    """The content fingerprint of ``data.path`` when the id was computed (None: no file)."""


def grid_size(grid: dict[str, list] | None) -> int:
    """Number of points of a grid: the product of the lengths of its value lists (1 for an
    empty grid, a single run)."""
    return math.prod(len(v) for v in (grid or {}).values())


def grid_shape(grid: dict[str, list] | None) -> str:
    """``"model.activation 2 × train.seed 6"``: the factors of :func:`grid_size`."""
    return " × ".join(f"{k} {len(v)}" for k, v in (grid or {}).items()) or "a single point"


def sweep_id(raw: dict[str, Any]) -> str:
    """Stable id of a sweep: a hash of its validated base config and grid (a dict; anything
    else is a TypeError naming it, not the id of its JSON)."""
    if not isinstance(raw, Mapping):
        raise TypeError(f"sweep_id needs a sweep config (a dict of sections), got "
                        f"{type(raw).__name__} {raw!r:.60}")
    return "sw-" + hashlib.sha256(canonical_json(raw).encode()).hexdigest()[:10]


def as_raw(raw: Any) -> Any:
    """A :class:`~depthlab.spec.RunSpec` as its config dict (``to_dict()``, its ``[sweep]``
    grid included), so the grid functions and :func:`~depthlab.experiments.sweep.run_sweep`
    take the recipe's spec as they take its dict; anything else as it is."""
    from ..spec import RunSpec

    return raw.to_dict() if isinstance(raw, RunSpec) else raw


def validate_base(raw: Any, *, base_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """:func:`~depthlab.experiments.config.validate` of a sweep's config (see
    :func:`_lifted_base`)."""
    raw = as_raw(raw)
    return _lifted_base(raw, base_dir)[0]


def _lifted_base(raw: Any, base_dir: str | os.PathLike | None
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The validated base of a sweep's config and the swept values it was validated with
    (``{}`` when ``raw`` is valid as it is). :func:`~depthlab.experiments.config.validate` of
    a sweep's config. Every point replaces
    the base's values of the swept keys, so a base refused for one of them (``train.batch_size
    = 1`` beside ``model.batchnorm = true``, the grid sweeping ``"train.batch_size" = [8,
    16]``) does not refuse the grid: the base is validated with that key set to the first of
    its swept values that the base accepts (the points are built from ``raw`` as given); a
    value refused for another swept key sets that key too (several base values refused at
    once); a refusal naming a key the grid does not sweep is lifted the same way when a swept
    key's value lifts it (``train.monitor`` beside a swept ``train.patience``,
    ``probes.jacobian`` beside a swept ``probes.every``, ``train.batch_size = 1`` beside a
    swept ``model.batchnorm``: the grid was refused though each point is accepted). A refusal
    that no swept value lifts is raised as it is."""
    try:
        return validate(raw, base_dir=base_dir), {}
    except ConfigError as e:
        swept = raw.get("sweep") if isinstance(raw, dict) else None
        if not isinstance(swept, dict) or not swept:
            raise
        try:
            grid = _check_sweep(swept)  # its keys and lists (as RunSpec.from_dict checks them)
        except ConfigError:
            raise e from None
        body = _body(raw)
        tries = 0

        def search(overrides: dict[str, Any], key: str) -> tuple[dict, dict] | None:
            # the first accepted value of ``key``; a value refused for another swept key
            # (both base values refused: batch_size 1 with batchnorm, the default monitor
            # val_loss with val_fraction 0) sets that key too; a refusal naming a key no
            # point sets may be one across fields that another swept key lifts (train.monitor
            # beside a swept train.patience): those keys are set too; at most FULL_CHECKS tries
            nonlocal tries
            for v in itertools.islice(_distinct(grid[key]), FULL_CHECKS):
                if tries >= FULL_CHECKS:
                    return None
                tries += 1
                point = {**overrides, key: v}
                try:
                    return validate({**_point_raw(body, point), "sweep": raw["sweep"]},
                                    base_dir=base_dir), point
                except ConfigError as again:
                    if again.key in grid and again.key not in point:
                        found = search(point, again.key)
                    else:
                        if again.key not in grid:
                            unswept.append(again)
                        found = lift(point)
                    if found is not None:
                        return found
            return None

        def lift(overrides: dict[str, Any]) -> tuple[dict, dict] | None:
            for other in grid:
                if other not in overrides:
                    found = search(overrides, other)
                    if found is not None:
                        return found
            return None

        unswept: list[ConfigError] = []  # refusals of keys no point sets: said as they are
        if e.key in grid:
            found = search({}, e.key)
        else:  # train.monitor (not swept) refused for want of train.patience (swept); a
            # refusal no point lifts (data.val_fraction + test_fraction >= 1) is said after
            # LIFT_CHECKS tries (0.05 s), not after FULL_CHECKS (0.5-1 s)
            tries = FULL_CHECKS - LIFT_CHECKS
            found = lift({})
            unswept.insert(0, e)
        if found is None:
            raise (unswept[0] if unswept else e) from None
        return found


def _short(key: str, keys: list[str]) -> str:
    tail = key.rsplit(".", 1)[-1]
    return tail if sum(k.rsplit(".", 1)[-1] == tail for k in keys) == 1 else key


def value_str(v: Any) -> str:
    """A grid value as it appears in point names (``true``, ``0.1``, ``[64,32]``,
    ``{negative_slope=0.2}``): a float as ``{:g}`` when that reads back as the same number,
    else in full (``0.1000001``), so distinct values never share a name. A NumPy scalar or
    array is named as its Python value (``np.float32(0.1)``, 0.10000000149011612, was named
    ``0.1`` as the point of ``0.1`` was; an array ``[5 8 4]``)."""
    if callable(getattr(v, "tolist", None)) and not isinstance(v, str | bytes):
        v = v.tolist()
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        short = f"{v:g}"
        return short if float(short) == v else repr(v)
    if isinstance(v, list | tuple):
        return "[" + ",".join(value_str(x) for x in v) + "]"
    if isinstance(v, dict):  # a table value (activation_kwargs): {negative_slope=0.1}
        return "{" + ",".join(f"{k}={value_str(x)}" for k, x in v.items()) + "}"
    return str(v)


def _body(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if k != "sweep"}


def _point_raw(body: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The base config with the point's values set. A swept ``model.sizes`` replaces the base's
    ``depth`` and ``width`` (unless the point sets them too): left in place they would rebuild
    the hidden sizes and every point would get the base's network (``ModelSpec.with_sizes``)."""
    point_raw = copy.deepcopy(body)
    if "model.sizes" in overrides and isinstance(point_raw.get("model"), dict):
        for key in ("depth", "width"):
            if f"model.{key}" not in overrides:
                point_raw["model"].pop(key, None)
    if isinstance(point_raw.get("train"), dict):
        _replace_base_hyperparameters(point_raw["train"], overrides)
    for k, v in overrides.items():
        set_dotted(point_raw, k, v)
    return point_raw


def _replace_base_hyperparameters(train: dict[str, Any], overrides: dict[str, Any]) -> None:
    """An optimizer hyperparameter the point sets replaces the base's, whichever of its two
    spellings each uses: ``"train.momentum" = [0.0, 0.9]`` over a base with
    ``optimizer_kwargs = {momentum = 0.5}`` (or a swept ``train.optimizer_kwargs`` table over a
    base with ``momentum = 0.5``) refused every point as "given twice" (a grid sweeping both
    spellings of one hyperparameter still is)."""
    from ..spec import all_optimizer_hyperparameters

    swept_table = overrides.get("train.optimizer_kwargs")
    if isinstance(swept_table, dict):
        for h in swept_table:
            if f"train.{h}" not in overrides:
                train.pop(h, None)
    base_table = train.get("optimizer_kwargs")
    if isinstance(base_table, dict) and "train.optimizer_kwargs" not in overrides:
        direct = {k.partition(".")[2] for k in overrides if k.startswith("train.")}
        direct &= set(all_optimizer_hyperparameters())
        if direct & set(base_table):
            train["optimizer_kwargs"] = {k: v for k, v in base_table.items() if k not in direct}


def _point_config(body: dict[str, Any], overrides: dict[str, Any],
                  base_dir: str | os.PathLike | None) -> dict[str, Any]:
    point_raw = _point_raw(body, overrides)
    try:
        return validate(point_raw, base_dir=base_dir)
    except ConfigError as e:
        where = ", ".join(f"{k} = {value_str(v)}" for k, v in overrides.items())
        raise ConfigError(f"sweep point ({where}): {e}", e.key) from None


LIFT_CHECKS = 100
"""Points :func:`validate_base` validates looking for swept values that lift a refusal of the
base naming a key the grid does not sweep (``train.monitor`` without ``train.patience``, the
grid sweeping ``train.patience``)."""
FULL_CHECKS = 1000
"""Values of one key validated on the whole base config (about 0.4 ms each); the numbers after
them get their field's own check only (type and range, about 1 µs), so a key of 10⁶ values is
checked in a second, not in minutes. A refusal across fields (memory, split fractions) of a
later number is found at its point, which the sweep stores as failed."""


def check_values(raw: dict[str, Any], grid: dict[str, list], *,
                 base_dir: str | os.PathLike | None = None) -> None:
    """Validate each value of ``grid`` alone on the base config of ``raw`` (raises
    :class:`ConfigError` naming the key and value): each distinct value once, the first
    :data:`FULL_CHECKS` of a key and every non-number on the whole config, later numbers by
    their field's check."""
    raw = as_raw(raw)
    body = _body(raw)
    lifted: list[dict[str, Any]] = []  # the swept values the base was validated with

    def on_lifted_base(key: str, v: Any) -> bool:
        # a base refused twice over (batch_size 1 beside batch norm, monitor val_loss without
        # validation rows), both lifted by swept keys: a third key's value ("train.seed")
        # was checked beside one other swept value only, and the grid refused
        if not lifted:
            try:
                lifted.append(_lifted_base(raw, base_dir)[1])
            except ConfigError:
                lifted.append({})
        point = {**{k: x for k, x in lifted[0].items() if k != key}, key: v}
        if len(point) < 2:
            return False
        try:
            _point_config(body, {k: point[k] for k in grid if k in point}, base_dir)
        except ConfigError:
            return False
        return True

    for key, values in grid.items():
        section, name = key.split(".", 1)
        spec_field = SPECS[section].__dataclass_fields__.get(name) if section in SPECS else None
        for count, v in enumerate(_distinct(values), 1):
            number = isinstance(v, numbers.Real) and not isinstance(v, bool)
            if count <= FULL_CHECKS or not number or spec_field is None:
                try:
                    _point_config(body, {key: v}, base_dir)
                except ConfigError as e:
                    if on_lifted_base(key, v):
                        continue
                    ok, other = _valid_with_another(body, grid, key, v, base_dir, str(e))
                    if not ok:
                        raise (other or e) from None
                continue
            try:
                spec_field.metadata["check"](key, v)
            except ConfigError as e:
                raise ConfigError(f"sweep point ({key} = {value_str(v)}): {e}", e.key) from None


def _distinct(values: list) -> Iterator[Any]:
    """Each value once (values compared by their canonical JSON), in order."""
    seen: set[str] = set()
    for v in values:
        text = canonical_json(v)
        if text not in seen:
            seen.add(text)
            yield v


def _valid_with_another(body: dict[str, Any], grid: dict[str, list], key: str, v: Any,
                        base_dir: str | os.PathLike | None,
                        refusal: str) -> tuple[bool, ConfigError | None]:
    """Whether ``key = v``, refused on the base config, is accepted with one value of another
    swept key set too (``train.betas`` with ``train.optimizer = "adam"`` over a base that
    uses sgd; ``model.activation_kwargs`` with the swept activation that takes them): then
    the grid is not refused, and its points where the combination is refused are stored as
    failed (the first :data:`FULL_CHECKS` distinct values of each other key are tried).
    Else the first refusal other than the base's ``refusal`` (the other value lifted that
    one, but ``v`` is wrong anyway: ``train.betas = [0.8, 2.0]`` with adam), if any."""
    first: ConfigError | None = None
    for other, values in grid.items():
        if other == key:
            continue
        for w in itertools.islice(_distinct(values), FULL_CHECKS):
            pair = {k: x for k, x in ((key, v), (other, w))}
            try:
                _point_config(body, {k: pair[k] for k in grid if k in pair}, base_dir)
                return True, None
            except ConfigError as e:
                if first is None and str(e).split("): ", 1)[-1] != refusal.split("): ", 1)[-1]:
                    first = e
    return False, first


def iter_points(raw: dict[str, Any], *, base_dir: str | os.PathLike | None = None,
                grid: dict[str, list] | None = None, limit: int | None = None,
                check: bool = True, invalid: str = "raise") -> Iterator[SweepPoint]:
    """Yield the grid points of ``raw`` (a config dict as read from TOML, with ``[sweep]``)
    one at a time, at most ``limit`` of them (the first ``limit`` combinations, an integer
    >= 1). A point whose combination of values the config checks refuse raises
    :class:`ConfigError` (``invalid="raise"``) or is yielded with its ``error``
    (``invalid="fail"``).

    ``"model.depth" = [...]`` rebuilds the hidden sizes as ``[width] * depth`` (see
    :mod:`depthlab.experiments.config`). Identical validated configs have the same run id;
    this generator keeps no set of ids (its memory does not grow with the grid), so a caller
    that must not run a point twice checks ids itself. ``check=True`` first validates every
    single value (:func:`check_values`).
    """
    raw = as_raw(raw)
    check_limit(limit)
    if invalid not in ("raise", "fail"):
        raise ValueError(f"invalid = {invalid!r} is not accepted; accepted: 'raise', 'fail'")
    base = validate_base(_with_grid(raw, grid), base_dir=base_dir)  # a given grid checked too
    grid = base.get("sweep") or {}
    if check:
        check_values(raw, grid, base_dir=base_dir)
    from .runner import check_data_file

    body = _body(raw)
    keys = list(grid)
    sized: set[str] = set()
    combos = itertools.product(*(grid[k] for k in keys)) if keys else iter([()])
    if limit is not None:  # a limit beyond any grid (10**23) is the whole grid
        combos = itertools.islice(combos, min(int(limit), sys.maxsize))
    for combo in combos:
        overrides = dict(zip(keys, combo))
        name = ",".join(f"{_short(k, keys)}={value_str(v)}" for k, v in overrides.items())
        if base.get("name"):
            name = f"{base['name']}:{name}" if name else base["name"]
        try:
            cfg = _point_config(body, overrides, base_dir)
        except ConfigError as e:
            if invalid == "raise":
                raise
            # the validated base (every default filled in) with the point's values as each
            # field reads them: lr 1 and 1.0, "SGD" and "sgd" are one point (each spelling
            # was stored as a failed run of its own, though the accepted points were one)
            point_cfg = _point_raw(_body(base), {k: _as_read(k, v) for k, v in
                                                 overrides.items()})
            rid = run_id(point_cfg)
            yield SweepPoint(rid, name or rid, overrides, point_cfg, error=str(e))
            continue
        # the file's fingerprint as the id takes it (both read the cache of its size and
        # time): a worker that reads other content fails the point (a list of points made
        # before the file was edited kept the old ids, and the new data were stored under them)
        path = cfg["data"].get("path")
        if path is not None and path not in sized:  # a file too large for memory is refused
            check_data_file(cfg)  # from its header, before its fingerprint reads it whole
            sized.add(path)
        content = data_digest(cfg)
        rid = run_id(cfg)
        yield SweepPoint(rid, name or rid, overrides, cfg, data_digest=content)


def _as_read(key: str, value: Any) -> Any:
    """A swept ``value`` of ``"section.key"`` as the config reads it, alone: the field's own
    check (``1`` -> ``1.0`` for ``train.lr``, ``"ReLU"`` -> ``"relu"``, step lists sorted), a
    direct optimizer hyperparameter as its number (``1`` -> ``1.0``; lists of numbers
    likewise); as given when that check refuses it or it is None (a default)."""
    from ..spec import _is_bool, _plain

    section, _, name = key.partition(".")
    spec_field = SPECS[section].__dataclass_fields__.get(name) if section in SPECS else None
    if value is None:
        return value
    try:
        if spec_field is not None:
            return _plain(spec_field.metadata["check"](key, value))
    except (ConfigError, TypeError, ValueError):
        return value

    def number(v: Any) -> Any:  # as TrainSpec reads an optimizer hyperparameter
        if isinstance(v, numbers.Real) and not _is_bool(v) and math.isfinite(v):
            return float(v) + 0.0
        return v

    if section == "train" and spec_field is None:
        listed = value.tolist() if callable(getattr(value, "tolist", None)) else value
        if isinstance(listed, list | tuple):
            return [number(v) for v in listed]
        return bool(value) if _is_bool(value) else number(value)
    return value


def canonical_grid(grid: dict[str, list]) -> dict[str, list]:
    """``grid`` with each value as the config reads it (:func:`_as_read`; a ``None`` as the
    value it stands for, as ``RunSpec.to_toml`` writes it: ``"full"`` for
    ``train.batch_size``, the field's default): the form a sweep's id hashes, so one grid
    spelled two ways (``lr = [1, 0.1]`` and ``[1.0, 0.1]``, ``"ReLU"`` and ``"relu"``, a
    JSON ``null`` and its TOML word) is one sweep, as its points are one run each. A grid
    already in that form is unchanged (its sweep id too). The numbers of a key are read as
    its first int and first float are (a key of 10⁶ seeds in a fraction of a second, not
    10⁶ checks)."""
    from ..spec import _sweep_none

    def read(key: str, v: Any) -> Any:
        if v is None:
            try:
                v = _sweep_none(key)
            except ValueError:  # no word for it (train.patience: no early stopping)
                return None
        if key in FLOAT_TABLES and isinstance(v, dict):  # {momentum = 0}: stored as 0.0
            return {k: _float_numbers(x) for k, x in v.items()}
        return _as_read(key, v)

    out: dict[str, list] = {}
    for key, values in grid.items():
        as_int: Any = None  # how the key reads an int: int, float or (False) by its check
        as_float: Any = None  # whether it reads a float as itself (+ 0.0)
        listed = []
        for v in values:
            kind = type(v)
            if kind is int:
                if as_int is None:
                    r = read(key, v)
                    as_int = type(r) if type(r) in (int, float) and r == v else False
                if as_int is int:
                    listed.append(v)
                    continue
                if as_int is float and abs(v) < 2**53:
                    listed.append(float(v))
                    continue
            elif kind is float:
                if as_float is None:
                    r = read(key, v)
                    as_float = type(r) is float and (r == v or (r != r and v != v))
                if as_float:
                    listed.append(v + 0.0)
                    continue
            listed.append(read(key, v))
        out[key] = listed
    return out


FLOAT_TABLES = frozenset({"train.optimizer_kwargs", "train.loss_kwargs",
                          "model.activation_kwargs"})
"""Table settings whose numbers the config stores as floats (``{momentum = 0}`` is
``{momentum = 0.0}``, one run id); ``data.options`` is not one (``d = 5`` stays an integer)."""


def _float_numbers(v: Any) -> Any:
    """``v`` with its numbers (in lists too) as floats, as a :data:`FLOAT_TABLES` entry is
    stored; bools, text and integers past 2**53 as they are."""
    if isinstance(v, list | tuple):
        return [_float_numbers(x) for x in v]
    if isinstance(v, float):
        return v + 0.0
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**53:
        return float(v)
    return v


def _with_grid(raw: Any, grid: Any) -> Any:
    """``raw`` with its ``[sweep]`` table replaced by ``grid`` (when given), so that the grid is
    validated like one read from TOML (keys, non-empty lists; one-line ConfigError)."""
    if grid is None or not isinstance(raw, dict):
        return raw
    return {**raw, "sweep": grid}


def check_limit(limit: Any) -> None:
    """``limit`` (the first N points of a grid) is None or an integer >= 1 (TypeError or
    ValueError naming it otherwise)."""
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, numbers.Integral):
        raise TypeError(f"limit = {limit!r} has the wrong type; accepted: an integer >= 1 "
                        "(or None for the whole grid)")
    if limit < 1:
        raise ValueError(f"limit = {limit!r} is not accepted; accepted: an integer >= 1 (or "
                         "None for the whole grid)")


POINT_BYTES = 8192
"""Memory of one expanded point (its validated config dicts: about 4.3 KiB measured, doubled
for the run id set and the list)."""


def expand(raw: dict[str, Any], *, base_dir: str | os.PathLike | None = None,
           grid: dict[str, list] | None = None) -> list[SweepPoint]:
    """All grid points of ``raw`` as a list, every point validated before it returns (so a bad
    value anywhere fails before anything runs); points with identical validated configs are
    kept once. For large grids use :func:`iter_points`: a list that cannot fit in memory
    (:data:`POINT_BYTES` per point) is refused before the first point is built."""
    raw = as_raw(raw)
    from ..memory import check_fits

    grid = validate_base(_with_grid(raw, grid), base_dir=base_dir).get("sweep") or {}
    size = grid_size(grid)
    check_fits(size * POINT_BYTES, f"expand() of a grid of {size:,} points (iter_points "
               "yields them one at a time)")
    points: list[SweepPoint] = []
    seen: set[str] = set()
    for p in iter_points(raw, base_dir=base_dir, grid=grid, check=False):
        if p.id not in seen:
            seen.add(p.id)
            points.append(p)
    return points


MEMORY_FREE_KEYS = frozenset({
    "data.standardize", "data.seed", "data.val_fraction", "data.test_fraction",
    "data.standardize_targets", "model.activation", "model.init", "model.batchnorm",
    "model.dropout", "model.input_dropout", "model.dropout_type", "model.output_activation",
    "model.output_init", "model.bias_init", "model.activation_kwargs", "model.bn_inference",
    "model.bn_momentum", "model.bn_eps", "model.bn_ema_start", "train.loss_kwargs",
    "train.lr", "train.epochs", "train.max_steps", "train.seed", "train.l1", "train.l2",
    "train.eval_every", "train.dampening", "train.weight_decay", "train.nesterov",
    "train.maximize", "train.lr_decay", "train.initial_accumulator_value", "train.eps",
    "train.rho", "train.alpha", "train.centered", "train.betas", "train.amsgrad",
    "train.decoupled_weight_decay", "train.momentum_decay", "probes.every",
    "probes.histogram_steps", "probes.jacobian"})
"""Grid keys that :func:`~depthlab.experiments.runner.memory_need` does not read (through the
validated config): points differing only in these need the same memory."""
MEMORY_TRIES = 3
"""Points of one memory group validated at most, looking for one that is not refused."""


HISTORY_KEYS = frozenset({"train.epochs", "train.max_steps", "probes.every"})
"""Keys of :data:`MEMORY_FREE_KEYS` that a run's history memory depends on (its steps and probe
rows: :func:`~depthlab.experiments.runner.history_bytes`); with every memory key they group a
streamed grid's points for the history screen (``history_groups``)."""


def memory_groups(raw: dict[str, Any], grid: dict[str, list], *,
                  base_dir: str | os.PathLike | None = None, limit: int | None = None,
                  most: int = 2000,
                  free_keys: frozenset[str] = MEMORY_FREE_KEYS,
                  ) -> list[tuple[dict[str, Any], int]]:
    """The points of the first ``limit`` of ``grid`` grouped by their values of the keys a
    point's memory depends on (every key but ``free_keys``, :data:`MEMORY_FREE_KEYS` by
    default; ``MEMORY_FREE_KEYS - HISTORY_KEYS`` groups by history memory too): ``(validated
    config of one point of the group, points in the group)`` for each group with a point the
    config checks accept, at most ``most`` groups. Walks the grid as value indices, validating
    only a few points per group, so a grid of 10⁵ points of a few networks costs a fraction of
    a second (expanding every point costs ~0.5 ms each)."""
    keys = list(grid)
    free = [k in free_keys for k in keys]
    sizes = [len(grid[k]) for k in keys]
    if limit is None or limit >= math.prod(sizes):
        # the whole grid: each group (one value index per memory key) holds the same number
        # of points, the product of the free keys' sizes, so only the memory keys are walked
        # (walking all 729,000,000 points of a --yes grid kept `sweep --jobs 2` silent for
        # half an hour before its first point); same groups, counts and order as the walk
        groups: dict[tuple[int, ...], list] = {}
        tries = list(itertools.islice(itertools.product(
            *(range(n) for n, f in zip(sizes, free) if f)), MEMORY_TRIES))
        count = math.prod(n for n, f in zip(sizes, free) if f)
        for key in itertools.islice(itertools.product(
                *(range(n) for n, f in zip(sizes, free) if not f)), most):
            cands = []
            for t in tries:
                it_key, it_free = iter(key), iter(t)
                cands.append(tuple(next(it_free) if f else next(it_key) for f in free))
            groups[key] = [count, cands]
        return _group_configs(raw, grid, keys, groups, base_dir)
    combos = itertools.product(*(range(len(grid[k])) for k in keys))
    if limit is not None:
        combos = itertools.islice(combos, min(int(limit), sys.maxsize))
    groups: dict[tuple[int, ...], list] = {}  # key -> [count, candidate combos]
    for combo in combos:
        key = tuple(i for i, f in zip(combo, free) if not f)
        entry = groups.get(key)
        if entry is None:
            if len(groups) >= most:
                continue
            groups[key] = entry = [0, []]
        entry[0] += 1
        if len(entry[1]) < MEMORY_TRIES:
            entry[1].append(combo)
    return _group_configs(raw, grid, keys, groups, base_dir)


def _group_configs(raw: dict[str, Any], grid: dict[str, list], keys: list[str],
                   groups: dict[tuple[int, ...], list],
                   base_dir: str | os.PathLike | None) -> list[tuple[dict[str, Any], int]]:
    """:func:`memory_groups`' answer: the first accepted candidate of each group."""
    body = _body(raw)
    out = []
    for count, candidates in groups.values():
        for combo in candidates:
            overrides = {k: grid[k][i] for k, i in zip(keys, combo)}
            try:
                out.append((_point_config(body, overrides, base_dir), count))
                break
            except ConfigError:  # a refused combination: never run, needs no memory
                continue
    return out
