"""Batch normalization (Ioffe & Szegedy 2015) with hand-derived gradients.

Training, over a mini-batch of m rows::

    mu = (1/m) sum_i x_i            var = (1/m) sum_i (x_i - mu)^2      (biased)
    xhat_i = (x_i - mu) / sqrt(var + eps)          y_i = gamma * xhat_i + beta

Inference uses one of two estimates of the population statistics:

* ``"ema"``: exponential moving average updated at each training batch,
  ``mu <- (1 - momentum) mu + momentum mu_B`` (the seed's 0.99/0.01 is ``momentum=0.01``;
  PyTorch's ``momentum`` has the same meaning). The running variance uses the unbiased batch
  variance ``m/(m-1) var`` as PyTorch and Ioffe's Algorithm 2 do. ``ema_start="first_batch"``
  (the seed: mu_1 = mu_B1) or ``"zero"`` (PyTorch: start at mean 0, variance 1).
  ``momentum=None`` is PyTorch's cumulative average: at the k-th training batch
  ``mu <- (1 - 1/k) mu + (1/k) mu_B``, the plain mean of the batch statistics so far.
* ``"population"``: the whole training set treated as one big batch, computed by one pass
  (:func:`depthlab.layers.sequential.Sequential.calibrate`).

torch's ``affine=False``: no trainable gamma and beta (``y = xhat``; the layer has no
parameters, ``gamma`` stays 1 and ``beta`` 0). torch's ``track_running_stats=False``: no
running statistics; training and inference both normalize with the batch's own mean and
biased variance (at least 2 rows), and the backward pass is the training one in both.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import Array, resolve_dtype, xp
from ..memory import CHECK_FROM_BYTES, check_fits
from ..parameter import Parameter
from ..validators import positive_int, real
from .base import Layer

INFERENCE_MODES = ("ema", "population")
EMA_STARTS = ("first_batch", "zero")


# From this many rows on, float32 batch statistics are accumulated in float64 (as torch's CPU
# kernels do): a float32 sum down a column of m rows errs by up to ~m * 6e-8 relative (20000
# rows: BN outputs 1.5e-5 away from torch's, 2.4e-6 with float64 sums); smaller batches keep
# the faster float32 sums, whose error is below a few float32 roundings.
F64_SUMS_FROM = 1024


try:  # np.einsum without its Python wrapper (optimize=False calls this same kernel)
    from numpy._core.multiarray import c_einsum as _einsum
except ImportError:  # pragma: no cover - an older NumPy
    _einsum = np.einsum
_add_reduce = np.add.reduce
# dtypes whose batch sums run in their own dtype (ndarray.mean's: no promotion)
_SUMMED = (np.dtype(np.float32), np.dtype(np.float64))


def _divide_by_count(total: Array, m: int) -> Array:
    """``total / m`` in place, exactly as ``ndarray.mean`` divides its sum (by ``intp(m)``,
    ``casting="unsafe"``): the same bits as ``x.mean(axis=0)`` without its Python layer."""
    return np.true_divide(total, np.intp(m), out=total, casting="unsafe")


def batch_moments(x: Array) -> tuple[Array, Array, Array]:
    """``(mu, x - mu, var)`` of a batch (rows), ``mu = (1/m) sum_i x_i`` and ``var = (1/m)
    sum_i (x_i - mu)^2`` (biased), in the dtype of ``x``; float32 batches of at least
    :data:`F64_SUMS_FROM` rows are summed in float64. The sums and divisions are those of
    ``x.mean(axis=0)`` and ``einsum("ij,ij->j", xc, xc) / m`` (the same bits), in 5 NumPy
    calls."""
    m = x.shape[0]
    if x.dtype not in _SUMMED or (x.dtype == np.float32 and m >= F64_SUMS_FROM):
        # float64 sums of a float32 batch (or another dtype, as ndarray.mean treats it)
        acc = np.float64 if x.dtype == np.float32 and m >= F64_SUMS_FROM else None
        mu = x.mean(axis=0, dtype=acc).astype(x.dtype, copy=False)
        xc = x - mu
        var = (_einsum("ij,ij->j", xc, xc, dtype=acc) / m).astype(x.dtype, copy=False)
        return mu, xc, var
    mu = _divide_by_count(_add_reduce(x, 0), m)
    xc = x - mu
    var = _einsum("ij,ij->j", xc, xc)
    var /= m
    return mu, xc, var


def _inv_std(var: Array, eps: float) -> Array:
    """``1 / sqrt(var + eps)``, in one new array (the same bits as the expression)."""
    out = var + eps
    np.sqrt(out, out=out)
    return np.divide(1.0, out, out=out)


class BatchNorm(Layer):
    """Batch normalization (Ioffe & Szegedy 2015) of each of ``n`` features::

        training:  y = gamma * (x - mu_B) / sqrt(var_B + eps) + beta
                   (mu_B, var_B: the batch's mean and biased variance)
        inference: the same with the moving averages (``inference="ema"``:
                   r <- (1 - momentum) r + momentum * batch statistic, the unbiased variance)
                   or the whole training set's statistics (``"population"``, :meth:`calibrate`)

    ``momentum=None`` is torch's cumulative average (factor 1/k at the k-th batch).
    ``affine=False`` (torch's): ``y = xhat``, no parameters. ``track_running_stats=False``
    (torch's): the batch statistics in inference too (``forward(x, training=False)`` is the
    training formula and its backward the training derivative), running statistics never
    updated.
    """

    overwrites_grad = False
    # torch's options; class defaults for a layer pickled before they existed
    affine = True
    track_running_stats = True
    # a deferred calibration (depthlab.training.calibration.PendingCalibration) that sets
    # population_mean and population_var when either is first read
    _pending: Any = None

    def __init__(
        self,
        n: int,
        *,
        eps: float = 1e-5,
        momentum: float | None = 0.01,
        inference: str = "ema",
        ema_start: str = "first_batch",
        dtype: Any = "float32",
        name: str = "bn",
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        n = positive_int("BatchNorm size", n)
        for flag, value in (("affine", affine), ("track_running_stats", track_running_stats)):
            if not isinstance(value, bool | np.bool_):
                raise TypeError(f"BatchNorm {flag} must be True or False, got {value!r}")
        if not track_running_stats and inference == "population":
            raise ValueError("BatchNorm inference='population' needs track_running_stats=True; "
                             "with track_running_stats=False inference uses each batch's own "
                             "statistics (leave inference='ema')")
        eps = real("BatchNorm eps", eps, positive=True)  # finite: an infinite eps zeroes xhat
        if momentum is not None and not 0.0 < real("BatchNorm momentum", momentum) <= 1.0:
            raise ValueError(f"BatchNorm momentum must be in (0, 1], got {momentum!r} (or None: "
                             "a cumulative average)")
        if inference not in INFERENCE_MODES:
            raise ValueError(
                f"unknown BatchNorm inference mode {inference!r}; expected one of {INFERENCE_MODES}"
            )
        if ema_start not in EMA_STARTS:
            raise ValueError(
                f"unknown BatchNorm ema_start {ema_start!r}; expected one of {EMA_STARTS}"
            )
        dt = resolve_dtype(dtype)
        # gamma, beta, their gradients and the running mean and variance
        if 6 * int(n) * dt.itemsize >= CHECK_FROM_BYTES:
            check_fits(6 * int(n) * dt.itemsize, f"BatchNorm({int(n)}) ({dt.name})")
        self.name = name
        self.n = int(n)
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.inference = inference
        self.ema_start = ema_start
        self.update_stats = True
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.gamma = Parameter(f"{name}.gamma", xp.ones(n, dtype=dt), "gamma")
        self.beta = Parameter(f"{name}.beta", xp.zeros(n, dtype=dt), "beta")
        self.running_mean = xp.zeros(n, dtype=dt)
        self.running_var = xp.ones(n, dtype=dt)
        self.num_batches = 0
        self.population_mean: Array | None = None
        self.population_var: Array | None = None
        self.x = self.xhat = self.xc = self.inv_std = None
        self._training = True

    # -- statistics ---------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        """``population_mean``/``population_var`` while a deferred calibration is pending:
        computed now (the values the eager pass would have set), then read normally."""
        if name in ("population_mean", "population_var"):
            pending = self.__dict__.get("_pending")
            if pending is not None:
                pending.settle()
                if name in self.__dict__:
                    return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __getstate__(self) -> dict[str, Any]:
        """The layer's state for pickle/copy, a pending calibration settled first (and not
        carried: it holds the trainer's data)."""
        pending = self.__dict__.get("_pending")
        if pending is not None and not pending.cloning:
            pending.settle()
        state = dict(self.__dict__)
        state.pop("_pending", None)
        state.pop("_buf", None)  # the backward's scratch buffer
        return state

    def _update_running(self, mu: Array, var: Array, m: int) -> None:
        unbiased = var * (m / (m - 1)) if m > 1 else var
        if self.num_batches == 0 and self.ema_start == "first_batch":
            self.running_mean[...] = mu
            self.running_var[...] = unbiased
        else:
            # momentum None: torch's factor 1 / num_batches_tracked (counting this batch)
            mom = 1.0 / (self.num_batches + 1) if self.momentum is None else self.momentum
            self.running_mean *= 1.0 - mom
            self.running_mean += mom * mu
            self.running_var *= 1.0 - mom
            self.running_var += mom * unbiased
        self.num_batches += 1

    def inference_stats(self) -> tuple[Array, Array]:
        """(mean, variance) used at inference by the selected mode."""
        if self.inference == "population":
            if self.population_mean is None:
                raise RuntimeError(
                    f"{self.name}: inference='population' needs whole-training-set statistics; "
                    "call net.calibrate(x_train) (one pass over the training set) first"
                )
            return self.population_mean, self.population_var
        return self.running_mean, self.running_var

    # -- forward / backward -----------------------------------------------------------
    def forward(self, x: Array, training: bool = True) -> Array:
        """``y = gamma * xhat + beta`` with ``xhat = (x - mu) / sqrt(var + eps)``: the batch's
        mean and biased variance in training (at least 2 rows; the moving averages updated),
        the inference statistics otherwise; computed in the layer's dtype (another float
        input is cast first)."""
        gamma = self.gamma.value
        if not (type(x) is np.ndarray and x.dtype == gamma.dtype and x.flags.c_contiguous):
            x = self._in_dtype(self._as_input(x), gamma.dtype)  # cast / checked / copied
        if x.ndim != 2 or x.shape[1] != self.n:
            self._refuse_shape(x)
        track = self.track_running_stats
        if not track and self.inference == "population":
            # set after construction (net.set_bn_inference): the population statistics
            # would be ignored, each batch normalized with its own
            raise ValueError(f"{self.name}: inference='population' needs "
                             "track_running_stats=True; this layer normalizes every batch with "
                             "its own statistics (set inference='ema')")
        self.x = x
        batch_stats = training or not track
        self._training = batch_stats  # the backward of batch statistics
        if batch_stats:
            m = x.shape[0]
            if m < 2:
                raise ValueError(
                    f"{self.name}: batch normalization needs a batch of at least 2 rows "
                    f"in training, got {m}" + ("" if training else
                                               " (track_running_stats=False: inference "
                                               "normalizes with the batch's statistics too)")
                )
            mu, xc, var = batch_moments(x)
            if training and track and self.update_stats:
                self._update_running(mu, var, m)
        else:
            mu, var = self.inference_stats()
            xc = x - mu
        inv_std = _inv_std(var, self.eps)
        xhat = xc * inv_std
        self.xc, self.inv_std, self.xhat = xc, inv_std, xhat
        if not self.affine:
            return xhat
        y = xhat * gamma
        y += self.beta.value
        return y

    def _refuse_shape(self, x: Array) -> None:
        """A ValueError naming an input that is not ``(batch, n)`` rows: a ``(B, 1)`` input in
        eval mode was broadcast against the ``n`` statistics (a ``(B, n)`` output), others
        failed inside NumPy (torch's BatchNorm1d reads a 3-D input's axis 1 as channels,
        which this layer does not: its features are the columns of rows)."""
        raise ValueError(f"{self.name}: input of shape {tuple(x.shape)}; expected (batch, "
                         f"{self.n}) (BatchNorm({self.n}) normalizes each of {self.n} "
                         "features, the columns, over the rows)")

    def backward(self, grad: Array, input_grad: bool = True) -> Array | None:
        """The seed's chain rule, term by term (``g = dL/dy``)::

            dL/dxhat = g * gamma
            dL/dvar  = sum_i dL/dxhat_i (x_i - mu) * (-1/2) (var + eps)^(-3/2)
            dL/dmu   = sum_i dL/dxhat_i * (-1/sqrt(var + eps)) + dL/dvar * sum_i -2 (x_i - mu) / m
            dL/dx_i  = dL/dxhat_i / sqrt(var + eps) + dL/dvar * 2 (x_i - mu) / m + dL/dmu / m
            dL/dgamma = sum_i g_i xhat_i          dL/dbeta = sum_i g_i

        In inference the statistics are constants, so ``dL/dx = dL/dxhat / sqrt(var + eps)``.

        With ``(x_i - mu) = xhat_i sqrt(var + eps)`` and ``k = (1/m) sum_i dL/dxhat_i xhat_i``
        the dL/dvar terms are computed as ``dL/dvar * 2 (x_i - mu) / m = -k xhat_i / sqrt(var +
        eps)`` and ``dL/dvar * sum_i -2 (x_i - mu) / m = k sum_i xhat_i / sqrt(var + eps)``: the
        same values without ``(var + eps)^(-3/2)``, which overflows for a constant feature and a
        tiny ``eps`` (``0 * inf``: NaN gradients where torch has finite ones).

        ``affine=False``: ``gamma = 1`` in ``dL/dxhat = g``, no dL/dgamma, dL/dbeta.
        ``track_running_stats=False``: the batch-statistics derivative in inference too.
        """
        xhat = self.xhat
        if xhat is None or getattr(grad, "shape", None) != xhat.shape:
            self._check_backward(xhat, grad, () if xhat is None else xhat.shape)
        gamma = self.gamma.value
        if not (type(grad) is np.ndarray and grad.dtype == gamma.dtype
                and grad.flags.c_contiguous):
            # the layer's dtype: a float64 dL/dy failed (NumPy's "cannot cast ... 'safe'")
            grad = self._in_dtype(grad, gamma.dtype)
        m = grad.shape[0]
        if not self.affine:
            pass  # no gamma, beta: no parameter gradient
        elif grad.dtype == np.float32 and m >= F64_SUMS_FROM:
            # float32 sums down a column of 60000 rows: dL/dbeta 5.6e-6 relative off (torch
            # 2.4e-6), dL/dgamma 7e-6; in float64 as Dense's dL/db and the batch moments
            self.gamma.grad_buffer()[...] = _einsum("ij,ij->j", grad, xhat, dtype=np.float64)
            self.beta.grad_buffer()[...] = _add_reduce(grad, 0, np.float64)
        else:
            _einsum("ij,ij->j", grad, xhat, out=self.gamma.grad_buffer())
            _add_reduce(grad, 0, out=self.beta.grad_buffer())
        if not input_grad:
            return None
        dxhat = grad * gamma if self.affine else grad.copy()
        inv_std = self.inv_std
        if not self._training:
            dxhat *= inv_std
            return dxhat
        k_inv_std = _einsum("ij,ij->j", dxhat, xhat)
        k_inv_std *= 1.0 / m
        k_inv_std *= inv_std
        dmu = _add_reduce(dxhat, 0)
        dmu *= -inv_std
        dmu += k_inv_std * _add_reduce(xhat, 0)
        dx = dxhat
        dx *= inv_std
        dx -= np.multiply(xhat, k_inv_std, out=self._scratch(xhat))
        dmu *= 1.0 / m
        dx += dmu
        return dx

    def _scratch(self, like: Array) -> Array:
        """A buffer of ``like``'s shape and dtype kept by the layer for the backward's
        temporary ``xhat * k`` (reused while the batch shape repeats; never handed out)."""
        buf = getattr(self, "_buf", None)
        if buf is None or buf.shape != like.shape or buf.dtype != like.dtype:
            buf = self._buf = np.empty_like(like)
        return buf

    def calibrate(self, x: Array) -> Array:
        """Set the population statistics from ``x`` (the whole training set, one big batch):
        ``mu = (1/N) sum_i x_i``, ``var = (1/N) sum_i (x_i - mu)^2``, summed as a training
        batch is (:func:`batch_moments`: in float64 for float32 sets of at least
        :data:`F64_SUMS_FROM` rows; float32 sums down 60000 rows erred by 1.4e-5 relative)."""
        if x.ndim != 2 or x.shape[1] != self.n:
            self._refuse_shape(x)
        mu, xc, var = batch_moments(x)
        self.population_mean = mu
        self.population_var = var
        inv_std = 1.0 / np.sqrt(self.population_var + self.eps)
        return (xc * inv_std) * self.gamma.value + self.beta.value

    def clear_cache(self) -> None:
        self.x = self.xhat = self.xc = self.inv_std = self._buf = None

    def parameters(self) -> list[Parameter]:
        """``[gamma, beta]`` (none with ``affine=False``)."""
        return [self.gamma, self.beta] if self.affine else []

    def __repr__(self) -> str:
        extra = "".join(f", {k}=False" for k in ("affine", "track_running_stats")
                        if not getattr(self, k))
        return (
            f"BatchNorm({self.n}, eps={self.eps}, momentum={self.momentum}, "
            f"inference={self.inference!r}{extra})"
        )
