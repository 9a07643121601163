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
                    d.W.value *= d.W.value.dtype.type(1.0 / np.sqrt(var))
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
