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
"""

from __future__ import annotations

from typing import Any

from ..theory import predict_gradients


def theory_profile(config: dict[str, Any], x: Any = None) -> dict[str, Any]:
    """``{"relative_std": [...] (layer 1..L, top = 1), "note": str}``; ``relative_std`` is None
    when the theory does not cover the network (``note`` says why). ``x``: the rows the page
    measures (its probe batch); the prediction is then averaged over their own input lengths
    (``predict_gradients(x=)``) instead of a chi-square law for Gaussian features: the 2-D data
    sets' lengths are nothing like it."""
    m = config["model"]
    if len(m["sizes"]) < 3:
        return {"relative_std": None, "note": "no hidden layer"}
    try:
        pred = predict_gradients(m) if x is None else predict_gradients(m, x=x)
    except (ValueError, TypeError, OverflowError) as e:
        return {"relative_std": None, "note": f"no theory line: {e}"}
    if not pred.covered:
        why = pred.note.removeprefix("no prediction: ")
        return {"relative_std": None, "note": f"no theory line: {why}"}
    rel = [None if v is None else float(f"{v:.5g}") for v in pred.relative_std]
    what = {"plain": "", "batchnorm": ", batch norm", "residual": ", residual blocks",
            "residual+batchnorm": ", residual blocks with batch norm"}[pred.architecture]
    # the theory's own terms (wide layers, large batches, a white input batch, ...): the page
    # dropped them, and a batch-norm net on the 2-D spirals drew a line 3.7x off the measured
    # one at layer 1 with nothing to say what the prediction assumes
    terms = pred.note.strip().rstrip(".")
    terms = f"; the prediction's terms: {terms}" if terms else ""
    rows = "" if x is None else f", over the {len(x)} probe rows' own input lengths"
    return {"relative_std": rel,
            "note": f"theory at initialization (depthlab.theory.predict_gradients, "
                    f"{m['activation']}, {m['init']}{what}{rows}), scaled to the last layer's "
                    f"value at step 0 (the 'at init' line){terms}"}
