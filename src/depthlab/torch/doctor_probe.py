"""What the torch doctor measures at each probed step: ``dlt.probe``'s table, the rows of
activations the forward applies as functions, and the gradient at a normalization between
a layer and its activation, before its affine (dL/dxhat = gamma * dL/d(norm output),
``NORM_GRAD``), which the gradient rules read in place of ``grad_pre_std`` for that layer.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..diagnosis.rules import NORM_GRAD
from . import prescriptions as rx
from .gradient_path import POOLED_GRAD
from .layers import activation_spec
from .train import bn_channel_dim


def _layer_index(table: pd.DataFrame, layers: list[rx.TracedLayer]) -> dict[str, int]:
    """Module name -> layer number of the probe table (``module`` column; forward order of the
    traced layers when the table has none)."""
    if "module" in table.columns:
        rows = (table["layer"] >= 1) & (table["quantity"] == "weight_std")  # one per layer
        sub = table.loc[rows, ["layer", "module"]].drop_duplicates()
        return {str(m): int(i) for i, m in zip(sub["layer"], sub["module"])}
    return {t.name: i for i, t in enumerate(layers, 1)}


def _probe_fn(percentiles: bool, layers: list[rx.TracedLayer] | None = None,
              pools: dict[str, tuple[int, int]] | None = None) -> Callable:
    """:func:`depthlab.torch.probe`; with ``percentiles=False`` no ``pre_pK``/``act_pK`` (the
    rules read none; only the stored baseline keeps them for the report's figures). The
    traced ``layers`` whose activation the forward applies itself (``F.relu(self.fc(x))``)
    get their activation rows from :func:`functional_act_rows`; those in ``pools`` a
    :data:`~depthlab.torch.gradient_path.POOLED_GRAD` row (:func:`_pooled_gradients`)."""
    from ..probes.stats import PERCENTILES
    from .probe import probe

    qs = PERCENTILES if percentiles else ()
    functional = [t for t in layers or [] if t.functional and t.ran]
    normed = [t for t in layers or [] if t.norm is not None and t.activation is not None
              and t.ran]
    pooled = {t.module: (t.name, *(pools or {})[t.name]) for t in layers or []
              if t.ran and t.name in (pools or {})}

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable
            ) -> pd.DataFrame:
        with _norm_gradients(normed) as grads, _pooled_gradients(pooled) as sums:
            table = probe(model, x, y, loss_fn, percentiles=qs)
        table = functional_act_rows(table, model, x, functional, qs) if functional else table
        table = _with_norm_rows(table, grads) if grads else table
        return _with_pool_rows(table, sums) if sums else table

    return run


@contextlib.contextmanager
def _norm_gradients(layers: list[rx.TracedLayer]) -> Iterator[dict[str, list]]:
    """Within the block, the gradients reaching the output of each ``layers``' normalization
    module (:attr:`~depthlab.torch.prescriptions.TracedLayer.norm`, e.g. the ``BatchNorm2d`` of
    ``conv -> bn -> relu``): ``{layer name: [n, sum g, sum g^2]}`` (float64, every call
    pooled). That is the gradient the rules judge for such a layer, as depthlab's probe points
    of a batch-normalized network read it after the norm (the activation's input): the
    gradient at the layer's own output is the norm's divided by the std of the norm's input
    (Ioffe & Szegedy 2015), so it follows the input's scale alone (a batch-normalized MLP on
    inputs x 0.05 trains as on x, and its first layer's output gradient is 20x larger).

    Read before the norm's affine ``y = gamma * xhat + beta``: ``dL/dxhat = gamma * dL/dy``
    (gamma 1 for a norm without one). The network's function does not change when a norm's
    gamma and beta are scaled by c (the next norm divides c out), and neither does dL/dxhat,
    while dL/dy is divided by c: read at y, a layer's gradient followed its own learned gamma
    against the last layer's (a BatchNorm CNN under SGD momentum 0.9, lr 0.1, healthy, its
    second gamma grown 1 -> 2.1: 'exploding_gradients', 13.9x; at xhat 6-8x)."""
    grads: dict[str, list] = {}
    by_norm: dict[nn.Module, list[str]] = {}
    for t in layers:
        by_norm.setdefault(t.norm, []).append(t.name)

    def on_forward(m: nn.Module, _args: Any, out: Any) -> None:
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            return  # under no_grad (accuracy, a frozen part)
        gamma = _affine_scale(m, out)

        def take(g: torch.Tensor) -> None:
            g = g.detach().to(torch.float64)
            if gamma is not None:
                g = g * gamma  # dL/dxhat, before the affine
            for name in by_norm[m]:
                _add_moments(grads.setdefault(name, [0, 0.0, 0.0]), 0, g)

        out.register_hook(take)  # before an in-place activation: the gradient of this value

    with _forward_hooks(by_norm, on_forward):
        yield grads


@contextlib.contextmanager
def _pooled_gradients(layers: dict[nn.Module, tuple[str, int, int]]
                      ) -> Iterator[dict[str, list]]:
    """Within the block, for each module of ``layers`` (-> ``(name, channel dim, P / k)``:
    :attr:`~depthlab.torch.gradient_path.LayerGraph.pools`) the gradient ``g`` reaching its
    output and ``S' = sum_p g_{n,c,p} / sqrt(P / k)`` (summed over its positions per
    (example, channel): each example's gradient of the channel's bias, per position left
    after the pooling): ``{name: [n, sum S', sum S'^2, m, sum g, sum g^2]}`` (float64, every
    call pooled), whose ``std(S') / std(g)`` is the factor by which a mean over ``k``
    positions after the layer divided its gradient (:mod:`depthlab.torch.gradient_path`)."""
    sums: dict[str, list] = {}

    def on_forward(m: nn.Module, _args: Any, out: Any) -> None:
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            return  # under no_grad; a recurrent layer's (output, state) tuple: no reading
        name, dim, left = layers[m]
        if out.dim() <= dim:
            return

        def take(g: torch.Tensor) -> None:
            g = g.detach().to(torch.float64)
            c = g.movedim(dim, 1)
            s = c.reshape(c.shape[0], c.shape[1], -1).sum(-1) / math.sqrt(left)
            acc = sums.setdefault(name, [0, 0.0, 0.0, 0, 0.0, 0.0])
            _add_moments(acc, 0, s)
            _add_moments(acc, 3, g)

        out.register_hook(take)

    with _forward_hooks(layers, on_forward):
        yield sums


def _add_moments(acc: list, j: int, t: torch.Tensor) -> None:
    """Add ``t``'s count, sum and sum of squares to ``acc[j:j + 3]`` (float64 sums)."""
    acc[j] += t.numel()
    acc[j + 1] += float(t.sum())
    acc[j + 2] += float((t * t).sum())


@contextlib.contextmanager
def _forward_hooks(modules: Iterable[nn.Module], hook: Callable) -> Iterator[None]:
    """``hook`` as a forward hook of each of ``modules`` within the block (removed after it)."""
    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _with_pool_rows(table: pd.DataFrame, sums: dict[str, list]) -> pd.DataFrame:
    """``table`` with a :data:`POOLED_GRAD` row per layer of ``sums``
    (:func:`_pooled_gradients`): ``std(S') / std(g)``, NaN where ``std(g)`` is 0."""
    index = _layer_index(table, [])

    def std(n: int, s1: float, s2: float) -> float:
        mean = s1 / n
        return math.sqrt(max(s2 / n - mean * mean, 0.0))

    rows = [{"step": int(table["step"].iloc[0]) if len(table) else 0, "layer": index[name],
             "module": name, "quantity": POOLED_GRAD,
             "value": (std(*acc[:3]) / g if (g := std(*acc[3:])) > 0 else math.nan)}
            for name, acc in sums.items() if name in index and acc[0] and acc[3]]
    return pd.concat([table, pd.DataFrame(rows)], ignore_index=True) if rows else table


def _affine_scale(m: nn.Module, out: torch.Tensor) -> torch.Tensor | None:
    """The norm ``m``'s learned scale gamma (float64, a copy) shaped to multiply a gradient
    of its output ``out``, or None when it has none (``affine=False``,
    ``elementwise_affine=False``) or its shape does not fit ``out``: the trailing dimensions
    of ``normalized_shape`` for LayerNorm/RMSNorm, the channel dimension (1; 0 for an
    unbatched instance norm) for batch, group and instance norms."""
    w = getattr(m, "weight", None)
    if not isinstance(w, torch.Tensor) or w.dim() == 0:
        return None
    w = w.detach().to(torch.float64).clone()
    if not isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm,
                          nn.modules.instancenorm._InstanceNorm)):  # LayerNorm, RMSNorm
        n = w.dim()
        return w if out.dim() >= n and tuple(out.shape[-n:]) == tuple(w.shape) else None
    # (a batch norm over the features of (N, T, C) sequences, the batch-norm cure's
    # FeatureBatchNorm: the last axis; read on axis 1, gamma was dropped (T != C) or
    # multiplied along the positions (T == C))
    dim = bn_channel_dim(m, out) if isinstance(m, nn.modules.batchnorm._BatchNorm) else 1
    if isinstance(m, nn.modules.instancenorm._InstanceNorm) and \
            out.dim() == m._get_no_batch_dim():
        dim = 0
    if w.dim() != 1 or out.dim() <= dim or out.shape[dim] != w.numel():
        return None
    return w.reshape((w.numel(),) + (1,) * (out.dim() - dim - 1))


def _with_norm_rows(table: pd.DataFrame, grads: dict[str, list]) -> pd.DataFrame:
    """``table`` with a :data:`NORM_GRAD` row per layer of ``grads`` (numbered as the table
    numbers the layer's module)."""
    index = _layer_index(table, [])  # (weight_std rows: a block's rows name the block)
    rows = []
    for name, (n, s1, s2) in grads.items():
        if name in index and n:
            mean = s1 / n
            rows.append({"step": int(table["step"].iloc[0]) if len(table) else 0,
                         "layer": index[name], "module": name, "quantity": NORM_GRAD,
                         "value": math.sqrt(max(s2 / n - mean * mean, 0.0))})
    return pd.concat([table, pd.DataFrame(rows)], ignore_index=True) if rows else table


_ACT_ROWS = ("saturated_frac", "dead_frac", "inactive_frac")


_ROW_RANK = {"saturated_frac": 2, "dead_frac": 3, "inactive_frac": 4}


def functional_act_rows(table: pd.DataFrame, model: nn.Module, x: torch.Tensor,
                        layers: list[rx.TracedLayer], percentiles: tuple = ()
                        ) -> pd.DataFrame:
    """The probe ``table`` of ``model`` on ``x`` with the activation rows of ``layers`` whose
    activation the forward applies itself (a traced stand-in, ``functional=True``): the probe
    sees activation modules only, so ``F.relu(self.fc(x))`` had no ``act_*``,
    ``dead_frac``, ``inactive_frac`` (or, for a sigmoid, ``saturated_frac``) rows and the
    dead-unit and saturation rules saw nothing (a ReLU MLP trained at lr 3: 'no findings'
    with the loss at chance). One more forward on ``x`` (no gradients, in the model's mode,
    buffers and random streams as found: the probe's dropout masks) gives the tensors ``s``
    the function reads (:func:`depthlab.torch.prescriptions.functional_inputs`); ``a = f(s)``
    by the stand-in, and with the probe's definitions (:mod:`depthlab.torch.probe`):
    ``act_mean``/``act_std`` (population), ``act_pK``, ``saturated_frac`` (bounded ``f``),
    ``dead_frac`` (units on the layer's feature axis with ``f'(s) = 0`` on every entry),
    ``inactive_frac`` (ReLU family: ``s <= 0``), replacing the ``act_*`` rows of a norm in
    between (a module activation's rows are its output's, not the norm's). A layer that has
    such rows already, or whose function does not run on ``x``, is left as measured."""
    from ..probes.stats import percentile_names
    from .accumulators import NORM_HIGH, NORM_LOW, partition_percentiles, scaled_std
    from .layers import feature_axis

    index = _layer_index(table, layers)
    todo = [t for t in layers if t.name in index and t.activation is not None
            and activation_spec(t.activation) is not None
            and not table["quantity"].isin(_ACT_ROWS)[table["layer"] == index[t.name]].any()]
    if not todo:
        return table
    found = rx.functional_inputs(model, x, [t.module for t in todo])
    step = int(table["step"].iloc[0]) if len(table) and "step" in table.columns else 0
    rows: list[tuple] = []
    replaced: list[int] = []
    for t in todo:
        ss = found.get(t.module)
        if not ss:
            continue
        spec = activation_spec(t.activation)
        axis = feature_axis(t.module)
        vals, n, sat, off, alive, dead_ok = [], 0, 0, 0, None, True
        with torch.no_grad():
            for s in ss:
                f = s.to(torch.float64 if s.dtype == torch.float64 else torch.float32)
                vals.append(t.activation(f).reshape(-1))
                n += f.numel()
                d = spec.derivative(f).abs()
                if spec.bounded:
                    sat += int(spec.saturated(f, d).sum())
                if spec.relu_family:
                    off += int((f <= 0).sum())
                if d.dim() < 2:
                    dead_ok = False
                    continue
                ax = axis % d.dim()
                unit = ~(d.amax(dim=[k for k in range(d.dim()) if k != ax]) <= 0)
                if alive is None:
                    alive = unit
                elif alive.shape == unit.shape:
                    alive = alive | unit
                else:
                    dead_ok = False
            a = torch.cat(vals)
        if n == 0:
            continue
        i = index[t.name]
        wide = a.double()
        std = float(wide.std(unbiased=False))
        if not NORM_LOW <= std <= NORM_HIGH:  # squares out of float64's range (or 0, NaN):
            std = scaled_std([wide], std)  # the probe's rule (entries of 1e200 read inf)
        out = [("act_mean", float(wide.mean())), ("act_std", std)]
        if percentiles:  # the probe's rule, on the values in their dtype
            pct = partition_percentiles(a.cpu().numpy().copy(), percentiles).tolist()
            out += list(zip(percentile_names("act", percentiles), pct))
        if spec.bounded:
            out.append(("saturated_frac", sat / n))
        if dead_ok and alive is not None:
            out.append(("dead_frac", float((~alive).sum()) / alive.numel()))
        if spec.relu_family:
            out.append(("inactive_frac", off / n))
        rows += [(step, i, t.name, q, v) for q, v in out]
        replaced.append(i)
    if not rows:
        return table
    keep = ~((table["layer"].isin(replaced)) & table["quantity"].str.startswith("act_"))
    new = pd.DataFrame(rows, columns=["step", "layer", "module", "quantity", "value"])
    merged = pd.concat([table[keep], new.astype(table.dtypes.to_dict())], ignore_index=True)
    # the probe's order within a layer: pre_*, act_*, saturated, dead, inactive, the rest
    rank = merged["quantity"].map(lambda q: 0 if q.startswith("pre_") else 1 if
                                  q.startswith("act_") else _ROW_RANK.get(q, 5))
    order = np.lexsort((rank.to_numpy(), merged["layer"].to_numpy(), merged["step"].to_numpy()))
    return merged.iloc[order].reset_index(drop=True)
