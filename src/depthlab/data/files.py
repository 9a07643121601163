"""User data files: ``.npz``, ``.csv`` and MNIST-style IDX (a file or a folder).

* ``.npz``: keys ``x``/``y``, ``X``/``y`` or ``x_train``/``y_train`` with optional
  ``x_val``/``y_val`` and ``x_test``/``y_test`` (official held-out parts; ``X_train``,
  ``X_val``, ``X_test``, scikit-learn's names, read as ``x_train``, ...).
* ``.csv`` (optionally ``.csv.gz``): comma-separated, with a header row (names stripped of
  spaces); the label column is ``label=`` (a column name, default ``"label"``, or a 0-based
  column index; a list of them: several regression targets), every other column is a numeric
  feature. A file whose first row is numbers (not pandas' ``0, 1, 2, ...`` names:
  :func:`is_header_row`) has no header: its columns are named by their 0-based position, the
  label given by its index.
* IDX: an images file (``*-images-idx3-ubyte[.gz]``) whose labels file (``images`` -> ``labels``,
  ``idx3`` -> ``idx1``) lies next to it, or a folder holding ``train-images-idx3-ubyte[.gz]`` and
  ``train-labels-idx1-ubyte[.gz]`` (plus ``t10k-*`` or ``test-*`` files used as the test split).
  uint8 pixels are scaled by 1/255 unless ``scale=`` (a finite number > 0) says otherwise.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from depthlab.atomic import expand_home
from depthlab.data.dataset import RawData
from depthlab.data.idx import idx_header, looks_like_idx, read_idx
from depthlab.memory import MemoryRefusal, check_array, check_fits

FILE_KINDS = (".npz", ".csv", "IDX file or folder")
NPZ_LAYOUTS = ("x, y", "X, y", "x_train, y_train [, x_val, y_val] [, x_test, y_test] (or "
               "X_train, X_val, X_test)")


def check_npz(path: Path, what: str) -> None:
    """Refuse a file named ``.npz`` that is no zip archive before ``np.load`` reads it as
    something else (a renamed ``.npy`` came back as one array; other bytes as "pickled data")."""
    if zipfile.is_zipfile(path):
        return
    with open(path, "rb") as fh:
        head = fh.read(6)
    why = ("it holds a single .npy array" if head == b"\x93NUMPY"
           else "its bytes are not a zip archive")
    raise ValueError(f"{what} is not a .npz file (a zip archive of .npy arrays): {why}")


def refuse_objects(dtype: np.dtype, what: str) -> None:
    """Refuse an array of Python objects from its header: NumPy's "Object arrays cannot be
    loaded when allow_pickle=False" named neither the array nor what to save instead."""
    if np.dtype(dtype).hasobject:
        raise ValueError(f"{what} holds Python objects (dtype {np.dtype(dtype)}), which only "
                         "pickle reads (not done: loading a pickle can run code); accepted: "
                         "numeric arrays (save x.astype(float), y.astype(int))")


def _unrecognised(path: Path, keys: set[str], shown: int = 8) -> str:
    """The message for a ``.npz`` of no data layout: its first ``shown`` keys (a deep saved
    network listed hundreds on one line), and a network ``depthlab.save`` wrote named as one."""
    if any(k.startswith("param:") for k in keys):  # persist's keys: recipe, param:I:NAME
        return (f"{str(path)!r} is a network saved by depthlab.save, not a data set; accepted: "
                f"a .npz of features and labels ({'; '.join(NPZ_LAYOUTS)}); its outputs on "
                "new inputs: depthlab predict FILE DATA")
    names = sorted(keys)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return (f"{str(path)!r}: unrecognised .npz keys {names[:shown]}{more}; accepted layouts: "
            + "; ".join(NPZ_LAYOUTS) + _npz_hint(names))


NPZ_FEATURE_NAMES = ("features", "feature", "inputs", "input", "data", "images", "image",
                     "samples", "xs", "x_all")
NPZ_LABEL_NAMES = ("labels", "label", "targets", "target", "outputs", "output", "classes",
                   "ys", "y_all")


NPZ_KEYS = frozenset({"x", "X", "y"} | {f"{a}_{part}" for a in ("x", "X", "y")
                                         for part in ("train", "val", "test")})
"""The array names of :data:`NPZ_LAYOUTS`."""


def _npz_hint(names: list[str]) -> str:
    """What to do about a ``.npz`` of two arrays under other names: ``np.savez(path, x, y)``
    without names writes ``arr_0``/``arr_1``; other libraries' names (``features``/``labels``,
    ``inputs``/``targets``, ``data``/``target``) are said to be renamed ``x``/``y``, and so is an
    accepted name in other case (``Y``: ``y``), and the one of two arrays not named as read
    (``X`` and ``labels``: ``labels`` to ``y``); else ``""``."""
    lower = {n.lower(): n for n in names}
    # np.savez(path, X=X, Y=Y): only the capital Y (Y_train, ...) is not read (X is)
    cased = sorted(n for n in names if n not in NPZ_KEYS and n.lower() in NPZ_KEYS)
    if cased:
        return " (rename " + ", ".join(f"{n!r} to {n.lower()!r}" for n in cased) + ")"
    if "arr_0" in lower and "arr_1" in lower:
        return (" (np.savez(path, x, y) without names writes arr_0, arr_1: save with "
                "np.savez(path, x=x, y=y))")
    x = next((lower[n] for n in NPZ_FEATURE_NAMES if n in lower), None)
    y = next((lower[n] for n in NPZ_LABEL_NAMES if n in lower), None)
    if x and y:
        return f" (rename {x!r} to 'x' and {y!r} to 'y': np.savez(path, x=..., y=...))"
    # one array already named as read (``X`` beside ``labels``, ``x`` beside ``target``):
    # the other's rename (this got no hint, where ``features``/``labels`` got one)
    if y and ({"x", "X"} & set(names)):
        return f" (rename {y!r} to 'y': np.savez(path, x=..., y=...))"
    if x and "y" in names:
        return f" (rename {x!r} to 'x': np.savez(path, x=..., y=...))"
    return ""


def _one_layout(keys: set[str], path: Path) -> None:
    """Refuse a ``.npz`` whose arrays mix layouts (:data:`NPZ_LAYOUTS`): both ``x`` and ``X``,
    ``x``/``y`` beside ``x_train``/``y_train``, or ``x_val``/``x_test`` parts beside ``x``/``y``.
    Each was read one way and silently dropped the rest (training took ``x_train`` while
    ``depthlab predict`` on the same file took ``x``; an ``x_val`` beside ``x`` was ignored and
    the validation rows drawn at random)."""
    plain = sorted({"x", "X"} & keys)
    if len(plain) == 2:
        raise ValueError(f"{str(path)!r} holds both 'x' and 'X'; accepted: one of them (the "
                         "inputs), so that training and `depthlab predict` read the same array")
    split = sorted(k for k in keys if k.startswith(("x_", "y_"))
                   and k[2:] in ("train", "val", "test"))
    if plain and "y" in keys and split:
        raise ValueError(
            f"{str(path)!r} holds {plain[0]!r}/'y' and also {', '.join(map(repr, split))}: two "
            "layouts; accepted: one of " + "; ".join(NPZ_LAYOUTS) + " (for given splits, save "
            "the training rows as x_train, y_train)")


def _npz(path: Path) -> RawData:
    check_npz(path, repr(str(path)))
    try:
        with np.load(path, allow_pickle=False) as z:
            headers = npz_headers(z)
            for key, (_, dtype) in headers.items():
                refuse_objects(dtype, f"{str(path)!r}: array {key!r}")
            for key, (shape, dtype) in headers.items():
                check_array(shape, dtype, f"{str(path)!r} array {key!r}")
            check_fits(sum(math.prod(s) * d.itemsize for s, d in headers.values()),
                       f"{str(path)!r} (its {len(headers)} arrays together)")
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        if isinstance(exc, MemoryRefusal) or "holds Python objects" in str(exc):
            raise
        raise ValueError(f"{str(path)!r}: cannot read as .npz ({exc})") from exc
    spelled: dict[str, str] = {}  # x_test -> X_test: the file's own name, in messages
    for split in ("train", "val", "test"):  # scikit-learn's names (train_test_split's
        # X_train, X_test): as `X` beside `x`, one spelling per file
        upper, lower = f"X_{split}", f"x_{split}"
        if upper in arrays:
            if lower in arrays:
                raise ValueError(f"{str(path)!r} holds both {lower!r} and {upper!r}; accepted: "
                                 "one of them (the inputs of that split)")
            arrays[lower] = arrays.pop(upper)
            spelled[lower] = upper
    keys = set(arrays)
    _one_layout(keys, path)
    parts: dict[str, np.ndarray] = {}
    if {"x_train", "y_train"} <= keys:
        parts["x"], parts["y"] = arrays["x_train"], arrays["y_train"]
        for split in ("val", "test"):
            have = {f"x_{split}", f"y_{split}"} & keys
            if len(have) == 1:
                one = have.pop()
                raise ValueError(
                    f"{str(path)!r}: found {spelled.get(one, one)!r} without its partner; "
                    f"give both {spelled.get(f'x_{split}', f'x_{split}')} and y_{split}"
                )
            if have:
                parts[f"x_{split}"] = arrays[f"x_{split}"]
                parts[f"y_{split}"] = arrays[f"y_{split}"]
    elif "y" in keys and ("x" in keys or "X" in keys):
        parts["x"] = arrays["x"] if "x" in keys else arrays["X"]
        parts["y"] = arrays["y"]
    else:
        raise ValueError(_unrecognised(path, keys))
    info: dict[str, Any] = {"source": f"npz file {path}", "path": str(path)}
    if parts["x"].ndim >= 3:  # images (N, H, W), (N, H, W, C) / (N, C, H, W); signals
        # (N, C, L), volumes (N, C, D, H, W): each example's shape, for a torch model's input
        info["image_shape"] = tuple(int(s) for s in parts["x"].shape[1:])
    return RawData(
        x=parts["x"],
        y=parts["y"],
        x_val=parts.get("x_val"),
        y_val=parts.get("y_val"),
        x_test=parts.get("x_test"),
        y_test=parts.get("y_test"),
        info=info,
    )


def npy_header(fh: Any) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the ``.npy`` array whose file ``fh`` is open at its start, from its
    header (nothing is loaded)."""
    version = np.lib.format.read_magic(fh)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    shape, _, dtype = read(fh)
    return tuple(shape), dtype


def npz_headers(z: Any) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array of an open ``.npz`` (:func:`npy_header` of each)."""
    out = {}
    for key in z.files:
        with z.zip.open(f"{key}.npy") as fh:
            out[key] = npy_header(fh)
    return out


def _some(columns: list[str], shown: int = 8) -> str:
    """The first ``shown`` column names (a 784-column file stays a short message)."""
    head = ", ".join(repr(str(c)) for c in columns[:shown])
    return f"[{head}]" if len(columns) <= shown else f"[{head}, ... {len(columns)} in all]"


LABEL_HINT = ("choose the label column with data.label = \"COLUMN\" (config) or "
              "label=\"COLUMN\" (load_dataset).")
"""The end of the message for a CSV without its label column (``depthlab doctor --torch``
names its ``--label`` option instead)."""


CSV_LABEL_NAMES = frozenset({"y", "target", "targets", "class", "classes", "labels",
                             "outcome", "category", "species"})
"""Header names other tools give a CSV's label column (scikit-learn's ``frame`` writes
``target``, R's iris ``Species``), matched in any case."""


def _conventional_label(columns: list[str]) -> str | None:
    """The one column whose name is a label column's in other tools (:data:`CSV_LABEL_NAMES`:
    ``target``, ``class``, ``y``), suggested for a missing ``label`` column; None when no
    column or several have such a name."""
    found = [c for c in columns if str(c).strip().lower() in CSV_LABEL_NAMES]
    return found[0] if len(found) == 1 else None


def _label_column(path: Path, label: str | int, columns: list[str]) -> str:
    """The label column: a column name, or an integer 0-based column position (the same rule
    as ``data.label`` in a config)."""
    if isinstance(label, bool) or not isinstance(label, str | int | np.integer):
        raise TypeError(f"label={label!r} is not accepted; accepted: a column name or a "
                        "0-based column index")
    if not isinstance(label, str):
        if not 0 <= int(label) < len(columns):
            raise ValueError(
                f"{str(path)!r}: label={int(label)} is not a column index; accepted: 0 to "
                f"{len(columns) - 1} (columns: {_some(columns)}) or a column name")
        return columns[int(label)]
    if label not in columns and label.strip() in columns:  # the header's names are stripped:
        label = label.strip()  # " target", copied from "a, b, target", is 'target'
    if label not in columns:
        numeric_header = all(is_number(c) for c in columns)
        sep = other_separator(columns)
        hint = (
            " The first row looks like data: a header row naming the columns is required."
            if numeric_header
            else f" Its header {columns[0][:60]!r} looks separated by {sep!r}; accepted: "
            "comma-separated values." if sep
            else f" Columns: {_some(columns)}; {LABEL_HINT}"
        )
        from depthlab.validators import closest_name

        close = None if numeric_header or sep else (closest_name(label, columns)
                                                    or _conventional_label(columns))
        near = f" (did you mean {close!r}?)" if close else ""
        raise ValueError(f"{str(path)!r}: no label column {label!r}{near}.{hint}")
    return label


SAMPLE_BYTES = 1 << 20
"""How much of a CSV's first data row :func:`csv_bytes` reads to size the whole file."""
DEFLATE_RATIO = 1032
"""Deflate's largest compression ratio: a gzip trailer claiming more is not a trailer."""


def csv_bytes(path: Path) -> tuple[int, int, int]:
    """(bytes, rows, columns): the memory that reading CSV ``path`` into float64 arrays
    needs, estimated before reading it from the file's size and its first data row: rows =
    (size - header) / the row's length, 8 bytes per cell, twice (pandas' frame and the NumPy
    copy). A ``.gz``'s size is the uncompressed size in its trailer, which gzip keeps modulo
    2**32 (:func:`_unwrapped_isize` adds the 4 GiB wraps its compression ratio implies). A file
    that cannot be sampled gives 0 (the reader then names the problem)."""
    gz = path.name.lower().endswith(".gz")
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as fh:
            header = fh.readline(SAMPLE_BYTES)
            first = fh.readline(SAMPLE_BYTES)
        size = path.stat().st_size
        if gz:
            with open(path, "rb") as fh:
                fh.seek(-4, os.SEEK_END)
                isize = int.from_bytes(fh.read(4), "little")
            if isize > DEFLATE_RATIO * size:  # no trailer: a truncated file (named by pandas)
                return 0, 0, 0
            size = _unwrapped_isize(path, size, isize)
    except (OSError, EOFError, zlib.error):
        return 0, 0, 0
    if not first.strip():
        return 0, 0, 0
    per_row = first.count(b",") + 1
    rows = max(1, (size - len(header)) // len(first))
    return 2 * 8 * rows * per_row, rows, per_row


GZ_SAMPLE_OUT = 16 << 20
"""How many uncompressed bytes :func:`_unwrapped_isize` inflates to measure a ``.gz``'s
compression ratio."""


def _unwrapped_isize(path: Path, size: int, isize: int) -> int:
    """The uncompressed size of gzip file ``path`` (``size`` bytes on disk) whose trailer says
    ``isize``: gzip keeps that size modulo 2**32, so a CSV of 4.06 GiB read as 64 MiB (its
    memory then under-estimated 65 times, and never refused). The candidates are ``isize +
    k 2**32``; k is the one nearest ``size x ratio``, the ratio measured by inflating the
    file's start (at most :data:`GZ_SAMPLE_OUT` bytes out of at most :data:`SAMPLE_BYTES` in),
    so a file under 4 GiB keeps its trailer's size (k = 0)."""
    wrap = 1 << 32
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    used = out = 0
    with open(path, "rb") as fh:
        while used < SAMPLE_BYTES and out < GZ_SAMPLE_OUT and not inflate.eof:
            piece = fh.read(1 << 16)
            if not piece:
                break
            data = inflate.decompress(piece, GZ_SAMPLE_OUT - out)
            while inflate.unconsumed_tail and out + len(data) < GZ_SAMPLE_OUT:
                out += len(data)
                data = inflate.decompress(inflate.unconsumed_tail, GZ_SAMPLE_OUT - out)
            out += len(data)
            used += len(piece) - len(inflate.unconsumed_tail) - len(inflate.unused_data)
    if used <= 0 or out <= 0:
        return isize
    estimate = size * out / used
    return isize + wrap * max(0, round((estimate - isize) / wrap))


def _nul_line(path: Path) -> tuple[int, str | None] | None:
    """The line of CSV ``path``'s first NUL byte within its first :data:`SAMPLE_BYTES` and the
    encoding it says the text is in (``"UTF-16"``/``"UTF-32"``: a byte order mark, or every
    second or fourth byte NUL, as Windows' ``Out-File`` and "Unicode text" exports write; else
    None), or None when it holds no NUL (also when the file cannot be read: the reader names
    the problem)."""
    gz = path.name.lower().endswith(".gz")
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as fh:
            sample = fh.read(SAMPLE_BYTES)
    except (OSError, EOFError, zlib.error):
        return None
    at = sample.find(b"\0")
    if at < 0:
        return None
    wide = wide_encoding(sample)
    return (1 if wide else sample.count(b"\n", 0, at) + 1), wide


def wide_encoding(sample: bytes) -> str | None:
    """``"UTF-16"`` or ``"UTF-32"`` when the first bytes ``sample`` of a text file say it is in
    that encoding (a byte order mark, or every second or fourth byte NUL, as Windows'
    ``Out-File`` and "Unicode text" exports write); else None."""
    if sample.startswith((b"\xff\xfe\0\0", b"\0\0\xfe\xff")):
        return "UTF-32"
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16"
    head = sample[:4096 - 4096 % 4]
    for width, name in ((4, "UTF-32"), (2, "UTF-16")):
        units = [head[i:i + width] for i in range(0, len(head), width)]
        if len(units) >= 4 and all(u.count(b"\0") == width - 1 and u.strip(b"\0")
                                   for u in units):
            return name
    return None


def check_csv_fits(path: Path, what: str) -> None:
    """Refuse a CSV whose values cannot fit in memory (:func:`csv_bytes`) before reading, and
    one holding NUL bytes (a file of zeros named .csv, e.g. preallocated and never written:
    pandas read its 300 MB as one header cell in 6.5 GB of memory)."""
    nul = _nul_line(path)
    if nul is not None and nul[1] is not None:  # read as NUL bytes, "a binary file"
        raise ValueError(f"{what}: the file is {nul[1]} text; accepted: comma-separated UTF-8 "
                         "text (re-save the file as UTF-8)")
    if nul is not None:
        raise ValueError(f"{what}: line {nul[0]} holds a NUL byte (0x00), so it is no CSV text "
                         "(a binary file, or one preallocated and never written); accepted: "
                         "comma-separated UTF-8 text")
    need, rows, cols = csv_bytes(path)
    check_fits(need, f"{what} (CSV of about {rows:,} rows x {cols:,} columns)")


def _longer_first_row(path: Path) -> bool:
    """Whether the first data row of CSV ``path`` has more cells than its header row (pandas
    then takes the first column as the row index); False when it cannot be read (pandas
    names the problem)."""
    import csv

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
            rows = csv.reader(fh)
            head = next(rows, [])
            for row in rows:
                if any(c.strip() for c in row):  # blank lines are skipped, as pandas does
                    return len(row) > len(head)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error, zlib.error):
        return False
    return False


def csv_row(path: Path, row: int, header: bool = True) -> tuple[list[str], int] | None:
    """The cells of data row ``row`` (0-based, counted as pandas counts them: after the header
    line when ``header``, lines of only whitespace skipped, a line of empty cells such as
    ``,,`` kept) of CSV ``path`` (gzip by its name) and its line number; None when it cannot be
    read."""
    import csv

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
            rows = csv.reader(fh)
            if header:
                next(rows, None)
            seen = -1
            for cells in rows:
                if len(cells) > 1 or (cells and cells[0].strip()):
                    seen += 1
                    if seen == row:
                        return cells, rows.line_num
    except (OSError, EOFError, UnicodeDecodeError, csv.Error, zlib.error):
        return None
    return None


def _raw_cell(path: Path, row: int, position: int, header: bool = True
              ) -> tuple[str, int] | None:
    """The text of data row ``row`` of CSV ``path`` (:func:`csv_row`; ``header``: the file
    has a header row) at column ``position``, and its line number; None when it cannot be
    read."""
    found = csv_row(path, row, header)
    if found is None:
        return None
    cells, line = found
    return (cells[position] if position < len(cells) else ""), line


def _missing_cell(path: Path, raw: list[str], column: str, row: int, empty: str,
                  header: bool = True) -> str:
    """``holds 'n/a' on line 3 (read as a missing value)``, or ``empty`` (``{line}`` filled in)
    for an empty cell: a cell pandas read as NaN, by its own text (pandas reads 'NA', 'n/a',
    'null', ... as NaN)."""
    found = _raw_cell(path, row, raw.index(column), header) if column in raw else None
    text, line = found if found is not None else ("", row + 1 + header)
    if text.strip():
        return f"holds {text.strip()[:40]!r} on line {line} (read as a missing value)"
    return empty.format(line=line)


def read_csv_frame(path: Path, header: int | None = 0) -> Any:
    """``pandas.read_csv(path)`` for a data file whose lines may end with a comma (written by
    tools that put a separator after every cell). Data rows with more cells than the header
    made pandas take the first column as the row index (every column shifted by one: the
    label column read as NaN, or silently as the next column): the cells past the header's
    are accepted only when empty (trailing commas), else a ValueError names the first line
    holding one. A last column with no name and no value in any row is dropped."""
    import re

    import pandas as pd

    try:
        df = pd.read_csv(path, header=header)
    except pd.errors.ParserError as exc:
        # pandas' 'Error tokenizing data. C error: Expected 4 fields in line 9, saw 5\n' (a
        # line break inside the one-line message, and no word of what to change)
        fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if not fields:
            raise
        n, line, saw = fields.groups()
        raise ValueError(f"{str(path)!r}: line {line} has {saw} cells but the lines before it "
                         f"have {n}; expected one value per column") from exc
    if header is not None and _longer_first_row(path):
        names = [str(c) for c in df.columns]
        wide = pd.read_csv(path, header=None, skiprows=header + 1)
        extra = wide.iloc[:, len(names):].notna().to_numpy()
        if extra.any():
            row = int(np.argwhere(extra)[0][0])
            sep = other_separator(names)
            first = ",".join(names)[:60]
            expected = (f" (the header {names[0][:60]!r} looks separated by {sep!r}, its "
                        "numbers written with decimal commas?); accepted: comma-separated "
                        "values with decimal points" if sep else
                        f"; its header line {first!r} looks like a comment, which is not "
                        "skipped: accepted: the column names (or the first data row) as line "
                        "1" if first.startswith("#") else
                        "; expected one value per column (empty cells after a trailing comma "
                        "are accepted)")
            raise ValueError(
                f"{str(path)!r}: line {header + row + 2} has "
                f"{len(names) + int(np.argwhere(extra[row])[-1][0]) + 1} cells but the header "
                f"names {len(names)} columns{expected}")
        df = wide.iloc[:, :len(names)].set_axis(names, axis=1)
    if df.shape[1] > 1 and df.iloc[:, -1].isna().all():
        last = str(df.columns[-1])
        if header is None or last.startswith("Unnamed: "):  # a blank header cell
            df = df.iloc[:, :-1]
    return _wide_integers(df, path, header)


def _wide_integers(df: Any, path: Path | None = None, header: int | None = 0) -> Any:
    """``df`` with each column of integers past 64 bits (``10**23``, ``-2**63 - 1``: pandas
    keeps such a column as Python ints of dtype object, its other cells too) as the float64
    numbers they are, ``float(v)`` (±inf beyond float64's range, refused later as any
    infinite cell is). Was refused as text, the message naming another cell of the column
    ("holds '2' on line 2, which is not a number"). A column holding any other object (text)
    is left as read. Such an integer beside a decimal number (``1.5``) made pandas read the
    whole column as text: it is read as numbers too when every cell is a plain decimal number
    (no ``1_000``, hex or ``nan`` spelling, which stay text and are refused by name) and some
    cell an integer past 64 bits."""
    import re

    import pandas as pd

    decimal = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
    wide = re.compile(r"\s*[+-]?\d{19,}\s*")
    for i in range(df.shape[1]):
        column = df.iloc[:, i]
        if column.dtype != object and not pd.api.types.is_string_dtype(column.dtype):
            continue
        cells = column.dropna()
        if not len(cells):
            continue
        filled = [v for v in cells if not (type(v) is str and not v.strip())]  # '': missing
        if filled and all(type(v) is str for v in filled) and any(
                wide.fullmatch(v) and not -2**63 <= int(v) < 2**64 for v in filled) and all(
                decimal.fullmatch(v) for v in filled):  # 10**23 beside 1.5: pandas' text
            df.isetitem(i, np.array([float(v) if isinstance(v, str) and v.strip()
                                     else float("nan") for v in column], dtype=np.float64))
            continue
        if not all(type(v) is int for v in cells):
            continue
        if path is not None:  # pandas read '1_5' as 15 (Python's int()) beside 10**23
            import pandas as pd

            text = pd.read_csv(path, header=header, usecols=[i], dtype=str,
                               keep_default_na=False).iloc[:, 0]
            if len(text) == len(column) and not all(
                    re.fullmatch(r"\s*[+-]?\d+\s*", v) or not v.strip() for v in text):
                df.isetitem(i, text.where(text.str.strip() != "", np.nan))  # named as text
                continue

        def number(v: Any) -> float:
            try:
                return float(v)
            except OverflowError:  # an integer of more than 308 digits
                return np.inf if v > 0 else -np.inf
            except TypeError:  # a missing cell (NaN, None)
                return float("nan")

        df.isetitem(i, np.array([number(v) for v in column], dtype=np.float64))
    return df


def _not_utf8(path: Path) -> str:
    """Where CSV ``path`` stops being UTF-8: ``line 4 is not UTF-8 text (byte 0xe9)``."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            for number, line in enumerate(fh, 1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    return f"line {number} is not UTF-8 text (byte 0x{line[exc.start]:02x})"
    except (OSError, EOFError, zlib.error):
        pass
    return "it is not UTF-8 text"


def _csv(path: Path, label: str | int) -> RawData:
    import pandas as pd

    check_csv_fits(path, repr(str(path)))
    try:
        df = read_csv_frame(path)
    except pd.errors.EmptyDataError as exc:
        raise ValueError(f"{str(path)!r}: empty data set (no rows or header)") from exc
    except UnicodeDecodeError as exc:  # was pandas' "'utf-8' codec can't decode byte ..."
        raise ValueError(f"{str(path)!r}: {_not_utf8(path)}; accepted: UTF-8 text (re-save "
                         "the file as UTF-8)") from exc
    except pd.errors.ParserError as exc:
        raise ValueError(f"{str(path)!r}: cannot parse as CSV ({' '.join(str(exc).split())})"
                         ) from exc
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ValueError(f"{str(path)!r}: corrupt gzip data ({exc or type(exc).__name__})") \
            from exc
    raw = [str(c).strip() for c in pd.read_csv(path, header=None, nrows=1, dtype=str,
                                               keep_default_na=False).iloc[0]]
    counted = [str(i) for i in range(len(raw))]  # pandas' names of a frame from an array
    cells = raw[:-1] if len(raw) > 1 and not raw[-1] else raw  # (a trailing comma's cell)
    header = is_header_row(cells)
    if not header:  # no header row: read as data (the first data row was taken for the
        # column names: one row lost without a word, numbers for feature names); columns
        # named by their 0-based position, the label given by its index
        if isinstance(label, str) and label not in counted:
            shown = ", ".join(raw[:4]) + (", ..." if len(raw) > 4 else "")
            raise ValueError(f"{str(path)!r}: its first row ({shown}) looks like data, not a "
                             f"header naming the columns (no label column {label!r}); give "
                             "the label column's 0-based index (data.label = N, label=N) or "
                             "add a header row")
        if all(c.lstrip("+-").isdigit() for c in cells):  # whole numbers: names (400, 410,
            # ... nm) or data (pixels)? said, so that names read as a data row are noticed
            shown = ", ".join(cells[:4]) + (", ..." if len(cells) > 4 else "")
            warnings.warn(f"{str(path)!r}: its first row ({shown}) is read as data, the file "
                          "as having no header row (columns named by position 0, 1, ...); "
                          "name the columns with text if it is a header", UserWarning,
                          stacklevel=2)
        df = read_csv_frame(path, header=None)
        df.columns = counted[:df.shape[1]] + [str(i) for i in range(len(raw), df.shape[1])]
        raw = list(df.columns)
    twice = sorted({c for c in raw if c and raw.count(c) > 1})
    if twice:  # pandas renames the second 'label' to 'label.1', which became a feature
        raise ValueError(f"{str(path)!r}: column name(s) {twice[:5]} appear more than once in "
                         "the header; expected distinct column names")
    names = [str(c).strip() for c in df.columns]  # "a, b, label": 'label', not ' label'
    df.columns = names if len(set(names)) == len(names) else [str(c) for c in df.columns]
    columns = list(df.columns)
    several = isinstance(label, list | tuple)
    if several and not label:
        raise ValueError(f"{str(path)!r}: label=[] names no column; accepted: a column name or "
                         "index, or a list of them (regression targets)")
    chosen = [_label_column(path, one, columns) for one in (label if several else [label])]
    twice = sorted({c for c in chosen if chosen.count(c) > 1})
    if twice:
        raise ValueError(f"{str(path)!r}: label names column(s) {twice} more than once; "
                         "expected distinct columns")
    label = chosen[0]
    if (raw and raw[0] == "" and columns[0] not in chosen and df.shape[1] > 2 and df.shape[0] > 0
            and pd.api.types.is_integer_dtype(df.iloc[:, 0])
            and np.array_equal(df.iloc[:, 0].to_numpy(), np.arange(df.shape[0]))):
        warnings.warn(f"{str(path)!r}: its first column has no name and holds 0, 1, 2, ... "
                      "(an index that pandas' to_csv writes unless index=False): left out of "
                      "the features", UserWarning, stacklevel=2)
        df = df.iloc[:, 1:]
    if df.shape[0] == 0:
        raise ValueError(f"{str(path)!r}: empty data set (header but no rows)")
    features = df.drop(columns=chosen)
    if features.shape[1] == 0:
        what = f"the label {label!r}" if len(chosen) == 1 else f"the labels {chosen}"
        raise ValueError(f"{str(path)!r}: no feature columns besides {what}")
    bad = [str(c) for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if bad:  # the first cell that is no number, with its line (a column name alone left the
        # user searching a long file for it)
        column = features[bad[0]]
        text = pd.to_numeric(column, errors="coerce").isna() & column.notna()
        row = int(np.argmax(text.to_numpy())) if text.any() else 0
        more = f" (non-numeric columns: {bad[:5]})" if len(bad) > 1 else ""
        found = _raw_cell(path, row, raw.index(bad[0]), header) if bad[0] in raw else None
        line = found[1] if found is not None else row + 1 + header  # (blank lines skipped)
        raise ValueError(
            f"{str(path)!r}: feature column {bad[0]!r} holds {str(column.iloc[row])[:40]!r} on "
            f"line {line}, which is not a number{more}; accepted: numeric feature columns "
            "(decimal points, no thousands separators)")
    for label in chosen:
        y = df[label]
        if not pd.api.types.is_numeric_dtype(y):  # its first cell that is no number, by line
            # (the first three values were shown: numbers, when one cell down the file was not)
            text = (pd.to_numeric(y, errors="coerce").isna() & y.notna()).to_numpy()
            row = int(np.argmax(text)) if text.any() else 0
            found = _raw_cell(path, row, raw.index(label), header) if label in raw else None
            cell, line = found if found is not None else (str(y.iloc[row]), row + 1 + header)
            raise ValueError(
                f"{str(path)!r}: labels must be integers, column {label!r} holds "
                f"{cell.strip()[:40]!r} on line {line}, which is not a number; accepted: class "
                "numbers 0, 1, ... (real numbers: the targets of train.loss mse or huber)")
    x = features.to_numpy(dtype=np.float64)
    finite = np.isfinite(x)
    if not finite.all():  # named by the file's column and line (an empty cell reads as NaN)
        row, col = (int(i) for i in np.argwhere(~finite)[0])
        name = str(features.columns[col])
        where = (_missing_cell(path, raw, name, row, "has an empty cell on line {line}",
                               header)
                 if np.isnan(x[row, col])
                 else f"holds {x[row, col]} on line {row + 1 + header}")
        raise ValueError(
            f"{str(path)!r}: feature column {name!r} {where} ({x.size - int(finite.sum())} "
            "such value(s)); accepted: finite numbers (an empty cell reads as NaN)")
    for label in chosen:
        _label_cells(path, raw, label, df[label], header)
    y = df[chosen] if several else df[chosen[0]]
    info: dict[str, Any] = {"source": f"csv file {path}", "path": str(path)}
    if header:
        info.update(feature_names=[str(c) for c in features.columns],
                    label_column=list(chosen) if several else chosen[0])
    else:  # columns by position: the label's index and the file's width (for predict)
        index = [int(c) for c in chosen]
        info.update(header=False, n_columns=int(df.shape[1]),
                    label_index=index if several else index[0])
    return RawData(x=x, y=y.to_numpy(), info=info)


def _label_cells(path: Path, raw: list[str], label: str, y: Any, header: bool = True) -> None:
    """Refuse an empty cell in label column ``label`` (values ``y``), naming its line."""
    missing = y.isna().to_numpy()
    if missing.any():  # an empty label cell, or a row shorter than the header (was: "labels
        # must be integers, got non-integer values such as [nan]", no line named)
        row = int(np.argmax(missing))
        where = _missing_cell(path, raw, label, row, "is empty on line {line}", header)
        raise ValueError(
            f"{str(path)!r}: label column {label!r} {where} "
            f"({int(missing.sum())} such row(s)); expected a class number (or a regression "
            "target) in every row (a row with fewer cells than the header leaves its last "
            "columns empty)")
    values = y.to_numpy()
    if values.dtype.kind == "f" and not np.isfinite(values).all():  # inf, -inf: named by line
        row = int(np.argmax(~np.isfinite(values)))
        found = _raw_cell(path, row, raw.index(label), header) if label in raw else None
        line = found[1] if found is not None else row + 1 + header
        raise ValueError(f"{str(path)!r}: label column {label!r} holds {values[row]} on line "
                         f"{line}; accepted: finite numbers")


def is_header_row(cells: list[str]) -> bool:
    """Whether a CSV's first row ``cells`` (its first line that is not blank, a trailing
    comma's empty cell left out) names the columns: it holds a cell that is no number, or it
    is pandas' names of an array's columns, ``0, 1, ..., d-1`` (``pd.DataFrame(a).to_csv(
    index=False)``). Any other row of numbers is data (``1, 2, 3`` too: training took it for
    a header, one row lost without a word, where predict read it as data). The one rule of
    training's reader and of ``depthlab predict`` (which read the header ``0,1,2`` as a row
    of inputs: one prediction too many)."""
    cells = [str(c).strip() for c in cells]
    return not (cells and all(is_number(c) for c in cells)
                and cells != [str(i) for i in range(len(cells))])


def is_number(s: str) -> bool:
    """True when the text ``s`` parses as a float (a CSV header cell that is data)."""
    try:
        float(s)
    except ValueError:
        return False
    return True


def _with_gz(p: Path) -> Path | None:
    for cand in (p, p.with_name(p.name + ".gz"), p.with_name(p.name.removesuffix(".gz"))):
        if cand.is_file():
            return cand
    return None


def labels_file_for(images: Path) -> Path:
    """Labels file next to an IDX images file (``images`` -> ``labels``, ``idx3`` -> ``idx1``;
    also ``idx4`` -> ``idx1``, colour images (N, H, W, C), whose labels file was looked for as
    ``*-labels-idx4-ubyte``)."""
    import re

    name = re.sub(r"idx[2-9]", "idx1", images.name.replace("images", "labels"))
    if name == images.name and "labels" in images.name:  # the labels file given as DATA
        stem = re.sub(r"idx1", "idx3", images.name.replace("labels", "images"))
        found = _with_gz(images.with_name(stem)) or _with_gz(
            images.with_name(stem.replace("idx3", "idx4")))
        raise ValueError(
            f"{str(images)!r} is an IDX labels file; expected its images file "
            f"({str(found or images.with_name(stem))!r}), whose labels are read beside it")
    if name == images.name:
        raise ValueError(
            f"{str(images)!r}: cannot derive the labels file name; an IDX images file name must "
            "contain 'images' (e.g. train-images-idx3-ubyte.gz next to train-labels-idx1-ubyte.gz)"
        )
    found = _with_gz(images.with_name(name))
    if found is None:
        raise FileNotFoundError(
            f"IDX labels file {str(images.with_name(name))!r} (or .gz) not found next to "
            f"{str(images)!r}"
        )
    return found


def companion_files(path: str | os.PathLike) -> list[Path]:
    """The files besides ``path`` itself that :func:`load_file` reads for it: an IDX images
    file's labels file (:func:`labels_file_for`); none for a ``.npz``, a ``.csv`` or a folder
    (nor when no labels file is found: the loader names the problem). The run id's content
    fingerprint covers them (it hashed the images file alone: relabelled data kept the old
    run's id)."""
    p = expand_home(path)
    lower = p.name.lower()
    if not p.is_file() or lower.endswith((".npz", ".csv", ".csv.gz", ".npy")):
        return []
    if not ("idx" in lower or "ubyte" in lower or looks_like_idx(p)):
        return []
    try:
        return [labels_file_for(p)]
    except (OSError, ValueError):
        return []


def _idx_pair(images: Path) -> tuple[np.ndarray, np.ndarray, Path]:
    labels = labels_file_for(images)
    x = read_idx(images)
    y = read_idx(labels)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{str(images)!r}: mismatched lengths: {x.shape[0]} images but {y.shape[0]} labels in "
            f"{str(labels)!r}"
        )
    return x, y, labels


def _idx_scale(x: np.ndarray, scale: float | None) -> float:
    if scale is not None:
        return float(scale)
    return 1.0 / 255.0 if x.dtype == np.uint8 else 1.0


IDX_IMAGE_DIMS = ("idx3", "idx4")
"""The images files' name parts looked for in a folder: grey (N, H, W) and colour (N, H, W, C)
images."""


def _find_in_folder(folder: Path, prefixes: tuple[str, ...]) -> Path | None:
    for prefix in prefixes:
        for sep in ("-", "."):
            for dims in IDX_IMAGE_DIMS:
                p = _with_gz(folder / f"{prefix}-images{sep}{dims}-ubyte")
                if p is not None:
                    return p
    return None


_IDX_SET_NAME = re.compile(r"^(?P<set>.*?)(?P<split>train|t10k|test)-images[-.]idx[34]-ubyte"
                           r"(\.gz)?$")
"""An IDX images file of a named set: ``emnist-letters-train-images-idx3-ubyte.gz`` (EMNIST's
names) is set ``emnist-letters-``, split ``train``; MNIST's own names have the set ``""``."""


def _idx_files(folder: Path) -> tuple[Path | None, Path | None]:
    """The training and test images files of the one IDX set in ``folder``: MNIST's names
    (``train-images-idx3-ubyte``, ``t10k-``/``test-``), else one set's prefixed names
    (``emnist-letters-train-images-idx3-ubyte.gz``: was "no IDX training images in folder",
    the folder full of them). Several prefixed sets are a ValueError naming them."""
    train = _find_in_folder(folder, ("train",))
    if train is not None:
        return train, _find_in_folder(folder, ("t10k", "test"))
    sets: dict[str, dict[str, Path]] = {}
    for f in sorted(folder.iterdir()):
        found = _IDX_SET_NAME.match(f.name)
        if found and f.is_file():
            sets.setdefault(found["set"], {}).setdefault(found["split"], f)
    named = [k for k, v in sets.items() if "train" in v]
    if len(named) > 1:
        shown = ", ".join(repr(sets[k]["train"].name) for k in named[:4])
        raise ValueError(f"folder {str(folder)!r} holds the IDX training images of {len(named)} "
                         f"sets ({shown}{', ...' if len(named) > 4 else ''}); accepted: a "
                         "folder of one set, or one images file as the data path")
    if not named:
        return None, None
    split = sets[named[0]]
    return split["train"], split.get("t10k") or split.get("test")


def _idx_folder(folder: Path, scale: float | None) -> RawData:
    train, test = _idx_files(folder)
    if train is None:
        raise FileNotFoundError(
            f"no IDX training images in folder {str(folder)!r}: expected "
            "train-images-idx3-ubyte[.gz] (idx4: colour images) and "
            "train-labels-idx1-ubyte[.gz]"
        )
    x, y, labels = _idx_pair(train)
    raw = RawData(x=x, y=y, scale=_idx_scale(x, scale))
    files = {"x_train": str(train), "y_train": str(labels)}
    if test is not None:
        raw.x_test, raw.y_test, test_labels = _idx_pair(test)
        files.update(x_test=str(test), y_test=str(test_labels))
    raw.info = {"source": f"IDX folder {folder}", "path": str(folder), "files": files}
    if x.ndim >= 3:  # each example's shape: (H, W), or (H, W, C) / (C, H, W) of idx4 files
        raw.info["image_shape"] = tuple(int(s) for s in x.shape[1:])
    return raw


def _idx_file(images: Path, scale: float | None) -> RawData:
    x, y, labels = _idx_pair(images)
    info = {
        "source": f"IDX file {images}",
        "path": str(images),
        "files": {"x": str(images), "y": str(labels)},
    }
    if x.ndim >= 3:  # (H, W), or (H, W, C) / (C, H, W), as a .npz's images
        info["image_shape"] = tuple(int(s) for s in x.shape[1:])
    return RawData(x=x, y=y, scale=_idx_scale(x, scale), info=info)


def _idx_pair_bytes(images: Path) -> int:
    total = 0
    for f in (images, labels_file_for(images)):
        dims, dtype = idx_header(f)
        total += math.prod(dims) * dtype.itemsize
    return total


def file_bytes(path: str | os.PathLike) -> tuple[int, str] | None:
    """``(bytes, what)``: the memory that loading the user data ``path`` (a file, or a folder
    of IDX files) needs, from its headers alone: a CSV's size and first row
    (:func:`csv_bytes`), a .npz's array headers, the IDX files' declared shapes. Nothing
    beyond them is read, so data too large for memory can be refused before their content is
    read at all (for the run id's fingerprint or the load). None when ``path`` cannot be sized
    this way (the loader names the problem)."""
    p = expand_home(path)
    lower = p.name.lower()
    try:
        if p.is_dir():
            found = [f for f in _idx_files(p) if f is not None]
            if not found:
                return None
            return (sum(_idx_pair_bytes(f) for f in found),
                    f"data folder {str(p)!r} ({len(found)} pair{'s' * (len(found) > 1)} "
                    "of IDX images and labels files)")
        if not p.is_file():
            return None
        if lower.endswith((".csv", ".csv.gz")):
            need, rows, cols = csv_bytes(p)
            return (need, f"data file {str(p)!r} (CSV of about {rows:,} rows x {cols:,} "
                    "columns)") if need else None
        if lower.endswith(".npz"):
            if not zipfile.is_zipfile(p):
                return None
            with np.load(p, allow_pickle=False) as z:
                headers = npz_headers(z)
            return (sum(math.prod(s) * d.itemsize for s, d in headers.values()),
                    f"data file {str(p)!r} (its {len(headers)} arrays together)")
        if "idx" in lower or "ubyte" in lower or looks_like_idx(p):
            return _idx_pair_bytes(p), f"data file {str(p)!r} (IDX, with its labels file)"
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error):
        return None
    return None


def loadable(path: str | os.PathLike) -> bool:
    """Whether :func:`load_file` may read ``path``: a ``.npz`` that is a zip archive, a
    ``.csv[.gz]``, a file starting with an IDX magic number, or a folder holding one IDX set.
    False for what it refuses unread (a ``.npy``, ``.parquet``, a folder without IDX files):
    the run id's fingerprint (:func:`depthlab.data.fingerprint.digest`) reads none of those
    (it read a 100 GB ``.npy`` whole, minutes, before the loader refused it)."""
    p = expand_home(path)
    try:
        if p.is_dir():
            return _idx_files(p)[0] is not None
        if not p.is_file():
            return False
        lower = p.name.lower()
        if lower.endswith(".npz"):
            return zipfile.is_zipfile(p)
        return lower.endswith((".csv", ".csv.gz")) or looks_like_idx(p)
    except (OSError, ValueError):
        return False


def looks_like_path(name: str | os.PathLike) -> bool:
    """True if ``name`` should be treated as a file-system path rather than a built-in name."""
    if isinstance(name, os.PathLike):
        return True
    s = str(name)
    lower = s.lower()
    return (
        os.sep in s
        or "/" in s
        or lower.endswith((".npz", ".csv", ".csv.gz", ".gz", "-ubyte", ".idx"))
        or "idx" in lower
        or os.path.exists(s)
    )


def load_file(
    path: str | os.PathLike, *, label: str | int | None = None, scale: float | None = None
) -> RawData:
    """Read a user data file or IDX folder (see module docstring) into :class:`RawData`.
    ``label`` (default ``"label"``) applies to ``.csv`` files, ``scale`` to IDX files; given
    for another kind of file, either is an error (it would be ignored)."""
    p = expand_home(path)
    if not p.exists():
        raise FileNotFoundError(f"data file not found: {str(p)!r}")
    if not (p.is_file() or p.is_dir()):  # a pipe blocked the open until a writer came
        raise ValueError(f"{str(p)!r} is not a file or a folder (a device or a pipe); accepted: "
                         f"{', '.join(FILE_KINDS)}")
    lower = p.name.lower()
    csv = not p.is_dir() and lower.endswith((".csv", ".csv.gz"))
    if label is not None and not csv:
        raise ValueError(f"{str(p)!r}: label={label!r} applies only to .csv files (a .npz "
                         "holds its labels in y, IDX data in its labels file)")
    if scale is not None and (csv or lower.endswith(".npz")):
        raise ValueError(f"{str(p)!r}: scale={scale!r} applies only to IDX files (uint8 "
                         "pixels); scale a .npz or .csv file's features yourself")
    if scale is not None:  # 0 divided by zero (an internal error), nan failed in a cast
        if isinstance(scale, bool) or not isinstance(scale, int | float | np.integer
                                                     | np.floating):
            raise TypeError(f"scale={scale!r} is not accepted; accepted: a finite number > 0 "
                            "(the factor of an IDX file's values)")
        if not (math.isfinite(float(scale)) and scale > 0):
            raise ValueError(f"scale={scale!r} is not accepted; accepted: a finite number > 0 "
                             "(the factor of an IDX file's values)")
    if p.is_dir():
        return _idx_folder(p, scale)
    if lower.endswith(".npz"):
        return _npz(p)
    if csv:
        return _csv(p, "label" if label is None else label)
    if "idx" in lower or "ubyte" in lower or looks_like_idx(p):
        return _idx_file(p, scale)
    if lower.endswith(".npy"):
        raise ValueError(f"{str(p)!r}: a .npy file holds one array and no labels; accepted: a "
                         ".npz of features and labels (np.savez(path, x=x, y=y)), a .csv with a "
                         "label column, or IDX files")
    raise ValueError(
        f"{str(p)!r}: unsupported file type; accepted: {', '.join(FILE_KINDS)} "
        "(IDX files start with the bytes 00 00 <type> <ndim>)"
    )


def other_separator(columns: list[str]) -> str | None:
    """The separator (``;``, tab or ``|``) a CSV read as comma-separated seems to use: its
    header came out as one column holding it (``'a;b;c;label'``); else None."""
    if len(columns) != 1:
        return None
    return next((sep for sep in (";", "\t", "|") if sep in str(columns[0])), None)
