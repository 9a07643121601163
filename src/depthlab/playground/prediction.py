"""The theory line of the gradient panel: the back-propagated gradient std per hidden layer that
:func:`depthlab.theory.propagate` predicts at initialization for this architecture and init.

For a plain network ``[n_in, w x depth]`` with weight variance ``v`` (from the initializer) and
standardized inputs (variance 1), ``propagate`` gives ``Var(dL/ds_l) / Var(dL/ds_L)``; the page
draws ``sqrt`` of it times the measured std of the last hidden layer, so the two curves meet at
the top and their slopes can be compared. Batch-normalized and residual networks are outside
that recursion (it has no normalization or skip path): the line is then omitted with the reason.
"""

from __future__ import annotations

import math
from typing import Any

from ..theory import propagate


def theory_profile(config: dict[str, Any]) -> dict[str, Any]:
    """``{"relative_std": [...] (layer 1..L, top = 1), "note": str}``; ``relative_std`` is None
    when the theory does not cover the network (``note`` says why)."""
    m = config["model"]
    sizes = m["sizes"]
    if m["batchnorm"] or m["residual"]:
        what = "batch norm" if m["batchnorm"] and not m["residual"] else (
            "residual connections" if not m["batchnorm"] else "batch norm and residual blocks")
        return {"relative_std": None,
                "note": f"no theory line: the variance recursion covers plain networks, "
                        f"not {what}"}
    widths = [int(sizes[0]), *(int(h) for h in sizes[1:-1])]
    if len(widths) < 2:
        return {"relative_std": None, "note": "no hidden layer"}
    if m["bias_init"] != "zeros":
        return {"relative_std": None,
                "note": "no theory line: it assumes zero biases at initialization"}
    try:
        df = propagate(widths, m["activation"], m["init"])
    except (ValueError, TypeError, OverflowError) as e:
        return {"relative_std": None, "note": f"no theory line: {e}"}
    rel = [math.sqrt(v) if math.isfinite(v) and v >= 0 else None for v in df["grad_pre_var"]]
    return {"relative_std": [None if v is None else float(f"{v:.5g}") for v in rel],
            "note": f"theory at initialization (depthlab.theory.propagate, {m['activation']}, "
                    f"{m['init']}), scaled to the measured last layer"}
