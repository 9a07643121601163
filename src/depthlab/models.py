"""Network builders: :func:`mlp` builds the network a :class:`~depthlab.spec.ModelSpec`
describes (plain, batch-normalized and/or residual multilayer perceptrons)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .backend import resolve_dtype
from .backend import rng as make_rng
from .layers import Activation, AlphaDropout, BatchNorm, Dense, Dropout, Layer, Residual, Sequential
from .memory import check_network, dense_chain, sizes_text
from .network import Network
from .spec import CUMULATIVE, ModelSpec


def mlp(
    sizes: Sequence[int],
    activation: Any = ModelSpec.activation,
    init: Any = ModelSpec.init,
    *,
    seed: int | None = 0,
    **options: Any,
) -> Network:
    """Build a multilayer perceptron ``sizes = [n_in, h_1, ..., h_L, n_out]``.

    ``options`` are the other :class:`~depthlab.spec.ModelSpec` fields (``batchnorm``,
    ``residual``, ``dropout``, ``dtype``, ``output_activation``, ``bias_init``, ``bn_momentum``,
    ...; their defaults, documentation and checks are declared there once). ``activation``,
    ``init``, ``output_activation``, ``output_init`` and ``bias_init`` take registered names or
    objects (an ``Initializer`` built with arguments). ``seed`` seeds the weights and dropout.
    Bad settings raise ValueError/TypeError naming the value and what is accepted. The network's
    ``config`` is ``spec.to_dict()`` plus ``seed``: ``mlp(**net.config)`` rebuilds it.

    Plain: ``Dense -> [BatchNorm] -> act -> [Dropout]`` per hidden layer, then a last
    ``Dense`` producing logits (``output_activation`` appends a nonlinearity). With
    ``batchnorm`` the Dense before each BatchNorm has no bias (BN's beta replaces it).

    Residual (He et al. 2016, pre-activation): a stem ``Dense(n_in, h_1)``, then for each
    further hidden width a block ``x + F(x)`` with
    ``F = [BN] -> act -> Dense -> [Dropout] -> [BN] -> act -> Dense`` (widths must be equal),
    then ``[BN] -> act -> Dense(h_L, n_out)``.
    """
    unknown = [k for k in options if k not in ModelSpec.keys()]
    if unknown:
        raise TypeError(f"mlp() got an unknown option {unknown[0]!r}{_option_hint(unknown[0])}; "
                        f"accepted: {', '.join(k for k in ModelSpec.keys() if k != 'sizes')}, seed")
    if isinstance(sizes, str | bytes) or not hasattr(sizes, "__len__"):
        raise TypeError(f"sizes must be a list of layer widths, got {sizes!r}")
    if "bn_momentum" in options and options["bn_momentum"] is None:
        # torch's BatchNorm1d(momentum=None) is a cumulative average (None was once taken as
        # "the default" here, an EMA of momentum 0.01, silently): the same spelling, the same
        # meaning; the recipe records it as "cumulative"
        options["bn_momentum"] = CUMULATIVE
    # None silently built ReLU units with glorot_uniform weights: a Keras user's
    # Dense(activation=None) means linear units
    if activation is None:
        raise TypeError("activation=None is not accepted (it does not mean linear units "
                        "here); accepted: an activation name, \"identity\" for linear units, "
                        f"or omit it for {ModelSpec.activation!r}")
    if init is None:
        raise TypeError("init=None is not accepted; accepted: an initializer name or object, "
                        f"or omit it for {ModelSpec.init!r}")
    spec = ModelSpec(sizes=tuple(sizes), activation=activation, init=init, **options)
    return build(spec, seed=seed)


def _option_hint(key: str) -> str:
    """`` (did you mean 'batchnorm'?)`` for a mistyped or another library's option name
    (``batch_norm``, ``bn``, ``initializer``; ``spec.KEY_SYNONYMS``), else ``""``."""
    from .spec import KEY_SYNONYMS
    from .validators import closest_name

    valid = [*ModelSpec.keys(), "seed"]
    synonym = KEY_SYNONYMS["model"].get(str(key).strip().lower().replace("-", "_"))
    close = synonym if synonym in valid else closest_name(key, valid)
    return f" (did you mean {close!r}?)" if close else ""


def build(spec: ModelSpec, *, seed: int | None = 0) -> Network:
    """The network described by ``spec`` (its sizes resolved: no ``"auto"``), weights and
    dropout masks drawn from ``seed``."""
    auto = [i for i in (0, -1) if spec.sizes[i] == "auto"]
    if auto:
        raise ValueError(f"sizes = {list(spec.sizes)}: \"auto\" is resolved from the data by "
                         "`depthlab run`; mlp() needs the number of inputs and outputs")
    check_network(dense_chain(spec.sizes, bool(spec.residual)), spec.dtype,
                  what=f"mlp(sizes={sizes_text(spec.sizes)})")
    parts = _Parts(spec, make_rng(seed))
    layers = parts.drop(spec.input_dropout)
    layers += parts.residual() if spec.residual and spec.hidden else parts.plain()
    if spec.output_activation is not None:
        out = Activation(spec.output_activation, name="output_act")
        out.is_output = True
        layers.append(out)
    return Network(layers, n_inputs=spec.sizes[0], dtype=spec.dtype,
                   config={**spec.to_dict(), "seed": _plain_seed(seed)})


def _plain_seed(seed: Any) -> Any:
    """A NumPy integer seed as a Python int, so ``net.config`` stays plain JSON (``dl.save``)."""
    return int(seed) if isinstance(seed, np.integer) else seed


class _Parts:
    """The layers of one network, named ``dense1, bn1, act1, drop1, ...`` in creation order,
    all drawing from one generator (weights in creation order, one stream per dropout)."""

    def __init__(self, spec: ModelSpec, gen: Any) -> None:
        self.spec, self.gen, self.dtype = spec, gen, resolve_dtype(spec.dtype)
        self.counter = {"dense": 0, "bn": 0, "act": 0, "drop": 0}
        self.alpha = spec.dropout_type == "alpha" or (
            spec.dropout_type == "auto" and spec.activation == "selu")

    def name(self, kind: str) -> str:
        self.counter[kind] += 1
        return f"{kind}{self.counter[kind]}"

    def dense(self, n_in: int, n_out: int, bias: bool = True, w_init: Any = None) -> Dense:
        s = self.spec
        return Dense(n_in, n_out, bias=bias, init=w_init or s.init, bias_init=s.bias_init,
                     rng=self.gen, dtype=self.dtype, name=self.name("dense"))

    def hidden_dense(self, n_in: int, n_out: int) -> Dense:
        """A hidden Dense: no bias before a batch norm."""
        return self.dense(n_in, n_out, bias=not self.spec.batchnorm)

    def bn(self, n: int) -> list[Layer]:
        s = self.spec
        if not s.batchnorm:
            return []
        momentum = None if s.bn_momentum == CUMULATIVE else s.bn_momentum  # torch's None
        return [BatchNorm(n, eps=s.bn_eps, momentum=momentum, inference=s.bn_inference,
                          ema_start=s.bn_ema_start, dtype=self.dtype, name=self.name("bn"))]

    def act(self) -> Activation:
        return Activation(self.spec.activation, name=self.name("act"),
                          **self.spec.activation_kwargs)

    def drop(self, rate: float | None = None) -> list[Layer]:
        """A dropout layer of ``rate`` (default: the hidden ``dropout``), none for 0."""
        p = self.spec.dropout if rate is None else rate
        if p == 0.0:
            return []
        cls = AlphaDropout if self.alpha else Dropout
        return [cls(p, rng=self.gen.spawn(1)[0], name=self.name("drop"))]

    def plain(self) -> list[Layer]:
        """``Dense -> [BN] -> act -> [Dropout]`` per hidden width, then the output Dense."""
        sizes = self.spec.sizes
        layers: list[Layer] = []
        for n_in, n_out in zip(sizes[:-2], sizes[1:-1]):
            layers += [self.hidden_dense(n_in, n_out), *self.bn(n_out), self.act(), *self.drop()]
        layers.append(self.dense(sizes[-2], sizes[-1], w_init=self.spec.output_init))
        return layers

    def residual(self) -> list[Layer]:
        """Stem, one pre-activation block per further hidden width, ``[BN] -> act -> Dense``."""
        sizes, width = self.spec.sizes, self.spec.sizes[1]  # the spec checked equal widths
        layers: list[Layer] = [self.hidden_dense(sizes[0], width)]
        for _ in self.spec.hidden[1:]:
            branch = [*self.bn(width), self.act(), self.hidden_dense(width, width), *self.drop(),
                      *self.bn(width), self.act(), self.hidden_dense(width, width)]
            layers.append(Residual(Sequential(branch, name="branch"), name=f"res{len(layers)}"))
        layers += [*self.bn(width), self.act(),
                   self.dense(width, sizes[-1], w_init=self.spec.output_init)]
        return layers
