"""Network builders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .activations import get_activation
from .backend import resolve_dtype
from .backend import rng as make_rng
from .initializers import get_initializer
from .layers import Activation, AlphaDropout, BatchNorm, Dense, Dropout, Layer, Residual, Sequential
from .layers.dropout import _check_rate
from .network import Network


def _check_sizes(sizes: Sequence[int]) -> list[int]:
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__"):
        raise TypeError(f"sizes must be a list of layer widths, got {sizes!r}")
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least [n_inputs, n_outputs], got {sizes!r}")
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ValueError(f"every layer size must be a positive integer, got {s!r} in {sizes!r}")
    return sizes


def mlp(
    sizes: Sequence[int],
    activation: str = "relu",
    init: str = "glorot_uniform",
    *,
    batchnorm: bool = False,
    residual: bool = False,
    dropout: float = 0.0,
    dtype: str = "float32",
    seed: int | None = 0,
    output_activation: str | None = None,
    output_init: str | None = None,
    bias_init: str = "zeros",
    activation_kwargs: dict[str, Any] | None = None,
    dropout_type: str = "auto",
    bn_momentum: float = 0.01,
    bn_eps: float = 1e-5,
    bn_inference: str = "ema",
    bn_ema_start: str = "first_batch",
) -> Network:
    """Build a multilayer perceptron ``sizes = [n_in, h_1, ..., h_L, n_out]``.

    Plain: ``Dense -> [BatchNorm] -> act -> [Dropout]`` per hidden layer, then a last
    ``Dense`` producing logits (``output_activation`` appends a nonlinearity). With
    ``batchnorm`` the Dense before each BatchNorm has no bias (BN's beta replaces it).

    Residual (He et al. 2016, pre-activation): a stem ``Dense(n_in, h_1)``, then for each
    further hidden width a block ``x + F(x)`` with
    ``F = [BN] -> act -> Dense -> [Dropout] -> [BN] -> act -> Dense`` (widths must be equal),
    then ``[BN] -> act -> Dense(h_L, n_out)``.

    ``dropout_type``: ``"standard"``, ``"alpha"`` (for SELU) or ``"auto"`` (alpha for selu).
    """
    sizes = _check_sizes(sizes)
    dt = resolve_dtype(dtype)
    act_kw = dict(activation_kwargs or {})
    get_activation(activation, **act_kw)  # validate the name early
    get_initializer(init)
    p = _check_rate(dropout)
    if dropout_type not in ("auto", "standard", "alpha"):
        raise ValueError(
            f"unknown dropout_type {dropout_type!r}; expected 'auto', 'standard' or 'alpha'"
        )
    alpha = dropout_type == "alpha" or (dropout_type == "auto" and activation == "selu")
    gen = make_rng(seed)
    counter = {"dense": 0, "bn": 0, "act": 0, "drop": 0}

    def name(kind: str) -> str:
        counter[kind] += 1
        return f"{kind}{counter[kind]}"

    def dense(n_in: int, n_out: int, bias: bool = True, w_init: str | None = None) -> Dense:
        return Dense(
            n_in,
            n_out,
            bias=bias,
            init=w_init or init,
            bias_init=bias_init,
            rng=gen,
            dtype=dt,
            name=name("dense"),
        )

    def bn(n: int) -> BatchNorm:
        return BatchNorm(
            n,
            eps=bn_eps,
            momentum=bn_momentum,
            inference=bn_inference,
            ema_start=bn_ema_start,
            dtype=dt,
            name=name("bn"),
        )

    def act() -> Activation:
        return Activation(activation, name=name("act"), **act_kw)

    def drop() -> list[Layer]:
        if p == 0.0:
            return []
        cls = AlphaDropout if alpha else Dropout
        return [cls(p, rng=gen.spawn(1)[0], name=name("drop"))]

    n_in, hidden, n_out = sizes[0], sizes[1:-1], sizes[-1]
    layers: list[Layer] = []
    if not residual or not hidden:
        prev = n_in
        for h in hidden:
            layers.append(dense(prev, h, bias=not batchnorm))
            if batchnorm:
                layers.append(bn(h))
            layers.append(act())
            layers.extend(drop())
            prev = h
        layers.append(dense(prev, n_out, w_init=output_init))
    else:
        width = hidden[0]
        if any(h != width for h in hidden):
            raise ValueError(f"residual=True needs equal hidden widths, got {hidden!r}")
        layers.append(dense(n_in, width, bias=not batchnorm))
        for _ in hidden[1:]:
            branch: list[Layer] = []
            if batchnorm:
                branch.append(bn(width))
            branch += [act(), dense(width, width, bias=not batchnorm), *drop()]
            if batchnorm:
                branch.append(bn(width))
            branch += [act(), dense(width, width, bias=not batchnorm)]
            layers.append(Residual(Sequential(branch, name="branch"), name=f"res{len(layers)}"))
        if batchnorm:
            layers.append(bn(width))
        layers.append(act())
        layers.append(dense(width, n_out, w_init=output_init))
    if output_activation is not None:
        out = Activation(output_activation, name="output_act")
        out.is_output = True
        layers.append(out)
    config = dict(
        sizes=sizes,
        activation=activation,
        init=init,
        batchnorm=batchnorm,
        residual=residual,
        dropout=p,
        dtype=str(dt),
        seed=seed,
        output_activation=output_activation,
        output_init=output_init,
        bias_init=bias_init,
        activation_kwargs=act_kw,
        dropout_type=dropout_type,
        bn_momentum=bn_momentum,
        bn_eps=bn_eps,
        bn_inference=bn_inference,
        bn_ema_start=bn_ema_start,
    )
    return Network(layers, n_inputs=n_in, dtype=dt, config=config)
