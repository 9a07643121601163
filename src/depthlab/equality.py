"""Value equality for result objects that hold arrays and tables.

A dataclass's generated ``__eq__`` compares its fields as one tuple, which asks a NumPy array
or a pandas DataFrame for its truth value: ``ds1 == ds2`` raised "The truth value of an array
with more than one element is ambiguous". :func:`same` is the one rule instead, recursively:

* arrays: same shape and dtype kind, equal entries (NaN equal to NaN);
* DataFrames/Series: ``.equals`` (same index, columns, dtypes and values, NaN equal to NaN);
* dicts: same keys, values the same; lists/tuples: same length, items the same;
* floats: ``a == b`` or both NaN; anything else: ``a == b``.

:func:`value_eq` is that rule over every dataclass field (``skip``: field names left out), for
use as a dataclass's ``__eq__``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["same", "value_eq"]


def same(a: Any, b: Any) -> bool:
    """``a`` and ``b`` hold the same values (see the module docstring)."""
    if a is b:
        return True
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)) or a.shape != b.shape:
            return False
        nan = a.dtype.kind in "fc" and b.dtype.kind in "fc"
        return bool(np.array_equal(a, b, equal_nan=nan))
    if isinstance(a, pd.DataFrame | pd.Series) or isinstance(b, pd.DataFrame | pd.Series):
        return type(a) is type(b) and a.equals(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return a == b
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def value_eq(*skip: str) -> Callable[[Any, object], bool]:
    """An ``__eq__`` comparing every field but ``skip`` with :func:`same` (objects of the same
    class only; NotImplemented otherwise)."""
    def __eq__(self: Any, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(same(getattr(self, f.name), getattr(other, f.name))
                   for f in dataclasses.fields(self) if f.compare and f.name not in skip)
    return __eq__
