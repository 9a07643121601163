"""Array backend: the one place that names the array library and the random generator.

Layers import ``xp`` and helpers from here, never ``numpy`` directly for array
creation, so that a GPU array library with NumPy's interface (CuPy) can stand in later.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special as _special

xp = np
"""The array module (NumPy)."""

Array = np.ndarray

_DTYPES = {"float32": np.float32, "float64": np.float64}


def resolve_dtype(dtype: Any = "float32") -> np.dtype:
    """Return the NumPy dtype for ``"float32"``/``"float64"`` (or a dtype object)."""
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}")
        return np.dtype(_DTYPES[dtype])
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"unknown dtype {dtype!r}; expected 'float32' or 'float64'") from exc
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"unsupported dtype {dt}; expected 'float32' or 'float64'")
    return dt


def rng(seed: int | np.random.Generator | None = None) -> np.random.Generator:
    """A ``numpy.random.Generator`` from a seed (never the global RNG). ``seed``: an integer
    >= 0, None (fresh entropy), a ``SeedSequence`` or a ``Generator`` (returned as is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and not isinstance(seed, np.random.SeedSequence):
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise TypeError(f"seed={seed!r} is not accepted; accepted: an integer >= 0, None "
                            "or a numpy Generator")
        if seed < 0:
            raise ValueError(f"seed={seed!r} is not accepted; accepted: an integer >= 0, "
                             "None or a numpy Generator")
    return np.random.default_rng(seed)


BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")
"""NumPy's bit generators, by the name their ``state`` dict gives as ``bit_generator``."""


def rng_from_state(state: Any, like: np.random.Generator | None = None) -> np.random.Generator:
    """A generator whose bit generator continues from ``state`` (a ``bit_generator.state``
    dict of one of :data:`BIT_GENERATORS`, arrays as lists or arrays): ``like`` itself, its
    bit generator set in place, when it is of that kind, else a new generator of that kind.
    A state of no known kind is a ValueError naming it."""
    kind = state.get("bit_generator") if isinstance(state, dict) else None
    if kind not in BIT_GENERATORS:
        raise ValueError(f"bit_generator {kind!r:.40}")
    if like is not None and type(like.bit_generator).__name__ == kind:
        like.bit_generator.state = state
        return like
    gen = getattr(np.random, kind)()
    gen.state = state
    return np.random.Generator(gen)


def zeros(shape, dtype) -> Array:
    return xp.zeros(shape, dtype=dtype)


def ones(shape, dtype) -> Array:
    return xp.ones(shape, dtype=dtype)


def empty(shape, dtype) -> Array:
    return xp.empty(shape, dtype=dtype)


def full(shape, value, dtype) -> Array:
    return xp.full(shape, value, dtype=dtype)


def asarray(x, dtype=None) -> Array:
    return xp.asarray(x, dtype=dtype)


def _torch_values(x: Any) -> Any:
    """A torch tensor's values as a NumPy array (torch is not imported here: the tensor's own
    methods do the work): detached (a tensor that requires grad refused ``numpy()``), on the
    host (a GPU tensor), and bfloat16/float8 as float32, which holds each of their values
    exactly (NumPy has no such dtype: "Got unsupported ScalarType BFloat16"). Anything else
    is returned unchanged."""
    if isinstance(x, np.ndarray):  # the training loop's every loss call: no module lookup
        return x
    if type(x).__module__.partition(".")[0] != "torch" or not callable(getattr(x, "detach", None)):
        return x
    t = x.detach().cpu()
    if getattr(t, "is_floating_point", lambda: False)() and t.element_size() < 4 and str(
            t.dtype) != "torch.float16":
        t = t.float()
    return t.numpy()


def data_array(x: Any, what: str = "data") -> Array:
    """``xp.asarray(x)`` of user data; a pandas DataFrame or Series of nullable numbers
    (``Float64``, ``Int64``, which NumPy reads as objects) becomes float64 with ``pd.NA`` as
    NaN, so the checks name it as a number that is not finite, not as an object array; a
    torch tensor becomes its values (:func:`_torch_values`: detached, on the host); a NumPy
    masked array with masked entries has NaN there (float64 or wider). Nested lists whose
    rows differ in length (NumPy: "setting an array element with a sequence ...
    inhomogeneous shape") are a ValueError naming ``what`` and the first row that differs
    (:func:`ragged_where`)."""
    x = _torch_values(x)
    if isinstance(x, np.ma.MaskedArray) and np.ma.getmaskarray(x).any():
        # a masked entry is a missing value, as pd.NA: NaN, which the checks name (asarray
        # dropped the mask and trained on the values under it)
        return x.astype(np.result_type(x.dtype, np.float64)).filled(np.nan)
    try:
        arr = xp.asarray(x)
    except ValueError as exc:
        if "inhomogeneous" not in str(exc) and "with a sequence" not in str(exc):
            raise
        raise ValueError(f"{what} has rows of different lengths ({ragged_where(x)}); "
                         "accepted: an array whose rows all have one length (n_samples, "
                         "n_features)") from None
    if arr.dtype == object and hasattr(x, "to_numpy"):
        try:
            return xp.asarray(x.to_numpy(dtype=np.float64, na_value=np.nan))
        except (TypeError, ValueError):  # strings and the like stay objects (refused)
            return arr
    return arr


def ragged_where(x: Any, limit: int = 1_000_000) -> str:
    """Where nested sequences ``x`` first differ in length, as NumPy reads them: "row 2 has
    2 values, row 0 has 4" (rows of ``x``), "row 1, column 3 holds a sequence of 2 values,
    row 0, column 0 a single value" (entries of its rows); "" when none is found among the
    first ``limit`` entries (an error path: never an unbounded walk)."""

    def length(v: Any) -> int | None:
        if isinstance(v, str | bytes) or isinstance(v, np.ndarray) and v.ndim == 0:
            return None
        try:
            return len(v)
        except TypeError:  # a number, or an object without a length
            return None

    def said(n: int | None) -> str:
        return "a single value" if n is None else f"{n} value{'s' if n != 1 else ''}"

    def held(n: int | None) -> str:
        return "a single value" if n is None else f"a sequence of {said(n)}"

    try:
        rows = list(x)
    except TypeError:
        return ""
    if not rows:
        return ""
    first = length(rows[0])
    for i, row in enumerate(rows[:limit]):
        if length(row) != first:
            return f"row {i} has {said(length(row))}, row 0 has {said(first)}"
    if first is None:
        return ""
    seen, base = 0, None
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            n = length(v)
            if base is None:
                base = (n,)
            elif n != base[0]:
                return (f"row {i}, column {j} holds {held(n)}, row 0, column 0 "
                        f"{held(base[0])}")
            seen += 1
            if seen >= limit:
                return ""
    return ""


def to_numpy(x) -> np.ndarray:
    """Bring an array back to host NumPy (identity for NumPy)."""
    return np.asarray(x)


# Special functions (stable, vectorised ufuncs).
expit = _special.expit  # sigma(x) = 1 / (1 + e^-x), no overflow
log_expit = _special.log_expit  # log sigma(x), stable
erf = _special.erf
ndtr = _special.ndtr  # standard normal CDF


# -- small helpers ---------------------------------------------------------------------------
_ONES: dict[np.dtype, Array] = {}


def ones_vector(n: int, dtype: Any) -> Array:
    """A read-only vector of ``n`` ones (one shared buffer per dtype, grown on demand), e.g.
    for column sums as a matrix-vector product: ``ones_vector(B) @ G`` = ``G.sum(axis=0)``.

    (BLAS calls stay within NumPy's own BLAS: SciPy ships a second OpenBLAS whose idle
    threads spin and steal the cores from NumPy's right after each call.)"""
    dt = np.dtype(dtype)
    buf = _ONES.get(dt)
    if buf is None or buf.size < n:
        buf = xp.ones(max(n, 1024), dtype=dt)
        buf.flags.writeable = False
        _ONES[dt] = buf
    return buf[:n]
