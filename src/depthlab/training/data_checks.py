"""Validation of training data before anything starts."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import Array, data_array
from ..memory import CHECK_FROM_BYTES, check_fits


def check_xy(x, y, *, n_inputs: int, dtype, what: str = "training") -> tuple[Array, Array]:
    """Return ``(x, y)`` as arrays (x in the network's dtype) or raise a clear error naming
    the argument, its value and what is accepted."""
    for name, v in (("x", x), ("y", y)):
        if isinstance(v, str | bytes | dict) or v is None or _ndim(v) == 0:
            shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
            raise TypeError(f"{what} {name}={shown} is not accepted; accepted: an array of "
                            + ("shape (n_samples, n_inputs)" if name == "x" else
                               "n_samples labels or targets"))
    x_in, x = x, data_array(x, f"{what} x")
    y = data_array(y, f"{what} y")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise TypeError(f"{what} x of dtype {x.dtype} is not accepted{not_a_number(x_in)}; "
                        "accepted: real numbers")
    if x.size == 0 or x.shape[0] == 0:
        raise ValueError(f"{what} data is empty: x has shape {x.shape}")
    if x.ndim != 2:
        raise ValueError(f"{what} x must be 2-D (samples, features), got shape {x.shape}"
                         + reshape_hint(x.shape, n_inputs))
    if x.shape[1] != n_inputs:
        raise ValueError(f"{what} x has {x.shape[1]} features; the network expects {n_inputs}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{what} x has {x.shape[0]} rows but y has {y.shape[0]}"
                         + transposed_hint(x.shape[0], y.shape))
    x = finite_features(x, dtype, f"{what} x")
    bad = first_nonfinite(y) if np.issubdtype(y.dtype, np.floating) else None
    if bad is not None:
        where = f"row {bad[0]}" + (f", column {bad[1]}" if len(bad) == 2 else "")
        raise ValueError(f"{what} y contains NaN or infinity (first at {where}); accepted: "
                         "finite numbers")
    return x, y


def transposed_hint(n: int, y_shape: tuple[int, ...]) -> str:
    """The way out when ``y`` holds the ``n`` labels or targets along its columns: a row
    ``(1, n)`` (``np.matrix(y)``, ``y[None, :]``) or a transposed ``(k, n)`` table."""
    if len(y_shape) == 2 and y_shape[1] == n and y_shape[0] != n:
        fix = "y.ravel() gives the labels" if y_shape[0] == 1 else "y.T gives one row per sample"
        return f" (y has shape {y_shape}: its {n} columns are the samples; {fix})"
    return ""


def _ndim(v: Any) -> int:
    """``np.ndim(v)``; 1 for nested lists NumPy cannot make an array of (rows of different
    lengths: :func:`~depthlab.backend.data_array` names them)."""
    try:
        return np.ndim(v)
    except ValueError:
        return 1


def not_a_number(data: Any) -> str:
    """Where user data that NumPy reads as objects or text holds its first entry that is not
    a real number: `` (column 'city' holds 'Paris')`` for a pandas DataFrame's first column of
    text (or other objects), `` (row 1, column 1 holds None)`` for an array, the cast for
    a boolean array, else ""."""
    if hasattr(data, "dtypes") and hasattr(data, "columns"):  # a DataFrame: name the column
        for col in data.columns:
            values = data_array(data[col])  # nullable Int64/Float64 columns are numbers
            if values.dtype.kind not in "biuf":
                shown = next((v for v in values if not _is_real(v)), values[0] if len(values)
                             else None)
                return f" (column {col!r} holds {_short(shown)})"
        return ""
    if callable(getattr(data, "toarray", None)) and type(data).__module__.startswith("scipy"):
        return " (a scipy.sparse matrix: x.toarray() gives the dense array)"
    try:
        arr = np.asarray(data)
    except Exception:  # noqa: BLE001 -- a message helper: no detail rather than a new error
        return ""
    if arr.dtype.kind == "b":  # binarized features (x > 0.5): say how to take them
        return " (booleans: x.astype(np.float32) gives 0/1 features)"
    if arr.dtype.kind not in "OUS" or arr.size == 0:
        return ""
    for flat, value in enumerate(arr.flat):  # the first million entries: an error path
        if flat >= 1_000_000:
            break
        if not _is_real(value):
            index = np.unravel_index(flat, arr.shape)
            where = (f"row {index[0]}, column {index[1]}" if len(index) == 2
                     else f"index {tuple(int(i) for i in index)}")
            return f" ({where} holds {_short(value)})"
    return " (numbers held as Python objects: np.asarray(x, dtype=float) converts them)"


def _is_real(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating | np.bool_)


def _short(v: Any) -> str:
    v = v.item() if isinstance(v, np.generic) else v
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def reshape_hint(shape: tuple[int, ...], n_inputs: int) -> str:
    """For a 1-D input of ``shape``: the reshape that makes it (rows, ``n_inputs``) -- one
    feature per row, ``x.reshape(-1, 1)``, or one example, ``x.reshape(1, -1)`` -- else ""."""
    if len(shape) != 1:
        return ""
    if n_inputs == 1:
        return " (one feature per row: x.reshape(-1, 1))"
    if shape[0] == n_inputs:
        return " (one example: x.reshape(1, -1))"
    return ""


_CHUNK = 1 << 22
"""Entries checked at once by :func:`all_finite` (a 4 MiB mask)."""


def all_finite(a: Array) -> bool:
    """``np.isfinite(a).all()`` a block of rows at a time: the mask of a whole array (one byte
    per entry) was allocated at once, 24 GB for 6e9 x 4 features (a broadcast or memory-mapped
    ``x``), beyond the memory of the host, where the data themselves take none or are read
    from disk."""
    return first_nonfinite(a) is None


def first_nonfinite(a: Array) -> tuple[int, ...] | None:
    """The index of ``a``'s first NaN or infinite entry (None: all finite), found a block of
    rows at a time (see :func:`all_finite`)."""
    a = np.asarray(a)
    if a.size <= _CHUNK or a.ndim == 0:
        starts, rows = [0], max(1, a.shape[0] if a.ndim else 1)
    else:
        rows = max(1, _CHUNK // max(1, a.size // a.shape[0]))
        starts = range(0, a.shape[0], rows)
    for i in starts:
        block = a[i:i + rows] if a.ndim else a
        if not np.isfinite(block).all():
            bad = tuple(int(j) for j in np.argwhere(~np.isfinite(block))[0])
            return (bad[0] + i, *bad[1:]) if a.ndim else ()
    return None


def finite_features(x: Array, dtype: Any, what: str) -> Array:
    """``x`` (2-D, real numbers) cast to ``dtype``, or a ValueError naming the first entry
    that is NaN, infinite or too large for ``dtype`` (row and column) and what is accepted."""
    x_in, x = x, data_array(x, what)
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise TypeError(f"{what} of dtype {x.dtype} is not accepted{not_a_number(x_in)}; "
                        "accepted: real numbers")
    if x.dtype != np.dtype(dtype) and x.size * np.dtype(dtype).itemsize >= CHECK_FROM_BYTES:
        check_fits(x.size * np.dtype(dtype).itemsize,
                   f"{what} ({' x '.join(f'{d:,}' for d in x.shape)}) as {np.dtype(dtype).name}")
    with np.errstate(over="ignore", invalid="ignore"):  # reported below
        cast = x.astype(dtype, copy=False)
    bad = first_nonfinite(cast)
    if bad is not None:
        where = f"row {bad[0]}, column {bad[1]}" if len(bad) == 2 else f"index {bad}"
        if np.isfinite(x[bad]):
            raise ValueError(
                f"{what} value {float(x[bad]):g} ({where}) does not fit in "
                f"{np.dtype(dtype).name}; accepted: |x| <= {np.finfo(dtype).max:.3g}"
            )
        raise ValueError(f"{what} contains NaN or infinity (first at {where}); accepted: "
                         "finite numbers")
    return cast
