"""Layer-sequential unit-variance initialization (Mishkin & Matas 2015)."""

from __future__ import annotations

import numpy as np

from .backend import Array
from .backend import rng as make_rng
from .initializers import get_initializer
from .network import Network
from .probes.stats import measurement_mode
from .threads import blas_threads
from .validators import keyword_hints, positive_int, real


@keyword_hints
def lsuv(
    net: Network, x: Array, *, tol: float = 0.1, max_iter: int = 10, seed: int | None = 0
) -> list[float]:
    """Orthogonal weights, then for each Dense layer in forward order rescale
    ``W <- W / sqrt(Var(xW + b))`` on the batch ``x`` until ``|Var - 1| < tol``; the passes
    are training-mode passes without side effects (batch norm on the batch's statistics, its
    running statistics unchanged; dropout off).

    Random biases that differ across units add their spread to that variance whatever W's
    scale, so for such a layer the factor is instead the positive root ``s`` of
    ``s^2 Var(xW) + 2 s Cov(xW, b) + Var(b) = 1``; a ValueError (the network left unchanged)
    when no scale reaches 1 (the biases' spread alone is >= 1).

    Returns the final output variance of each Dense layer. Works in place on ``net``.
    """
    # a finite number > 0: "0.1" was a bare comparison TypeError, inf stopped before rescaling
    tol = real("tol", tol, positive=True)
    max_iter = positive_int("max_iter", max_iter)  # 0 passes would leave no variance to report
    x = net.check_input(x, finite=True)
    if x.shape[0] < 2:
        raise ValueError(f"LSUV needs a batch of at least 2 rows, got {x.shape[0]}")
    gen = make_rng(seed)
    ortho = get_initializer("orthogonal")
    denses = net.dense_layers()
    # a layer that cannot be rescaled (variance 0 or not finite) is refused with the network
    # as it was given: it was left with orthogonal weights, some layers rescaled
    saved = [d.W.value.copy() for d in denses]

    def output_variance(d) -> float:
        # as training sees the layer: batch norm on this batch's statistics (its running
        # statistics untouched), dropout off; inference mode refused a bn_inference =
        # "population" network (RuntimeError: needs whole-training-set statistics, which
        # are stale once LSUV has rescaled the weights anyway) and normalized an EMA one with
        # its initial running statistics (mean 0, variance 1), i.e. not at all
        with measurement_mode(net), np.errstate(all="ignore"):
            net.forward(x, training=True)
        out = d.x @ d.W.value
        if d.b is not None:
            out += d.b.value
        return float(np.var(out))

    def bias_scale(d) -> float | None:
        """The factor s with Var(s xW + b) = 1 over the batch's entries (the positive root of
        s^2 Var(xW) + 2 s Cov(xW, b) + Var(b) = 1), None for a layer without biases or with
        biases equal across units (then 1 / sqrt(Var) is exact). Random biases add their
        spread to the variance whatever W's scale: 1 / sqrt(Var) then overshoots each pass
        and shrank W towards 0 without reaching 1 (biases of variance 4: W x 1e-3). Reads
        the layer's input ``d.x`` of :func:`output_variance`'s pass just before (W unchanged
        since)."""
        if d.b is None:
            return None
        b = np.asarray(d.b.value, dtype=np.float64)
        if not np.any(b != b.flat[0]):
            return None
        u = np.asarray(d.x @ d.W.value, dtype=np.float64)
        bb = np.broadcast_to(b, u.shape)
        a = float(np.var(u))
        c = float(np.mean((u - u.mean()) * (bb - bb.mean())))
        v = float(np.var(bb))
        if not (np.isfinite(a) and a > 0.0):
            return None
        disc = c * c - a * (v - 1.0)
        if disc < 0.0 or (-c + np.sqrt(disc)) <= 0.0:
            floor = v - c * c / a  # the least variance any scale of W reaches
            raise ValueError(f"LSUV: {d.name}'s output variance cannot reach 1 by scaling its "
                             f"weights: its biases alone give it {floor:.4g} (expected < 1; "
                             "zero or smaller biases); the network is left unchanged")
        return float((-c + np.sqrt(disc)) / a)

    variances: list[float] = []
    # the training loop's BLAS threads for this work (depthlab.threads): a 50-layer net of
    # width 64 on 256 rows took 2.4-18 s on a loaded 2-core machine with the default pool
    # (each pass's small products waiting on threads spinning for busy cores), 0.4 s with one
    with blas_threads(batch_rows=x.shape[0],
                      weight_shapes=[d.W.value.shape for d in denses]):
        try:
            for d in denses:
                d.W.value[...] = ortho(d.W.value.shape, gen, d.W.value.dtype)
            for d in denses:
                for _ in range(max_iter):
                    var = output_variance(d)
                    if not np.isfinite(var) or var == 0.0:
                        raise ValueError(f"LSUV: output variance of {d.name} is {var} on this "
                                         "batch; cannot rescale (the network is left unchanged)")
                    if abs(var - 1.0) < tol:
                        break
                    scale = bias_scale(d)
                    if scale is None:
                        scale = 1.0 / np.sqrt(var)
                    d.W.value *= d.W.value.dtype.type(scale)
                else:  # the last pass rescaled: the variance the layer ends with, not the one
                    # before
                    var = output_variance(d)
                variances.append(var)
        except BaseException:
            for d, w in zip(denses, saved):
                d.W.value[...] = w
            raise
        finally:
            net.clear_cache()
    return variances
