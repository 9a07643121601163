"""torchhunt39: dlt.probe / dlt.predict / dlt.Watch on models the earlier hunts had not seen,
each quantity against a direct autograd computation (population std, ddof = 0)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import depthlab.torch as dlt  # noqa: E402


def _outputs_and_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn,
                       layers: list[nn.Module]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Each layer's output and dL/d(output), by forward hooks and ``loss.backward()`` (what a
    training loop computes); the output is replaced by a clone so later in-place work does not
    touch what is kept."""
    kept: list[torch.Tensor] = []

    def keep(module, args, out):
        if out.requires_grad:
            out.retain_grad()
        kept.append(out)
        return out.clone()

    hooks = [m.register_forward_hook(keep) for m in layers]
    try:
        loss_fn(model(x), y).backward()
    finally:
        for h in hooks:
            h.remove()
    return [(t.detach(), t.grad) for t in kept]


def _row(df, layer: int, quantity: str) -> float | None:
    got = df[(df.layer == layer) & (df.quantity == quantity)].value
    return None if got.empty else float(got.iloc[0])


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(),
                         nn.Linear(8, 3)).double()


@pytest.mark.parametrize("frozen", [(0,), (0, 2)])
def test_frozen_lower_layers_on_an_x_that_requires_grad_have_their_gradient_rows(frozen):
    """A frozen backbone under a trainable head, on an x that requires grad (adversarial
    training, input saliency): loss.backward() gives the frozen layers' outputs a gradient,
    but the probe differentiated only for the trainable parameters, so those layers had no
    grad_pre_* rows (and a Watch on the same loop has them)."""
    model = _mlp()
    for i in frozen:
        model[i].requires_grad_(False)
    x = torch.randn(16, 6, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (16,))
    df = dlt.probe(model, x, y, nn.CrossEntropyLoss())
    assert x.grad is None  # the caller's x left as found
    ref = _outputs_and_grads(model, x, y, nn.CrossEntropyLoss(), [model[0], model[2], model[4]])
    for layer, (out, grad) in enumerate(ref, start=1):
        for q, v in (("pre_std", out.std(unbiased=False)), ("grad_pre_std",
                                                             grad.std(unbiased=False)),
                     ("grad_pre_absmean", grad.abs().mean())):
            got = _row(df, layer, q)
            assert got is not None, (layer, q)
            assert np.isclose(got, v.item(), rtol=1e-9), (layer, q)
    assert _row(df, 1, "weight_grad_std") is None  # frozen: no weight gradient
    assert _row(df, 3, "weight_grad_std") is not None
    # a Watch on the training loop's own backward has the same rows
    with dlt.Watch(model, every=1, theory=False) as watch:
        loss = nn.CrossEntropyLoss()(model(x), y)
        loss.backward()
        watch.step(loss)
    x.grad = None
    pred = dlt.predict(model, x, y, nn.CrossEntropyLoss())  # its measurement: NaN there
    assert pred[pred.quantity == "grad_pre_std"].value.notna().all()
    seen = watch.frame()
    for layer in (1, 2, 3):
        assert np.isclose(_row(seen, layer, "grad_pre_std"), _row(df, layer, "grad_pre_std"),
                          rtol=1e-9)


class _Checkpointed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch.utils.checkpoint import checkpoint

        h = checkpoint(lambda t: torch.tanh(self.b(torch.relu(self.a(t)))), x,
                       use_reentrant=True)
        return self.c(h)


def test_reentrant_checkpointing_leaves_the_inputs_grad_as_found():
    """Reentrant checkpointing refuses autograd.grad, so the probe runs loss.backward(): on a
    frozen model given an x that requires grad it left this backward's gradient in x.grad
    (the caller's accumulated gradient lost)."""
    torch.manual_seed(0)
    model = _Checkpointed().double().requires_grad_(False)
    x = torch.randn(8, 6, dtype=torch.float64, requires_grad=True)
    x.grad = torch.ones_like(x)
    with pytest.warns(RuntimeWarning, match="reentrant activation checkpointing"):
        df = dlt.probe(model, x, torch.randint(0, 3, (8,)), nn.CrossEntropyLoss())
    assert torch.equal(x.grad, torch.ones_like(x))
    assert _row(df, 3, "grad_pre_std") is not None  # the layer outside the checkpoint
