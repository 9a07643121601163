"""Refuse work that cannot fit in memory before allocating it.

Sizes are counted from what is known before any array exists (a config's layer sizes, a data
set's header or generator arguments) and compared with the memory available to this process:

* network: ``P = sum_i (n_i * n_{i+1} + n_{i+1})`` parameters over the chain of its Dense
  layers (:func:`dense_chain`: a residual block holds two); values, gradients and the
  optimizer's per-parameter state take ``P * itemsize * (2 + states)`` bytes
  (``states``: 0 for plain SGD, 1 for SGD with momentum, Adagrad and RMSprop, 2 for Adam,
  NAdam and Adadelta), plus ``LAYER_BYTES`` of Python objects per Dense layer (so a network
  of 10⁹ one-unit layers is refused too);
* activations: ``rows * sum_i n_i * itemsize * 3`` (pre-activation, activation and gradient
  of every layer for one batch of ``rows``);
* data: ``n * d * itemsize`` for the features plus ``n * n_out * itemsize`` for one-hot
  targets (mean-squared-error losses).

Available memory: ``MemAvailable`` of ``/proc/meminfo`` (else the free physical pages), capped by
a cgroup memory limit minus its usage and by this process's address-space and data limits
(``ulimit -v``, ``ulimit -d``: ``RLIMIT_AS - VmSize``, ``RLIMIT_DATA - VmData``), or the
``DEPTHLAB_MEMORY_LIMIT`` environment variable
(bytes, or a number with a ``K``/``M``/``G``/``T`` suffix, also ``KiB`` or Kubernetes'
``Ki``: powers of 1024) when set.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MEMORY_ENV = "DEPTHLAB_MEMORY_LIMIT"
OPTIMIZER_STATES: dict[str, int] = {"sgd": 0, "adagrad": 1, "rmsprop": 1, "adam": 2,
                                    "nadam": 2, "adadelta": 2}
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


# Python objects of one Dense layer with its activation (Layer, Parameter, array headers),
# measured at about 1.2 KiB; counted so that very deep, narrow networks are refused too.
LAYER_BYTES = 1024


# Layers check their own arrays (Dense, BatchNorm built by hand) from this size on; smaller
# ones do not read /proc/meminfo (~70 us, a fifth of building a Dense(8, 8)).
CHECK_FROM_BYTES = 1 << 20


class MemoryRefusal(ValueError):
    """The requested work needs more memory than is available (one-line message)."""


def format_bytes(n: float) -> str:
    """``1234567`` -> ``"1.18 MiB"`` (binary units, three significant digits); an integer
    past float64 (a config's ``width = 10**400``: TOML integers have no bound) as
    ``"8.67e+381 EiB"``, from ``log10(n) - 60 log10(2)``."""
    try:
        n = float(n)
    except OverflowError:
        exp = math.log10(abs(n)) - 60 * math.log10(2)
        whole = math.floor(exp)
        mantissa = f"{10 ** (exp - whole):.3g}"
        if mantissa == "10":  # rounded up to the next power of ten
            mantissa, whole = "1", whole + 1
        return f"{'-' if n < 0 else ''}{mantissa}e+{whole} EiB"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if abs(n) < 1024 or unit == "EiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _parse_bytes(text: str) -> int:
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    if t[-2:-1] in _UNITS.keys() - {""} and t.endswith("I"):  # Kubernetes' 8Gi, 512Mi
        t = t[:-1]
    unit = t[-1] if t and t[-1] in _UNITS else ""
    from .fieldcheck import ConfigError  # a setting of the user's (exit status 2 from the CLI)

    try:
        value = float(t[: len(t) - len(unit)])
    except ValueError:
        raise ConfigError(f"{MEMORY_ENV}={text!r} is not accepted; accepted: a number of "
                          "bytes, optionally with a K, M, G or T suffix (e.g. 8G)",
                          MEMORY_ENV) from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{MEMORY_ENV}={text!r} is not accepted; accepted: a positive size",
                          MEMORY_ENV)
    return int(value * _UNITS[unit])


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_available() -> int | None:
    base = Path("/sys/fs/cgroup")
    try:
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int((base / "memory.current").read_text().strip())
        return max(0, int(limit) - used)
    except (OSError, ValueError):
        return None


def _vm_status() -> dict[str, int]:
    """This process's ``VmSize`` and ``VmData`` (bytes) from ``/proc/self/status``; empty where
    there is none."""
    out: dict[str, int] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmSize", "VmData"):
                out[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def _rlimit_available() -> int | None:
    """``min(RLIMIT_AS - VmSize, RLIMIT_DATA - VmData)`` over the limits that are set (``ulimit
    -v`` / ``-d``), at least 0; None when neither is set or they cannot be read. Without it a
    config that fits the machine but not an 8 GB ``ulimit -v`` was accepted and ended, minutes
    later, in "MemoryError ... (internal error)"."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return None
    limits = []
    for res, field in (("RLIMIT_AS", "VmSize"), ("RLIMIT_DATA", "VmData")):
        try:
            soft = resource.getrlimit(getattr(resource, res))[0]
        except (AttributeError, OSError, ValueError):
            continue
        if soft != resource.RLIM_INFINITY and soft >= 0:
            limits.append((soft, field))
    if not limits:
        return None
    used = _vm_status()
    found = [max(0, soft - used[field]) for soft, field in limits if field in used]
    return min(found) if found else None


def available_memory() -> int:
    """Bytes this process can still allocate (see the module docstring)."""
    env = os.environ.get(MEMORY_ENV)
    if env:
        return _parse_bytes(env)
    found = [v for v in (_meminfo_available(), _cgroup_available(), _rlimit_available())
             if v is not None]
    return min(found) if found else 2**62


def check_fits(nbytes: float, what: str, *, available: int | None = None) -> None:
    """Raise :class:`MemoryRefusal` naming ``what`` when ``nbytes`` exceed the memory
    available (``available`` overrides :func:`available_memory`)."""
    avail = available_memory() if available is None else int(available)
    if nbytes > avail:
        raise MemoryRefusal(
            f"{what} needs about {format_bytes(nbytes)} of memory but only "
            f"{format_bytes(avail)} is available; nothing was allocated")


def _itemsize(dtype: Any) -> int:
    return int(np.dtype(dtype).itemsize)


def parameter_count(sizes: Sequence[int]) -> int:
    """``sum_i (n_i * n_{i+1} + n_{i+1})``: weights and biases of the dense layers (exact
    Python integers, so 1e30-wide layers do not overflow)."""
    s = [int(v) for v in sizes]
    return sum(a * b + b for a, b in zip(s[:-1], s[1:]))


def dense_chain(sizes: Sequence[int], residual: bool = False) -> list[int]:
    """The widths of the chain of Dense layers that ``mlp(sizes, residual=...)`` builds, whose
    :func:`parameter_count` and batch activations are the network's: ``sizes`` itself for a
    plain network; for a residual one (a stem ``Dense(n_in, w)``, one block of two ``w x w``
    Dense layers per further hidden width, the output ``Dense(w, n_out)``)
    ``[n_in, w, (w, w) per block ..., n_out]``, i.e. ``P = n_in w + w + 2 (L - 1)(w^2 + w) +
    w n_out + n_out`` for ``L`` hidden widths ``w`` (about twice the plain chain's)."""
    s = [int(v) for v in sizes]
    hidden = s[1:-1]
    if not residual or len(hidden) < 2:
        return s
    return [s[0], hidden[0], *([hidden[0]] * (2 * (len(hidden) - 1))), s[-1]]


def network_bytes(sizes: Sequence[int], dtype: Any = "float32", *, optimizer: str = "sgd",
                  momentum: bool = False, batch_rows: int = 0) -> int:
    """Bytes of a network's parameters, gradients and optimizer state, its layers' Python
    objects, plus the activations of one batch of ``batch_rows`` (see the module docstring)."""
    states = OPTIMIZER_STATES.get(str(optimizer).lower(), 2)
    if optimizer == "sgd" and momentum:
        states = 1
    item = _itemsize(dtype)
    params = parameter_count(sizes) * item * (2 + states)
    acts = int(batch_rows) * sum(int(v) for v in sizes) * item * 3
    return params + acts + LAYER_BYTES * max(len(sizes) - 1, 0)


def batch_bytes(net: Any, rows: int) -> int:
    """Bytes of the activations of a built network ``net`` for one batch of ``rows``
    (``rows * sum_i n_i * itemsize * 3``: pre-activation, activation and gradient of every
    Dense layer's output and of the input), its parameters already being allocated."""
    dense = net.dense_layers()
    if not dense:
        return 0
    widths = [int(dense[0].W.value.shape[0])] + [int(d.W.value.shape[1]) for d in dense]
    return int(rows) * sum(widths) * _itemsize(net.dtype) * 3


def check_batch(net: Any, rows: int, what: str) -> None:
    """Refuse a forward and backward pass of ``net`` on ``rows`` rows that cannot fit."""
    check_fits(batch_bytes(net, rows), f"{what} ({int(rows):,} rows through the network)")


def uniform_network_bytes(n_in: int, width: int, depth: int, n_out: int,
                          dtype: Any = "float32") -> int:
    """:func:`network_bytes` of ``[n_in] + [width] * depth + [n_out]`` (plain SGD, no batch)
    computed without building that list, so a config's ``depth = 10**9`` is refused before
    its sizes exist."""
    n_in, width, depth, n_out = (int(v) for v in (n_in, width, depth, n_out))
    if depth == 0:
        params = n_in * n_out + n_out
    else:
        params = (n_in * width + width) + (depth - 1) * (width * width + width) + (
            width * n_out + n_out)
    return params * _itemsize(dtype) * 2 + LAYER_BYTES * (depth + 1)


def sizes_text(sizes: Sequence[Any], head: int = 4) -> str:
    """Layer sizes for a one-line message: the whole list when short, else its first
    ``head`` and last entries around ``...`` with the count (a 10⁷-layer list stays short)."""
    def text(v: Any) -> str:
        return f'"{v}"' if isinstance(v, str) else str(v)

    n = len(sizes)
    if n <= 2 * head + 2:
        return "[" + ", ".join(text(v) for v in sizes) + "]"
    shown = [*(text(v) for v in sizes[:head]), "...", text(sizes[-1])]
    return "[" + ", ".join(shown) + f"] ({n:,} sizes)"


def check_network(sizes: Sequence[int], dtype: Any = "float32", *, what: str | None = None,
                  **kwargs: Any) -> None:
    """Refuse a network of layer ``sizes`` that cannot fit (see :func:`network_bytes`)."""
    label = what or f"a network with sizes={sizes_text(sizes)}"
    n = parameter_count(sizes)
    check_fits(network_bytes(sizes, dtype, **kwargs), f"{label} ({n:,} parameters)")


def check_array(shape: Sequence[int], dtype: Any, what: str) -> None:
    """Refuse an array of ``shape`` and ``dtype`` that cannot fit."""
    check_fits(math.prod(int(s) for s in shape) * _itemsize(dtype),
               f"{what} (shape {tuple(int(s) for s in shape)}, {np.dtype(dtype).name})")


def run_bytes(sizes: Sequence[int], *, n_rows: int, dtype: Any = "float32",
              optimizer: str = "sgd", momentum: bool = False, batch_rows: int = 32,
              onehot: bool = False) -> int:
    """Memory of one training run: the network (:func:`network_bytes` with the largest of the
    training batch, the probe batch and the evaluation chunk), the features of ``n_rows``
    examples and, with ``onehot``, their one-hot targets."""
    item = _itemsize(dtype)
    sizes = [int(v) for v in sizes]
    data = int(n_rows) * sizes[0] * item + (int(n_rows) * sizes[-1] * item if onehot else 0)
    return network_bytes(sizes, dtype, optimizer=optimizer, momentum=momentum,
                         batch_rows=batch_rows) + data
