"""Per-feature standardization with training statistics (LeCun et al. 1998, "Efficient BackProp").

``z = (x - mean_train) / std_train``; features that are constant on the training set get
``std = 1`` (and their exact value as the mean) so they map to 0 instead of dividing by zero.
"""

from __future__ import annotations

import numpy as np

from depthlab.backend import xp


def fit_standardizer(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of ``x_train`` (population std, computed in float64).

    Returns ``(mean, std)`` in ``x_train``'s float dtype (float64 for integer or boolean
    features, such as uint8 pixels: cast to theirs, a mean of 2.33 was 2); ``std`` is 1 where
    the feature is constant, or constant up to the rounding of its mean: ``std <= n eps
    |mean|`` (``eps`` of float64, the bound scikit-learn uses), whatever the feature's scale
    (a feature of about 1e-13 keeps its spread; an absolute 1e-12 erased it). A column whose
    squares overflow or underflow float64 (``|x|`` above about 1e150 or below about 1e-150)
    gets ``mean = s mean(x / s)`` and ``std = s std(x / s)`` with ``s = max |x|``.
    """
    x = xp.asarray(x_train)
    if x.dtype.kind in "biu":  # exact in float64 (integers up to 2**53)
        x = x.astype(np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"fit_standardizer needs a non-empty 2-D array, got shape {x.shape}")
    _check_finite_numbers(x, "fit_standardizer's x_train")
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):  # such columns: below
        mean = x.mean(axis=0, dtype=np.float64)
        std = x.std(axis=0, dtype=np.float64)
    constant = x.max(axis=0) == x.min(axis=0)
    scaled = ~(np.isfinite(mean) & np.isfinite(std)) | ((std < 1e-150) & ~constant)
    if scaled.any():  # |x| ~ 1e200: the std was inf and the feature became 0 (~ 1e-170: 0)
        cols = np.asarray(x[:, scaled], dtype=np.float64)
        s = np.abs(cols).max(axis=0)
        mean[scaled] = (cols / s).mean(axis=0) * s
        std[scaled] = (cols / s).std(axis=0) * s
    mean[constant] = x[0, constant]
    std[constant] = 1.0
    std[std <= x.shape[0] * np.finfo(np.float64).eps * np.abs(mean)] = 1.0  # rounding noise
    std[std == 0] = 1.0  # a spread below float64's smallest number
    out = std.astype(x.dtype)
    out[out == 0] = 1.0  # a spread below the dtype's smallest number
    return mean.astype(x.dtype), out


def _check_finite_numbers(x: np.ndarray, what: str) -> None:
    """Refuse features that are not real numbers (text, objects, complex: NumPy's "the
    resolved dtypes are not compatible with add.reduce") or hold NaN/inf (a NaN mean and
    std were returned, and every standardized value became NaN), naming the first such
    entry's row and column."""
    from depthlab.training.data_checks import first_nonfinite, not_a_number

    if x.dtype.kind not in "biuf":
        raise TypeError(f"{what} of dtype {x.dtype} is not accepted{not_a_number(x)}; "
                        "accepted: real numbers")
    bad = first_nonfinite(x) if x.dtype.kind == "f" else None
    if bad is not None:
        raise ValueError(f"{what} contains NaN or infinity (first at row {bad[0]}, column "
                         f"{bad[1]}: {float(x[bad])}); accepted: finite numbers")


def apply_standardizer(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Return ``(x - mean) / std`` as a new array in ``x``'s float dtype (float64 for integer
    or boolean ``x``: NumPy refused to divide into theirs); a column where ``x - mean``
    overflows (``x`` = 1.7e308 with a mean of -1e308) gets ``x / std - mean / std``."""
    x = x if isinstance(x, np.ndarray) else np.asarray(x)
    if x.dtype.kind not in "biuf" or x.ndim == 0:
        raise TypeError(f"apply_standardizer: x of dtype {x.dtype} and shape {x.shape} is not "
                        "accepted; accepted: an array of real numbers (n, d)")
    mean, std = np.asarray(mean), np.asarray(std)
    for label, v in (("mean", mean), ("std", std)):
        # another length was NumPy's broadcast error, std 0 or NaN all-NaN output, None an
        # AttributeError: the statistics of fit_standardizer(x_train) are expected
        if v.dtype.kind not in "biuf" or v.shape != (x.shape[-1],) or not np.isfinite(v).all():
            raise ValueError(f"apply_standardizer: {label} of shape {v.shape} ({v!r:.40}) is "
                             f"not accepted; expected {x.shape[-1]} finite numbers, one per "
                             "feature (fit_standardizer(x_train))")
    if not (std > 0).all():
        raise ValueError(f"apply_standardizer: std holds {float(std[~(std > 0)][0])} (feature "
                         f"{int(np.argmin(std > 0))}); expected numbers > 0")
    if x.dtype.kind in "biu":
        x = np.asarray(x, dtype=np.float64)
    m, s = mean.astype(x.dtype, copy=False), std.astype(x.dtype, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):  # such columns: below
        out = xp.subtract(x, m)
        xp.divide(out, s, out=out)
    from depthlab.training.data_checks import all_finite  # block by block: no n x d mask

    if out.ndim == 2 and out.dtype.kind == "f" and not all_finite(out) and (
            all_finite(x) and np.isfinite(m).all() and np.isfinite(s).all()):
        bad = ~np.isfinite(out).all(axis=0)
        out[:, bad] = x[:, bad] / s[bad] - m[bad] / s[bad]
    return out


def target_moments(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column float64 mean and population std of regression targets ``y`` (n, k) or
    (n,) (columns: ``y`` reshaped to (n, -1)); a constant column gets std 1. The statistics
    that standardize targets as ``(y - mean) / std``: the doctor's ``standardize_targets``
    and ``[data] standardize_targets`` of a run."""
    cols = np.asarray(y, dtype=np.float64)
    cols = cols.reshape(cols.shape[0], -1)
    mean, std = cols.mean(axis=0), cols.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)
