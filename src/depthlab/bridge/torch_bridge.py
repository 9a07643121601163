"""Copy a depthlab network into an equivalent ``torch.nn.Module`` (tests and benchmarks).

One way only: depthlab -> torch (``to_torch``). Only this module imports torch;
``import depthlab`` never does. Without PyTorch installed, importing it says
``pip install depthlab[torch]``.
"""

from __future__ import annotations

try:
    import torch
    from torch import nn
except ModuleNotFoundError as exc:  # pragma: no cover - exercised in a subprocess test
    if exc.name != "torch":
        raise
    raise ModuleNotFoundError("depthlab.bridge needs PyTorch, which is not installed: "
                              "pip install depthlab[torch]", name="torch") from None

from ..layers import (
    Activation,
    AlphaDropout,
    BatchNorm,
    Dense,
    Dropout,
    Layer,
    Residual,
    Sequential,
)
from ..layers.standardize import Standardize
from ..network import Network


class _Fn(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class _Residual(nn.Module):
    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, x):
        return x + self.branch(x)


def torch_activation(layer: Activation) -> nn.Module:
    name, p = layer.fn.name, getattr(layer.fn, "params", {})
    simple = {
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "identity": nn.Identity,
        "relu": nn.ReLU,
        "selu": nn.SELU,
        "softsign": nn.Softsign,
        "mish": nn.Mish,
    }
    if name in simple:
        return simple[name]()
    if name == "leaky_relu":
        return nn.LeakyReLU(p.get("negative_slope", 0.01))
    if name == "elu":
        return nn.ELU(p.get("alpha", 1.0))
    if name == "gelu":
        return nn.GELU()
    if name == "softmax":
        return nn.Softmax(dim=-1)
    if name == "swish":
        beta = p.get("beta", 1.0)
        return nn.SiLU() if beta == 1.0 else _Fn(lambda x: x * torch.sigmoid(beta * x))
    if name == "penalized_tanh":
        a = p.get("a", 0.25)
        return _Fn(lambda x: torch.where(x > 0, torch.tanh(x), a * torch.tanh(x)))
    if name == "step":
        return _Fn(lambda x: (x > 0).to(x.dtype))
    raise ValueError(f"no torch equivalent for activation {name!r}")


def _convert(layer: Layer, dtype) -> nn.Module:
    if isinstance(layer, Dense):
        lin = nn.Linear(layer.fan_in, layer.fan_out, bias=layer.b is not None, dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(layer.W.value.T.copy()))
            if layer.b is not None:
                lin.bias.copy_(torch.from_numpy(layer.b.value.copy()))
        return lin
    if isinstance(layer, BatchNorm):
        bn = nn.BatchNorm1d(layer.n, eps=layer.eps, momentum=layer.momentum, dtype=dtype)
        with torch.no_grad():
            bn.weight.copy_(torch.from_numpy(layer.gamma.value.copy()))
            bn.bias.copy_(torch.from_numpy(layer.beta.value.copy()))
            mean, var = (layer.running_mean, layer.running_var)
            if layer.inference == "population" and layer.population_mean is not None:
                mean, var = layer.population_mean, layer.population_var
            bn.running_mean.copy_(torch.from_numpy(mean.copy()))
            bn.running_var.copy_(torch.from_numpy(var.copy()))
        return bn
    if isinstance(layer, Activation):
        return torch_activation(layer)
    if isinstance(layer, AlphaDropout):
        return nn.AlphaDropout(layer.p)
    if isinstance(layer, Dropout):
        return nn.Dropout(layer.p)
    if isinstance(layer, Residual):
        return _Residual(_convert(layer.branch, dtype))
    if isinstance(layer, Standardize):
        mean, std = torch.from_numpy(layer.mean.copy()), torch.from_numpy(layer.std.copy())
        return _Fn(lambda x: (x - mean) / std)
    if isinstance(layer, Sequential):
        return nn.Sequential(*[_convert(sub, dtype) for sub in layer.layers])
    raise TypeError(f"cannot convert {type(layer).__name__} to torch")


def to_torch(net: Network) -> nn.Sequential:
    """An ``nn.Sequential`` with the same weights and statistics as ``net`` (same dtype)."""
    dtype = torch.float64 if net.dtype.itemsize == 8 else torch.float32
    return _convert(net, dtype)


