"""benchmarks/watch_floor.py --hooks: the methods it times exist where it looks for them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("torch")

from depthlab.torch import hooks as torch_hooks  # noqa: E402
from depthlab.torch import watch as torch_watch  # noqa: E402

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "watch_floor.py"


def _bench():
    spec = importlib.util.spec_from_file_location("watch_floor_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_timed_method_is_a_function_of_recording_or_watch():
    """A method renamed or moved (a hook split in two) would make ``--hooks`` fail with a
    KeyError or time nothing: each name must be a plain function of one of the two classes."""
    names = _bench().HOOKS
    assert len(set(names)) == len(names)
    for name in names:
        owner = vars(torch_hooks.Recording).get(name) or vars(torch_watch.Watch).get(name)
        assert callable(owner) and not isinstance(owner, property), name


def test_timed_wrappers_keep_the_names_arm_reads(monkeypatch):
    """``Recording.arm`` registers a hook ``with_kwargs`` by its ``__name__``
    (``_READS_INPUT``): a wrapper under another name would make the ReLU's hook get no
    kwargs and fail; the wrappers keep each name and add their time to the tally."""
    mod = _bench()
    for name in mod.HOOKS:  # undone after the test
        cls = torch_hooks.Recording if name in vars(torch_hooks.Recording) else torch_watch.Watch
        monkeypatch.setattr(cls, name, vars(cls)[name])
    spent: dict[str, int] = {name: 0 for name in mod.HOOKS}
    mod._timed_hooks(spent)
    for name in mod.HOOKS:
        cls = torch_hooks.Recording if name in vars(torch_hooks.Recording) else torch_watch.Watch
        assert vars(cls)[name].__name__ == name
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    w = torch_watch.Watch(model, every=1)
    loss = model(torch.randn(4, 6)).pow(2).mean()
    loss.backward()
    w.step(loss)
    w.close()
    assert spent["step"] > 0 and spent["_relu_post"] > 0 and spent["_layer_post"] > 0
    assert set(w.frame()["quantity"]) >= {"act_mean", "dead_frac", "pre_std"}
