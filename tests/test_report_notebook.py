"""The example notebook ``examples/tour.ipynb`` runs top to bottom: its code cells are executed
in order in one namespace (as a kernel would), and each cell's value renders in Jupyter (a
figure, or an object with ``_repr_html_``)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from matplotlib.figure import Figure

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "tour.ipynb"


def test_notebook_runs_top_to_bottom(capsys):
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    assert len(cells) >= 6
    namespace: dict = {"__name__": "__main__"}
    shown = []
    for k, src in enumerate(cells):
        tree = ast.parse(src, filename=f"cell {k + 1}")
        last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        if last is not None:
            tree.body = tree.body[:-1]
        exec(compile(tree, f"cell {k + 1}", "exec"), namespace)  # noqa: S102
        if last is not None:
            value = eval(compile(ast.Expression(last.value), f"cell {k + 1}", "eval"),
                         namespace)  # noqa: S307
            shown.append(value)
    out = capsys.readouterr().out
    assert "gradient ratio" in out and "test accuracy of the loaded network" in out
    # what a kernel would display: figures and rich HTML views
    assert any(isinstance(v, Figure) for v in shown)
    rich = [type(v).__name__ for v in shown if hasattr(v, "_repr_html_")]
    assert {"History", "ProbeRecorder", "Diagnosis"} <= set(rich)
    for v in shown:
        if hasattr(v, "_repr_html_") and not isinstance(v, Figure):
            assert "<" in v._repr_html_() and len(repr(v)) < 300
