"""The :func:`depthlab.mlp` recipe of a list of layers, when one builds them.

A network without a recipe (``config`` empty: e.g. :func:`depthlab.bridge.torch_bridge.from_torch`
of a torch module) can still be saved when its layers have exactly the structure
``mlp(**recipe)`` builds (same layer kinds in the same order, same widths, biases, activation
and its arguments, dropout rates, batch-norm settings): :func:`depthlab.save` writes that
recipe, and the weights are copied from the file on load, so the recipe's ``init`` and ``seed``
(mlp's defaults) do not describe the saved weights. The network's own ``config`` stays empty:
the theory, which reads the initializer from a recipe, still refuses it; the doctor takes the
recipe's batch norm, residual blocks, dropout and activation, with ``init = "as built"``, and
refuses ``verify=True``.

One general rule: read the candidate recipe off the layers, build it, and accept it only when
the built network's :func:`signature` equals the layers' signature. Anything ``mlp`` cannot
build (a standardization layer, a bias before a batch norm, mixed activations) has no recipe.
"""

from __future__ import annotations

import inspect
from typing import Any

from .layers import Activation, AlphaDropout, BatchNorm, Dense, Dropout, Residual

__all__ = ["infer_recipe", "no_recipe_reason", "signature"]


def _act_kwargs(act: Activation) -> dict[str, Any]:
    """The constructor arguments of an activation's function object (its other attributes,
    such as ``max_derivative``, are derived from them)."""
    accepted = inspect.signature(type(act.fn).__init__).parameters
    return {k: v for k, v in vars(act.fn).items() if k in accepted}


def signature(layers: list) -> tuple | None:
    """What fixes a network's computation, layer by layer (None: a layer ``mlp`` never builds).

    Dense: widths and bias; BatchNorm: width, ``eps``, ``momentum``, inference mode and moving
    average start; Activation: name and arguments; dropout: kind and rate; Residual: its
    branch's signature."""
    out: list[tuple] = []
    for la in layers:
        if isinstance(la, Dense):
            out.append(("dense", la.fan_in, la.fan_out, la.b is not None))
        elif isinstance(la, BatchNorm):
            out.append(("bn", la.n, la.eps, la.momentum, la.inference, la.ema_start,
                        la.affine, la.track_running_stats))
        elif isinstance(la, Activation):
            out.append(("act", la.fn.name, tuple(sorted(_act_kwargs(la).items()))))
        elif isinstance(la, (Dropout, AlphaDropout)):
            out.append((type(la).__name__, la.p))
        elif isinstance(la, Residual):
            inner = signature(la.branch.layers)
            if inner is None:
                return None
            out.append(("res", inner))
        else:
            return None
    return tuple(out)


def _flat(layers: list) -> list:
    """Every layer in forward order, residual branches opened."""
    out = []
    for la in layers:
        out += _flat(la.branch.layers) if isinstance(la, Residual) else [la]
    return out


def _candidate(layers: list, dtype: str) -> dict[str, Any] | None:
    """The ``mlp`` keyword arguments the layers suggest (checked by :func:`infer_recipe`)."""
    flat = _flat(layers)
    dense = [la for la in flat if isinstance(la, Dense)]
    acts = [la for la in flat if isinstance(la, Activation)]
    if not dense:
        return None
    residual = any(isinstance(la, Residual) for la in layers)
    top_dense = [la for la in layers if isinstance(la, Dense)]
    if residual:  # stem, one block per further hidden width, output layer
        blocks = sum(isinstance(la, Residual) for la in layers)
        sizes = [dense[0].fan_in, dense[0].fan_out] + [dense[0].fan_out] * blocks \
            + [dense[-1].fan_out]
    else:
        sizes = [dense[0].fan_in] + [d.fan_out for d in top_dense]
    out: dict[str, Any] = {"sizes": sizes, "dtype": dtype, "residual": residual}
    last = layers[-1]
    hidden_acts = acts[:-1] if isinstance(last, Activation) else acts
    if isinstance(last, Activation):  # mlp builds it with its default arguments: a
        out["output_activation"] = last.fn.name  # different slope fails the signature check
    if hidden_acts:
        out["activation"] = hidden_acts[0].fn.name
        out["activation_kwargs"] = _act_kwargs(hidden_acts[0])
    bns = [la for la in flat if isinstance(la, BatchNorm)]
    if bns:
        bn = bns[0]
        out.update(batchnorm=True, bn_eps=bn.eps,
                   bn_momentum="cumulative" if bn.momentum is None else bn.momentum,
                   bn_inference=bn.inference, bn_ema_start=bn.ema_start)
    drops = [la for la in flat if isinstance(la, (Dropout, AlphaDropout))]
    if drops:
        out["dropout_type"] = "alpha" if isinstance(drops[0], AlphaDropout) else "standard"
        if isinstance(layers[0], (Dropout, AlphaDropout)):
            out["input_dropout"] = layers[0].p
            drops = drops[1:]
        if drops:
            out["dropout"] = drops[0].p
    return out


def infer_recipe(layers: list, dtype: str) -> dict[str, Any] | None:
    """The ``config`` of ``mlp(**config)`` building layers with the same :func:`signature` as
    ``layers``, or None when ``mlp`` builds no such network."""
    from .models import mlp

    want = signature(layers)
    kwargs = _candidate(layers, dtype) if want is not None else None
    if kwargs is None:
        return None
    try:
        built = mlp(**kwargs, seed=0)
    except (TypeError, ValueError):
        return None
    return built.config if signature(built.layers) == want else None


def _first_unbuildable(layers: list, where: str = "") -> str | None:
    """``layer K (Type)`` of the first layer ``mlp`` never builds (inside residual branches
    too), or None."""
    for k, la in enumerate(layers):
        if isinstance(la, Residual):
            inner = _first_unbuildable(la.branch.layers, f"{where}layer {k} (Residual) > ")
            if inner is not None:
                return inner
        elif not isinstance(la, (Dense, BatchNorm, Activation, Dropout, AlphaDropout)):
            return f"{where}layer {k} ({type(la).__name__})"
    return None


def no_recipe_reason(layers: list, dtype: str) -> str:
    """Why :func:`infer_recipe` finds no recipe: the first layer ``mlp`` never builds, or the
    first layer that differs from what ``mlp`` builds from the recipe the layers suggest
    (e.g. a second activation that is not the first one)."""
    bad = _first_unbuildable(layers)
    if bad is not None:
        return (f"{bad} is not a layer dl.mlp builds (accepted: Dense, BatchNorm, "
                "Activation, Dropout, AlphaDropout, Residual)")
    kwargs = _candidate(layers, dtype)
    if kwargs is None:
        return "it has no Dense layer"
    from .models import mlp

    try:
        built = mlp(**kwargs, seed=0)
    except (TypeError, ValueError) as exc:
        return f"dl.mlp refuses the recipe its layers suggest ({exc})"
    want, got = signature(layers) or (), signature(built.layers) or ()
    for k, (a, b) in enumerate(zip(want, got)):
        if a != b:
            return (f"layer {k} ({type(layers[k]).__name__}: {a!r:.80}) differs from what "
                    f"dl.mlp builds there ({b!r:.80})")
    return f"it has {len(want)} layers; dl.mlp builds {len(got)} from the same recipe"
