"""Predictions of a saved network (``dl.save``, or a run's network saved by ``depthlab run``) on
new inputs: finding the file, reading inputs from ``.npy``/``.npz``/``.csv`` files or a built-in
data set's test split, the run's input standardization ``(x - mean) / std``, and the predicted
class (``argmax`` of the logits for cross-entropy and of the outputs of a run's mse/huber
network, trained on one-hot rows; ``logit > 0`` for binary cross-entropy).
Errors are ValueErrors naming the file or value and what was expected.
"""

from __future__ import annotations

import csv
import glob
import gzip
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .data.files import (
    check_csv_fits,
    check_npz,
    csv_row,
    is_number,
    npy_header,
    npz_headers,
    read_csv_frame,
)
from .memory import MemoryRefusal, check_array
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
    from .persist import save

    # a run always classifies: mse/huber are trained on one-hot rows of the classes
    meta: dict[str, Any] = {"loss": prep.config["train"]["loss"], "run_id": run_id,
                            "data": prep.config["data"], "one_hot_targets": True}
    std = (getattr(prep.data, "info", None) or {}).get("standardization")
    if std:  # the float64 statistics when the data were standardized before a float32 cast
        meta["input_mean"] = np.asarray(std.get("mean64", std["mean"]))
        meta["input_std"] = np.asarray(std.get("std64", std["std"]))
    return save(prep.net, model_path(out, run_id), meta=meta)


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
    if not found:
        raise ValueError(f"{target!r} is neither a .npz file nor a run with a saved network in "
                        f"{str(models)!r} (networks are saved by `depthlab run`)")
    raise ValueError(f"run prefix {target!r} matches {len(found)} runs: "
                    f"{', '.join(f.stem for f in found[:5])}; give more characters")


def builtin_test_split(name: str, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The raw (unstandardized) test split of built-in data set ``name``: split as the run
    that saved the network split it when it trained on ``name``, else with the defaults."""
    from .data import load_dataset

    d = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    kw: dict[str, Any] = {}
    if d.get("name") == name:
        kw = {k: d[k] for k in ("seed", "val_fraction", "test_fraction", "n") if d.get(k)
              is not None}
        kw.update(d.get("options") or {})
    ds = load_dataset(name, **kw)
    return np.asarray(ds.x_test), np.asarray(ds.y_test)


def input_key(keys: list[str]) -> str | None:
    """The inputs of a ``.npz`` holding arrays ``keys``: ``x`` or ``X`` (the keys a training
    ``.npz`` uses), or its only array (``np.savez(f, a)`` names it ``arr_0``)."""
    for key in ("x", "X"):
        if key in keys:
            return key
    return keys[0] if len(keys) == 1 else None


def read_inputs(path: str) -> np.ndarray:
    """A 2-D float array from ``.npy``, ``.csv`` or ``.npz`` (key ``x`` or ``X``, or the
    only array)."""
    return read_labeled_inputs(path)[0]


def label_column(meta: dict[str, Any]) -> str | int | None:
    """The label column of the CSV a run trained on (``data.label``, default ``"label"``), or
    None for a network not trained by ``depthlab run`` on a CSV file."""
    d = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    if not str(d.get("path") or "").lower().endswith((".csv", ".csv.gz")):
        return None
    return d.get("label") if d.get("label") is not None else "label"


def read_labeled_inputs(path: str, label: str | int | None = None
                        ) -> tuple[np.ndarray, np.ndarray | None]:
    """(inputs, labels or None): :func:`read_inputs`; a CSV whose header has the column
    ``label`` (a name or a 0-based index: the run's label column) has it removed from the
    inputs, and its values are the labels when they are integers."""
    labels = None
    text: list[str] = []  # a CSV's non-numeric columns
    dropped: int | None = None  # the file's column of the labels, not among the inputs
    if not str(path).strip():  # Path("") is the current folder
        raise ValueError(f"DATA {path!r} is empty; expected a .npy, .npz or .csv file or a "
                         "built-in data set")
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"DATA {path!r} is a folder; expected a .npy, .npz or .csv file")
    if not p.is_file():
        if p.exists():  # /dev/zero, a named pipe: read without end or waiting for a writer
            raise ValueError(f"DATA {path!r} is not a file (a device or a pipe); expected a "
                             ".npy, .npz or .csv file or a built-in data set")
        raise ValueError(f"DATA {path!r}: no such file (nor a built-in data set: see "
                         "`depthlab datasets`)")
    # as `depthlab run` reads its data file: the case of the suffix aside, and .csv.gz
    lower = p.name.lower()
    kind = ".csv" if lower.endswith((".csv", ".csv.gz", ".txt")) else p.suffix.lower()
    if kind not in (".npy", ".npz", ".csv"):
        raise ValueError(f"DATA {path!r}: expected a .npy, .npz or .csv (or .csv.gz) file")
    try:
        if kind == ".npy":
            with open(p, "rb") as fh:  # refuse what cannot fit before np.load allocates it
                check_array(*npy_header(fh), f"DATA {path!r}")
            x = np.load(p, allow_pickle=False)
        elif kind == ".npz":
            check_npz(p, "it")  # named by the message below
            with np.load(p, allow_pickle=False) as z:
                headers = npz_headers(z)
                key = input_key(z.files)
                if key is not None:
                    check_array(*headers[key], f"DATA {path!r} array {key!r}")
                x = z[key] if key is not None else None
                names = ", ".join(z.files) or "none"
        else:
            import pandas as pd

            check_csv_fits(p, f"DATA {path!r}")  # before pandas allocates it
            opener = gzip.open if lower.endswith(".gz") else open
            with opener(p, "rt", encoding="utf-8-sig") as fh:  # a byte-order mark is not data
                # its cells as pandas reads them: a quoted number ("1") is a number, so a
                # headerless file of quoted numbers keeps its first row
                first = next(csv.reader([fh.readline()]), [])
            if len(first) > 1 and not first[-1].strip():  # the cell after a trailing comma
                first = first[:-1]
            header = not all(is_number(c) for c in first)
            # lines ending with a comma: no shifted columns, no empty last column
            frame = read_csv_frame(p, header=0 if header else None)
            if header and label is not None:
                columns = [str(c).strip() for c in frame.columns]  # as the run read them
                name = label if isinstance(label, str) else (
                    columns[label] if 0 <= label < len(columns) else None)
                if name in columns:  # the training CSV itself: its labels are not inputs
                    dropped = columns.index(name)
                    y = frame.pop(frame.columns[dropped])
                    if pd.api.types.is_integer_dtype(y) or (
                            pd.api.types.is_float_dtype(y) and np.isfinite(y).all()
                            and (y == np.round(y)).all()):
                        labels = y.to_numpy().astype(np.int64)
            # numeric columns (booleans among them) as float64, as training reads the CSV
            # (to_numpy() of floats beside booleans is an object array)
            text = [str(c) for c in frame.columns  # (no rows: named below as such)
                    if len(frame) and not pd.api.types.is_numeric_dtype(frame[c])]
            x = frame.to_numpy(dtype=np.float64) if not text else frame.to_numpy()
    except MemoryRefusal:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"DATA {path!r} could not be read: {exc}") from None
    if text:
        raise ValueError(f"DATA {path!r}: non-numeric column(s) {text[:5]}; expected numbers "
                         "(the features the network was trained on)")
    if kind == ".csv":
        _refuse_missing_cells(p, x, header, path, dropped)
    if x is None:
        raise ValueError(f"DATA {path!r} has no 'x' (or 'X') array; arrays: {names}")
    x = np.asarray(x)
    if x.dtype.kind == "b":  # 0/1 features, as a training .npz of booleans is read
        x = x.astype(np.uint8)
    if x.ndim == 1:
        x = x[None, :]
    elif x.ndim > 2:  # images (N, H, W[, C]): flattened per row, as training flattens them
        x = x.reshape(x.shape[0], -1)
    if x.ndim == 2 and x.shape[0] == 0:
        raise ValueError(f"DATA {path!r} has no rows; expected at least one row of features")
    if (x.ndim != 2 or not np.issubdtype(x.dtype, np.number)
            or np.issubdtype(x.dtype, np.complexfloating)):
        raise ValueError(f"DATA {path!r}: expected a 2-D array of real numbers, got shape "
                         f"{x.shape} {x.dtype}")
    return x, labels


def _refuse_missing_cells(p: Path, x: np.ndarray, header: bool, path: str,
                          dropped: int | None = None) -> None:
    """ValueError naming the first cell of the CSV ``p`` that holds no value (a short row, or
    ``1,,3``): pandas reads it as NaN, which was refused as 'contains NaN or infinity' though
    the file holds none. A NaN written as such (``nan``) is left to the finite-values check."""
    nan = np.isnan(x)
    if not nan.any():
        return
    row, col = (int(i) for i in np.argwhere(nan)[0])
    if dropped is not None and col >= dropped:  # the file's column, the labels' counted
        col += 1
    found = csv_row(p, row, header)
    cells = found[0] if found is not None else []
    if col < len(cells) and cells[col].strip():
        return
    width = x.shape[1] + (dropped is not None)
    what = (f"has {len(cells)} value{'s' if len(cells) != 1 else ''} but the file has "
            f"{width} columns" if col >= len(cells) else f"has an empty cell in column "
            f"{col}")
    raise ValueError(f"DATA {path!r}: row {row} {what}; expected a number in every cell")


def _narrowed(x: np.ndarray, dtype: Any) -> bool:
    """Whether casting ``x`` to ``dtype`` changes a value (float64 inputs to a float32
    network: 1e7 + 0.3 becomes 1e7)."""
    if np.dtype(x.dtype).kind not in "iuf" or np.can_cast(x.dtype, dtype, "safe"):
        return False
    with np.errstate(over="ignore", invalid="ignore"):
        return not np.array_equal(x.astype(dtype).astype(x.dtype), x)


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


def predict_saved(model: Path, x: np.ndarray,
                  source: str = "DATA") -> tuple[np.ndarray, np.ndarray | None]:
    """(raw outputs, predicted classes or None) of the saved network on ``x`` (named
    ``source`` in errors: a wrong feature count, NaN, infinity or values too large for the
    network's dtype)."""
    from .persist import load, load_meta

    net, meta = load(model), load_meta(model)
    n_in = net.dense_layers()[0].W.value.shape[0]
    if x.shape[1] != n_in:
        hint = (" (one column too many: if it holds the labels, drop it)" if x.shape[1] == n_in + 1
                else "")
        raise ValueError(f"{source} has {x.shape[1]} features per row; the network expects "
                         f"{n_in}{hint}")
    dtype = net.parameters()[0].value.dtype
    mean, std = meta.get("input_mean"), meta.get("input_std")
    _check_standardization(model, mean, std, n_in)
    if mean is not None and _narrowed(x, dtype) and np.dtype(mean.dtype).itemsize > np.dtype(
            dtype).itemsize:  # as in training: standardized in float64, then cast (a feature
        # 1e7 + N(0, 1) keeps its spread; 1e39 fits float32 once standardized)
        x64 = finite_features(x, np.float64, source)
        x = finite_features((x64 - mean) / std, dtype, f"{source} (standardized)")
    else:
        x = finite_features(x, dtype, source)  # NaN, inf or too large for dtype: row and column
        if mean is not None:
            x = ((x - mean.astype(dtype)) / std.astype(dtype)).astype(dtype, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):  # reported below
        out = net.predict(x)
    if not np.isfinite(out).all():  # the inputs are finite: the weights or an overflow
        row = int(np.argwhere(~np.isfinite(out))[0][0])
        bad = [p.name for p in net.parameters() if not np.isfinite(p.value).all()]
        why = (f"its parameters {', '.join(bad[:3])} hold NaN or infinity (a diverged "
               "network?)" if bad else f"the values overflow {np.dtype(dtype).name}")
        raise ValueError(f"{model}: the network's outputs for {source} are not finite (first "
                         f"at row {row}): {why}")
    loss = meta.get("loss")
    classes = None
    if loss == "cross_entropy" or (out.shape[1] > 1 and (
            loss is None or meta.get("one_hot_targets") is True)):
        classes = np.argmax(out, axis=1)
    elif loss == "binary_cross_entropy":
        classes = (out[:, 0] > 0).astype(np.int64)
    return out, classes
