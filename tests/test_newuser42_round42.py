"""newuser42 (round 42): a new user's first contact with depthlab."""

from __future__ import annotations

import re

import pytest

import depthlab


def _quick_start() -> str:
    """The block after 'Quick start::' in ``depthlab.__doc__`` (what help(depthlab) shows)."""
    doc = depthlab.__doc__ or ""
    head, sep, rest = doc.partition("Quick start::")
    assert sep, "help(depthlab) shows no quick start"
    lines = []
    for line in rest.splitlines()[1:]:
        if line.strip() and not line.startswith("    "):
            break
        lines.append(line[4:])
    return "\n".join(lines).strip()


def test_help_quick_start_runs_as_pasted() -> None:
    """The quick start of help(depthlab) runs in a fresh namespace: it defines its own data."""
    code = _quick_start()
    # a fast version of the same code: fewer epochs, nothing else changed
    code = re.sub(r"epochs=\d+", "epochs=1", code)
    ns: dict = {}
    exec(compile(code, "<help(depthlab) quick start>", "exec"), ns)  # noqa: S102
    assert len(ns["hist"].epochs) == 1


def test_torch_run_gradient_caption_names_the_axis_it_draws(tmp_path) -> None:
    """A torch run's gradient figure numbers modules ([0], [2], ...), not layers 1..L: its
    caption (and the overview's) must not send the reader to a "layer 1" the axis lacks."""
    torch = pytest.importorskip("torch")
    from torch import nn

    import depthlab.torch as dlt
    from depthlab.experiments import Store
    from depthlab.report import build

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(),
                          nn.Linear(8, 3))
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with dlt.Watch(model, every=1, out=tmp_path / "runs", name="mlp", theory=False) as watch:
        for _ in range(2):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            watch.step(loss)
            opt.step()
    page = build.write_report(tmp_path / "rep", Store(tmp_path / "runs")).read_text()
    assert "Std of dL/ds per" in page  # the gradient figure is there
    assert "towards layer 1" not in page
    assert "falling towards the input (the left end)" in page
