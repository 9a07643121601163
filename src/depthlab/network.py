"""The trainable network: a ``Sequential`` with input checks, a dtype and probe points."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backend import Array, _torch_values, data_array, resolve_dtype, xp
from .layers import Activation, BatchNorm, Dense, Dropout, Layer, Sequential
from .memory import CHECK_FROM_BYTES, MEMORY_ENV, available_memory, batch_bytes, check_fits
from .validators import keyword_hints, positive_int

MEMORY_RECHECK_S = 1.0
"""Seconds for which :meth:`Network.forward` trusts its last memory check: a batch needing no
more memory than one found to fit, under the same ``DEPTHLAB_MEMORY_LIMIT``, is not checked
again (the read of the available memory costs about 70 us, a training step of a small network
a few hundred)."""


def _network_dtype(dtype: Any, params: list[Any]) -> np.dtype:
    """The network's dtype: ``dtype``, or (None) that of the layers' parameters (float32 when
    there are none). Inputs and gradients are cast to it, so a dtype other than the
    parameters' is a ValueError (float64 layers in a float32 network rounded every input and
    the output gradient to float32: gradients 1e-7 off, silently)."""
    found = sorted({p.value.dtype.name for p in params})
    if len(found) > 1:
        raise ValueError(f"the layers' parameters mix {' and '.join(found)}; expected layers "
                         "built with one dtype ('float32' or 'float64')")
    dt = resolve_dtype(found[0] if dtype is None and found else
                       "float32" if dtype is None else dtype)
    if found and found[0] != dt.name:
        raise ValueError(f"dtype={dt.name!r} is not the dtype of the layers' parameters "
                         f"({found[0]}); expected dtype={found[0]!r} or None (inputs and "
                         "gradients are cast to the network's dtype)")
    return dt


def _check_widths(layers: list[Layer], width: int, where: str) -> int:
    """The features after ``layers`` given ``width`` before them; a ValueError naming the
    first layer whose own width disagrees (a ``Dense`` whose fan-in, a ``BatchNorm`` or
    ``Standardize`` whose feature count is not what the layers before it give, or a residual
    branch that does not end at its input's width). ``Network([Dense(4, 6), Dense(5, 2)])``
    was accepted and failed at its first forward with NumPy's broadcast error."""
    from .layers import Residual, Standardize

    for i, layer in enumerate(layers):
        at = f"{where}[{i}]"
        if isinstance(layer, Dense):
            fan_in, fan_out = layer.W.value.shape
            if fan_in != width:
                raise ValueError(f"{at} ({layer.name}: Dense {fan_in} -> {fan_out}) expects "
                                 f"{fan_in} features, the layers before it give {width}; "
                                 f"expected Dense({width}, ...)")
            width = fan_out
        elif isinstance(layer, BatchNorm | Standardize):
            n = layer.n if isinstance(layer, BatchNorm) else int(layer.mean.shape[0])
            if n != width:
                raise ValueError(f"{at} ({layer.name}: {type(layer).__name__} of {n} features) "
                                 f"gets {width} features from the layers before it; expected "
                                 f"{type(layer).__name__} of {width}")
        elif isinstance(layer, Residual):
            out = _check_widths(list(getattr(layer.branch, "layers", [])), width,
                                f"{at}.branch")
            if out != width:
                raise ValueError(f"{at} ({layer.name}): the residual branch ends with {out} "
                                 f"features, its input has {width}; expected a branch that "
                                 f"ends at {width} features (y = x + F(x))")
        elif isinstance(layer, Sequential):
            width = _check_widths(layer.layers, width, at)
    return width


@dataclass(frozen=True)
class ProbePoint:
    """Hidden layer ``index`` (1 = first): its nonlinearity and the Dense whose weights feed it."""

    index: int
    activation: Activation
    dense: Dense | None


NO_FORWARD = ("backward called before forward: no forward pass is cached (net.predict, "
              "net.calibrate, dl.lsuv and dl.mc_dropout_predict free the cache); call "
              "net.forward(x, training=True) first")


class Network(Sequential):
    """A feed-forward network. ``forward``/``backward`` follow the layer protocol;
    ``backward`` copies the caller's gradient once so the caller's array is never changed.
    ``dtype`` (inputs and gradients are cast to it) is by default that of the layers'
    parameters (float32 when there are none); another one is a ValueError.
    ``config`` is the recipe it was built from (for :func:`depthlab.mlp`: the
    :class:`~depthlab.spec.ModelSpec` as a dict plus ``seed``; ``mlp(**net.config)`` rebuilds
    it)."""

    @keyword_hints
    def __init__(
        self,
        layers: list[Layer],
        *,
        n_inputs: int | None = None,
        dtype: Any = None,
        config: dict[str, Any] | None = None,
        name: str = "net",
    ) -> None:
        super().__init__(layers, name=name)
        if n_inputs is None:  # as torch's nn.Sequential: the first layer that fixes a width
            n_inputs = self._input_width()
        self.n_inputs = positive_int("n_inputs", n_inputs)
        dense = self.dense_layers()
        if dense and dense[0].W.value.shape[0] != self.n_inputs:
            raise ValueError(f"n_inputs={self.n_inputs} does not match the first Dense layer's "
                             f"{dense[0].W.value.shape[0]} inputs")
        _check_widths(self.layers, self.n_inputs, "layers")
        if self.layers and isinstance(self.layers[-1], Activation):
            # a final activation after the last Dense is the output activation, as mlp's
            # output_activation and as save/load and the recipe read it: not a hidden layer
            self.layers[-1].is_output = True
        self.dtype = _network_dtype(dtype, self.parameters())
        self.config = dict(config or {})

    def _input_width(self) -> int:
        """The input features that the first Dense (its fan-in), BatchNorm or Standardize in
        forward order takes (the layers before it keep the width); a TypeError asking for
        ``n_inputs=`` when no layer fixes it."""
        from .layers import Standardize

        for layer in self.leaves():
            if isinstance(layer, Dense):
                return int(layer.W.value.shape[0])
            if isinstance(layer, BatchNorm):
                return int(layer.n)
            if isinstance(layer, Standardize):
                return int(layer.mean.shape[0])
        raise TypeError("Network(layers) needs n_inputs= (the input features): none of its "
                        "layers is a Dense, BatchNorm or Standardize that fixes it")

    # -- checked entry points ---------------------------------------------------------
    def check_input(self, x: Array, finite: bool = False, through: bool = False) -> Array:
        """``x`` as a (batch, n_inputs) array of the network's dtype; ValueError naming the
        shape otherwise (or an empty batch). With ``finite=True`` (:meth:`predict`,
        :meth:`calibrate`, ``lsuv``, ``mc_dropout_predict``: one pass over data a user hands
        in) also a ValueError naming the first NaN, infinite or too large entry (row and
        column); the training step's ``forward`` leaves that to ``fit``'s data check."""
        if not isinstance(x, np.ndarray) or isinstance(x, np.ma.MaskedArray):  # masked: NaN
            if isinstance(x, str | bytes | dict) or x is None:
                raise TypeError(f"x={x!r:.40} is not accepted; accepted: an array of shape "
                                f"(batch, {self.n_inputs})")
            x_in, x = x, data_array(x, "x")
        else:
            x_in = x
        if x.dtype.kind not in "biuf":
            from .training.data_checks import not_a_number

            raise TypeError(f"x of dtype {x.dtype} is not accepted{not_a_number(x_in)}; "
                            "accepted: real numbers")
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            from .training.data_checks import reshape_hint

            raise ValueError(
                f"input has shape {x.shape}; expected (batch, {self.n_inputs}) for this network"
                + reshape_hint(x.shape, self.n_inputs)
            )
        if x.shape[0] == 0:
            raise ValueError("input batch is empty (0 rows)")
        if finite:  # NaN/inf gave NaN outputs, 1e300 an 'overflow encountered in cast' warning
            # (the cast's memory is checked there; the finite check goes a block at a time)
            from .training.data_checks import finite_features

            return finite_features(x, self.dtype, "x")
        self._check_memory(x, through)
        if x.dtype != self.dtype or not x.flags.c_contiguous:
            # C order: a first BatchNorm's batch sums then run in one order whatever the
            # caller's layout (a Fortran-order batch gave outputs 1 ulp off)
            x = x.astype(self.dtype, order="C")
        return x

    def _check_memory(self, x: Array, through: bool) -> None:
        """Refuse (:class:`~depthlab.memory.MemoryRefusal`, before allocating) an input whose
        cast to the network's dtype and, with ``through`` (all its rows go through the network
        at once: :meth:`forward`), every layer's outputs and gradients cannot fit in the memory
        available (a batch of 10**10 rows was numpy's ``MemoryError: Unable to allocate 3.64
        TiB`` from inside a layer). A need no larger than the last one found to fit, under the
        same ``DEPTHLAB_MEMORY_LIMIT``, is trusted for :data:`MEMORY_RECHECK_S` seconds."""
        need = x.size * self.dtype.itemsize if x.dtype != self.dtype else 0
        if through:
            row = self.__dict__.get("_row_bytes")
            if row is None:  # the widths are fixed once built: walked once, not every step
                row = self._row_bytes = batch_bytes(self, 1)
            need += x.shape[0] * row
        if need >= CHECK_FROM_BYTES:
            # Reading the available memory (/proc/meminfo and the cgroup's files) costs about
            # 70 us, paid by every training step of a batch of 1 MiB or more (the float64
            # 784-100-100-100-10 network at batch 60: 8% of its step). A need no larger than
            # one found to fit, under the same DEPTHLAB_MEMORY_LIMIT, is not read again for
            # MEMORY_RECHECK_S seconds.
            now, limit = time.monotonic(), os.environ.get(MEMORY_ENV)
            seen = self.__dict__.get("_fits_seen")
            if seen is not None and need <= seen[0] and limit == seen[1] \
                    and 0 <= now - seen[2] < MEMORY_RECHECK_S:
                return
            parts = ["every layer's outputs and gradients"] if through else []
            if x.dtype != self.dtype:
                parts.append(f"its {self.dtype.name} copy")
            check_fits(need, f"x of {x.shape[0]:,} rows x {x.shape[1]:,} features ("
                       f"{', '.join(parts)})")
            self._fits_seen = (need, limit, now)

    def forward(self, x: Array, training: bool = True) -> Array:
        """The network's output (logits unless ``output_activation`` names one) for a batch
        ``x`` of shape ``(batch, n_inputs)``, checked first (:meth:`check_input`, also that the
        batch's layer outputs fit in memory); every layer caches what :meth:`backward`
        needs. ``training`` is a bool (NumPy's too): ``training="eval"`` was truthy, so
        dropout and batch statistics were applied to what was meant as an evaluation."""
        if training is not True and training is not False and not isinstance(training, np.bool_):
            raise TypeError(f"training={training!r} is not accepted; accepted: True (dropout, "
                            "batch statistics) or False (evaluation, as net.predict)")
        y = super().forward(self.check_input(x, through=True), training)
        self._out_shape = y.shape  # what backward's gradient must match (no walk per step)
        return y

    def backward(self, grad: Array, input_grad: bool = True, copy: bool = True) -> Array | None:
        """``dL/dx`` for ``grad = dL/dy`` of the last :meth:`forward` (shape ``(batch,
        n_outputs)``), by the chain rule through every layer in reverse (the generalized delta
        rule); fills every parameter's ``.grad``. ``grad`` is left unchanged (copied first, into
        C order, so that any layout of the same values gives the same bits) unless
        ``copy=False`` and it is already a C-contiguous array of the network's dtype."""
        if self.layers[0].cached_input() is None:
            raise RuntimeError(NO_FORWARD)
        out = getattr(self, "_out_shape", None) or self.output_cache_shape
        if not isinstance(grad, np.ndarray):  # None, a str: "'NoneType' object has no
            if grad is None or isinstance(grad, str | bytes | dict):  # attribute 'shape'"
                raise TypeError(f"gradient={grad!r:.40} is not accepted; expected dL/dy, an "
                                f"array of the output shape {out}")
            grad = np.asarray(_torch_values(grad))  # a list of lists, a tensor's values
        if grad.dtype.kind in "cUSVmM":  # complex: the imaginary part dropped with a warning
            raise TypeError(f"gradient of dtype {grad.dtype} is not accepted; expected real "
                            f"numbers of the output shape {out}")
        if grad.shape != out:
            raise ValueError(f"gradient has shape {grad.shape}; expected the output shape {out}")
        if copy or grad.dtype != self.dtype or not grad.flags.c_contiguous:
            # C order: the layers' sums run in one order whatever the caller's layout (a
            # Fortran-order gradient summed its columns pairwise: dL/db 1 ulp off)
            g = grad.astype(self.dtype, order="C", copy=True)
        else:
            g = grad
        return super().backward(g, input_grad)

    @property
    def output_cache_shape(self) -> tuple[int, ...] | None:
        x = self.layers[0].cached_input()
        if x is None:
            raise RuntimeError(NO_FORWARD)
        return (x.shape[0], self.n_outputs)

    @property
    def n_outputs(self) -> int:
        for layer in reversed(list(self.leaves())):
            if isinstance(layer, Dense):
                return layer.fan_out
        return self.n_inputs

    def predict(self, x: Array, batch_size: int = 4096) -> Array:
        """Inference-mode outputs (dropout off, batch norm on its inference statistics),
        computed ``batch_size`` rows at a time."""
        batch_size = positive_int("batch_size", batch_size)
        fitting = self._fitting_batch(x.shape[0], batch_size) if isinstance(
            x, np.ndarray) and x.ndim == 2 and x.shape[0] else None  # before scanning 1e10 rows
        x = self.check_input(x, finite=True)
        batch_size = fitting or self._fitting_batch(x.shape[0], batch_size)
        outs = [
            Sequential.forward(self, x[i : i + batch_size], False)
            for i in range(0, x.shape[0], batch_size)
        ]
        self.clear_cache()
        return outs[0] if len(outs) == 1 else xp.concatenate(outs)

    def _fitting_batch(self, x: Array | int, batch_size: int) -> int:
        """``batch_size``, or fewer rows when a batch's cached layer outputs (pre-activation
        and activation of every layer) and the result would not fit in the memory available
        (the outputs do not depend on the batching: ``batch_size=10**7`` on a wide net asked
        for GBs); refused before allocating when not even one row fits."""
        n = x if isinstance(x, int) else x.shape[0]  # ``x``: the rows, or their number
        rows = min(batch_size, n)
        per_row = batch_bytes(self, 1) * 2 // 3
        result = n * self.n_outputs * self.dtype.itemsize
        if per_row * rows + result < CHECK_FROM_BYTES:
            return batch_size
        avail = available_memory()
        if per_row * rows + result <= avail:
            return batch_size
        fitting = (avail - result) // per_row if per_row else rows
        if fitting < 1:
            check_fits(per_row + result, f"predict on {n:,} rows (the result and one row "
                                         f"through the network)", available=avail)
        return int(fitting)

    def calibrate(self, x: Array) -> Array:
        """One pass over ``x`` (the whole training set) setting every BatchNorm's population
        statistics (the seed's 'whole training set as one big batch')."""
        x = self.check_input(x, finite=True)
        if self.batchnorms() and x.shape[0] < 2:  # a variance of 0: outputs scaled by 1/sqrt(eps)
            raise ValueError(f"calibrate needs at least 2 rows (the training set) to estimate "
                             f"the batch-norm statistics; got {x.shape[0]}")
        return Sequential.calibrate(self, x)

    def set_bn_inference(self, mode: str) -> None:
        """Select batch-norm inference statistics: ``"ema"`` or ``"population"``; the recipe
        (``config["bn_inference"]``) follows, so a saved and reloaded network keeps the mode."""
        if mode not in ("ema", "population"):
            raise ValueError(
                f"unknown BatchNorm inference mode {mode!r}; expected 'ema' or 'population'"
            )
        bns = self.batchnorms()
        for bn in bns:
            bn.inference = mode
        if bns and "bn_inference" in self.config:
            self.config["bn_inference"] = mode

    # -- structure --------------------------------------------------------------------
    def dense_layers(self) -> list[Dense]:
        """The Dense layers in forward order (residual blocks' included)."""
        return [layer for layer in self.leaves() if isinstance(layer, Dense)]

    def batchnorms(self) -> list[BatchNorm]:
        """The BatchNorm layers in forward order."""
        return [layer for layer in self.leaves() if isinstance(layer, BatchNorm)]

    def dropouts(self) -> list[Dropout]:
        """The Dropout (and AlphaDropout) layers in forward order."""
        return [layer for layer in self.leaves() if isinstance(layer, Dropout)]

    def probe_points(self) -> list[ProbePoint]:
        """Hidden nonlinearities in forward order (the output activation excluded)."""
        points: list[ProbePoint] = []
        last_dense: Dense | None = None
        for layer in self.leaves():
            if isinstance(layer, Dense):
                last_dense = layer
            elif isinstance(layer, Activation) and not getattr(layer, "is_output", False):
                points.append(ProbePoint(len(points) + 1, layer, last_dense))
        return points

    @property
    def depth(self) -> int:
        """Number of weight layers (Dense)."""
        return len(self.dense_layers())

    def num_parameters(self) -> int:
        """The number of trainable scalars, ``sum_p p.value.size``."""
        return int(sum(p.value.size for p in self.parameters()))

    def first_nonfinite(self, output: Array | None = None) -> str | None:
        """Name of the first layer (forward order) whose output in the last pass was not
        finite (``output`` is that pass's network output), or None. Used after a
        non-finite loss to say where it started."""
        leaves = list(self.leaves())
        for i, layer in enumerate(leaves):
            x = layer.cached_input()
            if x is not None and not np.isfinite(x).all():
                return leaves[i - 1].name if i > 0 else "input"
        if output is not None and not np.isfinite(output).all():
            return leaves[-1].name
        return None
