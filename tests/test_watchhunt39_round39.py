"""Round 39 (watchhunt39): dlt.Watch on training loops nobody tried."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import depthlab.torch as dlt
from depthlab.experiments.store import Store


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def _train(watch: dlt.Watch, model: nn.Module, steps: int) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        watch.step(loss)
        opt.step()


def _interrupt_first_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C at the first ``torch.stack`` (the device-to-host copy of the pending losses in
    ``close()``: a sync, where a Ctrl-C lands while a GPU finishes its queue)."""
    real, calls = torch.stack, []

    def stack(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "stack", stack)


def test_close_interrupted_while_copying_the_losses_stores_the_run_when_called_again(
        tmp_path, monkeypatch):
    # the first close() set the Watch closed and was interrupted before it marked the run
    # unstored: close() again did nothing and the run never reached the store
    m = _model()
    w = dlt.Watch(m, every=10, out=tmp_path, theory=False)
    _train(w, m, 4)
    rows = len(w.frame())
    with monkeypatch.context() as patch:
        _interrupt_first_stack(patch)
        with pytest.raises(KeyboardInterrupt):
            w.close()
    w.close()
    with Store(tmp_path) as store:
        runs = store.runs()
        assert len(runs) == 1 and runs.status.tolist() == ["finished"]
        run_id = runs.id.iloc[0]
        assert store.steps(run_id).step.tolist() == [0, 1, 2, 3]
        assert len(store.probes(run_id)) == rows
    w.close()  # once stored, again: nothing more
    with Store(tmp_path) as store:
        assert len(store.runs()) == 1


def test_ctrl_c_twice_in_a_with_block_keeps_the_failed_run_for_close(tmp_path, monkeypatch):
    # Ctrl-C in the loop, and again while __exit__'s close() copies the losses: the run, with
    # the first interruption as its error, is stored by watch.close() afterwards
    m = _model()
    w = dlt.Watch(m, every=10, out=tmp_path, name="twice", theory=False)
    with pytest.raises(KeyboardInterrupt), monkeypatch.context() as patch:
        with w:
            _train(w, m, 3)
            _interrupt_first_stack(patch)
            raise KeyboardInterrupt
    assert not any(mod._forward_hooks or mod._forward_pre_hooks for mod in m.modules())
    with pytest.raises(RuntimeError, match="after close"):
        w.step(0.0)
    w.close()
    with Store(tmp_path) as store:
        runs = store.runs()
        assert runs.name.tolist() == ["twice"] and runs.status.tolist() == ["failed"]
        assert runs.error.iloc[0] == "KeyboardInterrupt: interrupted (Ctrl-C) after 3 steps"
        assert store.steps(runs.id.iloc[0]).step.tolist() == [0, 1, 2]


@pytest.mark.parametrize("every", [1, 2])
def test_weights_frozen_mid_run_with_their_old_grad_do_not_refuse_the_next_record(every):
    # a BitFit phase: every weight matrix frozen (requires_grad_(False)) and a new optimizer
    # over the biases; the frozen weights keep the .grad of their last backward, which no
    # backward changes any more: the next record was refused as "called again without a
    # backward" (training stopped) although a backward had run
    m = _model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    w = dlt.Watch(m, every=every, theory=False)
    g = torch.Generator().manual_seed(1)
    out: dict[str, torch.Tensor] = {}
    for step in range(5):
        if step == 2:
            for layer in (m[0], m[2]):
                layer.weight.requires_grad_(False)
            opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
        x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        handle = m[2].register_forward_hook(lambda mod, a, o: out.update(o=o) or o.retain_grad())
        loss = nn.functional.cross_entropy(m(x), y)
        loss.backward()
        handle.remove()
        w.step(loss)
        opt.step()
    assert w.steps_seen == 5
    frame = w.frame()
    row = frame[(frame.step == 4) & (frame.module == "2") & (frame.quantity == "grad_pre_std")]
    assert row.value.tolist() == [pytest.approx(out["o"].grad.std(unbiased=False).item())]



def test_a_watch_created_after_the_weights_were_frozen_records_the_bias_only_phase():
    # the frozen weights' .grad from the full training before the Watch: unchanged at the
    # first call, it was refused as "called without a backward since the Watch was created"
    m = _model()
    g = torch.Generator().manual_seed(1)

    def steps(opt: torch.optim.Optimizer, watch: dlt.Watch | None, n: int) -> None:
        for _ in range(n):
            x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(x), y)
            loss.backward()
            if watch is not None:
                watch.step(loss)
            opt.step()

    steps(torch.optim.SGD(m.parameters(), lr=0.1), None, 2)  # every weight keeps its .grad
    for layer in (m[0], m[2]):
        layer.weight.requires_grad_(False)
    w = dlt.Watch(m, every=1, theory=False)
    steps(torch.optim.SGD([m[0].bias, m[2].bias], lr=0.1), w, 2)
    assert w.steps_seen == 2 and set(w.frame().step) == {0, 1}
    assert m[0].weight.grad is not None  # (the stale gradient is still there)
