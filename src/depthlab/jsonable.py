"""``jsonable(value)``: a copy of ``value`` that strict JSON can hold (records, claims, CLI
output, playground messages)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["jsonable"]


def jsonable(value: Any) -> Any:
    """``value`` with dict keys as strings, tuples and arrays as lists, NumPy scalars as Python
    numbers, non-finite floats as None (strict JSON has no NaN/Infinity) and any other object
    as its ``str``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray) and value.ndim > 0:
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic | np.ndarray):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)
