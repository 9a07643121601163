"""Activation functions with their derivatives and fused backward passes.

Every activation is an :class:`ActivationFn` with

* ``forward(s) -> a = f(s)`` (same dtype as ``s``; stable for ``|s|`` up to at least 1000),
* ``derivative(s, a) -> f'(s)`` elementwise (``a = f(s)`` is passed in to save work),
* ``backward(s, a, grad_a) -> dL/ds = grad_a * f'(s)``; it **may overwrite** ``grad_a`` in place
  and return it (the layer protocol allows this), which the hot-path activations do,
* ``max_derivative``: ``sup_s |f'(s)|`` (the per-layer gain bound used by theory code),
* ``kinks``: the points ``t != 0`` where ``f`` or ``f'`` jumps (hardtanh's ``min_val`` and
  ``max_val``, hardswish's +-3, softplus's ``threshold / beta``), made panel edges by the
  theory's Gaussian quadrature (``depthlab.theory.gaussian.activation_rule``; 0 is one always),
* ``taylor``: Maclaurin coefficients ``(f(0), f'(0), f''(0)/2, f'''(0)/6)`` as far as they exist
  (``None`` when ``f`` is not differentiable at 0). The first two are the ``(beta, alpha)`` of the
  linear-regime argument of Xu et al. (2016): ``f(s) ~ beta + alpha s``.

Conventions at kinks follow PyTorch: relu'(0) = 0, leaky_relu'(0) = negative_slope,
elu'(0) = alpha, selu'(0) = lambda*alpha, step'(s) = 0, penalized_tanh'(0) = a.

Constants are kept as Python floats so that NumPy 2 (NEP 50) never promotes a float32
computation to float64.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from . import accel
from .backend import Array, expit, ndtr, xp
from .registry import Registry
from .validators import real

__all__ = [
    "ACTIVATIONS",
    "REGISTRY",
    "ActivationFn",
    "ELU",
    "GELU",
    "Hardsigmoid",
    "Hardswish",
    "Hardtanh",
    "Identity",
    "LeakyReLU",
    "LogSigmoid",
    "Mish",
    "PenalizedTanh",
    "ReLU",
    "ReLU6",
    "SELU",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "Softsign",
    "Step",
    "Swish",
    "Tanh",
    "get_activation",
]

# Klambauer et al. (2017), identical to torch.nn.SELU.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_LAMBDA = 1.0507009873554804934193349852946

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

# sup_u |d/du [u sigma(u)]|, attained at u ~ 2.39936 (solved numerically; the sup of |swish'|
# does not depend on beta != 0 because swish'(s) = g(beta s)).
_SWISH_MAX_DERIV = 1.099839320128867
# sup_x |Phi(x) + x phi(x)| = Phi(sqrt 2) + sqrt(2) phi(sqrt 2) (attained at x = sqrt 2).
_GELU_MAX_DERIV = float(ndtr(math.sqrt(2.0)) + math.sqrt(2.0) * _INV_SQRT_2PI * math.exp(-1.0))
# torch's tanh approximation of GELU: 0.5 s (1 + tanh(k (s + c s^3))); sup_x |f'(x)|,
# attained at x ~ 1.41850 (solved numerically).
_GELU_TANH_K = math.sqrt(2.0 / math.pi)
_GELU_TANH_C = 0.044715
_GELU_TANH_MAX_DERIV = 1.1289930686587717
# sup_x |mish'(x)|, attained at x ~ 1.49057 (solved numerically).
_MISH_MAX_DERIV = 1.088498161251728
# torch's hardsigmoid_backward multiplies by the float constant 1.0f / 6.0f (in float64 too)
_ONE_SIXTH_F32 = 0.1666666716337204


EXP_SAFE = {4: 88.0, 8: 709.0}
"""By the itemsize of a float32 or float64 array: a bound below which ``e^x`` cannot overflow
(``log`` of the largest finite value is 88.72 and 709.78)."""


class ActivationFn:
    """Base class: an elementwise (or row-wise, for softmax) nonlinearity ``a = f(s)``.

    Subclasses set ``name``, ``max_derivative`` and ``taylor`` and implement ``forward`` and
    ``derivative``; the default ``backward`` multiplies ``grad_a`` in place by ``f'(s)``.
    """

    name: str = "activation"
    max_derivative: float = math.nan
    taylor: tuple[float, ...] | None = None
    elementwise: bool = True
    kinks: tuple[float, ...] = ()

    @property
    def params(self) -> dict[str, float]:
        """The settings of this activation (empty when it has none)."""
        return {}

    def forward(self, s: Array) -> Array:
        """a = f(s)."""
        raise NotImplementedError

    def derivative(self, s: Array, a: Array) -> Array:
        """f'(s) elementwise, as a new array of the dtype of ``s``."""
        raise NotImplementedError

    def backward(self, s: Array, a: Array, grad_a: Array) -> Array:
        """dL/ds = grad_a * f'(s); may overwrite ``grad_a`` and return it."""
        grad_a *= self.derivative(s, a)
        return grad_a

    def __call__(self, s: Array) -> Array:
        """``a = f(s)`` (:meth:`forward`) of an array or nested lists; integers and booleans
        as float64, as torch's float functions promote them (``dl.activation("sigmoid")`` of
        integers was NumPy's "Cannot cast ufunc 'exp' output from dtype('float64') to
        dtype('int64')"). One number (a Python or NumPy scalar, a 0-d array) gives a NumPy
        scalar of its float dtype, as a NumPy ufunc does (it was "return arrays must be of
        ArrayType" or an AttributeError); complex, text or object values are a TypeError."""
        if isinstance(s, list | tuple | numbers.Number | xp.generic | str | bytes):
            s = xp.asarray(s)
        if isinstance(s, xp.ndarray):
            if s.dtype.kind in "iub":
                s = s.astype(xp.float64)
            elif s.dtype.kind != "f":
                raise TypeError(f"{self.name}: values of dtype {s.dtype} are not accepted; "
                                "accepted: real numbers")
            if s.ndim == 0:  # the elementwise kernels write into arrays: one element of one
                return self.forward(s.reshape(1))[0]
        return self.forward(s)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ActivationFn):
            return NotImplemented
        return type(self) is type(other) and self.params == other.params

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.params.items()))))


class Sigmoid(ActivationFn):
    """Logistic sigmoid sigma(s) = 1 / (1 + e^-s); sigma' = a (1 - a), at most 1/4."""

    name = "sigmoid"
    max_derivative = 0.25
    taylor = (0.5, 0.25, 0.0, -1.0 / 48.0)

    def forward(self, s: Array) -> Array:
        """``a = 1 / (1 + e^-s)`` in place on one buffer: ``a = -s``, ``a = e^a`` (NumPy's
        ``exp``), ``a += 1``, ``a = 1 / a``. For s below about -88 (float32) or -709
        (float64) e^-s overflows to inf and the result is 0, the correctly rounded value;
        the overflow flag is silenced. 3x faster than scipy's expit on small batches. With
        the compiled kernels the passes around the ``exp`` are one each
        (:func:`depthlab.kernels.negate_over`, :func:`depthlab.kernels.sigmoid_tail`: the
        same bits), and the overflow flag is silenced only when some ``-s`` is above
        :data:`EXP_SAFE` (no ``errstate`` per call)."""
        k = accel.fits(s, s) if s.__class__ is xp.ndarray else None
        if k is None:
            a = xp.negative(s)
            with xp.errstate(over="ignore"):
                xp.exp(a, out=a)
            a += 1
            xp.reciprocal(a, out=a)
            return a
        a = xp.empty_like(s)
        if k.negate_over(s, a, EXP_SAFE[s.dtype.itemsize]):
            with xp.errstate(over="ignore"):
                xp.exp(a, out=a)
        else:
            xp.exp(a, out=a)
        k.sigmoid_tail(a)
        return a

    def derivative(self, s: Array, a: Array) -> Array:
        d = 1 - a
        d *= a
        return d

    def backward(self, s: Array, a: Array, grad_a: Array) -> Array:
        """``dL/ds = (grad_a a)(1 - a)`` in place."""
        k = accel.fits(grad_a, a)
        if k is None or grad_a.shape != a.shape:
            grad_a *= a
            grad_a *= 1 - a
        else:
            k.sigmoid_backward(grad_a, a)  # the same, one pass (depthlab.kernels)
        return grad_a


def _one_minus_square(a: Array) -> Array:
    """``1 - a^2`` as ``(1 - a)(1 + a)`` (a new array): for ``|a|`` near 1, ``1 - a*a`` loses
    the last bits of ``a*a`` to cancellation (float32 tanh'(s) at s = 5: 1.8156e-4 against
    torch's 1.8155e-4, up to 8.6e-5 relative; float64 3.7e-9), while ``1 - a`` is exact there
    and the product is within an ulp of torch's fused ``1 - a*a``."""
    d = xp.subtract(1, a)
    d *= 1 + a
    return d


class Tanh(ActivationFn):
    """Hyperbolic tangent; tanh' = 1 - a^2 = (1 - a)(1 + a), at most 1."""

    name = "tanh"
    max_derivative = 1.0
    taylor = (0.0, 1.0, 0.0, -1.0 / 3.0)

    def forward(self, s: Array) -> Array:
        return xp.tanh(s)

    def derivative(self, s: Array, a: Array) -> Array:
        return _one_minus_square(a)

    def backward(self, s: Array, a: Array, grad_a: Array) -> Array:
        """``dL/ds = grad_a ((1 - a)(1 + a))`` in place."""
        k = accel.fits(grad_a, a)
        if k is None or grad_a.shape != a.shape:
            grad_a *= _one_minus_square(a)
        else:
            k.tanh_backward(grad_a, a)  # the same, one pass (depthlab.kernels)
        return grad_a


class Identity(ActivationFn):
    """Identity f(s) = s; f' = 1. ``forward`` returns ``s`` itself (no copy)."""

    name = "identity"
    max_derivative = 1.0
    taylor = (0.0, 1.0, 0.0, 0.0)

    def forward(self, s: Array) -> Array:
        return s

    def derivative(self, s: Array, a: Array) -> Array:
        return xp.ones_like(s)

    def backward(self, s: Array, a: Array, grad_a: Array) -> Array:
        return grad_a


class Step(ActivationFn):
    """Heaviside step f(s) = 1[s > 0]; f' = 0 everywhere (no gradient flows)."""

    name = "step"
    max_derivative = 0.0
    taylor = None

    def forward(self, s: Array) -> Array:
        return (s > 0).astype(s.dtype)

    def derivative(self, s: Array, a: Array) -> Array:
        return xp.zeros_like(s)

    def backward(self, s: Array, a: Array, grad_a: Array) -> Array:
        grad_a.fill(0)
        return grad_a


class ReLU(ActivationFn):
    """Rectifier f(s) = max(s, 0); f'(s) = 1[s > 0] (0 at s = 0, as in PyTorch).

    The backward is torch's ``threshold_backward``, a selection rather than a product:
    ``dL/ds = 0`` where ``s <= 0`` whatever ``dL/da`` is (an overflowed ``inf`` gradient at an
    inactive unit gives 0, not ``inf * 0 = NaN``) and ``dL/da`` elsewhere, NaN ``s`` included
    (f'(NaN) = 1 as in torch)."""

    name = "relu"
    max_derivative = 1.0
    taylor = None

    def forward(self, s: Array) -> Array:
        """``a = max(s, 0)`` (a new array; ``+0`` at ``s <= 0``, NaN kept)."""
        # the kernel writes a fresh C-contiguous array of s's dtype: s alone decides the path
        k = accel.fits(s, s) if s.__class__ is xp.ndarray else None
        if k is None:
            return xp.maximum(s, 0)
        a = xp.empty_like(s)
        k.relu_forward(s, a)  # the same, one SIMD pass (depthlab.kernels)
        return a

    def derivative(self, s: Array, a: Array) -> Array:
        return xp.logical_not(s <= 0).astype(s.dtype)

    def backward(self, s: Array, a: Array, grad_a: Array) -> Array:
        """``dL/ds = grad_a * 1[s > 0]`` in place; 0 at inactive units whatever ``grad_a``."""
        k = accel.fits(grad_a, s)
        if k is None or grad_a.shape != s.shape:
            keep = s <= 0
            xp.logical_not(keep, out=keep)
            grad_a *= keep  # bool operand: the float dtype of grad_a is kept
            if xp.isnan(grad_a).any():  # inf or NaN times 0 at an inactive unit: 0 there, as torch
                grad_a[~keep] = 0
        else:
            k.relu_backward(grad_a, s)  # the same, one pass (depthlab.kernels)
        return grad_a


class LeakyReLU(ActivationFn):
    """f(s) = s for s > 0, negative_slope * s otherwise; f' = 1 or negative_slope
    (negative_slope at s = 0, as in PyTorch)."""

    name = "leaky_relu"
    taylor = None

    def __init__(self, negative_slope: float = 0.01) -> None:
        self.negative_slope = real("negative_slope", negative_slope)
        self.max_derivative = max(1.0, abs(self.negative_slope))

    @property
    def params(self) -> dict[str, float]:
        return {"negative_slope": self.negative_slope}

    def forward(self, s: Array) -> Array:
        k = self.negative_slope
        if k == 0.0:  # max(s, 0): s * 0 would be NaN at s = +-inf
            return xp.maximum(s, 0)
        if 0.0 < k <= 1.0:
            return xp.maximum(s, s * k)
        if k > 1.0:
            return xp.minimum(s, s * k)
        return xp.where(s > 0, s, s * k)

    def derivative(self, s: Array, a: Array) -> Array:
        pos = s > 0  # torch: s > 0 ? 1 : negative_slope (negative_slope at NaN s too)
        d = xp.multiply(xp.logical_not(pos), s.dtype.type(self.negative_slope))
        d += pos
        return d


class ELU(ActivationFn):
    """f(s) = s for s > 0, alpha (e^s - 1) otherwise (expm1 on min(s, 0): no overflow);
    f' = 1 for s > 0, alpha e^s otherwise (alpha at s = 0, as in PyTorch)."""

    name = "elu"

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = real("alpha", alpha)
        self.max_derivative = max(1.0, abs(self.alpha))
        self.taylor = (0.0, 1.0) if self.alpha == 1.0 else None

    @property
    def params(self) -> dict[str, float]:
        return {"alpha": self.alpha}

    def _scale(self) -> float:
        return 1.0

    def forward(self, s: Array) -> Array:
        neg = xp.minimum(s, 0)
        xp.expm1(neg, out=neg)
        neg *= self.alpha
        neg += xp.maximum(s, 0)
        scale = self._scale()
        if scale != 1.0:
            neg *= scale
        return neg

    def derivative(self, s: Array, a: Array) -> Array:
        # torch's elu_backward: s <= 0 ? alpha scale e^s : scale (scale at NaN s too; fmin
        # keeps e^s finite there so the mask can zero it)
        scale = self._scale()
        neg = s <= 0
        d = xp.fmin(s, 0)
        xp.exp(d, out=d)
        d *= self.alpha * scale
        d *= neg
        pos = xp.logical_not(neg, out=neg)
        if scale == 1.0:
            d += pos
        else:
            d += xp.multiply(pos, s.dtype.type(scale))
        return d


class SELU(ELU):
    """Scaled ELU (Klambauer et al. 2017): lambda * elu_alpha(s) with alpha = 1.6732632...,
    lambda = 1.0507009...; f' = lambda for s > 0, lambda alpha e^s otherwise."""

    name = "selu"

    def __init__(self) -> None:
        super().__init__(alpha=SELU_ALPHA)
        self.max_derivative = SELU_LAMBDA * SELU_ALPHA
        self.taylor = None

    @property
    def params(self) -> dict[str, float]:
        return {}

    def _scale(self) -> float:
        return SELU_LAMBDA


class Swish(ActivationFn):
    """Swish f(s) = s sigma(beta s) (SiLU at beta = 1);
    f' = sigma(beta s) + beta a (1 - sigma(beta s))."""

    name = "swish"

    def __init__(self, beta: float = 1.0) -> None:
        self.beta = real("beta", beta)
        self.max_derivative = _SWISH_MAX_DERIV if self.beta != 0.0 else 0.5
        self.taylor = (0.0, 0.5, self.beta / 4.0, 0.0)

    @property
    def params(self) -> dict[str, float]:
        return {"beta": self.beta}

    def _sig(self, s: Array) -> Array:
        return expit(s) if self.beta == 1.0 else expit(s * self.beta)

    def forward(self, s: Array) -> Array:
        out = self._sig(s)
        out *= s
        return out

    def derivative(self, s: Array, a: Array) -> Array:
        sig = self._sig(s)
        d = 1 - sig
        d *= a
        if self.beta != 1.0:
            d *= self.beta
        d += sig
        return d


class Softmax(ActivationFn):
    """Softmax along the last axis, a_i = e^(s_i - max s) / sum_j e^(s_j - max s).

    ``backward`` is the Jacobian-vector product a * (g - sum(g * a, axis=-1)); ``derivative``
    returns only the Jacobian diagonal a (1 - a) (entries of the Jacobian are at most 1/4).
    """

    name = "softmax"
    max_derivative = 0.25
    taylor = None
    elementwise = False

    def forward(self, s: Array) -> Array:
        e = s - s.max(axis=-1, keepdims=True)
        xp.exp(e, out=e)
        e /= e.sum(axis=-1, keepdims=True)
        return e

    def derivative(self, s: Array, a: Array) -> Array:
        d = 1 - a
        d *= a
        return d

    def backward(self, s: Array, a: Array, grad_a: Array) -> Array:
        dot = (grad_a * a).sum(axis=-1, keepdims=True)
        grad_a -= dot
        grad_a *= a
        return grad_a


class Softsign(ActivationFn):
    """Softsign f(s) = s / (1 + |s|); f' = 1 / (1 + |s|)^2 (torch's NaN at s = +-inf, where
    f is NaN too)."""

    name = "softsign"
    max_derivative = 1.0
    taylor = (0.0, 1.0)

    def forward(self, s: Array) -> Array:
        t = xp.abs(s)
        t += 1
        xp.divide(s, t, out=t)
        return t

    def _denominator(self, s: Array) -> Array:
        """``(1 + |s|)^2``, NaN at ``s = +-inf`` as torch's autograd gives it (``f(+-inf)`` is
        inf / inf = NaN in both; ``f'`` was 0 there): ``|s| + s - s`` is ``|s|`` exactly for
        every finite ``s`` (``2s - s``, ``0 - s``) and NaN at +-inf."""
        t = xp.abs(s)
        # 2s past the range: inf - s = inf; (1 + |s|)^2 past it (|s| >= 1.9e19 in float32,
        # 1.3e154 in float64): inf, so f' = 1 / inf = 0 as torch's, without a warning
        with xp.errstate(over="ignore", invalid="ignore"):
            t += s
            t -= s
            t += 1
            t *= t
        return t

    def derivative(self, s: Array, a: Array) -> Array:
        t = self._denominator(s)
        xp.divide(1, t, out=t)
        return t

    def backward(self, s: Array, a: Array, grad_a: Array) -> Array:
        grad_a /= self._denominator(s)
        return grad_a


class GELU(ActivationFn):
    """GELU (torch.nn.GELU). Exact (``approximate="none"``): f(s) = s Phi(s) (Phi = standard
    normal CDF), f' = Phi(s) + s phi(s). ``approximate="tanh"`` (Hendrycks & Gimpel's
    approximation, torch's ``GELU(approximate="tanh")``): f(s) = s (1 + t) / 2 with
    t = tanh(k (s + c s^3)), k = sqrt(2/pi), c = 0.044715;
    f' = (1 + t) / 2 + s (1 - t)(1 + t) k (1 + 3 c s^2) / 2. Both have the Maclaurin
    coefficients (0, 1/2, 1/sqrt(2 pi), 0)."""

    name = "gelu"
    max_derivative = _GELU_MAX_DERIV
    taylor = (0.0, 0.5, _INV_SQRT_2PI, 0.0)

    def __init__(self, approximate: str = "none") -> None:
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate={approximate!r} is not accepted; accepted: "
                             "'none' (exact, erf) or 'tanh'")
        self.approximate = approximate
        if approximate == "tanh":
            self.max_derivative = _GELU_TANH_MAX_DERIV

    @property
    def params(self) -> dict[str, Any]:
        return {"approximate": "tanh"} if self.approximate == "tanh" else {}

    def _tanh_inner(self, s: Array) -> Array:
        """t = tanh(k (s + c s^3)) (a new array; torch's order of operations); for |s| whose
        cube overflows t is +-1."""
        t = s * s
        t *= s
        t *= _GELU_TANH_C
        t += s
        t *= _GELU_TANH_K
        xp.tanh(t, out=t)
        return t

    def forward(self, s: Array) -> Array:
        if self.approximate == "tanh":
            with xp.errstate(over="ignore", invalid="ignore"):
                t = self._tanh_inner(s)
                t += 1
                t *= s * 0.5
            return t
        out = ndtr(s)
        out *= s
        return out

    def derivative(self, s: Array, a: Array) -> Array:
        if self.approximate == "tanh":
            with xp.errstate(over="ignore", invalid="ignore"):
                t = self._tanh_inner(s)
                inner = s * s  # s/2 (1 - t)(1 + t) k (1 + 3 c s^2)
                inner *= 3.0 * _GELU_TANH_C
                inner += 1
                inner *= _GELU_TANH_K
                inner *= _one_minus_square(t)
                inner *= s * 0.5
                # s^2 overflowed where t is +-1: (1 - t)(1 + t) = 0 there, f' = (1 + t) / 2
                inner[xp.isnan(inner) & xp.isfinite(s)] = 0
                t += 1
                t *= 0.5
                t += inner
            return t
        with xp.errstate(over="ignore"):  # s^2 past the range (|s| >= 1.9e19 in float32):
            d = s * s                      # inf, e^-inf = 0, f' = Phi(s) as torch's
        d *= -0.5
        xp.exp(d, out=d)
        d *= s
        d *= _INV_SQRT_2PI
        d += ndtr(s)
        return d


class Mish(ActivationFn):
    """Mish f(s) = s tanh(softplus(s)), softplus(s) = log(1 + e^s) computed as logaddexp(0, s);
    f' = t + s sigma(s) (1 - t^2) with t = tanh(softplus(s))."""

    name = "mish"
    max_derivative = _MISH_MAX_DERIV
    taylor = (0.0, 0.6, 0.32, -0.016)

    @staticmethod
    def _t(s: Array) -> Array:
        t = xp.logaddexp(0, s)
        xp.tanh(t, out=t)
        return t

    def forward(self, s: Array) -> Array:
        t = self._t(s)
        t *= s
        return t

    def derivative(self, s: Array, a: Array) -> Array:
        t = self._t(s)
        d = t * t
        xp.subtract(1, d, out=d)
        d *= expit(s)
        d *= s
        d += t
        return d


class PenalizedTanh(ActivationFn):
    """Penalized tanh (Xu et al. 2016): tanh(s) for s > 0, a tanh(s) otherwise;
    f' = 1 - tanh^2(s) for s > 0, a (1 - tanh^2(s)) otherwise (a at s = 0)."""

    name = "penalized_tanh"
    taylor = None

    def __init__(self, a: float = 0.25) -> None:
        self.a = real("a", a)
        self.max_derivative = max(1.0, abs(self.a))

    @property
    def params(self) -> dict[str, float]:
        return {"a": self.a}

    def _factor(self, s: Array) -> Array:
        """1 for s > 0, a otherwise, in the dtype of s."""
        f = xp.multiply(s <= 0, s.dtype.type(self.a))
        f += s > 0
        return f

    def forward(self, s: Array) -> Array:
        t = xp.tanh(s)
        t *= self._factor(s)
        return t

    def derivative(self, s: Array, a: Array) -> Array:
        d = _one_minus_square(xp.tanh(s))
        d *= self._factor(s)
        return d


class Softplus(ActivationFn):
    """Softplus (torch.nn.Softplus): f(s) = log(1 + e^(beta s)) / beta, and f(s) = s where
    beta s > threshold (torch's linear region; log(1 + e^x) as logaddexp(0, x): no overflow);
    f'(s) = sigma(beta s), 1 where beta s > threshold (torch's ``softplus_backward``)."""

    name = "softplus"
    max_derivative = 1.0

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        self.beta = real("beta", beta)
        if self.beta == 0.0:
            raise ValueError("beta must be non-zero (f = log(1 + e^(beta s)) / beta), got 0")
        self.threshold = real("threshold", threshold)
        self.taylor = (math.log(2.0) / self.beta, 0.5, self.beta / 8.0, 0.0)
        # where torch's linear region starts: f and f' jump there (by 2e-9 at the defaults)
        edge = self.threshold / self.beta
        self.kinks = (edge,) if edge != 0.0 and math.isfinite(edge) else ()

    @property
    def params(self) -> dict[str, float]:
        return {"beta": self.beta, "threshold": self.threshold}

    def forward(self, s: Array) -> Array:
        x = s * self.beta if self.beta != 1.0 else s
        with xp.errstate(invalid="ignore"):  # NaN s: NaN, silently (as torch)
            out = xp.logaddexp(0, x)
        if self.beta != 1.0:
            out /= self.beta
        return xp.where(x > self.threshold, s, out)

    def derivative(self, s: Array, a: Array) -> Array:
        x = s * self.beta if self.beta != 1.0 else s
        d = expit(x)
        d[x > self.threshold] = 1
        return d


class LogSigmoid(ActivationFn):
    """Log-sigmoid (torch.nn.LogSigmoid): f(s) = log sigma(s) = -log(1 + e^-s) (as
    -logaddexp(0, -s): no overflow); f'(s) = sigma(-s) = 1 - sigma(s)."""

    name = "logsigmoid"
    max_derivative = 1.0
    taylor = (-math.log(2.0), 0.5, -0.125, 0.0)

    def forward(self, s: Array) -> Array:
        with xp.errstate(invalid="ignore"):  # NaN s: NaN, silently (as torch)
            out = xp.logaddexp(0, -s)
        xp.negative(out, out=out)
        return out

    def derivative(self, s: Array, a: Array) -> Array:
        return expit(-s)


def _inside(s: Array, lo: float, hi: float) -> Array:
    """``1[lo < s < hi]`` in the dtype of ``s``, 1 at NaN as torch's ``hardtanh_backward``
    (``s <= lo or s >= hi ? 0 : grad``)."""
    out = xp.logical_or(s <= lo, s >= hi)
    xp.logical_not(out, out=out)
    return out.astype(s.dtype)


class Hardtanh(ActivationFn):
    """Hardtanh (torch.nn.Hardtanh): f(s) = clip(s, min_val, max_val); f'(s) = 1 for
    min_val < s < max_val, 0 otherwise (0 at both kinks, as torch)."""

    name = "hardtanh"
    max_derivative = 1.0

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0) -> None:
        self.min_val = real("min_val", min_val)
        self.max_val = real("max_val", max_val)
        if not self.max_val > self.min_val:
            raise ValueError(f"max_val must be greater than min_val, got min_val={min_val!r}, "
                             f"max_val={max_val!r}")
        lo, hi = self.min_val, self.max_val
        self.taylor = ((0.0, 1.0, 0.0, 0.0) if lo < 0.0 < hi else (lo, 0.0, 0.0, 0.0)
                       if lo > 0.0 else (hi, 0.0, 0.0, 0.0) if hi < 0.0 else None)
        self.kinks = tuple(t for t in (lo, hi) if t != 0.0)

    @property
    def params(self) -> dict[str, float]:
        return {"min_val": self.min_val, "max_val": self.max_val}

    def forward(self, s: Array) -> Array:
        return xp.clip(s, self.min_val, self.max_val)

    def derivative(self, s: Array, a: Array) -> Array:
        return _inside(s, self.min_val, self.max_val)


class ReLU6(Hardtanh):
    """ReLU6 (torch.nn.ReLU6): f(s) = min(max(s, 0), 6); f'(s) = 1 for 0 < s < 6, else 0
    (0 at both kinks, as torch)."""

    name = "relu6"

    def __init__(self) -> None:
        super().__init__(0.0, 6.0)  # a kink at 0: taylor None

    @property
    def params(self) -> dict[str, float]:
        return {}


class Hardsigmoid(ActivationFn):
    """Hardsigmoid (torch.nn.Hardsigmoid): f(s) = min(max(s + 3, 0), 6) / 6; f'(s) = 1/6 for
    -3 < s < 3, 0 otherwise (0 at the kinks and at NaN, as torch; 1/6 is torch's float32
    constant 0.16666667163..., in float64 too)."""

    name = "hardsigmoid"
    max_derivative = _ONE_SIXTH_F32  # the derivative's value (1/6 rounded to float32)
    kinks = (-3.0, 3.0)
    taylor = (0.5, _ONE_SIXTH_F32, 0.0, 0.0)  # f'(0) as ``derivative`` gives it (5e-9 off 1/6)

    def forward(self, s: Array) -> Array:
        out = s + 3.0
        xp.clip(out, 0.0, 6.0, out=out)
        out /= 6.0
        return out

    def derivative(self, s: Array, a: Array) -> Array:
        d = xp.logical_and(s > -3.0, s < 3.0).astype(s.dtype)
        d *= _ONE_SIXTH_F32
        return d


class Hardswish(ActivationFn):
    """Hardswish (torch.nn.Hardswish, Howard et al. 2019): f(s) = s min(max(s + 3, 0), 6) / 6;
    f'(s) = 0 for s <= -3, (2 s + 3) / 6 for -3 < s < 3, 1 for s >= 3 (torch's
    ``hardswish_backward``, its values at the kinks)."""

    name = "hardswish"
    max_derivative = 1.5
    kinks = (-3.0, 3.0)
    taylor = (0.0, 0.5, 1.0 / 6.0, 0.0)

    def forward(self, s: Array) -> Array:
        out = s + 3.0
        xp.clip(out, 0.0, 6.0, out=out)
        out *= s
        out /= 6.0
        return out

    def derivative(self, s: Array, a: Array) -> Array:
        low = s <= -3.0
        mid = xp.logical_not(low) & (s < 3.0)  # NaN s: neither, 1 as torch's
        d = s / 3.0  # torch's x / 3 + 1/2
        d += 0.5
        return xp.where(mid, d, xp.logical_not(low).astype(s.dtype))


_LISTED = (Sigmoid, Tanh, Identity, Step, ReLU, LeakyReLU, ELU, SELU, Swish, Softmax, Softsign,
           GELU, Mish, PenalizedTanh, Softplus, LogSigmoid, Hardtanh, ReLU6, Hardsigmoid,
           Hardswish)

REGISTRY: Registry[ActivationFn] = Registry(
    "activation",
    {cls.name: cls for cls in _LISTED},
    aliases={"logistic": "sigmoid", "linear": "identity", "heaviside": "step", "silu": "swish",
             "leakyrelu": "leaky_relu", "lrelu": "leaky_relu", "log_sigmoid": "logsigmoid",
             "hard_tanh": "hardtanh", "hard_sigmoid": "hardsigmoid",
             "hard_swish": "hardswish"},
    passes=lambda obj: isinstance(obj, ActivationFn),
)

ACTIVATIONS: tuple[str, ...] = REGISTRY.names
"""The registered activation names, torch's ``softplus``, ``logsigmoid``, ``hardtanh``,
``relu6``, ``hardsigmoid`` and ``hardswish`` included (aliases accepted by ``get_activation``
are not listed): the config choices, the playground's and the theory's."""


def get_activation(name: str | ActivationFn, **kwargs: Any) -> ActivationFn:
    """Return the activation registered under ``name`` built with ``kwargs``.

    An :class:`ActivationFn` instance passes through unchanged (no kwargs allowed then).
    Names are case-insensitive and ``-`` may stand for ``_``. Unknown names raise ValueError,
    unknown keyword arguments TypeError.
    """
    return REGISTRY.build(name, **kwargs)
