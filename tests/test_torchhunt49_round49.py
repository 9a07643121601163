"""Round 49 (torchhunt49): dlt.probe / dlt.Watch / dlt.predict on models nobody tried -- a
model that computes its loss inside ``forward`` (``loss_fn=None``), layers followed by an
``nn.Upsample``/``F.interpolate`` before their activation, custom autograd Functions, a user's
own hooks, pruning, embeddings with ``padding_idx``/``sparse=True``, hand-looped cells, Watch
lifecycles -- each against a direct float64 autograd computation (the reference of
tests/test_torchhunt48_round48.py) or a one-line refusal."""

from __future__ import annotations

import collections
import dataclasses
import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import depthlab.torch as dlt  # noqa: E402

D = torch.float64
CE = nn.CrossEntropyLoss()


def _stats(ts: list[torch.Tensor]) -> tuple[float, float, float]:
    """mean, population std and mean |.| of the entries of ``ts`` pooled (float64)."""
    v = torch.cat([(t.to_dense() if t.is_sparse else t).detach().double().reshape(-1)
                   for t in ts])
    return float(v.mean()), float(v.std(correction=0)), float(v.abs().mean())


def _first(out):
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out


def _call(model, x):
    if isinstance(x, tuple):
        return model(*x)
    if isinstance(x, dict):
        return model(**x)
    return model(x)


def reference(model: nn.Module, x, y, weights: dict, loss_fn=CE) -> dict:
    """``{name: {quantity: value}}`` by float64 autograd: ``pre_mean/pre_std`` of each call's
    output ``s`` of the layer ``name``, ``grad_pre_std/absmean`` of ``dL/ds`` (calls pooled),
    ``weight_std`` and ``weight_grad_std/absmean`` of ``weights[name]`` (a sparse gradient
    as its dense table); ``{"": {"loss": L}}``; ``loss_fn=None``: the output is the loss."""
    names = list(weights)
    outs: dict[str, list[torch.Tensor]] = {}
    handles = [model.get_submodule(n).register_forward_hook(
        lambda m, i, o, n=n: outs.setdefault(n, []).append(_first(o))) for n in names]
    try:
        out = _call(model, x)
        loss = out if loss_fn is None else loss_fn(out, y)
        loss = loss["loss"] if isinstance(loss, dict) else getattr(loss, "loss", loss)
    finally:
        for h in handles:
            h.remove()
    calls = [t for n in names for t in outs.get(n, []) if t.requires_grad]
    trained = [w for n in names for w in weights[n] if w.requires_grad]
    grads = dict(zip(map(id, calls + trained),
                     torch.autograd.grad(loss, calls + trained, allow_unused=True)))
    table: dict = {"": {"loss": float(loss.detach())}}
    for n in names:
        row = table[n] = {}
        if outs.get(n):
            row["pre_mean"], row["pre_std"], _ = _stats(outs[n])
            gs = [grads[id(t)] for t in outs[n] if grads.get(id(t)) is not None]
            if gs:
                _, row["grad_pre_std"], row["grad_pre_absmean"] = _stats(gs)
        _, row["weight_std"], _ = _stats(weights[n])
        wg = [grads[id(w)] for w in weights[n] if grads.get(id(w)) is not None]
        if wg:
            _, row["weight_grad_std"], row["weight_grad_absmean"] = _stats(wg)
    return table


def _table(df) -> dict:
    return {(m, q): v for m, q, v in zip(df.module, df.quantity, df.value)}


def _assert_matches(got: dict, ref: dict, rel: float = 1e-9) -> None:
    assert math.isclose(got[("", "loss")], ref[""]["loss"], rel_tol=rel)
    assert {m for m, _ in got} - {""} == set(ref) - {""}
    for n, row in ref.items():
        if not n:
            continue
        for q, v in row.items():
            assert math.isclose(got[(n, q)], v, rel_tol=rel, abs_tol=1e-15), (n, q)
        for q in ("grad_pre_std", "weight_grad_std"):  # absent where no gradient, not 0
            assert ((n, q) in got) == (q in row), (n, q)


# ---------------------------------------------------------------------------------------------
# loss_fn=None: the model computes its loss inside forward (Hugging Face style)

Output = collections.namedtuple("Output", "loss logits")


@dataclasses.dataclass
class DataOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None


class LossInside(nn.Module):
    """Returns its cross-entropy loss when given labels: as a scalar, a dict, a namedtuple or
    a dataclass (``transformers``' ModelOutput is a dict with attributes)."""

    def __init__(self, form: str) -> None:
        super().__init__()
        self.a, self.c, self.form = nn.Linear(6, 8), nn.Linear(8, 4), form

    def forward(self, x, labels=None):
        logits = self.c(torch.tanh(self.a(x)))
        if labels is None:
            return logits
        loss = F.cross_entropy(logits, labels)
        if self.form == "scalar":
            return loss
        if self.form == "dict":
            return {"logits": logits, "loss": loss}
        if self.form == "namedtuple":
            return Output(loss, logits)
        return DataOutput(logits, loss)


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(12, 6, generator=g, dtype=D), torch.randint(0, 4, (12,), generator=g)


@pytest.mark.parametrize("form", ["scalar", "dict", "namedtuple", "dataclass"])
def test_loss_fn_none_takes_the_loss_the_model_returns(form):
    # dlt.probe refused it: "loss_fn must be callable (output, y) -> scalar tensor, got
    # NoneType", with no way to probe a model whose forward computes its loss
    torch.manual_seed(0)
    model = LossInside(form).double()
    x, y = _batch()
    batch = {"x": x, "labels": y}
    weights = {"a": [model.a.weight], "c": [model.c.weight]}
    ref = reference(model, batch, None, weights, loss_fn=None)
    _assert_matches(_table(dlt.probe(model, batch)), ref)
    _assert_matches(_table(dlt.probe(model, batch, None, None)), ref)
    _assert_matches(_table(dlt.probe(model, (x, y), loss_fn=None)), ref)


def test_loss_fn_none_refuses_an_output_without_a_loss_and_unread_targets():
    torch.manual_seed(0)
    model = LossInside("dict").double()
    x, y = _batch()
    with pytest.raises(ValueError, match=r"^loss_fn is None, so the model must return its "
                                         r"loss, but it returned a tensor of shape \(12, 4\);"):
        dlt.probe(model, x)  # no labels: logits
    with pytest.raises(ValueError, match=r"^y is given \(a tensor of shape \(12,\)\) but "
                                         r"loss_fn is None"):
        dlt.probe(model, {"x": x, "labels": y}, y)
