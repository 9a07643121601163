"""The theory line of the gradient panel: the back-propagated gradient std per hidden layer that
:func:`depthlab.theory.predict_gradients` predicts at initialization for this architecture.

Plain networks use the Gaussian variance recursion (``propagate``), batch-normalized ones the
batch-norm mean field (per layer ``Var(g_l) = gamma^2 E[f'(s)^2] / Var f(s) Var(g_{l+1})``,
Yang et al. 2019: relu grows by ``sqrt(pi / (pi - 1))`` per layer), residual ones the per-block
recursion ``Var(dL/dx_b) = Var(dL/dx_{b+1}) + Var(branch term)``. Inputs are standardized
(variance 1). The page draws ``relative_std`` times the std of the last hidden layer at step 0,
so the two curves meet at the top and their slopes can be compared; the note ends with the
prediction's own terms (``GradientPrediction.note``: wide layers, large batches, ...). Where
the argument does not hold (e.g. batch norm with an affine activation, non-zero random biases)
the line is omitted and the note says why.

The prediction is the mean over random weights of infinitely wide layers. A network of narrow
layers (below :data:`WIDE` units) is one draw around it: each layer scales the gradient's std by
a random factor, and the factors multiply over the layers, so one seed's measured first / last
ratio can sit several times from the line and another seed's elsewhere. ``narrow`` says so; the
page adds it where the two ratios are 2x apart or more. Measured (``Monitor.measure`` at step 0,
seeds 0 to 2, the spirals), measured / predicted first / last: sigmoid + N(0, 1), 30 layers:
0.05 to 0.48 at width 32, 0.49 to 0.75 at 128, 0.81 to 0.93 at 512; relu + He + batch norm, 20
layers: 2.2 to 3.7 at 32, 2.0 to 2.3 at 512; residual + batch norm, 200 blocks: 6.9 to 8.9 at 16,
3.7 to 4.8 at 128, 4.1 to 5.4 at 512 (the rest is the prediction's own terms: the 2-D inputs,
whose low rank the skip path carries into every block, ``input_rank_note``; on the 64-feature
digits 1.5x at 128).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..theory import predict_gradients

WIDE = 256
"""Hidden widths from which the theory note says nothing of one draw's departure (``narrow``):
at 512 the sigmoid net above is within 20% of the line for each seed."""


EXAMPLES = {
    "plain": "sigmoid + N(0, 1), 30 layers: 0.05 to 0.48 at width 32, 0.81 to 0.93 at 512",
    "batchnorm": "relu + He + batch norm, 20 layers: 2.2 to 3.7 at width 32, 2.0 to 2.3 at "
                 "512",
    "residual+batchnorm": "relu + He, residual blocks with batch norm, 200 blocks: 6.9 to 8.9 "
                          "at width 16, 4.1 to 5.4 at 512",
}
"""The measured examples :func:`narrow_note` quotes, by architecture (measured / predicted first
/ last at step 0, seeds 0 to 2, the spirals; see the module's docstring); residual blocks
without batch norm quote the plain one."""


def narrow_note(widths: list[int], architecture: str = "plain") -> str | None:
    """What the page says where the measured first / last ratio departs 2x or more from the
    predicted one and the narrowest hidden layer has fewer than :data:`WIDE` units (None
    otherwise): the line is the wide-layer mean, the network one random draw around it, with
    the measured example of :data:`EXAMPLES` for ``architecture``."""
    w, n = min(widths), len(widths)
    if w >= WIDE:
        return None
    example = EXAMPLES.get(architecture, EXAMPLES["plain"])
    return (f"the line is the mean over random weights of wide layers and this network, "
            f"{w} units wide, is one draw: its layers' random factors multiply over {n} "
            f"layers, so another seed gives another gap, narrower at larger widths "
            f"(measured / predicted first / last over seeds 0 to 2 on the spirals: {example})")


RANK_EXAMPLES = (
    "relu + He, residual blocks with batch norm, seed 0: on the 2-feature spirals 4.7x at "
    "200 blocks of 512 units, 3.7x of 128, 6.9x of 16, 4.4x at 1000 blocks of 128 and 10.6x "
    "of 16 (the residual preset); on digits' 64 features 1.5x at 200 blocks of 128"
)
"""Measured / predicted first / last gradient std at step 0 (``Monitor.measure``, the probe
rows) that :func:`input_rank_note` quotes. At 128 units and more the gap sits in the first
blocks (200 blocks of 128 on the spirals: measured / predicted 3.7 at layer 1, 1.5 at layer
20, 1.0 from layer 100 on), so it is the inputs' and not one narrow draw's (4.7x at 512)."""


def input_rank(x: Any) -> int | None:
    """The numerical rank of the rows ``x`` about their mean: ``rank(X - mean(X))``, singular
    values above ``max(n, d) * eps * s_max`` (NumPy's default tolerance); None without rows."""
    if x is None:
        return None
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 2 or not np.isfinite(a).all():
        return None
    return int(np.linalg.matrix_rank(a - a.mean(axis=0)))


def input_rank_note(rank: int | None, widths: list[int], architecture: str) -> str | None:
    """Why a residual batch-norm network's measured first / last ratio sits above the line when
    its inputs span fewer dimensions than its narrowest layer (None otherwise): the prediction
    assumes a white input batch, and the skip path ``x_{b+1} = x_b + F(x_b)`` carries the
    inputs' rank-``rank`` batch correlations to every block without whitening them, which
    raises the gradient near the input; with the measured examples of :data:`RANK_EXAMPLES`."""
    if architecture != "residual+batchnorm" or rank is None or rank >= min(widths):
        return None
    return (f"part of the gap, at any width, is the inputs': the probe rows span {rank} "
            f"dimension{'s' if rank != 1 else ''}, fewer than the {min(widths)} units of a "
            f"layer, and the identity path x + F(x) carries that low-rank batch into every "
            f"block unwhitened while the prediction assumes a white input batch, which "
            f"raises the gradient near the input; measured / predicted first / last at "
            f"step 0: {RANK_EXAMPLES}")


def _no_line(note: str) -> dict[str, Any]:
    """:func:`theory_profile` of a network the theory does not cover: ``note`` says why."""
    return {"relative_std": None, "note": note, "narrow": None, "inputs": None}


def theory_profile(config: dict[str, Any], x: Any = None) -> dict[str, Any]:
    """``{"relative_std": [...] (layer 1..L, top = 1), "note": str, "narrow": str | None,
    "inputs": str | None}``; ``relative_std`` is None when the theory does not cover the network
    (``note`` says why); ``narrow``: :func:`narrow_note` of the hidden widths, ``inputs``:
    :func:`input_rank_note` of the rank of ``x`` (a residual batch-norm net on 2-D inputs), for
    the page to add to a gap. ``x``:
    the rows the page measures (its probe batch); the prediction is then averaged over their
    own input lengths (``predict_gradients(x=)``) instead of a chi-square law for Gaussian
    features: the 2-D data sets' lengths are nothing like it. The loss is the config's
    ``train.loss`` (the page trains with cross_entropy by default): the note's output-gradient
    terms are that loss's (a regression loss's correction is not told to a cross-entropy run)."""
    m = config["model"]
    if len(m["sizes"]) < 3:
        return _no_line("no hidden layer")
    train = config.get("train")
    loss = train.get("loss") if isinstance(train, Mapping) else None
    try:
        pred = predict_gradients(m, x=x, loss=loss)
    except (ValueError, TypeError, OverflowError) as e:
        return _no_line(f"no theory line: {e}")
    if not pred.covered:
        why = pred.note.removeprefix("no prediction: ")
        return _no_line(f"no theory line: {why}")
    rel = [None if v is None else float(f"{v:.5g}") for v in pred.relative_std]
    what = {"plain": "", "batchnorm": ", batch norm", "residual": ", residual blocks",
            "residual+batchnorm": ", residual blocks with batch norm"}[pred.architecture]
    # the theory's own terms (wide layers, large batches, a white input batch, ...): the page
    # dropped them, and a batch-norm net on the 2-D spirals drew a line 3.7x off the measured
    # one at layer 1 with nothing to say what the prediction assumes
    terms = pred.note.strip().rstrip(".")
    terms = f"; the prediction's terms: {terms}" if terms else ""
    rows = "" if x is None else f", over the {len(x)} probe rows' own input lengths"
    widths = [int(w) for w in m["sizes"][1:-1]]
    return {"relative_std": rel, "narrow": narrow_note(widths, pred.architecture),
            "inputs": input_rank_note(input_rank(x), widths, pred.architecture),
            "note": f"theory at initialization (depthlab.theory.predict_gradients, "
                    f"{m['activation']}, {m['init']}{what}{rows}), scaled to the last layer's "
                    f"value at step 0 (the 'at init' line){terms}"}
