"""``ProbeRecorder``: a training callback that measures every hidden layer as training goes.

Schedule. Step ``k`` means "the network after ``k`` optimizer updates". The recorder measures
at step 0 (initialization, in ``on_train_begin``), at every ``every``-th step and at the end of
training (``on_train_end``), plus any step listed in ``histogram_steps`` or ``jacobian_steps``.

Two sources of measurements:

* **probe batch** (default, ``probe_x``/``probe_y`` given; Glorot & Bengio's 300 held-out
  examples): after the update of a recorded step, one extra forward (training mode, batch norm
  on the probe batch's statistics without touching its running statistics, dropout off), loss
  and backward on the fixed probe batch; see :func:`depthlab.probes.stats.measurement_pass`.
  Parameter gradients and layer caches are overwritten after the optimizer has used them, so
  training is unchanged (same losses, same random numbers).
* **training batch** (``probe_x=None``): no extra pass; the statistics of step ``k`` are read
  from the caches of the forward/backward of update ``k + 1`` (the weights after ``k`` updates
  on that step's mini-batch, with its dropout masks) just before the optimizer uses them, and
  ``loss`` is that mini-batch's training loss (no ``acc``): the objective the optimizer
  follows, so with ``fit(l1=, l2=)`` the loss and the weight gradients include the penalty
  (``dl.probe`` and the probe batch measure the data loss alone). The final state (after the last
  update) has no mini-batch and is not measured. Cheapest; meant for ``every=1``.

``update_ratio`` at step ``k`` is ``||W_k - W_{k-1}|| / ||W_{k-1}||`` (Frobenius norms) of the
weights feeding each hidden layer: the weights are copied in ``before_update`` of recorded
steps only. A further ``Trainer.fit`` of the same trainer continues its step count and the
recorder its records (a new trainer starts them afresh). Only summaries are stored (compact
``array`` columns, no NumPy arrays), so memory grows with the number of records, not with batch
or layer size.
"""

from __future__ import annotations

import math
import weakref
from array import array
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..backend import Array, data_array
from ..losses import Loss, get_loss
from ..memory import CHECK_FROM_BYTES, check_batch, check_fits
from ..training.data_checks import finite_features, transposed_hint
from ..training.trainer import Callback

if TYPE_CHECKING:
    from ..training import History, Trainer
from ..validators import check_bn_probe_rows, keyword_hints, positive_int
from . import accel
from .fused import LayerStats
from .histograms import (
    HISTOGRAM_COLUMNS,
    HISTOGRAM_KINDS,
    NONFINITE_COLUMNS,
    bin_edges,
    histogram_nonfinite,
)
from .jacobian import check_jacobian, jacobian_singular_values
from .stats import (
    _TINY_SQUARE,
    PERCENTILES,
    _power_scale,
    check_percentiles,
    layer_quantities,
    layer_stats,
    measurement_pass,
)

DEFAULT_JACOBIAN_EXAMPLES = 4
"""Probe examples whose input-output Jacobian is decomposed at ``jacobian_steps``."""


def _step_set(name: str, steps: Iterable[Any] | None) -> tuple[set[int], bool]:
    """Parse a collection of steps (ints >= 0 and/or ``"end"``) into (set, includes_end)."""
    if steps is None:
        return set(), False
    if isinstance(steps, (str, int)):
        steps = [steps]
    out: set[int] = set()
    end = False
    for s in steps:
        if isinstance(s, str) and s.strip().lower() == "end":  # as a [probes] list reads it
            end = True
        elif isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0:
            out.add(int(s))
        else:
            raise ValueError(
                f"{name} entries must be step numbers >= 0 or 'end', got {s!r}"
            )
    return out, end


def _squares(f: Array) -> float:
    """``sum f_i^2`` of a flat array by one BLAS dot product, again in float64 where the
    dtype's own sum overflowed or may have lost squares to underflow (float32 weights of 1e35
    read an infinite norm, and an update ratio of NaN; weights of 1e-25 a norm of 0)."""
    s = float(np.dot(f, f))
    if f.dtype != np.float64 and not (_TINY_SQUARE.get(f.dtype.itemsize, 0.0) * f.size <= s
                                      < math.inf):
        g = f.astype(np.float64)
        s = float(np.dot(g, g))
    return s


def update_norms(w: Array, w0: Array) -> tuple[float, float]:
    """``(||w0||, ||w - w0||)`` (Frobenius) of a weight ``w`` and its earlier value ``w0``,
    finite wherever the float64 norms are (float32 squares that overflow or underflow are
    summed again in float64); ``w0`` may be overwritten. The update ratio of the recorder and
    of the playground."""
    kernels = accel.for_array(w0)
    if kernels is not None and w.dtype == w0.dtype and w.flags.c_contiguous:
        sq0, sq1 = kernels.update_norms(w.reshape(-1), w0.reshape(-1))
        if sq0 < math.inf and sq1 < math.inf:
            return math.sqrt(sq0), math.sqrt(sq1)
        return _scaled_update_norms(w, w0, math.sqrt(sq0), math.sqrt(sq1))
    f = w0.reshape(-1)
    sq0 = _squares(f)
    if not sq0 < math.inf:
        return _scaled_update_norms(w, w0, math.sqrt(sq0), math.nan)
    n0 = math.sqrt(sq0)
    np.subtract(w, w0, out=w0)  # w0 now holds the update
    sq1 = _squares(f)
    if not sq1 < math.inf:  # (the update alone overflowed: its norm, w0 of zeros)
        return n0, _scaled_update_norms(f, np.zeros(1, f.dtype), math.nan,
                                        math.sqrt(sq1))[1]
    return n0, math.sqrt(sq1)


def _scaled_update_norms(w: Array, w0: Array, n0: float, n1: float) -> tuple[float, float]:
    """:func:`update_norms` of finite weights whose sums of squares overflowed (float64
    entries above ~1e154): taken on ``w / 2^e`` and ``w0 / 2^e`` (exact power-of-two scaling,
    ``max(|w|, |w0|) < 2^e``) and scaled back; ``(n0, n1)`` as given where an entry is NaN
    or infinite (the norms' inf/NaN are the weights' own)."""
    if not (np.isfinite(w).all() and np.isfinite(w0).all()):
        return n0, n1
    e = max(_power_scale(w) or 0, _power_scale(w0) or 0)  # (None: all zeros)
    a = np.ldexp(w0.reshape(-1).astype(np.float64), -e)
    b = np.ldexp(w.reshape(-1).astype(np.float64), -e)
    b -= a  # (a w0 of one zero broadcasts)
    return (math.ldexp(math.sqrt(float(np.dot(a, a))), e),
            math.ldexp(math.sqrt(float(np.dot(b, b))), e))


def _update_ratio(weight: Any, w0: Array) -> float | None:
    """``||W - W0|| / ||W0||`` of a parameter ``weight`` and the copy ``w0`` of its earlier value
    (``inf`` for ``W0 = 0``; None when the weights were given another shape or dtype since the
    copy). ``w0`` may be overwritten."""
    w = weight.value
    if w.shape != w0.shape or w.dtype != w0.dtype:
        return None
    n0, n1 = update_norms(w, w0)
    return n1 / n0 if n0 > 0 else math.inf


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


class ProbeRecorder(Callback):
    """Per-layer statistics during training (a :class:`depthlab.training.Callback`).

    Parameters
    ----------
    probe_x, probe_y:
        The fixed probe batch (e.g. 300 held-out examples), or both None to measure on the
        training mini-batches instead (see the module docstring).
    loss:
        Loss name or object for the probe batch; None uses the trainer's loss.
    every:
        Record every ``every`` optimizer steps (and at step 0 and at the end).
    histogram_steps:
        Steps with histograms (ints and/or ``"end"``). None (default): step 0, the recorded
        steps ``every * 2^j`` (log-spaced) and the end. ``()`` for none.
    n_bins:
        Bins per histogram (edges chosen from each histogram's own data).
    jacobian_steps:
        Steps (ints and/or ``"end"``) at which the singular values of the input-output
        Jacobian of the first ``jacobian_examples`` probe examples are recorded.
    percentiles:
        Percentiles of pre-activations and activations recorded as ``pre_pK``/``act_pK``;
        ``()`` records none and skips the sort behind them (the cheapest every-step setting).
    """

    @keyword_hints
    def __init__(
        self,
        probe_x: Array | None = None,
        probe_y: Array | None = None,
        loss: str | Loss | None = None,
        every: int = 10,
        histogram_steps: Iterable[int | str] | None = None,
        n_bins: int = 50,
        jacobian_steps: Iterable[int | str] = (),
        percentiles: Sequence[float] = PERCENTILES,
        jacobian_examples: int = DEFAULT_JACOBIAN_EXAMPLES,
    ) -> None:
        if (probe_x is None) != (probe_y is None):
            raise ValueError("give both probe_x and probe_y, or neither (training-batch mode)")
        if probe_x is not None:
            probe_x = data_array(probe_x, "probe_x")
            probe_y = data_array(probe_y, "probe_y")
            if probe_x.ndim != 2 or probe_x.shape[0] == 0:
                raise ValueError(f"probe_x must be a non-empty (n, d) array, got shape "
                                 f"{probe_x.shape}")
            if probe_y.ndim == 0:  # probe_y.shape[0]: a bare IndexError
                raise TypeError(f"probe_y={probe_y.item()!r:.40} is not accepted (one number); "
                                f"accepted: an array of {probe_x.shape[0]} labels or targets, "
                                "one per row of probe_x (as fit's y)")
            if probe_y.shape[0] != probe_x.shape[0]:
                raise ValueError(f"probe_y has {probe_y.shape[0]} rows but probe_x has "
                                 f"{probe_x.shape[0]}"
                                 + transposed_hint(probe_x.shape[0], probe_y.shape))
        self.probe_x = probe_x
        self.probe_y = probe_y
        self._loss_spec = get_loss(loss) if loss is not None else None
        if getattr(self._loss_spec, "reduction", "mean") == "none":  # as dl.probe's (NumPy's
            # "only 0-dimensional arrays can be converted to Python scalars" at the first probe)
            raise ValueError(f"loss={self._loss_spec!r}: a probe measures one loss per batch; "
                             "accepted: reduction='mean' (the default) or 'sum'")
        self.every = positive_int("every", every)
        self.n_bins = positive_int("n_bins", n_bins)
        self.jacobian_examples = positive_int("jacobian_examples", jacobian_examples)
        self.percentiles = check_percentiles(percentiles)
        self._hist_default = histogram_steps is None
        self._hist_steps, self._hist_end = _step_set("histogram_steps", histogram_steps)
        if self._hist_default:
            self._hist_end = True
        self._jac_steps, self._jac_end = _step_set("jacobian_steps", jacobian_steps)
        # steps measured besides the multiples of `every` (asked at every step otherwise)
        self._sparse_steps = bool(self._jac_steps) or (not self._hist_default
                                                       and bool(self._hist_steps))
        if probe_x is None and (self._jac_steps or self._jac_end):
            raise ValueError("jacobian_steps need a probe batch (probe_x, probe_y)")
        self._layer_q = layer_quantities(self.percentiles)
        self._last_trainer: weakref.ref | None = None
        self._reset()

    # -- storage -----------------------------------------------------------------------
    def _reset(self) -> None:
        self._qnames: list[str] = []
        self._qcode: dict[str, int] = {}
        self._col_step = array("q")
        self._col_layer = array("i")
        self._col_q = array("H")
        self._col_value = array("d")
        # one row per layer record: step, layer, then the values of layer_quantities (a block
        # of len(self._layer_q) in _block_values); expanded to tidy rows by frame()
        self._block_step = array("q")
        self._block_layer = array("i")
        self._block_values = array("d")
        self._hist: list[tuple[int, int, str, float, float, array, tuple[int, int, int]]] = []
        self._jac: list[tuple[int, int, int, float]] = []
        self._stat_steps: set[int] = set()
        self._hist_done: set[int] = set()
        self._jac_done: set[int] = set()
        self._w_before: dict[int, tuple] = {}  # layer -> (W, its copy, ...): _snapshot_buffers
        self._w_buffers: dict[int, Any] = {}  # reused copies of W (no allocation per record)
        self._snapshots: dict[int, tuple] | None = None  # reused while valid
        self._snap_points: list = []  # the probe points of self._snapshots, in its order
        self._snap_check: list = []  # (dense, weight, its value) per snapshot: still valid?
        self._pending_loss: int | None = None
        self._net = None
        self._trainer = None
        self._points: list = []  # the network's probe points, fixed from on_train_begin on
        self._kernel_stats: list[LayerStats] = []
        self._snap_list: tuple | None = None  # (snapshots, their buffers per point)
        self._no_buffers: tuple = ()  # None per probe point
        self._x = None
        self._loss: Loss | None = None
        self._layer_codes = array("H", [self._code(n) for n in self._layer_q])

    def _code(self, name: str) -> int:
        c = self._qcode.get(name)
        if c is None:
            c = self._qcode[name] = len(self._qnames)
            self._qnames.append(name)
        return c

    def _add(self, step: int, layer: int, name: str, value: float) -> None:
        self._col_step.append(step)
        self._col_layer.append(layer)
        self._col_q.append(self._code(name))
        self._col_value.append(float(value))

    def _add_layer(self, step: int, layer: int, values: list[float] | np.ndarray) -> None:
        self._block_step.append(step)
        self._block_layer.append(layer)
        if isinstance(values, np.ndarray):  # float64 from the kernels: copied as bytes
            self._block_values.frombytes(values.tobytes())
        else:
            self._block_values.extend(values)

    # -- schedule ----------------------------------------------------------------------
    def _wants_stats(self, step: int) -> bool:
        return step % self.every == 0

    def _wants_hist(self, step: int, final: bool = False) -> bool:
        if final and self._hist_end:
            return True
        if self._hist_default:
            return step == 0 or (step % self.every == 0 and _is_pow2(step // self.every))
        return step in self._hist_steps

    def _wants_jac(self, step: int, final: bool = False) -> bool:
        return (final and self._jac_end) or step in self._jac_steps

    def _wants_any(self, step: int) -> bool:
        """Whether step ``step`` is measured at all (stats, histograms or a Jacobian; called
        at every step, so the default histogram steps, all multiples of ``every``, are not
        looked up)."""
        if step % self.every == 0:
            return True
        return (not self._hist_default and step in self._hist_steps) or step in self._jac_steps

    # -- measurement -------------------------------------------------------------------
    def _layer_records(self, step: int, hist: bool, stats: bool = True,
                       snapshots: dict[int, tuple] | None = None) -> int:
        """Statistics and/or histograms of every probe point at ``step``. ``snapshots``: layer
        index -> (its weights, the buffer that is to receive a copy of them); with the compiled
        kernels the copy is made in the statistics' pass over the weights. Returns how many
        buffers received their copy."""
        copied = self._statistics(step, snapshots) if stats else 0
        if hist:
            with np.errstate(all="ignore"):
                for p in self._points:
                    self._histograms(step, p)
            self._hist_done.add(step)
        return copied

    def _statistics(self, step: int, snapshots: dict[int, tuple] | None) -> int:
        """Every probe point's statistics at ``step``, one block row each: the compiled
        kernel's (which also copies the feeding weights into the point's snapshot buffer, when
        given), or the NumPy path's where the kernel declines. Returns how many snapshot
        buffers the kernels filled."""
        copied = 0
        add_step = self._block_step.append
        add_layer = self._block_layer.append
        add_values = self._block_values.frombytes
        bufs = self._snapshot_list(snapshots)
        for p, kernel_stats, buf in zip(self._points, self._kernel_stats, bufs):
            values = kernel_stats(buf)
            if values is None:  # no kernels, or a layer the NumPy path must decide
                with np.errstate(all="ignore"):  # (the kernels raise no warnings)
                    self._add_layer(step, p.index, layer_stats(p, self.percentiles))
                continue
            copied += buf is not None
            add_step(step)
            add_layer(p.index)
            add_values(values.tobytes())  # float64 from the kernels
        self._stat_steps.add(step)
        return copied

    def _snapshot_list(self, snapshots: dict[int, tuple] | None) -> list | tuple:
        """The snapshot buffer of each probe point, in ``self._points``' order (None where
        the point has none), kept with the snapshot layout it was made from."""
        n = len(self._points)
        if not snapshots:
            if len(self._no_buffers) != n:
                self._no_buffers = (None,) * n
            return self._no_buffers
        got = self._snap_list
        if got is None or got[0] is not snapshots or len(got[1]) != n:
            got = self._snap_list = (snapshots, [
                None if (snap := snapshots.get(p.index)) is None else snap[1]
                for p in self._points])
        return got[1]

    def _histograms(self, step: int, point) -> None:
        act = point.activation
        arrays = {"pre": act.s, "act": act.a, "grad": act.grad_s,
                  "weight": None if point.dense is None else point.dense.W.value}
        for kind in HISTOGRAM_KINDS:
            x = arrays[kind]
            if x is None:
                continue
            # per layer, kind, step; counts of the finite entries, the others counted apart
            lo, hi, counts, bad = histogram_nonfinite(kind, x, self.n_bins, act.fn)
            self._hist.append((step, point.index, kind, lo, hi,
                               array("q", counts.astype(np.int64, copy=False).tobytes()), bad))

    def _probe_record(self, step: int, final: bool = False) -> None:
        stats = step not in self._stat_steps
        hist = self._wants_hist(step, final) and step not in self._hist_done
        jac = self._wants_jac(step, final) and step not in self._jac_done
        if stats or hist:
            value, acc = measurement_pass(self._net, self._x, self.probe_y, self._loss)
            if stats:
                self._add(step, 0, "loss", value)
                if acc is not None:
                    self._add(step, 0, "acc", acc)
            self._layer_records(step, hist, stats)
        if jac:
            # an inference-mode pass: population batch norms need statistics for these weights
            self._trainer.prepare_inference()
            sv = jacobian_singular_values(self._net, self._x[: self.jacobian_examples])
            for e in range(sv.shape[0]):
                for i in range(sv.shape[1]):
                    self._jac.append((step, e, i, float(sv[e, i])))
            self._jac_done.add(step)

    # -- Callback hooks ----------------------------------------------------------------
    def on_train_begin(self, trainer: Trainer) -> None:
        """The Callback hook at the start of training: a new record, or the same one continued
        by a further ``fit`` of the same trainer."""
        # A further fit() of the same trainer continues its steps: the records go on with them
        # (labelled by the trainer's step); another trainer starts a new record.
        last = self._last_trainer
        if not (trainer.step > 0 and last is not None and last() is trainer):
            self._reset()
        self._last_trainer = weakref.ref(trainer)
        net = trainer.net
        self._net = net
        self._trainer = trainer
        self._points = net.probe_points()
        self._check_record_memory(getattr(trainer, "planned_steps", None))
        # per point: the kernel's arguments kept from record to record (fused.LayerStats)
        self._kernel_stats = [LayerStats(p, self.percentiles) for p in self._points]
        self._no_buffers = (None,) * len(self._points)
        self._snapshots = None  # new probe points: the snapshot layout is built again
        self._snap_list = None
        self._loss = self._loss_spec if self._loss_spec is not None else trainer.loss
        if self.probe_x is not None:
            if self.probe_x.shape[1] != net.n_inputs:
                raise ValueError(f"probe_x has {self.probe_x.shape[1]} features; the network "
                                 f"expects {net.n_inputs}")
            if net.batchnorms():
                check_bn_probe_rows(self.probe_x.shape[0], "probe_x")
            # the measurement pass's activations must fit, as dl.probe's on the same batch
            check_batch(net, self.probe_x.shape[0], "probe batch")
            if self._jac_steps or self._jac_end:  # refused now, not after the training
                check_jacobian(net, min(self.jacobian_examples, self.probe_x.shape[0]),
                               "ProbeRecorder's Jacobian (jacobian_examples)")
            # NaN, inf or values too large for the network's dtype: refused, row and column;
            # standardized from float64 as fit's data are (cast to float32 first, a feature
            # 1e7 + N(0, 1) was rounded to integers: the probes measured other inputs)
            raw = np.float64 if getattr(trainer, "standardizer", None) is not None else net.dtype
            self._x = trainer.transform(finite_features(self.probe_x, raw, "probe_x"))
            self._check_probe_y(net)
            self._probe_record(trainer.step)

    def _check_record_memory(self, steps: int | None) -> None:
        """Refuse (:class:`~depthlab.memory.MemoryRefusal`) before the first update a run
        whose records cannot fit: at least ``(steps // every + 1) * layers * (8 q + 12)``
        bytes for ``q`` per-layer quantities (a float64 each, and the record's step and layer)
        (``every=1`` over 10**8 updates of a 6-layer network needs ~100 GB)."""
        self._check_histogram_memory(steps)
        if not steps or not self._points:
            return
        records = steps // self.every + 1
        nbytes = records * len(self._points) * (8 * len(self._layer_q) + 12)
        if nbytes > CHECK_FROM_BYTES:
            check_fits(nbytes, f"ProbeRecorder(every={self.every}) over {steps:,} updates "
                       f"({records:,} records of {len(self._points)} layers; a larger every "
                       "or fewer steps)")

    def _check_histogram_memory(self, steps: int | None) -> None:
        """Refuse before the first update histograms whose bins cannot fit: ``h * layers *
        4 kinds * n_bins * 8`` bytes of int64 counts kept, plus ``3 * n_bins * 8`` while one
        is counted, for ``h`` histogram steps (the default: step 0, ``every * 2^j`` and the
        end; an open-ended run at least step 0). ``n_bins=10**9`` was counted for minutes,
        8 GB per histogram, with no refusal."""
        if not self._points:
            return
        if self._hist_default:
            if steps:
                h = 2 + (int(steps // self.every).bit_length() if steps >= self.every else 0)
            else:
                h = 1
        else:
            h = (sum(1 for t in self._hist_steps if not steps or t <= steps)
                 + bool(self._hist_end))
        if not h:
            return
        nbytes = (h * len(self._points) * len(HISTOGRAM_KINDS) + 3) * self.n_bins * 8
        if nbytes > CHECK_FROM_BYTES:
            check_fits(nbytes, f"ProbeRecorder(n_bins={self.n_bins:,}) histograms ({h:,} "
                       f"histogram steps x {len(self._points)} layers x "
                       f"{len(HISTOGRAM_KINDS)} kinds; fewer n_bins or histogram_steps)")

    def _check_probe_y(self, net) -> None:
        """The loss's checks of ``probe_y`` (labels in range, shape, finiteness) against a zero
        prediction of the network's output width, so that a bad target names ``probe_y`` (it
        failed inside the first measurement as "cross_entropy: label 7 out of range")."""
        if type(self._loss).__module__ != "depthlab.losses" or not net.dense_layers():
            return
        width = net.dense_layers()[-1].W.value.shape[1]
        zeros = np.broadcast_to(np.zeros((), net.dtype), (self.probe_y.shape[0], width))
        try:
            with np.errstate(all="ignore"):
                self._loss.forward(zeros, self.probe_y)
        except (ValueError, TypeError) as e:
            raise type(e)(f"probe_y: {e}") from None
        finally:
            self._loss._cache = None  # nothing of the check is kept

    def before_update(self, trainer: Trainer, step: int) -> None:
        """The Callback hook before the update of ``step``: probe the layers if the step is
        due, and copy the weights for its update ratio."""
        every = self.every
        snap = step % every == 0
        label = step - 1
        record = self.probe_x is None and (label % every == 0 or (
            self._sparse_steps and self._wants_any(label)))
        if not (snap or record):
            return
        snapshots = self._snapshot_buffers() if snap else None
        copied = 0
        if record:
            copied = self._layer_records(label, self._wants_hist(label), snapshots=snapshots)
            self._pending_loss = label
        if snapshots is not None:  # W before this update, for its update_ratio
            if copied < len(snapshots):  # not all copied in the statistics' pass: copied here
                # (a buffer the pass filled receives the same values again: W is unchanged)
                for weight, buf, *_ in snapshots.values():
                    np.copyto(buf, weight.value)
            self._w_before = snapshots

    def _snapshot_buffers(self) -> dict[int, tuple]:
        """Layer index -> ``(weight, buf, w, w_flat, buf_flat)``: the weight parameter, a
        reused buffer of its value's shape and dtype (no allocation per record), that value
        ``w`` itself, and flat views of ``w`` and ``buf`` for the update-norm kernel (None where
        the kernel cannot take ``w``: another dtype, too large, not C-ordered). The mapping is
        reused while every parameter keeps its value array (one identity check per layer and
        record; the optimizers update the values in place)."""
        out = self._snapshots
        if out is not None:
            for dense, weight, w in self._snap_check:
                if dense.W is not weight or weight.value is not w:
                    break
            else:
                return out
        out = {}
        points = []
        check = []
        for p in self._points:
            if p.dense is not None:
                weight = p.dense.W
                w = weight.value
                buf = self._w_buffers.get(p.index)
                if buf is None or buf.shape != w.shape or buf.dtype != w.dtype:
                    buf = self._w_buffers[p.index] = np.empty_like(w, order="C")
                flat = (w.dtype in accel.KERNEL_DTYPES and w.size <= accel.MAX_ENTRIES
                        and w.flags.c_contiguous)
                out[p.index] = (weight, buf, w, w.reshape(-1) if flat else None,
                                buf.reshape(-1) if flat else None)
                points.append(p)
                check.append((p.dense, weight, w))
        self._snapshots, self._snap_points, self._snap_check = out, points, check
        return out

    def after_update(self, trainer: Trainer, step: int, loss: float) -> None:
        """The Callback hook after the update of ``step``: the update ratio ||dW|| / ||W|| of a
        probed step, and its loss."""
        if self._pending_loss is not None:
            self._add(self._pending_loss, 0, "loss", loss)
            self._pending_loss = None
        before = self._w_before
        if before:
            self._w_before = {}
            # right after the update: W and its copy (made just before it) still in cache (a
            # ratio taken in the next record read the copy back from memory: slower)
            kernels = accel.kernels()
            norms = None if kernels is None else kernels.update_norms
            sqrt, inf = math.sqrt, math.inf
            code = self._code("update_ratio")
            add_step, add_layer = self._col_step.append, self._col_layer.append
            add_code, add_value = self._col_q.append, self._col_value.append
            for layer, (weight, w0, w, wf, w0f) in before.items():
                if norms is not None and wf is not None and weight.value is w:
                    # update_norms' kernel on the flat views made with the snapshot layout
                    sq0, sq1 = norms(wf, w0f)
                    n0, n1 = sqrt(sq0), sqrt(sq1)
                    if not (sq0 < inf and sq1 < inf):  # squares past float64's range
                        n0, n1 = _scaled_update_norms(wf, w0f, n0, n1)
                    ratio = n1 / n0 if n0 > 0 else inf
                else:
                    ratio = _update_ratio(weight, w0)
                if ratio is not None:  # (None: weights of another shape since the copy)
                    add_step(step)
                    add_layer(layer)
                    add_code(code)
                    add_value(ratio)
        if self.probe_x is not None and self._wants_any(step):
            self._probe_record(step)

    def on_train_end(self, trainer: Trainer, history: History) -> None:
        """The Callback hook at the end of training: the last probe, and the weight copies
        released."""
        self._w_before = {}
        self._w_buffers.clear()
        self._snapshots = None
        self._snap_list = None
        self._snap_points = []
        self._snap_check = []
        if self.probe_x is not None and self._net is not None:
            self._probe_record(history.steps, final=True)
        # no arrays kept after training: the kernels' arguments are prepared again if needed
        self._kernel_stats = [LayerStats(p, self.percentiles) for p in self._points]
        self._trainer = None  # do not keep the training data alive

    # -- results -----------------------------------------------------------------------
    def __repr__(self) -> str:
        from ..report.notebook import recorder_repr

        return recorder_repr(self)

    def _repr_html_(self) -> str:
        """What was recorded and the gradient-per-layer figure (Jupyter)."""
        from ..report.notebook import recorder_html

        return recorder_html(self)

    @property
    def steps(self) -> list[int]:
        """The steps at which per-layer statistics were recorded, ascending."""
        return sorted(self._stat_steps)

    @property
    def n_records(self) -> int:
        """Number of (step, layer, quantity, value) rows stored."""
        return len(self._col_value) + len(self._block_values)

    def frame(self) -> pd.DataFrame:
        """Tidy table with columns ``step, layer, quantity, value`` (layer 0: ``loss``/``acc``
        of the probe batch; layers 1..L: the per-layer quantities and ``update_ratio``)."""
        names = np.array(self._qnames if self._qnames else [""], dtype=object)
        codes = np.frombuffer(self._col_q, dtype=np.uint16) if len(self._col_q) else \
            np.zeros(0, dtype=np.uint16)
        k = len(self._layer_codes)
        per_block = np.frombuffer(self._layer_codes, dtype=np.uint16) if k else codes[:0]
        blocks = len(self._block_step)
        # single rows first: within a (step, layer) an update_ratio was recorded before the
        # layer's statistics, and the stable sort below keeps that order
        df = pd.DataFrame({
            "step": np.concatenate([np.array(self._col_step, dtype=np.int64),
                                    np.repeat(np.array(self._block_step, dtype=np.int64), k)]),
            "layer": np.concatenate([np.array(self._col_layer, dtype=np.int64),
                                     np.repeat(np.array(self._block_layer, dtype=np.int64), k)]),
            "quantity": names[np.concatenate([codes, np.tile(per_block, blocks)])
                              .astype(np.intp)],
            "value": np.concatenate([np.array(self._col_value, dtype=np.float64),
                                     np.array(self._block_values, dtype=np.float64)]),
        })
        return df.sort_values(["step", "layer"], kind="stable", ignore_index=True)

    def histograms(self) -> pd.DataFrame:
        """Columns ``step, layer, kind, bin_left, bin_right, count, n_neginf, n_posinf,
        n_nan`` (kinds: ``pre``, ``act``, ``grad`` = dL/ds, ``weight``); one row per bin.
        ``count`` counts finite entries only; ``n_neginf``, ``n_posinf`` and ``n_nan`` (the
        same on every row of one histogram) count its ``-inf``, ``+inf`` and NaN entries, so a
        histogram's entries number ``sum(count) + n_neginf + n_posinf + n_nan``. A histogram
        without a finite entry has zero counts on the placeholder range ``[-1, 1]``."""
        cols: dict[str, list] = {k: [] for k in HISTOGRAM_COLUMNS}
        for step, layer, kind, lo, hi, counts, bad in self._hist:
            n = len(counts)
            edges = bin_edges(lo, hi, n)
            cols["step"] += [step] * n
            cols["layer"] += [layer] * n
            cols["kind"] += [kind] * n
            cols["bin_left"] += edges[:-1].tolist()
            cols["bin_right"] += edges[1:].tolist()
            cols["count"] += counts.tolist()
            for name, v in zip(NONFINITE_COLUMNS, bad):
                cols[name] += [v] * n
        df = pd.DataFrame(cols)
        return df.astype({"step": np.int64, "layer": np.int64, "kind": object,  # also empty
                          "bin_left": np.float64, "bin_right": np.float64, "count": np.int64,
                          **dict.fromkeys(NONFINITE_COLUMNS, np.int64)})

    def jacobian(self) -> pd.DataFrame:
        """Columns ``step, example, index, value``: singular value ``index`` (descending) of
        the input-output Jacobian of probe example ``example``."""
        df = pd.DataFrame(self._jac, columns=["step", "example", "index", "value"])
        return df.astype({"step": np.int64, "example": np.int64, "index": np.int64,
                          "value": np.float64})
