"""The trainer's epoch-end batch-norm calibration, computed when first read.

At each epoch's end the trainer sets every BatchNorm's population statistics from the whole
training set under the epoch's final weights (``mu = (1/N) sum_i h_i``, ``var = (1/N)
sum_i (h_i - mu)^2`` of each BatchNorm's input ``h`` over the ``N`` training rows: one
inference pass, :meth:`depthlab.network.Network.calibrate`). When the epoch computes no
metric, nobody may read them before the next epoch's end replaces them: the pass is then
deferred (:class:`PendingCalibration`): the weights are copied, and the statistics are
computed from that copy on the first read of a ``population_mean``/``population_var``
(``BatchNorm.__getattr__``), by a copy of the network, so that the trained network's cached
arrays and weights stay as training left them. The trainer settles a pending calibration
when its ``fit`` call ends. Every reader sees the values the eager pass computed, bit for bit
(same weights, data, pass and BLAS threads).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ..layers.base import Layer
from ..layers.batchnorm import BatchNorm
from ..layers.residual import Residual
from ..layers.sequential import Sequential
from ..network import Network

FIELDS = ("population_mean", "population_var")


def deferrable(net: Network) -> bool:
    """Whether ``net``'s calibration pass can be replayed later from a copy of its weights:
    a plain :class:`Network` of depthlab's own layers whose inference pass depends on their
    parameters only (``calibrate`` is the base layer's inference pass or BatchNorm's
    statistics pass; no subclass with state of its own)."""
    if type(net).calibrate is not Network.calibrate:
        return False
    stack: list[Layer] = list(net.layers)
    while stack:
        layer = stack.pop()
        kind = type(layer)
        if kind in (Sequential, Residual):
            stack.extend(layer.layers if kind is Sequential else [layer.branch])
            continue
        if not kind.__module__.startswith("depthlab.layers"):
            return False
        if kind.calibrate not in (Layer.calibrate, BatchNorm.calibrate):
            return False
        if getattr(layer, "mc", False):  # MC dropout: the pass draws masks (its RNG moves)
            return False
        fn = getattr(layer, "fn", None)  # an Activation's function: depthlab's own
        if fn is not None and not type(fn).__module__.startswith("depthlab."):
            return False
    return True


def _clear_as_calibrate_does(layer: Layer) -> None:
    """The caches the calibration pass leaves: a layer whose ``calibrate`` is the base
    inference pass clears its cache; BatchNorm keeps its own; containers recurse."""
    if isinstance(layer, Sequential):
        for child in layer.layers:
            _clear_as_calibrate_does(child)
    elif isinstance(layer, Residual):
        _clear_as_calibrate_does(layer.branch)
    elif type(layer).calibrate is Layer.calibrate:
        layer.clear_cache()


class PendingCalibration:
    """One deferred ``net.calibrate(x)``: the weights as they were (copies), the data, and
    the batch norms waiting for their statistics (each holds this object as ``_pending``
    and has no ``population_mean``/``population_var`` of its own until :meth:`settle`)."""

    def __init__(self, net: Network, x: Any, reuse: PendingCalibration | None = None) -> None:
        self.net, self.x = net, x
        params = net.parameters()
        old = reuse.weights if reuse is not None else []
        if len(old) == len(params) and all(
                o.shape == p.value.shape and o.dtype == p.value.dtype
                for o, p in zip(old, params, strict=True)):
            for o, p in zip(old, params, strict=True):
                np.copyto(o, p.value)
            self.weights = old
        else:
            self.weights = [p.value.copy() for p in params]
        self.cloning = False
        self.bns = net.batchnorms()
        for layer in net.layers:
            _clear_as_calibrate_does(layer)
        for bn in self.bns:
            for field in FIELDS:
                bn.__dict__.pop(field, None)
            bn._pending = self

    def waiting(self) -> list[BatchNorm]:
        """The batch norms still missing a statistic of this calibration (a value assigned
        since, as early stopping's restore, is kept)."""
        return [bn for bn in self.bns if bn.__dict__.get("_pending") is self
                and any(f not in bn.__dict__ for f in FIELDS)]

    def release(self) -> None:
        """Detach from every batch norm (statistics already set stay)."""
        for bn in self.bns:
            if bn.__dict__.get("_pending") is self:
                bn._pending = None

    def unchanged(self) -> bool:
        """Whether the network's weights are still, bit for bit, those copied."""
        params = self.net.parameters()
        return len(params) == len(self.weights) and all(
            p.value.shape == w.shape and p.value.dtype == w.dtype
            and p.value.tobytes() == w.tobytes()
            for p, w in zip(params, self.weights, strict=True))

    def settle(self) -> None:
        """Compute the statistics now: ``calibrate(x)`` of the network itself when its weights
        are unchanged (its caches and any statistic assigned since put back as they were),
        else of a copy of the network carrying the copied weights; each batch norm missing a
        field gets the pass's value."""
        waiting = self.waiting()
        self.release()
        if not waiting:
            return
        stats = self._in_place() if self.unchanged() else self._on_copy()
        wanted = {id(bn) for bn in waiting}
        for bn, values in zip(self.bns, stats, strict=True):
            if id(bn) in wanted:
                for field, value in zip(FIELDS, values, strict=True):
                    bn.__dict__.setdefault(field, value)

    def _in_place(self) -> list[tuple[Any, Any]]:
        """The pass on the network itself; every leaf's attributes (its caches, a batch
        norm's statistics) put back afterwards, so the pass leaves nothing else behind."""
        leaves = list(self.net.leaves())
        saved = [dict(leaf.__dict__) for leaf in leaves]
        try:
            self.net.calibrate(self.x)
            stats = [(bn.__dict__[FIELDS[0]], bn.__dict__[FIELDS[1]]) for bn in self.bns]
        finally:
            for leaf, attrs in zip(leaves, saved, strict=True):
                if isinstance(leaf, BatchNorm):  # a waiting one had none: filled by settle
                    for field in FIELDS:
                        leaf.__dict__.pop(field, None)
                leaf.__dict__.update(attrs)
        return stats

    def _on_copy(self) -> list[tuple[Any, Any]]:
        """The pass on a copy of the network carrying the copied weights (the network has
        trained on since): the trained network is not touched."""
        self.cloning = True
        try:
            clone = copy.deepcopy(self.net, {id(self): self})
        finally:
            self.cloning = False
        for bn in clone.batchnorms():
            bn._pending = None
        for p, w in zip(clone.parameters(), self.weights, strict=True):
            p.value[...] = w
        clone.calibrate(self.x)
        return [(bn.__dict__[FIELDS[0]], bn.__dict__[FIELDS[1]]) for bn in clone.batchnorms()]
