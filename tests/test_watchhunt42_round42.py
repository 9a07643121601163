"""Round 42 (watchhunt42): dlt.Watch on training loops nobody tried."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import depthlab.torch as dlt


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def _batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + i)
    return torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)


def _std(t: torch.Tensor) -> float:
    return float(t.detach().double().std(unbiased=False))


def _amp_loop(watch: bool, every: int, variant: str, steps: int = 4,
              inf_at: int = -1) -> tuple[nn.Module, dlt.Watch | None, dict]:
    """fp16 autocast + ``torch.amp.GradScaler('cpu')`` NOT given to the Watch. Reference
    (float64, hooks of the test's own): per recorded step, ``grad_pre_std`` of each Linear's
    output and ``weight_grad_std`` of its weight, of the loss itself (``/ S`` where the backward
    or the ``.grad`` read carried the scale)."""
    model = _model()
    layers = {"0": model[0], "2": model[2]}
    if variant == "fused":
        opt = torch.optim.Adam(model.parameters(), lr=0.01, fused=True)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    w = dlt.Watch(model, every=every, theory=False) if watch else None
    grads: dict[str, torch.Tensor] = {}
    ref: dict[int, dict] = {}

    def keep(name: str):
        def hook(module, args, out):
            out.register_hook(lambda g: grads.__setitem__(name, g))
        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in layers.items()] if watch else []
    for i in range(steps):
        opt.zero_grad()
        x, y = _batch(i)
        with torch.autocast("cpu", dtype=torch.float16):
            loss = nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        if i == inf_at:
            model[0].weight.grad[0, 0] = math.inf  # the scaler skips this step
        scale = scaler.get_scale()
        if variant in ("unscale_first", "clip_after"):  # the .grad unscaled before
            scaler.unscale_(opt)  # Watch.step (and clipped, before or after it)
            if variant == "unscale_first":
                nn.utils.clip_grad_norm_(model.parameters(), 0.05)
        if w is not None:
            w.step(loss)
            if i % every == 0:
                wscale = 1.0 if variant in ("unscale_first", "clip_after") else scale
                ref[i] = {(n, "grad_pre_std"): _std(grads[n]) / scale for n in layers}
                ref[i].update({(n, "weight_grad_std"): _std(m.weight.grad) / wscale
                               for n, m in layers.items()})
        if variant == "clip_after":  # unscaled before the record, clipped after it
            nn.utils.clip_grad_norm_(model.parameters(), 0.1)  # by 3x to 7x
        scaler.step(opt)
        scaler.update()
    for h in handles:
        h.remove()
    if w is not None:
        w.close()
    return model, w, ref


@pytest.mark.parametrize("every,variant", [(1, "plain"), (3, "plain"), (1, "unscale_first"),
                                           (2, "fused"), (1, "clip_after")])
def test_a_grad_scaler_not_given_to_the_watch_is_found_and_its_scale_divided_out(
        every: int, variant: str) -> None:
    """``scaler.scale(loss).backward(); watch.step(loss); scaler.step(opt)`` with a Watch made
    without ``scaler=``: every gradient row was ``S`` (here 1024) times the gradient of the loss,
    without a word. Now the scaler stepping the watched weights' optimizer is found and taken
    as the Watch's (warned once), and the record taken before it (step 0) is divided too:
    every row equals autograd's gradient of the loss, and training is bit-identical."""
    with pytest.warns(RuntimeWarning, match=r"GradScaler steps the optimizer .* not given "
                      r"to the Watch: .*S = 1024.*from step 0 on"):
        watched, w, ref = _amp_loop(True, every, variant)
    plain, _, _ = _amp_loop(False, every, variant)
    for a, b in zip(watched.parameters(), plain.parameters()):
        assert torch.equal(a, b)
    frame = w.frame()
    assert sorted(ref) == sorted(frame.step.unique()) and ref
    for step, rows in ref.items():
        for (module, quantity), expected in rows.items():
            got = frame[(frame.step == step) & (frame.module == module)
                        & (frame.quantity == quantity)].value.tolist()
            assert got == pytest.approx([expected], rel=2e-3), (step, module, quantity)


def test_records_before_the_scaler_is_found_are_named_in_the_warning() -> None:
    """A first step skipped by the scaler (inf gradients: no optimizer step ran, so the scaler
    is found one step later) keeps the factor of its scale; the warning names that step."""
    with pytest.warns(RuntimeWarning, match=r"from step 1 on.*the records of steps 0 \(no "
                      r"optimizer step after them: steps it skipped"):
        _, w, ref = _amp_loop(True, 1, "plain", steps=3, inf_at=0)
    frame = w.frame()
    got = frame[(frame.step == 1) & (frame.module == "2")
                & (frame.quantity == "grad_pre_std")].value.item()
    assert got == pytest.approx(ref[1][("2", "grad_pre_std")], rel=2e-3)


def test_a_loop_without_a_scaler_is_not_warned_about_one() -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = dlt.Watch(model, every=1, theory=False)
        for i in range(2):
            opt.zero_grad()
            x, y = _batch(i)
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            w.step(loss)
            opt.step()
        w.close()
    assert w.scaler is None


@pytest.mark.parametrize("every", [1, 2, 3])
def test_a_grad_scaler_that_starts_after_warm_up_steps_is_found_too(every: int) -> None:
    """Steps 0-2 in float32 with ``opt.step()``, then fp16 autocast and ``scaler.step(opt)``
    (mixed precision switched on after a warm-up) without ``scaler=``: the scaler's first step
    is not the weights' first optimizer step, and every later gradient row was ``S`` times
    the gradient. Each record equals the float64 autograd reference (``/ S`` from step 3)."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    grads: dict[str, torch.Tensor] = {}
    layers = {"0": model[0], "2": model[2]}

    def keep(name: str):
        def hook(module, args, out):
            out.register_hook(lambda g: grads.__setitem__(name, g))
        return hook

    for name, m in layers.items():
        m.register_forward_hook(keep(name))
    watch = dlt.Watch(model, every=every, theory=False)
    ref = {}
    with pytest.warns(RuntimeWarning, match="GradScaler steps the optimizer"):
        for i in range(7):
            amp = i >= 3
            opt.zero_grad()
            x, y = _batch(i)
            with torch.autocast("cpu", dtype=torch.float16, enabled=amp):
                loss = nn.functional.cross_entropy(model(x), y)
            scale = scaler.get_scale() if amp else 1.0
            (scaler.scale(loss) if amp else loss).backward()
            watch.step(loss)
            if i % every == 0:
                ref[i] = {(n, "grad_pre_std"): _std(grads[n]) / scale for n in layers}
                ref[i].update({(n, "weight_grad_std"): _std(m.weight.grad) / scale
                               for n, m in layers.items()})
            if amp:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
    watch.close()
    frame = watch.frame()
    for step, rows in ref.items():
        for (module, quantity), expected in rows.items():
            got = frame[(frame.step == step) & (frame.module == module)
                        & (frame.quantity == quantity)].value.tolist()
            assert got == pytest.approx([expected], rel=2e-3), (step, module, quantity)


def _tied_run(given: bool) -> tuple[object, float]:
    """TiedEmbeddingHead (map layers: the rows numbered among them) under a GradScaler."""
    from helpers.torchmodels import TiedEmbeddingHead

    torch.manual_seed(0)
    model = TiedEmbeddingHead()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    watch = dlt.Watch(model, every=1, theory=False, scaler=scaler if given else None)
    g = torch.Generator().manual_seed(0)
    first = math.nan
    for i in range(3):
        opt.zero_grad()
        t, y = torch.randint(0, 5, (4, 3), generator=g), torch.randint(0, 5, (4,), generator=g)
        loss = nn.functional.cross_entropy(model(t), y)
        scaler.scale(loss).backward()
        if i == 0:
            first = _std(model.fc.weight.grad) / scaler.get_scale()
        watch.step(loss)
        scaler.step(opt)
        scaler.update()
    watch.close()
    return watch.frame(), first


def test_a_found_grad_scaler_divides_step_0_of_a_model_with_map_layers() -> None:
    """A tied embedding used as the output projection (map layers): step 0's weight_grad_*
    rows, recorded before the scaler was found, were left S times too large (the weights
    counted as unscaled because scaler.step had unscaled them since). Now the frame equals
    the one with scaler= given, and fc's row equals autograd's ``.grad / S``."""
    import pandas as pd

    given, _ = _tied_run(True)
    with pytest.warns(RuntimeWarning, match="GradScaler steps the optimizer"):
        found, expected = _tied_run(False)
    pd.testing.assert_frame_equal(found, given, rtol=1e-12)
    got = found[(found.step == 0) & (found.module == "fc")
                & (found.quantity == "weight_grad_std")].value.item()
    assert got == pytest.approx(expected, rel=1e-9)
