"""What the page's panels show, measured on the training network between optimizer steps.

One measurement (:meth:`Monitor.measure`) is a probe pass on a fixed batch of up to 300
held-out examples (:func:`depthlab.probes.stats.measurement_pass`: training-mode forward with
batch-norm statistics of the probe batch and dropout off, loss, backward) followed by the
per-layer statistics of :func:`depthlab.probes.stats.network_stats` (no percentiles), so the
numbers are the ones ``depthlab run`` records. Per hidden layer ``l``:

* ``grad_std[l]``: std of ``dL/ds_l`` (the back-propagated gradient at the pre-activation);
* ``act_mean[l]``, ``act_std[l]``; ``saturated[l]`` (bounded activations), ``inactive[l]``
  (ReLU family: entries with ``s <= 0``), ``dead[l]`` (see ``probes.stats``; a quantity that
  does not apply to the activation, or a layer whose outputs are not all finite, is None);
* ``update_ratio[l] = ||W_l(t) - W_l(t0)|| / ||W_l(t0)|| / (t - t0)``: the relative change of the
  weights feeding layer ``l`` per optimizer step since step ``t0`` (``update_since``, None at
  the first), the previous measurement or the step :meth:`Monitor.arm` kept: the session arms
  it before each step it measures, so ``t - t0`` is 1 (the ratio of one step, as ``depthlab
  run`` records it; the net displacement over the ~200 steps between two measurements while
  training ran, divided by 200, read 5x below it on the default setup);
* activation histograms of up to :data:`HIST_LAYERS` layers (first, last and evenly spaced
  between): ``p[i] = counts[i] / (n - nonfinite)``, the fraction of the layer's finite entries
  in bin ``i`` (sum 1; all 0 where no entry is finite), with ``n`` the number of entries and
  ``nonfinite`` how many of them are inf or NaN (values that overflowed the dtype: in no
  bin), over a range that follows the data (:func:`follow_edges`:
  kept from one measurement to the next while the robust range of
  :func:`depthlab.probes.histograms.choose_edges` stays inside it and fills at least
  :data:`HIST_SHRINK` of it, so the axis does not jitter; else chosen again with
  :data:`HIST_HEADROOM`). Fixed edges from the first measurement piled every value that
  training moved beyond them into the end bins: a saturated tanh layer (all at +-1) drew two
  spikes at +-0.4;
* for 2-D inputs, the class the network predicts (inference mode) on a ``GRID x GRID`` grid
  over the data's range (``GRID_DEEP`` for deep networks), and its probability; where the
  output is not finite a note saying why (batch norm before its first step, weights that are
  not finite, or values that overflow the dtype).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..diagnosis.findings import jsonable
from ..losses import Loss, one_hot_labels
from ..network import Network
from ..probes.histograms import activation_range, bin_counts, choose_edges
from ..probes.recorder import update_norms
from ..probes.stats import (
    activation_family,
    layer_quantities,
    measurement_pass,
    network_stats,
)

PROBE_ROWS = 300
HIST_LAYERS = 6
HIST_BINS = 30
HIST_SHRINK = 0.25
HIST_HEADROOM = 1.25
GRID = 32
GRID_DEEP = 20
"""Grid side for networks with more than :data:`DEEP` hidden nonlinearities (a forward pass per
grid point costs as much as a training example)."""
DEEP = 200
POINTS = 400

_Q = layer_quantities(())
_COLUMNS = {name: _Q.index(q) for name, q in (
    ("grad_std", "grad_pre_std"), ("act_mean", "act_mean"), ("act_std", "act_std"),
    ("saturated", "saturated_frac"), ("inactive", "inactive_frac"), ("dead", "dead_frac"))}


def pick_layers(n: int, k: int = HIST_LAYERS) -> list[int]:
    """Up to ``k`` layer indices from 1..n: the first, the last and evenly spaced between."""
    if n <= k:
        return list(range(1, n + 1))
    return sorted({int(round(1 + i * (n - 1) / (k - 1))) for i in range(k)})


def follow_edges(old: tuple[float, float] | None, new: tuple[float, float],
                 bounds: tuple[float, float] | None = None) -> tuple[float, float]:
    """The histogram range after one measuring ``new`` (``choose_edges`` of the data): ``old``
    while ``new`` lies inside it and ``hi - lo >= HIST_SHRINK (old hi - old lo)``; else ``new``
    widened by :data:`HIST_HEADROOM` away from 0 (``[lo h, hi h]`` for ``lo < 0 < hi``, a
    bound at 0 stays) and clipped to ``bounds`` (a bounded activation's range)."""
    if old is not None:
        inside = old[0] <= new[0] and new[1] <= old[1]
        if inside and new[1] - new[0] >= HIST_SHRINK * (old[1] - old[0]):
            return old
    lo, hi = new
    lo, hi = (lo * HIST_HEADROOM if lo < 0 else lo), (hi * HIST_HEADROOM if hi > 0 else hi)
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    # float64 values near 1e308 have no headroom left (inf is no JSON number)
    return (lo, hi) if hi > lo and math.isfinite(lo) and math.isfinite(hi) else new


def _floats(values: list[float], digits: int = 5) -> list[float | None]:
    return [float(f"{v:.{digits}g}") if math.isfinite(v) else None for v in values]


class Monitor:
    """Measurements of one training network on a fixed probe batch ``(x, y)``.

    ``x_train`` is used for the decision-boundary grid's range (2-D inputs only).
    """

    def __init__(self, net: Network, x: np.ndarray, y: np.ndarray, loss: Loss,
                 x_train: np.ndarray, y_train: np.ndarray) -> None:
        self.net = net
        self.x, self.y = x[:PROBE_ROWS], y[:PROBE_ROWS]
        self.loss = loss
        # mse and huber on one-hot class rows (the quadratic cost of textbooks) measure an
        # arg-max accuracy, as `depthlab run` of the same setup does: the page hid it ("held-out
        # acc: none for mse") while the measurements carried it and the run reported val_acc
        self.has_accuracy = bool(getattr(loss, "has_accuracy", False)) or \
            one_hot_labels(self.y) is not None
        self.points = net.probe_points()
        self.hist_layers = pick_layers(len(self.points))
        # which of the saturation panel's fractions the hidden activation has (bounded:
        # saturated; ReLU family: inactive; both for relu6; neither for identity): the page's
        # legend named "saturated" for a ReLU net beside no line, as a drawing fault would
        self.family = activation_family(self.points[0].activation.fn) if self.points \
            else "other"
        self.edges: dict[int, tuple[float, float]] = {}
        self._w_prev: list[np.ndarray] | None = None
        self._w_step = 0
        self.grid = self._make_grid(x_train) if net.n_inputs == 2 else None
        self.sample = self._sample_points(x_train, y_train) if net.n_inputs == 2 else None

    # -- decision boundary ------------------------------------------------------------------
    def _make_grid(self, x: np.ndarray) -> dict[str, Any]:
        lo, hi = x.min(axis=0).astype(float), x.max(axis=0).astype(float)
        pad = 0.08 * (hi - lo + 1e-9)
        lo, hi = lo - pad, hi + pad
        n = GRID if len(self.points) <= DEEP else GRID_DEEP
        # the centres of the n x n cells the page paints over [lo, hi]: linspace(lo, hi, n)
        # put the first and last points on the box's edges, so the painted cells lay up to half
        # a cell away from the points they showed (the shading squeezed by (n - 1) / n towards
        # the middle, beside data points drawn where they are)
        gx = lo[0] + (np.arange(n) + 0.5) * (hi[0] - lo[0]) / n
        gy = lo[1] + (np.arange(n) + 0.5) * (hi[1] - lo[1]) / n
        xx, yy = np.meshgrid(gx, gy)  # row = y index, column = x index
        pts = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(self.net.dtype)
        return {"n": n, "x0": lo[0], "x1": hi[0], "y0": lo[1], "y1": hi[1], "pts": pts}

    def _sample_points(self, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        idx = np.linspace(0, x.shape[0] - 1, min(POINTS, x.shape[0])).astype(int)
        labels = y[idx]
        if labels.ndim == 2:  # one-hot targets
            labels = labels.argmax(axis=1)
        return {"x": _floats(x[idx, 0].tolist(), 4), "y": _floats(x[idx, 1].tolist(), 4),
                "label": [int(v) for v in np.asarray(labels).reshape(-1)]}

    def boundary(self) -> dict[str, Any] | None:
        """Predicted class and its probability on the grid (inference mode), or None."""
        if self.grid is None:
            return None
        g = self.grid
        box = {"n": g["n"], "x0": g["x0"], "x1": g["x1"], "y0": g["y0"], "y1": g["y1"]}
        try:
            with np.errstate(all="ignore"):
                out = np.asarray(self.net.predict(g["pts"]), dtype=np.float64)
        except RuntimeError as e:  # e.g. batch norm without inference statistics
            return {**box, "cls": None, "note": f"no decision boundary yet: {e}"}
        ok = np.isfinite(out).all(axis=1)
        if not ok.any():
            return {**box, "cls": None, "note": "no decision boundary yet: the network's "
                    f"inference output is not finite ({self._why_not_finite()})"}
        out = np.where(ok[:, None], out, 0.0)
        if out.shape[1] == 1:
            p1 = 1.0 / (1.0 + np.exp(-out[:, 0]))
            cls = (p1 > 0.5).astype(int)
            conf = np.where(cls == 1, p1, 1 - p1)
        else:
            z = out - out.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            cls, conf = p.argmax(axis=1), p.max(axis=1)
        cls = np.where(ok, cls, -1)
        return {**box, "cls": cls.astype(int).tolist(),
                "conf": np.round(np.where(ok, conf, 0.0), 3).tolist(), "note": "",
                "inference_acc": self._inference_accuracy(), "probe_rows": int(len(self.x))}

    def _inference_accuracy(self) -> float | None:
        """The probe batch's accuracy in inference mode, for a network with batch norm (its
        running statistics, as the boundary's grid), else None: the loss panel's held-out
        accuracy is measured with the probe batch's own statistics, and the two part early in
        training (the batch-norm preset at step 50: 0.565 there, 0.46 at inference, while the
        boundary painted one class almost everywhere)."""
        if not self.net.batchnorms() or not self.has_accuracy:
            return None
        try:
            with np.errstate(all="ignore"):
                out = self.net.predict(self.x)
                acc = self.loss.accuracy(out, self.y)
        except (RuntimeError, ValueError):
            return None
        return round(float(acc), 4) if acc is not None and math.isfinite(acc) else None

    def _why_not_finite(self) -> str:
        """Why the inference output is not finite: batch norm before its first batch, weights
        that are no longer finite (a diverged run), or values that overflow the dtype (a net
        without batch norm was told it had no running statistics)."""
        bns = self.net.batchnorms()
        if bns and all(getattr(bn, "num_batches", 1) == 0 for bn in bns):
            return "batch norm has no running statistics before the first step"
        if not all(np.isfinite(p.value).all() for p in self.net.parameters()):
            return "some weights are no longer finite numbers"
        return (f"the values grow past the largest {np.dtype(self.net.dtype).name} number "
                "on their way through the layers")

    # -- update ratio -----------------------------------------------------------------------
    def _weights(self) -> list[np.ndarray]:
        return [p.dense.W.value for p in self.points if p.dense is not None]

    @property
    def since(self) -> int | None:
        """The step whose weights the next update ratio is taken from (None: none kept)."""
        return self._w_step if self._w_prev is not None else None

    def arm(self, step: int) -> None:
        """Keep the weights as they are after optimizer step ``step``, for the update ratio of
        the next measurement (the session arms it right before the step it measures, so the
        ratio is that of one step, as ``depthlab run`` records it)."""
        now = self._weights()
        if self._w_prev is None:
            self._w_prev = [w.copy() for w in now]
        else:
            for dst, src in zip(self._w_prev, now):
                np.copyto(dst, src)
        self._w_step = step

    def _update_ratio(self, step: int) -> tuple[list[float | None], list[int]]:
        """The ratio per layer and the layers whose weights had norm 0 at ``since`` (no
        ratio: ``0 / 0`` or ``x / 0``)."""
        now = self._weights()
        out: list[float] = []
        zero: list[int] = []
        if self._w_prev is not None and step > self._w_step:
            k = step - self._w_step
            layers = [p.index for p in self.points if p.dense is not None]  # as _weights
            for layer, w, w0 in zip(layers, now, self._w_prev):
                with np.errstate(all="ignore"):  # (w0, a buffer arm() refills, overwritten)
                    n0, n1 = update_norms(w, w0)
                if n0 == 0:
                    zero.append(layer)
                out.append(n1 / n0 / k if n0 > 0 else math.nan)
        self.arm(step)
        return _floats(out, 4), zero

    # -- one measurement ---------------------------------------------------------------------
    def measure(self, step: int) -> dict[str, Any]:
        """A JSON-able snapshot of the per-layer panels' numbers at optimizer step ``step``
        (the decision boundary is :meth:`boundary`)."""
        loss, acc = measurement_pass(self.net, self.x, self.y, self.loss)
        stats = network_stats(self.net, ())
        cols = {name: _floats([row[i] for _, row in stats]) for name, i in _COLUMNS.items()}
        # a layer whose outputs overflowed (inf, NaN) has no fractions to show: a NaN
        # pre-activation has f'(s) = 0 and s <= 0 false, so the last layers of an exploding
        # ReLU net read "dead 1, inactive 0"
        for j, p in enumerate(self.points):
            a = getattr(p.activation, "a", None)
            if a is not None and not np.isfinite(a).all():
                for name in ("saturated", "inactive", "dead"):
                    cols[name][j] = None
        hists = []
        with np.errstate(all="ignore"):
            for layer in self.hist_layers:
                act = self.points[layer - 1].activation
                a = np.asarray(act.a)
                lo, hi = self.edges[layer] = follow_edges(
                    self.edges.get(layer), choose_edges("act", a, act.fn),
                    activation_range(act.fn))
                counts = bin_counts(a, lo, hi, HIST_BINS)  # of the finite entries only
                finite = int(counts.sum())
                # the entries that overflowed (inf, NaN) are in no bin: the page says how many
                # (a layer without finite entries read as a flat line at 0 without a word)
                hists.append({"layer": layer, "lo": lo, "hi": hi,
                              "p": np.round(counts / max(finite, 1), 5).tolist(),
                              "n": int(a.size), "nonfinite": int(a.size) - finite})
        since = self._w_step if self._w_prev is not None else None
        ratio, zero = self._update_ratio(step)
        snap: dict[str, Any] = {
            "step": int(step), "probe_loss": loss, "probe_acc": acc,
            "layers": [p.index for p in self.points], **cols,
            # the ratio is taken over the steps since the previous measurement (``since``)
            "update_ratio": ratio, "update_since": since, "hist": hists,
            # the layers without a ratio because their weights were all 0 (a zeros init)
            "update_zero_norm": zero,
        }
        self.net.clear_cache()
        return jsonable(snap)
