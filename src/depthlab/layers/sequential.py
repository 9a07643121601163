"""A chain of layers ``y = f_L(... f_1(x))``; backward applies the chain rule in reverse."""

from __future__ import annotations

from collections.abc import Iterator

from ..backend import Array
from ..parameter import Parameter
from .base import Layer


def _refuse_shared(layers: list[Layer], name: str) -> None:
    """A ValueError naming a layer object found at two places of ``layers`` (residual
    branches included). torch runs one stateless module at two places correctly; a depthlab
    layer keeps what its forward computed (its input, output, mask, batch statistics) for
    its backward, so the first place was differentiated with the second's values: wrong
    gradients, silently (one ``Activation('tanh')`` twice: dL/dW -0.818 against finite
    differences' -0.857).

    A :class:`~depthlab.parameter.Parameter` in two layers (tied weights, ``d2.W = d1.W``)
    is refused too: each layer's backward overwrites its ``.grad`` (torch sums the uses)."""
    seen: dict[int, int] = {}
    owner: dict[int, int] = {}
    for i, layer in enumerate(layers):
        for leaf in layer.leaves():
            j = seen.setdefault(id(leaf), i)
            if j != i:
                raise ValueError(
                    f"{name}: the layer {leaf!r:.60} at layers[{i}] is the same object as the "
                    f"one at layers[{j}]; a depthlab layer keeps what its forward computed for "
                    "its backward, so one object at two places gives wrong gradients: give each "
                    "place its own layer (a new Activation, Dropout, ...; a Dense's weights "
                    "cannot be shared)")
            for p in leaf.parameters():
                k = owner.setdefault(id(p), i)
                if k != i:
                    raise ValueError(
                        f"{name}: the parameter {p.name!r} of layers[{i}] is the same object as "
                        f"one of layers[{k}] (tied weights); each layer's backward overwrites "
                        "its .grad, so it would get one use's gradient, not their sum: give "
                        "each layer its own weights (a copy: Parameter(name, w.value.copy()))")


class Sequential(Layer):
    """``y = f_L(... f_1(x))``; backward ``dL/dx = J_1^T ... J_L^T dL/dy`` (each layer's
    :meth:`~Layer.backward` in reverse order)."""

    def __init__(self, layers: list[Layer], name: str = "seq") -> None:
        if isinstance(layers, str | bytes | Layer) or not hasattr(layers, "__iter__"):
            # None: Python's "'NoneType' object is not iterable"; "abc": layers[0] = 'a'
            raise TypeError(f"{name}: layers = {layers!r:.40} is not accepted; accepted: a "
                            "list of depthlab layers (Dense, Activation, BatchNorm, ...)")
        self.layers = list(layers)
        self.name = name
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"{name}: layers[{i}] = {layer!r:.40} is not accepted; accepted: "
                                "depthlab layers (Dense, Activation, BatchNorm, Dropout, ...)")
        _refuse_shared(self.layers, name)

    @property
    def overwrites_grad(self) -> bool:  # type: ignore[override]
        return bool(self.layers) and self.layers[-1].overwrites_grad

    def forward(self, x: Array, training: bool = True) -> Array:
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    @property
    def keeps_grad(self) -> bool:  # type: ignore[override]
        return bool(self.layers) and self.layers[0].keeps_grad

    def backward(self, grad: Array, input_grad: bool = True) -> Array | None:
        layers = self.layers
        for i in range(len(layers) - 1, -1, -1):
            grad = layers[i].backward(grad, input_grad or i > 0)
            if i > 0 and layers[i].keeps_grad and layers[i - 1].overwrites_grad:
                # an Activation's grad_s must survive the in-place layer before it (Dense ->
                # Dropout -> act in a residual branch: grad_s came out multiplied by the mask)
                grad = grad.copy()
        return grad

    def calibrate(self, x: Array) -> Array:
        for layer in self.layers:
            x = layer.calibrate(x)
        return x

    def parameters(self) -> list[Parameter]:
        """Every layer's parameters, in forward order."""
        return [p for layer in self.layers for p in layer.parameters()]

    def leaves(self) -> Iterator[Layer]:
        for layer in self.layers:
            yield from layer.leaves()

    def clear_cache(self) -> None:
        for layer in self.layers:
            layer.clear_cache()

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> Layer:
        return self.layers[i]

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"{type(self).__name__}(\n  {inner}\n)"
