"""Predictions of a saved network (``dl.save``, or a run's network saved by ``depthlab run``) on
new inputs: finding the file, reading inputs from ``.npy``/``.npz``/``.csv`` files, IDX images
files (scored by the labels file beside them) and folders (their test images), or a built-in
data set's test split, the run's input standardization ``(x - mean) / std``, and the predicted
class (``argmax`` of the logits for cross-entropy and of the outputs of a run's mse/huber
network, trained on one-hot rows; ``logit > 0`` for binary cross-entropy).
Errors are ValueErrors naming the file or value and what was expected.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import gzip
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .data.files import (
    _not_utf8,
    _some,
    check_csv_fits,
    check_npz,
    csv_row,
    is_header_row,
    is_number,
    npy_header,
    npz_headers,
    other_separator,
    read_csv_frame,
    refuse_objects,
)
from .data.idx import looks_like_idx, read_idx
from .data.standardize import apply_standardizer
from .memory import MemoryRefusal, check_array
from .progress import count as count_of
from .training.data_checks import finite_features

MODELS = "models"


def models_folder(out: str | Path) -> Path:
    """The folder of the saved networks of results store ``out``: ``OUT/models`` (beside the
    store file when ``out`` names a ``.db`` file, as ``--out results.db`` does)."""
    from .experiments.store import resolve_db_path

    return resolve_db_path(out).parent / MODELS


def model_path(out: str | Path, run_id: str) -> Path:
    """Where ``depthlab run`` keeps a run's network: ``OUT/models/<run id>.npz``."""
    return models_folder(out) / f"{run_id}.npz"


def save_run_network(prep: Any, out: str | Path, run_id: str) -> Path:
    """Save a trained run's network with its loss and input standardization."""
    return stage_run_network(prep, out, run_id).commit()


def stage_run_network(prep: Any, out: str | Path, run_id: str) -> Any:
    """:func:`save_run_network`'s file written to its temporary, a
    :class:`depthlab.atomic.Staged` that ``commit()`` renames into ``DIR/models/<id>.npz``
    (``discard()`` removes): ``depthlab run`` commits it once the run is stored."""
    from .persist import stage_save

    # a run classifies (mse/huber trained on one-hot rows of the classes) unless its data set
    # holds real regression targets (predict gives values then, and scores them by MSE)
    info = getattr(prep.data, "info", None) or {}
    values = info.get("targets") == "values"
    meta: dict[str, Any] = {"loss": prep.config["train"]["loss"], "run_id": run_id,
                            "data": prep.config["data"], "one_hot_targets": not values}
    if values:
        meta["targets"] = "values"
    label = info.get("label_column")
    if isinstance(label, str) or (isinstance(label, list) and label):  # by name: a
        # `data.label = 0` dropped the first column of any CSV given to predict (a feature of
        # one whose labels are last), and took its numbers for labels
        meta["label_column"] = label
        if isinstance(info.get("feature_names"), list):  # predict takes them by name
            meta["feature_names"] = [str(f) for f in info["feature_names"]]
    if info.get("header") is False:  # a CSV without a header row: its label column(s) by
        # position, dropped by predict from a file of the same width
        meta["label_index"] = info["label_index"]
        meta["csv_columns"] = int(info["n_columns"])
    if info.get("input_scale"):  # integer pixels read as pixels * scale (IDX: / 255)
        meta["input_scale"] = float(info["input_scale"])
    std = info.get("standardization")
    if std:  # the float64 statistics when the data were standardized before a float32 cast
        meta["input_mean"] = np.asarray(std.get("mean64", std["mean"]))
        meta["input_std"] = np.asarray(std.get("std64", std["std"]))
    return stage_save(prep.net, model_path(out, run_id), meta=meta)


def resolve_model(target: str, folder: str | Path) -> Path:
    """The saved network ``target`` names: a ``.npz`` file, or the id (or a unique prefix) of a
    run of results folder ``folder`` whose network ``depthlab run`` saved."""
    p = Path(target)
    if p.suffix == ".npz" or p.is_file():
        if not p.is_file():
            raise ValueError(f"{target!r}: no such file" if not p.exists() else
                             f"{target!r} is not a file (a folder, a device or a pipe); "
                             "expected a saved network (.npz) or a run id")
        return p
    models = models_folder(folder)
    found = sorted(models.glob(f"{glob.escape(target)}*.npz")) if models.is_dir() else []
    if len(found) == 1:
        return found[0]
    store = models.parent
    if not found and store.exists() and not store.is_dir():  # --dir notes.txt: a file, not
        raise ValueError(f"{target!r} is not a .npz file, and --dir {str(store)!r} is a file, "
                         "not a results folder; expected the folder of `depthlab run --out`")
    if not found:
        raise ValueError(f"{target!r} is neither a .npz file nor a run with a saved network in "
                        f"{str(models)!r} (networks are saved by `depthlab run`)")
    raise ValueError(f"run prefix {target!r} matches {len(found)} runs: "
                    f"{', '.join(f.stem for f in found[:5])}; give more characters")


def builtin_test_split(name: str, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The raw (unstandardized) test split of built-in data set ``name``: split as the run
    that saved the network split it when it trained on ``name``, else with the defaults."""
    from .data import find_builtin, load_dataset

    d = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    kw: dict[str, Any] = {}
    given, trained = find_builtin(name), find_builtin(d.get("name"))
    # by the data set, not its spelling: `predict RUN Spirals` (or an alias) took the default
    # split of a run trained on "spirals" with its own n/seed/fractions (other rows scored)
    if given is not None and trained is not None and given.name == trained.name:
        kw = {k: d[k] for k in ("seed", "val_fraction", "test_fraction", "n") if d.get(k)
              is not None}
        kw.update(d.get("options") or {})
    ds = load_dataset(name, **kw)
    if not len(ds.y_test):  # said only "input batch is empty (0 rows)"
        how = ", ".join(f"data.{k} = {kw[k]:g}" for k in ("test_fraction", "n") if k in kw)
        how = f" (split as the run split it: {how})" if how else ""
        raise ValueError(f"its test split is empty{how}; "
                         "expected a test split of at least one row: give a file of inputs "
                         "as DATA")
    return np.asarray(ds.x_test), np.asarray(ds.y_test)


def input_key(keys: list[str]) -> str | None:
    """The inputs of a ``.npz`` holding arrays ``keys``: ``x`` or ``X`` (the keys a training
    ``.npz`` uses), or its only array (``np.savez(f, a)`` names it ``arr_0``). Both ``x`` and
    ``X`` is a ValueError (which one holds the inputs? training refuses such a file too)."""
    if "x" in keys and "X" in keys:
        raise ValueError("it holds both 'x' and 'X'; accepted: one of them (the inputs)")
    for key in ("x", "X"):
        if key in keys:
            return key
    return keys[0] if len(keys) == 1 else None


def read_inputs(path: str) -> np.ndarray:
    """A 2-D float array from ``.npy``, ``.csv`` or ``.npz`` (key ``x`` or ``X``, or the
    only array)."""
    return read_labeled_inputs(path)[0]


def label_column(meta: dict[str, Any]) -> str | int | list | None:
    """The label column of the CSV a run trained on (``data.label``, default ``"label"``), or
    None for a network not trained by ``depthlab run`` on a CSV file."""
    d = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    if not str(d.get("path") or "").lower().endswith((".csv", ".csv.gz")):
        return None
    named = meta.get("label_column")
    if (isinstance(named, str) and named) or (isinstance(named, list) and named):
        return named  # its name(s) in the training CSV (data.label may be an index)
    return d.get("label") if d.get("label") is not None else "label"


def read_labeled_inputs(path: str, label: str | int | None = None
                        ) -> tuple[np.ndarray, np.ndarray | None]:
    """(inputs, labels or None): :func:`read_inputs`; a CSV whose header has the column
    ``label`` (a name or a 0-based index: the run's label column) has it removed from the
    inputs, and its values are the labels when they are integers."""
    found = read_input_file(path, label)
    return found.x, found.labels if found.labelled is None else None


@dataclasses.dataclass
class InputFile:
    """What :func:`read_input_file` read: the inputs ``x``, the labels (or None), and for a
    CSV ``where(row, col)``, which names entry ``x[row, col]`` (``col`` None: the row) by the
    file's line and column (``"line 3, column 'b'"``), as training's messages name them;
    None for arrays (their 0-based indices are the names)."""

    x: np.ndarray
    labels: np.ndarray | None = None
    where: Callable[[int, int | None], str] | None = None
    labelled: np.ndarray | None = None
    """Which rows have a label (None: all of them, or no labels); ``labels`` holds -1 in
    the others (a CSV's empty label cell)."""
    unlabelled: str | None = None
    """Why some rows (or all: ``labels`` None) have no label, for the user; None if all do."""
    targets: np.ndarray | None = None
    """``values=True`` (a regression run): the CSV's target columns as float64 (n, k), NaN
    in a cell that holds no number (such rows are not scored); None without them."""
    source: Path | None = None
    """DATA an IDX folder: the images file read in it (:func:`idx_folder_images`)."""


class _CsvCells:
    """Names the entries of a CSV's input matrix by the file's line (:func:`csv_row`: lines
    counted as pandas counts rows) and column (the header's name, else ``column 2 of 4``
    counted from 1); ``kept``: the file's column of each input column (the label column and
    a pandas index column left out of the inputs are counted back in)."""

    def __init__(self, path: Path, header: bool, names: list[str], kept: list[int]) -> None:
        self.path, self.header, self.names, self.kept = path, header, names, kept

    def file_column(self, col: int) -> int:
        return self.kept[col] if col < len(self.kept) else col

    def column(self, col: int) -> str:
        c = self.file_column(col)
        if self.header and c < len(self.names):
            return f"column {self.names[c]!r}"
        return f"column {c + 1} of {len(self.names)}"

    def row(self, row: int) -> tuple[list[str], int]:
        """The cells of data row ``row`` and its line number."""
        found = csv_row(self.path, row, self.header)
        return found if found is not None else ([], row + 1 + int(self.header))

    def __call__(self, row: int, col: int | None = None) -> str:
        line = self.row(row)[1]
        return f"line {line}" if col is None else f"line {line}, {self.column(col)}"


def _stripped(exc: BaseException, path: str, p: Path) -> str:
    """``exc``'s message without the file name it starts with (the caller names it): a
    message of ``check_csv_fits``/``read_csv_frame`` said "DATA 'x.csv' could not be read:
    DATA 'x.csv': line 3 holds a NUL byte" (twice)."""
    said = " ".join(str(exc).split())
    for prefix in (f"DATA {path!r}", repr(str(p)), repr(path)):
        if said.startswith(prefix):
            return said[len(prefix):].lstrip(":").strip()
    return said


def read_input_file(path: str, label: str | int | list | None = None,
                    features: list[str] | None = None, *, values: bool = False,
                    unnamed: tuple[Any, int] | None = None,
                    n_inputs: int | None = None) -> InputFile:
    """:func:`read_labeled_inputs` with, for a CSV, the namer of its cells
    (:class:`InputFile`); a CSV's empty cells, short rows and non-finite numbers are refused
    here by line and column. ``features``: the training CSV's feature names; a CSV holding
    exactly those in another order has its columns put in the training order. ``unnamed``:
    (label index or indices, columns) of a training CSV without a header row: a headerless
    CSV of that many columns has those dropped (and scored). ``label`` may
    be a list of columns (a regression's targets); ``values``: the label columns hold real
    targets (:attr:`InputFile.targets`), not classes. A 1-D array is one row of features, or,
    when ``n_inputs`` (the network's) is 1, one value per row, as training reads a 1-D ``x``.
    An IDX images file has its labels file beside it read as its labels (:func:`_idx_labels`);
    an IDX folder is read as its images file :func:`idx_folder_images` (``InputFile.source``);
    an IDX labels file is refused naming its images file."""
    labels = labelled = unlabelled = targets = None
    text: list[str] = []  # a CSV's non-numeric columns
    dropped: list[int] = []  # the file's columns of the labels, not among the inputs
    where: _CsvCells | None = None
    if not str(path).strip():  # Path("") is the current folder
        raise ValueError(f"DATA {path!r} is empty; expected a .npy, .npz or .csv file or a "
                         "built-in data set")
    p = Path(path)
    folder = None  # an IDX folder: p becomes the images file read in it
    if p.is_dir():
        images = idx_folder_images(p)
        if images is None:
            raise ValueError(f"DATA {path!r} is a folder without IDX images; expected a .npy, "
                             ".npz or .csv file, or an IDX folder holding "
                             "t10k-images-idx3-ubyte[.gz] or train-images-idx3-ubyte[.gz]")
        folder, p = p, images
    if not p.is_file():
        if p.exists():  # /dev/zero, a named pipe: read without end or waiting for a writer
            raise ValueError(f"DATA {path!r} is not a file (a device or a pipe); expected a "
                             ".npy, .npz or .csv file or a built-in data set")
        from .data import DATASETS
        from .validators import did_you_mean

        hint = "" if "/" in str(path) or "." in p.name else did_you_mean(str(path), DATASETS)
        raise ValueError(f"DATA {path!r}: no such file (nor a built-in data set{hint}: see "
                         "`depthlab datasets`)")
    # as `depthlab run` reads its data file: the case of the suffix aside, and .csv.gz
    lower = p.name.lower()
    kind = ".csv" if lower.endswith((".csv", ".csv.gz", ".txt")) else p.suffix.lower()
    if kind not in (".npy", ".npz", ".csv") and looks_like_idx(p):  # t10k-images-idx3-ubyte
        kind = "idx"  # as training reads it: no suffix, its header says what it is
    if kind not in (".npy", ".npz", ".csv", "idx"):
        raise ValueError(f"DATA {path!r}: expected a .npy, .npz, .csv (or .csv.gz) or IDX "
                         "images file")
    if kind == "idx":
        _refuse_idx_labels_file(p, path, n_inputs)
    try:
        if kind == "idx":  # streamed; its declared size refused before it is allocated
            x = read_idx(p)
            if not values:  # its labels file beside it, found as training finds it
                labels, labelled, unlabelled = _idx_labels(p, len(x))
        elif kind == ".npy":
            with open(p, "rb") as fh:  # refuse what cannot fit before np.load allocates it
                shape, dtype = npy_header(fh)
            refuse_objects(dtype, "it")
            check_array(shape, dtype, f"DATA {path!r}")
            x = np.load(p, allow_pickle=False)
        elif kind == ".npz":
            check_npz(p, "it")  # named by the message below
            with np.load(p, allow_pickle=False) as z:
                headers = npz_headers(z)
                key = input_key(z.files)
                if key is not None:
                    refuse_objects(headers[key][1], f"its array {key!r}")
                    check_array(*headers[key], f"DATA {path!r} array {key!r}")
                x = z[key] if key is not None else None
                names = ", ".join(z.files) or "none"
                if values and key in ("x", "X") and "y" in z.files:  # a regression's targets
                    refuse_objects(headers["y"][1], "its array 'y'")
                    check_array(*headers["y"], f"DATA {path!r} array 'y'")
                    targets = _npz_targets(z["y"], x)
        else:
            import pandas as pd

            check_csv_fits(p, f"DATA {path!r}")  # before pandas allocates it
            opener = gzip.open if lower.endswith(".gz") else open
            with opener(p, "rt", encoding="utf-8-sig", newline="") as fh:  # a byte-order
                # mark is not data; its cells as pandas reads them: a quoted number ("1") is
                # a number, so a headerless file of quoted numbers keeps its first row;
                # blank lines skipped, as pandas skips them
                first = next((row for row in csv.reader(fh)
                              if len(row) > 1 or (row and row[0].strip())), [])
            if len(first) > 1 and not first[-1].strip():  # the cell after a trailing comma
                first = first[:-1]
            header = is_header_row(first)  # training's rule: `0,1,2` names columns
            if not header and features:  # names that are numbers (wavelengths "400,410"):
                # the training CSV's feature names, in any order, name the columns here too
                # (read as data, the header was one more row of inputs, 400, 410, ...)
                header = set(map(str, features)) <= {c.strip() for c in first}
            named = list(first) if header else []  # unstripped, as training compares them
            twice = sorted({c for c in named if c and named.count(c) > 1})
            if twice:  # as training refuses them: pandas renamed the second 'label' to
                # 'label.1', which was fed to the network as a feature, taken by position
                raise ValueError(f"DATA {path!r}: column name(s) {twice[:5]} appear more than "
                                 "once in the header; expected distinct column names (as "
                                 "the training file's)")
            # lines ending with a comma: no shifted columns, no empty last column
            try:
                frame = read_csv_frame(p, header=0 if header else None)
            except pd.errors.EmptyDataError:  # pandas' "No columns to parse from file"
                raise ValueError("the file is empty (no header, no rows)") from None
            columns = [str(c).strip() for c in frame.columns]  # as the run read them
            if not header and unnamed is not None and frame.shape[1] == unnamed[1]:
                index = unnamed[0] if isinstance(unnamed[0], list) else [unnamed[0]]
                dropped = [int(i) for i in index if 0 <= int(i) < frame.shape[1]]
                ys = frame.iloc[:, dropped]
                frame = frame.iloc[:, [i for i in range(frame.shape[1]) if i not in dropped]]
                label = index if isinstance(unnamed[0], list) else index[0]
            if header and label is not None:
                for one in label if isinstance(label, list) else [label]:
                    name = one if isinstance(one, str) else (
                        columns[one] if 0 <= one < len(columns) else None)
                    if name in columns:  # the training CSV itself: its labels are not inputs
                        dropped.append(columns.index(name))
                ys = frame.iloc[:, dropped]
                frame = frame.iloc[:, [i for i in range(frame.shape[1]) if i not in dropped]]
            index = None  # pandas' to_csv index, left out as training leaves it out
            if (header and first and not first[0].strip() and 0 not in dropped
                    and len(columns) > 2 and len(frame) > 0
                    and pd.api.types.is_integer_dtype(frame.iloc[:, 0])
                    and np.array_equal(frame.iloc[:, 0].to_numpy(), np.arange(len(frame)))):
                warnings.warn(f"DATA {path!r}: its first column has no name and holds 0, 1, "
                              "2, ... (an index that pandas' to_csv writes unless "
                              "index=False): left out of the features, as training leaves it "
                              "out", UserWarning, stacklevel=2)
                frame, index = frame.iloc[:, 1:], 0
            kept = [i for i in range(len(columns)) if i not in (*dropped, index)]
            names = [columns[i] for i in kept]
            if (header and features is not None and names != list(features)
                    and len(set(names)) == len(names) and sorted(names) == sorted(features)):
                # the training CSV's features in another order: taken by name (by position
                # they were silently fed to the wrong inputs)
                order = [names.index(f) for f in features]
                frame, kept = frame.iloc[:, order], [kept[i] for i in order]
                warnings.warn(f"DATA {path!r}: its columns {_some(names)} are the network's "
                              f"features in another order; taken in the training order "
                              f"{_some(list(features))}", UserWarning, stacklevel=2)
            elif (header and features is not None and len(names) == len(features)
                  and names != list(features) and not all(is_number(n) for n in names)):
                other = [n for n, f in zip(names, features, strict=True) if n != f]
                warnings.warn(f"DATA {path!r}: its columns {_some(other)} are not the "
                              f"network's features {_some(list(features))}; taken by position",
                              UserWarning, stacklevel=2)
            where = _CsvCells(p, header, columns, kept)
            wanted = len(label) if isinstance(label, list) else 1
            if values and dropped and len(dropped) == wanted:
                targets, unlabelled = _csv_targets(ys, where, dropped)
            elif dropped and not values and len(dropped) == 1:
                labels, labelled, unlabelled = _csv_labels(ys.iloc[:, 0], where, dropped[0])
            elif dropped and not values and len(dropped) == wanted:  # one-hot columns
                labels, labelled, unlabelled = _csv_one_hot(ys, where, dropped)
            # numeric columns (booleans among them) as float64, as training reads the CSV
            # (to_numpy() of floats beside booleans is an object array)
            text = [str(c) for c in frame.columns  # (no rows: named below as such)
                    if len(frame) and not pd.api.types.is_numeric_dtype(frame[c])]
            x = frame.to_numpy(dtype=np.float64) if not text else frame.to_numpy()
    except MemoryRefusal:
        raise
    except UnicodeDecodeError:  # was "'utf-8' codec can't decode byte 0xe9 in position 14"
        raise ValueError(f"DATA {path!r} could not be read: {_not_utf8(p)}; accepted: UTF-8 "
                         "text (re-save the file as UTF-8)") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:  # as training says it
        if not lower.endswith(".gz"):
            raise ValueError(f"DATA {path!r} could not be read: {_stripped(exc, path, p)}"
                             ) from None
        raise ValueError(f"DATA {path!r} could not be read: corrupt gzip data "
                         f"({exc or type(exc).__name__})") from None
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ValueError(f"DATA {path!r} could not be read: {_stripped(exc, path, p)}"
                         ) from None
    if text:  # the first cell that is no number, by its line and column, as training names
        # it (the column alone left the user searching a long file)
        sep = other_separator(columns)
        if sep:  # as training says it (was: "non-numeric column(s) ['a;b;c;label']: ...")
            raise ValueError(f"DATA {path!r}: its header {columns[0][:60]!r} looks "
                             f"separated by {sep!r}; accepted: comma-separated values")
        raise ValueError(f"DATA {path!r}: non-numeric column(s) {text[:5]}"
                         f"{_first_text_cell(frame, text[0], where)}; expected numbers (the "
                         "features the network was trained on)")
    if where is not None and x.size:
        _refuse_bad_cells(x, where, path)
    if x is None:
        raise ValueError(f"DATA {path!r} has no 'x' (or 'X') array; arrays: {names}")
    x = np.asarray(x)
    if x.dtype.kind == "b":  # 0/1 features, as a training .npz of booleans is read
        x = x.astype(np.uint8)
    if x.ndim == 1:  # a one-input network's rows (as training reads it), else one row
        x = x[:, None] if n_inputs == 1 else x[None, :]
    elif x.ndim > 2:  # images (N, H, W[, C]): flattened per row, as training flattens them
        x = x.reshape(x.shape[0], -1)
    if x.ndim == 2 and x.shape[0] == 0:
        raise ValueError(f"DATA {path!r} has no rows; expected at least one row of features")
    if (x.ndim != 2 or not np.issubdtype(x.dtype, np.number)
            or np.issubdtype(x.dtype, np.complexfloating)):
        raise ValueError(f"DATA {path!r}: expected a 2-D array of real numbers, got shape "
                         f"{x.shape} {x.dtype}")
    if unlabelled is not None:
        warnings.warn(f"DATA {path!r}: {unlabelled}", UserWarning, stacklevel=2)
    return InputFile(x, labels, where, labelled, unlabelled, targets,
                     p if folder is not None else None)


def idx_folder_images(folder: Path) -> Path | None:
    """The IDX images file that predict reads in ``folder`` (an IDX folder, as training's
    ``data.path`` accepts): its test images (``t10k-images-idx3-ubyte[.gz]``, or ``test-*``;
    idx4 colour images too), else its training images (``train-images-*``); None when it holds
    neither."""
    from .data.files import _find_in_folder

    return _find_in_folder(folder, ("t10k", "test")) or _find_in_folder(folder, ("train",))


def _refuse_idx_labels_file(p: Path, path: str, n_inputs: int | None) -> None:
    """A ValueError for an IDX labels file given as DATA (``train-labels-idx1-ubyte``, or any
    one-dimensional IDX file, unless the network has one input): its values were read as one
    row of features ("has 20 features per row; the network expects 16"). The message names
    the images file whose labels it holds."""
    from .data.files import labels_file_for
    from .data.idx import idx_header

    if "labels" in p.name and "images" not in p.name:
        try:
            labels_file_for(p)  # raises, naming the images file beside it
        except ValueError as exc:
            raise ValueError(f"DATA {path!r} {_stripped(exc, path, p)}") from None
        except OSError:  # 'x-labels-idx3-ubyte': images named 'labels', without their labels
            pass
    try:
        dims, _ = idx_header(p)
    except (ValueError, OSError):
        return  # named when the file is read
    if len(dims) == 1 and n_inputs != 1:
        raise ValueError(f"DATA {path!r} is a one-dimensional IDX file ({dims[0]} values: "
                         "labels, idx1); expected an IDX images file (idx3: N, H, W), whose "
                         "labels file lies beside it")


def _idx_labels(images: Path, n: int
                ) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    """(labels, labelled, note) of an IDX images file given to predict: its labels file
    (:func:`depthlab.data.files.labels_file_for`, training's rule: ``images`` -> ``labels``,
    ``idx3`` -> ``idx1``, ``.gz`` or not) read as class numbers. No labels file beside it:
    (None, None, None), unscored. A labels file that holds no class number per image (another
    length, more than one dimension, negative or fractional values) leaves the predictions
    unscored with a note saying why (training refuses it)."""
    from .data.files import labels_file_for
    from .data.idx import idx_header

    try:
        found = labels_file_for(images)
    except (ValueError, OSError):  # no labels file beside it, or a name without 'images'
        return None, None, None
    try:
        dims, _ = idx_header(found)
        if len(dims) != 1 or dims[0] != n:
            return None, None, (f"its labels file {str(found)!r} holds shape {dims} beside "
                                f"{count_of(n, 'image')}, not one label per image: the "
                                "predictions are not scored")
        y = read_idx(found)
    except MemoryRefusal:
        raise
    except (ValueError, OSError, EOFError, zlib.error) as exc:  # the predictions still come
        return None, None, (f"its labels file {str(found)!r} could not be read "
                            f"({' '.join(str(exc).split())}): the predictions are not scored")
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(y) & (y >= 0) & (y == np.round(y))
    if not ok.all():
        return None, None, (f"its labels file {str(found)!r} holds {y[~ok][0].item()!r}, not "
                            "a class number 0, 1, ...: the predictions are not scored")
    return y.astype(np.int64), None, None


def _npz_targets(y: np.ndarray, x: np.ndarray | None) -> np.ndarray | None:
    """A regression run's targets in a ``.npz`` given to predict (its ``y`` beside ``x``):
    float64 (n, k), non-finite entries NaN (their rows not scored); None when ``y`` holds
    no numbers or not one row per input row."""
    if x is None or y.dtype.kind not in "biuf" or y.ndim == 0 or len(y) != len(x):
        return None
    t = y.reshape(len(y), -1).astype(np.float64)
    t[~np.isfinite(t)] = np.nan
    return t


def _csv_targets(ys: Any, where: _CsvCells, columns: list[int]
                 ) -> tuple[np.ndarray | None, str | None]:
    """(targets, note) of a regression run's target columns ``ys`` (the file's columns
    ``columns``) in a CSV given to predict: float64 (n, k), NaN where a cell holds no finite
    number (that row is not scored: the note names the first such cell), None when no row has
    all its targets."""
    import pandas as pd

    t = np.stack([pd.to_numeric(ys.iloc[:, j], errors="coerce").to_numpy(dtype=np.float64)
                  for j in range(ys.shape[1])], axis=1)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(t)
    if not bad.any():
        return t, None
    row, j = (int(i) for i in np.argwhere(bad)[0])
    cells, line = where.row(row)
    col = columns[j]
    cell = cells[col].strip() if col < len(cells) else ""
    name = f"column {where.names[col]!r}"
    said = (f"line {line} holds {cell[:40]!r} in the target {name}" if cell
            else f"line {line} has an empty cell in the target {name}")
    t[bad] = np.nan
    scored = int((~bad.any(axis=1)).sum())
    if not scored:
        return None, f"{said}, not a number (nor does any other row): no error is computed"
    return t, (f"{said}, not a number ({len(t) - scored} of {count_of(len(t), 'row')} without "
               f"their targets): the mean squared error is over the "
               f"{count_of(scored, 'row')} that {'has' if scored == 1 else 'have'} them")


def _csv_labels(y: Any, where: _CsvCells, column: int
                ) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    """(labels, labelled, note) of the label column ``y`` (the file's column ``column``) of a
    CSV given to predict: class numbers where the cell holds a whole number >= 0 (-1 in the
    rows without one, which ``labelled`` marks False; None when every row has one), and the
    note saying which rows are left out of the accuracy, or why there is none (an empty label
    cell, ``n/a``, text or ``0.5`` silently gave no accuracy at all)."""
    import pandas as pd

    name = f"column {where.names[column]!r}"  # (a label column is found by its header)
    values = pd.to_numeric(y, errors="coerce").to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(values) & (values == np.round(values)) & (values >= 0) & (
            values < 2**53)
    if whole.all():
        return values.astype(np.int64), None, None
    missing = y.isna().to_numpy()  # an empty cell, or a text pandas reads as missing
    other = ~whole & ~missing  # text, a fraction, a negative number, infinity
    first = int(np.argmax(other)) if other.any() else int(np.argmax(missing))
    cells, line = where.row(first)
    cell = cells[column].strip() if column < len(cells) else ""
    said = (f"line {line} holds {cell[:40]!r} in the label {name}" if cell
            else f"line {line} has an empty cell in the label {name}")
    if not whole.any():
        return None, None, (f"{said}, not a class number 0, 1, ... (nor does any other row): "
                            "no accuracy is computed")
    labels = np.where(whole, np.nan_to_num(values, nan=-1, posinf=-1, neginf=-1), -1)
    return (labels.astype(np.int64), whole,
            f"{said}, not a class number 0, 1, ... ({int((~whole).sum())} of "
            f"{count_of(len(whole), 'row')} without one): the accuracy is over the "
            f"{count_of(int(whole.sum()), 'row')} that {'has' if whole.sum() == 1 else 'have'} one")


def _csv_one_hot(ys: Any, where: _CsvCells, columns: list[int]
                 ) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    """(labels, labelled, note) of a classification run's label columns ``ys`` (the file's
    columns ``columns``, one-hot as training read them): the class of a one-hot row is the
    position of its 1 (:func:`depthlab.data.dataset.one_hot_rows`, training's rule), -1 in
    the other rows, which ``labelled`` marks False (None when every row is one-hot); the note
    names the first other row and says which rows the accuracy is over."""
    import pandas as pd

    from .data.dataset import one_hot_rows

    values = ys.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    ok = one_hot_rows(values)
    labels = np.where(ok, values.argmax(axis=1) if values.size else 0, -1).astype(np.int64)
    if ok.all():
        return labels, None, None
    first = int(np.argmin(ok))
    cells, line = where.row(first)
    shown = [cells[c].strip()[:20] if c < len(cells) else "" for c in columns]
    names = [where.names[c] for c in columns]
    said = f"line {line} holds {shown} in the label columns {names}, not a one-hot row"
    if not ok.any():
        return None, None, f"{said} (nor does any other row): no accuracy is computed"
    return (labels, ok, f"{said} ({int((~ok).sum())} of {count_of(len(ok), 'row')} "
            f"{'is' if (~ok).sum() == 1 else 'are'} not): the accuracy is over the "
            f"{count_of(int(ok.sum()), 'one-hot row')}")


def _first_text_cell(frame: Any, column: str, where: _CsvCells | None) -> str:
    """``: column 'b' holds 'x' on line 3, which is not a number`` for the first cell of
    ``frame[column]`` that is text, or '' when none is found."""
    import pandas as pd

    values = frame[column]
    text = (pd.to_numeric(values, errors="coerce").isna() & values.notna()).to_numpy()
    if where is None or not text.any():
        return ""
    row = int(np.argmax(text))
    col = list(frame.columns).index(column)
    return (f": {where.column(col)} holds {str(values.iloc[row])[:40]!r} on line "
            f"{where.row(row)[1]}, which is not a number")


def _refuse_bad_cells(x: np.ndarray, where: _CsvCells, path: str) -> None:
    """ValueError naming, by its line and column (:class:`_CsvCells`, as training names
    them), the first cell of a CSV's inputs ``x`` that holds no finite number: a cell that
    holds no value (a short row, or ``1,,3``; pandas reads it as NaN, which was refused as
    'contains NaN or infinity (first at row 1, column 1)', 0-based, though the file holds
    none), a text pandas reads as missing (``n/a``, ``NA``), or a written ``nan``, ``inf`` or
    ``1e400``."""
    bad = ~np.isfinite(x)
    if not bad.any():
        return
    row, col = (int(i) for i in np.argwhere(bad)[0])
    cells, line = where.row(row)
    c = where.file_column(col)
    count = int(bad.sum())
    more = f" ({count} cells without a finite number in all)" if count > 1 else ""
    if c >= len(cells):
        raise ValueError(f"DATA {path!r}: line {line} has {len(cells)} "
                         f"value{'s' if len(cells) != 1 else ''} but the file has "
                         f"{len(where.names)} columns{more}; expected a number in every cell")
    cell = cells[c].strip()
    if not cell:
        raise ValueError(f"DATA {path!r}: line {line} has an empty cell in "
                         f"{where.column(col)}{more}; expected a number in every cell")
    if np.isnan(x[row, col]) and not is_number(cell):
        raise ValueError(f"DATA {path!r}: line {line} holds {cell[:40]!r} in "
                         f"{where.column(col)} (read as a missing value){more}; expected a "
                         "number in every cell")
    raise ValueError(f"DATA {path!r} contains NaN or infinity (first on line {line}, "
                     f"{where.column(col)}: {cell[:40]!r}){more}; accepted: finite numbers")


def _refuse_too_large(x: np.ndarray, dtype: Any, source: str,
                      where: Callable[[int, int | None], str]) -> None:
    """:func:`finite_features`' refusal of a finite value too large for ``dtype`` (1e39 for
    a float32 network), the entry named by ``where`` (a CSV's line and column)."""
    if np.dtype(x.dtype).kind != "f" or np.can_cast(x.dtype, dtype, "safe"):
        return
    with np.errstate(over="ignore", invalid="ignore"):
        bad = ~np.isfinite(x.astype(dtype)) & np.isfinite(x)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{source} value {float(x[row, col]):g} ({where(row, col)}) does not "
                         f"fit in {np.dtype(dtype).name}; accepted: |x| <= "
                         f"{np.finfo(dtype).max:.3g}")


def _check_standardization(model: Path, mean: Any, std: Any, n_in: int) -> None:
    """The saved ``(x - mean) / std`` must be usable: both arrays or neither, ``n_in`` finite
    numbers each, every ``std > 0`` (training replaces a zero spread by 1); else a ValueError
    naming the file (an altered or hand-made one)."""
    if mean is None and std is None:
        return
    for key, value in (("input_mean", mean), ("input_std", std)):
        if not isinstance(value, np.ndarray) or value.shape != (n_in,) or \
                value.dtype.kind != "f" or not np.isfinite(value).all():
            kind = getattr(value, "dtype", type(value).__name__)
            got = "missing" if value is None else f"{np.shape(value)} {kind}"
            raise ValueError(f"{model}: its meta {key} is {got}; expected {n_in} finite floats "
                             "(the input standardization, with input_mean and input_std)")
    if not (std > 0).all():
        raise ValueError(f"{model}: its meta input_std holds {float(std.min())!r}; expected "
                         "every value > 0")


def saved_inputs(model: Path) -> int:
    """The number of inputs of the network saved at ``model`` (its recipe's ``sizes[0]``),
    read without building it."""
    from .persist import _open

    with _open(model) as (recipe, _data):
        return int(recipe["config"]["sizes"][0])


def scaled_inputs(x: np.ndarray, scale: Any, dtype: Any) -> np.ndarray:
    """Integer inputs ``x`` (a ``.npy``/``.npz`` of uint8 pixels) of a network trained on data
    read as ``value * scale`` (IDX files and the image sets: ``scale = 1/255``) multiplied by
    ``scale`` as training multiplied them: ``x / round(1/scale)`` in ``dtype`` when ``1/scale``
    is a whole number, else ``x * scale`` (unscaled, pixels of 0..255 gave outputs of about 1000
    where the run's own rows gave about 1). Float inputs are taken as already scaled."""
    if (scale is None or isinstance(scale, bool) or not isinstance(scale, int | float)
            or scale == 1.0 or np.asarray(x).dtype.kind not in "iu"):
        return x
    dt = np.dtype(dtype) if np.dtype(dtype).kind == "f" else np.dtype(np.float64)
    inv = 1.0 / float(scale)
    if inv == round(inv):
        return np.asarray(x).astype(dt) / dt.type(round(inv))
    return np.asarray(x).astype(dt) * dt.type(scale)


def predict_saved(model: Path, x: np.ndarray, source: str = "DATA",
                  where: Callable[[int, int | None], str] | None = None
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """(raw outputs, predicted classes or None) of the saved network on ``x`` (named
    ``source`` in errors: a wrong feature count, NaN, infinity or values too large for the
    network's dtype; ``where(row, col)`` names an entry, e.g. a CSV's line and column
    (:class:`InputFile`), else its 0-based row and column)."""
    from .persist import load, load_meta

    net, meta = load(model), load_meta(model)
    n_in = net.dense_layers()[0].W.value.shape[0]
    if x.shape[1] != n_in:
        hint = (" (one column too many: if it holds the labels, drop it)" if x.shape[1] == n_in + 1
                else "")
        raise ValueError(f"{source} has {x.shape[1]} features per row; the network expects "
                         f"{n_in}{hint}")
    dtype = net.parameters()[0].value.dtype
    x = scaled_inputs(x, meta.get("input_scale"), dtype)
    mean, std = meta.get("input_mean"), meta.get("input_std")
    _check_standardization(model, mean, std, n_in)
    if mean is not None and np.dtype(mean.dtype).itemsize > np.dtype(dtype).itemsize:
        # as in training: standardized in float64, then cast (a feature 1e7 + N(0, 1) keeps
        # its spread; 1e39 fits float32 once standardized). Also inputs that a cast would not
        # change (integers, float32): standardized in float32 they were 3.6e-7 off the outputs
        # the run computes for its own rows of a CSV of pixel values
        x64 = finite_features(x, np.float64, source)  # x - mean overflowing (1.7e308 beside
        # a mean of -1.4e308) is x/std - mean/std there, as the run standardized its data
        x = finite_features(apply_standardizer(x64, mean, std), dtype,
                            f"{source} (standardized)")
    else:
        if where is not None:  # a CSV's value too large for the dtype: its line and column
            _refuse_too_large(x, dtype, source, where)
        x = finite_features(x, dtype, source)  # NaN, inf or too large for dtype: row and column
        if mean is not None:
            x = apply_standardizer(x, mean.astype(dtype), std.astype(dtype))
    with np.errstate(over="ignore", invalid="ignore"):  # reported below
        out = net.predict(x)
    if not np.isfinite(out).all():  # the inputs are finite: the weights or an overflow
        row = int(np.argwhere(~np.isfinite(out))[0][0])
        bad = [p.name for p in net.parameters() if not np.isfinite(p.value).all()]
        why = (f"its parameters {', '.join(bad[:3])} hold NaN or infinity (a diverged "
               "network?)" if bad else f"the values overflow {np.dtype(dtype).name}")
        at = where(row, None) if where is not None else f"row {row}"
        raise ValueError(f"{model}: the network's outputs for {source} are not finite (first "
                         f"at {at}): {why}")
    loss = meta.get("loss")
    classes = None
    if loss in ("cross_entropy", "nll_loss") or (out.shape[1] > 1 and (
            loss is None or meta.get("one_hot_targets") is True)):
        classes = np.argmax(out, axis=1)
    elif loss in ("binary_cross_entropy", "bce_loss"):  # a logit > 0, a probability > 0.5
        classes = (out[:, 0] > (0.5 if loss == "bce_loss" else 0)).astype(np.int64)
    return out, classes
