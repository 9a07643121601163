"""Accumulators of one recorded pass: partial sums of the tensors a module produced, combined
on the host after one transfer.

* :class:`Acc`: ``n``, ``S1 = sum x``, ``R = ||x||`` (and ``sum |x|``, percentiles) of one or
  more tensors (the calls of a module); pooled ``mean = sum S1 / n``,
  ``var = sum R^2 / n - mean^2``, population std ``sqrt(var)``.
* :class:`ActAcc`: a follower's output (an :class:`Acc`) and the counts on its input:
  saturated entries ``|f'(s)| < SATURATION_RATIO sup|f'|``, inactive entries ``s <= 0``
  (ReLU family), live units (``f'(s) != 0`` somewhere in the pass).
* :class:`Transfer`: the device tensors of a record stacked and copied to the host at once.
* Percentiles by NumPy's ``linear`` rule, ``h = (n - 1) q / 100``, from a sort (device) or a
  partition (CPU).

On plain CPU float tensors with Numba (``depthlab[fast]``) the sums come from one compiled pass
(:mod:`depthlab.torch.kernels`, looked up by :func:`watch_kernels`) and are host floats
already; every other tensor takes the torch operations, which define the results.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..probes import accel
from ..probes.kernels import CANCELLATION_RATIO, TINY_SQUARE_64
from .layers import ActivationSpec

__all__ = ["Acc", "ActAcc", "Deferred", "Lazy", "Transfer", "cpu_kernels", "defer", "norm_dtype",
           "partition_percentiles", "pooled_mean_std", "sorted_percentiles", "stat_dtype",
           "watch_kernels", "weight_reductions"]


def stat_dtype(t: torch.Tensor) -> torch.dtype:
    """float64 for float64 tensors, float32 for everything else (bf16/fp16 included)."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


_KERNEL_DTYPES = (torch.float32, torch.float64)
KERNEL_LIKE = {torch.float32: np.empty(0, np.float32), torch.float64: np.empty(0, np.float64)}
"""An empty array of each kernel dtype: the dtype argument of the kernels that read a tensor
by its address (:func:`depthlab.torch.kernels.sums_at`, ``layer_relu_at``, ``weight_sums_at``)."""


def cpu_kernels(f: torch.Tensor):
    """The compiled one-pass kernels (:func:`depthlab.probes.accel.kernels`) for a plain,
    strided CPU float32/float64 tensor; None for anything else or without Numba."""
    if not f.is_cpu or f.dtype not in _KERNEL_DTYPES or type(f) is not torch.Tensor \
            or f.layout != torch.strided:
        return None
    return accel.kernels()


_PLAIN = (torch.Tensor, nn.Parameter)


def _host_float(t: torch.Tensor) -> bool:
    """A plain strided CPU float32/float64 tensor or parameter (cheap attribute checks)."""
    return t.is_cpu and t.dtype in _KERNEL_DTYPES and type(t) in _PLAIN \
        and t.layout == torch.strided


_WATCH_KERNELS: list = []  # depthlab.torch.kernels once imported


def watch_kernels():
    """:mod:`depthlab.torch.kernels` when the compiled kernels are in use, else None."""
    if accel.kernels() is None:
        return None
    if not _WATCH_KERNELS:
        from . import kernels

        _WATCH_KERNELS.append(kernels)
    return _WATCH_KERNELS[0]


def _first_tensor(obj) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    if type(obj) is tuple and obj and isinstance(obj[0], torch.Tensor):  # a hook's args
        return obj[0]
    if isinstance(obj, dict):  # e.g. a model returning {"logits": ..., "aux": ...}
        obj = tuple(obj.values())
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        # a model returning @dataclass Output(loss=None, logits=...): predict's first output
        # tensor (without y, loss_fn) was None, the theory refused as "the gradient does not
        # flow through every layer"
        obj = tuple(getattr(obj, f.name, None) for f in dataclasses.fields(obj))
    if isinstance(obj, (tuple, list)):
        for o in obj:
            t = _first_tensor(o)
            if t is not None:
                return t
    return None


def _lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """NumPy's linear interpolation form (exact at both ends)."""
    return torch.where(t < 0.5, a + t * (b - a), b - (1.0 - t) * (b - a))


def _positions(n: int, percentiles: Sequence[float]) -> list[tuple[int, int, float]]:
    """NumPy's ``linear`` rule: ``h = (n - 1) q / 100`` -> (floor h, ceil h, h - floor h)."""
    out = []
    for q in percentiles:
        h = (n - 1) * (float(q) / 100.0)
        lo = int(h // 1)
        out.append((lo, min(lo + 1, n - 1), h - lo))
    return out


def sorted_percentiles(v: torch.Tensor, percentiles: Sequence[float]) -> torch.Tensor:
    """Percentiles of the sorted 1-d ``v`` with NumPy's default ``linear`` rule:
    ``h = (n - 1) q / 100``, ``v[floor h] + (h - floor h)(v[ceil h] - v[floor h])``."""
    pos = _positions(v.numel(), percentiles)
    idx_lo = torch.tensor([p[0] for p in pos], device=v.device)
    idx_hi = torch.tensor([p[1] for p in pos], device=v.device)
    t = torch.tensor([p[2] for p in pos], dtype=v.dtype, device=v.device)
    return _lerp(v[idx_lo], v[idx_hi], t)


def partition_percentiles(v: np.ndarray, percentiles: Sequence[float]) -> torch.Tensor:
    """The same percentiles of a 1-d NumPy array, by one in-place ``partition`` around the
    needed order statistics (CPU tensors: several times faster than a full sort)."""
    pos = _positions(v.size, percentiles)
    kth = sorted({i for lo, hi, _ in pos for i in (lo, hi)})
    v.partition(kth)
    out = []
    for lo, hi, t in pos:
        a, b = float(v[lo]), float(v[hi])
        out.append(a + t * (b - a) if t < 0.5 else b - (1.0 - t) * (b - a))
    return torch.tensor(out, dtype=torch.float64)


# -- deferred reductions ------------------------------------------------------------------
# On a device every small reduction is a kernel launch, and a launch-bound step (a small model
# on a GPU) paid one per statistic per tensor (sum, norm, |x|, counts: ~74 per recorded MLP
# step). Tensors of at most BATCH_MAX entries are therefore left to the record's end, as
# :class:`Lazy` handles: :class:`Transfer` concatenates those of one dtype and device into one
# buffer, each tensor zero-padded to whole rows of CHUNK entries (a row never mixes two
# tensors), takes each statistic over all rows by one reduction (float64 accumulation, float32
# on MPS), copies the row results to the host with the record's one transfer and sums each
# tensor's rows there (NumPy, fixed order: reproducible run to run). Larger tensors keep their
# immediate reductions (no extra memory for big activations).
BATCH = True  # module switch (tests compare both paths): False = one reduction per tensor
BATCH_MAX = 1 << 20  # entries: larger tensors are reduced at once
BATCH_MAX_CPU = 1 << 14  # likewise on the CPU, where a reduction costs ~10 us, not a launch:
# past this size the concatenation's extra copy costs more than the reduction calls it saves
BATCH_GROUP = 1 << 24  # entries concatenated by one reduction at most (memory)
HELD_MAX = 1 << 26  # entries of copies held for deferred reductions at once (memory)
CHUNK = 1024  # entries per row
HOST_MAX = 1 << 16  # entries of wide (float64) deferred tensors copied as they are, at most

SUM, NORM, ABS, NONZERO = 0, 1, 2, 3  # sum x, sqrt(sum x^2), sum |x|, #{x != 0} (NaN counts)
_HELD = [0]


class Deferred:
    """A tensor (1-d) whose reductions wait for the record's end; ``held``: entries of a copy
    made for it, counted against :data:`HELD_MAX` until it is reduced or dropped."""

    __slots__ = ("t", "held", "__weakref__")

    def __init__(self, t: torch.Tensor, held: int = 0) -> None:
        self.t = t
        self.held = held
        if held:
            _HELD[0] += held

    def release(self) -> None:
        self.t = None
        if self.held:
            _HELD[0] -= self.held
            self.held = 0

    def __del__(self) -> None:
        if self.held:
            _HELD[0] -= self.held


class Lazy:
    """One statistic (:data:`SUM`, :data:`NORM`, :data:`ABS`, :data:`NONZERO`) of a
    :class:`Deferred` tensor: a part of a :class:`Transfer` like a 0-d tensor; ``value`` holds
    the host float once a transfer has reduced it (a norm kept for the next record)."""

    __slots__ = ("d", "stat", "value")

    def __init__(self, d: Deferred, stat: int) -> None:
        self.d = d
        self.stat = stat
        self.value: float | None = None


def defer(t: torch.Tensor, copy: bool) -> Deferred | None:
    """``t`` (any shape) as a :class:`Deferred` when batching applies: a floating tensor of
    1..BATCH_MAX entries; ``copy``: the values may change in place before the record's end
    (a layer output, a gradient), so a copy is held (one launch instead of several
    reductions), within :data:`HELD_MAX`. None: reduce it now."""
    n = t.numel()
    if not BATCH or n == 0 or n > (BATCH_MAX_CPU if t.is_cpu else BATCH_MAX) \
            or not t.is_floating_point() \
            or t.layout != torch.strided or type(t) not in _PLAIN:
        return None
    if copy:
        if _HELD[0] + n > HELD_MAX:
            return None
        return Deferred(t.reshape(-1).clone(), n)
    return Deferred(t.reshape(-1))


_ZEROS: dict = {}


def _zeros(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A cached row of CHUNK zeros (padding; never written)."""
    z = _ZEROS.get((dtype, device))
    if z is None:
        z = _ZEROS[(dtype, device)] = torch.zeros(CHUNK, dtype=dtype, device=device)
    return z


def _reduce_rows(lazies: list[Lazy]) -> tuple[list[torch.Tensor], list]:
    """The row reductions of the deferred tensors: device vectors (float64, float32 on MPS)
    and the plan to read them back (per vector: the lazies it serves, with their row spans)."""
    groups: dict = {}
    for z in lazies:
        if z.value is not None:
            continue
        t = z.d.t
        g = groups.setdefault((t.dtype, t.device), {})
        e = g.get(id(z.d))
        if e is None:
            g[id(z.d)] = e = (z.d, [])
        e[1].append(z)
    vecs: list[torch.Tensor] = []
    plan: list = []
    for (dtype, device), g in groups.items():
        wide = torch.float32 if device.type == "mps" else torch.float64
        entries = list(g.values())
        if dtype == wide and sum(d.t.numel() for d, _ in entries) <= HOST_MAX:
            # a few wide vectors (a ReLU's unit sums): the values themselves join the
            # transfer's one concatenation, reduced on the host (no launch of their own)
            for d, zs in entries:
                vecs.append(d.t)
                plan.append((None, None, zs))
            continue
        zeros = _zeros(dtype, device)
        i = 0
        while i < len(entries):  # groups of at most BATCH_GROUP entries
            parts, spans, rows, stats = [], [], 0, set()
            while i < len(entries) and (not parts or (rows + 1) * CHUNK + entries[i][0].t.numel()
                                        <= BATCH_GROUP):
                d, zs = entries[i]
                t = d.t
                n = t.numel()
                r = -(-n // CHUNK)
                parts.append(t)
                if r * CHUNK > n:
                    parts.append(zeros[: r * CHUNK - n])
                spans.append((rows, zs))
                rows += r
                stats.update(z.stat for z in zs)
                i += 1
            x = (torch.cat(parts) if len(parts) > 1 else parts[0]).view(rows, CHUNK)
            if x.dtype != wide:  # one cast: a reduction's dtype= casts its input each time
                x = x.to(wide)
            starts = np.array([a for a, _ in spans], dtype=np.int64)
            for stat in sorted(stats):
                if stat == SUM:
                    v = x.sum(dim=1)
                else:
                    v = torch.linalg.vector_norm(x, (2, 1, 0)[stat - 1], dim=1)
                vecs.append(v)
                plan.append((stat, starts, [[z for z in zs if z.stat == stat] for _, zs in spans]))
    return vecs, plan


def _host_stat(v: np.ndarray, stat: int) -> float:
    """A :class:`Lazy` statistic of the host values ``v`` (as :func:`_reduce_rows` takes it)."""
    with np.errstate(invalid="ignore", over="ignore"):
        if stat == SUM:
            return float(v.sum())
        if stat == NORM:
            return math.sqrt(float((v * v).sum()))
        if stat == ABS:
            return float(np.abs(v).sum())
        return float(np.count_nonzero(v))  # NaN counts, as != 0 on the device


def _synced(f: torch.Tensor) -> bool:
    """True where :meth:`Acc.add` reads a large tensor's sums back at once: on the CPU (no
    cost), and for float64 tensors on any device (their squares may leave float64's range,
    rescaled from the values, which later in-place operations may change); a device's float32
    tensor takes :func:`_shifted_sums` instead (tests force that branch on the CPU)."""
    return f.is_cpu or f.dtype == torch.float64


def _rescale_norms(lazies: list[Lazy]) -> None:
    """Deferred norms whose squares left float64's range (entries beyond ~1e154, or below
    ~1e-154, so that the norm is 0 although a ``sum x`` or ``sum |x|`` of the same tensor is
    not) taken again by :func:`scaled_norm` of the values still held; a norm of 0 with no
    other statistic of its tensor is checked too."""
    hint: dict[int, bool] = {}  # id(Deferred) -> some sum of it is nonzero (or NaN)
    for z in lazies:
        if z.stat != NORM and z.stat is not None:
            hint[id(z.d)] = hint.get(id(z.d), False) or z.value != 0.0
    for z in lazies:
        if z.stat == NORM and z.d.t is not None and z.value is not None and (
                not _norm_in_range(z.value) or z.value == 0.0 and hint.get(id(z.d), True)):
            z.value = scaled_norm(z.d.t, z.value)


class Transfer:
    """Device tensors (0-d or 1-d) gathered for one host copy: :meth:`add` returns a handle,
    :meth:`run` stacks the 0-d tensors (one ``stack`` when they share a dtype and device, the
    usual case) and concatenates the 1-d ones, cast to float64 (float32 on MPS), and copies
    everything to the host at once; :meth:`get` reads a handle's host values afterwards.
    The 0-d tensors take the first host positions in the order they were added, so a 0-d
    part's position is known without a per-part pass. Values that are host numbers already
    (Python floats, from the CPU kernels) are their own handle: a list, read back as is."""

    def __init__(self) -> None:
        self.scalars: list[torch.Tensor] = []
        self.vectors: list[torch.Tensor] = []
        self.parts: list[int] = []  # part k -> index in scalars (>= 0) or ~index in vectors
        self.where: list[tuple[int, int]] = []  # (start, size) of each part in ``host``
        self.host: list[float] = []
        self.lazy: list[tuple[int, Lazy]] = []  # (part, handle): reduced by run
        self.held: list[Callable[[Transfer], None]] = []  # called by run while the
        # deferred values are still held (Acc: cancelling sums taken again)

    def _put(self, t: torch.Tensor | Lazy) -> int:
        if type(t) is Lazy:
            self.lazy.append((len(self.parts), t))
            self.parts.append(0)  # its host position is set by run
        elif t.dim() == 0:
            self.scalars.append(t)
            self.parts.append(len(self.scalars) - 1)
        else:
            self.vectors.append(t.reshape(-1))
            self.parts.append(~(len(self.vectors) - 1))
        return len(self.parts) - 1

    def add(self, t: torch.Tensor | float) -> tuple[int, ...] | list[float]:
        return [t] if type(t) is float else (self._put(t),)

    def add_all(self, ts: list) -> tuple[int, ...] | list[float]:
        """One handle for several tensors (their values concatenated); host floats among
        them travel as float64 0-d tensors unless all of them are floats."""
        for v in ts:
            if type(v) is not float:
                break
        else:
            return ts if type(ts) is list else list(ts)
        return tuple([self._put(v if isinstance(v, (torch.Tensor, Lazy))
                                else torch.tensor(v, dtype=torch.float64)) for v in ts])

    def run(self, device: torch.device) -> None:
        self.host = []
        if not self.parts:
            return
        plan = None
        if self.lazy:  # the deferred reductions: row results join the vectors
            vecs, plan = _reduce_rows([z for _, z in self.lazy])
            first = len(self.vectors)
            self.vectors += vecs
        self._run(device)
        if plan is None:
            return
        host = self.host
        where = self.where
        for (stat, starts, users), (a, n) in zip(plan, self.starts[first:]):
            rows = np.asarray(host[a: a + n], dtype=np.float64)
            if stat is None:  # the values of one tensor: its statistics here
                for z in users:
                    z.value = _host_stat(rows, z.stat)
                continue
            if stat == NORM:
                with np.errstate(over="ignore"):
                    rows = rows * rows
            with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: NaN, as one sum
                sums = np.add.reduceat(rows, starts).tolist() if n else []
            for v, zs in zip(sums, users):
                if stat == NORM:
                    v = math.sqrt(v)
                for z in zs:
                    z.value = v
        _rescale_norms([z for _, z in self.lazy])
        del self.vectors[first:]
        for k, z in self.lazy:
            where[k] = (len(host), 1)
            host.append(z.value)
        for fn in self.held:
            fn(self)
        for _, z in self.lazy:
            if z.d.t is not None:
                z.d.release()

    def _run(self, device: torch.device) -> None:
        scalars = self.scalars
        if not self.lazy and not self.vectors and len(scalars) <= 32 and device.type == "cpu" \
                and accel.kernels() is not None:  # CPU kernels' path: a few losses are left
            self.where = [(k, 1) for k in self.parts]
            self.host = [float(v) for v in scalars]
            return
        wide = torch.float32 if device.type == "mps" else torch.float64
        flat = []
        at: list[int] | None = None  # host position of each 0-d part (None: in order)
        if scalars:
            groups: dict = {}
            for i, s in enumerate(scalars):
                groups.setdefault((s.dtype, s.device), []).append(i)
            if len(groups) == 1:  # no cast needed when nothing is concatenated to it
                stacked = torch.stack(scalars)
                flat.append(stacked.to(device, wide) if self.vectors else stacked)
            else:  # e.g. float32 sums and int64 counts: one stack per kind
                at = [0] * len(scalars)
                pos = 0
                for idx in groups.values():
                    flat.append(torch.stack([scalars[i] for i in idx]).to(device, wide))
                    for i in idx:
                        at[i] = pos
                        pos += 1
        starts = []
        pos = len(scalars)
        for v in self.vectors:
            starts.append((pos, v.numel()))
            pos += v.numel()
            flat.append(v.to(device, wide))
        self.starts = starts
        self.where = [((k if at is None else at[k]), 1) if k >= 0 else starts[~k]
                      for k in self.parts]
        if flat:
            self.host = (torch.cat(flat) if len(flat) > 1 else flat[0]).cpu().tolist()

    def get(self, handle: tuple[int, ...] | list[float]) -> list[float]:
        if type(handle) is list:
            return handle
        out: list[float] = []
        host, where = self.host, self.where
        for k in handle:
            a, n = where[k]
            if n == 1:
                out.append(host[a])
            else:
                out += host[a: a + n]
        return out

    def one(self, handle: tuple[int, ...] | list[float]) -> float:
        if type(handle) is list:
            return handle[0]
        return self.host[self.where[handle[0]][0]]


def _std(n: int, s1: Sequence[float], s2: Sequence[float],
         tensors: Sequence[torch.Tensor] = ()) -> float:
    """Population std from pooled ``sum x`` and ``sum x^2`` partial sums:
    ``sqrt(sum x^2 / n - mean^2)``. Where that difference cancels (``mean^2 >
    CANCELLATION_RATIO var``) and the ``tensors`` the sums are of are given, their entries are
    summed again in float64 around ``c = mean``: ``var = sum (x - c)^2 / n - (sum (x - c) /
    n)^2``, as :func:`_centered` does for layer outputs (a weight initialized to a constant,
    e.g. a (1, 7) learned scale of ones, had ``weight_std`` 1.5e-8 instead of 0; a float64
    weight of mean 1 and std 1e-7 had 7.1e-8). Only then: no cost in the usual case."""
    mean = sum(s1) / n
    total = sum(s2)
    var = total / n - mean * mean
    if tensors and (not math.isfinite(var) or total < TINY_SQUARE_64 * n
                    and (total > 0.0 or any(v != 0.0 for v in s1))):
        return scaled_std(tensors, math.nan if not math.isfinite(var)
                          else math.sqrt(max(var, 0.0)))
    if not math.isfinite(var):
        return math.nan
    if tensors and mean * mean > CANCELLATION_RATIO * var:
        t1 = t2 = 0.0
        with torch.no_grad():
            for t in tensors:
                d = _strided(t).detach().reshape(-1).to(norm_dtype(t)) - mean
                t1 += float(d.sum())
                t2 += float(d.square().sum())
        e = t1 / n
        var = t2 / n - e * e
    return math.sqrt(max(var, 0.0))


def scaled_std(tensors: Sequence[torch.Tensor], std: float) -> float:
    """Population std of the entries of ``tensors`` whose float64 sums of squares overflowed
    (entries beyond ~1e154) or underflowed (below ~1e-154): the std of every entry times
    ``2^-e`` (``max |x| < 2^e``: exact), times ``2^e``, as the NumPy probes'
    ``_scaled_mean_std``; ``std`` as given where an entry is NaN or infinite (NaN: the
    tensor's own) or every entry is 0."""
    with torch.no_grad():
        flat = torch.cat([_strided(t).detach().reshape(-1).to(norm_dtype(t)) for t in tensors])
        return _pow2_measured(flat, std, lambda s: torch.std(s, correction=0))


def pooled_mean_std(ns: Sequence[int], cs: Sequence[float], s1: Sequence[float],
                    s2: Sequence[float]) -> tuple[float, float]:
    """``(mean, population std)`` of calls ``k`` with ``n_k`` entries and sums
    ``S1_k = sum (x - c_k)``, ``S2_k = sum (x - c_k)^2`` around shifts ``c_k``: each call's
    mean ``m_k = c_k + S1_k / n_k`` and ``M2_k = S2_k - S1_k^2 / n_k``, combined exactly
    (``M2 = sum M2_k + sum n_k (m_k - mean)^2``; Chan et al.); with every ``c_k = 0`` and one
    call this is ``sum x^2 / n - mean^2``."""
    n = sum(ns)
    if len(ns) == 1:
        e = s1[0] / n
        var = s2[0] / n - e * e
        mean = cs[0] + e
    else:
        ms = [c + a / k for k, c, a in zip(ns, cs, s1)]
        mean = sum(k * m for k, m in zip(ns, ms)) / n
        m2 = sum(b - a * a / k for k, a, b in zip(ns, s1, s2))
        var = (m2 + sum(k * (m - mean) ** 2 for k, m in zip(ns, ms))) / n
    return mean, (math.sqrt(max(var, 0.0)) if math.isfinite(var) else math.nan)


def _centered(x: torch.Tensor | np.ndarray, n: int, s1: float, s2: float
              ) -> tuple[float, float, float]:
    """``(c, S1, S2)``: the sums ``s1 = sum x``, ``s2 = sum x^2`` of the CPU tensor or array ``x``
    as they are when they do not cancel, else taken again in float64 around ``c`` = an entry
    (:func:`depthlab.probes.kernels.moments`), and once more around ``c`` + their mean where
    those still cancel (an outlying entry), as the NumPy probes do: a float32 block sum of
    squares is within ~1e-5 of ``sum x^2``, so ``sum x^2 / n - mean^2`` lost the variance of
    entries whose mean is far from 0 (a saturated sigmoid's ``act_std`` 9.6e-5 where it is
    5.2e-5). Around an entry a constant tensor's sums are 0 exactly (around its rounded mean
    a constant float32 output of 3.7 had ``pre_std`` 7e-15, the NumPy probes' 0)."""
    e = s1 / n
    var = s2 / n - e * e
    if math.isfinite(var) and e * e > CANCELLATION_RATIO * var:
        from ..probes.kernels import moments

        if isinstance(x, torch.Tensor):
            f = x.detach()
            x = (f if f.dtype in _KERNEL_DTYPES else f.to(stat_dtype(f))).numpy().ravel("K")
        c = float(x[0])
        t1, t2, _, _ = moments(x, c)
        e = t1 / n
        if e * e > CANCELLATION_RATIO * (t2 / n - e * e):
            c += e
            t1, t2, _, _ = moments(x, c)
        return c, t1, t2
    return 0.0, s1, s2


def _cancels(n: int, s1: float, r: float) -> bool:
    """True where ``var = r^2 / n - mean^2`` (``mean = s1 / n``) cancels:
    ``mean^2 > CANCELLATION_RATIO var``, compared without squares (``mean^2 (1 + K) > K r^2 / n``
    as ``|s1| sqrt(1 + K) > r sqrt(K n)``: no overflow for entries of 1e200; NaN: False)."""
    return abs(s1) * _CANCEL_L > r * math.sqrt(CANCELLATION_RATIO * n)


_CANCEL_L = math.sqrt(1.0 + CANCELLATION_RATIO)


def _recentered(x: torch.Tensor, n: int) -> tuple[float, float, float]:
    """``(c, S1, R)``: ``sum (x - c)`` and ``||x - c||`` of the ``n`` entries of ``x`` (any
    device) in float64 (float32 on MPS) around ``c`` = its first entry, and once more around
    ``c`` + their mean where those still cancel (:func:`_centered`'s rule; a constant tensor's
    sums are 0 exactly): for calls whose one-pass ``sum x^2 / n - mean^2`` cancels (float32
    outputs ``1000 + 1e-3 z`` had a ``pre_std`` 1-7% off from the torch operations' one-pass
    sums). A host synchronisation, taken only then."""
    with torch.no_grad():
        flat = _strided(x).detach().reshape(-1).to(norm_dtype(x))
        c = float(flat[0])
        for _ in range(2):
            d = flat - c
            t1 = float(d.sum())
            r = float(torch.linalg.vector_norm(d))
            if not _norm_in_range(r) or r == 0.0 and t1 != 0.0:
                r = scaled_norm(d, r)
            if not _cancels(n, t1, r):
                break
            c += t1 / n
    return c, t1, r


def _shifted_sums(f: torch.Tensor, total: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(c, sum (x - c), ||x - c||)`` of the 1-d float32 tensor ``f`` as device tensors (no
    host synchronisation), ``c = f[0]`` (a copy: ``f`` may change in place before the record's
    end; 0 where ``f[0]`` is not finite, clamped to ``[-1e30, 1e30]``): the one-pass sums of a
    device's large float32 outputs, shifted so that ``var = R^2 / n - (S1 / n)^2`` no longer
    cancels where ``|mean| >> std`` (``(f[0] - mean)^2 / var <= n - 1`` whatever the entries).
    ``||x - c||`` from ``x - c`` in float32 (within ``2^-24 |x - c|`` of the exact difference:
    a relative error of the std of that order);
    ``sum (x - c) = sum x - n c`` from the float64 ``sum x`` (``total`` where the caller has it),
    so that a mean small against the std keeps the float64 sum's precision."""
    wide = norm_dtype(f)
    c = torch.nan_to_num(f[0].to(wide), nan=0.0, posinf=0.0, neginf=0.0).clamp_(-1e30, 1e30)
    # a finite copy (around an infinite c, entries of inf read NaN: a mean of inf, NaN), of at
    # most 1e30 (below half a float32 ulp of 3.4e38: x - c stays finite for every finite x)
    s = f.sum(dtype=wide) if total is None else total.to(wide)
    return c, torch.sub(s, c, alpha=f.numel()), torch.linalg.vector_norm(f - c, dtype=wide)


# -- sums of squares past float64's range ---------------------------------------------------
# A norm R = sqrt(sum x^2) of float64 entries beyond ~1e154 overflows (its square does), and
# one of entries below ~1e-154 underflows; the statistics are then taken as the NumPy probes
# take them (depthlab.probes.stats._scaled_mean_std): on x / 2^e with max |x| < 2^e, an exact
# power-of-two scaling, scaled back. Only where a norm leaves [NORM_LOW, NORM_HIGH]: the usual
# case costs a comparison.
NORM_HIGH = 1e150  # norms whose squares (and sums of a few of them) stay below 1.8e308
NORM_LOW = 1e-140  # norms whose squares stay normal numbers (1e-280 > 2.2e-308)


def _norm_in_range(r: float) -> bool:
    """True where ``r * r`` neither overflows nor loses digits to underflow (NaN: as given)."""
    return NORM_LOW <= r <= NORM_HIGH or r == 0.0 or r != r


def _times_pow2(t: torch.Tensor, e: int) -> torch.Tensor:
    """``t * 2^e`` exactly (two factors, each a normal float64: ``2.0 ** e`` alone overflows
    for ``|e| > 1023``)."""
    h = e // 2
    return t * (2.0 ** h) * (2.0 ** (e - h))


def scaled_norm(x: torch.Tensor | np.ndarray, norm: float) -> float:
    """``||x||`` (Frobenius, float64) of an array whose sum of squares overflowed or
    underflowed: ``2^e ||x / 2^e||`` with ``max |x| < 2^e`` (exact scaling); ``norm`` as given
    where an entry is NaN or infinite (the norm's inf/NaN are the tensor's own) or every entry
    is 0."""
    with torch.no_grad():
        t = torch.as_tensor(x).detach().reshape(-1)
        if t.layout != torch.strided:
            t = t.to_dense()
        return _pow2_measured(t.to(norm_dtype(t)), norm, torch.linalg.vector_norm)


def _pow2_measured(flat: torch.Tensor, fallback: float,
                   measure: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """``2^e measure(flat / 2^e)`` with ``max |flat| < 2^e`` (exact scaling) for a statistic
    homogeneous of degree 1 (a norm, a std); ``fallback`` where ``flat`` is empty, an entry is
    NaN or infinite, or every entry is 0."""
    top = float(flat.abs().amax()) if flat.numel() else 0.0
    if not math.isfinite(top) or top == 0.0:
        return fallback
    e = math.frexp(top)[1]
    return math.ldexp(float(measure(_times_pow2(flat, -e))), e)


def _pow2_exponent(values: Sequence[float]) -> int | None:
    """``e`` with ``2^e`` above every finite ``|v|`` of ``values`` (``frexp``'s exponent of the
    largest), None where none is finite and nonzero: the exact scale that brings squares of
    ``values / 2^e`` into float64's range."""
    top = max([abs(v) for v in values if math.isfinite(v)], default=0.0)
    return math.frexp(top)[1] if top > 0.0 else None


def host_norm(x: torch.Tensor | np.ndarray, s2: float, hint: float) -> float:
    """``sqrt(s2)`` for the fast ``s2 = sum x^2`` of the CPU array or tensor ``x`` where its
    square is in range, else :func:`scaled_norm` of ``x``. ``hint``: a sum that is 0 when every
    entry is (``sum |x|``, or ``sum x``): an ``s2`` of 0 with a nonzero ``hint`` underflowed
    (entries of 1e-300), one of 0 with a zero ``hint`` is an all-zero tensor (no extra pass)."""
    r = math.sqrt(s2)
    if _norm_in_range(r) and (r != 0.0 or hint == 0.0):
        return r
    return scaled_norm(x, r)


def update_ratio(*norms: float) -> float:
    """``sqrt(sum ||W_n - W_{n-1}||^2 / sum ||W_{n-1}||^2)`` from alternating
    (``||W_{n-1}||``, ``||W_n - W_{n-1}||``) norms of a layer's weight tensors (``inf`` where
    every ``||W_{n-1}||`` is 0). The ratio is scale free: norms whose squares leave float64's
    range (weights beyond ~1e154 or below ~1e-154) are divided by ``2^e`` first (``2^e``
    above every one of them)."""
    den, num = sum(v * v for v in norms[0::2]), sum(v * v for v in norms[1::2])
    if TINY_SQUARE_64 < den < math.inf and num < math.inf:  # the usual case: squares in range
        return math.sqrt(num / den)
    if not all(_norm_in_range(v) for v in norms):
        e = _pow2_exponent(norms)
        if e is not None:
            norms = tuple(math.ldexp(v, -e) for v in norms)
    den, num = sum(v * v for v in norms[0::2]), sum(v * v for v in norms[1::2])
    return math.sqrt(num / den) if den > 0 else math.inf


def update_norms(w: np.ndarray, w0: np.ndarray, s02: float, sd2: float, refresh: bool
                 ) -> tuple[float, float]:
    """``(||W0||, ||W - W0||)`` of a flat weight ``w`` and its snapshot ``w0`` from the weight
    pass's ``s02 = sum W0^2`` and ``sd2 = sum (W - W0)^2``
    (:func:`depthlab.torch.kernels.weight_sums`): their roots where ``s02`` is in
    ``[TINY_SQUARE_64 n, inf)`` and ``sd2`` finite (then the pass copied ``w`` into ``w0``
    when asked), else :func:`scaled_norm` of ``w0`` and of ``w - w0`` (in float64) and, with
    ``refresh``, the copy the pass left undone."""
    if TINY_SQUARE_64 * w.size <= s02 < math.inf and sd2 < math.inf:
        return math.sqrt(s02), math.sqrt(sd2)
    n0 = scaled_norm(w0, math.sqrt(s02))
    n1 = scaled_norm(w.astype(np.float64) - w0, math.sqrt(sd2))
    if refresh:
        w0[:] = w
    return n0, n1


def pooled_mean_std_norms(ns: Sequence[int], cs: Sequence[float], s1: Sequence[float],
                          norms: Sequence[float]) -> tuple[float, float]:
    """:func:`pooled_mean_std` of calls given by their norms ``R_k = sqrt(S2_k)``: the squares
    ``R_k^2`` as they are where they stay in float64's range, else everything (``c_k``,
    ``S1_k``, ``R_k``) divided by ``2^e`` (``2^e`` above every one of them; exact) and the mean
    and std multiplied back (both are homogeneous of degree 1)."""
    if all(_norm_in_range(r) for r in norms):
        return pooled_mean_std(ns, cs, s1, [r * r for r in norms])
    e = _pow2_exponent((*cs, *s1, *norms))
    if e is None:
        return pooled_mean_std(ns, cs, s1, [r * r for r in norms])
    mean, std = pooled_mean_std(ns, [math.ldexp(c, -e) for c in cs],
                                [math.ldexp(a, -e) for a in s1],
                                [math.ldexp(r, -e) ** 2 for r in norms])
    return math.ldexp(mean, e), math.ldexp(std, e)


def _strided(g: torch.Tensor | None) -> torch.Tensor | None:
    """A gradient as a dense tensor: ``nn.Embedding(sparse=True)`` gives a sparse one, whose
    statistics are over every entry of ``dL/dW`` (the untouched rows' zeros included)."""
    return g if g is None or g.layout == torch.strided else g.to_dense()


def norm_dtype(t: torch.Tensor) -> torch.dtype:
    """float64 for the norms of a tensor's entries (squares of ~1e-20 underflow in float32),
    float32 on MPS (no float64 there)."""
    return torch.float32 if t.device.type == "mps" else torch.float64


CHECKED_COPY = 1 << 24  # bytes: a percentile copy this large is checked against free memory


def _check_copy(nbytes: int, shape: tuple, dtype: object) -> None:
    """A :class:`~depthlab.memory.MemoryRefusal` (one line) when the host copy of ``nbytes``
    that the percentile rows keep (each layer output's values, until the model's forward
    ends) does not fit in the memory available: a very wide layer's copy on a full machine
    was left to the operating system (Linear(10, 10**6) on 64 rows: 1.28 GB peak for a
    0.92 GB forward). Copies under :data:`CHECKED_COPY` are not checked (a file read each)."""
    if nbytes < CHECKED_COPY:
        return
    from ..memory import check_fits

    check_fits(nbytes, f"the percentile rows' copy of a tensor of shape {shape} ({dtype}; "
                       "percentiles=() measures without such copies)")


def _joined(parts: list):
    """The concatenation of value copies (NumPy arrays, or device tensors; mixed: NumPy)."""
    if len(parts) == 1:
        return parts[0]
    if all(isinstance(v, np.ndarray) for v in parts):
        return np.concatenate(parts)
    if not any(isinstance(v, np.ndarray) for v in parts):
        return torch.cat(parts)
    return np.concatenate([v if isinstance(v, np.ndarray) else v.cpu().numpy() for v in parts])


def weight_reductions(ts: list[torch.Tensor], want_abs: bool) -> tuple[list, ...]:
    """``sum x`` and ``||x||`` (and ``sum |x|``) of each weight or gradient in ``ts``: a
    :class:`Lazy` each for the tensors that the transfer reduces
    together, fused calls over the rest (``_foreach_norm``; ``|g|`` by one ``_foreach_abs``,
    then sums: faster than ord=1 norms on CPU). Sums in float64 (float32 on MPS), as Acc's: the
    std is sqrt(sum W^2 / n - mean^2), which a float32 sum W left 0.4% off for weights of mean
    0.05 and std 1e-4 (3% after one SGD step)."""
    ds = [defer(v, False) for v in ts]
    rest = [v for v, d in zip(ts, ds) if d is None]
    sums = [v.sum(dtype=norm_dtype(v)) if d is None else Lazy(d, SUM) for v, d in zip(ts, ds)]
    it = iter(torch._foreach_norm(rest, 2, dtype=norm_dtype(rest[0])) if rest else ())
    norms = [next(it) if d is None else Lazy(d, NORM) for d in ds]
    if not want_abs:
        return sums, norms
    it = iter([a.sum(dtype=norm_dtype(a)) for a in torch._foreach_abs(rest)] if rest else ())
    return sums, norms, [next(it) if d is None else Lazy(d, ABS) for d in ds]


class _Relu:
    """A ReLU output's ``sum x`` (from its unit sums) and the copy of its values that
    :meth:`ActAcc.add_relu_output` deferred, for the output's :meth:`Acc.add`."""

    __slots__ = ("total", "d")

    def __init__(self, total, d: Deferred) -> None:
        self.total = total
        self.d = d


class Acc:
    """Statistics of the entries of one or more tensors (the calls of a module), as partial
    sums on the device, combined on the host after the one transfer.

    Per call: ``n_k``, ``S1_k = sum x`` and ``R_k = ||x||`` (one pass each: a reduction and a
    norm, both accumulated in float64, float32 on MPS, so that the squares of vanishing
    gradients, ~1e-20 and below, do not underflow as float32 squares do), pooled
    ``mean = sum S1 / n``, ``var = sum R^2 / n - mean^2``, population std ``sqrt(var)``. The
    float64 ``S1`` matters where the mean is large against the std: ``var`` is a difference of
    two numbers near ``mean^2``, so a float32 ``S1`` (relative error ~``1e-7 sqrt(n)``) would
    leave ``var`` off by about ``1e-7 sqrt(n) mean^2 / var`` (4e-4 on a head with mean -0.35,
    std 0.004). On the CPU kernels' path the same sums come from one pass (float32 lanes per
    block, float64 across blocks). ``want_abs``: ``sum |x|``; ``want_sorted``: a copy of the
    values for percentiles (NumPy's ``linear`` rule on the pooled values).
    """

    __slots__ = ("ns", "cs", "a", "b", "abs", "sorted", "pct", "want_abs", "want_sorted", "_h",
                 "host", "kept", "_fix")

    def __init__(self, want_abs: bool = False, want_sorted: bool = False) -> None:
        self.host = not want_sorted  # every partial sum a host float (the CPU kernels' path)
        self.ns: list[int] = []
        self.cs: list[float] = []  # each call's shift c_k: a holds sum (x - c_k), b its norm
        self.a: list[torch.Tensor] = []
        self.b: list[torch.Tensor] = []
        self.abs: list[torch.Tensor] = []
        self.sorted: list = []
        self.pct: torch.Tensor | None = None
        self.want_abs = want_abs
        self.want_sorted = want_sorted
        self.kept = None  # the values frozen with keep=True, for a merge
        self._fix: dict[int, tuple[float, float, float]] | None = None  # see _recenter

    @property
    def n(self) -> int:
        return sum(self.ns)

    def add(self, x: torch.Tensor, total: torch.Tensor | tuple[float, float] | None = None,
            k=None) -> None:
        """Add one call's tensor; ``total``: its ``sum x`` (a device tensor) or its
        ``(sum x, sum x^2)`` (host floats) when the caller has them already. ``k``:
        :mod:`depthlab.torch.kernels` when the caller has looked it up for the pass (else it is
        looked up here); its :func:`~depthlab.torch.kernels.sums` reads a plain CPU float
        tensor, every other tensor takes the torch operations."""
        if type(total) is tuple and not self.want_abs and not self.want_sorted:
            n = x.numel()  # host sums from the caller's kernel pass (a ReLU's output)
            if n:
                c, s1, s2 = _centered(x, n, *total)
                self.ns.append(n)
                self.cs.append(c)
                self.a.append(s1)
                r = math.sqrt(s2)
                self.b.append(r if NORM_LOW <= r <= NORM_HIGH or c != 0.0
                              else host_norm(x, s2, s1))
            return
        # a tensor outside autograd (a gradient in a backward hook) is read as it is: its
        # detached alias holds the same values (no dispatched op per call)
        f = x if type(x) is torch.Tensor and not x.requires_grad else x.detach()
        owned = type(total) is _Relu  # a copy of the values made for the follower's counts
        if f.dtype not in _KERNEL_DTYPES:
            f = f.to(stat_dtype(f))  # bf16/fp16: statistics in float32
            owned = True
        n = f.numel()
        if n == 0:
            return
        host = None
        if total is None and _host_float(f) and (k is not None
                                                 or (k := watch_kernels()) is not None):
            if self.want_sorted or f.is_neg() or not f.is_contiguous():
                host = f.numpy().ravel("K")  # storage order: no copy for any dense layout
                s1, s2, sabs = k.sums(host)  # one compiled pass, host floats
            else:  # by address: no NumPy view to build and unbox (the same compiled pass)
                s1, s2, sabs = k.sums_at(f.data_ptr(), n, KERNEL_LIKE[f.dtype])
            c, s1, s2 = _centered(f if host is None else host, n, s1, s2)
            self.cs.append(c)
            self.a.append(s1)
            r = math.sqrt(s2)
            self.b.append(r if NORM_LOW <= r <= NORM_HIGH or c != 0.0
                          else host_norm(f.numpy().ravel("K") if host is None else host, s2,
                                         sabs))
            if self.want_abs:
                self.abs.append(sabs)
        elif type(total) is tuple:
            c, s1, s2 = _centered(f, n, *total) if f.is_cpu else (0.0, *total)
            self.cs.append(c)
            self.a.append(s1)
            self.b.append(host_norm(f, s2, s1) if c == 0.0 and f.is_cpu else math.sqrt(s2))
            if self.want_abs:
                self.abs.append(f.abs().sum(dtype=norm_dtype(f)))
                self.host = False
        elif type(total) is _Relu:  # the sum from ActAcc.add_relu_output, values copied there
            self.host = False
            self.cs.append(0.0)
            self.a.append(total.total)
            self.b.append(Lazy(total.d, NORM))
            if self.want_abs:
                self.abs.append(Lazy(total.d, ABS))
        elif (d := defer(f, not owned)) is not None:  # left to the record's end
            self.host = False
            self.cs.append(0.0)
            self.a.append(Lazy(d, SUM) if total is None else total)
            self.b.append(Lazy(d, NORM))
            if self.want_abs:
                self.abs.append(Lazy(d, ABS))
        else:
            self.host = False
            f = f.reshape(-1)
            wide = norm_dtype(f)
            if _synced(f):  # host floats at once, checked while f is as it was: squares out
                # of float64's range rescaled, cancelling sums taken again around the mean
                s1 = float(f.sum(dtype=wide) if total is None else total)
                r = float(torch.linalg.vector_norm(f, dtype=wide))
                if not _norm_in_range(r) or r == 0.0:
                    r = scaled_norm(f, r)
                c = 0.0
                if _cancels(n, s1, r):
                    c, s1, r = _recentered(f, n)
            else:  # a device's float32 tensor: shifted sums, no synchronisation
                c, s1, r = _shifted_sums(f, total)
            self.cs.append(c)
            self.a.append(s1)
            self.b.append(r)
            if self.want_abs:  # (float64: a float32 sum of |x| overflows past 3.4e38)
                self.abs.append(f.abs().sum(dtype=wide))
        self.ns.append(n)
        if self.want_sorted:  # a copy: later in-place operations must not change it
            if f.device.type == "cpu":
                _check_copy(f.numel() * f.element_size(), tuple(x.shape), f.dtype)
            if host is None and f.device.type == "cpu":
                host = f.numpy().ravel("K")
            self.sorted.append(np.array(host, copy=True) if host is not None
                               else f.reshape(-1).clone())
            self.pct = None

    def add_sums(self, x: torch.Tensor, n: int, s1: float, s2: float) -> None:
        """:meth:`add` of one call's CPU tensor ``x`` of ``n = x.numel()`` entries whose
        ``s1 = sum x`` and ``s2 = sum x^2`` (host floats) the caller's kernel pass gave (a layer
        output and its ReLU's, :func:`~depthlab.torch.kernels.layer_relu`): ``(c, S1, S2)`` of
        :func:`_centered`, ``R = sqrt(S2)`` (taken again from the values by :func:`host_norm`
        where it leaves ``[NORM_LOW, NORM_HIGH]`` and ``c = 0``), the same arithmetic as
        :meth:`add` given ``total = (s1, s2)``, without its dispatch on the argument types."""
        if self.want_abs or self.want_sorted:
            self.add(x, (s1, s2))
            return
        if n == 0:
            return
        c, s1, s2 = _centered(x, n, s1, s2)
        self.ns.append(n)
        self.cs.append(c)
        self.a.append(s1)
        r = math.sqrt(s2)
        self.b.append(r if NORM_LOW <= r <= NORM_HIGH or c != 0.0 else host_norm(x, s2, s1))

    def add_plain(self, x: torch.Tensor, k) -> None:
        """:meth:`add` of a call's tensor ``x`` (no ``total``) with the kernels ``k``: a plain
        C-contiguous CPU float32/float64 tensor outside autograd (a gradient in a backward
        hook) is summed by its address, ``(S1, S2, A) = (sum x, sum x^2, sum |x|)`` by
        :func:`~depthlab.torch.kernels.sums_at`, then ``(c, S1, S2)`` of :func:`_centered` and
        ``R = sqrt(S2)`` as in :meth:`add` (the same compiled pass and arithmetic, with the
        argument checks made once); every other tensor, or no kernels, or percentiles, takes
        :meth:`add`."""
        like = KERNEL_LIKE.get(x.dtype) if type(x) is torch.Tensor else None
        if like is None or k is None or self.want_sorted or x.requires_grad or not x.is_cpu \
                or x.layout != torch.strided or x.is_neg() or not x.is_contiguous():
            self.add(x, None, k)
            return
        n = x.numel()
        if n == 0:
            return
        s1, s2, sabs = k.sums_at(x.data_ptr(), n, like)
        c, s1, s2 = _centered(x, n, s1, s2)
        self.cs.append(c)
        self.a.append(s1)
        r = math.sqrt(s2)
        self.b.append(r if NORM_LOW <= r <= NORM_HIGH or c != 0.0
                      else host_norm(x.numpy().ravel("K"), s2, sabs))
        if self.want_abs:
            self.abs.append(sabs)
        self.ns.append(n)

    def freeze(self, percentiles: Sequence[float], keep: bool = False) -> None:
        """Compute the percentiles of the pooled values and drop the copies (memory; with
        ``keep`` their concatenation stays in :attr:`kept` for a :meth:`merge`, together with
        the values kept before: a model whose forward calls the model itself froze the inner
        call's values at its end, and the outer call's percentiles were of the rest alone)."""
        vals = self.sorted
        if not vals:
            return
        if keep and self.kept is not None:
            vals = [_joined([self.kept, *vals])]
        if isinstance(vals[0], np.ndarray):
            if len(vals) > 1:
                _check_copy(sum(a.nbytes for a in vals), (sum(a.size for a in vals),),
                            vals[0].dtype)
            v = vals[0] if len(vals) == 1 else np.concatenate(vals)
            self.pct = partition_percentiles(v, percentiles)
        else:
            v = vals[0] if len(vals) == 1 else torch.cat(vals)
            self.pct = sorted_percentiles(torch.sort(v).values, percentiles)
        self.sorted = []
        if keep:
            self.kept = v

    def merge(self, other: Acc) -> None:
        """Pool ``other``'s calls (another forward's) into this one; percentiles from both
        forwards' :attr:`kept` values (frozen with ``keep``), to be taken again by
        :meth:`freeze`."""
        self.ns += other.ns
        self.cs += other.cs
        self.a += other.a
        self.b += other.b
        self.abs += other.abs
        self.host = self.host and other.host
        mine, theirs = self._values(), other._values()
        if mine is not None and theirs is not None:
            self.kept = _joined([mine, theirs])
            self.sorted = [self.kept]
            self.pct = None

    def _values(self):
        """The values of this pass's calls for percentiles: those kept at its freeze, else
        (a pass that a nested call of the model rolled before its end) its copies."""
        if self.kept is not None:
            return self.kept
        return _joined(self.sorted) if self.sorted else None

    def gather(self, t: Transfer) -> None:
        """Queue the partial sums (and percentiles) for the transfer; calls whose values the
        transfer holds (deferred) are checked for cancellation there (:meth:`_recenter`)."""
        self._h = [t.add_all(self.a), t.add_all(self.b), t.add_all(self.abs) if self.abs else None,
                   t.add(self.pct) if self.pct is not None else None,
                   t.add_all(self.cs) if not self.host else None]
        self._fix = None
        if not self.host:
            for v in self.b:
                if type(v) is Lazy:
                    t.held.append(self._recenter)
                    break

    def _recenter(self, t: Transfer) -> None:
        """The calls whose norm was deferred and whose ``sum x^2 / n - mean^2`` cancels
        (:func:`_cancels`): their sums taken again around their mean from the values the
        transfer still holds (:func:`_recentered`), kept in ``_fix`` for :meth:`result`."""
        ha, hb, _, _, hc = self._h
        a, b = t.get(ha), t.get(hb)
        for k, z in enumerate(self.b):
            if type(z) is Lazy and z.d.t is not None and _cancels(self.ns[k], a[k], b[k]):
                if self._fix is None:
                    self._fix = {}
                self._fix[k] = _recentered(z.d.t, self.ns[k])

    def result(self, t: Transfer) -> dict[str, float | list[float]]:
        """``mean``, ``std`` (population), ``absmean``, ``pct`` from the host values."""
        ha, hb, habs, hpct, hc = self._h
        n = sum(self.ns)
        cs, s1, norms = (self.cs if hc is None else t.get(hc)), t.get(ha), t.get(hb)
        if self._fix:
            cs, s1, norms = list(cs), list(s1), list(norms)
            for k, (c, a, r) in self._fix.items():
                cs[k], s1[k], norms[k] = c, a, r
        mean, std = pooled_mean_std_norms(self.ns, cs, s1, norms)
        out: dict[str, float | list[float]] = {"mean": mean, "std": std}
        if habs is not None:
            out["absmean"] = sum(t.get(habs)) / n
        if hpct is not None:
            out["pct"] = t.get(hpct)
        return out


_RELU_KIND = (nn.ReLU, "")
"""What :meth:`ActAcc.follower` makes of any ``nn.ReLU``."""


class ActAcc:
    """Statistics of a layer's follower: output moments/percentiles and, for an activation,
    counts on its input ``s``: saturated entries (bounded activations), inactive entries
    ``s <= 0`` (ReLU family) and the units where ``f'(s) != 0`` somewhere."""

    __slots__ = ("out", "spec", "n", "saturated", "inactive", "n_active", "active", "alive",
                 "units", "dead_ok", "host", "kind", "mixed", "module")

    def __init__(self, out: Acc) -> None:
        self.host = True  # counts and masks on the host only (the CPU kernels' ReLU path)
        self.out = out
        self.kind: tuple | None = None  # the follower module's class and settings
        self.module: nn.Module | None = None  # the last follower seen (its kind known)
        self.mixed = False  # followers of different kinds in one pass: no rows (see follower)
        self.spec: ActivationSpec | None = None
        self.n = 0
        self.saturated: list = []
        self.inactive: list = []
        self.n_active = 0
        self.active: list = []
        self.alive: torch.Tensor | np.ndarray | None = None
        self.units: torch.Tensor | None = None  # a ReLU call's unit sums, pending (_settle)
        self.dead_ok = True

    def follower(self, module: nn.Module) -> None:
        """Note the activation module of a call: calls of one layer whose outputs go into
        activations of different kinds (``tanh(fc(a)) + relu(fc(b))``) were pooled into one
        act_std, saturated_frac and inactive_frac of neither; such a layer gets no act rows
        (:attr:`mixed`). One kind: the class and its settings (``inplace`` aside)."""
        if module is self.module:  # the usual case, and every step of a cell loop: no repr
            return
        if type(module) is nn.ReLU and "extra_repr" not in module.__dict__:
            kind = _RELU_KIND  # (its repr is 'inplace=True' or nothing)
        else:
            kind = (type(module), module.extra_repr().replace("inplace=True", "").strip(", "))
        if self.kind is None:
            self.kind = kind
        elif kind != self.kind:
            self.mixed = True
        self.module = module

    def merge(self, other: ActAcc) -> None:
        """Pool ``other``'s calls (another forward's) into this one."""
        self.out.merge(other.out)
        if other.kind is not None:
            self.mixed = self.mixed or other.mixed or (
                self.kind is not None and other.kind != self.kind)
            self.kind = self.kind or other.kind
        self.spec = self.spec or other.spec
        self.n += other.n
        self.saturated += other.saturated
        self.inactive += other.inactive
        self.n_active += other.n_active
        self.active += other.active
        if other.units is not None:
            if self.alive is None and self.units is None:
                self.units = other.units
            else:
                self._pool_alive(other.units != 0)
        if other.alive is not None:
            self._pool_alive(other.alive)
        self.dead_ok = self.dead_ok and other.dead_ok
        self.host = self.host and other.host

    def _units(self, peak: torch.Tensor | np.ndarray) -> None:
        """Pool the per-unit maxima of ``|f'|`` (a unit is alive where it is > 0, or NaN: as
        the NumPy probes, a NaN derivative is not 0); a tensor on the device, or a NumPy array
        from the CPU kernels' path."""
        self._pool_alive(~(peak <= 0))

    def _pool_alive(self, alive: torch.Tensor | np.ndarray) -> None:
        """OR a call's live-unit mask into the pass's (calls of other shapes: no dead_frac)."""
        self._settle()
        if self.alive is None:
            self.alive = alive
        elif tuple(self.alive.shape) == tuple(alive.shape):
            if isinstance(self.alive, np.ndarray) != isinstance(alive, np.ndarray):
                # calls measured on both paths (rare): pool on the host
                self.alive, alive = (v if isinstance(v, np.ndarray) else v.cpu().numpy()
                                     for v in (self.alive, alive))
            self.alive = self.alive | alive
        else:
            self.dead_ok = False

    @staticmethod
    def _dims(t: torch.Tensor, axis: int) -> tuple[int, ...]:
        ax = axis % t.dim()
        return tuple(i for i in range(t.dim()) if i != ax)

    def add_derivative(self, s: torch.Tensor, spec: ActivationSpec, axis: int,
                       layout=None) -> None:
        """Counts on the activation's input ``s`` (forward pre-hook, before an in-place
        activation overwrites it). ReLU is counted from its output instead
        (:meth:`add_relu_output`). ``layout``: the map of ``s``'s shape into the layer
        output's (``s`` a reshaped view of it), applied to ``f'(s)`` before the units are
        read on ``axis``."""
        self.spec = spec
        self.host = False
        f = s.detach().to(stat_dtype(s))
        if f.numel() == 0:  # an empty batch: no entries, no unit seen (a recorded step on a
            return  # batch of 0 rows raised amax's IndexError inside the user's forward)
        self.n += f.numel()
        d = spec.derivative(f).abs()
        if spec.bounded:
            self.saturated.append(spec.saturated(f, d).sum())
        if spec.relu_family:
            self.inactive.append((f <= 0).sum())
        if layout is not None:
            d = layout(d)
        if d.dim() == 0:
            self.dead_ok = False
            return
        self._units(d.amax(dim=self._dims(d, axis)) if d.dim() > 1 else d)

    def add_relu_counts(self, n: int, off: int, alive: np.ndarray, spec: ActivationSpec
                        ) -> None:
        """A ReLU call of ``n`` entries counted on the host, from its output
        (:meth:`add_relu_output`) or from its input (:func:`depthlab.torch.kernels.layer_relu`):
        ``off = #{s <= 0}`` and the live-unit mask."""
        self.spec = spec
        self.n += n
        self.n_active += n
        self.active.append(float(n - off))
        if self.alive is None and self.units is None:  # the first mask: _pool_alive's
            self.alive = alive  # answer without its frames
        else:
            self._pool_alive(alive)

    def add_relu_output(self, a: torch.Tensor, spec: ActivationSpec, axis: int, wk=None
                        ) -> torch.Tensor | tuple[float, float] | None:
        """ReLU: ``s <= 0`` exactly where ``a = relu(s) == 0`` and ``f'(s) != 0`` exactly where
        ``a > 0``, so the output serves (valid after an in-place ReLU too). Since ``a >= 0``, a
        unit's sum ``u_j`` over the other axes is > 0 exactly where the unit is alive, and
        ``sum_j u_j = sum a``: one reduction gives both; returned (None for a 0-d ``a``) for
        the output's moments. On a CPU float tensor with the kernels, one pass gives
        ``sum a``, ``sum a^2`` and ``#{a <= 0}`` instead (returned as host floats); ``wk``:
        :mod:`depthlab.torch.kernels` when the caller has looked it up for the pass."""
        a = a.detach()
        copied = a.dtype not in _KERNEL_DTYPES
        if copied:
            a = a.to(stat_dtype(a))  # bf16 sums of ones would round
        n = a.numel()
        if wk is None and a.dim() and cpu_kernels(a) is not None:
            wk = watch_kernels()
        if wk is not None and a.dim() and _host_float(a):
            # one pass: moments, inactive entries and live units on the host
            v = a.numpy()
            ax = axis % v.ndim
            shape = v.shape
            units = shape[ax]
            alive = np.zeros(units, dtype=bool)
            s1, s2, off = wk.relu_units(
                v.reshape(math.prod(shape[:ax]), units, math.prod(shape[ax + 1:])), alive)
            self.add_relu_counts(n, off, alive, spec)
            return s1, s2
        self.spec = spec
        self.n += n
        self.n_active += n
        self.host = False
        d = defer(a, not copied) if a.dim() else None
        # a >= 0: the entries > 0, and NaN ones (not s <= 0, as on the kernels' path)
        self.active.append((a != 0).sum() if d is None else Lazy(d, NONZERO))
        if a.dim() == 0:
            self.dead_ok = False
            return None
        # float64 unit sums (Acc: sum x in float64), the moments' sum x is their sum
        units = a.sum(dim=self._dims(a, axis), dtype=norm_dtype(a)) if a.dim() > 1 \
            else a.to(norm_dtype(a))
        if d is None:
            self._units(units)
            return units.sum()
        if a.dim() == 1:  # the units are the entries: read from the copy (a may change)
            units = d.t
        # unit sums of entries >= 0 are 0 (dead) or > 0 or NaN (alive): a unit is alive where
        # its sum is != 0; a single call's count of them is left to the transfer (live)
        if self.alive is None and self.units is None:
            self.units = units
        else:
            self._pool_alive(units != 0)
        u = defer(units, False)
        return _Relu(Lazy(u, SUM) if u is not None else units.sum(), d)

    def live(self, t: Transfer) -> tuple | None:
        """``(handle of the number of live units, units)`` for the transfer ``t``, None
        without a live-unit mask."""
        if self.units is not None:
            d = defer(self.units, False)
            if d is not None:
                return t.add(Lazy(d, NONZERO)), self.units.numel()
            self._settle()
        alive = self.alive
        if alive is None:
            return None
        if isinstance(alive, np.ndarray):
            return t.add(float(np.count_nonzero(alive))), alive.size
        return t.add(alive.sum()), alive.numel()

    def _settle(self) -> None:
        """The pending unit sums of a ReLU call (:meth:`add_relu_output`) as a live-unit
        mask."""
        if self.units is not None:
            units, self.units = self.units, None
            self._pool_alive(units != 0)
