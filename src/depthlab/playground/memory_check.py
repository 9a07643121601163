"""Refuse a playground setup whose network would not fit in memory, before anything exists.

Counted with :mod:`depthlab.memory` from the setup alone (the data set's feature and class
counts come from the built-in table, nothing is loaded): the dense chain of the network
(residual: a stem, two ``width x width`` layers per block, the output layer) and its batch
norms (gamma and beta of each hidden unit, whose dense layer then has no bias), their parameters,
gradients, optimizer state and one more copy (the weights kept to measure the update ratio),
the activations of the largest batch the session runs (training batch, the 300-example probe
batch or an evaluation chunk of up to 4096 rows, times 2 with batch norm for its caches) and
the data.

Between tabs (:meth:`depthlab.playground.app.Registry.unclaimed`): a tab's check sets aside
what the other tabs' accepted networks have not taken yet (:func:`unclaimed_bytes`) and counts
its own network, which is freed before its next one is built, as free (:func:`own_bytes_held`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..data.registry import BUILTINS
from ..memory import MEMORY_ENV, check_fits, parameter_count, run_bytes
from .setup import SetupError

PROBE_ROWS = 300
EVAL_CHUNK = 4096


def dense_chain(n_in: int, n_out: int, depth: int, width: int, residual: bool) -> list[int]:
    """Widths of the chain of dense layers ``mlp`` builds: plain ``[n_in, w * depth, n_out]``;
    residual ``[n_in, w, (w, w) per block ..., n_out]`` (``depth - 1`` blocks)."""
    hidden = [width] * (1 + 2 * (depth - 1)) if residual else [width] * depth
    return [n_in, *hidden, n_out]


def data_shape(setup: Mapping[str, Any]) -> tuple[int, int, int]:
    """``(n_samples, n_features, n_classes)`` of the setup's data set, from the built-in table
    and the setup's data options."""
    spec = BUILTINS[setup["data.name"]]
    n, d, k = spec.n_samples, spec.n_features, spec.n_classes
    if spec.options and "d" in spec.options:
        d = int(setup.get("data.options.d", d))
    if spec.options and "n_classes" in spec.options:
        k = int(setup.get("data.options.n_classes", k))
    return n, d, k


def setup_bytes(setup: Mapping[str, Any]) -> tuple[int, int]:
    """``(bytes, parameters)`` the session for ``setup`` needs (see the module docstring)."""
    n, d, k = data_shape(setup)
    n_out = 1 if setup["train.loss"] == "binary_cross_entropy" else k
    sizes = dense_chain(d, n_out, setup["model.depth"], setup["model.width"],
                        setup["model.residual"])
    rows = max(setup["train.batch_size"], PROBE_ROWS, min(n, EVAL_CHUNK))
    if setup["model.batchnorm"]:
        rows *= 2
    dtype = setup["model.dtype"]
    total = run_bytes(sizes, n_rows=n, dtype=dtype, optimizer=setup["train.optimizer"],
                      momentum=bool(setup.get("train.momentum")), batch_rows=rows,
                      onehot=setup["train.loss"] in ("mse", "huber"))
    params = parameter_count(sizes)
    itemsize = 8 if dtype == "float64" else 4
    extra = params * itemsize
    if setup["model.batchnorm"]:
        # a batch norm after every hidden dense layer, which then has no bias: gamma and beta
        # for one bias per unit (the page said "9,666 parameters" of a 9,986-parameter
        # network), with their gradients, optimizer state (two slots at most), the weights'
        # copy and the running mean and variance
        bn = sum(sizes[1:-1])
        params += bn
        extra += 2 * bn * itemsize * 6
    return total + extra, params


def check_setup_memory(setup: Mapping[str, Any], available: int | None = None) -> int:
    """Raise :class:`SetupError` when the setup would not fit in memory (``available``
    bytes, default: what the machine has free); returns the parameter count otherwise."""
    need, params = setup_bytes(setup)
    try:
        check_fits(need, f"a {setup['model.depth']}-layer network of width "
                         f"{setup['model.width']} ({params:,} parameters)", available=available)
    except ValueError as e:
        raise SetupError(str(e), "model.width") from None
    return params


def check_doctor_memory(setup: Mapping[str, Any], limit: int | None = None) -> None:
    """Raise :class:`SetupError` when the doctor's copy of the network (it trains its own, one
    run at a time, beside the session's) would not fit: in what the machine has free now
    (the session's network already allocated), or with ``limit`` (what one session may use)
    in what the session's own share leaves of it."""
    need, params = setup_bytes(setup)
    available = None if limit is None else max(limit - need, 0)
    try:
        check_fits(need, f"the doctor's copy of this {setup['model.depth']}-layer network of "
                         f"width {setup['model.width']} ({params:,} parameters), trained beside "
                         "the one on the page,", available=available)
    except ValueError as e:
        raise SetupError(f"{e}; try the doctor on a smaller network", None) from None


def process_rss() -> int:
    """Bytes of physical memory this process uses now (``/proc/self/statm``'s resident pages;
    0 where there is no such file)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return 0


def unclaimed_bytes(reserved: int, baseline_rss: int) -> int:
    """What the other tabs' accepted networks (``reserved`` bytes, as :func:`setup_bytes`
    counted them) will still take from the memory the machine reports free: a network being
    built, or built and not trained yet (its gradients and optimizer state are pages nobody
    has written), holds less than its share, and a second tab's check saw that share as
    free. With a fixed budget (``DEPTHLAB_MEMORY_LIMIT``, which does not shrink as networks
    are allocated) all of ``reserved``; else ``reserved`` less what this process has grown
    by since it served no network (``process_rss() - baseline_rss``)."""
    if reserved <= 0:
        return 0
    held = 0 if os.environ.get(MEMORY_ENV) else max(0, process_rss() - baseline_rss)
    return max(0, reserved - held)


def own_bytes_held(reserved_own: int, reserved_others: int, baseline_rss: int) -> int:
    """What the tab's own network (``reserved_own`` bytes when accepted) holds of the memory
    the machine no longer reports free, and gives back before the tab's next network is built
    (a tab builds one network at a time): a trained network of 60% of the free memory left
    40%, and every change, reset included, was refused for needing 60%. Counted as what this
    process has grown by beyond all of the other tabs' ``reserved_others`` (the least it can
    be), at most ``reserved_own``; 0 with a fixed budget (``DEPTHLAB_MEMORY_LIMIT``, which no
    network shrinks)."""
    if reserved_own <= 0 or os.environ.get(MEMORY_ENV):
        return 0
    grown = max(0, process_rss() - baseline_rss)
    return min(reserved_own, max(0, grown - reserved_others))
