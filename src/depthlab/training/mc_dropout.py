"""Monte Carlo dropout (Gal & Ghahramani 2016): average T stochastic forward passes."""

from __future__ import annotations

import numpy as np

from ..activations import get_activation
from ..backend import Array
from ..backend import rng as make_rng
from ..memory import check_array
from ..network import Network
from ..threads import blas_threads
from ..validators import keyword_hints


@keyword_hints
def mc_dropout_predict(
    net: Network, x: Array, T: int = 50, *, seed: int | None = None, output: str | None = None
) -> tuple[Array, Array]:
    """Mean and standard deviation over ``T`` passes with dropout active while batch norm
    keeps its inference statistics. ``output="softmax"`` averages probabilities, not logits."""
    if isinstance(T, bool) or not isinstance(T, int | np.integer) or T < 1:
        raise ValueError(f"T (number of stochastic passes) must be a positive integer, got {T!r}")
    T = int(T)
    drops = net.dropouts()
    if not drops:
        raise ValueError("the network has no dropout layer: Monte Carlo dropout needs dropout > 0")
    x = net.check_input(x, finite=True)
    # the T outputs are kept (mean and std at the end): refused before the first pass if
    # they cannot fit
    n_out = net.dense_layers()[-1].W.value.shape[1]
    check_array((T, x.shape[0], n_out), net.dtype, f"mc_dropout_predict(T={T}) outputs")
    try:  # the error names output=, the argument given (not "activation")
        fn = get_activation(output) if output is not None else None
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"output={output!r:.40}: {exc}") from None
    _check_not_applied_twice(net, fn)
    if seed is not None:
        gens = make_rng(seed).spawn(len(drops))
        saved = [d.rng for d in drops]
        for d, g in zip(drops, gens):
            d.rng = g
    for d in drops:
        d.mc = True
    # the training loop's BLAS threads for this work (depthlab.threads): 50 passes of a
    # 30-layer net of width 64 on 256 rows took 2-16 s on a loaded 2-core machine with the
    # default pool (small products waiting on threads spinning for busy cores), 0.3-0.4 s with one
    shapes = [layer.W.value.shape for layer in net.dense_layers()]
    try:
        outs = []
        with blas_threads(batch_rows=x.shape[0], weight_shapes=shapes):
            for _ in range(T):
                out = net.predict(x)
                outs.append(fn.forward(out) if fn is not None else out)
    finally:
        for d in drops:
            d.mc = False
        if seed is not None:
            for d, g in zip(drops, saved):
                d.rng = g
    stack = np.stack(outs)
    return stack.mean(axis=0), stack.std(axis=0)


def _check_not_applied_twice(net: Network, fn) -> None:
    """A ValueError when ``output`` names the activation the network already ends in
    (``output_activation="softmax"`` with ``output="softmax"``): the passes' outputs are
    probabilities already and were silently squashed again (10 classes' mean probabilities
    pulled towards 1/10)."""
    from ..layers import Activation

    last = next(iter(reversed(list(net.leaves()))), None)
    if fn is not None and isinstance(last, Activation) and last.fn.name == fn.name:
        raise ValueError(f"output={fn.name!r}: the network already ends in {fn.name} "
                         f"(output_activation={fn.name!r}), so its outputs are "
                         f"probabilities already; leave output=None")
