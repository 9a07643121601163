"""Experiment configs: TOML files with ``[data]``, ``[model]``, ``[train]``, ``[probes]`` and
(for sweeps) ``[sweep]`` sections, validated before anything starts. The keys, defaults and
checks are those of :mod:`depthlab.spec` (``RunSpec``); this module reads the files, returns
validated dicts and derives run ids.

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

import hashlib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..data.fingerprint import builtin_digest, digest
from ..spec import SECTIONS, SPECS, TOP_LEVEL_KEYS, ConfigError, RunSpec, optimizer_hyperparameters

__all__ = [
    "SECTIONS", "TOP_LEVEL_KEYS", "ConfigError", "accepted_keys", "canonical_json",
    "load_config", "optimizer_hyperparameters", "read_toml", "run_id", "set_dotted",
    "validate",
]


def accepted_keys(section: str) -> list[str]:
    """The keys accepted in ``[section]`` (direct optimizer hyperparameters included)."""
    return SPECS[section].keys()


def validate(raw: dict[str, Any], *, base_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Check a config dict (as read from TOML) and return it with every default filled in
    (``RunSpec.from_dict(raw).to_dict()``).

    Raises :class:`ConfigError` (one line: key, value, what is accepted) on an unknown section
    or key (with the closest valid key suggested), a wrong type, an out-of-range value or an
    unknown name. ``base_dir`` resolves a relative ``data.path``. A ``[sweep]`` table is checked
    (keys and list values) and kept under ``"sweep"``; each expanded point is validated again by
    :func:`depthlab.experiments.sweep.expand`.
    """
    return RunSpec.from_dict(raw, base_dir=base_dir).to_dict()


MAX_CONFIG_BYTES = 64 * 2**20
"""A config larger than this is not read (a sweep grid of a million values is ~10 MiB)."""


STDIN = "-"
"""The config path that means standard input (``depthlab run -``, ``sweep -``, ``doctor -``)."""
STDIN_NAME = "<stdin>"
"""How messages name a config read from standard input."""


def _bad_byte(e: UnicodeDecodeError) -> str:
    """Where UTF-8 decoding failed: ``byte 0xe9 at line 3, column 10`` (a Latin-1 "é"; the
    message named only the codec's reason, "invalid continuation byte", not where)."""
    before = bytes(e.object[:e.start])
    line = before.count(b"\n") + 1
    column = len(before) - (before.rfind(b"\n") + 1) + 1  # in bytes
    return f"byte 0x{e.object[e.start]:02x} at line {line}, column {column}"


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a TOML config file, or a JSON one (a ``.json`` name: the same sections as a
    top-level object, e.g. ``{"model": {"sizes": [64, 32, 10]}}``); a missing file or a syntax
    error is a one-line :class:`ConfigError`. ``"-"`` reads the config from standard input
    (JSON when it starts with ``{``, else TOML; a relative ``data.path`` in it is then relative
    to the current folder, which ``Path("-").resolve().parent`` is)."""
    if not isinstance(path, str | os.PathLike):  # os.fspath's "expected str, bytes or ..."
        raise TypeError(f"config path {path!r:.40} has the wrong type; accepted: a .toml or "
                        ".json file path (str or os.PathLike), or \"-\" for standard input")
    if not str(path).strip():  # Path("") is "." (the current folder): name what was given
        raise ConfigError(f"config path {str(path)!r} is empty; expected a .toml file")
    stdin = os.fspath(path) == STDIN
    p = Path(STDIN_NAME if stdin else path)
    if not stdin and not p.exists():
        raise ConfigError(f"config file {str(p)!r} not found")
    if not stdin and p.is_dir():
        raise ConfigError(f"config path {str(p)!r} is a folder; expected a .toml file")
    try:
        if stdin:  # `depthlab run -`: the config piped in (was "config file '-' not found")
            import sys

            stream = getattr(sys.stdin, "buffer", None)
            data = b"" if stream is None else stream.read(MAX_CONFIG_BYTES + 1)  # closed: None
            if not data.strip():
                raise ConfigError(f"{STDIN_NAME}: standard input is "
                                  f"{'closed' if stream is None else 'empty'}; expected a TOML "
                                  "or JSON config on it (e.g. `depthlab init - | depthlab run "
                                  "-`), or give a config file")
        else:
            with open(p, "rb") as f:  # bounded: /dev/zero or an endless pipe is not read forever
                data = f.read(MAX_CONFIG_BYTES + 1)
        if not stdin:  # a data file given where the config goes (`depthlab run my.csv`)
            _refuse_data_file(p, data)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {str(p)!r} is larger than "
                              f"{MAX_CONFIG_BYTES // 2**20} MiB; accepted: a TOML config file")
        if data.startswith((b"\xff\xfe", b"\xfe\xff", b"\0\0\xfe\xff")) or b"\0" in data[:4096]:
            from ..data.files import wide_encoding

            # PowerShell 5's Out-File writes UTF-16: was "not a UTF-8 text file (invalid start
            # byte)", or without a byte-order mark a TOML syntax error at line 1, column 2
            wide = wide_encoding(data[:4096])
            if wide is not None:
                raise ConfigError(f"{p}: the file is {wide} text; accepted: UTF-8 text "
                                  "(re-save the file as UTF-8)")
        # utf-8-sig: a byte-order mark (written by some Windows editors) is not a syntax error
        text = data.decode("utf-8-sig")
        # standard input has no name: a JSON object is told by its "{" (no TOML starts so)
        json_text = text.lstrip().startswith("{") if stdin else p.suffix.lower() == ".json"
        raw = _json_config(p, text) if json_text else tomllib.loads(text)
        _check_nesting(raw, p)
        return raw
    except RecursionError:  # the parser's own recursion: [[[[... thousands deep
        raise ConfigError(f"{p}: lists or tables are nested too deeply to read; accepted: at "
                          f"most {MAX_CONFIG_DEPTH} levels") from None
    except tomllib.TOMLDecodeError as e:
        raise _not_toml(p, text, e) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not a UTF-8 text file: {_bad_byte(e)} ({e.reason}); "
                          "accepted: UTF-8 text (re-save the file as UTF-8)") from None
    except ValueError as e:  # int() of a literal past Python's int_max_str_digits (4300)
        if "integer string conversion" not in str(e):
            raise
        import sys

        found = re.search(r"has (\d+) digits", str(e))
        raise ConfigError(f"{p}: an integer of {found.group(1) if found else 'too many'} "
                          "digits cannot be read; accepted: integers of at most "
                          f"{sys.get_int_max_str_digits()} digits") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(p)!r}: {e.strerror}") from None


DATA_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".npz", ".npy", ".gz", "-ubyte", ".idx",
                 ".parquet", ".pkl", ".pickle", ".h5", ".hdf5")
"""Names of data (or binary) files, not configs: ``depthlab run my.csv`` is a mix-up of the
config with its ``[data] path``."""
DATA_MAGIC = ((b"PK\x03\x04", "a zip archive (.npz)"), (b"\x93NUMPY", "a NumPy .npy array"),
              (b"\x1f\x8b", "a gzip file"), (b"PAR1", "a Parquet file"),
              (b"\x00\x00\x08", "an IDX file"), (b"\x89HDF", "an HDF5 file"))
"""First bytes of data files that are never a config (no TOML or JSON text starts so)."""


def _refuse_data_file(p: Path, head: bytes) -> None:
    """:class:`ConfigError` when the config path ``p`` (whose first bytes are ``head``) is a
    data file: a name ending in one of :data:`DATA_SUFFIXES`, or a ``.toml``/``.json``-less
    file whose bytes start with one of :data:`DATA_MAGIC` (a ``.py`` file is named as Python,
    with ``doctor --torch``). Its message names the file as data and says where it goes
    (``[data] path``); it was "not a UTF-8 text file ... (re-save the file as UTF-8)" for a
    .npz, a TOML syntax error at line 1 for a .csv and "missing [data] section" for an empty
    .csv."""
    lower = p.name.lower()
    if lower.endswith((".toml", ".json")):
        return
    if lower.endswith(".py"):  # a model's script: was a TOML syntax error at line 1
        raise ConfigError(f"{str(p)!r} is a Python file, not a config; accepted: "
                          f"{READ_FORMATS} (a PyTorch model in a .py file: `depthlab doctor "
                          f"--torch {p}:FUNCTION`)")
    kind = next((what for magic, what in DATA_MAGIC if head.startswith(magic)), None)
    suffix = next((s for s in DATA_SUFFIXES if lower.endswith(s)), None)
    if kind is None and suffix is None:
        return
    what = kind or f"a {suffix} data file"
    raise ConfigError(f"{str(p)!r} is {what}, not a config; accepted: {READ_FORMATS} whose "
                      f"[data] section names the file (path = {json.dumps(str(p))}; "
                      "`depthlab init NAME` writes a starter config)")


READ_FORMATS = "a TOML (.toml) or JSON (.json) config"
"""The config formats :func:`read_toml` reads (a name without ``.json`` is read as TOML)."""
YAML_SUFFIXES = (".yaml", ".yml")


def _not_toml(p: Path, text: str, e: Exception) -> ConfigError:
    """The error of a config that TOML cannot parse: a YAML file (by its name) is named as
    such with the formats read, not as a broken TOML file ("Expected '=' after a key ... line
    1, column 6"); a JSON object in a file not named ``.json`` gets that hint, other JSON (null,
    a list) outside a ``.toml`` file is named as JSON; a file not named ``.toml`` is said to
    have been read as TOML."""
    suffix = p.suffix.lower()
    if suffix in YAML_SUFFIXES:
        return ConfigError(f"{str(p)!r}: a YAML config is not read; accepted: {READ_FORMATS}")
    if text.lstrip().startswith("{"):
        return ConfigError(f"{p}: TOML syntax error: {e} (the file looks like JSON: a .json "
                           "name reads it as JSON)")
    if suffix != ".toml":  # JSON that is no object (`echo null | depthlab run -`, a list)
        try:  # was named a TOML syntax error ("Expected '=' after a key ...")
            return ConfigError(f"{p}: {_not_an_object(json.loads(text))}")
        except ValueError:
            pass
    read_as = "" if suffix == ".toml" else f" (read as TOML; accepted: {READ_FORMATS})"
    return ConfigError(f"{p}: TOML syntax error: {e}{_given_twice(text, e)}{read_as}")


def _given_twice(text: str, e: Exception) -> str:
    """What tomllib's "Cannot overwrite a value (at line N, ...)" is about: the key (or table
    header) on line N names a key that its table already holds; "Cannot declare ('data',)
    twice": the table header ``[data]`` appears twice; ``""`` for other errors."""
    declared = re.match(r"Cannot declare \((.*)\) twice", str(e))
    if declared:  # `[data]` twice: tomllib names it ('data',)
        table = ".".join(re.findall(r"'([^']*)'", declared[1])) or declared[1]
        return (f": table [{table}] is declared twice; accepted: each table once (put all "
                f"its keys under one [{table}])")
    found = re.match(r"Cannot overwrite a value \(at line (\d+),", str(e))
    lines = text.splitlines()
    if not found or not 1 <= int(found[1]) <= len(lines):
        return ""
    line = lines[int(found[1]) - 1].strip()
    if line.startswith("["):
        return (f": table {line.split('#')[0].strip()} names a key that already holds a value; "
                "accepted: each key once")
    key = line.split("=", 1)[0].strip()
    return f": key {key!r} is given twice in its table; accepted: each key once"

MAX_CONFIG_DEPTH = 32
"""Deepest nesting of lists and tables a config may have (a sweep of layer-size lists needs 4):
deeper values reached recursive code (messages, hashing) as an internal RecursionError."""


def _check_nesting(raw: Any, p: Path) -> None:
    """Refuse lists or tables nested more than :data:`MAX_CONFIG_DEPTH` levels, naming the
    key (walked without recursion)."""
    stack: list[tuple[Any, str, int]] = [(raw, "", 0)]
    while stack:
        value, key, depth = stack.pop()
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"{p}: {key or 'the config'} holds lists or tables nested more "
                              f"than {MAX_CONFIG_DEPTH} levels deep; accepted: at most "
                              f"{MAX_CONFIG_DEPTH} levels", key or None)
        if isinstance(value, dict):
            stack += [(v, f"{key}.{k}" if key else str(k), depth + 1) for k, v in value.items()
                      if isinstance(v, dict | list)]
        elif isinstance(value, list):
            stack += [(v, key, depth + 1) for v in value if isinstance(v, dict | list)]


def _json_config(p: Path, text: str) -> dict[str, Any]:
    """A JSON config: an object of sections (``NaN``/``Infinity``, which TOML lacks too, and a
    repeated key are refused)."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise ConfigError(f"{p}: JSON key {k!r} appears twice")
            out[k] = v
        return out

    def constant(name: str) -> Any:
        raise ConfigError(f"{p}: JSON value {name} is not accepted; accepted: finite numbers")

    try:
        raw = json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: JSON syntax error: {e.msg} (line {e.lineno}, column "
                          f"{e.colno})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: {_not_an_object(raw)}")
    return raw


def _not_an_object(value: Any) -> str:
    """Why JSON ``value`` (no object) is not a config."""
    what = "null" if value is None else type(value).__name__
    return (f'a JSON config is an object of sections such as {{"model": {{...}}, "data": '
            f"{{...}}}}, got {json.dumps(value)[:40]} (a {what})")


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a TOML config file; messages are prefixed with the file name."""
    raw = read_toml(path)
    try:
        return validate(raw, base_dir=Path(path).resolve().parent)
    except ConfigError as e:
        raise ConfigError(f"{config_name(path)}: {e}", e.key) from None


def config_name(path: str | os.PathLike) -> str:
    """How messages name the config at ``path`` (:data:`STDIN_NAME` for ``"-"``)."""
    return STDIN_NAME if os.fspath(path) == STDIN else os.fspath(path)


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces) used for hashing."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


# The keys of the first config schema are always hashed. A key added later is hashed only when
# it differs from its default, so a new option keeps the run ids of the configs that do not use
# it (stored runs stay findable, interrupted sweeps resume).
FIRST_SCHEMA_KEYS: dict[str, frozenset[str]] = {
    "data": frozenset("name path n standardize seed val_fraction test_fraction label "
                      "options".split()),
    "model": frozenset("sizes depth width activation init batchnorm residual dropout "
                       "dropout_type output_activation output_init bias_init activation_kwargs "
                       "bn_inference bn_momentum bn_eps dtype".split()),
    "train": frozenset("loss loss_kwargs optimizer optimizer_kwargs lr batch_size epochs "
                       "max_steps seed l1 l2 eval_every".split()),
    "probes": frozenset("every batch histogram_steps jacobian".split()),
}


def _hashed_section(section: str, values: Any) -> Any:
    if section not in SPECS or not isinstance(values, dict):
        return values
    first, defaults = FIRST_SCHEMA_KEYS[section], SPECS[section].defaults()
    out = {k: v for k, v in values.items()
           if k in first or k not in defaults or v != defaults[k]}
    for kwargs, (registry, name) in _ARGUMENTS.get(section, {}).items():
        if isinstance(out.get(kwargs), dict) and out[kwargs]:
            out[kwargs] = _without_defaults(out[kwargs], registry, out.get(name))
    return out


_ARGUMENTS: dict[str, dict[str, tuple[str, str]]] = {
    "train": {"optimizer_kwargs": ("optimizers", "optimizer"), "loss_kwargs": ("losses", "loss")},
    "model": {"activation_kwargs": ("activations", "activation")},
}
"""The keyword-argument tables of a section: (registry, the key naming the registered
object they are given to)."""


def _defaults(registry: str, name: Any) -> dict[str, Any]:
    """The keyword defaults of the registered ``name``'s constructor ({} when unknown)."""
    import importlib

    try:
        return importlib.import_module(f"depthlab.{registry}").REGISTRY.defaults(name)
    except (KeyError, TypeError, ValueError, ImportError):
        return {}


def _same(a: Any, b: Any) -> bool:
    """Whether two hyperparameter values are the same setting: numbers by value (0 and 0.0),
    lists and tuples by their items, booleans only as booleans."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _without_defaults(kwargs: dict[str, Any], registry: str, name: Any) -> dict[str, Any]:
    """``kwargs`` without the arguments given at their default (``momentum = 0.0`` for sgd,
    ``betas = [0.9, 0.999]`` for adam): the same training as leaving them out, so the same
    run id (it was another id, and the stored run was trained again)."""
    defaults = _defaults(registry, name)
    return {k: v for k, v in kwargs.items() if not (k in defaults and _same(v, defaults[k]))}


def data_digest(config: dict[str, Any]) -> str | None:
    """The content fingerprint of ``config``'s ``data.path`` (None: no file, or unreadable),
    or of the user's copy of files a built-in ``data.name`` reads (``fashion-mnist`` from
    ``data.options.path`` or ``$DEPTHLAB_FASHION_MNIST``; None: the packaged copy or a
    generated set), as :func:`run_id` mixes it in."""
    data = config.get("data") if isinstance(config, dict) else None
    if not isinstance(data, dict):
        return None
    path = data.get("path")
    if isinstance(path, str) and path:
        return digest(path)
    name = data.get("name")
    return builtin_digest(name, data.get("options")) if isinstance(name, str) else None


def run_id(config: dict[str, Any], kind: str = "run", extra: Any = None) -> str:
    """Stable id of a run: the first 12 hex digits of sha256 of the canonical JSON of the
    validated config (its ``name`` and ``sweep`` entries left out; keys added to the schema
    after the first version only when they differ from their default). Runs and sweep points
    with the same config share an id; ``kind`` values other than ``run``/``sweep-point`` (and
    ``extra``) are mixed in so e.g. a doctor diagnosis never replaces a training run. A data
    ``path`` adds the file's content fingerprint (:func:`depthlab.data.fingerprint.digest`):
    an edited data file gives new ids (its stored runs are not taken for finished points); so
    does a built-in data set read from a user's copy (:func:`data_digest`): two copies of
    other images are two runs, not one id."""
    if not isinstance(config, Mapping):
        raise TypeError(f"run_id needs a config (a dict of sections), got "
                        f"{type(config).__name__} {config!r:.60}")
    body = {k: _hashed_section(k, v) for k, v in config.items() if k not in ("name", "sweep")}
    data = body.get("data")
    content = data_digest(config)
    if isinstance(data, dict) and content is not None:
        body["data"] = {**data, "content": content}
    payload: Any = body if kind in ("run", "sweep-point") and extra is None else {
        "kind": kind, "config": body, "extra": extra}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:12]


def same_run_ids(config: dict[str, Any], sizes: list[int]) -> list[str]:
    """The other run ids of the run of the validated ``config`` whose ``model.sizes`` the data
    resolved to ``sizes``: its ends written as ``"auto"`` or as those numbers (the only ends
    a run accepts, so the same network; a stored run's config holds the numbers). Ids are of
    the config as written (:func:`run_id`, unchanged for stored runs); a command that must not
    store one run twice looks for each of these too."""
    written = (config.get("model") or {}).get("sizes")
    if not isinstance(written, list) or len(written) < 2 or len(sizes) != len(written):
        return []
    own = run_id(config)
    ids: list[str] = []
    for first in ("auto", sizes[0]):
        for last in ("auto", sizes[-1]):
            variant = {**config, "model": {**config["model"],
                                           "sizes": [first, *written[1:-1], last]}}
            rid = run_id(variant)
            if rid != own and rid not in ids:
                ids.append(rid)
    return ids


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    """``config[section][key] = value`` for ``key = "section.key"`` (sections created)."""
    section, _, name = key.partition(".")
    config.setdefault(section, {})[name] = value
