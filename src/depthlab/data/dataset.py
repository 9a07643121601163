"""The ``Dataset`` container, input validation, and the seeded subsample/split pipeline.

Loaders return a :class:`RawData` (arrays as stored, possibly uint8 with a scale factor, and
optionally an official test or validation part); :func:`build_dataset` validates it, subsamples
``n`` rows, shuffles, splits and casts to the requested float dtype.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from depthlab.backend import resolve_dtype, xp
from depthlab.data.standardize import apply_standardizer, fit_standardizer
from depthlab.equality import value_eq

_SPLITS = ("train", "val", "test")
TARGETS = ("classes", "values")
"""What a data set's labels are: integer classes, or real regression targets (values)."""


def _cast(x: np.ndarray, dt: np.dtype, what: str) -> np.ndarray:
    """``x.astype(dt)``, or a ValueError naming the first finite value that does not fit in
    ``dt`` (its row and column): a test row of 3e38 standardized past float32's 3.4e38 became
    inf, and the run failed after training with "x contains NaN or infinity" as an internal
    error."""
    from depthlab.training.data_checks import first_nonfinite

    with np.errstate(over="ignore", invalid="ignore"):
        out = x.astype(dt)
    if out.dtype.kind == "f" and np.dtype(x.dtype).kind == "f" and (
            np.dtype(x.dtype).itemsize > out.dtype.itemsize):  # narrowed: checked by blocks
        bad = first_nonfinite(out)
        if bad is not None and np.isfinite(x[bad]):
            row, *col = bad
            where = f"row {row} of the split" + (f", column {col[0]}" if col else "")
            raise ValueError(f"{what} holds {float(x[bad]):g} ({where}), which does "
                             f"not fit in {dt.name}; accepted: |x| <= {np.finfo(dt).max:.3g} "
                             "(or model.dtype = \"float64\")")
    return out


@dataclass(repr=False)
class Dataset:
    """Train/validation/test arrays: ``x_*`` float (n, d) flattened, ``y_*`` int64 labels (n,);
    for a regression data set (``info["targets"] == "values"``, ``load_dataset(...,
    targets="values")``) ``y_*`` are float64 targets (n, k) and ``n_classes`` is ``k``, the
    number of target columns."""

    __eq__ = value_eq()  # arrays/tables compared by value (the generated one raised)

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        d = None
        for split in _SPLITS:
            x = getattr(self, f"x_{split}")
            y = getattr(self, f"y_{split}")
            if x.ndim != 2:
                raise ValueError(f"{self.name}: x_{split} must be 2-D (n, d), got shape {x.shape}")
            if y.ndim not in (1, 2) or (y.ndim == 2 and y.dtype.kind != "f") or \
                    y.shape[0] != x.shape[0]:
                raise ValueError(
                    f"{self.name}: y_{split} shape {y.shape} does not match x_{split} {x.shape}"
                )
            if d is None:
                d = x.shape[1]
            elif x.shape[1] != d:
                raise ValueError(f"{self.name}: x_{split} has {x.shape[1]} features, expected {d}")
        if self.x_train.shape[0] == 0:
            raise ValueError(f"{self.name}: the training split is empty")

    @property
    def n_features(self) -> int:
        """Number of input features ``d``."""
        return int(self.x_train.shape[1])

    @property
    def sizes(self) -> dict[str, int]:
        """Number of samples per split."""
        return {s: int(getattr(self, f"y_{s}").shape[0]) for s in _SPLITS}

    @property
    def dtype(self) -> np.dtype:
        return self.x_train.dtype

    def standardized(self) -> Dataset:
        """New Dataset with ``x <- (x - mean_train) / std_train`` on every split.

        Statistics come from the training split only; constant features use std 1.
        ``info['standardization']`` records ``mean`` and ``std``.
        """
        mean, std = fit_standardizer(self.x_train)
        info = dict(self.info)
        info["standardized"] = True
        info["standardization"] = {"mean": mean, "std": std, "fitted_on": "train"}
        return replace(
            self,
            x_train=apply_standardizer(self.x_train, mean, std),
            x_val=apply_standardizer(self.x_val, mean, std),
            x_test=apply_standardizer(self.x_test, mean, std),
            info=info,
        )

    def astype(self, dtype: Any) -> Dataset:
        """New Dataset with every split's ``x`` (and a standardization's ``mean``/``std``) cast to
        ``dtype``; labels unchanged. Statistics narrowed by the cast (float64 to float32) are
        kept as ``mean64``/``std64`` too: ``depthlab predict`` standardizes with them (a mean
        of 1e7 + 0.3 is 1e7 in float32; a feature of 1e39 has an infinite float32 mean)."""
        dt = resolve_dtype(dtype)
        info = dict(self.info)
        info["dtype"] = str(dt)
        if "standardization" in info:
            st = dict(info["standardization"])
            if np.dtype(st["mean"].dtype).itemsize > dt.itemsize:
                st.setdefault("mean64", st["mean"].astype(np.float64))
                st.setdefault("std64", st["std"].astype(np.float64))
            with np.errstate(over="ignore"):  # 1e39 in float32: inf (mean64 keeps it)
                st["mean"], st["std"] = st["mean"].astype(dt), st["std"].astype(dt)
            info["standardization"] = st
        said = (", standardized with the training split's mean and std," if "standardization"
                in info else "")
        return replace(
            self,
            x_train=_cast(self.x_train, dt, f"the training split's x{said}"),
            x_val=_cast(self.x_val, dt, f"the validation split's x{said}"),
            x_test=_cast(self.x_test, dt, f"the test split's x{said}"),
            info=info,
        )

    def _outputs(self) -> str:
        """``n_classes=K``, or ``n_targets=K`` for a regression data set (real targets)."""
        if self.info.get("targets") == "values":
            return f"n_targets={self.n_classes}"
        return f"n_classes={self.n_classes}"

    def __repr__(self) -> str:
        s = self.sizes
        return (
            f"Dataset({self.name!r}, train={s['train']}, val={s['val']}, test={s['test']}, "
            f"n_features={self.n_features}, {self._outputs()}, dtype={self.dtype})"
        )


@dataclass
class RawData:
    """Arrays as a loader produced them, before subsampling and splitting.

    ``x`` may be any real dtype (e.g. uint8 pixels); it is multiplied by ``scale`` after the cast.
    ``x_test``/``x_val`` are official held-out parts (used instead of random splits).
    """

    __eq__ = value_eq()  # arrays/tables compared by value (the generated one raised)

    x: np.ndarray
    y: np.ndarray
    n_classes: int | None = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    scale: float = 1.0
    info: dict = field(default_factory=dict)
    sized: bool = False  # True when the loader already produced exactly ``n`` samples


def check_xy(x: Any, y: Any, source: str, part: str = "", *, values: bool = False
             ) -> tuple[np.ndarray, np.ndarray]:
    """Validate one (x, y) pair; flatten x to (n, d); labels to int64 (``values``: real
    regression targets to float64 (n, k), :func:`_as_targets`).

    Raises ValueError (naming ``source``) on: empty data, non-numeric or non-finite features,
    labels that are not non-negative integers, or mismatched lengths.
    """
    where = f"{source}{' (' + part + ')' if part else ''}"
    x = np.asarray(x)
    y = np.asarray(y)
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{where}: features must be numeric, got dtype {x.dtype}")
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    if x.ndim < 2:
        raise ValueError(f"{where}: features must have a sample axis, got shape {x.shape}")
    if x.shape[0] == 0 or x.size == 0:
        raise ValueError(f"{where}: empty data set (features of shape {x.shape})")
    if x.ndim > 2:
        x = x.reshape(x.shape[0], -1)
    if values:
        y = _as_targets(y, where)
    elif y.ndim != 1:
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        elif y.ndim == 2 and y.shape[1] > 1 and _one_hot(y):
            y = y.argmax(axis=1)  # one-hot rows: the class of each row
        else:
            why = not_one_hot(y) if y.ndim == 2 else None
            raise ValueError(f"{where}: labels must be 1-D, got shape {y.shape}; accepted: "
                             f"integer labels (n,) or one-hot rows (n, classes)"
                             f"{': ' + why if why else ''}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(
            f"{where}: mismatched lengths: {x.shape[0]} feature rows but {y.shape[0]} labels"
        )
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        finite = np.isfinite(x)
        bad = int(np.size(x) - np.count_nonzero(finite))
        row, col = (int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(f"{where}: features contain {bad} NaN/inf value(s), the first "
                         f"{float(x[row, col])} at row {row}, column {col}; accepted: finite "
                         "numbers")
    if not values:
        y = _as_int_labels(y, where)
    return x, y


def _as_targets(y: np.ndarray, where: str) -> np.ndarray:
    """Regression targets as float64 (n, k): a 1-D ``y`` is one column, more dimensions are
    flattened per row; numbers only, every one finite (the first other value named)."""
    if y.dtype.kind not in "biuf":
        raise ValueError(f"{where}: regression targets must be numbers, got dtype {y.dtype}")
    if y.ndim == 0:
        raise ValueError(f"{where}: regression targets must have a sample axis, got a scalar")
    y = y.reshape(len(y), -1).astype(np.float64)
    finite = np.isfinite(y)
    if not finite.all():
        row, col = (int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(f"{where}: targets contain {int(y.size - finite.sum())} NaN/inf "
                         f"value(s), the first {float(y[row, col])} at row {row}, target column "
                         f"{col}; accepted: finite numbers")
    return y


def one_hot_rows(y: Any) -> np.ndarray:
    """Which rows of the 2-D labels ``y`` are one-hot: every entry 0 or 1, exactly one 1
    (``y[i] in {0, 1}^k and sum(y[i]) == 1``); such a row's class is ``argmax(y[i])``, the
    position of its 1. The one rule for training files (.npz ``y``, a CSV's list of label
    columns) and for ``depthlab predict``'s scoring; all False for non-numbers."""
    y = np.asarray(y)
    if y.dtype.kind not in "biuf" or y.ndim != 2:
        return np.zeros(len(y) if y.ndim else 0, dtype=bool)
    return ((y == 0) | (y == 1)).all(axis=1) & (np.count_nonzero(y, axis=1) == 1)


def not_one_hot(y: Any) -> str | None:
    """Why the 2-D labels ``y`` are not one-hot rows (:func:`one_hot_rows`): ``row 7 (from 0)
    is not one-hot: [1, 1, 0]`` for the first such row, None when every row is one-hot."""
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        return f"labels of dtype {y.dtype} are not one-hot rows of 0s and 1s"
    ok = one_hot_rows(y)
    if ok.all():
        return None
    row = int(np.argmin(ok))
    cells = ", ".join(f"{v:g}" if isinstance(v, float) else str(v)
                      for v in y[row, :8].tolist())
    more = ", ..." if y.shape[1] > 8 else ""
    return (f"row {row} (from 0) is not one-hot: [{cells}{more}] (one 1 among 0s expected, "
            f"{int((~ok).sum())} of {len(ok)} rows are not)")


def _one_hot(y: np.ndarray) -> bool:
    """Whether the 2-D labels ``y`` are one-hot rows: every entry 0 or 1, one 1 per row."""
    return y.size > 0 and bool(one_hot_rows(y).all())


LABEL_LIMIT = 2**63
"""Labels are stored as int64: a label at or above 2**63 cannot be one (it would wrap)."""


def _as_int_labels(y: np.ndarray, where: str) -> np.ndarray:
    if y.dtype.kind == "b":
        return y.astype(np.int64)
    # the largest label as a Python number: NumPy compares a float16 label with 2**63 in
    # float16, where 2**63 overflows ("overflow encountered in cast" beside a finished run)
    top = (y.max().item() if y.dtype.kind in "uf" and y.size and (
        np.isfinite(y).all() if y.dtype.kind == "f" else True) else None)
    if top is not None and top >= LABEL_LIMIT:
        big = int(top) if y.dtype.kind == "u" else f"{float(top):g}"
        raise ValueError(f"{where}: label {big} is too large; accepted: integers "
                         "0 <= label < 2**63 (one output per class)")
    if y.dtype.kind in "iu":
        out = y.astype(np.int64)
    elif y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.array_equal(y, np.round(y)):
            sample = y[~np.isfinite(y) | (y != np.round(y))][:3]
            raise ValueError(
                f"{where}: labels must be integers, got non-integer values such as "
                f"{sample.tolist()}"
            )
        if y.size and y.min() < 0:  # before the cast: -1e30 became -9223372036854775808
            raise ValueError(f"{where}: labels must be non-negative integers, got "
                             f"{float(y.min()):g}")
        out = y.astype(np.int64)
    elif y.dtype.kind in "US" and y.size:  # class names, as a CSV or a DataFrame holds them
        raise ValueError(f"{where}: labels must be integers, got text such as "
                         f"{str(y.flat[0])!r} (dtype {y.dtype}); accepted: class numbers 0, "
                         "1, ... (for class names give their indices, e.g. np.unique(y, "
                         "return_inverse=True)[1])")
    else:
        raise ValueError(f"{where}: labels must be integers, got dtype {y.dtype}; accepted: "
                         "class numbers 0, 1, ...")
    if out.size and out.min() < 0:
        raise ValueError(f"{where}: labels must be non-negative integers, got {int(out.min())}")
    return out


def check_fits_dtype(x: np.ndarray, dtype: Any, scale: float, source: str,
                     part: str = "") -> None:
    """Refuse features whose magnitude (after ``scale``) exceeds the largest finite value of
    the run's float ``dtype`` (e.g. 1e300 in a float32 run), naming the value and its place."""
    dt = np.dtype(dtype)
    if x.dtype.kind != "f" or np.finfo(x.dtype).max <= np.finfo(dt).max or x.size == 0:
        return
    limit = float(np.finfo(dt).max) / max(abs(float(scale)), float(np.finfo(np.float64).tiny))
    flat = np.abs(x).argmax()
    biggest = float(np.abs(x).flat[flat])
    if biggest > limit:
        row, col = np.unravel_index(flat, x.shape)
        where = f"{source}{' (' + part + ')' if part else ''}"
        raise ValueError(
            f"{where}: feature value {float(x[row, col]):g} (row {int(row)}, column {int(col)}) "
            f"does not fit in {dt.name}; accepted: |x| <= {np.finfo(dt).max:.3g} "
            f"(or model.dtype = \"float64\" / dtype=\"float64\")"
        )


def check_classes(parts: dict[str, tuple[np.ndarray, np.ndarray]], source: str) -> None:
    """Refuse data whose labels take a single value: a classifier needs at least 2 classes;
    so do the training labels (``"pool"``) beside official test/val parts. Classes of an
    official part that the training labels never have get a warning: the network cannot learn
    them (both trained silently)."""
    values = np.unique(np.concatenate([y for _, y in parts.values()]))
    if values.size < 2:
        n = sum(y.shape[0] for _, y in parts.values())
        raise ValueError(
            f"{source}: all {n} labels are {int(values[0])} (a single class); accepted: data "
            "with at least 2 classes"
        )
    if len(parts) < 2 or "pool" not in parts:
        return
    trained = np.unique(parts["pool"][1])
    if trained.size < 2:
        raise ValueError(
            f"{source}: all {parts['pool'][1].shape[0]} training labels are {int(trained[0])} "
            f"(a single class), all parts' classes {_listed(values)}; accepted: training "
            "data with at least 2 classes")
    for key, (_, y) in parts.items():
        unseen = np.setdiff1d(np.unique(y), trained)
        if key != "pool" and unseen.size:
            warnings.warn(
                f"{source}: classes {_listed(unseen)} of the {key} part have no training "
                f"examples (the training labels are {_listed(trained)}), so the "
                "network cannot learn them; check that every part numbers the classes alike",
                UserWarning, stacklevel=2)


def _listed(values: np.ndarray, shown: int = 5) -> str:
    """``"2, 3, 4"``: at most ``shown`` of the class numbers ``values``, then ``", ..."``."""
    head = ", ".join(str(int(v)) for v in values[:shown])
    return head + (", ..." if values.size > shown else "")


def check_fractions(val_fraction: float, test_fraction: float) -> tuple[float, float]:
    """Validate ``0 <= val, test < 1`` and ``val + test < 1``: real numbers (NumPy's too);
    text, None and bools are a TypeError naming them (``val_fraction="0.1"`` was parsed,
    ``None`` was Python's float() error)."""
    for label, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
            raise TypeError(f"{label}={value!r:.40} is not accepted; accepted: a fraction, a "
                            "number in [0, 1)")
    v, t = float(val_fraction), float(test_fraction)
    if not (0.0 <= v < 1.0):
        raise ValueError(f"val_fraction={val_fraction!r} must be in [0, 1)")
    if not (0.0 <= t < 1.0):
        raise ValueError(f"test_fraction={test_fraction!r} must be in [0, 1)")
    if v + t >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction = {v + t} leaves no training data; it must be < 1"
        )
    return v, t


def check_count(name: str, value: Any, minimum: int, accepted: str) -> int:
    """``int(value)`` for a whole number ``>= minimum`` (NumPy's too). Another type (``2.5``,
    ``"30"``, ``True``) is an :class:`~depthlab.validators.ArgumentTypeError` (a TypeError and
    the ValueError it always was) naming it, with the number meant for a whole float (``30.0``:
    did you mean 30?); a smaller number a ValueError. ``accepted``: the words for what is."""
    from depthlab.validators import ArgumentTypeError

    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        hint = ""
        if (isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
                and float(value).is_integer() and value >= minimum):
            hint = f" (did you mean {int(value)}?)"
        raise ArgumentTypeError(f"{name}={value!r:.40} has the wrong type; accepted: a whole "
                                f"number (int), {accepted}{hint}")
    if value < minimum:
        raise ValueError(f"{name}={value!r} is not accepted; accepted: {accepted}")
    return int(value)


def check_n(n: Any) -> int | None:
    """``n`` is None or a positive int (:func:`check_count`)."""
    if n is None:
        return None
    return check_count("n", n, 1, "n >= 1 rows (or None for all of them)")


def _take(x: np.ndarray, y: np.ndarray, idx: np.ndarray, dtype: np.dtype, scale: float):
    xs = x[idx].astype(dtype, copy=False)  # fancy indexing copies: safe to scale in place
    if scale != 1.0:
        inv = 1.0 / scale
        if inv == round(inv):  # e.g. 1/255: divide, so k/255 is correctly rounded
            xp.divide(xs, dtype.type(round(inv)), out=xs)
        else:
            xp.multiply(xs, dtype.type(scale), out=xs)
    return xs, y[idx]


def build_dataset(
    name: str,
    raw: RawData,
    *,
    split_rng: np.random.Generator,
    val_fraction: float,
    test_fraction: float,
    n: int | None,
    dtype: Any = "float32",
    targets: str = "classes",
) -> Dataset:
    """Validate ``raw``, subsample ``n`` rows (seeded), shuffle and split into train/val/test.

    Random split sizes: ``n_test = round(test_fraction * N)``, ``n_val = round(val_fraction * N)``,
    the rest is training data. An official test (or validation) part in ``raw`` replaces the
    random one; ``n`` is then shared between the parts in proportion to their sizes.
    ``targets="values"``: the labels are real regression targets (float64 (n, k), any
    values, split at random as classes are; ``n_classes`` is ``k``).
    """
    if targets not in TARGETS:
        raise ValueError(f"targets={targets!r} is not accepted; accepted: "
                         f"{', '.join(map(repr, TARGETS))}")
    values = targets == "values"
    dt = resolve_dtype(dtype)
    vf, tf = check_fractions(val_fraction, test_fraction)
    n = check_n(n)
    source = str(raw.info.get("path", name))
    parts = _checked_parts(raw, source, dt, values)
    want = _wanted_sizes(name, parts, n, raw.sized)
    out = _split(name, parts, want, split_rng, vf, tf, dt, raw.scale)
    if not values and n is not None and not raw.sized:
        # the rows kept, as the whole data was checked: digits with n = 1 trained a
        # "classifier" on one row of one class (train_acc 1), which a file of one class is not
        check_classes(out, f"{source} (n={n})")
    if values:
        widths = {v[1].shape[1] for v in parts.values()}
        if len(widths) > 1:
            raise ValueError(f"{source}: the parts have {sorted(widths)} target columns; "
                             "expected the same number in each")
        n_classes = widths.pop()
    else:
        n_classes = _n_classes(raw.n_classes or _one_hot_width(raw), parts, out, source)

    info = dict(raw.info)
    info.update(
        name=name,
        n_total=int(sum(v[1].shape[0] for v in out.values())),
        test_split="official" if "test" in parts else "random",
        val_split="official" if "val" in parts else "random",
        val_fraction=vf,
        test_fraction=tf,
        dtype=str(dt),
    )
    if values:
        info["targets"] = "values"
    if raw.scale != 1.0 and np.asarray(raw.x).dtype.kind in "biu":  # e.g. uint8 pixels / 255:
        # predict multiplies integer inputs (the file's raw values) by it, as done here
        info["input_scale"] = float(raw.scale)
    return Dataset(
        name=name,
        x_train=out["train"][0],
        y_train=out["train"][1],
        x_val=out["val"][0],
        y_val=out["val"][1],
        x_test=out["test"][0],
        y_test=out["test"][1],
        n_classes=int(n_classes),
        info=info,
    )


Parts = dict[str, tuple[np.ndarray, np.ndarray]]


def _checked_parts(raw: RawData, source: str, dt: np.dtype, values: bool = False) -> Parts:
    """``{"pool": (x, y)}`` plus the official ``"test"``/``"val"`` parts, each checked
    (shapes, finite values, labels (``values``: real targets), the same features, values that
    fit ``dt``)."""
    x, y = check_xy(raw.x, raw.y, source, "train" if raw.x_test is not None else "",
                    values=values)
    parts: Parts = {"pool": (x, y)}
    if raw.x_test is not None:
        parts["test"] = check_xy(raw.x_test, raw.y_test, source, "test", values=values)
    if raw.x_val is not None:
        parts["val"] = check_xy(raw.x_val, raw.y_val, source, "val", values=values)
    for key, (xp_, _) in parts.items():
        if xp_.shape[1] != x.shape[1]:
            raise ValueError(
                f"{source}: {key} part has {xp_.shape[1]} features but training data has "
                f"{x.shape[1]}"
            )
        check_fits_dtype(xp_, dt, raw.scale, source, "" if key == "pool" else key)
    if not values:
        check_classes(parts, source)
    return parts


def _wanted_sizes(name: str, parts: Parts, n: int | None, sized: bool) -> dict[str, int]:
    """Rows to keep from each part: all of them, or ``n`` shared in proportion to the parts'
    sizes (at least one row of each official part and of the pool)."""
    sizes = {k: v[1].shape[0] for k, v in parts.items()}
    total = sum(sizes.values())
    if n is None or sized:
        return sizes
    if n > total:
        raise ValueError(f"{name}: n={n} is larger than the {total} samples available; "
                         f"accepted: n <= {total} (or omit n for all of them)")
    want = {k: int(round(n * s / total)) for k, s in sizes.items() if k != "pool"}
    want = {k: max(1, min(v, sizes[k])) for k, v in want.items()}
    want["pool"] = n - sum(want.values())
    if want["pool"] < 1:
        raise ValueError(f"{name}: n={n} is too small to leave any training data")
    return want


def _split(name: str, parts: Parts, want: dict[str, int], split_rng: np.random.Generator,
           vf: float, tf: float, dt: np.dtype, scale: Any) -> Parts:
    """Subsample the official parts, then shuffle the pool into test, val and train (random
    test/val parts only where there is no official one). Draws: test, val, pool."""
    out: Parts = {}
    for key in ("test", "val"):
        if key in parts:
            xk, yk = parts[key]
            idx = split_rng.permutation(yk.shape[0])[: want[key]]
            out[key] = _take(xk, yk, idx, dt, scale)
    x, y = parts["pool"]
    n_pool = want["pool"]
    perm = split_rng.permutation(y.shape[0])[:n_pool]
    n_test = 0 if "test" in parts else int(round(tf * n_pool))
    n_val = 0 if "val" in parts else int(round(vf * n_pool))
    if n_pool - n_test - n_val < 1:
        raise ValueError(
            f"{name}: {n_pool} samples are too few for val_fraction={vf} and test_fraction={tf}"
        )
    if "test" not in parts:
        out["test"] = _take(x, y, perm[:n_test], dt, scale)
    if "val" not in parts:
        out["val"] = _take(x, y, perm[n_test : n_test + n_val], dt, scale)
    out["train"] = _take(x, y, perm[n_test + n_val :], dt, scale)
    return out


def _one_hot_width(raw: RawData) -> int | None:
    """The class count that one-hot label rows declare: their width (the widest part's), so a
    (n, 3) one-hot ``y`` whose rows use classes 0 and 1 only still gives 3 outputs (was max
    label + 1 = 2: the network had no output for the third class its data name); None when
    no part holds one-hot rows."""
    widths = [int(y.shape[1]) for y in (raw.y, raw.y_val, raw.y_test)
              if y is not None and np.ndim(y) == 2 and np.shape(y)[1] > 1
              and _one_hot(np.asarray(y))]
    return max(widths) if widths else None


def _n_classes(declared: int | None, parts: Parts, out: Parts, source: str) -> int:
    """The declared class count (checked against the kept labels) or max label + 1. A file
    whose labels leave classes of ``0..max`` without examples (labels 1..K, or 0 and 5) gets a
    warning: the network has one output per class of ``0..max``, the empty ones included."""
    if declared is None:
        k = max(int(v[1].max()) for v in parts.values()) + 1
        present = np.unique(np.concatenate([v[1] for v in parts.values()]).astype(np.int64))
        if present.size < k:  # (sorted labels, no array of k counts: k may be huge)
            empty, expect = [], 0
            for c in present.tolist():
                empty += range(expect, min(c, expect + 5 - len(empty)))
                expect = c + 1
                if len(empty) >= 5:
                    break
            shown = ", ".join(map(str, empty)) + (", ..." if k - present.size > 5 else "")
            warnings.warn(
                f"{source}: labels are read as classes 0..{k - 1} ({k} outputs), but classes "
                f"{shown} have no examples ({k - present.size} of {k}); relabel to 0..K-1 for "
                "K outputs", UserWarning, stacklevel=2)
        return k
    max_label = max(int(v[1].max()) if v[1].size else -1 for v in out.values())
    if max_label >= declared:
        raise ValueError(f"{source}: label {max_label} out of range for {declared} classes")
    return declared
