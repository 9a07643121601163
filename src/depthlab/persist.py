"""Save and load networks: ``dl.save(net, path)`` / ``dl.load(path)``.

One ``.npz`` file (NumPy's zip of ``.npy`` arrays, read with ``allow_pickle=False``: nothing in
it is executed) holding

* ``recipe``: the network's ``config`` as UTF-8 JSON (``mlp(**recipe)`` rebuilds the
  architecture), with ``format`` and optional user ``meta`` (e.g. the loss, the input
  standardization);
* ``param:<k>:<name>``: the value of the k-th parameter in forward order (same dtype);
* ``bn:<k>:<field>``: batch-norm state (running mean/variance, batch count, and the
  whole-training-set statistics when ``calibrate`` computed them);
* ``dropout:<k>:rng``: the k-th dropout layer's generator state (``bit_generator.state`` as
  UTF-8 JSON), so training resumed after loading draws the masks the uninterrupted run draws;
* ``meta:<key>``: arrays given in ``meta`` (such as the standardization mean and std).

Loading rebuilds the network with :func:`depthlab.mlp` and copies every array back, so the
loaded network's predictions are bit-identical to the saved one's. The file is written
atomically (temporary file + rename).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import Staged, atomic_write_bytes, expand_home, stage_bytes
from .backend import BIT_GENERATORS, rng_from_state
from .memory import MemoryRefusal

__all__ = ["FORMAT", "load", "load_meta", "save"]

FORMAT = "depthlab-network/1"
_BN_FIELDS = ("running_mean", "running_var", "population_mean", "population_var")


def _json_bytes(obj: Any) -> np.ndarray:
    try:
        text = json.dumps(obj, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot save: the network's recipe is not plain JSON ({exc}); build "
                        "it with dl.mlp using registered names, not objects") from None
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def _plain(value: Any) -> Any:
    """``value`` with NumPy scalars inside dicts, lists and tuples made Python numbers
    (``{"val_acc": [np.float32(0.8)]}`` was refused: "Object of type float32 is not JSON
    serializable", though a top-level NumPy number was saved)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def save(net: Any, path: str | os.PathLike, *, meta: dict[str, Any] | None = None) -> Path:
    """Write ``net`` (built by :func:`depthlab.mlp`) to ``path`` (``.npz`` appended when
    missing). ``meta``: extra JSON values, or NumPy arrays stored beside the weights (e.g.
    ``{"loss": "cross_entropy", "input_mean": m, "input_std": s}``). Returns the path.
    A network without a recipe (e.g. ``from_torch``'s) is written with the ``dl.mlp`` recipe
    that builds the same layers (:func:`depthlab.recipe.infer_recipe`), if there is one."""
    path, data = _encoded(net, path, meta)
    atomic_write_bytes(path, data)  # creates missing folders; a file in the way is an
    # AtomicWriteError naming it (one line), as for every other file depthlab writes
    return path


def stage_save(net: Any, path: str | os.PathLike, *,
               meta: dict[str, Any] | None = None) -> Staged:
    """:func:`save`, with the file written in full to a temporary next to ``path`` and
    renamed onto it only by the returned :class:`~depthlab.atomic.Staged`'s ``commit()``
    (``discard()`` removes it): ``depthlab run`` stores the run between the two, so a Ctrl-C
    while a large network is written leaves neither the run nor its network."""
    path, data = _encoded(net, path, meta)
    return stage_bytes(path, data)


def _encoded(net: Any, path: str | os.PathLike,
             meta: dict[str, Any] | None) -> tuple[Path, bytes]:
    """The file :func:`save` writes for ``net``: its checked path and its bytes."""
    config = getattr(net, "config", None)
    why = ""
    if not config and isinstance(getattr(net, "layers", None), list):
        from .recipe import infer_recipe, no_recipe_reason

        dtype = str(getattr(net, "dtype", "float32"))
        config = infer_recipe(net.layers, dtype)
        if not config:  # name the layer in the way, not only "whose layers dl.mlp does not build"
            why = f": {no_recipe_reason(net.layers, dtype)}"
    if not config or not hasattr(net, "parameters"):
        raise TypeError(f"save() needs a network built by dl.mlp (with a .config recipe); got "
                        f"{type(net).__name__}" + (f" without a recipe, whose layers dl.mlp does "
                                                   f"not build{why}" if hasattr(
                                                       net, "parameters") else ""))
    path = _path_arg(path, "save")
    path = expand_home(path)  # "~/net.npz": the home folder, not "./~" (as the store)
    if path.is_dir():  # not silently FOLDER.npz beside it
        raise ValueError(f"save() path {str(path)!r} is a folder; expected a file name, e.g. "
                         f"{str(path / 'net.npz')!r}")
    if path.suffix.lower() != ".npz":  # "NET.NPZ" stays NET.NPZ, not NET.NPZ.npz
        path = _check_name_lengths(path.with_name(path.name + ".npz"), "save")
    arrays: dict[str, np.ndarray] = {}
    plain_meta: dict[str, Any] = {}
    if meta is not None and not isinstance(meta, dict):
        raise TypeError(f"meta = {meta!r:.60} is a {type(meta).__name__}; expected a dict of "
                        "name -> JSON value or NumPy array")
    for key, value in (meta or {}).items():
        if not isinstance(key, str) or not key:  # blamed the network's recipe
            raise TypeError(f"meta key {key!r:.60} is not accepted; expected a non-empty string")
        if isinstance(value, np.generic):  # np.float32(1.5), np.int64(3): a plain number
            value = value.item()
        if isinstance(value, np.ndarray):
            if value.dtype == object:
                raise TypeError(f"meta[{key!r}] is an object array; expected numbers")
            arrays[f"meta:{key}"] = value
        else:
            value = _plain(value)
            try:  # named here: the recipe's own message would blame the network
                json.dumps(value, allow_nan=False, sort_keys=True)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"meta[{key!r}] = {value!r:.60} cannot be saved ({exc}); "
                                "accepted: JSON values (finite numbers, strings, lists, "
                                "dicts) or NumPy arrays") from None
            plain_meta[key] = value
    for key, value in config.items():  # name the setting that is an object (seed=Generator)
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise TypeError(f"cannot save: the network's recipe has {key} = {value!r:.60}, not "
                            "plain JSON; build it with dl.mlp using registered names and an "
                            "integer seed (or None), not objects") from None
    arrays["recipe"] = _json_bytes({"format": FORMAT, "config": config, "meta": plain_meta})
    for k, p in enumerate(net.parameters()):
        arrays[f"param:{k}:{p.name}"] = np.asarray(p.value)
    for k, bn in enumerate(net.batchnorms()):
        for field in _BN_FIELDS:
            value = getattr(bn, field, None)
            if value is not None:
                arrays[f"bn:{k}:{field}"] = np.asarray(value)
        arrays[f"bn:{k}:num_batches"] = np.asarray(int(bn.num_batches), dtype=np.int64)
    for k, drop in enumerate(net.dropouts() if hasattr(net, "dropouts") else ()):
        arrays[f"dropout:{k}:rng"] = _json_bytes(_listed(drop.rng.bit_generator.state))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return path, buf.getvalue()


def _path_arg(path: Any, caller: str) -> Path:
    """``path`` as a Path: a str or os.PathLike that is not empty (``""`` is the current
    folder, which would be reported as a folder), else a TypeError / ValueError naming it."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{caller}() path {path!r:.60} has the wrong type; expected a file "
                        "path (str or os.PathLike)")
    if not str(os.fspath(path)).strip():
        raise ValueError(f"{caller}() path {os.fspath(path)!r} is empty; expected a file name "
                         "such as 'net.npz'")
    return _check_name_lengths(Path(path), caller)


def _name_limits(path: Path) -> tuple[int, int]:
    """The longest file name and path (bytes) the file system under ``path`` accepts (its
    nearest existing folder's ``pathconf``; 255 and 4096, Linux's, where it cannot say)."""
    folder = expand_home(path).absolute().parent
    while True:
        try:
            if folder.is_dir():
                return (int(os.pathconf(folder, "PC_NAME_MAX")),
                        int(os.pathconf(folder, "PC_PATH_MAX")))
        except (OSError, ValueError):
            break
        if folder.parent == folder:
            break
        folder = folder.parent
    return 255, 4096


def _check_name_lengths(path: Path, caller: str) -> Path:
    """``path``, or a ValueError when one of its names (or the whole path) is longer than
    the file system accepts (it was a raw ``OSError: [Errno 36] File name too long`` from
    ``is_dir``, with the 300-character name in it)."""
    text = os.fspath(path)
    longest = max(path.parts, key=lambda part: len(os.fsencode(part)), default="")
    if len(os.fsencode(longest)) <= 255 and len(os.fsencode(text)) <= 1024:
        return path  # fits every file system's limits: no pathconf per call
    name_max, path_max = _name_limits(path)
    size = len(os.fsencode(longest))
    if size > name_max:
        raise ValueError(f"{caller}() path has a name of {size} bytes ({longest[:24]!r}...); "
                         f"expected names of at most {name_max} bytes (this file system's "
                         "limit)")
    size = len(os.fsencode(str(expand_home(path).absolute())))
    if size >= path_max:
        raise ValueError(f"{caller}() path {text[:24]!r}... is {size} bytes long; expected "
                         f"at most {path_max - 1} bytes (this file system's limit)")
    return path


@contextlib.contextmanager
def _open(path: str | os.PathLike) -> Iterator[tuple[dict, Any]]:
    """The recipe and the open archive of the network saved at ``path`` (closed on exit); a
    file that is not one (empty, truncated, another program's ``.npz``) is a ValueError naming
    it."""
    path = expand_home(_path_arg(path, "load"))
    if not path.is_file() and path.suffix.lower() != ".npz" and path.name:
        # ('.' and '/' have no name to add .npz to: named below as the folders they are)
        # save() appends .npz to a name without it: load(NAME) reads the NAME.npz it wrote
        written = path.with_name(path.name + ".npz")
        path = written if written.is_file() else path
    if not path.is_file():
        raise FileNotFoundError(f"no saved network at {str(path)!r}"
                                + (" (a folder)" if path.is_dir() else ""))

    def refuse(why: Any) -> ValueError:
        return ValueError(f"{str(path)!r} is not a network saved by depthlab.save ({why})")

    try:  # a .npy or a text file: numpy's own words were an indexing or a pickle message
        with open(path, "rb") as fh:
            head = fh.read(6)
        zipped = zipfile.is_zipfile(path)
        data = np.load(path, allow_pickle=False) if zipped else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise refuse(str(exc) or type(exc).__name__) from None
    if data is None:
        raise refuse("it holds a single .npy array, not a .npz archive" if head == b"\x93NUMPY"
                     else "its bytes are not a .npz (zip) archive")
    with contextlib.closing(data) if hasattr(data, "close") else contextlib.nullcontext():
        if "recipe" not in data.files:  # another program's .npz, e.g. a data file of x and y
            shown = ", ".join(repr(f) for f in data.files[:8]) or "none"
            more = f" and {len(data.files) - 8} more" if len(data.files) > 8 else ""
            raise refuse(f"it holds the arrays {shown}{more} and no 'recipe': a data file or "
                         "another program's .npz, not a network")
        if "recipe" in data.files:
            try:
                _declared(data, "recipe", path)
            except MemoryRefusal:
                raise
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                raise refuse(str(exc).removeprefix(f"{str(path)!r}: ")) from None
        try:
            recipe = json.loads(bytes(data["recipe"]).decode("utf-8"))
        except (ValueError, KeyError, IndexError, TypeError, OSError, EOFError,
                zipfile.BadZipFile, zlib.error) as exc:
            raise refuse(exc) from None
        if not isinstance(recipe, dict):
            raise refuse(f"its recipe is {type(recipe).__name__}, not a JSON object")
        if recipe.get("format") != FORMAT:
            raise ValueError(_format_refusal(path, recipe.get("format")))
        if not isinstance(recipe.get("config"), dict):
            raise refuse("its recipe has no network config")
        try:
            yield recipe, data
        except (EOFError, zipfile.BadZipFile, zlib.error) as exc:  # a damaged array member
            raise refuse(str(exc) or type(exc).__name__) from None


def _format_refusal(path: Path, found: Any) -> str:
    """Why a file whose recipe says ``format = found`` is not read: a later version of this
    format (``depthlab-network/2``: written by a newer depthlab, whose layout this one cannot
    know) says to upgrade; anything else is not a depthlab network."""
    name, _, version = str(found).rpartition("/")
    if name == FORMAT.rpartition("/")[0] and version.isascii() and version.isdigit() and \
            int(version) > int(FORMAT.rpartition("/")[2]):
        return (f"{str(path)!r} has format {found!r}; expected {FORMAT}: it was saved by a "
                "newer depthlab; upgrade depthlab (pip install -U depthlab) to load it")
    return (f"{str(path)!r} has format {found!r:.60}; expected {FORMAT} (a network saved by "
            "depthlab.save)")


def _declared(data: Any, key: str, path: str | os.PathLike) -> tuple[tuple[int, ...], Any, int]:
    """Shape, dtype and bytes that entry ``key`` of the archive declares, read from its
    ``.npy`` header before any array exists (``bytes = prod(shape) * itemsize``; an entry
    that is no ``.npy`` declares its stored size). A header declaring more bytes than the
    entry holds (a crafted or truncated archive) is a ValueError naming both; one that
    cannot fit in memory a :class:`~depthlab.memory.MemoryRefusal`: numpy allocated either
    first (a 200-byte entry declaring 10^11 bytes was a 93 GiB MemoryError)."""
    from .memory import check_fits, format_bytes

    member = getattr(data, "_files", {}).get(key, f"{key}.npy")
    stored = data.zip.getinfo(member).file_size
    shape: tuple[int, ...] = ()
    dtype: Any = None
    with data.zip.open(member) as fh:
        if fh.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
            need = stored
        else:
            fh.seek(0)
            version = np.lib.format.read_magic(fh)
            reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0 if version == (2, 0) else None)
            if reader is None:  # a later .npy version: numpy's own reader checks it
                return shape, dtype, 0
            try:
                shape, _, dtype = reader(fh)
            except (ValueError, TypeError, SyntaxError) as exc:
                raise ValueError(f"{str(path)!r}: {key} has a damaged .npy header ({exc}); "
                                 "expected a numeric array") from None
            need = int(np.prod([int(n) for n in shape], dtype=object)) * dtype.itemsize
            if need > stored - fh.tell():
                raise ValueError(
                    f"{str(path)!r}: {key} declares shape {shape} {dtype} "
                    f"({format_bytes(need)}) but its entry holds "
                    f"{format_bytes(max(stored - fh.tell(), 0))} (a crafted or truncated "
                    "archive); expected as many bytes as its header declares")
    check_fits(need, f"{str(path)!r}: {key} (shape {shape}, {dtype})")
    return shape, dtype, need


def _read(data: Any, key: str, path: str | os.PathLike,
          expect: tuple[tuple[int, ...], Any] | None = None) -> np.ndarray:
    """Array ``key`` of the archive; one holding Python objects (which ``allow_pickle=False``
    refuses) is a ValueError naming the file and the entry. Its header is checked first
    (:func:`_declared`; with ``expect = (shape, dtype)`` a different one is refused), so no
    array is allocated that cannot fit or that the recipe does not expect."""
    shape, dtype, _ = _declared(data, key, path)
    if dtype is not None and dtype.hasobject:  # Python objects: allow_pickle=False refuses them
        raise ValueError(f"{str(path)!r}: {key} cannot be read (it holds Python objects, "
                         f"dtype {dtype}); expected a numeric array")
    if expect is not None and dtype is not None and (
            shape != tuple(expect[0]) or not np.can_cast(dtype, np.dtype(expect[1]), "equiv")):
        raise ValueError(f"{str(path)!r}: {key} has shape {shape} {dtype}; the recipe "
                         f"expects {tuple(expect[0])} {np.dtype(expect[1])}")
    try:
        return data[key]
    except ValueError as exc:
        raise ValueError(f"{str(path)!r}: {key} cannot be read ({exc}); expected a numeric "
                         "array") from None


def load_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``meta`` saved with a network (JSON values and arrays), without building it."""
    with _open(path) as (recipe, data):
        out = dict(recipe.get("meta") or {})
        out.update({k[5:]: _read(data, k, path) for k in data.files if k.startswith("meta:")})
    return out


def load(path: str | os.PathLike) -> Any:
    """The network saved at ``path``: rebuilt from its recipe with :func:`depthlab.mlp`,
    weights, batch-norm state and dropout generator states copied back (bit-identical
    predictions, and training goes on with the masks the saved network would draw). A
    ``path`` without ``.npz`` that is no file reads ``path + ".npz"``, the name :func:`save`
    wrote for it."""
    from .models import mlp

    with _open(path) as (recipe, data):
        try:
            net = mlp(**recipe["config"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{str(path)!r}: its recipe does not build a network ({exc})") \
                from None
        _restore(net, data, path)
    return net


def _param_index(key: str, path: Path) -> int:
    """``k`` of an archive entry ``param:<k>:<name>``; an entry of another shape (an edited
    archive) is a ValueError naming the file and the entry (it was int()'s "invalid literal
    for int() with base 10: 'x'")."""
    parts = key.split(":", 2)
    if len(parts) != 3 or not (parts[1].isascii() and parts[1].isdigit()):
        raise ValueError(f"{str(path)!r}: entry {key!r:.60} is not a parameter of a network "
                         "saved by depthlab.save; expected 'param:<k>:<name>' with an integer "
                         "k >= 0")
    return int(parts[1])


def _restore(net: Any, data: Any, path: Path) -> None:
    """Copy the saved parameters and batch-norm state of archive ``data`` into ``net``."""
    params = net.parameters()
    saved = sorted((k for k in data.files if k.startswith("param:")),
                   key=lambda k: _param_index(k, path))
    if len(saved) != len(params):
        raise ValueError(f"{str(path)!r} holds {len(saved)} parameters but its recipe builds "
                         f"{len(params)}")
    indices = [_param_index(k, path) for k in saved]
    if indices != list(range(len(saved))):  # param:0 twice and no param:1: order unknown
        raise ValueError(f"{str(path)!r}: its parameters are numbered {indices[:12]}; expected "
                         f"0 to {len(saved) - 1}, each once")
    for key, p in zip(saved, params):
        value = _read(data, key, path, (p.value.shape, p.value.dtype))
        if value.shape != p.value.shape or not np.can_cast(value.dtype, p.value.dtype, "equiv"):
            raise ValueError(f"{str(path)!r}: {key} has shape {value.shape} {value.dtype}; the "
                             f"recipe expects {p.value.shape} {p.value.dtype}")
        p.value[...] = value
    for k, bn in enumerate(net.batchnorms()):
        want = bn.running_mean  # every statistic: shape (n,), the network's dtype
        state: dict[str, np.ndarray] = {}
        for field in _BN_FIELDS:
            key = f"bn:{k}:{field}"
            if key in data.files:
                value = _read(data, key, path, (want.shape, want.dtype))
                if value.shape != want.shape or not np.can_cast(value.dtype, want.dtype, "equiv"):
                    raise ValueError(f"{str(path)!r}: {key} has shape {value.shape} "
                                     f"{value.dtype}; the recipe expects {want.shape} "
                                     f"{want.dtype}")
                state[field] = value.astype(want.dtype)  # a copy, byte order made native
        if ("population_mean" in state) != ("population_var" in state):
            raise ValueError(f"{str(path)!r}: bn:{k} holds one of population_mean and "
                             "population_var; expected both or neither")
        count = (_read(data, f"bn:{k}:num_batches", path)
                 if f"bn:{k}:num_batches" in data.files else None)
        if count is not None and (count.shape != () or count.dtype.kind not in "iu"
                                  or int(count) < 0):
            raise ValueError(f"{str(path)!r}: bn:{k}:num_batches is {count!r:.60}; expected "
                             "one integer >= 0")
        for field, value in state.items():  # set only once every check passed
            setattr(bn, field, value)
        if count is not None:
            bn.num_batches = int(count)
    _restore_dropout_rngs(net, data, path)


def _listed(state: Any) -> Any:
    """A bit generator's ``state`` with its arrays as lists (MT19937's key, Philox's counter,
    SFC64's words), for JSON; the state setters take lists back."""
    if isinstance(state, np.ndarray):
        return state.tolist()
    if isinstance(state, dict):
        return {k: _listed(v) for k, v in state.items()}
    return state


def _restore_dropout_rngs(net: Any, data: Any, path: Path) -> None:
    """Set each dropout layer's generator to the state saved with it (``dropout:<k>:rng``;
    a file saved without them keeps the seed's fresh generators). A state of another of
    NumPy's bit generators (a hand-built ``Dropout(rng=Generator(MT19937(0)))``) gets a
    generator of that kind."""
    for k, drop in enumerate(net.dropouts()):
        key = f"dropout:{k}:rng"
        if key not in data.files:
            continue
        try:
            state = json.loads(bytes(_read(data, key, path)).decode("utf-8"))
            rng = rng_from_state(state, like=drop.rng)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"{str(path)!r}: {key} is not a dropout generator's state ({exc}); "
                             f"expected the JSON of the bit_generator.state of one of "
                             f"{', '.join(BIT_GENERATORS)}") from None
        drop.rng = rng
